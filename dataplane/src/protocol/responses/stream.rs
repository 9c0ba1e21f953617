//! A chat completion stream turned into the Responses API's event stream: `response.created`
//! and `response.in_progress` first; a `message` item (`output_item.added`,
//! `content_part.added`, `output_text.delta`... and their `.done` events) for the text; a
//! `function_call` item (`function_call_arguments.delta` and `.done`) for each tool call; and
//! `response.completed` (or `response.incomplete`) with usage once the usage chunk or the end
//! has arrived. Every event is numbered (`sequence_number`).

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::{Echo, function_call_item, message_item, object, output_text, response_id, status_of, usage_json};
use crate::protocol::completion::EventReader;
use crate::protocol::openai::{Usage, read_usage};

/// One output item being streamed.
#[derive(Debug)]
enum Item {
    Message { id: String, text: String },
    Call { index: u64, call_id: String, name: String, arguments: String },
}

/// Translates one stream.
#[derive(Debug)]
pub struct ResponsesStream {
    reader: EventReader,
    echo: Echo,
    created_at: i64,
    id: String,
    model: Value,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    /// Whether the last item is still open.
    open: bool,
    finish_reason: Option<String>,
    usage: Option<(Usage, u64)>,
    ended: bool,
}

impl ResponsesStream {
    /// A translator for a request with `echo`, answered at `created_at` (Unix seconds).
    pub fn new(echo: Echo, created_at: i64) -> Self {
        Self {
            reader: EventReader::default(),
            echo,
            created_at,
            id: String::new(),
            model: Value::Null,
            sequence: 0,
            started: false,
            items: Vec::new(),
            open: false,
            finish_reason: None,
            usage: None,
            ended: false,
        }
    }

    fn write(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    /// Translates chat completion chunks into Responses events (possibly none yet).
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

    /// The upstream's stream ended: the closing events, if not written yet.
    pub fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        if let Some(rest) = self.reader.rest() {
            self.event(&rest.data, &mut out);
        }
        self.complete(&mut out);
        out.freeze()
    }

    /// The stream failed: an `error` event with OpenAI's `code` and message, unless the
    /// response had completed.
    pub fn error(&mut self, code: &str, message: &str) -> Bytes {
        if std::mem::replace(&mut self.ended, true) {
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        self.write(&mut out, "error", json!({"code": code, "message": message, "param": null}));
        out.freeze()
    }

    fn snapshot(&self, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
        object(&self.id, self.created_at, &self.model, status, output, usage, &self.echo)
    }

    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if data.is_empty() || data == b"[DONE]" || self.ended {
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else { return };
        if !std::mem::replace(&mut self.started, true) {
            self.id = response_id(chunk.get("id").and_then(Value::as_str));
            self.model = chunk.get("model").cloned().unwrap_or(Value::Null);
            let response = self.snapshot("in_progress", Vec::new(), None);
            self.write(out, "response.created", json!({"response": response}));
            self.write(out, "response.in_progress", json!({"response": response}));
        }
        // Only the first choice: a response has one output.
        if let Some(choice) =
            chunk.get("choices").and_then(|c| c.get(0)).filter(|c| c["index"].as_u64().unwrap_or(0) == 0)
        {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text(text, out);
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                self.tool_call(call, out);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        if chunk.get("usage").is_some_and(|u| !u.is_null())
            && let Some(usage) = read_usage(data)
        {
            let reasoning = chunk["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap_or(0);
            self.usage = Some((usage, reasoning));
            self.complete(out);
        }
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        if !matches!(self.items.last(), Some(Item::Message { .. }) if self.open) {
            self.close(out);
            let id = format!("msg_{}", self.id.strip_prefix("resp_").unwrap_or(&self.id));
            let output_index = self.items.len();
            self.write(
                out,
                "response.output_item.added",
                json!({"output_index": output_index,
                "item": message_item(&id, None, "in_progress")}),
            );
            self.write(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index,
                "content_index": 0, "part": output_text("")}),
            );
            self.items.push(Item::Message { id, text: String::new() });
            self.open = true;
        }
        let output_index = self.items.len() - 1;
        if let Some(Item::Message { id, text: so_far }) = self.items.last_mut() {
            so_far.push_str(text);
            let id = id.clone();
            self.write(
                out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": output_index,
                "content_index": 0, "delta": text, "logprobs": []}),
            );
        }
    }

    fn tool_call(&mut self, call: &Value, out: &mut BytesMut) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        let known = self.open && matches!(self.items.last(), Some(Item::Call { index: i, .. }) if *i == index);
        if !known {
            self.close(out);
            let call_id = call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default().to_owned();
            let output_index = self.items.len();
            self.write(
                out,
                "response.output_item.added",
                json!({"output_index": output_index,
                "item": function_call_item(&call_id, &name, "", "in_progress")}),
            );
            self.items.push(Item::Call { index, call_id, name, arguments: String::new() });
            self.open = true;
        }
        let output_index = self.items.len() - 1;
        if let Some(Item::Call { call_id, arguments: so_far, .. }) = self.items.last_mut()
            && !arguments.is_empty()
        {
            so_far.push_str(arguments);
            let item_id = format!("fc_{call_id}");
            self.write(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": item_id,
                "output_index": output_index, "delta": arguments}),
            );
        }
    }

    /// The item as it ended.
    fn done_item(item: &Item) -> Value {
        match item {
            Item::Message { id, text } => message_item(id, Some(text), "completed"),
            Item::Call { call_id, name, arguments, .. } => function_call_item(call_id, name, arguments, "completed"),
        }
    }

    /// Ends the open item with its `.done` events.
    fn close(&mut self, out: &mut BytesMut) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        let Some(item) = self.items.last() else { return };
        let output_index = self.items.len() - 1;
        let done = Self::done_item(item);
        match item {
            Item::Message { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                self.write(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": output_index,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                self.write(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index,
                    "content_index": 0, "part": output_text(&text)}),
                );
            }
            Item::Call { call_id, name, arguments, .. } => {
                let data = json!({"item_id": format!("fc_{call_id}"), "output_index": output_index,
                    "name": name, "arguments": arguments});
                self.write(out, "response.function_call_arguments.done", data);
            }
        }
        self.write(out, "response.output_item.done", json!({"output_index": output_index, "item": done}));
    }

    /// Closes the last item and writes `response.completed` (or `.incomplete`), once.
    fn complete(&mut self, out: &mut BytesMut) {
        if !self.started || self.ended {
            return;
        }
        self.close(out);
        self.ended = true;
        let status = status_of(self.finish_reason.as_deref());
        let output = self.items.iter().map(Self::done_item).collect();
        let usage = self.usage.as_ref().map(|(usage, reasoning)| usage_json(usage, *reasoning));
        let response = self.snapshot(status, output, usage);
        let kind = if status == "incomplete" { "response.incomplete" } else { "response.completed" };
        self.write(out, kind, json!({"response": response}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKS: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(bytes).expect("utf8");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let name = e.lines().find_map(|l| l.strip_prefix("event: ")).expect("name");
                let data = e.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
                (name.to_owned(), serde_json::from_str(data).expect("json"))
            })
            .collect()
    }

    #[test]
    fn chunks_become_numbered_responses_events() {
        let mut stream = ResponsesStream::new(Echo::default(), 3);
        let mut out = Vec::new();
        let (a, b) = CHUNKS.split_at(200);
        out.extend_from_slice(&stream.feed(a.as_bytes()));
        out.extend_from_slice(&stream.feed(b.as_bytes()));
        out.extend_from_slice(&stream.finish());
        let events = events(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (n, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], n);
        }
        assert_eq!(events[6].1["text"], "Hello");
        assert_eq!(events[12].1["arguments"], "{\"a\":1}");
        let completed = &events[14].1["response"];
        assert_eq!(completed["id"], "resp_1");
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["usage"]["input_tokens"], 5);
        assert_eq!(completed["usage"]["output_tokens"], 3);
        assert_eq!(completed["output"][1]["call_id"], "call_1");
        assert!(stream.error("x", "y").is_empty(), "no error after completion");
    }

    #[test]
    fn a_stream_cut_short_ends_with_an_error_event() {
        let mut stream = ResponsesStream::new(Echo::default(), 3);
        let first: String = CHUNKS.split_inclusive("\n\n").take(2).collect();
        let _ = stream.feed(first.as_bytes());
        let error = events(&stream.error("stream_idle_timeout", "late"));
        assert_eq!(error[0].0, "error");
        assert_eq!(error[0].1["code"], "stream_idle_timeout");
        assert!(stream.finish().is_empty());
    }
}
