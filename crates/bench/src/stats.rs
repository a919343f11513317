//! Latency histograms (HdrHistogram, microsecond resolution) and their
//! summaries in milliseconds, for the human report and the JSON line.

use std::time::Duration;

use anyhow::{Result, anyhow};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Largest recordable latency: one hour, in µs. Larger values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Latency {
    pub fn new() -> Result<Latency> {
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .map_err(|e| anyhow!("cannot create histogram: {e:?}"))?;
        Ok(Latency { hist })
    }

    /// Records a latency given in nanoseconds.
    pub fn record_nanos(&mut self, nanos: u64) {
        self.hist.saturating_record((nanos / 1_000).max(1));
    }

    pub fn record(&mut self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records a latency given in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.hist.saturating_record(micros.max(1));
    }

    /// The recorded values as `[microseconds, count]` pairs, one per
    /// non-empty bucket: a compact form to send to another process.
    pub fn to_buckets(&self) -> Vec<[u64; 2]> {
        self.hist
            .iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect()
    }

    /// The histogram [`Latency::to_buckets`] described.
    pub fn from_buckets(buckets: &[[u64; 2]]) -> Result<Latency> {
        let mut latency = Latency::new()?;
        for &[micros, count] in buckets {
            latency.hist.saturating_record_n(micros.max(1), count);
        }
        Ok(latency)
    }

    pub fn merge(&mut self, other: &Latency) -> Result<()> {
        self.hist
            .add(&other.hist)
            .map_err(|e| anyhow!("cannot merge histograms: {e:?}"))
    }

    pub fn summary(&self) -> Summary {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        let q = |quantile: f64| ms(self.hist.value_at_quantile(quantile));
        if self.hist.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.hist.len(),
            mean: self.hist.mean() / 1_000.0,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: ms(self.hist.max()),
        }
    }
}

/// Percentiles of a [`Latency`], in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "mean": round3(self.mean),
            "p50": round3(self.p50),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "p999": round3(self.p999),
            "max": round3(self.max),
        })
    }

    /// `p50 1.234  p90 …  max …` (ms), for the human report.
    pub fn line(self) -> String {
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (ms, n={})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Rounds to 3 decimals so the JSON line stays readable.
pub fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() -> Result<()> {
        let mut a = Latency::new()?;
        let mut b = Latency::new()?;
        for ms in 1..=100u64 {
            let target = if ms % 2 == 0 { &mut a } else { &mut b };
            target.record(Duration::from_millis(ms));
        }
        a.merge(&b)?;
        let s = a.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
        Ok(())
    }

    #[test]
    fn buckets_round_trip() -> Result<()> {
        let mut a = Latency::new()?;
        for us in [1, 2, 2, 1_500, 1_501, 250_000, 7_000_000] {
            a.record_micros(us);
        }
        let b = Latency::from_buckets(&a.to_buckets())?;
        assert_eq!(a.summary(), b.summary());
        assert_eq!(Latency::from_buckets(&[])?.summary(), Summary::default());
        Ok(())
    }

    #[test]
    fn empty_and_out_of_range() -> Result<()> {
        let mut h = Latency::new()?;
        assert_eq!(h.summary(), Summary::default());
        h.record_nanos(0);
        h.record(Duration::from_secs(10 * 3600));
        assert_eq!(h.summary().count, 2);
        assert!(h.summary().max >= 3_600_000.0 * 0.99);
        Ok(())
    }
}
