//! What a replay measured: SLO attainment per class (a failed request is a miss), TTFT and
//! TPOT percentiles, client-visible errors, how far the gateway's predicted TTFT was from the
//! measured one, and goodput across loads (the highest rate at which every class keeps at least
//! [`GOODPUT_ATTAINMENT`] of its requests within their hints, after DistServe).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::replay::Outcome;
use super::trace::SloClass;
use crate::stats::{Summary, summarize};

/// Attainment every class must keep for a rate to count towards goodput.
pub const GOODPUT_ATTAINMENT: f64 = 0.90;

/// One SLO class in one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSummary {
    /// Recorded requests.
    pub requests: u64,
    /// Answered whole, within the class's hints.
    pub good: u64,
    /// `good / requests`.
    pub attainment: f64,
    /// Answered whole but past a hint.
    pub slow: u64,
    /// Client-visible failures.
    pub errors: u64,
    /// TTFT of answered requests, ms.
    pub ttft: Option<Summary>,
    /// TPOT of answered requests, ms.
    pub tpot: Option<Summary>,
}

/// Predicted against measured TTFT, over requests that carried a prediction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionError {
    /// Requests with `x-sluice-predicted-ttft-ms`.
    pub count: u64,
    /// Median of predicted - measured, ms (negative: optimistic).
    pub median_signed_ms: f64,
    /// Median of |predicted - measured|, ms.
    pub median_abs_ms: f64,
    /// 90th percentile of |predicted - measured|, ms.
    pub p90_abs_ms: f64,
    /// Median of |predicted - measured| / measured.
    pub median_relative: f64,
}

/// One strategy at one load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Routing policy.
    pub strategy: String,
    /// Offered load as a share of the fleet's capacity.
    pub load: f64,
    /// Offered requests per second.
    pub rate: f64,
    /// Recorded requests.
    pub requests: u64,
    /// Per class.
    pub classes: BTreeMap<SloClass, ClassSummary>,
    /// Client-visible failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// TTFT of every answered request, ms.
    pub ttft: Option<Summary>,
    /// TPOT of every answered request, ms.
    pub tpot: Option<Summary>,
    /// Predicted TTFT error (strategies that predict).
    pub prediction: Option<PredictionError>,
    /// Share of answered requests by backend (`x-sluice-backend`).
    pub backends: BTreeMap<String, u64>,
    /// 99th percentile of the generator's lag behind the schedule, ms.
    pub lag_p99_ms: f64,
    /// 1-minute load average when the run started.
    pub load_avg: f64,
}

impl RunSummary {
    /// The lowest attainment over the classes (what goodput looks at).
    pub fn min_attainment(&self) -> f64 {
        self.classes.values().map(|c| c.attainment).fold(1.0, f64::min)
    }

    /// Attainment of one class.
    pub fn attainment(&self, class: SloClass) -> Option<f64> {
        self.classes.get(&class).map(|c| c.attainment)
    }
}

/// Whether an answered request met its class's hints.
pub fn within_hints(class: SloClass, outcome: &Outcome) -> bool {
    let (ttft_hint, tpot_hint) = class.hints();
    let ttft_ok = ttft_hint.is_none_or(|h| outcome.ttft_ms.is_some_and(|t| t <= f64::from(h)));
    let tpot_ok = tpot_hint.is_none_or(|h| outcome.tpot_ms.is_none_or(|t| t <= f64::from(h)));
    ttft_ok && tpot_ok
}

/// Summarises the recorded outcomes of one run.
pub fn summarize_run(strategy: &str, load: f64, rate: f64, outcomes: &[Outcome]) -> RunSummary {
    let mut run = RunSummary { strategy: strategy.to_owned(), load, rate, ..RunSummary::default() };
    let (mut ttft, mut tpot, mut lag, mut signed, mut abs, mut relative) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_class: BTreeMap<SloClass, (ClassSummary, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for outcome in outcomes.iter().filter(|o| o.measured) {
        let Some(class) = outcome.class else { continue };
        run.requests += 1;
        lag.push(outcome.lag_ms);
        let (summary, class_ttft, class_tpot) = per_class.entry(class).or_default();
        summary.requests += 1;
        if let Some(kind) = &outcome.error {
            summary.errors += 1;
            *run.errors.entry(kind.clone()).or_default() += 1;
            continue;
        }
        if within_hints(class, outcome) {
            summary.good += 1;
        } else {
            summary.slow += 1;
        }
        if let Some(t) = outcome.ttft_ms {
            ttft.push(t);
            class_ttft.push(t);
            if let Some(p) = outcome.predicted_ttft_ms {
                signed.push(p - t);
                abs.push((p - t).abs());
                relative.push((p - t).abs() / t.max(1.0));
            }
        }
        if let Some(t) = outcome.tpot_ms {
            tpot.push(t);
            class_tpot.push(t);
        }
        if let Some(backend) = &outcome.backend {
            *run.backends.entry(backend.clone()).or_default() += 1;
        }
    }
    for (class, (mut summary, mut class_ttft, mut class_tpot)) in per_class {
        summary.attainment = if summary.requests > 0 { summary.good as f64 / summary.requests as f64 } else { 1.0 };
        summary.ttft = summarize(&mut class_ttft);
        summary.tpot = summarize(&mut class_tpot);
        run.classes.insert(class, summary);
    }
    run.ttft = summarize(&mut ttft);
    run.tpot = summarize(&mut tpot);
    run.lag_p99_ms = summarize(&mut lag).map_or(0.0, |s| s.p99);
    if let (Some(s), Some(a), Some(r)) = (summarize(&mut signed), summarize(&mut abs), summarize(&mut relative)) {
        run.prediction = Some(PredictionError {
            count: a.count as u64,
            median_signed_ms: s.p50,
            median_abs_ms: a.p50,
            p90_abs_ms: a.p90,
            median_relative: r.p50,
        });
    }
    run
}

/// Goodput of one strategy, from its runs at several rates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "rate")]
pub enum Goodput {
    /// Attainment crosses the line between two measured rates (linear interpolation).
    Rate(f64),
    /// Every measured rate kept it: at least the highest.
    AtLeast(f64),
    /// Even the lowest measured rate missed it.
    Below(f64),
}

impl Goodput {
    /// A rate to compare (a lower bound for `AtLeast`, 0 for `Below`).
    pub fn value(self) -> f64 {
        match self {
            Self::Rate(r) | Self::AtLeast(r) => r,
            Self::Below(_) => 0.0,
        }
    }

    /// For tables.
    pub fn describe(self) -> String {
        match self {
            Self::Rate(r) => format!("{r:.1}"),
            Self::AtLeast(r) => format!(">= {r:.1}"),
            Self::Below(r) => format!("< {r:.1}"),
        }
    }
}

/// The highest rate at which attainment (`(rate, attainment)` points) stays at or above
/// `line`: walking up from the lowest rate, the first point below the line ends the walk, and
/// the crossing is interpolated from the point before it. `None` without points.
pub fn goodput(points: &[(f64, f64)], line: f64) -> Option<Goodput> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first = *sorted.first()?;
    if first.1 < line {
        return Some(Goodput::Below(first.0));
    }
    for pair in sorted.windows(2) {
        let ((r0, a0), (r1, a1)) = (pair[0], pair[1]);
        if a1 < line {
            let t = if a0 > a1 { (a0 - line) / (a0 - a1) } else { 0.0 };
            return Some(Goodput::Rate(r0 + t * (r1 - r0)));
        }
    }
    Some(Goodput::AtLeast(sorted.last()?.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::trace::WorkloadKind;

    fn answered(class: SloClass, ttft: f64, tpot: f64) -> Outcome {
        Outcome {
            measured: true,
            class: Some(class),
            workload: Some(WorkloadKind::Conversation),
            status: Some(200),
            ttft_ms: Some(ttft),
            tpot_ms: Some(tpot),
            tokens: 10,
            backend: Some("fast-small".into()),
            ..Outcome::default()
        }
    }

    #[test]
    fn attainment_counts_slow_and_failed_requests_as_misses() {
        let mut failed = answered(SloClass::Interactive, 0.0, 0.0);
        failed.error = Some("status_503".into());
        failed.ttft_ms = None;
        let mut warmup = answered(SloClass::Interactive, 9999.0, 0.0);
        warmup.measured = false;
        let mut predicted = answered(SloClass::Interactive, 100.0, 10.0);
        predicted.predicted_ttft_ms = Some(80.0);
        let outcomes = vec![
            predicted,
            answered(SloClass::Interactive, 500.0, 10.0), // TTFT past 400 ms
            answered(SloClass::Interactive, 100.0, 45.0), // TPOT past 30 ms
            failed,
            warmup,
            answered(SloClass::Batch, 5000.0, 200.0), // no hints: answered is enough
        ];
        let run = summarize_run("sloAware", 0.8, 20.0, &outcomes);
        assert_eq!(run.requests, 5);
        let interactive = &run.classes[&SloClass::Interactive];
        assert_eq!((interactive.requests, interactive.good, interactive.slow, interactive.errors), (4, 1, 2, 1));
        assert!((interactive.attainment - 0.25).abs() < 1e-9);
        assert_eq!(run.attainment(SloClass::Batch), Some(1.0));
        assert!((run.min_attainment() - 0.25).abs() < 1e-9);
        assert_eq!(run.errors["status_503"], 1);
        let prediction = run.prediction.expect("one prediction");
        assert_eq!(prediction.count, 1);
        assert!((prediction.median_signed_ms + 20.0).abs() < 1e-9);
        assert!((prediction.median_relative - 0.2).abs() < 1e-9);
        assert_eq!(run.backends["fast-small"], 4);
    }

    #[test]
    fn goodput_interpolates_the_first_crossing() {
        let g = goodput(&[(10.0, 0.99), (20.0, 0.95), (30.0, 0.85), (40.0, 0.95)], 0.9).expect("points");
        assert!(matches!(g, Goodput::Rate(r) if (r - 25.0).abs() < 1e-9), "{g:?}");
        assert_eq!(goodput(&[(30.0, 0.91), (10.0, 0.99)], 0.9), Some(Goodput::AtLeast(30.0)));
        assert_eq!(goodput(&[(10.0, 0.5), (20.0, 0.95)], 0.9), Some(Goodput::Below(10.0)));
        assert_eq!(goodput(&[], 0.9), None);
        assert_eq!(Goodput::Below(10.0).value(), 0.0);
        assert_eq!(Goodput::AtLeast(30.0).describe(), ">= 30.0");
    }
}
