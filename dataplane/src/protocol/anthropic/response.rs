//! An OpenAI chat completion turned into an Anthropic message: text and `tool_use` content
//! blocks, the stop reason, and usage in Anthropic's terms.

use serde_json::{Value, json};

use crate::protocol::openai::Usage;

/// Anthropic's `stop_reason` (and `stop_sequence`) for a choice that finished with
/// `finish_reason`. OpenAI does not say which stop sequence matched; vLLM does, in the choice's
/// `stop_reason`, and that is honoured when it is one of the request's. A model that called
/// tools stopped to use them, whatever its server says.
pub fn stop_reason(
    finish_reason: Option<&str>,
    matched: Option<&str>,
    stop_sequences: &[String],
    called_tools: bool,
) -> (&'static str, Option<String>) {
    match finish_reason {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        Some("content_filter") => ("refusal", None),
        _ if called_tools => ("tool_use", None),
        _ => match matched.filter(|m| stop_sequences.iter().any(|s| s == m)) {
            Some(sequence) => ("stop_sequence", Some(sequence.to_owned())),
            None => ("end_turn", None),
        },
    }
}

/// A message id in Anthropic's style from the upstream's completion id.
pub fn message_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => "msg_sluice".to_owned(),
    }
}

/// Anthropic's usage object: its `input_tokens` leave out the tokens read from the prompt
/// cache, which it counts apart.
pub fn usage(usage: &Usage) -> Value {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let mut out = json!({
        "input_tokens": usage.prompt_tokens - cached,
        "output_tokens": usage.completion_tokens,
    });
    if cached > 0 {
        out["cache_read_input_tokens"] = json!(cached);
    }
    out
}

/// A tool call's `arguments` (JSON text) as the `input` object Anthropic's `tool_use` carries.
/// Arguments that are not a JSON object (a model's malformed output) become `{}`.
pub fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    }
}

/// Translates a chat completion body into an Anthropic message body. `None` when the body is
/// not a chat completion.
pub fn message_from_openai(body: &[u8], stop_sequences: &[String]) -> Option<Vec<u8>> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    let choice = completion.get("choices")?.get(0)?;
    let message = choice.get("message")?;
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": tool_input(arguments)}));
    }
    let called_tools = content.iter().any(|b| b["type"] == "tool_use");
    let (reason, sequence) = stop_reason(
        choice.get("finish_reason").and_then(Value::as_str),
        choice.get("stop_reason").and_then(Value::as_str),
        stop_sequences,
        called_tools,
    );
    let counts = crate::protocol::openai::read_usage(body).unwrap_or_default();
    let out = json!({
        "id": message_id(completion.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(&counts),
    });
    serde_json::to_vec(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value, stops: &[&str]) -> Value {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let out = message_from_openai(body.to_string().as_bytes(), &stops).expect("a chat completion");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn text_answers_become_messages() {
        let out = translate(
            json!({"id": "chatcmpl-abc", "object": "chat.completion", "model": "up",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                    "prompt_tokens_details": {"cached_tokens": 4}}}),
            &[],
        );
        assert_eq!(
            out,
            json!({"id": "msg_abc", "type": "message", "role": "assistant", "model": "up",
                "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 8, "output_tokens": 3, "cache_read_input_tokens": 4}})
        );
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_with_parsed_input() {
        let out = translate(
            json!({"id": "x", "model": "up", "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{not json"}}
                ]}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
            &[],
        );
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(
            out["content"],
            json!([
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "broken", "input": {}}
            ])
        );
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        let stops = ["END".to_owned()];
        assert_eq!(stop_reason(Some("stop"), None, &stops, false), ("end_turn", None));
        assert_eq!(stop_reason(Some("length"), None, &stops, false), ("max_tokens", None));
        assert_eq!(stop_reason(Some("tool_calls"), None, &stops, true), ("tool_use", None));
        assert_eq!(stop_reason(Some("stop"), None, &stops, true), ("tool_use", None));
        assert_eq!(stop_reason(Some("content_filter"), None, &stops, false), ("refusal", None));
        assert_eq!(stop_reason(Some("stop"), Some("END"), &stops, false), ("stop_sequence", Some("END".to_owned())));
        assert_eq!(stop_reason(Some("stop"), Some("OTHER"), &stops, false), ("end_turn", None));
        assert_eq!(stop_reason(None, None, &[], false), ("end_turn", None));
    }

    #[test]
    fn what_is_not_a_completion_is_not_translated() {
        assert!(message_from_openai(b"{\"data\":[]}", &[]).is_none());
        assert!(message_from_openai(b"not json", &[]).is_none());
    }
}
