//! The latency model: time to first token from prefill work, time per output token, both
//! scaled by how many sequences run at once, with seeded multiplicative noise. Pure arithmetic.

use std::time::Duration;

use crate::profile::Profile;
use crate::rng::SplitMix64;

/// The latency knobs of a [`Profile`], ready for arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyModel {
    prefill_overhead_ms: f64,
    prefill_per_token_ms: f64,
    inter_token_ms: f64,
    max_num_seqs: usize,
    load_slowdown: f64,
    jitter: f64,
}

impl LatencyModel {
    /// The model of a profile.
    pub fn new(profile: &Profile) -> Self {
        Self {
            prefill_overhead_ms: profile.prefill_overhead_ms,
            prefill_per_token_ms: profile.prefill_per_token_ms,
            inter_token_ms: profile.inter_token_ms,
            max_num_seqs: profile.max_num_seqs.max(1) as usize,
            load_slowdown: profile.load_slowdown,
            jitter: profile.jitter,
        }
    }

    /// The latency multiplier with `running` sequences in the batch (this one included): 1.0 for
    /// one, `loadSlowdown` at `maxNumSeqs`, linear in between.
    pub fn load_factor(&self, running: usize) -> f64 {
        if self.max_num_seqs <= 1 {
            return 1.0;
        }
        let busy = running.clamp(1, self.max_num_seqs) - 1;
        1.0 + (self.load_slowdown - 1.0) * busy as f64 / (self.max_num_seqs - 1) as f64
    }

    /// Prefill time (time to first token, queueing excluded) for `uncached_tokens` prompt tokens.
    pub fn prefill(&self, uncached_tokens: usize, running: usize, rng: &mut SplitMix64) -> Duration {
        let base = self.prefill_overhead_ms + uncached_tokens as f64 * self.prefill_per_token_ms;
        self.scaled(base, running, rng)
    }

    /// The time between two output tokens.
    pub fn inter_token(&self, running: usize, rng: &mut SplitMix64) -> Duration {
        self.scaled(self.inter_token_ms, running, rng)
    }

    /// Whether output tokens come with no delay at all.
    pub fn decode_is_instant(&self) -> bool {
        self.inter_token_ms == 0.0
    }

    fn scaled(&self, base_ms: f64, running: usize, rng: &mut SplitMix64) -> Duration {
        if base_ms <= 0.0 {
            return Duration::ZERO;
        }
        let noise = if self.jitter > 0.0 { (1.0 + self.jitter * rng.normal()).max(0.0) } else { 1.0 };
        Duration::from_secs_f64(base_ms * self.load_factor(running) * noise / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(jitter: f64) -> LatencyModel {
        LatencyModel::new(&Profile {
            prefill_overhead_ms: 30.0,
            prefill_per_token_ms: 0.5,
            inter_token_ms: 12.0,
            max_num_seqs: 5,
            load_slowdown: 3.0,
            jitter,
            ..Profile::default()
        })
    }

    #[test]
    fn load_factor_is_linear_from_one_to_slowdown() {
        let m = model(0.0);
        assert_eq!(m.load_factor(0), 1.0);
        assert_eq!(m.load_factor(1), 1.0);
        assert_eq!(m.load_factor(3), 2.0);
        assert_eq!(m.load_factor(5), 3.0);
        assert_eq!(m.load_factor(50), 3.0);
    }

    #[test]
    fn prefill_and_decode_arithmetic() {
        let m = model(0.0);
        let mut rng = SplitMix64::new(0);
        assert_eq!(m.prefill(100, 1, &mut rng), Duration::from_millis(80));
        assert_eq!(m.prefill(100, 5, &mut rng), Duration::from_millis(240));
        assert_eq!(m.inter_token(3, &mut rng), Duration::from_millis(24));
        assert!(!m.decode_is_instant());
    }

    #[test]
    fn jitter_keeps_the_mean_and_has_the_configured_spread() {
        let m = model(0.2);
        let mut rng = SplitMix64::new(42);
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| m.inter_token(1, &mut rng).as_secs_f64() * 1000.0).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let sd = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((mean - 12.0).abs() < 0.1, "mean {mean}");
        assert!((sd - 2.4).abs() < 0.1, "sd {sd}");
    }

    #[test]
    fn zero_latency_draws_nothing() {
        let m = LatencyModel::new(&Profile::instant());
        let mut rng = SplitMix64::new(5);
        let before = rng.clone().next_u64();
        assert_eq!(m.prefill(1000, 1, &mut rng), Duration::ZERO);
        assert_eq!(m.inter_token(1, &mut rng), Duration::ZERO);
        assert_eq!(rng.next_u64(), before);
        assert!(m.decode_is_instant());
    }
}
