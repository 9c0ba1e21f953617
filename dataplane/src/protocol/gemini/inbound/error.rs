//! Errors in Google's shape, `{"error":{"code","message","status"}}`, with the canonical status
//! names Google's clients read: the gateway's own refusals on the Gemini paths, and upstream
//! error answers translated.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Google's canonical status name for an HTTP status.
pub fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        402 | 429 => "RESOURCE_EXHAUSTED",
        400..=499 => "INVALID_ARGUMENT",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Google's error body.
pub fn body(status: StatusCode, message: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "message": message, "status": status_name(status)}})
}

/// The status and body of a gateway refusal on a Gemini path.
pub fn refusal(error: &ApiError) -> (StatusCode, Vec<u8>) {
    let status = error.parts().0;
    let message = match error {
        // Google's clients send the key as x-goog-api-key (or ?key=); say so.
        ApiError::MissingKey => {
            "Method doesn't allow unregistered callers: send an API key in the x-goog-api-key header.".to_owned()
        }
        other => other.to_string(),
    };
    (status, body(status, &message).to_string().into_bytes())
}

/// An upstream's error answer (an OpenAI error body, or anything) in Google's shape, with its
/// status.
pub fn from_upstream(status: StatusCode, upstream_body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(upstream_body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .map_or_else(|| format!("The upstream answered with status {}.", status.as_u16()), str::to_owned);
    body(status, &message).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refusals_have_google_statuses() {
        let cases = [
            (ApiError::MissingKey, 401, "UNAUTHENTICATED"),
            (ApiError::ModelNotAllowed("m".into()), 403, "PERMISSION_DENIED"),
            (ApiError::ModelNotFound("m".into()), 404, "NOT_FOUND"),
            (ApiError::InvalidJson("x".into()), 400, "INVALID_ARGUMENT"),
            (
                ApiError::RateLimited { what: "requests", limit: 1, retry_after: Duration::from_secs(1) },
                429,
                "RESOURCE_EXHAUSTED",
            ),
            (ApiError::NoHealthyBackend("m".into()), 503, "UNAVAILABLE"),
            (ApiError::UpstreamStatus { model: "m".into(), status: 500 }, 502, "INTERNAL"),
        ];
        for (error, code, name) in cases {
            let (status, bytes) = refusal(&error);
            let body: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!((status.as_u16(), body["error"]["code"].as_u64()), (code, Some(u64::from(code))), "{error:?}");
            assert_eq!(body["error"]["status"], name, "{error:?}");
        }
        let (_, bytes) = refusal(&ApiError::MissingKey);
        assert!(String::from_utf8_lossy(&bytes).contains("x-goog-api-key"));
    }

    #[test]
    fn upstream_errors_keep_their_message() {
        let bytes = from_upstream(StatusCode::BAD_REQUEST, br#"{"error":{"message":"too long","type":"x"}}"#);
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body, json!({"error": {"code": 400, "message": "too long", "status": "INVALID_ARGUMENT"}}));
    }
}
