//! Passive health: the pure state machine that ejects a backend and lets it back in, after
//! Envoy's outlier detection. Times are milliseconds on the registry's clock, so every
//! transition is unit-tested without waiting.
//!
//! - Five consecutive failures eject (Envoy's `consecutive_5xx` default), and so does an error
//!   rate of at least half over a ten-second window with at least 20 answers.
//! - A timeout ejects at once: it has already cost a client a whole deadline, and a hung backend
//!   would cost every request that draws it another one. A backend that is merely slow is
//!   protected by the deadline's margin (several times its own high percentile).
//! - The n-th ejection in a row lasts n x 30 s, at most 300 s (Envoy's `base_ejection_time` and
//!   `max_ejection_time`); the count starts over after 300 s without one.
//! - When the time is up, one request is the half-open probe: success lets the backend back in,
//!   failure ejects it again, for longer.
//! - Never the last: routing keeps every ejected backend of a model when none is left eligible
//!   (max-ejection-percent semantics), see [`crate::routing`].

/// Consecutive failures that eject.
pub const CONSECUTIVE_FAILURES: u32 = 5;
/// First ejection.
pub const BASE_EJECTION_MS: u64 = 30_000;
/// Longest ejection.
pub const MAX_EJECTION_MS: u64 = 300_000;
/// The error-rate window.
pub const WINDOW_MS: u64 = 10_000;
/// Answers a window needs before its error rate counts.
pub const WINDOW_MIN_REQUESTS: u32 = 20;
/// Error rate (failures per answer) that ejects.
pub const WINDOW_MAX_ERROR_RATE: f64 = 0.5;
/// How long a claimed probe keeps others off the backend; a probe that never reports (its
/// request went elsewhere) frees the backend for another probe after this.
pub const PROBE_HOLD_MS: u64 = 10_000;

/// What one attempt says about a backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (any status below 500 but 429).
    Success,
    /// Connection refused or reset, a 5xx, a broken or stalled stream.
    Failure,
    /// No first byte within the deadline.
    Timeout,
    /// Says nothing: a 429, the client went away, the tier's total time ran out.
    Neutral,
}

/// Why a backend was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectReason {
    /// [`CONSECUTIVE_FAILURES`] in a row.
    ConsecutiveFailures,
    /// A timeout.
    Timeout,
    /// The window's error rate.
    ErrorRate,
    /// Its half-open probe failed.
    ProbeFailed,
}

impl EjectReason {
    /// As metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::Timeout => "timeout",
            Self::ErrorRate => "error_rate",
            Self::ProbeFailed => "probe_failed",
        }
    }
}

/// What a verdict changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing visible.
    None,
    /// Ejected until the given time.
    Ejected {
        /// Why.
        reason: EjectReason,
        /// Until when (ms).
        until_ms: u64,
    },
    /// Back in (a probe or any other request succeeded).
    Restored {
        /// Whether a probe did it.
        probe: bool,
    },
    /// A probe that said nothing; another request may probe now.
    ProbeReleased,
}

/// One backend's health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Ejections in a row (the next lasts one more base time).
    pub ejections: u32,
    /// Ejected until (ms); 0 when not ejected.
    pub ejected_until_ms: u64,
    last_ejected_at_ms: u64,
}

/// The length of the `n`-th ejection in a row (`n` from 1).
pub fn ejection_ms(n: u32) -> u64 {
    (BASE_EJECTION_MS * u64::from(n.max(1))).min(MAX_EJECTION_MS)
}

impl Health {
    /// Whether the backend is ejected (its time may be up: then it waits for a probe).
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms != 0
    }

    /// Applies one attempt's verdict. `probe` says the attempt was this backend's half-open
    /// probe; `window_tripped` that the error-rate window, this verdict counted, is over its limit.
    pub fn record(&mut self, verdict: Verdict, probe: bool, window_tripped: bool, now_ms: u64) -> Transition {
        match verdict {
            Verdict::Success => {
                self.consecutive_failures = 0;
                if self.is_ejected() {
                    self.ejected_until_ms = 0;
                    Transition::Restored { probe }
                } else {
                    Transition::None
                }
            }
            Verdict::Neutral if probe => {
                self.ejected_until_ms = now_ms.max(1);
                Transition::ProbeReleased
            }
            Verdict::Neutral => Transition::None,
            Verdict::Failure | Verdict::Timeout => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let reason = if probe {
                    EjectReason::ProbeFailed
                } else if self.is_ejected() {
                    // Already out (a request that had nowhere else to go): no longer.
                    return Transition::None;
                } else if verdict == Verdict::Timeout {
                    EjectReason::Timeout
                } else if self.consecutive_failures >= CONSECUTIVE_FAILURES {
                    EjectReason::ConsecutiveFailures
                } else if window_tripped {
                    EjectReason::ErrorRate
                } else {
                    return Transition::None;
                };
                self.eject(reason, now_ms)
            }
        }
    }

    fn eject(&mut self, reason: EjectReason, now_ms: u64) -> Transition {
        let quiet = self.last_ejected_at_ms != 0 && now_ms.saturating_sub(self.last_ejected_at_ms) > MAX_EJECTION_MS;
        if quiet && reason != EjectReason::ProbeFailed {
            self.ejections = 0;
        }
        self.ejections = self.ejections.saturating_add(1);
        self.last_ejected_at_ms = now_ms;
        let until_ms = now_ms + ejection_ms(self.ejections);
        self.ejected_until_ms = until_ms;
        Transition::Ejected { reason, until_ms }
    }
}

/// A tumbling error-rate window packed in a `u64`: the window's number (24 bits), answers and
/// failures (20 bits each). Pure, so the live counter is one compare-and-swap.
pub fn window_add(packed: u64, now_ms: u64, failed: bool) -> u64 {
    const MASK: u64 = (1 << 20) - 1;
    let window = (now_ms / WINDOW_MS) & ((1 << 24) - 1);
    let (mut requests, mut failures) =
        if packed >> 40 == window { ((packed >> 20) & MASK, packed & MASK) } else { (0, 0) };
    requests = (requests + 1).min(MASK);
    failures = (failures + u64::from(failed)).min(MASK);
    (window << 40) | (requests << 20) | failures
}

/// A window's answers and failures, if it is the current one.
pub fn window_counts(packed: u64, now_ms: u64) -> (u32, u32) {
    const MASK: u64 = (1 << 20) - 1;
    let window = (now_ms / WINDOW_MS) & ((1 << 24) - 1);
    if packed >> 40 == window && packed != 0 {
        (((packed >> 20) & MASK) as u32, (packed & MASK) as u32)
    } else {
        (0, 0)
    }
}

/// Whether a window's counts are over the error-rate limit.
pub fn window_tripped((requests, failures): (u32, u32)) -> bool {
    requests >= WINDOW_MIN_REQUESTS && f64::from(failures) >= WINDOW_MAX_ERROR_RATE * f64::from(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_consecutive_failures_eject_and_a_success_in_between_resets() {
        let mut health = Health::default();
        for _ in 0..4 {
            assert_eq!(health.record(Verdict::Failure, false, false, 1_000), Transition::None);
        }
        assert_eq!(health.record(Verdict::Success, false, false, 1_000), Transition::None);
        for _ in 0..4 {
            assert_eq!(health.record(Verdict::Failure, false, false, 2_000), Transition::None);
        }
        assert_eq!(health.record(Verdict::Neutral, false, false, 2_000), Transition::None, "a 429 is no failure");
        let ejected = health.record(Verdict::Failure, false, false, 2_000);
        assert_eq!(ejected, Transition::Ejected { reason: EjectReason::ConsecutiveFailures, until_ms: 32_000 });
        assert_eq!(health.record(Verdict::Failure, false, false, 3_000), Transition::None, "already out");
    }

    #[test]
    fn a_timeout_ejects_at_once() {
        let mut health = Health::default();
        let ejected = health.record(Verdict::Timeout, false, false, 10);
        assert_eq!(ejected, Transition::Ejected { reason: EjectReason::Timeout, until_ms: 30_010 });
    }

    #[test]
    fn the_error_rate_window_ejects_a_backend_that_fails_every_other_time() {
        let mut health = Health::default();
        let mut window = 0;
        let mut transitions = Vec::new();
        for i in 0..40u64 {
            let failed = i % 2 == 1;
            window = window_add(window, 50_000 + i, failed);
            let tripped = window_tripped(window_counts(window, 50_000 + i));
            let verdict = if failed { Verdict::Failure } else { Verdict::Success };
            let t = health.record(verdict, false, tripped, 50_000 + i);
            if t != Transition::None {
                transitions.push((i, t));
            }
        }
        assert_eq!(transitions.first().map(|t| t.0), Some(19), "the 20th answer, the 10th failure: {transitions:?}");
        assert!(matches!(transitions[0].1, Transition::Ejected { reason: EjectReason::ErrorRate, .. }));
        assert_eq!(window_counts(window, 50_039), (40, 20));
        assert_eq!(window_counts(window, 60_000), (0, 0), "a new window starts empty");
        assert_eq!(window_counts(window_add(window, 60_000, true), 60_000), (1, 1));
        assert!(!window_tripped((19, 19)), "too few answers to judge");
    }

    #[test]
    fn ejections_grow_linearly_up_to_the_bound() {
        let lengths: Vec<u64> = (1..=12).map(ejection_ms).collect();
        assert_eq!(lengths[..3], [30_000, 60_000, 90_000]);
        assert_eq!(lengths[9..], [300_000; 3]);
        let mut health = Health::default();
        let mut now = 0;
        for n in 1..=12 {
            let t = if n == 1 {
                health.record(Verdict::Timeout, false, false, now)
            } else {
                health.record(Verdict::Failure, true, false, now)
            };
            let Transition::Ejected { until_ms, .. } = t else { panic!("ejected: {t:?}") };
            assert_eq!(until_ms - now, ejection_ms(n));
            now = until_ms;
        }
        assert_eq!(health.ejections, 12);
    }

    #[test]
    fn a_probe_restores_or_ejects_again_for_longer() {
        let mut health = Health::default();
        health.record(Verdict::Timeout, false, false, 0);
        let t = health.record(Verdict::Timeout, true, false, 30_000);
        assert_eq!(t, Transition::Ejected { reason: EjectReason::ProbeFailed, until_ms: 90_000 });
        assert_eq!(health.record(Verdict::Neutral, true, false, 90_500), Transition::ProbeReleased);
        assert_eq!(health.ejected_until_ms, 90_500, "free for the next probe");
        assert_eq!(health.record(Verdict::Success, true, false, 91_000), Transition::Restored { probe: true });
        assert!(!health.is_ejected());
        assert_eq!(health.consecutive_failures, 0);
        // Ejected again soon: longer still. After a quiet spell: the base again.
        let t = health.record(Verdict::Timeout, false, false, 100_000);
        assert_eq!(t, Transition::Ejected { reason: EjectReason::Timeout, until_ms: 100_000 + 90_000 });
        health.record(Verdict::Success, false, false, 200_000);
        let t = health.record(Verdict::Timeout, false, false, 500_000);
        assert_eq!(t, Transition::Ejected { reason: EjectReason::Timeout, until_ms: 530_000 });
    }
}
