//! Log lines that cannot flood the disk: at most one per key per interval.
//!
//! Expected refusals (a flood of bad credentials, a full replay store) are
//! caused by clients, so one line per request would let any client decide
//! how much the server writes. A [`LogThrottle`] lets the first line for a
//! key through and counts the rest until the interval has passed; the next
//! line says how many were held back.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Most keys remembered; beyond it, lines for new keys are held back until
/// old ones age out, so the map cannot grow with the number of sources.
const MAX_KEYS: usize = 4096;

/// At most one log line per key per interval.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held_back)` when a line for `key` may be written now, with how
    /// many were held back since the last one; `None` to stay quiet.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if let Some((last, held)) = seen.get_mut(key) {
            if now.duration_since(*last) < self.every {
                *held += 1;
                return None;
            }
            let before = *held;
            *last = now;
            *held = 0;
            return Some(before);
        }
        if seen.len() >= MAX_KEYS {
            let every = self.every;
            seen.retain(|_, (last, _)| now.duration_since(*last) < every);
            if seen.len() >= MAX_KEYS {
                return None;
            }
        }
        seen.insert(key.to_owned(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_per_interval_with_the_count_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.allow("a"), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow("a"), None);
        }
        assert_eq!(throttle.allow("b"), Some(0), "keys are independent");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(throttle.allow("a"), Some(5));
        assert_eq!(throttle.allow("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        for i in 0..MAX_KEYS + 100 {
            let _ = throttle.allow(&format!("k{i}"));
        }
        let len = throttle.seen.lock().len();
        assert!(len <= MAX_KEYS, "{len}");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(throttle.allow("fresh"), Some(0), "old keys aged out");
    }
}
