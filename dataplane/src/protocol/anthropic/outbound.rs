//! OpenAI chat completions served by an Anthropic upstream: the chat request turned into a
//! Messages request ([`request_from_openai`]), the message back into a chat completion
//! ([`completion_from_message`]), its event stream into chat completion chunks
//! ([`ChunksFromEvents`]), and its errors into OpenAI's shape ([`error_to_openai`]). Pure
//! functions over bytes and JSON; `docs/protocols.md` lists every field.

use bytes::BytesMut;
use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::usage::MessageUsage;
use crate::error::ApiError;
use crate::protocol::completion::{ChunkWriter, EventReader, ToOpenAiStream, error_body, usage_json};

/// The `anthropic-version` the gateway sends with the requests it translates (and with
/// passed-through ones whose client sent none). Pinned: the translation is written against it.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` for a chat request that sets none, when the Provider does not give the
/// model's `maxOutputTokens` (Anthropic requires the field).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The system instruction that stands in for OpenAI's JSON mode, which Anthropic lacks.
const JSON_INSTRUCTION: &str = "Respond only with a single valid JSON object, with no other text before or after it.";

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "unsupported_parameter", message: message.into() }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_value", message: message.into() }
}

/// Translates an OpenAI chat completions body into a Messages request for `model`, with
/// `default_max_tokens` when the request sets no `max_tokens`.
pub fn request_from_openai(body: &[u8], model: &str, default_max_tokens: u64) -> Result<Vec<u8>, ApiError> {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(ApiError::InvalidJson("the body must be a JSON object".into())),
    };
    if request.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(unsupported("n", "n: Anthropic models return one choice; n must be 1"));
    }
    if request.contains_key("functions") || request.contains_key("function_call") {
        return Err(unsupported("functions", "functions: use tools (the legacy functions API is not translated)"));
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let max_tokens = request
        .get("max_completion_tokens")
        .or(request.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), json!(max_tokens));

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let Some(Value::Array(messages)) = request.get("messages") else {
        return Err(invalid("messages", "messages: must be a list"));
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(text_of(content, i)?),
            "user" => push_turn(&mut turns, "user", user_blocks(content, i)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = match content {
                    Value::Null => String::new(),
                    other => text_of(other, i)?,
                };
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let function = call.get("function");
                    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
                    let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
                    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                    blocks.push(json!({"type": "tool_use", "id": id, "name": name,
                        "input": super::response::tool_input(arguments)}));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let text = text_of(content, i)?;
                push_turn(&mut turns, "user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})]);
            }
            other => return Err(unsupported("messages", format!("messages.{i}.role: {other:?} is not translated"))),
        }
    }
    match request.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => system.push(JSON_INSTRUCTION.to_owned()),
        Some("json_schema") => {
            let schema = request["response_format"].get("json_schema").and_then(|s| s.get("schema"));
            system.push(match schema {
                Some(schema) => format!("{JSON_INSTRUCTION} It must conform to this JSON Schema: {schema}"),
                None => JSON_INSTRUCTION.to_owned(),
            });
        }
        _ => {}
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| match blocks.as_slice() {
            [only] if only["type"] == "text" => json!({"role": role, "content": only["text"]}),
            _ => json!({"role": role, "content": blocks}),
        })
        .collect();
    out.insert("messages".into(), Value::Array(messages));

    if let Some(stop) = request.get("stop") {
        match stop {
            Value::String(s) => {
                out.insert("stop_sequences".into(), json!([s]));
            }
            Value::Array(items) if !items.is_empty() => {
                out.insert("stop_sequences".into(), Value::Array(items.clone()));
            }
            _ => {}
        }
    }
    if let Some(t) = request.get("temperature").and_then(Value::as_f64) {
        // OpenAI's scale goes to 2, Anthropic's to 1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    for name in ["top_p", "top_k"] {
        if let Some(value @ Value::Number(_)) = request.get(name) {
            out.insert(name.into(), value.clone());
        }
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(Value::Array(tools)) = request.get("tools")
        && !tools.is_empty()
    {
        let tools = tools
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                let function = tool
                    .get("function")
                    .filter(|_| tool.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
                    .ok_or_else(|| unsupported("tools", format!("tools.{i}: only function tools are translated")))?;
                let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
                let schema = function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}));
                let mut tool = json!({"name": name, "input_schema": schema});
                if let Some(description) = function.get("description").and_then(Value::as_str) {
                    tool["description"] = json!(description);
                }
                Ok(tool)
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    let parallel = request.get("parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => return Err(invalid("tool_choice", format!("tool_choice: unknown value {other:?}"))),
        },
        Some(object) => {
            let name = object.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            let name = name.ok_or_else(|| invalid("tool_choice", "tool_choice.function.name: Field required"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    if parallel == Some(false) && out.contains_key("tools") {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    if request.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Appends blocks to the conversation: Anthropic wants user and assistant turns to alternate,
/// so consecutive messages of one role (tool results and the user's next words) are one turn.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// The text of a string or a list of text parts (joined by newlines).
fn text_of(content: &Value, index: usize) -> Result<String, ApiError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => texts.push(text),
                    _ => {
                        return Err(unsupported(
                            "messages",
                            format!("messages.{index}.content: only text parts are translated in this message"),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(invalid("messages", format!("messages.{index}.content: must be a string or a list"))),
    }
}

/// A user message's content as Anthropic blocks: text, and images from `image_url` parts.
fn user_blocks(content: &Value, index: usize) -> Result<Vec<Value>, ApiError> {
    let Value::Array(parts) = content else {
        let text = text_of(content, index)?;
        return Ok(if text.is_empty() { Vec::new() } else { vec![json!({"type": "text", "text": text})] });
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (p, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
            Some("image_url") => {
                let url = part.get("image_url").and_then(|i| i.get("url").or(Some(i))).and_then(Value::as_str);
                let url = url.ok_or_else(|| {
                    invalid("messages", format!("messages.{index}.content.{p}.image_url.url: Field required"))
                })?;
                blocks.push(json!({"type": "image", "source": image_source(url, index, p)?}));
            }
            other => {
                return Err(unsupported(
                    "messages",
                    format!("messages.{index}.content.{p}: parts of type {other:?} are not translated for Anthropic"),
                ));
            }
        }
    }
    Ok(blocks)
}

/// An image URL as Anthropic's image source: a base64 `data:` URL becomes `base64` data, an
/// http(s) URL a `url` source (Anthropic fetches it).
fn image_source(url: &str, index: usize, part: usize) -> Result<Value, ApiError> {
    if let Some((media_type, data)) = parse_data_url(url) {
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(invalid(
        "messages",
        format!("messages.{index}.content.{part}.image_url.url: must be an http(s) or base64 data URL"),
    ))
}

/// `data:<media type>;base64,<data>` split, for base64 data URLs only.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn.
        _ => "stop",
    }
}

/// The chat completion id for a message id.
fn completion_id(message_id: Option<&str>) -> String {
    let id = message_id.unwrap_or("sluice");
    format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id))
}

/// Translates a message body into a chat completion body made at `created` (Unix seconds).
/// `None` when the body is not a message.
pub fn completion_from_message(body: &[u8], created: i64) -> Option<Vec<u8>> {
    let message: Value = serde_json::from_slice(body).ok()?;
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        reply["reasoning_content"] = Value::String(reasoning);
    }
    let stop_reason = message.get("stop_reason").and_then(Value::as_str);
    let mut choice =
        json!({"index": 0, "message": reply, "logprobs": null, "finish_reason": finish_reason(stop_reason)});
    if let Some(sequence) = message.get("stop_sequence").filter(|s| s.is_string()) {
        // Where vLLM says which stop string matched; the Messages translation reads it back.
        choice["stop_reason"] = sequence.clone();
    }
    let mut usage = MessageUsage::default();
    usage.observe(body);
    let out = json!({
        "id": completion_id(message.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [choice],
        "usage": usage_json(&usage.to_usage()),
    });
    serde_json::to_vec(&out).ok()
}

/// OpenAI's error `type` for an Anthropic error type.
fn openai_error_type(kind: &str) -> &'static str {
    match kind {
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        "invalid_request_error" | "request_too_large" => "invalid_request_error",
        _ => "server_error",
    }
}

/// An Anthropic error answer (`{"type":"error","error":{"type","message"}}`, or anything) in
/// OpenAI's shape; the Anthropic error type is the `code`.
pub fn error_to_openai(status: StatusCode, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|b| b.get("error"));
    let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("The upstream answered with status {}.", status.as_u16()), str::to_owned);
    let openai_kind = match kind {
        Some(kind) => openai_error_type(kind),
        None if status.is_client_error() => "invalid_request_error",
        None => "server_error",
    };
    error_body(&message, openai_kind, kind)
}

/// Translates a Messages event stream into chat completion chunks, event by event. Usage comes
/// from `message_start` and `message_delta`; the usage chunk and `[DONE]` follow
/// `message_stop`.
#[derive(Debug, Default)]
pub struct ChunksFromEvents {
    reader: EventReader,
    writer: ChunkWriter,
    usage: MessageUsage,
    /// Content block index -> OpenAI tool call index.
    tools: Vec<(u64, u64)>,
    done: bool,
}

impl ChunksFromEvents {
    /// A translator whose chunks say they were made at `created` (Unix seconds).
    pub fn new(created: i64) -> Self {
        Self { writer: ChunkWriter { created, ..ChunkWriter::default() }, ..Self::default() }
    }

    fn event(&mut self, name: Option<&[u8]>, data: &[u8], out: &mut BytesMut) -> Result<(), String> {
        if self.done || data.is_empty() {
            return Ok(());
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            // Its length only: the data may be completion text, and this message reaches the
            // client's error event and the logs.
            return Err(format!("the upstream sent an event that is not JSON ({} bytes)", data.len()));
        };
        let kind = event.get("type").and_then(Value::as_str).or(name.and_then(|n| std::str::from_utf8(n).ok()));
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            Some("message_start") => {
                let message = event.get("message");
                self.writer.id = completion_id(message.and_then(|m| m.get("id")).and_then(Value::as_str));
                self.writer.model =
                    message.and_then(|m| m.get("model")).and_then(Value::as_str).unwrap_or_default().to_owned();
                self.usage.observe(data);
                self.writer.chunk(out, 0, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => {
                let block = event.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool = self.tools.len() as u64;
                        self.tools.push((index, tool));
                        let field = |name: &str| block.and_then(|b| b.get(name)).cloned().unwrap_or(Value::Null);
                        let call = json!({"index": tool, "id": field("id"), "type": "function",
                            "function": {"name": field("name"), "arguments": ""}});
                        self.writer.chunk(out, 0, json!({"tool_calls": [call]}), None);
                    }
                    Some("text") => {
                        if let Some(text) =
                            block.and_then(|b| b.get("text")).and_then(Value::as_str).filter(|t| !t.is_empty())
                        {
                            self.writer.chunk(out, 0, json!({"content": text}), None);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let delta = event.get("delta");
                let field = |name: &str| delta.and_then(|d| d.get(name)).and_then(Value::as_str);
                match field("type") {
                    Some("text_delta") => self.writer.chunk(out, 0, json!({"content": field("text")}), None),
                    Some("thinking_delta") => {
                        self.writer.chunk(out, 0, json!({"reasoning_content": field("thinking")}), None);
                    }
                    Some("input_json_delta") => {
                        if let Some(&(_, tool)) = self.tools.iter().find(|(block, _)| *block == index)
                            && let Some(partial) = field("partial_json").filter(|p| !p.is_empty())
                        {
                            let call = json!({"index": tool, "function": {"arguments": partial}});
                            self.writer.chunk(out, 0, json!({"tool_calls": [call]}), None);
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.usage.observe(data);
                let delta = event.get("delta");
                if let Some(reason) = delta.and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    let sequence = delta.and_then(|d| d.get("stop_sequence")).and_then(Value::as_str);
                    self.writer.finish_chunk(out, 0, finish_reason(Some(reason)), sequence);
                }
            }
            Some("message_stop") => {
                self.done = true;
                self.writer.end(out, Some(&self.usage.to_usage()));
            }
            Some("error") => {
                let error = event.get("error");
                let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("error");
                let message = error.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default();
                return Err(format!("the upstream's stream failed: {kind}: {message}"));
            }
            // ping, content_block_stop, and events added after the pinned version.
            _ => {}
        }
        Ok(())
    }
}

impl ToOpenAiStream for ChunksFromEvents {
    fn feed(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let mut reader = std::mem::take(&mut self.reader);
        let result = reader.feed(bytes, |event| self.event(event.name, &event.data, out));
        self.reader = reader;
        result
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), String> {
        if let Some(rest) = self.reader.rest() {
            // A last event cut in its middle is no event.
            let _ = self.event(None, &rest.data, out);
        }
        if !self.done {
            return Err("the upstream's stream ended before message_stop".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
