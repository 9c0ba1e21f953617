//! The latency model of one backend: exponentially weighted mean and mean deviation of what it
//! took, the estimator TCP uses for its retransmission timeout (RFC 6298: gain 1/8 on the mean,
//! 1/4 on the deviation, `mean + 4 * deviation` as a high percentile). TTFT and time per output
//! token are kept per in-flight load bucket, because an LLM server slows down as its batch
//! fills; the non-streaming response time feeds the response deadline.
//!
//! Each estimator is one `AtomicU64` (mean and deviation as two `f32`s), updated by a
//! compare-and-swap: lock-free, and the pair never tears.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Gain on the mean (RFC 6298's alpha).
const MEAN_GAIN: f32 = 1.0 / 8.0;
/// Gain on the mean deviation (RFC 6298's beta).
const DEVIATION_GAIN: f32 = 1.0 / 4.0;
/// An estimator is trusted after this many samples.
pub const MIN_SAMPLES: u32 = 5;
/// The response deadline is this multiple of the predicted high percentile...
const DEADLINE_MULTIPLIER: f32 = 3.0;
/// ...and never shorter than this (connection setup, pauses, a cold cache).
const DEADLINE_FLOOR_MS: f32 = 2_000.0;
/// Load buckets by requests in flight at dispatch (this one included): 1, 2-3, 4-7, 8-15,
/// 16-31, 32 and more.
pub const LOAD_BUCKETS: usize = 6;
/// Bucket labels, for `/config`.
pub const LOAD_BUCKET_NAMES: [&str; LOAD_BUCKETS] = ["1", "2-3", "4-7", "8-15", "16-31", "32+"];

const EMPTY: u64 = u64::MAX;

/// The load bucket of `in_flight` requests (at least 1).
pub fn load_bucket(in_flight: u32) -> usize {
    (in_flight.max(1).ilog2() as usize).min(LOAD_BUCKETS - 1)
}

/// What an estimator says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Smoothed mean.
    pub mean: f32,
    /// Smoothed mean deviation.
    pub deviation: f32,
    /// Samples seen (saturating).
    pub samples: u32,
}

impl Estimate {
    /// A high percentile ("p99-ish"): mean plus four deviations.
    pub fn high(&self) -> f32 {
        self.mean + 4.0 * self.deviation
    }
}

/// One lock-free mean-and-deviation estimator.
#[derive(Debug)]
pub struct Ewma {
    packed: AtomicU64,
    samples: AtomicU32,
}

impl Default for Ewma {
    fn default() -> Self {
        Self { packed: AtomicU64::new(EMPTY), samples: AtomicU32::new(0) }
    }
}

fn pack(mean: f32, deviation: f32) -> u64 {
    (u64::from(mean.to_bits()) << 32) | u64::from(deviation.to_bits())
}

fn unpack(packed: u64) -> (f32, f32) {
    (f32::from_bits((packed >> 32) as u32), f32::from_bits(packed as u32))
}

/// One step of the estimator: the first sample sets the mean and half of it as deviation
/// (RFC 6298's initialisation); later ones move both by their gains.
pub fn step(previous: Option<(f32, f32)>, sample: f32) -> (f32, f32) {
    match previous {
        None => (sample, sample / 2.0),
        Some((mean, deviation)) => {
            (mean + MEAN_GAIN * (sample - mean), deviation + DEVIATION_GAIN * ((sample - mean).abs() - deviation))
        }
    }
}

impl Ewma {
    /// Adds a sample (finite and non-negative; others are ignored).
    pub fn observe(&self, sample: f32) {
        if !sample.is_finite() || sample < 0.0 {
            return;
        }
        // The closure always returns Some, so the update cannot fail.
        let _ = self.packed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
            let previous = (packed != EMPTY).then(|| unpack(packed));
            let (mean, deviation) = step(previous, sample);
            Some(pack(mean, deviation))
        });
        let _ = self.samples.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)));
    }

    /// The estimate, once there is a sample.
    pub fn get(&self) -> Option<Estimate> {
        let packed = self.packed.load(Ordering::Relaxed);
        (packed != EMPTY).then(|| {
            let (mean, deviation) = unpack(packed);
            Estimate { mean, deviation, samples: self.samples.load(Ordering::Relaxed) }
        })
    }
}

/// Everything one backend has been seen to take.
#[derive(Debug, Default)]
pub struct LatencyModel {
    /// Time to first token of streams, ms, by load bucket at dispatch.
    pub ttft: [Ewma; LOAD_BUCKETS],
    /// Time per output token after the first, ms, by load bucket at dispatch.
    pub tpot: [Ewma; LOAD_BUCKETS],
    /// Time to a non-streaming answer's head, ms, per output token it carried.
    pub response_per_token: Ewma,
    /// Output tokens of non-streaming answers.
    pub response_tokens: Ewma,
}

impl LatencyModel {
    /// A non-streaming answer's head arrived after `elapsed` and carried `tokens` output tokens.
    pub fn observe_response(&self, elapsed: Duration, tokens: u64) {
        let tokens = tokens.max(1) as f32;
        self.response_per_token.observe(elapsed.as_secs_f32() * 1000.0 / tokens);
        self.response_tokens.observe(tokens);
    }

    /// A stream's first token arrived `ttft` after dispatch at load bucket `bucket`; then
    /// `tokens` tokens in all arrived by `decode` after the first.
    pub fn observe_stream(&self, bucket: usize, ttft: Duration, decode: Option<(Duration, u64)>) {
        let bucket = bucket.min(LOAD_BUCKETS - 1);
        self.ttft[bucket].observe(ttft.as_secs_f32() * 1000.0);
        if let Some((decode, tokens)) = decode
            && tokens > 1
        {
            self.tpot[bucket].observe(decode.as_secs_f32() * 1000.0 / (tokens - 1) as f32);
        }
    }

    /// Sample-weighted means over the load buckets: (TTFT ms, TPOT ms).
    pub fn overall(&self) -> (Option<f32>, Option<f32>) {
        (weighted_mean(&self.ttft), weighted_mean(&self.tpot))
    }
}

fn weighted_mean(buckets: &[Ewma]) -> Option<f32> {
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for estimate in buckets.iter().filter_map(Ewma::get) {
        sum += f64::from(estimate.mean) * f64::from(estimate.samples);
        weight += f64::from(estimate.samples);
    }
    (weight > 0.0).then(|| (sum / weight) as f32)
}

/// How long a non-streaming attempt may wait for its answer's head before failing over.
///
/// Until the backend has [`MIN_SAMPLES`] answers, the tier's first-token timeout. Then
/// [`DEADLINE_MULTIPLIER`] times the predicted high percentile: per-token time (high) times the
/// output the request may produce: its `max_tokens` when it sets one (an upper bound, so a
/// healthy backend is never cut off), else the high percentile of the backend's answers'
/// lengths. Never below [`DEADLINE_FLOOR_MS`]; never past the tier's total time.
pub fn response_deadline(
    per_token: Option<Estimate>,
    tokens: Option<Estimate>,
    max_tokens: Option<u64>,
    first_token_ms: u32,
    total_ms: u32,
) -> Duration {
    let learned = per_token.zip(tokens).filter(|(p, t)| p.samples.min(t.samples) >= MIN_SAMPLES);
    let ms = match learned {
        None => first_token_ms.min(total_ms) as f32,
        Some((per_token, tokens)) => {
            let output = max_tokens.map_or_else(|| tokens.high(), |max| max.max(1) as f32);
            (DEADLINE_MULTIPLIER * per_token.high() * output).clamp(DEADLINE_FLOOR_MS, (total_ms as f32).max(1.0))
        }
    };
    Duration::from_millis(ms.min(total_ms as f32) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(mean: f32, deviation: f32, samples: u32) -> Option<Estimate> {
        Some(Estimate { mean, deviation, samples })
    }

    #[test]
    fn the_estimator_follows_rfc_6298() {
        let ewma = Ewma::default();
        assert_eq!(ewma.get(), None);
        ewma.observe(100.0);
        assert_eq!(ewma.get(), estimate(100.0, 50.0, 1));
        ewma.observe(180.0);
        // mean += (180 - 100) / 8; deviation += (|180 - 100| - 50) / 4.
        assert_eq!(ewma.get(), estimate(110.0, 57.5, 2));
        ewma.observe(f32::NAN);
        ewma.observe(-1.0);
        assert_eq!(ewma.get().map(|e| e.samples), Some(2), "nonsense samples are ignored");
    }

    #[test]
    fn a_steady_backend_converges_and_its_deviation_shrinks() {
        let ewma = Ewma::default();
        for _ in 0..200 {
            ewma.observe(40.0);
        }
        let e = ewma.get().expect("samples");
        assert!((e.mean - 40.0).abs() < 0.01 && e.deviation < 0.01, "{e:?}");
        for _ in 0..30 {
            ewma.observe(400.0);
        }
        let e = ewma.get().expect("samples");
        assert!(e.mean > 380.0, "a slowdown shows within a few dozen samples: {e:?}");
    }

    #[test]
    fn load_buckets_double() {
        let buckets: Vec<usize> = [0, 1, 2, 3, 4, 7, 8, 31, 32, 1000].into_iter().map(load_bucket).collect();
        assert_eq!(buckets, [0, 0, 1, 1, 2, 2, 3, 4, 5, 5]);
        let model = LatencyModel::default();
        model.observe_stream(0, Duration::from_millis(50), Some((Duration::from_millis(90), 10)));
        model.observe_stream(5, Duration::from_millis(500), None);
        assert_eq!(model.tpot[0].get().map(|e| e.mean), Some(10.0));
        assert_eq!(model.overall(), (Some(275.0), Some(10.0)));
    }

    #[test]
    fn the_response_deadline_starts_at_the_first_token_timeout_and_learns() {
        let cold = response_deadline(None, None, Some(10), 1_500, 300_000);
        assert_eq!(cold, Duration::from_millis(1_500));
        let few = response_deadline(estimate(1.0, 0.0, 4), estimate(10.0, 0.0, 4), None, 1_500, 300_000);
        assert_eq!(few, Duration::from_millis(1_500), "four samples are not enough");
        // 10 ms per token (high 10 + 4 * 5 = 30), 100 tokens asked: 3 * 30 * 100 = 9 s.
        let per_token = estimate(10.0, 5.0, 50);
        let tokens = estimate(20.0, 5.0, 50);
        assert_eq!(response_deadline(per_token, tokens, Some(100), 1_500, 300_000), Duration::from_secs(9));
        // No max_tokens: the high percentile of lengths, 20 + 4 * 5 = 40 tokens: 3.6 s.
        assert_eq!(response_deadline(per_token, tokens, None, 1_500, 300_000), Duration::from_millis(3_600));
        // Floor and ceiling.
        let fast = estimate(0.01, 0.0, 50);
        assert_eq!(response_deadline(fast, tokens, Some(8), 1_500, 300_000), Duration::from_secs(2));
        assert_eq!(response_deadline(per_token, tokens, Some(100_000), 1_500, 60_000), Duration::from_secs(60));
        assert_eq!(response_deadline(None, None, None, 90_000, 60_000), Duration::from_secs(60));
    }
}
