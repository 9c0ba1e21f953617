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
//! mean; `mean + deviation` is what must fit under a hint (the headroom). Prompt size is not a
//! feature: the first step's model keeps no per-token prefill term, and the prompts a backend
//! sees are mixed into its per-bucket means (the simulator's prefill is 0.2 ms per uncached
//! token, small against queueing); a per-prompt-token term is the next refinement. A backend with
//! fewer than [`MIN_SAMPLES`] first tokens has no prediction: it is cold.

use crate::backends::latency::{Estimate, LOAD_BUCKETS, MIN_SAMPLES, load_bucket};

/// A predicted time, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Predicted {
    /// The expected time.
    pub mean: f32,
    /// The time that must fit under a hint: mean plus one mean deviation.
    pub high: f32,
}

/// Share of extra load that shows as extra latency when extrapolating.
const EXTRAPOLATION_SLOPE: f32 = 0.5;

/// The largest load in bucket `bucket`.
fn bucket_top(bucket: usize) -> f32 {
    ((1u32 << (bucket + 1)) - 1) as f32
}

/// Predicts the time at `load` requests in flight (this one included) from per-bucket
/// estimates; `None` while fewer than [`MIN_SAMPLES`] samples were seen in all.
pub fn predict(buckets: &[Option<Estimate>; LOAD_BUCKETS], load: u32) -> Option<Predicted> {
    let samples: u32 = buckets.iter().flatten().map(|e| e.samples).sum();
    if samples < MIN_SAMPLES {
        return None;
    }
    let target = load_bucket(load);
    let at = |e: &Estimate, factor: f32| Predicted { mean: e.mean * factor, high: (e.mean + e.deviation) * factor };
    if let Some(e) = &buckets[target] {
        return Some(at(e, 1.0));
    }
    if let Some((below, e)) = buckets[..target].iter().enumerate().rev().find_map(|(i, e)| e.as_ref().map(|e| (i, e))) {
        let factor = 1.0 + EXTRAPOLATION_SLOPE * (load as f32 / bucket_top(below) - 1.0).max(0.0);
        return Some(at(e, factor));
    }
    buckets[target..].iter().flatten().next().map(|e| at(e, 1.0))
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
    fn a_measured_bucket_is_the_prediction() {
        let b = buckets(&[(0, 40.0, 5.0, 10), (2, 90.0, 10.0, 10)]);
        assert_eq!(predict(&b, 1), Some(Predicted { mean: 40.0, high: 45.0 }));
        assert_eq!(predict(&b, 5), Some(Predicted { mean: 90.0, high: 100.0 }));
    }

    #[test]
    fn unmeasured_loads_extrapolate_up_and_never_down() {
        let b = buckets(&[(1, 100.0, 0.0, 10)]);
        // Bucket 1 tops at 3 in flight; 12 is four times that: 1 + 0.5 x 3 = 2.5x.
        assert_eq!(predict(&b, 12).map(|p| p.mean), Some(250.0));
        assert_eq!(predict(&b, 1).map(|p| p.mean), Some(100.0), "lower load: the higher bucket's estimate");
    }

    #[test]
    fn cold_backends_have_no_prediction() {
        assert_eq!(predict(&buckets(&[(0, 40.0, 5.0, 4)]), 1), None);
        assert_eq!(predict(&buckets(&[]), 1), None);
        assert!(predict(&buckets(&[(0, 40.0, 5.0, 3), (3, 80.0, 5.0, 2)]), 1).is_some(), "samples add up");
    }
}
