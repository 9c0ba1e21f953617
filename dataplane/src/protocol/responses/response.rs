//! A chat completion turned into a Responses API response object: the first choice's text as a
//! `message` output item with one `output_text` part, its tool calls as `function_call` items,
//! `finish_reason: length` as an `incomplete` response, usage as `input_tokens` and
//! `output_tokens`.

use serde_json::Value;

use super::{Echo, function_call_item, message_item, object, response_id, status_of, usage_json};
use crate::protocol::openai::read_usage;

/// Translates a chat completion body into a response object made at `created_at` (Unix
/// seconds, when the completion has none). `None` when the body is not a chat completion.
pub fn response_from_openai(body: &[u8], echo: &Echo, created_at: i64) -> Option<Vec<u8>> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    let choice = completion.get("choices")?.get(0)?;
    let message = choice.get("message")?;
    let id = completion.get("id").and_then(Value::as_str);
    let suffix = id.map_or("sluice", |id| id.strip_prefix("chatcmpl-").unwrap_or(id));
    let mut output = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        output.push(message_item(&format!("msg_{suffix}"), Some(text), "completed"));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function");
        let field = |name| function.and_then(|f| f.get(name)).and_then(Value::as_str).unwrap_or_default();
        let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        output.push(function_call_item(call_id, field("name"), field("arguments"), "completed"));
    }
    let usage = read_usage(body).unwrap_or_default();
    let reasoning = completion
        .get("usage")
        .and_then(|u| u.get("completion_tokens_details"))
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let created = completion.get("created").and_then(Value::as_i64).unwrap_or(created_at);
    let status = status_of(choice.get("finish_reason").and_then(Value::as_str));
    let model = completion.get("model").cloned().unwrap_or(Value::Null);
    let out = object(&response_id(id), created, &model, status, output, Some(usage_json(&usage, reasoning)), echo);
    serde_json::to_vec(&out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn completions_become_response_objects() {
        let echo = Echo::of(json!({"instructions": "Be terse.", "max_output_tokens": 5}).as_object().expect("object"));
        let body = json!({"id": "chatcmpl-9", "created": 7, "model": "up", "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "Hello", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}});
        let out: Value =
            serde_json::from_slice(&response_from_openai(body.to_string().as_bytes(), &echo, 1).expect("translated"))
                .expect("json");
        assert_eq!(out["id"], "resp_9");
        assert_eq!(out["object"], "response");
        assert_eq!(out["created_at"], 7);
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(out["store"], false);
        assert_eq!(out["instructions"], "Be terse.");
        assert_eq!(out["max_output_tokens"], 5);
        assert_eq!(
            out["output"],
            json!([
                {"type": "message", "id": "msg_9", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]},
                {"type": "function_call", "id": "fc_call_1", "call_id": "call_1", "name": "f", "arguments": "{}",
                    "status": "completed"}
            ])
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
        );
        assert!(response_from_openai(b"{}", &echo, 1).is_none());
    }
}
