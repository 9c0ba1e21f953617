//! OpenAI chat completions served by a Gemini upstream (`generateContent`,
//! `streamGenerateContent?alt=sse`): the chat request turned into a `GenerateContentRequest`
//! ([`request`]), the answer and its stream back into a chat completion and its chunks
//! ([`response`]), and Google's errors into OpenAI's shape. [`inbound`] is the other way round:
//! clients that speak Gemini, served by chat backends. Pure functions over bytes and JSON;
//! `docs/protocols.md` lists every field.

pub mod inbound;
pub mod request;
pub mod response;

use hyper::StatusCode;
use serde_json::Value;

use crate::protocol::completion::error_body;

/// OpenAI's `finish_reason` for Gemini's `finishReason`; a candidate that called functions
/// finished to have them called.
pub fn finish_reason(reason: &str, called_functions: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if called_functions => "tool_calls",
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED.
        _ => "stop",
    }
}

/// A Google error answer (`{"error":{"code","message","status"}}`, or anything) in OpenAI's
/// shape; Google's `status` is the `code`.
pub fn error_to_openai(status: StatusCode, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|b| b.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("The upstream answered with status {}.", status.as_u16()), str::to_owned);
    let code = error.and_then(|e| e.get("status")).and_then(Value::as_str);
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    error_body(&message, kind, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_map_to_openai() {
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("MAX_TOKENS", true), "length");
        assert_eq!(finish_reason("SAFETY", false), "content_filter");
        assert_eq!(finish_reason("RECITATION", false), "content_filter");
        assert_eq!(finish_reason("OTHER", false), "stop");
    }

    #[test]
    fn google_errors_become_openai_errors() {
        let body = br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#;
        let out: Value = serde_json::from_slice(&error_to_openai(StatusCode::BAD_REQUEST, body)).expect("json");
        assert_eq!(
            out,
            serde_json::json!({"error": {"message": "Invalid JSON payload", "type": "invalid_request_error",
                "param": null, "code": "INVALID_ARGUMENT"}})
        );
        let out: Value = serde_json::from_slice(&error_to_openai(StatusCode::NOT_FOUND, b"<html>")).expect("json");
        assert_eq!(out["error"]["type"], "not_found_error");
        assert_eq!(out["error"]["message"], "The upstream answered with status 404.");
    }
}
