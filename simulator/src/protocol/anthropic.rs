//! Anthropic Messages (`POST /v1/messages`, plain and SSE with `message_start` ...
//! `message_stop`), as Anthropic documents it: `x-api-key` and `anthropic-version` headers,
//! text and `tool_use` content blocks, its own error shape.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::openai::{plan_of, tool_call_id};
use super::{
    ApiError, Dialect, IMAGE_TOKENS, accept, admit, bad_request, content_text, echo_or, json_value_response, push_sse,
    stream_response,
};
use crate::engine::Simulator;
use crate::generation::{Finish, Output, OutputMode, OutputSpec, generate};
use crate::prompt::{Prompt, PromptBuilder};
use crate::streaming::Renderer;

const DIALECT: Dialect = Dialect::Anthropic;

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    max_tokens: Option<u32>,
    messages: Vec<Message>,
    system: Option<Value>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
}

impl super::ModelRequest for MessagesRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Value,
}

/// The text of the last user message (what the profile's `echo` repeats): its text blocks.
fn last_user_text(messages: &[Message]) -> Option<String> {
    let content = &messages.iter().rev().find(|m| m.role == "user")?.content;
    let text_blocks = |blocks: &Vec<Value>| {
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<String>()
    };
    match content {
        Value::Array(blocks) => Some(text_blocks(blocks)),
        other => Some(content_text(other)),
    }
}

/// Adds Anthropic content (a string or a list of blocks) to a prompt.
fn add_blocks(builder: &mut PromptBuilder, content: &Value) {
    match content {
        Value::String(text) => {
            builder.text(text);
        }
        Value::Array(blocks) => {
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        builder.text(block.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("tool_use") => {
                        builder.text(block.get("name").and_then(Value::as_str).unwrap_or(""));
                        builder.text(&block.get("input").map(Value::to_string).unwrap_or_default());
                    }
                    Some("tool_result") => {
                        if let Some(inner) = block.get("content") {
                            add_blocks(builder, inner);
                        }
                    }
                    _ => {
                        builder.markers(6, IMAGE_TOKENS);
                    }
                }
            }
        }
        _ => {}
    }
}

fn build_prompt(sim: &Simulator, request: &MessagesRequest) -> Prompt {
    let mut builder = PromptBuilder::new(&request.model, sim.profile().prefix_cache_block_size as usize);
    builder.tools(request.tools.as_ref());
    if let Some(system) = &request.system {
        builder.message("system", |b| add_blocks(b, system));
    }
    for message in &request.messages {
        builder.message(&message.role, |b| add_blocks(b, &message.content));
    }
    builder.finish_chat()
}

/// The tool called: the one `tool_choice` names, else (with `any`, or `auto` unless the last
/// message carries a tool result) the first tool.
fn chosen_tool(request: &MessagesRequest) -> Option<(&str, Option<&Value>)> {
    let tools = request.tools.as_deref().unwrap_or_default();
    fn tool(t: &Value) -> Option<(&str, Option<&Value>)> {
        Some((t.get("name")?.as_str()?, t.get("input_schema")))
    }
    let choice = request.tool_choice.as_ref();
    match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
        Some("none") => None,
        Some("tool") => {
            let wanted = choice?.get("name")?.as_str()?;
            tools.iter().filter_map(tool).find(|(name, _)| *name == wanted)
        }
        Some("any") => tools.iter().find_map(tool),
        _ => {
            let after_result = request.messages.last().is_some_and(|m| {
                m.content.as_array().is_some_and(|blocks| {
                    blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                })
            });
            if after_result { None } else { tools.iter().find_map(tool) }
        }
    }
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::StopSequence(_) => "stop_sequence",
        Finish::ToolCall => "tool_use",
    }
}

#[derive(Debug, Clone, Serialize)]
struct Usage {
    input_tokens: usize,
    cache_creation_input_tokens: usize,
    cache_read_input_tokens: usize,
    output_tokens: usize,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: String, name: &'a str, input: Value },
}

#[derive(Serialize)]
struct MessageBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

struct Reply {
    id: String,
    model: String,
    output: Output,
    stop_sequence: Option<String>,
    prompt_tokens: usize,
    cached_tokens: usize,
}

impl Reply {
    fn usage(&self, output_tokens: usize) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens - self.cached_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: self.cached_tokens,
            output_tokens,
        }
    }

    fn message<'a>(&'a self, content: Vec<Block<'a>>, done: bool) -> MessageBody<'a> {
        MessageBody {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content,
            stop_reason: done.then(|| stop_reason(self.output.finish)),
            stop_sequence: if done { self.stop_sequence.as_deref() } else { None },
            usage: self.usage(if done { self.output.tokens.len() } else { 1 }),
        }
    }

    fn tool_id(&self) -> String {
        tool_call_id("toolu_", &self.output)
    }
}

/// `POST /v1/messages`.
pub(crate) async fn messages(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !headers.contains_key("anthropic-version") {
        return Err(bad_request(DIALECT, "anthropic-version: header is required"));
    }
    let (accepted, request) = accept::<MessagesRequest>(&sim, DIALECT, &headers, &body).await?;
    let Some(max_tokens) = request.max_tokens.filter(|m| *m >= 1) else {
        return Err(bad_request(DIALECT, "max_tokens: Field required (at least 1)"));
    };
    if request.messages.is_empty() {
        return Err(bad_request(DIALECT, "messages: at least one message is required"));
    }
    let prompt = build_prompt(&sim, &request);
    let stops = request.stop_sequences.clone().unwrap_or_default();
    let mode = match chosen_tool(&request) {
        Some((name, parameters)) => OutputMode::Tool { name, parameters },
        None => OutputMode::Text,
    };
    let echo = sim.profile().echo.then(|| last_user_text(&request.messages)).flatten();
    let mode = echo_or(&sim, mode, echo.as_deref());
    let spec = OutputSpec { max_tokens: Some(max_tokens), ignore_eos: sim.profile().ignore_eos, stops: &stops, mode };
    let output = generate(sim.profile(), prompt.hash, 0, &spec);
    let stop_sequence = match output.finish {
        Finish::StopSequence(i) => stops.get(i).cloned(),
        _ => None,
    };
    let mut plan = plan_of(std::slice::from_ref(&output), accepted.fault);
    plan.finish_reason = output.finish.openai();
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &prompt, plan.generated).await?;
    let (id, _) = sim.response_ids(admission.index, prompt.hash);
    let reply = Reply {
        id: format!("msg_{id}"),
        model: request.model,
        output,
        stop_sequence,
        prompt_tokens: prompt.tokens,
        cached_tokens: admission.cached_tokens,
    };
    if request.stream.unwrap_or(false) {
        return Ok(stream_response(&sim, admission, MessageStream { reply }, plan, "text/event-stream"));
    }
    sim.generate_unstreamed(&mut admission, &plan).await;
    let block = match reply.output.tool.as_deref() {
        Some(name) => Block::ToolUse {
            id: reply.tool_id(),
            name,
            // A call cut by max_tokens has no complete input: Anthropic then sends what it has.
            input: serde_json::from_str(reply.output.tokens.text())
                .unwrap_or_else(|_| Value::Object(Default::default())),
        },
        None => Block::Text { text: reply.output.tokens.text() },
    };
    Ok(json_value_response(DIALECT, &reply.message(vec![block], true), plan.fault))
}

/// Renders the Messages event stream.
struct MessageStream {
    reply: Reply,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: MessageBody<'a> },
    ContentBlockStart { index: usize, content_block: Block<'a> },
    Ping,
    ContentBlockDelta { index: usize, delta: BlockDelta<'a> },
    ContentBlockStop { index: usize },
    MessageDelta { delta: MessageDelta<'a>, usage: Usage },
    MessageStop,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDelta<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

impl Renderer for MessageStream {
    fn head(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        let reply = &self.reply;
        let start = Event::MessageStart { message: reply.message(Vec::new(), false) };
        push_sse(out, Some("message_start"), &start)?;
        let content_block = match reply.output.tool.as_deref() {
            Some(name) => Block::ToolUse { id: reply.tool_id(), name, input: Value::Object(Default::default()) },
            None => Block::Text { text: "" },
        };
        let block_start = Event::ContentBlockStart { index: 0, content_block };
        push_sse(out, Some("content_block_start"), &block_start)?;
        push_sse(out, Some("ping"), &Event::Ping)
    }

    fn step(&mut self, step: usize, out: &mut Vec<u8>) -> crate::Result<()> {
        let token = self.reply.output.tokens.token(step);
        let delta = if self.reply.output.tool.is_some() {
            BlockDelta::InputJsonDelta { partial_json: token }
        } else {
            BlockDelta::TextDelta { text: token }
        };
        let event = Event::ContentBlockDelta { index: 0, delta };
        push_sse(out, Some("content_block_delta"), &event)
    }

    fn tail(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        let reply = &self.reply;
        push_sse(out, Some("content_block_stop"), &Event::ContentBlockStop { index: 0 })?;
        let delta = Event::MessageDelta {
            delta: MessageDelta {
                stop_reason: stop_reason(reply.output.finish),
                stop_sequence: reply.stop_sequence.as_deref(),
            },
            usage: reply.usage(reply.output.tokens.len()),
        };
        push_sse(out, Some("message_delta"), &delta)?;
        push_sse(out, Some("message_stop"), &Event::MessageStop)
    }

    fn malformed(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\n\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> MessagesRequest {
        serde_json::from_value(value).expect("valid request")
    }

    #[test]
    fn tool_choice_rules() {
        let tools = json!([{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}]);
        let user = json!([{"role": "user", "content": "hi"}]);
        let base = |choice: Value, messages: &Value| {
            request(json!({"model": "m", "max_tokens": 5, "messages": messages, "tools": tools, "tool_choice": choice}))
        };
        let name = |r: &MessagesRequest| chosen_tool(r).map(|(n, _)| n.to_owned());
        assert_eq!(name(&base(Value::Null, &user)).as_deref(), Some("a"));
        assert_eq!(name(&base(json!({"type": "tool", "name": "b"}), &user)).as_deref(), Some("b"));
        assert_eq!(name(&base(json!({"type": "none"}), &user)), None);
        let after =
            json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "22C"}]}]);
        assert_eq!(name(&base(Value::Null, &after)), None);
        assert_eq!(name(&base(json!({"type": "any"}), &after)).as_deref(), Some("a"));
    }
}
