//! Backend choice: the order in which a request tries a model's backends. Ejected backends are
//! left out, unless none of the model's would be left (then all are tried, as if none were
//! ejected: at least one backend always stays eligible); a backend whose ejection is over goes
//! first as its half-open probe. Priorities fail over in order; within a priority, `weighted`
//! draws by weight and `leastRequest` takes the less busy of two weighted draws. Pure over the
//! model, its backends' state and a random source, so it is unit-tested without sockets; the
//! SLO-aware router plugs in here.

use rand::Rng;
use sluice_crds::api::RoutingPolicy;

use crate::backends::Eligibility;
use crate::snapshot::Model;

/// Indices into `model.backends` in the order to try them, each with whether it is the
/// backend's half-open probe.
pub fn plan(model: &Model, policy: RoutingPolicy, rng: &mut impl Rng) -> Vec<(usize, bool)> {
    let backends = &model.backends;
    // Each backend's eligibility is read once: reading may claim its probe.
    let mut order: Vec<(usize, Eligibility)> =
        backends.iter().enumerate().map(|(i, b)| (i, b.state.eligibility())).collect();
    if order.iter().any(|(_, e)| *e != Eligibility::Ejected) {
        order.retain(|(_, e)| *e != Eligibility::Ejected);
    }
    let mut start = 0;
    while start < order.len() {
        let priority = backends[order[start].0].priority;
        let end = order[start..]
            .iter()
            .position(|(i, _)| backends[*i].priority != priority)
            .map_or(order.len(), |n| start + n);
        let group = &mut order[start..end];
        weighted_shuffle(group, |i| backends[i].weight, rng);
        if policy == RoutingPolicy::LeastRequest && group.len() >= 2 {
            let load = |i: usize| backends[i].state.in_flight();
            if load(group[1].0) < load(group[0].0) {
                group.swap(0, 1);
            }
        }
        // A probe goes first in its group, so that it is tried.
        if let Some(probe) = group.iter().position(|(_, e)| *e == Eligibility::Probe) {
            group[..=probe].rotate_right(1);
        }
        start = end;
    }
    order.into_iter().map(|(i, e)| (i, e == Eligibility::Probe)).collect()
}

/// Orders `group` randomly, each position drawn in proportion to weight (weighted sampling
/// without replacement); weight-0 entries go last.
fn weighted_shuffle(group: &mut [(usize, Eligibility)], weight: impl Fn(usize) -> u32, rng: &mut impl Rng) {
    if group.len() <= 1 {
        return;
    }
    // Efraimidis-Spirakis: key = u^(1/w); sorting by key descending samples by weight.
    let mut keyed: Vec<(f64, (usize, Eligibility))> = group
        .iter()
        .map(|&entry| {
            let w = weight(entry.0);
            let key = if w == 0 { -rng.random::<f64>() } else { rng.random::<f64>().powf(1.0 / f64::from(w)) };
            (key, entry)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (slot, (_, entry)) in group.iter_mut().zip(keyed) {
        *slot = entry;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use sluice_crds::config::ProviderConfig;

    use super::*;
    use crate::backends::BackendState;
    use crate::backends::Outcome;
    use crate::backends::health::Verdict;
    use crate::snapshot::Backend;
    use crate::upstream::client::UpstreamPool;

    fn model(backends: &[(u32, u32)]) -> Model {
        let pool = UpstreamPool::default();
        let provider: ProviderConfig = serde_json::from_value(serde_json::json!({
            "type": "simulated", "connectTimeoutMs": 100, "models": {}
        }))
        .expect("provider");
        let upstream = Arc::new(pool.upstream("ns/sim", &provider).expect("upstream"));
        Model {
            name: "m".into(),
            owned_by: "o".into(),
            context_window: None,
            max_output_tokens: None,
            capabilities: vec![],
            aliases: vec![],
            metrics: crate::metrics::Metrics::new().model("p", "e", "m"),
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, &(weight, priority))| Backend {
                    upstream: upstream.clone(),
                    model: format!("b{i}"),
                    rewrite_from: None,
                    weight,
                    priority,
                    pricing: None,
                    state: BackendState::detached("ns/sim", &format!("b{i}")),
                    label: format!("b{i}").into(),
                    label_header: hyper::header::HeaderValue::from_static("b"),
                })
                .collect(),
        }
    }

    #[test]
    fn priorities_fail_over_in_order() {
        let m = model(&[(1, 0), (1, 0), (5, 1), (1, 2)]);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let order = indices(plan(&m, RoutingPolicy::Weighted, &mut rng));
            assert_eq!(order.len(), 4);
            assert!(order[..2].contains(&0) && order[..2].contains(&1));
            assert_eq!(&order[2..], &[2, 3]);
        }
    }

    #[test]
    fn weights_share_first_choices_in_proportion() {
        let m = model(&[(3, 0), (1, 0), (0, 0)]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut first = [0u32; 3];
        for _ in 0..40_000 {
            let order = indices(plan(&m, RoutingPolicy::Weighted, &mut rng));
            first[order[0]] += 1;
            assert_eq!(order[2], 2, "weight 0 only as a last resort");
        }
        let share = f64::from(first[0]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "3:1 weights gave {share}");
        assert_eq!(first[2], 0);
    }

    #[test]
    fn least_request_prefers_the_idle_backend() {
        let m = model(&[(1, 0), (1, 0)]);
        let _busy: Vec<_> = (0..10).map(|_| m.backends[0].state.start(1, false)).collect();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            assert_eq!(plan(&m, RoutingPolicy::LeastRequest, &mut rng)[0], (1, false));
        }
    }

    fn indices(order: Vec<(usize, bool)>) -> Vec<usize> {
        order.into_iter().map(|(i, _)| i).collect()
    }

    fn eject(backend: &Backend) {
        backend.state.start(1, false).report(Outcome::Missed(Verdict::Timeout));
    }

    #[test]
    fn ejected_backends_are_left_out_and_priorities_move_up() {
        let m = model(&[(1, 0), (1, 0), (1, 1)]);
        eject(&m.backends[0]);
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let order = indices(plan(&m, RoutingPolicy::Weighted, &mut rng));
            assert_eq!(order, [1, 2]);
        }
        eject(&m.backends[1]);
        assert_eq!(indices(plan(&m, RoutingPolicy::Weighted, &mut rng)), [2], "the next priority steps in");
    }

    #[test]
    fn the_last_eligible_backend_is_never_ejected() {
        let m = model(&[(1, 0), (1, 0)]);
        eject(&m.backends[0]);
        eject(&m.backends[1]);
        let mut rng = StdRng::seed_from_u64(9);
        let mut order = indices(plan(&m, RoutingPolicy::Weighted, &mut rng));
        order.sort_unstable();
        assert_eq!(order, [0, 1], "with every backend ejected, all are tried");
        let single = model(&[(1, 0)]);
        eject(&single.backends[0]);
        assert_eq!(plan(&single, RoutingPolicy::Weighted, &mut rng), [(0, false)]);
    }

    #[test]
    fn a_backend_whose_ejection_is_over_is_probed_first_by_one_request() {
        let m = model(&[(1, 0), (1, 0), (1, 0)]);
        eject(&m.backends[2]);
        m.backends[2].state.end_ejection();
        let mut rng = StdRng::seed_from_u64(11);
        let probing = plan(&m, RoutingPolicy::Weighted, &mut rng);
        assert_eq!(probing[0], (2, true));
        assert_eq!(probing.len(), 3);
        for _ in 0..20 {
            let order = indices(plan(&m, RoutingPolicy::Weighted, &mut rng));
            assert!(!order.contains(&2), "one probe at a time: {order:?}");
        }
    }
}
