//! Operational routes: Prometheus `/metrics`, `/health`, and the `/_sim/*` admin API that reads
//! and switches faults at run time, resets state, shows the profile and live load, and lists the
//! request bodies received (with `recordRequests`), recorded by [`record_requests`].

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
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

/// `GET /_sim/requests`: the inference requests kept (`recordRequests`), oldest first, each
/// `{"path", "body"}` with the body as JSON (or as a string when it is not JSON).
pub(crate) async fn requests(State(sim): State<Simulator>) -> Response {
    let requests: Vec<serde_json::Value> = sim
        .recorded_requests()
        .into_iter()
        .map(|request| {
            let body = serde_json::from_slice(&request.body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&request.body).into_owned()));
            json!({"path": request.path, "body": body})
        })
        .collect();
    json(StatusCode::OK, &json!({"recording": sim.records_requests(), "requests": requests}))
}

/// `DELETE /_sim/requests`: forgets the requests kept.
pub(crate) async fn clear_requests(State(sim): State<Simulator>) -> Response {
    sim.clear_recorded_requests();
    json(StatusCode::OK, &json!({"cleared": true}))
}

/// Middleware: keeps the body of every inference request (a `POST` outside `/_sim/`) when the
/// profile records requests; otherwise the request passes untouched, its body unread.
pub(crate) async fn record_requests(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let recordable =
        sim.records_requests() && request.method() == Method::POST && !request.uri().path().starts_with("/_sim/");
    if !recordable {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, crate::server::MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => return json(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": e.to_string()})),
    };
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    sim.record_request(&path, &body);
    next.run(Request::from_parts(parts, Body::from(body))).await
}
