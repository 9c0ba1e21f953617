//! Latency statistics: exact percentiles over every recorded sample (no histogram buckets, so
//! nothing is rounded; a run records at most a few hundred thousand samples).

use serde::{Deserialize, Serialize};

/// Percentiles of one set of samples, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at least `q` of all
/// samples at or below it. `q` in [0, 1]; `None` for no samples.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Sorts `samples` (milliseconds) in place and summarises them; `None` for no samples.
pub fn summarize(samples: &mut [f64]) -> Option<Summary> {
    samples.sort_by(f64::total_cmp);
    let at = |q| percentile(samples, q);
    Some(Summary {
        count: samples.len(),
        min: *samples.first()?,
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
        p50: at(0.50)?,
        p90: at(0.90)?,
        p99: at(0.99)?,
        p999: at(0.999)?,
        max: *samples.last()?,
    })
}

/// Microsecond samples to a summary in milliseconds.
pub fn summarize_micros(samples: &[u64]) -> Option<Summary> {
    let mut ms: Vec<f64> = samples.iter().map(|&us| us as f64 / 1000.0).collect();
    summarize(&mut ms)
}

/// The median of unsorted values; `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(50.0));
        assert_eq!(percentile(&sorted, 0.9), Some(90.0));
        assert_eq!(percentile(&sorted, 0.99), Some(99.0));
        assert_eq!(percentile(&sorted, 0.999), Some(100.0));
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&sorted, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn summary_sorts_and_converts_micros() {
        let summary = summarize_micros(&[3000, 1000, 2000, 4000]).expect("samples");
        assert_eq!(summary.count, 4);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.max, 4.0);
        assert_eq!(summary.p50, 2.0);
        assert_eq!(summary.p99, 4.0);
        assert!((summary.mean - 2.5).abs() < 1e-9);
        assert_eq!(summarize(&mut []), None);
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }
}
