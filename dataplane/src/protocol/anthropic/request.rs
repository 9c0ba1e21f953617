//! An Anthropic Messages request turned into the OpenAI chat completions request that means the
//! same: system prompt, content blocks, tools and tool results, tool choice, stop sequences and
//! sampling parameters. The result goes through the gateway like any chat request.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::protocol::openai;

/// A Messages request, translated.
#[derive(Debug)]
pub struct Translated {
    /// The OpenAI chat completions body (its `stream` is the client's).
    pub body: Bytes,
    /// The request's `stop_sequences`, to tell a stop sequence from a natural end.
    pub stop_sequences: Vec<String>,
}

/// A `count_tokens` request: the model it names and the gateway's estimate of its prompt.
#[derive(Debug)]
pub struct TokenCount {
    /// The translated body (`model` and the prompt), for resolving the model.
    pub body: Bytes,
    /// Estimated input tokens.
    pub input_tokens: u64,
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_request_error", message: message.into() }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson("the body must be a JSON object".into())),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// Translates a `POST /v1/messages` body. `model`, `max_tokens` and `messages` are required,
/// as Anthropic requires them.
pub fn to_openai(body: &[u8]) -> Result<Translated, ApiError> {
    let request = parse_object(body)?;
    let mut out = prompt(&request)?;
    let max_tokens = match request.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.clone(),
        Some(_) => return Err(invalid("max_tokens", "max_tokens: must be an integer of at least 1")),
        None => return Err(invalid("max_tokens", "max_tokens: Field required")),
    };
    out.insert("max_tokens".into(), Value::Number(max_tokens));
    let stop_sequences = match request.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop_sequences", "stop_sequences: must be a list of strings"))?,
        Some(_) => return Err(invalid("stop_sequences", "stop_sequences: must be a list of strings")),
    };
    if !stop_sequences.is_empty() {
        out.insert("stop".into(), json!(stop_sequences));
    }
    for (name, param) in [("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")] {
        match request.get(name) {
            None | Some(Value::Null) => {}
            Some(value @ Value::Number(_)) => {
                out.insert(name.into(), value.clone());
            }
            Some(_) => return Err(invalid(param, format!("{name}: must be a number"))),
        }
    }
    if let Some(user) = request.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".into(), Value::String(user.to_owned()));
    }
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(invalid("stream", "stream: must be a boolean")),
    };
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // The translator needs the usage chunk to write `message_delta`'s usage.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = Bytes::from(serde_json::to_vec(&Value::Object(out)).unwrap_or_default());
    Ok(Translated { body, stop_sequences })
}

/// Translates a `POST /v1/messages/count_tokens` body and estimates its prompt as the gateway
/// estimates any prompt on admission.
pub fn count_tokens(body: &[u8]) -> Result<TokenCount, ApiError> {
    let request = parse_object(body)?;
    let out = prompt(&request)?;
    let mut counted = out.clone();
    counted.remove("model");
    let counted_len = serde_json::to_vec(&Value::Object(counted)).map_or(0, |v| v.len());
    let body = Bytes::from(serde_json::to_vec(&Value::Object(out)).unwrap_or_default());
    Ok(TokenCount { body, input_tokens: openai::estimate_prompt_tokens(counted_len) })
}

/// `model`, `messages` (with the system prompt first), `tools` and `tool_choice`: what both
/// `/v1/messages` and `count_tokens` carry.
fn prompt(request: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    match request.get("model") {
        Some(Value::String(model)) => out.insert("model".into(), Value::String(model.clone())),
        Some(_) => return Err(invalid("model", "model: must be a string")),
        None => return Err(invalid("model", "model: Field required")),
    };
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            let text = joined_text(blocks, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
        Some(_) => return Err(invalid("system", "system: must be a string or a list of text blocks")),
    }
    let Some(Value::Array(input)) = request.get("messages") else {
        return Err(invalid("messages", "messages: Field required (a list of messages)"));
    };
    for (i, message) in input.iter().enumerate() {
        translate_message(message, i, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let Value::Array(tools) = tools else { return Err(invalid("tools", "tools: must be a list")) };
        let tools = tools.iter().enumerate().map(|(i, tool)| translate_tool(tool, i)).collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = request.get("tool_choice").filter(|c| !c.is_null()) {
        let kind = choice.get("type").and_then(Value::as_str);
        let openai_choice = match kind {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice", "tool_choice.name: Field required"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            _ => return Err(invalid("tool_choice", "tool_choice.type: must be auto, any, tool or none")),
        };
        out.insert("tool_choice".into(), openai_choice);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) && kind != Some("none") {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(out)
}

/// The text of a list of text blocks (the system prompt, a tool result), joined by newlines.
fn joined_text(blocks: &[Value], param: &'static str) -> Result<String, ApiError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for block in blocks {
        match (block.get("type").and_then(Value::as_str), block.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(text)) => parts.push(text),
            _ => return Err(invalid(param, format!("{param}: only text blocks are supported here"))),
        }
    }
    Ok(parts.join("\n"))
}

/// One Anthropic message, appended to `out` as one or more OpenAI messages: a user message's
/// tool results become `tool` messages (first, as OpenAI wants them right after the calls), an
/// assistant's `tool_use` blocks become `tool_calls`.
fn translate_message(message: &Value, index: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = message.get("role").and_then(Value::as_str);
    let content = message.get("content");
    let blocks = match content {
        Some(Value::String(text)) => {
            match role {
                Some(role @ ("user" | "assistant")) => out.push(json!({"role": role, "content": text})),
                _ => return Err(invalid("messages", format!("messages.{index}.role: must be user or assistant"))),
            }
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(invalid("messages", format!("messages.{index}.content: must be a string or a list"))),
    };
    match role {
        Some("user") => user_message(blocks, index, out),
        Some("assistant") => assistant_message(blocks, index, out),
        _ => Err(invalid("messages", format!("messages.{index}.role: must be user or assistant"))),
    }
}

fn user_message(blocks: &[Value], index: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut parts = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let at = || format!("messages.{index}.content.{b}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("messages", format!("{}.text: Field required", at())))?;
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") => parts.push(image_part(block.get("source"), &at())?),
            Some("tool_result") => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("messages", format!("{}.tool_use_id: Field required", at())))?;
                let mut text = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(inner)) => inner
                        .iter()
                        .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Some(_) => {
                        return Err(invalid("messages", format!("{}.content: must be a string or a list", at())));
                    }
                };
                if block.get("is_error") == Some(&Value::Bool(true)) {
                    text.insert_str(0, "Error: ");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            // Prompt-caching marks and thinking are the upstream's business; a chat model has
            // no equivalent, so they are left out rather than refused.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(invalid(
                    "messages",
                    format!("{}: content blocks of type {other:?} are not supported", at()),
                ));
            }
            None => return Err(invalid("messages", format!("{}.type: Field required", at()))),
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => out.push(json!({"role": "user", "content": only["text"]})),
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn assistant_message(blocks: &[Value], index: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let at = || format!("messages.{index}.content.{b}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => {
                let field = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("messages", format!("{}.{name}: Field required", at())))
                };
                let (id, name) = (field("id")?, field("name")?);
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(invalid(
                    "messages",
                    format!("{}: content blocks of type {other:?} are not supported", at()),
                ));
            }
            None => return Err(invalid("messages", format!("{}.type: Field required", at()))),
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    out.push(message);
    Ok(())
}

/// An image block's source as an OpenAI `image_url` part: base64 data becomes a data URL.
fn image_part(source: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    let source = source.ok_or_else(|| invalid("messages", format!("{at}.source: Field required")))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str);
            let data = source.get("data").and_then(Value::as_str);
            let (Some(media), Some(data)) = (media, data) else {
                return Err(invalid("messages", format!("{at}.source: media_type and data are required")));
            };
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("messages", format!("{at}.source.url: Field required")))?
            .to_owned(),
        _ => return Err(invalid("messages", format!("{at}.source.type: must be base64 or url"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A client tool as an OpenAI function. Anthropic's server tools (web search, code execution,
/// ...) run at Anthropic and have no equivalent.
fn translate_tool(tool: &Value, index: usize) -> Result<Value, ApiError> {
    if let Some(kind) = tool.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(invalid("tools", format!("tools.{index}: tools of type {kind:?} are not supported")));
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tools", format!("tools.{index}.name: Field required")))?;
    let schema = tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
    let mut function = json!({"name": name, "parameters": schema});
    if let Some(description) = tool.get("description").and_then(Value::as_str) {
        function["description"] = Value::String(description.to_owned());
    }
    Ok(json!({"type": "function", "function": function}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Value {
        let translated = to_openai(body.to_string().as_bytes()).expect("translates");
        serde_json::from_slice(&translated.body).expect("json")
    }

    #[test]
    fn a_simple_request_becomes_a_chat_request() {
        let out = translate(json!({
            "model": "m", "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}],
            "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "metadata": {"user_id": "u-1"}
        }));
        assert_eq!(
            out,
            json!({
                "model": "m", "max_tokens": 64, "stop": ["END"], "temperature": 0.5, "top_p": 0.9,
                "top_k": 40, "user": "u-1",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
            })
        );
    }

    #[test]
    fn system_blocks_and_content_blocks_are_translated() {
        let out = translate(json!({
            "model": "m", "max_tokens": 1,
            "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ]}]
        }));
        assert_eq!(out["messages"][0], json!({"role": "system", "content": "One.\nTwo."}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
            ])
        );
    }

    #[test]
    fn tools_calls_and_results_are_translated() {
        let out = translate(json!({
            "model": "m", "max_tokens": 10, "stream": true,
            "tools": [{"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "Thanks"}
                ]}
            ]
        }));
        assert_eq!(out["stream"], true);
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            out["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
        );
        assert_eq!(out["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
        assert_eq!(out["parallel_tool_calls"], false);
        let messages = out["messages"].as_array().expect("messages");
        assert_eq!(
            messages[1],
            json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]})
        );
        assert_eq!(messages[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}));
        assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"}));
        assert_eq!(messages[4], json!({"role": "user", "content": "Thanks"}));
    }

    #[test]
    fn tool_choices_map_to_openai_modes() {
        for (anthropic, openai) in [("auto", "auto"), ("any", "required"), ("none", "none")] {
            let out = translate(json!({"model": "m", "max_tokens": 1, "messages": [],
                "tool_choice": {"type": anthropic}}));
            assert_eq!(out["tool_choice"], openai);
            assert!(out.get("parallel_tool_calls").is_none());
        }
    }

    #[test]
    fn what_anthropic_requires_is_required() {
        let refused = |body: Value| match to_openai(body.to_string().as_bytes()) {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(refused(json!({"model": "m", "messages": []})), "max_tokens");
        assert_eq!(refused(json!({"model": "m", "max_tokens": 0, "messages": []})), "max_tokens");
        assert_eq!(refused(json!({"max_tokens": 1, "messages": []})), "model");
        assert_eq!(refused(json!({"model": "m", "max_tokens": 1})), "messages");
        assert_eq!(
            refused(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]})),
            "messages"
        );
        assert_eq!(
            refused(json!({"model": "m", "max_tokens": 1, "messages": [],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
            "tools"
        );
        assert_eq!(
            refused(
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})
            ),
            "messages"
        );
        assert!(matches!(to_openai(b"[]"), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn token_counts_use_the_admission_estimate_of_the_prompt() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "Hello there, how are you today?"}]});
        let count = count_tokens(body.to_string().as_bytes()).expect("counts");
        let prompt = json!({"messages": [{"role": "user", "content": "Hello there, how are you today?"}]});
        assert_eq!(count.input_tokens, openai::estimate_prompt_tokens(prompt.to_string().len()));
        let longer = json!({"model": "m", "system": "You are a very careful assistant who explains every step.",
            "messages": [{"role": "user", "content": "Hello there, how are you today?"}]});
        assert!(count_tokens(longer.to_string().as_bytes()).expect("counts").input_tokens > count.input_tokens);
    }
}
