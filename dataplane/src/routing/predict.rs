//! What a backend will take for one more request: its time to first token and per output token
//! at the load it would have with this request (requests in flight + 1), from the backend's
//! latency model ([`crate::backends::latency`]: mean and mean deviation per load bucket).
//!
//! Why this predictor: an LLM server's latency depends first on its batch (how many sequences
//! it runs), which is what the per-bucket model measures directly; where the bucket of this
//! request's load has samples, its estimate is the prediction. A load not measured yet is
//! extrapolated from the nearest measured bucket below it, assuming half the extra load shows as
//! extra latency: between a batch that absorbs it (vLLM and the simulator run about 2x slower
//! with a full batch than with one sequence) and a queue that does not (x load). Only a higher
//! bucket measured: its estimate, as a lower load is not slower. The prediction is the smoothed
//! mean; `mean + deviation` is what must fit under a hint (the headroom). A backend with fewer
//! than [`MIN_SAMPLES`] first tokens has no prediction: it is cold.
//!
//! [`predict_request`] adds what is known about this request and this backend beyond the
//! gateway's own load:
//!
//! - **Prompt size.** Prefill grows with the prompt: the backend's learned time per prompt token
//!   (see [`crate::backends::latency`]) times this prompt's distance from the mean prompt the
//!   buckets were measured with shifts the TTFT prediction (never below zero).
//! - **A pool pod's scraped queue.** vLLM serves the requests waiting before this one, whoever
//!   sent them (another gateway replica, another client): the first token is predicted at the
//!   load `max(in flight from here, running + waiting) + 1`, the per-token time at
//!   `max(in flight from here, running) + 1` (queued requests do not slow the decode of running
//!   ones). The maximum, not the sum: this gateway's own requests are in the pod's counts too,
//!   and a scrape is up to an interval old while the gateway's count is live.
//! - **KV-cache pressure.** Above [`KV_PRESSURE`] use, vLLM cannot admit a new sequence without
//!   waiting for blocks to free (or preempting one), so the TTFT prediction grows linearly up to
//!   twice at a full cache. The factor is a judgement, not a measurement: it orders a full pod
//!   after an equal one with room, which is what routing needs.

use crate::backends::latency::{Estimate, LOAD_BUCKETS, MIN_SAMPLES, bucket_loads, load_bucket};
use crate::scrape::PodLoad;

/// A predicted time, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Predicted {
    /// The expected time.
    pub mean: f32,
    /// The time that must fit under a hint: mean plus one mean deviation.
    pub high: f32,
}

/// Share of extra load that shows as extra latency when extrapolating with one measured load.
const EXTRAPOLATION_SLOPE: f32 = 0.5;

/// The load a bucket's estimate stands for: the middle of its loads.
fn bucket_load(bucket: usize) -> f32 {
    let (low, high) = bucket_loads(bucket);
    (low + high) as f32 / 2.0
}

/// Predicts the time at `load` requests in flight (this one included) from per-bucket
/// estimates; `None` while fewer than [`MIN_SAMPLES`] samples were seen in all.
///
/// The bucket of `load` when measured; else a line between the nearest measured buckets below
/// and above; else, above every measured load, the line through the two highest measured loads
/// (a queue grows the first token linearly with the requests ahead), at least
/// [`EXTRAPOLATION_SLOPE`] of the relative extra load and at most all of it (load x time: a
/// queue of whole requests); below every measured load, the lowest measured one's (a lower load
/// is not slower).
pub fn predict(buckets: &[Option<Estimate>; LOAD_BUCKETS], load: u32) -> Option<Predicted> {
    let samples: u32 = buckets.iter().flatten().map(|e| e.samples).sum();
    if samples < MIN_SAMPLES {
        return None;
    }
    let target = load_bucket(load);
    let at = |e: &Estimate| Predicted { mean: e.mean, high: e.mean + e.deviation };
    if let Some(e) = &buckets[target] {
        return Some(at(e));
    }
    let mut below = buckets[..target].iter().enumerate().rev().filter_map(|(i, e)| e.as_ref().map(|e| (i, e)));
    let above = buckets[target..].iter().enumerate().find_map(|(i, e)| e.as_ref().map(|e| (target + i, e)));
    let load = load as f32;
    match (below.next(), above) {
        (Some((i, low)), Some((j, high))) => {
            let share = ((load - bucket_load(i)) / (bucket_load(j) - bucket_load(i))).clamp(0.0, 1.0);
            let (low, high) = (at(low), at(high));
            let line = |a: f32, b: f32| (a + share * (b - a)).max(a);
            Some(Predicted { mean: line(low.mean, high.mean), high: line(low.high, high.high) })
        }
        (Some((i, top)), None) => {
            let x = bucket_load(i);
            let least = 1.0 + EXTRAPOLATION_SLOPE * (load / x - 1.0).max(0.0);
            // A line from two noisy means may run steep; twice a queue of whole requests at most.
            let most = 2.0 * (load / x).max(1.0);
            let lined = below.next().map_or(least, |(k, next)| {
                let slope = (top.mean - next.mean) / (x - bucket_load(k));
                1.0 + slope * (load - x) / top.mean.max(1.0)
            });
            let factor = lined.clamp(least, most);
            let p = at(top);
            Some(Predicted { mean: p.mean * factor, high: p.high * factor })
        }
        (None, Some((_, e))) => Some(at(e)),
        (None, None) => None,
    }
}

/// A first token this many times slower than at the next lower load measured means requests
/// queue behind a full batch: between two loads a fuller batch slows vLLM and the simulator by
/// well under 2x, a queue by the length of whole requests.
pub const QUEUE_RATIO: f32 = 2.5;

/// How many requests a backend runs at once before they queue, from its first-token times by
/// load: the highest load measured before the first whose TTFT is more than [`QUEUE_RATIO`]
/// times the previous measured load's. When no load jumps so, the backend is trusted one
/// bucket further than it was seen (so a backend given more work shows how much it takes:
/// capacity is learned by using it). `None` while nothing is measured. A queue of one behind a
/// large batch moves the first token too little to show here; such a backend's capacity is
/// what it was seen to take, and the TTFT prediction by load carries its queue.
pub fn capacity(ttft: &[Option<Estimate>; LOAD_BUCKETS]) -> Option<u32> {
    let mut measured = ttft.iter().enumerate().filter_map(|(i, e)| e.map(|e| (i, e.mean)));
    let (mut good, mut previous) = measured.next()?;
    for (bucket, mean) in measured {
        if mean > QUEUE_RATIO * previous.max(1.0) {
            return Some(bucket_loads(good).1);
        }
        (good, previous) = (bucket, mean);
    }
    Some(bucket_loads((good + 1).min(LOAD_BUCKETS - 1)).1)
}

/// Silence (ms) below which a backend is never taken for hung.
pub const OVERDUE_FLOOR_MS: f32 = 250.0;

/// A backend that has kept requests waiting `silent_ms` for a first token, answering no one,
/// past its predicted first token (`first.high`, and at least [`OVERDUE_FLOOR_MS`]), is
/// overdue: a new request there waits at least as long again, so the prediction grows by the
/// silence (`None`: not overdue). This moves traffic off a hung backend long before the
/// first-token timeout ejects it.
pub fn overdue(first: Predicted, silent_ms: f32) -> Option<Predicted> {
    (silent_ms > first.high.max(OVERDUE_FLOOR_MS))
        .then_some(Predicted { mean: first.mean + silent_ms, high: first.high + silent_ms })
}

/// KV-cache use above which a pod's first tokens are predicted slower.
pub const KV_PRESSURE: f32 = 0.9;

/// What is known about one request on one backend besides the latency model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Requests the gateway has in flight there.
    pub in_flight: u32,
    /// The pod's fresh scraped load, for a pool.
    pub pod: Option<PodLoad>,
    /// This request's estimated prompt tokens.
    pub prompt_tokens: u64,
    /// The backend's learned time per prompt token (ms) and the mean prompt it is measured from.
    pub prefill: Option<(f32, f32)>,
}

/// Predicts this request's (TTFT, TPOT) on a backend from its per-bucket estimates and
/// `signals` (see the module's comment). No TTFT prediction, no TPOT one: the backend is cold.
pub fn predict_request(
    ttft: &[Option<Estimate>; LOAD_BUCKETS],
    tpot: &[Option<Estimate>; LOAD_BUCKETS],
    signals: &Signals,
) -> (Option<Predicted>, Option<Predicted>) {
    let (queued, batch) = signals.pod.map_or((0, 0), |p| (p.running.saturating_add(p.waiting), p.running));
    let ttft_load = signals.in_flight.max(queued).saturating_add(1);
    let tpot_load = signals.in_flight.max(batch).saturating_add(1);
    let Some(mut first) = predict(ttft, ttft_load) else { return (None, None) };
    if let Some((per_token, mean_prompt)) = signals.prefill {
        let shift = per_token * (signals.prompt_tokens as f32 - mean_prompt);
        first = Predicted { mean: (first.mean + shift).max(0.0), high: (first.high + shift).max(0.0) };
    }
    if let Some(usage) = signals.pod.and_then(|p| p.kv_cache_usage)
        && usage > KV_PRESSURE
    {
        let factor = 1.0 + ((usage - KV_PRESSURE) / (1.0 - KV_PRESSURE)).min(1.0);
        first = Predicted { mean: first.mean * factor, high: first.high * factor };
    }
    (Some(first), predict(tpot, tpot_load))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(entries: &[(usize, f32, f32, u32)]) -> [Option<Estimate>; LOAD_BUCKETS] {
        let mut out = [None; LOAD_BUCKETS];
        for &(i, mean, deviation, samples) in entries {
            out[i] = Some(Estimate { mean, deviation, samples });
        }
        out
    }

    #[test]
    fn a_measured_load_is_the_prediction_and_between_two_a_line() {
        // Measured at loads 1 and 3.
        let b = buckets(&[(0, 40.0, 5.0, 10), (2, 90.0, 10.0, 10)]);
        assert_eq!(predict(&b, 1), Some(Predicted { mean: 40.0, high: 45.0 }));
        assert_eq!(predict(&b, 3), Some(Predicted { mean: 90.0, high: 100.0 }));
        assert_eq!(predict(&b, 2), Some(Predicted { mean: 65.0, high: 72.5 }), "halfway");
    }

    #[test]
    fn unmeasured_loads_extrapolate_up_and_never_down() {
        let b = buckets(&[(1, 100.0, 0.0, 10)]);
        // One load measured (2): 12 is six times that, 1 + 0.5 x 5 = 3.5x.
        assert_eq!(predict(&b, 12).map(|p| p.mean), Some(350.0));
        assert_eq!(predict(&b, 1).map(|p| p.mean), Some(100.0), "lower load: the higher bucket's estimate");
        // Two loads measured (1 and 4): the line through them, 10 ms a request.
        let two = buckets(&[(0, 50.0, 0.0, 10), (3, 80.0, 0.0, 10)]);
        assert_eq!(predict(&two, 8).map(|p| p.mean), Some(120.0));
        // A queue behind a batch of 4 (80 ms at 4, 400 at 5): each request ahead adds 320 ms.
        let queue = buckets(&[(3, 80.0, 0.0, 10), (4, 400.0, 0.0, 10)]);
        assert_eq!(predict(&queue, 7).map(|p| p.mean), Some(1_040.0));
        // A line falling with load is no reason to predict less than half the extra load.
        let noisy = buckets(&[(0, 90.0, 0.0, 10), (1, 60.0, 0.0, 10)]);
        assert_eq!(predict(&noisy, 4).map(|p| p.mean), Some(90.0), "1 + 0.5 x (4 / 2 - 1) = 1.5x of 60");
        // A steep line from two close, noisy means (100 ms at 16, 400 at 17-24, taken as 20.5)
        // is bounded by twice a queue of whole requests: at 41, 2 x 41 / 20.5 = 4x of 400.
        let steep = buckets(&[(15, 100.0, 0.0, 10), (16, 400.0, 0.0, 10)]);
        assert_eq!(predict(&steep, 41).map(|p| p.mean), Some(1_600.0));
    }

    #[test]
    fn cold_backends_have_no_prediction() {
        assert_eq!(predict(&buckets(&[(0, 40.0, 5.0, 4)]), 1), None);
        assert_eq!(predict(&buckets(&[]), 1), None);
        assert!(predict(&buckets(&[(0, 40.0, 5.0, 3), (3, 80.0, 5.0, 2)]), 1).is_some(), "samples add up");
    }

    #[test]
    fn capacity_is_where_first_tokens_start_queueing() {
        // 50 ms at 1 in flight, 60 at 2, 80 at 3 (a fuller batch), 400 at 4 (a queue).
        let queued = buckets(&[(0, 50.0, 5.0, 10), (1, 60.0, 5.0, 10), (2, 80.0, 5.0, 10), (3, 400.0, 9.0, 10)]);
        assert_eq!(capacity(&queued), Some(3));
        // A batch slowing each load 1.5x is no queue, however far it goes.
        let slowing = buckets(&[(0, 100.0, 5.0, 10), (1, 150.0, 5.0, 10), (2, 225.0, 5.0, 10), (3, 340.0, 5.0, 10)]);
        assert_eq!(capacity(&slowing), Some(5));
        // Never seen queueing: trusted one bucket beyond the highest seen.
        assert_eq!(capacity(&buckets(&[(0, 400.0, 5.0, 10), (2, 700.0, 5.0, 10)])), Some(4));
        assert_eq!(capacity(&buckets(&[(0, 50.0, 5.0, 10)])), Some(2));
        assert_eq!(capacity(&buckets(&[(16, 50.0, 5.0, 10)])), Some(32), "17-24 seen: up to 32 trusted");
        assert_eq!(capacity(&buckets(&[])), None);
        // A queue already at the second load: capacity 1.
        assert_eq!(capacity(&buckets(&[(0, 50.0, 5.0, 10), (1, 500.0, 5.0, 10)])), Some(1));
    }

    #[test]
    fn a_silent_backend_past_its_first_token_is_overdue() {
        let first = Predicted { mean: 200.0, high: 300.0 };
        assert_eq!(overdue(first, 0.0), None);
        assert_eq!(overdue(first, 280.0), None, "still within the predicted high");
        assert_eq!(overdue(first, 900.0), Some(Predicted { mean: 1_100.0, high: 1_200.0 }));
        let quick = Predicted { mean: 20.0, high: 30.0 };
        assert_eq!(overdue(quick, 200.0), None, "below the floor a short pause is no stall");
    }

    #[test]
    fn a_pods_queue_counts_as_load_for_the_first_token_only() {
        let ttft = buckets(&[(0, 50.0, 0.0, 10)]);
        let tpot = buckets(&[(0, 10.0, 0.0, 10)]);
        let idle = Signals { in_flight: 0, ..Signals::default() };
        assert_eq!(predict_request(&ttft, &tpot, &idle).0.map(|p| p.mean), Some(50.0));
        // 1 running + 7 waiting elsewhere: this request is the 9th, 1 + 0.5 x 8 = 5x.
        let queued = Signals { pod: Some(PodLoad { waiting: 7, running: 1, kv_cache_usage: None }), ..idle };
        let (first, per_token) = predict_request(&ttft, &tpot, &queued);
        assert_eq!(first.map(|p| p.mean), Some(250.0));
        assert_eq!(per_token.map(|p| p.mean), Some(15.0), "decodes beside 1 running: load 2");
        // The gateway's own requests are in the pod's counts: the larger count, not the sum.
        let own = Signals { in_flight: 8, ..queued };
        assert_eq!(predict_request(&ttft, &tpot, &own).0.map(|p| p.mean), Some(250.0));
    }

    #[test]
    fn a_full_kv_cache_slows_the_first_token_up_to_twice() {
        let ttft = buckets(&[(0, 100.0, 10.0, 10)]);
        let tpot = buckets(&[(0, 10.0, 0.0, 10)]);
        let with = |usage| Signals {
            pod: Some(PodLoad { waiting: 0, running: 0, kv_cache_usage: Some(usage) }),
            ..Signals::default()
        };
        assert_eq!(predict_request(&ttft, &tpot, &with(0.5)).0.map(|p| p.mean), Some(100.0));
        let mean = predict_request(&ttft, &tpot, &with(0.95)).0.map(|p| p.mean).unwrap_or_default();
        assert!((mean - 150.0).abs() < 0.01, "{mean}");
        assert_eq!(predict_request(&ttft, &tpot, &with(1.0)).0, Some(Predicted { mean: 200.0, high: 220.0 }));
    }

    #[test]
    fn a_longer_prompt_is_predicted_slower_and_a_cold_backend_not_at_all() {
        let ttft = buckets(&[(0, 100.0, 10.0, 10)]);
        let tpot = buckets(&[(0, 10.0, 0.0, 10)]);
        // 0.2 ms per prompt token, measured around prompts of 500 tokens.
        let at = |prompt_tokens| Signals { prompt_tokens, prefill: Some((0.2, 500.0)), ..Signals::default() };
        assert_eq!(predict_request(&ttft, &tpot, &at(500)).0, Some(Predicted { mean: 100.0, high: 110.0 }));
        assert_eq!(predict_request(&ttft, &tpot, &at(2_500)).0, Some(Predicted { mean: 500.0, high: 510.0 }));
        assert_eq!(predict_request(&ttft, &tpot, &at(0)).0, Some(Predicted { mean: 0.0, high: 10.0 }));
        assert_eq!(predict_request(&buckets(&[]), &tpot, &at(500)), (None, None));
    }
}
