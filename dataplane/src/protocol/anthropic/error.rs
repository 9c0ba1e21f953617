//! Errors in Anthropic's shape, `{"type":"error","error":{"type","message"}}`, with the status
//! codes Anthropic uses: the gateway's own refusals on the Messages path, and the upstream's
//! error answers translated.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Anthropic's error body.
pub fn body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Anthropic's status and error type for a response the gateway would answer with `status`.
/// The status stays, except that "cannot serve now" (503) is Anthropic's 529, which its
/// clients know to retry later.
pub fn status_and_kind(status: StatusCode) -> (StatusCode, &'static str) {
    match status.as_u16() {
        401 => (status, "authentication_error"),
        402 => (status, "billing_error"),
        403 => (status, "permission_error"),
        404 => (status, "not_found_error"),
        413 => (status, "request_too_large"),
        429 => (status, "rate_limit_error"),
        503 | 529 => (StatusCode::from_u16(529).unwrap_or(status), "overloaded_error"),
        504 => (status, "timeout_error"),
        400..=499 => (status, "invalid_request_error"),
        _ => (status, "api_error"),
    }
}

/// The status and body of a gateway refusal on the Messages path.
pub fn refusal(error: &ApiError) -> (StatusCode, Vec<u8>) {
    let (status, kind) = status_and_kind(error.parts().0);
    let message = match error {
        // Anthropic's clients send the key as x-api-key; say so.
        ApiError::MissingKey => "x-api-key header is required".to_owned(),
        other => other.to_string(),
    };
    (status, body(kind, &message).to_string().into_bytes())
}

/// An upstream's error answer (an OpenAI error body, or anything) in Anthropic's shape.
pub fn from_upstream(status: StatusCode, upstream_body: &[u8]) -> (StatusCode, Vec<u8>) {
    let (status, kind) = status_and_kind(status);
    let parsed: Option<Value> = serde_json::from_slice(upstream_body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .or_else(|| parsed.as_ref().and_then(|b| b.get("message")).and_then(Value::as_str))
        .map_or_else(|| format!("The upstream answered with status {}.", status.as_u16()), str::to_owned);
    (status, body(kind, &message).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn refusals_have_anthropic_types_and_statuses() {
        let cases = [
            (ApiError::MissingKey, 401, "authentication_error"),
            (ApiError::InvalidKey, 401, "authentication_error"),
            (ApiError::ModelNotAllowed("m".into()), 403, "permission_error"),
            (ApiError::ModelNotFound("m".into()), 404, "not_found_error"),
            (ApiError::InvalidJson("x".into()), 400, "invalid_request_error"),
            (ApiError::BodyTooLarge { limit: 1 }, 413, "request_too_large"),
            (
                ApiError::RateLimited { what: "requests", limit: 1, retry_after: Duration::from_secs(1) },
                429,
                "rate_limit_error",
            ),
            (ApiError::BudgetExhausted { limit_usd: 1.0, period: "month" }, 402, "billing_error"),
            (ApiError::NoHealthyBackend("m".into()), 529, "overloaded_error"),
            (ApiError::UpstreamStatus { model: "m".into(), status: 500 }, 502, "api_error"),
            (ApiError::UpstreamTimeout("m".into()), 504, "timeout_error"),
        ];
        for (error, status, kind) in cases {
            let (got, bytes) = refusal(&error);
            assert_eq!(got.as_u16(), status, "{error:?}");
            let body = parsed(&bytes);
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{error:?}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let (_, missing) = refusal(&ApiError::MissingKey);
        assert_eq!(parsed(&missing)["error"]["message"], "x-api-key header is required");
    }

    #[test]
    fn upstream_errors_keep_their_message() {
        let (status, bytes) = from_upstream(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"context too long","type":"invalid_request_error"}}"#,
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(parsed(&bytes), body("invalid_request_error", "context too long"));
        let (_, bytes) = from_upstream(StatusCode::NOT_FOUND, b"<html>nope</html>");
        assert_eq!(parsed(&bytes)["error"]["type"], "not_found_error");
        assert_eq!(parsed(&bytes)["error"]["message"], "The upstream answered with status 404.");
        let (_, bytes) = from_upstream(StatusCode::BAD_REQUEST, br#"{"error":"plain"}"#);
        assert_eq!(parsed(&bytes)["error"]["message"], "plain");
    }
}
