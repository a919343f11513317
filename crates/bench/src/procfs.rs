//! Resource usage of a process read from Linux `/proc`: CPU time from
//! `/proc/PID/stat` (fields 14 `utime` and 15 `stime`) and resident memory
//! from the `VmRSS` line of `/proc/PID/status`.
//!
//! CPU times are counted in clock ticks. The tick rate comes from
//! `getconf CLK_TCK`; when that cannot be run, 100 ticks per second is
//! assumed (the value on every mainstream Linux architecture). A tick is
//! 10 ms, so CPU figures over short intervals carry about ±10 ms of error.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second when `getconf CLK_TCK` is unavailable.
const DEFAULT_CLK_TCK: u64 = 100;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// User + system CPU time consumed since the process started, in seconds.
    pub cpu_secs: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Reads the counters of one process.
#[derive(Debug, Clone)]
pub struct Probe {
    pid: u32,
    ticks_per_sec: u64,
}

impl Probe {
    /// A probe for `pid`; fails when the process cannot be read.
    pub fn new(pid: u32) -> Result<Probe> {
        let probe = Probe {
            pid,
            ticks_per_sec: clock_ticks_per_sec(),
        };
        probe
            .sample()
            .with_context(|| format!("cannot read /proc/{pid}: is the server running?"))?;
        Ok(probe)
    }

    /// A probe for the bench process itself.
    pub fn this_process() -> Probe {
        Probe {
            pid: std::process::id(),
            ticks_per_sec: clock_ticks_per_sec(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads CPU time and RSS now.
    pub fn sample(&self) -> Result<Sample> {
        let stat = read(self.proc_path("stat"))?;
        let ticks = parse_cpu_ticks(&stat)
            .ok_or_else(|| anyhow!("unexpected format of /proc/{}/stat", self.pid))?;
        let status = read(self.proc_path("status"))?;
        let rss_kib = parse_vm_rss_kib(&status)
            .ok_or_else(|| anyhow!("no VmRSS line in /proc/{}/status", self.pid))?;
        Ok(Sample {
            cpu_secs: ticks as f64 / self.ticks_per_sec as f64,
            rss_kib,
        })
    }

    /// Like [`Probe::sample`], but warns and returns `None` on failure (the
    /// process may have died mid-run; the bench still reports what it has).
    pub fn try_sample(&self) -> Option<Sample> {
        match self.sample() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("warning: cannot sample pid {}: {e:#}", self.pid);
                None
            }
        }
    }

    fn proc_path(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.pid))
    }
}

fn read(path: PathBuf) -> Result<String> {
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// `getconf CLK_TCK`, or [`DEFAULT_CLK_TCK`].
fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(DEFAULT_CLK_TCK)
}

/// `utime + stime` from the contents of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:   1234 kB` line of `/proc/PID/status`, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    first_number_after(status, "VmRSS:")
}

/// The first number after `label` on the line of `text` that starts with it
/// (`/proc` files are lines of a label and whitespace-separated values).
pub fn first_number_after(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(label))?;
    line[label.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 567 0 0 20 0 3 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tunimsg\nVmPeak:\t  9999 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(20480));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = Probe::this_process()
            .sample()
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_secs >= 0.0);
    }
}
