//! Gemini's `GenerateContentResponse` turned into an OpenAI chat completion, and its SSE stream
//! (`alt=sse`, one response per event) into chat completion chunks: candidates into choices,
//! text parts into content (thought parts into `reasoning_content`), `functionCall` parts into
//! tool calls, `finishReason` into `finish_reason`, `usageMetadata` into `usage`.

use bytes::BytesMut;
use serde_json::{Value, json};

use super::finish_reason;
use crate::protocol::completion::{ChunkWriter, EventReader, ToOpenAiStream, usage_json};
use crate::protocol::openai::Usage;

/// OpenAI's usage from `usageMetadata`: thinking tokens are output tokens (Google bills them
/// so); cached content tokens are part of the prompt.
pub fn usage(metadata: &Value) -> Usage {
    let count = |name: &str| metadata.get(name).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: count("promptTokenCount"),
        completion_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
        cached_tokens: count("cachedContentTokenCount"),
    }
}

fn completion_id(response: &Value) -> String {
    format!("chatcmpl-{}", response.get("responseId").and_then(Value::as_str).unwrap_or("gemini"))
}

/// A tool call id for a `functionCall` part: Gemini's own when it gives one, else made from the
/// response id, the candidate and the call's position (unique within the conversation as far
/// as the upstream's response ids are).
fn call_id(part: &Value, response_id: &str, candidate: u64, position: usize) -> Value {
    match part.get("id").and_then(Value::as_str) {
        Some(id) => json!(id),
        None => json!(format!("call_{response_id}_{candidate}_{position}")),
    }
}

/// A candidate's parts: its text, its thoughts and its function calls as OpenAI tool calls
/// (`index` set for stream deltas from `first_tool`).
struct Parts {
    text: String,
    thoughts: String,
    calls: Vec<Value>,
}

fn parts(candidate: &Value, response_id: &str, index: u64, first_tool: usize) -> Parts {
    let mut out = Parts { text: String::new(), thoughts: String::new(), calls: Vec::new() };
    let parts = candidate.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought") == Some(&Value::Bool(true)) {
                out.thoughts.push_str(text);
            } else {
                out.text.push_str(text);
            }
        } else if let Some(call) = part.get("functionCall") {
            let position = first_tool + out.calls.len();
            out.calls.push(json!({
                "index": position,
                "id": call_id(call, response_id, index, position),
                "type": "function",
                "function": {
                    "name": call.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": call.get("args").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            }));
        }
    }
    out
}

/// Translates a `GenerateContentResponse` body into a chat completion body made at `created`
/// (Unix seconds). `None` when the body is not such a response.
pub fn completion_from_response(body: &[u8], created: i64) -> Option<Vec<u8>> {
    let response: Value = serde_json::from_slice(body).ok()?;
    let response_id = response.get("responseId").and_then(Value::as_str).unwrap_or("gemini");
    let candidates = response.get("candidates").and_then(Value::as_array);
    let mut choices = Vec::new();
    for (position, candidate) in candidates.into_iter().flatten().enumerate() {
        let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        let Parts { text, thoughts, mut calls } = parts(candidate, response_id, index, 0);
        for call in &mut calls {
            if let Some(call) = call.as_object_mut() {
                call.remove("index");
            }
        }
        let reason = candidate.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
        let finish = finish_reason(reason, !calls.is_empty());
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
        });
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        if !thoughts.is_empty() {
            message["reasoning_content"] = Value::String(thoughts);
        }
        choices.push(json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish}));
    }
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`): no candidates.
        response.get("promptFeedback").or(response.get("usageMetadata"))?;
        choices.push(json!({"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": null,
            "finish_reason": "content_filter"}));
    }
    let usage = usage(response.get("usageMetadata").unwrap_or(&Value::Null));
    let out = json!({
        "id": completion_id(&response),
        "object": "chat.completion",
        "created": created,
        "model": response.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": choices,
        "usage": usage_json(&usage),
    });
    serde_json::to_vec(&out).ok()
}

/// Translates a `streamGenerateContent?alt=sse` stream into chat completion chunks. Usage is
/// the last `usageMetadata` seen; the usage chunk and `[DONE]` are written when the upstream's
/// stream ends after a finish reason.
#[derive(Debug, Default)]
pub struct ChunksFromGemini {
    reader: EventReader,
    writer: ChunkWriter,
    started: bool,
    /// Per candidate index: whether its role was sent, and its tool calls so far.
    candidates: Vec<(u64, usize)>,
    finished: bool,
    usage: Option<Usage>,
}

impl ChunksFromGemini {
    /// A translator whose chunks say they were made at `created` (Unix seconds).
    pub fn new(created: i64) -> Self {
        Self { writer: ChunkWriter { created, ..ChunkWriter::default() }, ..Self::default() }
    }

    fn event(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        let Ok(response) = serde_json::from_slice::<Value>(data) else {
            // Its length only: the data may be completion text, and this message reaches the
            // client's error event and the logs.
            return Err(format!("the upstream sent an event that is not JSON ({} bytes)", data.len()));
        };
        if let Some(error) = response.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
            return Err(format!("the upstream's stream failed: {message}"));
        }
        if !self.started {
            self.started = true;
            self.writer.id = completion_id(&response);
            self.writer.model = response.get("modelVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
        }
        if let Some(metadata) = response.get("usageMetadata") {
            self.usage = Some(usage(metadata));
        }
        let response_id = response.get("responseId").and_then(Value::as_str).unwrap_or("gemini");
        let candidates = response.get("candidates").and_then(Value::as_array);
        for (position, candidate) in candidates.into_iter().flatten().enumerate() {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            let slot = match self.candidates.iter().position(|(i, _)| *i == index) {
                Some(slot) => slot,
                None => {
                    self.candidates.push((index, 0));
                    self.writer.chunk(out, index, json!({"role": "assistant", "content": ""}), None);
                    self.candidates.len() - 1
                }
            };
            let Parts { text, thoughts, calls } = parts(candidate, response_id, index, self.candidates[slot].1);
            if !thoughts.is_empty() {
                self.writer.chunk(out, index, json!({"reasoning_content": thoughts}), None);
            }
            if !text.is_empty() {
                self.writer.chunk(out, index, json!({"content": text}), None);
            }
            if !calls.is_empty() {
                self.candidates[slot].1 += calls.len();
                self.writer.chunk(out, index, json!({"tool_calls": calls}), None);
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                self.finished = true;
                self.writer.finish_chunk(out, index, finish_reason(reason, self.candidates[slot].1 > 0), None);
            }
        }
        if response.get("promptFeedback").and_then(|f| f.get("blockReason")).is_some() && self.candidates.is_empty() {
            self.finished = true;
            self.writer.chunk(out, 0, json!({"role": "assistant", "content": ""}), None);
            self.writer.finish_chunk(out, 0, "content_filter", None);
        }
        Ok(())
    }
}

impl ToOpenAiStream for ChunksFromGemini {
    fn feed(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let mut reader = std::mem::take(&mut self.reader);
        let result = reader.feed(bytes, |event| self.event(&event.data, out));
        self.reader = reader;
        result
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), String> {
        if let Some(rest) = self.reader.rest() {
            // A last event cut in its middle is no event.
            let _ = self.event(&rest.data, out);
        }
        if !self.finished {
            return Err("the upstream's stream ended before a finish reason".into());
        }
        self.writer.end(out, self.usage.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
