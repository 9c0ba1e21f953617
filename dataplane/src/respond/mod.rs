//! What goes back to the client: the response to an upstream answer, to `/v1/models`, and to
//! every refusal. An error becomes an error body here and only here, whether it ends a request
//! ([`error_response`]) or a stream that had begun ([`stream_error_event`], and each
//! [`body::ClientStream`]'s `cut`): OpenAI's, Anthropic's on the Messages paths (shaped by
//! [`crate::protocol::anthropic::error`]), Google's on the Gemini paths; an answer to a request
//! in another format is translated back here too ([`translate_whole`], and
//! [`body::StreamBody::translated`] for streams). Every header the gateway writes is written
//! here.

pub mod body;
mod headers;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::accounting::{CutShort, RequestId};
use crate::error::ApiError;
use crate::limits::LimitReport;
use crate::protocol::anthropic;
use crate::protocol::anthropic::stream::StreamTranslator;
use crate::protocol::gemini::inbound::{self as gemini, stream::GeminiStream};
use crate::protocol::responses::{self, Echo, stream::ResponsesStream};
use crate::resolve::Deprecation;
use crate::route::Wire;
use crate::signing::{self, SigningKeys};
use crate::snapshot::{Backend, Tier};

use self::body::{ClientStream, ResponseBody};
pub use self::headers::LimitHeaders;
use self::headers::{copy_response_headers, deprecation_headers, limit_headers};

/// The request id, read from the request and written on the response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_SLUICE_BACKEND: HeaderName = HeaderName::from_static("x-sluice-backend");
static X_SLUICE_PREDICTED_TTFT_MS: HeaderName = HeaderName::from_static("x-sluice-predicted-ttft-ms");

/// The OpenAI error body, `{"error":{"message","type","param","code"}}`: the one place it is
/// written, for responses and stream events alike.
fn error_body(message: &str, kind: &str, param: Option<&str>, code: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// The response to a refused or failed request, in the client's wire format: its status, error
/// body and `Retry-After`.
pub fn error_response(wire: Wire, error: ApiError) -> Response<ResponseBody> {
    let retry_after = error.retry_after();
    let (status, body) = match wire {
        Wire::OpenAi | Wire::Responses => {
            let (status, kind, code) = error.parts();
            (status, error_body(&error.to_string(), kind, error.param(), code).to_string().into_bytes())
        }
        Wire::Anthropic => anthropic::error::refusal(&error),
        Wire::Gemini => gemini::error::refusal(&error),
    };
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Why a stream was cut short: the OpenAI error `code`, the Anthropic error type and the message.
fn cut_short_error(cut: CutShort) -> (&'static str, &'static str, &'static str) {
    match cut {
        CutShort::TotalTimeout => {
            ("stream_timeout", "timeout_error", "The response exceeded the tier's total time limit.")
        }
        CutShort::IdleTimeout => (
            "stream_idle_timeout",
            "timeout_error",
            "The upstream sent nothing for longer than the tier's idle stream limit.",
        ),
        CutShort::UpstreamError => ("upstream_stream_error", "api_error", "The upstream stream broke."),
    }
}

/// The last SSE event of a stream cut short: how an OpenAI SDK learns the stream failed.
pub fn stream_error_event(cut: CutShort) -> Bytes {
    let (code, _, message) = cut_short_error(cut);
    Bytes::from(format!("data: {}\n\n", error_body(message, "api_error", None, code)))
}

/// The status of a stream cut short, for the formats whose error events carry one.
fn cut_short_status(cut: CutShort) -> StatusCode {
    match cut {
        CutShort::TotalTimeout | CutShort::IdleTimeout => StatusCode::GATEWAY_TIMEOUT,
        CutShort::UpstreamError => StatusCode::BAD_GATEWAY,
    }
}

impl ClientStream for StreamTranslator {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        StreamTranslator::feed(self, bytes)
    }

    fn finish(&mut self) -> Bytes {
        StreamTranslator::finish(self)
    }

    /// Anthropic's `error` event.
    fn cut(&mut self, cut: CutShort) -> Bytes {
        let (_, kind, message) = cut_short_error(cut);
        self.error(kind, message)
    }
}

impl ClientStream for GeminiStream {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        GeminiStream::feed(self, bytes)
    }

    fn finish(&mut self) -> Bytes {
        GeminiStream::finish(self)
    }

    /// Google's error object as the last event.
    fn cut(&mut self, cut: CutShort) -> Bytes {
        let (_, _, message) = cut_short_error(cut);
        self.error(&gemini::error::body(cut_short_status(cut), message))
    }
}

impl ClientStream for ResponsesStream {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        ResponsesStream::feed(self, bytes)
    }

    fn finish(&mut self) -> Bytes {
        ResponsesStream::finish(self)
    }

    /// The Responses stream's `error` event, with OpenAI's code.
    fn cut(&mut self, cut: CutShort) -> Bytes {
        let (code, _, message) = cut_short_error(cut);
        self.error(code, message)
    }
}

/// How an answer goes back to a client that does not speak chat completions.
pub enum Translation {
    /// Anthropic's Messages, with the request's stop sequences.
    Messages(Vec<String>),
    /// Gemini's `GenerateContentResponse`.
    Gemini,
    /// Gemini's `embedContent` answer, or `batchEmbedContents`'s with `batch`.
    GeminiEmbed {
        /// A batch of embeddings.
        batch: bool,
    },
    /// OpenAI's Responses, with what the response object repeats.
    Responses(Echo),
}

impl Translation {
    /// The stream translator, for a prompt the gateway estimated at `estimated_prompt` tokens,
    /// answered at `created_at` (Unix seconds).
    pub fn stream(self, estimated_prompt: u64, created_at: i64) -> Box<dyn ClientStream> {
        match self {
            Self::Messages(stop_sequences) => Box::new(StreamTranslator::new(stop_sequences, estimated_prompt)),
            // Embeddings are never streamed (their request asks for no stream): this is only
            // for completeness, and would end such a stream in Google's shape.
            Self::Gemini | Self::GeminiEmbed { .. } => Box::new(GeminiStream::new()),
            Self::Responses(echo) => Box::new(ResponsesStream::new(echo, created_at)),
        }
    }
}

/// A whole upstream answer (a chat completion, or an OpenAI error) in the client's format.
pub fn translate_whole(
    translation: &Translation,
    status: StatusCode,
    bytes: &[u8],
    created_at: i64,
) -> (StatusCode, Bytes) {
    match translation {
        Translation::Messages(stop_sequences) => anthropic_whole(status, bytes, stop_sequences),
        Translation::Gemini => gemini_whole(status, bytes, gemini::response::response_from_openai, "a chat completion"),
        Translation::GeminiEmbed { batch } => gemini_whole(
            status,
            bytes,
            |body| gemini::embed::response_from_openai(body, *batch),
            "a list of embeddings",
        ),
        Translation::Responses(echo) => responses_whole(status, bytes, echo, created_at),
    }
}

/// A whole upstream answer to a Gemini request: a chat completion becomes a
/// `GenerateContentResponse` (embeddings an `embedContent` answer), an error answer Google's
/// error, and a success that is not `expected` a `502`.
fn gemini_whole(
    status: StatusCode,
    bytes: &[u8],
    translate: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    expected: &str,
) -> (StatusCode, Bytes) {
    if !status.is_success() {
        return (status, Bytes::from(gemini::error::from_upstream(status, bytes)));
    }
    match translate(bytes) {
        Some(body) => (status, Bytes::from(body)),
        None => {
            let message = format!("The upstream's answer is not {expected}.");
            let body = gemini::error::body(StatusCode::BAD_GATEWAY, &message);
            (StatusCode::BAD_GATEWAY, Bytes::from(body.to_string()))
        }
    }
}

/// A whole upstream answer to a Responses request: a chat completion becomes a response object;
/// an error answer is already in OpenAI's shape.
fn responses_whole(status: StatusCode, bytes: &[u8], echo: &Echo, created_at: i64) -> (StatusCode, Bytes) {
    if !status.is_success() {
        return (status, Bytes::copy_from_slice(bytes));
    }
    match responses::response::response_from_openai(bytes, echo, created_at) {
        Some(body) => (status, Bytes::from(body)),
        None => {
            let body =
                error_body("The upstream's answer is not a chat completion.", "api_error", None, "upstream_error");
            (StatusCode::BAD_GATEWAY, Bytes::from(body.to_string()))
        }
    }
}

/// A whole upstream answer to a Messages request, translated: a chat completion becomes a
/// message, an error answer an Anthropic error (with Anthropic's status), and a success that
/// is no chat completion a `502 api_error`.
pub fn anthropic_whole(status: StatusCode, bytes: &[u8], stop_sequences: &[String]) -> (StatusCode, Bytes) {
    if !status.is_success() {
        let (status, body) = anthropic::error::from_upstream(status, bytes);
        return (status, Bytes::from(body));
    }
    match anthropic::response::message_from_openai(bytes, stop_sequences) {
        Some(body) => (status, Bytes::from(body)),
        None => {
            let body = anthropic::error::body("api_error", "The upstream's answer is not a chat completion.");
            (StatusCode::BAD_GATEWAY, Bytes::from(body.to_string()))
        }
    }
}

/// A JSON answer the gateway makes itself (`/v1/models`).
pub fn json(body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The response to an upstream answer: its status and headers (less those the client must not
/// get), which backend answered and the time to first token predicted there, the client's
/// limits, and the alias's deprecation.
#[allow(clippy::too_many_arguments)] // each is one part of the response; a struct would only rename them
pub fn answered(
    status: StatusCode,
    upstream_headers: &HeaderMap,
    backend: &Backend,
    predicted_ttft_ms: Option<f32>,
    body: ResponseBody,
    report: &LimitReport,
    tier: &Tier,
    deprecation: Option<Deprecation<'_>>,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    *out = limit_headers(report, tier);
    // Room for x-sluice-backend and -predicted-ttft-ms, three of deprecation and x-request-id.
    out.reserve(upstream_headers.len() + 6);
    copy_response_headers(upstream_headers, out);
    out.insert(X_SLUICE_BACKEND.clone(), backend.label_header.clone());
    if let Some(ms) = predicted_ttft_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
        out.insert(X_SLUICE_PREDICTED_TTFT_MS.clone(), HeaderValue::from(ms.round() as u64));
    }
    if let Some(deprecation) = deprecation {
        deprecation_headers(out, deprecation);
    }
    response
}

/// The headers a refusal after resolution carries: the alias's deprecation and, once the
/// request was admitted, the client's limits.
pub fn refusal_headers(deprecation: Option<Deprecation<'_>>, limits: Option<(&LimitReport, &Tier)>) -> HeaderMap {
    let mut headers = limits.map(|(report, tier)| limit_headers(report, tier)).unwrap_or_default();
    if let Some(deprecation) = deprecation {
        deprecation_headers(&mut headers, deprecation);
    }
    headers
}

/// Signs `response` for a project that signs its responses: the timestamp header, and the
/// signature header for a whole body or the closing comment for a stream.
pub fn sign(response: &mut Response<ResponseBody>, keys: &SigningKeys, timestamp: i64) {
    response.headers_mut().insert(signing::TIMESTAMP.clone(), HeaderValue::from(timestamp));
    match response.body_mut() {
        ResponseBody::Full(bytes) => {
            let signature = keys.sign(timestamp, bytes.as_deref().unwrap_or_default());
            response.headers_mut().insert(signing::SIGNATURE.clone(), signature);
        }
        ResponseBody::Stream(stream) => stream.sign(keys.stream(timestamp)),
    }
}

/// Every response carries the request's id.
pub fn set_request_id(response: &mut Response<ResponseBody>, request_id: RequestId) {
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn errors_use_the_openai_shape() {
        let error = ApiError::ScopeInsufficient { needed: "inference", api: "/v1/chat/completions" };
        assert_eq!(error.parts().0, StatusCode::FORBIDDEN);
        let response = error_response(Wire::OpenAi, error);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body::ResponseBody::Full(Some(bytes)) = response.body() else { panic!("a whole body") };
        let body = json_of(bytes);
        assert_eq!(body["error"]["code"], "scope_insufficient");
        assert_eq!(body["error"]["type"], "permission_error");
        assert!(body["error"]["param"].is_null());
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("inference")));
    }

    #[test]
    fn stream_errors_are_the_same_body_in_an_event() {
        let event = stream_error_event(CutShort::IdleTimeout);
        let data = event.strip_prefix(b"data: ").and_then(|e| e.strip_suffix(b"\n\n")).expect("one SSE event");
        let body = json_of(data);
        assert_eq!(body["error"]["code"], "stream_idle_timeout");
        assert_eq!(body["error"]["type"], "api_error");
        assert!(body["error"]["param"].is_null());
        let refusal = error_response(Wire::OpenAi, ApiError::NotReady);
        let body::ResponseBody::Full(Some(bytes)) = refusal.body() else { panic!("a whole body") };
        let keys = |v: &serde_json::Value| v["error"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&body), keys(&json_of(bytes)), "one shape for both");
    }

    #[test]
    fn messages_refusals_use_the_anthropic_shape_with_retry_after() {
        let error =
            ApiError::RateLimited { what: "requests", limit: 1, retry_after: std::time::Duration::from_secs(2) };
        let response = error_response(Wire::Anthropic, error);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body::ResponseBody::Full(Some(bytes)) = response.body() else { panic!("a whole body") };
        let body = json_of(bytes);
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        let (status, bytes) = anthropic_whole(StatusCode::OK, b"{}", &[]);
        assert_eq!((status, json_of(&bytes)["error"]["type"].as_str()), (StatusCode::BAD_GATEWAY, Some("api_error")));
    }

    #[test]
    fn refusals_carry_deprecation_then_limits() {
        let deprecation = Deprecation { sunset: None, replacement: "m" };
        let headers = refusal_headers(Some(deprecation), None);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["deprecation", "x-sluice-model-replacement"]);
        assert!(refusal_headers(None, None).is_empty());
    }
}
