//! An OpenAI chat completion stream turned into Gemini's `streamGenerateContent?alt=sse`
//! stream: one `GenerateContentResponse` per event, text (and thoughts) as they arrive, each
//! tool call as one `functionCall` part once its arguments are whole, and a last event with the
//! `finishReason`s and `usageMetadata` once the usage chunk (or the end) has arrived. Fed the
//! events the gateway's tap passes on, so accounting reads the upstream's own usage.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::response::{finish_reason, function_call, response_id, usage_metadata};
use crate::protocol::completion::EventReader;
use crate::protocol::openai::{Usage, read_usage};

/// A tool call being streamed: its choice, its index there, id, name and arguments so far.
#[derive(Debug)]
struct PendingCall {
    choice: u64,
    index: u64,
    id: String,
    name: String,
    arguments: String,
}

/// Translates one stream.
#[derive(Debug, Default)]
pub struct GeminiStream {
    reader: EventReader,
    response_id: String,
    model: Value,
    calls: Vec<PendingCall>,
    /// Per choice that finished: its index and Gemini's finish reason.
    finished: Vec<(u64, &'static str)>,
    usage: Option<Usage>,
    ended: bool,
}

fn write_event(out: &mut BytesMut, data: &Value) {
    out.put_slice(b"data: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

impl GeminiStream {
    /// A translator for one stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Translates OpenAI events into Gemini ones (possibly none yet).
    pub fn feed(&mut self, bytes: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let mut reader = std::mem::take(&mut self.reader);
        let _ = reader.feed(bytes, |event| {
            self.event(&event.data, &mut out);
            Ok::<(), ()>(())
        });
        self.reader = reader;
        out.freeze()
    }

    /// The upstream's stream ended: the last event, if it was not written yet.
    pub fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        if let Some(rest) = self.reader.rest() {
            self.event(&rest.data, &mut out);
        }
        self.end(&mut out);
        out.freeze()
    }

    /// The stream failed: Google's error object as the last event, unless the answer ended.
    pub fn error(&mut self, body: &Value) -> Bytes {
        if std::mem::replace(&mut self.ended, true) {
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        write_event(&mut out, body);
        out.freeze()
    }

    fn response(&self, candidates: Vec<Value>) -> Value {
        json!({"candidates": candidates, "modelVersion": self.model, "responseId": self.response_id})
    }

    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if data.is_empty() || data == b"[DONE]" || self.ended {
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else { return };
        if self.response_id.is_empty() {
            self.response_id = response_id(chunk.get("id").and_then(Value::as_str));
            self.model = chunk.get("model").cloned().unwrap_or(Value::Null);
        }
        let mut candidates = Vec::new();
        for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let delta = choice.get("delta");
            let text_of = |name| delta.and_then(|d| d.get(name)).and_then(Value::as_str).filter(|t| !t.is_empty());
            let mut parts = Vec::new();
            if let Some(thought) = text_of("reasoning_content") {
                parts.push(json!({"text": thought, "thought": true}));
            }
            if let Some(text) = text_of("content") {
                parts.push(json!({"text": text}));
            }
            if !parts.is_empty() {
                candidates.push(json!({"content": {"role": "model", "parts": parts}, "index": index}));
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                self.tool_call(index, call);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finished.push((index, finish_reason(reason)));
            }
        }
        if !candidates.is_empty() {
            write_event(out, &self.response(candidates));
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            self.usage = read_usage(data);
            self.end(out);
        }
    }

    fn tool_call(&mut self, choice: u64, call: &Value) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let field = |name| function.and_then(|f| f.get(name)).and_then(Value::as_str).unwrap_or_default();
        let arguments = field("arguments");
        match self.calls.iter_mut().find(|c| c.choice == choice && c.index == index) {
            Some(pending) => pending.arguments.push_str(arguments),
            None => self.calls.push(PendingCall {
                choice,
                index,
                id: call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                name: field("name").to_owned(),
                arguments: arguments.to_owned(),
            }),
        }
    }

    /// The last event: every choice's whole tool calls and finish reason, and the usage.
    fn end(&mut self, out: &mut BytesMut) {
        if self.response_id.is_empty() || std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut choices: Vec<u64> =
            self.finished.iter().map(|(i, _)| *i).chain(self.calls.iter().map(|c| c.choice)).collect();
        choices.sort_unstable();
        choices.dedup();
        if choices.is_empty() {
            choices.push(0);
        }
        let candidates = choices
            .into_iter()
            .map(|index| {
                let parts: Vec<Value> = self
                    .calls
                    .iter()
                    .filter(|c| c.choice == index)
                    .map(|c| function_call(&c.id, &c.name, &c.arguments))
                    .collect();
                let reason = self.finished.iter().find(|(i, _)| *i == index).map_or("STOP", |(_, r)| r);
                let mut candidate = json!({"finishReason": reason, "index": index});
                candidate["content"] =
                    json!({"role": "model", "parts": if parts.is_empty() { vec![json!({"text": ""})] } else { parts }});
                candidate
            })
            .collect();
        let mut last = self.response(candidates);
        if let Some(usage) = &self.usage {
            last["usageMetadata"] = usage_metadata(usage);
        }
        write_event(out, &last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::golden::sse_data;

    const CHUNKS: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn chunks_become_responses_with_calls_and_usage_last() {
        let mut stream = GeminiStream::new();
        let mut out = Vec::new();
        // Split mid-event, as frames arrive.
        let (a, b) = CHUNKS.split_at(150);
        out.extend_from_slice(&stream.feed(a.as_bytes()));
        out.extend_from_slice(&stream.feed(b.as_bytes()));
        out.extend_from_slice(&stream.finish());
        let events = sse_data(&out);
        assert_eq!(
            events,
            [
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
                    "modelVersion": "up", "responseId": "1"}),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}}]},
                    "finishReason": "STOP", "index": 0}], "modelVersion": "up", "responseId": "1",
                    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}}),
            ]
        );
        assert!(stream.error(&json!({"error": {}})).is_empty(), "no error after the end");
    }

    #[test]
    fn a_stream_cut_short_ends_with_an_error_event() {
        let mut stream = GeminiStream::new();
        let first = CHUNKS.split("\n\n").take(2).map(|e| format!("{e}\n\n")).collect::<String>();
        let _ = stream.feed(first.as_bytes());
        let error = stream.error(&json!({"error": {"code": 504, "message": "late", "status": "DEADLINE_EXCEEDED"}}));
        assert_eq!(sse_data(&error)[0]["error"]["status"], "DEADLINE_EXCEEDED");
        assert!(stream.finish().is_empty());
    }
}
