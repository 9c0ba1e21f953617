//! Operational routes: Prometheus `/metrics`, `/health`, and the `/_sim/*` admin API that reads
//! and switches faults at run time, resets state, and shows the profile and live load.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::engine::Simulator;
use crate::faults::FaultConfig;

/// `GET /metrics`.
pub(crate) async fn metrics(State(sim): State<Simulator>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], sim.render_metrics())
        .into_response()
}

/// `GET /health`: 200 with an empty body, as vLLM answers.
pub(crate) async fn health() -> StatusCode {
    StatusCode::OK
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// `GET /_sim/faults`: the faults in force.
pub(crate) async fn get_faults(State(sim): State<Simulator>) -> Response {
    json(StatusCode::OK, &json!(sim.faults()))
}

/// `POST /_sim/faults`: replaces the faults in force with the body (a `faults` object of the
/// profile; omitted fields take their defaults). Answers with the faults now in force.
pub(crate) async fn set_faults(State(sim): State<Simulator>, body: Bytes) -> Response {
    let faults: FaultConfig = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(e) => return json(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    };
    match sim.set_faults(faults) {
        Ok(()) => {
            tracing::info!(faults = ?sim.faults(), "faults switched");
            json(StatusCode::OK, &json!(sim.faults()))
        }
        Err(e) => json(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    }
}

/// `POST /_sim/reset`: the profile's faults again, an empty prefix cache, request counter 0.
pub(crate) async fn reset(State(sim): State<Simulator>) -> Response {
    sim.reset();
    json(StatusCode::OK, &json!({"reset": true}))
}

/// `GET /_sim/profile`: the profile in force (faults as configured at start).
pub(crate) async fn profile(State(sim): State<Simulator>) -> Response {
    json(StatusCode::OK, &json!(sim.profile()))
}

/// `GET /_sim/state`: live load.
pub(crate) async fn state(State(sim): State<Simulator>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "running": sim.running(),
            "waiting": sim.waiting(),
            "kvCacheUsage": sim.kv_cache_usage(),
            "prefixCacheBlocks": sim.cached_blocks(),
        }),
    )
}
