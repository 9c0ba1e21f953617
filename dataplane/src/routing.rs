//! Backend choice: the order in which a request tries a model's backends. Priorities fail over
//! in order; within a priority, `weighted` draws by weight and `leastRequest` takes the less
//! busy of two weighted draws. Pure over the model and a random source, so it is unit-tested
//! without sockets; the SLO-aware router plugs in here.

use std::sync::atomic::Ordering;

use rand::Rng;
use sluice_crds::api::RoutingPolicy;

use crate::snapshot::Model;

/// Indices into `model.backends`, in the order to try them.
pub fn plan(model: &Model, policy: RoutingPolicy, rng: &mut impl Rng) -> Vec<usize> {
    let backends = &model.backends;
    let mut order = Vec::with_capacity(backends.len());
    let mut start = 0;
    while start < backends.len() {
        let priority = backends[start].priority;
        let end = backends[start..].iter().position(|b| b.priority != priority).map_or(backends.len(), |n| start + n);
        let group_start = order.len();
        weighted_order(start..end, |i| backends[i].weight, rng, &mut order);
        if policy == RoutingPolicy::LeastRequest && end - start >= 2 {
            let (a, b) = (order[group_start], order[group_start + 1]);
            let load = |i: usize| backends[i].in_flight.load(Ordering::Relaxed);
            if load(b) < load(a) {
                order.swap(group_start, group_start + 1);
            }
        }
        start = end;
    }
    order
}

/// Appends `range` in a random order where each position is drawn in proportion to weight
/// (weighted sampling without replacement); weight-0 entries go last.
fn weighted_order(
    range: std::ops::Range<usize>,
    weight: impl Fn(usize) -> u32,
    rng: &mut impl Rng,
    out: &mut Vec<usize>,
) {
    if range.len() == 1 {
        out.push(range.start);
        return;
    }
    // Efraimidis-Spirakis: key = u^(1/w); sorting by key descending samples by weight.
    let mut keyed: Vec<(f64, usize)> = range
        .map(|i| {
            let w = weight(i);
            let key = if w == 0 { -rng.random::<f64>() } else { rng.random::<f64>().powf(1.0 / f64::from(w)) };
            (key, i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.extend(keyed.into_iter().map(|(_, i)| i));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use sluice_crds::config::ProviderConfig;

    use super::*;
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
                    in_flight: Arc::new(AtomicU32::new(0)),
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
            let order = plan(&m, RoutingPolicy::Weighted, &mut rng);
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
            let order = plan(&m, RoutingPolicy::Weighted, &mut rng);
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
        m.backends[0].in_flight.store(10, Ordering::Relaxed);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            assert_eq!(plan(&m, RoutingPolicy::LeastRequest, &mut rng)[0], 1);
        }
    }
}
