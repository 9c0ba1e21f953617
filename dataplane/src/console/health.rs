//! `GET /<project>/v1/health` (any valid key of the project): the live state of the backends
//! behind the endpoints and models the key may use, from the state routing already keeps
//! ([`crate::backends`]): health (`healthy`, `ejected`, `probing`, `unreachable`), requests in
//! flight, the error rate of the current ten-second window, observed TTFT and TPOT, what the
//! router predicts for a short request sent now, and SLO hints met and missed since the gateway
//! started. Backends are named as `x-sluice-backend` names them; no base URL or credential is
//! shown, and another project's backends never are, even when they share a Provider.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::auth::KeyCaller;
use crate::backends::health::WINDOW_MS;
use crate::metrics::SloKind;
use crate::routing::{RouteRequest, predict_next};
use crate::snapshot::Backend;

/// The health report as `caller` sees it, backends in name order.
pub fn health_json(caller: &KeyCaller<'_>, now: Timestamp) -> Value {
    let project = caller.project;
    // One entry per backend, with every (endpoint, model) it serves for this key.
    let mut backends: Vec<(&Backend, Vec<Value>)> = Vec::new();
    for endpoint in project.endpoints.values().filter(|e| caller.opens(&e.slug)) {
        for model in endpoint.models.iter().filter(|m| caller.lists(m)) {
            for backend in &model.backends {
                let serves = json!({"endpoint": &*endpoint.slug, "model": &*model.name});
                match backends.iter_mut().find(|(b, _)| b.label == backend.label) {
                    Some((_, served)) => served.push(serves),
                    None => backends.push((backend, vec![serves])),
                }
            }
        }
    }
    backends.sort_by(|a, b| a.0.label.cmp(&b.0.label));
    let backends: Vec<Value> = backends.into_iter().map(|(backend, serves)| backend_json(backend, serves)).collect();
    json!({
        "object": "health",
        "project": &*project.slug,
        "at": now.to_string(),
        "window_seconds": WINDOW_MS / 1000,
        "backends": backends,
    })
}

fn backend_json(backend: &Backend, mut serves: Vec<Value>) -> Value {
    let state = &backend.state;
    let view = state.view();
    let health = match view.health {
        "probe_due" => "probing",
        other => other,
    };
    let (ttft, tpot) = predict_next(state, &RouteRequest::default());
    let slo = |kind| {
        let met = state.metrics().slo(kind, true).get();
        let missed = state.metrics().slo(kind, false).get();
        let total = met + missed;
        json!({
            "met": met,
            "missed": missed,
            "attainment": (total > 0).then(|| met as f64 / total as f64),
        })
    };
    serves.sort_by_key(|s| s.to_string());
    json!({
        "backend": &*backend.label,
        "serves": serves,
        "state": health,
        "ejected_until": view.ejected_until.map(|at| at.to_string()),
        "ejections": view.ejections,
        "consecutive_failures": view.consecutive_failures,
        "in_flight": view.in_flight,
        "window": {
            "requests": view.window_requests,
            "error_rate": view.window_error_rate,
        },
        "observed": {"ttft_ms": view.ttft_ms, "tpot_ms": view.tpot_ms},
        "predicted": {"ttft_ms": ttft.map(|p| p.mean), "tpot_ms": tpot.map(|p| p.mean)},
        "slo": {"ttft": slo(SloKind::Ttft), "tpot": slo(SloKind::Tpot)},
    })
}
