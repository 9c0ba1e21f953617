//! The latency model of one backend: exponentially weighted mean and mean deviation of what it
//! took, the estimator TCP uses for its retransmission timeout (RFC 6298: gain 1/8 on the mean,
//! 1/4 on the deviation, `mean + 4 * deviation` as a high percentile). TTFT and time per output
//! token are kept per in-flight load bucket, because an LLM server slows down as its batch
//! fills; the non-streaming response time feeds the response deadline.
//!
//! Two lines fitted by exponentially weighted least squares ([`Line`]) complete it:
//!
//! - **Prefill** ([`LatencyModel::prefill`]): how far a first token lands from its bucket's mean,
//!   against the prompt's tokens. Its slope is the time per prompt token; the predictor adds
//!   `slope x (prompt - mean prompt)` so a long prompt is predicted slower than the bucket's
//!   average and a short one faster. A residual against the bucket (not the raw TTFT) keeps load
//!   out of the slope.
//! - **Whole answers** ([`LatencyModel::response_line`]): time to a non-streaming answer's head
//!   against its output tokens. A non-streaming answer shows only its total time, which is TTFT
//!   plus `(tokens - 1) x TPOT`; the model subtracts the decode part and learns the rest as a
//!   first-token sample ([`LatencyModel::observe_whole`]), so a backend serving only
//!   non-streaming traffic is measured and predicted like one serving streams. The TPOT used is
//!   the streams' (measured directly) when there are any, else this line's slope (time per
//!   output token, identifiable once answers vary in length); with neither the sample only
//!   teaches the line. Why not a separate per-request-latency model: the router's hints are
//!   TTFT and TPOT, and one TTFT model fed by both kinds of traffic keeps the prediction, the
//!   headroom and `x-sluice-predicted-ttft-ms` one thing.
//!
//! Each estimator is one `AtomicU64` (mean and deviation as two `f32`s), updated by a
//! compare-and-swap: lock-free, and the pair never tears. A [`Line`] is two such words (means;
//! variance and covariance), each updated by its own compare-and-swap: under concurrent updates
//! the two may interleave, which moves an estimate by a sample's weight at most.

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
/// Load buckets by requests in flight at dispatch (this one included): one per load up to
/// [`SINGLE_LOADS`], where small backends fill their batch and start to queue (a queue of one
/// behind a batch of four is a different backend than a batch of four), then half octaves:
/// 17-24, 25-32, 33-48, 49-64, 65-96, 97 and more.
pub const LOAD_BUCKETS: usize = 22;
/// Loads with a bucket of their own.
pub const SINGLE_LOADS: u32 = 16;
/// Bucket labels, for `/config`.
pub const LOAD_BUCKET_NAMES: [&str; LOAD_BUCKETS] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17-24", "25-32", "33-48",
    "49-64", "65-96", "97+",
];

const EMPTY: u64 = u64::MAX;

/// The load bucket of `in_flight` requests (at least 1).
pub fn load_bucket(in_flight: u32) -> usize {
    let load = in_flight.max(1);
    if load <= SINGLE_LOADS {
        return (load - 1) as usize;
    }
    // 17..=32 is octave 4 of load - 1 (16..=31), split in halves by its next bit.
    let above = load - 1;
    let octave = above.ilog2();
    let half = (above >> (octave - 1)) & 1;
    ((SINGLE_LOADS + 2 * (octave - 4) + half) as usize).min(LOAD_BUCKETS - 1)
}

/// The loads bucket `bucket` holds, lowest and highest (the last bucket's highest is taken as
/// 128: its loads are open-ended).
pub fn bucket_loads(bucket: usize) -> (u32, u32) {
    let bucket = bucket.min(LOAD_BUCKETS - 1) as u32;
    if bucket < SINGLE_LOADS {
        return (bucket + 1, bucket + 1);
    }
    let octave = 4 + (bucket - SINGLE_LOADS) / 2;
    let half_width = 1 << (octave - 1);
    let low = (1 << octave) + (bucket - SINGLE_LOADS) % 2 * half_width + 1;
    (low, low + half_width - 1)
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

/// Gain of a [`Line`] (slower than the means': a slope needs more samples than a mean).
const LINE_GAIN: f32 = 1.0 / 32.0;
/// A line's slope is trusted after this many samples...
pub const LINE_MIN_SAMPLES: u32 = 10;
/// ...when its `x` varies by at least this share of its mean (standard deviation over mean);
/// below it, a slope is noise.
const LINE_MIN_SPREAD: f32 = 0.05;

/// A line `y = mean_y + slope x (x - mean_x)` fitted by exponentially weighted least squares
/// (West's weighted incremental mean and covariance).
#[derive(Debug)]
pub struct Line {
    means: AtomicU64,
    moments: AtomicU64,
    samples: AtomicU32,
}

impl Default for Line {
    fn default() -> Self {
        Self { means: AtomicU64::new(EMPTY), moments: AtomicU64::new(pack(0.0, 0.0)), samples: AtomicU32::new(0) }
    }
}

/// A fitted line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Mean of x.
    pub mean_x: f32,
    /// Mean of y.
    pub mean_y: f32,
    /// dy/dx.
    pub slope: f32,
}

impl Line {
    /// Adds a sample (finite values only).
    pub fn observe(&self, x: f32, y: f32) {
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        let previous = self
            .means
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                Some(if packed == EMPTY {
                    pack(x, y)
                } else {
                    let (mx, my) = unpack(packed);
                    pack(mx + LINE_GAIN * (x - mx), my + LINE_GAIN * (y - my))
                })
            })
            .unwrap_or_else(|p| p);
        if previous != EMPTY {
            let (mx, my) = unpack(previous);
            let (dx, dy) = (x - mx, y - my);
            let _ = self.moments.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let (vxx, cxy) = unpack(packed);
                Some(pack(
                    (1.0 - LINE_GAIN) * (vxx + LINE_GAIN * dx * dx),
                    (1.0 - LINE_GAIN) * (cxy + LINE_GAIN * dx * dy),
                ))
            });
        }
        let _ = self.samples.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)));
    }

    /// The line, once it has [`LINE_MIN_SAMPLES`] and x varies enough to give it a slope.
    pub fn fit(&self) -> Option<Fit> {
        let packed = self.means.load(Ordering::Relaxed);
        if packed == EMPTY || self.samples.load(Ordering::Relaxed) < LINE_MIN_SAMPLES {
            return None;
        }
        let (mean_x, mean_y) = unpack(packed);
        let (vxx, cxy) = unpack(self.moments.load(Ordering::Relaxed));
        let spread = LINE_MIN_SPREAD * mean_x.abs().max(1.0);
        (vxx > spread * spread).then(|| Fit { mean_x, mean_y, slope: cxy / vxx })
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
    /// First tokens' distance from their bucket's mean (ms) against prompt tokens.
    pub prefill: Line,
    /// Time to a non-streaming answer's head (ms) against its output tokens.
    pub response_line: Line,
}

impl LatencyModel {
    /// A non-streaming answer's head arrived after `elapsed` and carried `tokens` output tokens.
    pub fn observe_response(&self, elapsed: Duration, tokens: u64) {
        let tokens = tokens.max(1) as f32;
        self.response_per_token.observe(elapsed.as_secs_f32() * 1000.0 / tokens);
        self.response_tokens.observe(tokens);
    }

    /// A first token arrived `ttft` after dispatch at load bucket `bucket`, for a prompt of
    /// `prompt_tokens`.
    fn observe_ttft(&self, bucket: usize, ttft_ms: f32, prompt_tokens: u64) {
        if let Some(before) = self.ttft[bucket].get() {
            self.prefill.observe(prompt_tokens as f32, ttft_ms - before.mean);
        }
        self.ttft[bucket].observe(ttft_ms);
    }

    /// A stream's first token arrived `ttft` after dispatch at load bucket `bucket`, for a
    /// prompt of `prompt_tokens`.
    pub fn observe_first_token(&self, bucket: usize, ttft: Duration, prompt_tokens: u64) {
        self.observe_ttft(bucket.min(LOAD_BUCKETS - 1), ttft.as_secs_f32() * 1000.0, prompt_tokens);
    }

    /// A stream dispatched at load bucket `bucket` delivered `tokens` tokens in all, the last
    /// `decode` after the first.
    pub fn observe_decode(&self, bucket: usize, decode: Duration, tokens: u64) {
        if tokens > 1 {
            self.tpot[bucket.min(LOAD_BUCKETS - 1)].observe(decode.as_secs_f32() * 1000.0 / (tokens - 1) as f32);
        }
    }

    /// Both of the above: a stream's first token after `ttft`, then `decode` (`None`: it did
    /// not end well) for `tokens` tokens in all.
    pub fn observe_stream(&self, bucket: usize, ttft: Duration, decode: Option<(Duration, u64)>, prompt_tokens: u64) {
        self.observe_first_token(bucket, ttft, prompt_tokens);
        if let Some((decode, tokens)) = decode {
            self.observe_decode(bucket, decode, tokens);
        }
    }

    /// A non-streaming answer dispatched at load bucket `bucket` came whole after `elapsed` with
    /// `tokens` output tokens: feeds the response deadline, the whole-answer line and, when the
    /// time per output token is known, the first-token model (see the module's comment).
    /// Returns the first-token time it learned, ms.
    pub fn observe_whole(&self, bucket: usize, elapsed: Duration, tokens: u64, prompt_tokens: u64) -> Option<f32> {
        let bucket = bucket.min(LOAD_BUCKETS - 1);
        let total_ms = elapsed.as_secs_f32() * 1000.0;
        self.observe_response(elapsed, tokens);
        self.response_line.observe(tokens as f32, total_ms);
        let tpot = self.tpot[bucket]
            .get()
            .map(|e| e.mean)
            .or_else(|| self.overall().1)
            .or_else(|| self.response_line.fit().map(|f| f.slope).filter(|s| *s >= 0.0))?;
        let ttft_ms = total_ms - tpot * tokens.saturating_sub(1) as f32;
        // More decode time than the whole answer took: the TPOT estimate is off for this answer.
        (ttft_ms > 0.0).then(|| {
            self.observe_ttft(bucket, ttft_ms, prompt_tokens);
            ttft_ms
        })
    }

    /// Time per prompt token (ms) and the mean prompt it is measured from, once learned; never
    /// negative (a longer prompt is not faster to prefill).
    pub fn prefill_slope(&self) -> Option<(f32, f32)> {
        self.prefill.fit().map(|f| (f.slope.max(0.0), f.mean_x))
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
    fn load_buckets_are_single_loads_then_half_octaves() {
        let loads = [0, 1, 2, 16, 17, 24, 25, 32, 33, 48, 49, 64, 65, 96, 97, 128, 129, 100_000];
        let buckets: Vec<usize> = loads.into_iter().map(load_bucket).collect();
        assert_eq!(buckets, [0, 0, 1, 15, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 21, 21]);
        for (bucket, name) in LOAD_BUCKET_NAMES.iter().enumerate() {
            let (low, high) = bucket_loads(bucket);
            assert!(low <= high, "bucket {bucket}");
            assert_eq!((load_bucket(low), load_bucket(high)), (bucket, bucket), "bucket {bucket}: {low}-{high}");
            if bucket + 1 < LOAD_BUCKETS {
                assert_eq!(bucket_loads(bucket + 1).0, high + 1, "buckets {bucket} and {} meet", bucket + 1);
            }
            assert!(name.starts_with(&low.to_string()), "{name} names bucket {bucket}");
        }
        let model = LatencyModel::default();
        model.observe_stream(0, Duration::from_millis(50), Some((Duration::from_millis(90), 10)), 100);
        model.observe_stream(5, Duration::from_millis(500), None, 100);
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

    #[test]
    fn a_line_learns_its_slope_only_when_x_varies() {
        let line = Line::default();
        for i in 0..200 {
            line.observe(100.0, 40.0 + (i % 3) as f32);
        }
        assert_eq!(line.fit(), None, "one x: no slope");
        let line = Line::default();
        for i in 0..400u32 {
            let x = (i % 10 * 100) as f32;
            line.observe(x, 20.0 + 0.2 * x);
        }
        let fit = line.fit().expect("fitted");
        assert!((fit.slope - 0.2).abs() < 0.01, "{fit:?}");
        assert!((fit.mean_y - (20.0 + 0.2 * fit.mean_x)).abs() < 1.0, "{fit:?}");
    }

    #[test]
    fn long_prompts_teach_a_prefill_slope() {
        let model = LatencyModel::default();
        // 30 ms plus 0.25 ms per prompt token, at one load.
        for i in 0..400u64 {
            let prompt = 100 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) * 500;
            let ttft = Duration::from_secs_f32((30.0 + 0.25 * prompt as f32) / 1000.0);
            model.observe_stream(0, ttft, None, prompt);
        }
        let (slope, mean) = model.prefill_slope().expect("learned");
        assert!((slope - 0.25).abs() < 0.05, "slope {slope}");
        assert!(mean > 1_000.0 && mean < 2_600.0, "mean prompt {mean}");
    }

    #[test]
    fn whole_answers_teach_ttft_by_subtracting_decode() {
        // Streams measured TPOT 10 ms: a whole answer of 21 tokens in 260 ms had TTFT 60 ms.
        let model = LatencyModel::default();
        model.observe_stream(0, Duration::from_millis(60), Some((Duration::from_millis(200), 21)), 10);
        assert_eq!(model.observe_whole(0, Duration::from_millis(260), 21, 10), Some(60.0));
        assert_eq!(model.ttft[0].get().map(|e| (e.mean, e.samples)), Some((60.0, 2)));
        // Only whole answers, of varied lengths (50 ms + 5 ms per token after the first): the
        // line's slope stands in for TPOT once it is learned.
        let whole = LatencyModel::default();
        let mut learned = Vec::new();
        for i in 0..40u64 {
            let tokens = 1 + i % 5 * 20;
            let ms = 50 + 5 * (tokens - 1);
            learned.push(whole.observe_whole(1, Duration::from_millis(ms), tokens, 10));
        }
        assert!(learned[..LINE_MIN_SAMPLES as usize - 1].iter().all(Option::is_none), "no TPOT yet: {learned:?}");
        let ttft = whole.ttft[1].get().expect("learned from whole answers");
        assert!((ttft.mean - 50.0).abs() < 2.0, "{ttft:?}");
        // A nonsense answer (faster than its decode) teaches nothing.
        assert_eq!(model.observe_whole(0, Duration::from_millis(5), 100, 10), None);
    }
}
