//! The open-loop schedule: request `k` is due at `k / rate` seconds after the start, whatever
//! happened to the requests before it. A generator that follows it never waits for responses, so
//! a slow system cannot slow the offered load down (no coordinated omission).

use std::time::Duration;

/// A constant-rate schedule of `total` requests, the first `warmup` of which are not recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// Requests sent in all.
    pub total: u64,
    /// Leading requests that warm up connections and caches and are not recorded.
    pub warmup: u64,
}

impl Schedule {
    /// `warmup_secs` then `duration_secs` at `rate` requests per second.
    pub fn new(rate: f64, warmup_secs: f64, duration_secs: f64) -> Self {
        let rate = rate.max(0.001);
        let warmup = (rate * warmup_secs.max(0.0)).round() as u64;
        let measured = (rate * duration_secs.max(0.0)).round().max(1.0) as u64;
        Self { rate, total: warmup + measured, warmup }
    }

    /// When request `k` is due, after the start.
    pub fn due(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// How many requests are due by `elapsed` after the start (never more than `total`).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        ((elapsed.as_secs_f64() * self.rate).floor() as u64).saturating_add(1).min(self.total)
    }

    /// Whether request `k` is recorded.
    pub fn measured(&self, k: u64) -> bool {
        k >= self.warmup
    }

    /// Seconds covered by the recorded requests.
    pub fn measured_secs(&self) -> f64 {
        (self.total - self.warmup) as f64 / self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced_from_the_start() {
        let schedule = Schedule::new(1000.0, 1.0, 5.0);
        assert_eq!(schedule.total, 6000);
        assert_eq!(schedule.warmup, 1000);
        assert_eq!(schedule.due(0), Duration::ZERO);
        assert_eq!(schedule.due(1), Duration::from_millis(1));
        assert_eq!(schedule.due(2500), Duration::from_millis(2500));
        assert!(!schedule.measured(999));
        assert!(schedule.measured(1000));
        assert!((schedule.measured_secs() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn due_by_counts_what_is_late_and_stops_at_the_total() {
        let schedule = Schedule::new(10_000.0, 0.0, 1.0);
        assert_eq!(schedule.due_by(Duration::ZERO), 1);
        assert_eq!(schedule.due_by(Duration::from_micros(99)), 1);
        assert_eq!(schedule.due_by(Duration::from_micros(150)), 2);
        assert_eq!(schedule.due_by(Duration::from_micros(1050)), 11);
        assert_eq!(schedule.due_by(Duration::from_secs(60)), 10_000);
    }
}
