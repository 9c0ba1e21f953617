//! OpenAI's Responses API (`POST /v1/responses`) for clients that speak it, served by any chat
//! backend and without storage: the request turned into a chat completions request
//! ([`request`]), the answer back into a response object ([`response`]) or the Responses event
//! stream ([`stream`]). Errors keep OpenAI's shape. Every response says `"store": false`: the
//! gateway keeps nothing, so `previous_response_id` and conversations are refused.

pub mod request;
pub mod response;
pub mod stream;

use serde_json::{Map, Value, json};

use crate::protocol::openai::Usage;

/// The request's parameters a response object repeats, with OpenAI's defaults for those left
/// out.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    fields: Map<String, Value>,
}

impl Echo {
    /// The parameters of a Responses request.
    pub fn of(request: &Map<String, Value>) -> Self {
        let mut fields = Map::new();
        let defaults = [
            ("instructions", Value::Null),
            ("max_output_tokens", Value::Null),
            ("metadata", json!({})),
            ("parallel_tool_calls", Value::Bool(true)),
            ("temperature", json!(1.0)),
            ("top_p", json!(1.0)),
            ("tool_choice", json!("auto")),
            ("tools", json!([])),
            ("text", json!({"format": {"type": "text"}})),
            ("reasoning", json!({"effort": null, "summary": null})),
            ("user", Value::Null),
        ];
        for (name, default) in defaults {
            let value = request.get(name).filter(|v| !v.is_null()).cloned().unwrap_or(default);
            fields.insert(name.into(), value);
        }
        Self { fields }
    }
}

/// The response id from the upstream's completion id.
pub fn response_id(openai_id: Option<&str>) -> String {
    format!("resp_{}", openai_id.map_or("sluice", |id| id.strip_prefix("chatcmpl-").unwrap_or(id)))
}

/// The Responses API's usage object.
pub fn usage_json(usage: &Usage, reasoning_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

/// A response object. `status` is `completed`, `incomplete` (with the reason) or `in_progress`.
pub fn object(
    id: &str,
    created_at: i64,
    model: &Value,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
    echo: &Echo,
) -> Value {
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    let mut out = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "previous_response_id": null,
        "store": false,
        "truncation": "disabled",
        "usage": usage,
    });
    if let Some(map) = out.as_object_mut() {
        for (name, value) in &echo.fields {
            map.insert(name.clone(), value.clone());
        }
    }
    out
}

/// A `function_call` output item.
pub fn function_call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id, "name": name,
        "arguments": arguments, "status": status})
}

/// A `message` output item with its text (as one `output_text` part, when there is text).
pub fn message_item(id: &str, text: Option<&str>, status: &str) -> Value {
    let content: Vec<Value> = text.into_iter().map(output_text).collect();
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

/// An `output_text` content part.
pub fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The status of a response that finished with OpenAI's `finish_reason`.
pub fn status_of(finish_reason: Option<&str>) -> &'static str {
    if finish_reason == Some("length") { "incomplete" } else { "completed" }
}
