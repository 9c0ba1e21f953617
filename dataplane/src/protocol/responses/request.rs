//! A Responses API request turned into the chat completions request that means the same:
//! `instructions` into a system message, `input` (a string, or items: messages,
//! `function_call`, `function_call_output`) into messages, function tools into tools,
//! `max_output_tokens`, sampling, `text.format` and `reasoning.effort` into their chat fields.
//! What needs stored state (`previous_response_id`, `conversation`, item references) or a
//! hosted tool is refused by name.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Echo;
use crate::error::ApiError;

/// A Responses request, translated.
#[derive(Debug)]
pub struct Translated {
    /// The chat completions body.
    pub body: Bytes,
    /// What the response object repeats.
    pub echo: Echo,
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_value", message: message.into() }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "unsupported_parameter", message: message.into() }
}

/// Translates a `POST /v1/responses` body.
pub fn to_openai(body: &[u8]) -> Result<Translated, ApiError> {
    let request = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(ApiError::InvalidJson("the body must be a JSON object".into())),
        Err(e) => return Err(ApiError::InvalidJson(e.to_string())),
    };
    for (name, why) in [
        (
            "previous_response_id",
            "the gateway stores no responses (every response is store: false); send the whole conversation as input",
        ),
        ("conversation", "the gateway stores no conversations; send the whole conversation as input"),
        ("prompt", "stored prompt templates are not available through the gateway"),
    ] {
        if request.get(name).is_some_and(|v| !v.is_null()) {
            let param = match name {
                "previous_response_id" => "previous_response_id",
                "conversation" => "conversation",
                _ => "prompt",
            };
            return Err(unsupported(param, format!("{name}: {why}")));
        }
    }
    if request.get("background") == Some(&Value::Bool(true)) {
        return Err(unsupported(
            "background",
            "background: background responses need storage, which the gateway does not keep",
        ));
    }
    let mut out = Map::new();
    match request.get("model") {
        Some(Value::String(model)) => out.insert("model".into(), Value::String(model.clone())),
        Some(_) => return Err(invalid("model", "model: must be a string")),
        None => {
            return Err(ApiError::InvalidParam {
                param: "model",
                code: "missing_required_parameter",
                message: "you must provide a model parameter".into(),
            });
        }
    };
    let mut messages = Vec::new();
    match request.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => return Err(invalid("instructions", "instructions: must be a string")),
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        None | Some(Value::Null) => return Err(invalid("input", "input: Field required")),
        Some(_) => return Err(invalid("input", "input: must be a string or a list of items")),
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let Value::Array(tools) = tools else { return Err(invalid("tools", "tools: must be a list")) };
        let tools = tools.iter().enumerate().map(|(i, tool)| function_tool(tool, i)).collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    match request.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(choice @ Value::String(_)) => {
            out.insert("tool_choice".into(), choice.clone());
        }
        Some(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let name = choice.get("name").cloned().unwrap_or(Value::Null);
            out.insert("tool_choice".into(), json!({"type": "function", "function": {"name": name}}));
        }
        Some(_) => {
            return Err(unsupported(
                "tool_choice",
                "tool_choice: only auto, none, required and function choices are translated",
            ));
        }
    }
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
        ("safety_identifier", "safety_identifier"),
        ("service_tier", "service_tier"),
        ("top_logprobs", "top_logprobs"),
    ] {
        if let Some(value) = request.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), value.clone());
        }
    }
    if let Some(effort) = request.get("reasoning").and_then(|r| r.get("effort")).filter(|e| !e.is_null()) {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = request.get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = Map::new();
                for name in ["name", "schema", "strict", "description"] {
                    if let Some(value) = format.get(name).filter(|v| !v.is_null()) {
                        schema.insert(name.into(), value.clone());
                    }
                }
                out.insert("response_format".into(), json!({"type": "json_schema", "json_schema": schema}));
            }
            _ => return Err(invalid("text", "text.format.type: must be text, json_object or json_schema")),
        }
    }
    match request.get("stream") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), Value::Bool(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(invalid("stream", "stream: must be a boolean")),
    }
    let body = Bytes::from(serde_json::to_vec(&Value::Object(out)).unwrap_or_default());
    Ok(Translated { body, echo: Echo::of(&request) })
}

/// A function tool in chat completions' shape; hosted tools (web search, file search...) have
/// no chat equivalent.
fn function_tool(tool: &Value, index: usize) -> Result<Value, ApiError> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "function" {
        return Err(unsupported(
            "tools",
            format!(
                "tools.{index}.type: {kind:?} tools are not available through the gateway; only function tools are"
            ),
        ));
    }
    let mut function = Map::new();
    for name in ["name", "description", "parameters", "strict"] {
        if let Some(value) = tool.get(name).filter(|v| !v.is_null()) {
            function.insert(name.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// The text of a message's content: a string, or a list of text parts.
fn text_of(content: &Value, index: usize) -> Result<String, ApiError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (p, part) in parts.iter().enumerate() {
                match part.get("text").and_then(Value::as_str) {
                    Some(text) => texts.push(text),
                    None => {
                        return Err(unsupported(
                            "input",
                            format!("input.{index}.content.{p}: only text parts are translated here"),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(invalid("input", format!("input.{index}.content: must be a string or a list"))),
    }
}

/// A user message's content: text, and images (`input_image` with an `image_url`).
fn user_content(content: &Value, index: usize) -> Result<Value, ApiError> {
    let Value::Array(parts) = content else { return Ok(Value::String(text_of(content, index)?)) };
    let mut out = Vec::with_capacity(parts.len());
    for (p, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                out.push(json!({"type": "text", "text": part.get("text").cloned().unwrap_or_default()}));
            }
            Some("input_image") => {
                let url = part.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                    unsupported(
                        "input",
                        format!("input.{index}.content.{p}: images are translated from image_url only (no file_id)"),
                    )
                })?;
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                    image["detail"] = detail.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => {
                return Err(unsupported(
                    "input",
                    format!("input.{index}.content.{p}: parts of type {other:?} are not translated"),
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

/// One input item, appended to `messages`: function calls join the assistant message before
/// them (OpenAI wants a turn's calls in one message).
fn input_item(item: &Value, index: usize, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let kind =
        item.get("type").and_then(Value::as_str).unwrap_or(if item.get("role").is_some() { "message" } else { "" });
    match kind {
        "message" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
            let content = item.get("content").unwrap_or(&Value::Null);
            match role {
                "user" => messages.push(json!({"role": "user", "content": user_content(content, index)?})),
                "system" | "developer" => messages.push(json!({"role": role, "content": text_of(content, index)?})),
                "assistant" => messages.push(json!({"role": "assistant", "content": text_of(content, index)?})),
                other => return Err(invalid("input", format!("input.{index}.role: {other:?} is not a message role"))),
            }
        }
        "function_call" => {
            let field = |name| item.get(name).and_then(Value::as_str).unwrap_or_default();
            let call = json!({"id": field("call_id"), "type": "function",
                "function": {"name": field("name"), "arguments": field("arguments")}});
            match messages.last_mut().filter(|m| m["role"] == "assistant") {
                Some(last) => match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    Some(calls) => calls.push(call),
                    None => last["tool_calls"] = json!([call]),
                },
                None => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(other @ Value::Array(_)) => text_of(other, index)?,
                _ => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // The model's reasoning from an earlier turn: chat completions take none back.
        "reasoning" => {}
        "item_reference" => {
            return Err(unsupported(
                "input",
                format!("input.{index}: item references need stored responses, which the gateway does not keep"),
            ));
        }
        other => return Err(unsupported("input", format!("input.{index}.type: {other:?} items are not translated"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Value {
        let out = to_openai(body.to_string().as_bytes()).expect("translates");
        serde_json::from_slice(&out.body).expect("json")
    }

    #[test]
    fn items_tools_and_formats_become_a_chat_request() {
        let out = translate(json!({
            "model": "m-ok",
            "instructions": "Be terse.",
            "input": [
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "21C"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And"},
                    {"type": "input_image", "image_url": "https://x.test/a.png"}]}
            ],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "max_output_tokens": 50,
            "temperature": 0.2,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "store": true,
            "stream": true
        }));
        assert_eq!(
            out,
            json!({
                "model": "m-ok",
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
                    {"role": "user", "content": [{"type": "text", "text": "And"},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "max_tokens": 50,
                "temperature": 0.2,
                "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
        let plain = translate(json!({"model": "m", "input": "Hi", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(plain["messages"], json!([{"role": "user", "content": "Hi"}]));
        assert_eq!(plain["response_format"], json!({"type": "json_object"}));
    }

    #[test]
    fn stateful_and_hosted_features_are_refused_by_name() {
        let refused = |body: Value| match to_openai(body.to_string().as_bytes()) {
            Err(ApiError::InvalidParam { param, message, .. }) => (param, message),
            other => panic!("expected a 400, got {other:?}"),
        };
        let (param, message) = refused(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}));
        assert_eq!(param, "previous_response_id");
        assert!(message.contains("store"), "{message}");
        assert_eq!(refused(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).0, "tools");
        assert_eq!(refused(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})).0, "input");
        assert_eq!(refused(json!({"model": "m", "input": "x", "background": true})).0, "background");
        assert!(matches!(to_openai(b"{\"input\":\"x\"}"), Err(ApiError::InvalidParam { param: "model", .. })));
    }
}
