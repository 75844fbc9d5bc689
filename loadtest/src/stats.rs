//! Latency percentiles and process RSS sampling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

pub fn mean_ms(us: &[u64]) -> f64 {
    if us.is_empty() {
        return f64::NAN;
    }
    us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0
}

/// Reads a `Vm*:` line (kB) from /proc/<pid>/status.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&s, key)
}

pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples a process's VmRSS while a scenario runs. Starting it also resets
/// the kernel's VmHWM (write 5 to clear_refs) where permitted, so VmHWM at
/// the end is the peak of this scenario alone.
pub struct RssWatch {
    pid: u32,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
    hwm_reset: bool,
}

pub struct RssReport {
    pub sampled_peak_kib: u64,
    pub vmhwm_kib: Option<u64>,
    pub hwm_reset: bool,
}

impl RssWatch {
    pub fn start(pid: u32) -> Self {
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            // Bounded: stops when told, or when the process is gone.
            while !stop2.load(Ordering::Relaxed) {
                match proc_status_kib(pid, "VmRSS") {
                    Some(v) => peak = peak.max(v),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        RssWatch {
            pid,
            stop,
            handle,
            hwm_reset,
        }
    }

    pub fn finish(self) -> RssReport {
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.handle.join().unwrap_or(0);
        RssReport {
            sampled_peak_kib: sampled,
            vmhwm_kib: proc_status_kib(self.pid, "VmHWM"),
            hwm_reset: self.hwm_reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert_eq!(percentile_ms(&[7000], 99.0), 7.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn status_parsing() {
        let s = "Name:\tx\nVmHWM:\t  12345 kB\nVmRSS:\t   678 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(678));
        assert_eq!(parse_status_kib(s, "VmPeak"), None);
        assert!(proc_status_kib(std::process::id(), "VmRSS").unwrap() > 0);
    }
}
