//! The admin port: liveness, readiness, Prometheus metrics, what configuration is live and the
//! backends' live state.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::Gateway;
use crate::respond::body::ResponseBody;

/// `/readyz` while the gateway stops: not ready, so that load balancers move on while it still
/// serves what reaches it.
pub fn draining() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full("draining: shutting down\n".to_owned()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Serves `/healthz`, `/readyz`, `/metrics` and `/config`.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            if gateway.snapshot().generation > 0 {
                (StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no configuration loaded\n".to_owned())
            }
        }
        // OpenMetrics (with the latency histograms' exemplars) to a scraper that asks for it,
        // as Prometheus does; the Prometheus text format to any other.
        "/metrics" if accepts_openmetrics(&request) => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", gateway.metrics.render())
        }
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", gateway.metrics.render_text()),
        "/config" => {
            let snapshot = gateway.snapshot();
            let status = gateway.status().clone();
            let body = serde_json::json!({
                "generation": snapshot.generation,
                "loadedAt": (snapshot.generation > 0).then_some(snapshot.loaded_at),
                "source": status.source,
                "hashes": status.hashes,
                "projects": snapshot.summaries,
                "keys": snapshot.key_count(),
                "lastAttemptAt": status.last_attempt_at,
                "lastError": status.last_error,
                "lastErrorAt": status.last_error_at,
                "backends": gateway.backends(),
            });
            (StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /healthz /readyz /metrics /config\n".to_owned()),
    };
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Whether the request's `Accept` names the OpenMetrics text format.
fn accepts_openmetrics(request: &Request<Incoming>) -> bool {
    request.headers().get_all(hyper::header::ACCEPT).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value.split(',').any(|item| {
                let mut params = item.split(';').map(str::trim);
                let named = params.next().is_some_and(|kind| kind.eq_ignore_ascii_case("application/openmetrics-text"));
                // `q=0` declines it.
                named && !params.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0)))
            })
        })
    })
}
