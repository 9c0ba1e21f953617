//! An OpenAI chat completion turned into Gemini's `GenerateContentResponse`: choices into
//! candidates of `model` content (text, `reasoning_content` as thought parts, tool calls as
//! `functionCall` parts), `finish_reason` into `finishReason`, `usage` into `usageMetadata`.

use serde_json::{Value, json};

use crate::protocol::openai::Usage;

/// Gemini's `finishReason` for OpenAI's `finish_reason`.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        // stop, tool_calls, function_call.
        _ => "STOP",
    }
}

/// `usageMetadata` for OpenAI's usage.
pub fn usage_metadata(usage: &Usage) -> Value {
    let mut out = json!({
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": usage.completion_tokens,
        "totalTokenCount": usage.prompt_tokens + usage.completion_tokens,
    });
    if usage.cached_tokens > 0 {
        out["cachedContentTokenCount"] = json!(usage.cached_tokens);
    }
    out
}

/// A `functionCall` part for an OpenAI tool call's id, name and arguments (JSON text; not an
/// object, from a model's malformed output, becomes `{}`).
pub fn function_call(id: &str, name: &str, arguments: &str) -> Value {
    let args = match serde_json::from_str::<Value>(arguments) {
        Ok(args @ Value::Object(_)) => args,
        _ => json!({}),
    };
    json!({"functionCall": {"id": id, "name": name, "args": args}})
}

/// The response id from the upstream's completion id.
pub fn response_id(openai_id: Option<&str>) -> String {
    openai_id.map_or_else(|| "sluice".to_owned(), |id| id.strip_prefix("chatcmpl-").unwrap_or(id).to_owned())
}

/// Translates a chat completion body into a `GenerateContentResponse` body. `None` when the
/// body is not a chat completion.
pub fn response_from_openai(body: &[u8]) -> Option<Vec<u8>> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    let choices = completion.get("choices")?.as_array()?;
    let mut candidates = Vec::with_capacity(choices.len());
    for (position, choice) in choices.iter().enumerate() {
        let message = choice.get("message")?;
        let mut parts = Vec::new();
        if let Some(thought) = message.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            parts.push(json!({"text": thought, "thought": true}));
        }
        if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            parts.push(json!({"text": text}));
        }
        for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
            let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
            parts.push(function_call(call.get("id").and_then(Value::as_str).unwrap_or_default(), name, arguments));
        }
        let reason = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop");
        candidates.push(json!({
            "content": {"role": "model", "parts": parts},
            "finishReason": finish_reason(reason),
            "index": choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64),
        }));
    }
    let usage = crate::protocol::openai::read_usage(body).unwrap_or_default();
    let out = json!({
        "candidates": candidates,
        "usageMetadata": usage_metadata(&usage),
        "modelVersion": completion.get("model").cloned().unwrap_or(Value::Null),
        "responseId": response_id(completion.get("id").and_then(Value::as_str)),
    });
    serde_json::to_vec(&out).ok()
}

/// Gemini's `Model` for one entry of the gateway's `/v1/models` answer: chat models offer
/// `generateContent`, `streamGenerateContent` and `countTokens`, embeddings models
/// `embedContent` and `batchEmbedContents`.
fn model_from_openai(model: &Value) -> Value {
    let id = model.get("id").and_then(Value::as_str).unwrap_or_default();
    let capable = |name: &str| {
        model.get("capabilities").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c.as_str() == Some(name)))
    };
    let mut methods: Vec<&str> = Vec::new();
    if capable("chat") {
        methods.extend(["generateContent", "streamGenerateContent", "countTokens"]);
    }
    if capable("embeddings") {
        methods.extend(["embedContent", "batchEmbedContents"]);
    }
    let mut out = json!({
        "name": format!("models/{id}"),
        "baseModelId": id,
        "version": "sluice",
        "displayName": id,
        "supportedGenerationMethods": methods,
    });
    if let Some(limit) = model.get("context_window").filter(|l| l.is_u64()) {
        out["inputTokenLimit"] = limit.clone();
    }
    if let Some(limit) = model.get("max_output_tokens").filter(|l| l.is_u64()) {
        out["outputTokenLimit"] = limit.clone();
    }
    out
}

/// The gateway's `/v1/models` answer (a list, or one model) in Gemini's shape
/// (`{"models":[...]}`, or one `Model`).
pub fn models_from_openai(body: &str) -> String {
    let Ok(parsed) = serde_json::from_str::<Value>(body) else { return body.to_owned() };
    let out = match parsed.get("data").and_then(Value::as_array) {
        Some(models) => json!({"models": models.iter().map(model_from_openai).collect::<Vec<_>>()}),
        None => model_from_openai(&parsed),
    };
    out.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_become_candidates() {
        let body = json!({"id": "chatcmpl-7", "model": "up", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}});
        let out: Value =
            serde_json::from_slice(&response_from_openai(body.to_string().as_bytes()).expect("translated"))
                .expect("json");
        assert_eq!(
            out,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Checking."},
                    {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}}]},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14,
                    "cachedContentTokenCount": 2},
                "modelVersion": "up",
                "responseId": "7"
            })
        );
        assert_eq!(finish_reason("length"), "MAX_TOKENS");
        assert!(response_from_openai(b"{\"data\":[]}").is_none());
    }

    #[test]
    fn model_lists_take_gemini_shape() {
        let list = r#"{"object":"list","data":[{"id":"chat","capabilities":["chat"],"context_window":8192},
            {"id":"embed","capabilities":["embeddings"]}]}"#;
        let out: Value = serde_json::from_str(&models_from_openai(list)).expect("json");
        assert_eq!(out["models"][0]["name"], "models/chat");
        assert_eq!(out["models"][0]["inputTokenLimit"], 8192);
        assert_eq!(out["models"][0]["supportedGenerationMethods"][0], "generateContent");
        assert_eq!(out["models"][1]["supportedGenerationMethods"], json!(["embedContent", "batchEmbedContents"]));
        let one: Value = serde_json::from_str(&models_from_openai(r#"{"id":"chat"}"#)).expect("json");
        assert_eq!(one["name"], "models/chat");
    }
}
