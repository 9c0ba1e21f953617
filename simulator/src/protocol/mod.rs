//! The wire formats, one module per provider API, and what they share: the request prelude
//! (authentication, fault draw, hang), model checks, each format's own error bodies, and
//! response helpers.

pub(crate) mod anthropic;
pub(crate) mod completions;
pub(crate) mod embeddings;
pub(crate) mod gemini;
pub(crate) mod images;
pub(crate) mod openai;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::engine::{Admission, Arrival, Simulator};
use crate::faults::{FAULT_HEADER, Fault};
use crate::generation::OutputMode;
use crate::prompt::Prompt;
use crate::streaming::{Renderer, StreamPlan, TimedStream, plain_body};

/// Tokens counted for an image in a prompt (whatever its size).
pub(crate) const IMAGE_TOKENS: usize = 85;

/// Which provider's conventions a route follows (error shapes, key headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

/// An error response in `dialect`'s own shape.
pub(crate) fn error_response(dialect: Dialect, status: StatusCode, message: &str, code: Option<&str>) -> Response {
    let body = match dialect {
        Dialect::OpenAi => json!({"error": {
            "message": message,
            "type": openai_error_type(status),
            "param": null,
            "code": code,
        }}),
        Dialect::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_error_type(status), "message": message},
        }),
        Dialect::Gemini => json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "status": gemini_status(status),
        }}),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn gemini_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// An error answer of an API route; the one place that turns it into a response is its
/// [`IntoResponse`] impl (status, body in the route's own shape, `Retry-After`).
#[derive(Debug)]
pub(crate) struct ApiError {
    dialect: Dialect,
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
    retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(
        dialect: Dialect,
        status: StatusCode,
        message: impl Into<String>,
        code: Option<&'static str>,
    ) -> Self {
        Self { dialect, status, message: message.into(), code, retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.dialect, self.status, &self.message, self.code);
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A 400 in `dialect`'s shape.
pub(crate) fn bad_request(dialect: Dialect, message: impl Into<String>) -> ApiError {
    ApiError::new(dialect, StatusCode::BAD_REQUEST, message, None)
}

/// The message and code of an injected error status.
fn fault_message(status: u16) -> (String, Option<&'static str>) {
    match status {
        429 => ("Rate limit reached (simulated by sluice-sim).".into(), Some("rate_limit_exceeded")),
        503 => ("The server is overloaded, please try again later (simulated by sluice-sim).".into(), None),
        500 => ("The server had an error while processing your request (simulated by sluice-sim).".into(), None),
        other => (format!("Simulated error {other} (injected by sluice-sim)."), None),
    }
}

/// A request that passed the prelude, with the fault still to apply to its body.
pub(crate) struct Accepted {
    pub arrival: Arrival,
    pub fault: Option<Fault>,
}

/// What every inference route does first: checks the key, draws (or reads from `x-sim-fault`)
/// the request's fault, answers injected error statuses, and sits through hangs.
pub(crate) async fn prelude(
    sim: &Simulator,
    dialect: Dialect,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<Accepted, ApiError> {
    if !authorized(sim, headers, query_key) {
        return Err(ApiError::new(
            dialect,
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            Some("invalid_api_key"),
        ));
    }
    let mut arrival = sim.arrive();
    let fault = match headers.get(FAULT_HEADER) {
        Some(value) => {
            let value = value.to_str().map_err(|_| bad_request(dialect, "x-sim-fault is not ASCII"))?;
            sim.header_fault(value).map_err(|message| bad_request(dialect, message))?
        }
        None => sim.draw_fault(&mut arrival),
    };
    let Some(fault) = fault else {
        return Ok(Accepted { arrival, fault: None });
    };
    sim.metrics().fault(fault.kind());
    tracing::debug!(kind = fault.kind(), "injecting fault");
    match fault {
        Fault::Status { status, retry_after } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (message, error_code) = fault_message(status);
            Err(ApiError { retry_after, ..ApiError::new(dialect, code, message, error_code) })
        }
        Fault::Hang(duration) => {
            tokio::time::sleep(duration).await;
            Ok(Accepted { arrival, fault: None })
        }
        other => Ok(Accepted { arrival, fault: Some(other) }),
    }
}

fn authorized(sim: &Simulator, headers: &HeaderMap, query_key: Option<&str>) -> bool {
    let Some(expected) = sim.profile().api_key.as_deref() else {
        return true;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    [bearer, header("x-api-key"), header("x-goog-api-key"), query_key].into_iter().flatten().any(|key| key == expected)
}

/// 404 unless the profile serves `model`.
pub(crate) fn check_model(sim: &Simulator, dialect: Dialect, model: &str) -> Result<(), ApiError> {
    if sim.profile().serves(model) {
        return Ok(());
    }
    Err(ApiError::new(
        dialect,
        StatusCode::NOT_FOUND,
        format!("The model `{model}` does not exist or you do not have access to it."),
        Some("model_not_found"),
    ))
}

/// Parses a JSON request body, or a 400 in `dialect`'s shape.
pub(crate) fn parse_body<T: DeserializeOwned>(dialect: Dialect, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(dialect, format!("Invalid request body: {e}")))
}

/// A request body that names its model.
pub(crate) trait ModelRequest: DeserializeOwned {
    fn model(&self) -> &str;
}

/// How most inference routes start: the [`prelude`], then the body, then the model check.
pub(crate) async fn accept<T: ModelRequest>(
    sim: &Simulator,
    dialect: Dialect,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Accepted, T), ApiError> {
    let accepted = prelude(sim, dialect, headers, None).await?;
    let request: T = parse_body(dialect, body)?;
    check_model(sim, dialect, request.model())?;
    Ok((accepted, request))
}

/// What a request asks for, or its own text when the profile echoes, the request asks for
/// text (not a tool call or JSON) and `text` (its last user message) has any.
pub(crate) fn echo_or<'a>(sim: &Simulator, mode: OutputMode<'a>, text: Option<&'a str>) -> OutputMode<'a> {
    match (mode, text) {
        (OutputMode::Text, Some(text)) if sim.profile().echo && !text.is_empty() => OutputMode::Echo(text),
        (mode, _) => mode,
    }
}

/// The text of message content that is a string or a list of parts (blocks) with `text`.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// Waits for a batch slot.
pub(crate) async fn admit(
    sim: &Simulator,
    dialect: Dialect,
    arrival: Arrival,
    prompt: &Prompt,
    planned_output: usize,
) -> Result<Admission, ApiError> {
    sim.admit(arrival, prompt, planned_output)
        .await
        .ok_or_else(|| ApiError::new(dialect, StatusCode::SERVICE_UNAVAILABLE, "The engine is shutting down.", None))
}

/// A 200 JSON response whose body may carry a fault.
pub(crate) fn json_response(body: Vec<u8>, fault: Option<Fault>) -> Response {
    let mut response = Response::new(plain_body(body, fault));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON response from a value (a 500 in `dialect`'s shape if it cannot be serialized).
pub(crate) fn json_value_response<T: serde::Serialize>(dialect: Dialect, value: &T, fault: Option<Fault>) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(body, fault),
        Err(e) => error_response(
            dialect,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialize the response: {e}"),
            None,
        ),
    }
}

/// A streamed 200 response driven by the latency model.
pub(crate) fn stream_response<R: Renderer>(
    sim: &Simulator,
    admission: Admission,
    renderer: R,
    plan: StreamPlan,
    content_type: &'static str,
) -> Response {
    let body: Body = TimedStream::body(sim.clone(), admission, renderer, plan);
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Appends one server-sent event: an optional `event:` line and a `data:` line with `value` as
/// JSON.
pub(crate) fn push_sse<T: serde::Serialize>(out: &mut Vec<u8>, event: Option<&str>, value: &T) -> crate::Result<()> {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, value)?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}
