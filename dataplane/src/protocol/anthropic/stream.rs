//! An OpenAI chat completion stream turned into Anthropic's Messages stream, event by event:
//! `message_start` and `ping` on the first chunk, a `content_block_start` ... `content_block_stop`
//! run for the text and for each tool call (`text_delta`, `input_json_delta`), and, once the
//! usage chunk or the end has arrived, `message_delta` (stop reason and usage) and
//! `message_stop`. Fed the events the gateway's tap passes on, so accounting reads the upstream's
//! own usage while the client gets Anthropic's.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::response::{message_id, stop_reason, usage};
use crate::protocol::openai::{Usage, read_usage};

/// What the open content block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, by its index in OpenAI's `tool_calls`.
    Tool(u64),
}

/// Translates one stream. Its input must be whole SSE events, as the tap passes them on.
#[derive(Debug)]
pub struct StreamTranslator {
    partial: Vec<u8>,
    stop_sequences: Vec<String>,
    estimated_input_tokens: u64,
    started: bool,
    /// The open block and its index.
    open: Option<(Block, usize)>,
    next_index: usize,
    /// OpenAI tool call index -> content block index.
    tools: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    usage: Option<Usage>,
    ended: bool,
}

/// One Anthropic SSE event.
fn write_event(out: &mut BytesMut, name: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// The `error` event that ends a stream that failed, with an Anthropic error `kind`.
pub fn error_event(kind: &str, message: &str) -> Bytes {
    let mut out = BytesMut::new();
    write_event(&mut out, "error", &super::error::body(kind, message));
    out.freeze()
}

impl StreamTranslator {
    /// A translator for a request with `stop_sequences`, whose prompt the gateway estimated at
    /// `estimated_input_tokens` (reported in `message_start`, before the real count is known;
    /// `message_delta` carries the real one).
    pub fn new(stop_sequences: Vec<String>, estimated_input_tokens: u64) -> Self {
        Self {
            partial: Vec::new(),
            stop_sequences,
            estimated_input_tokens,
            started: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish_reason: None,
            matched_stop: None,
            usage: None,
            ended: false,
        }
    }

    /// Translates OpenAI events into Anthropic ones (possibly none yet).
    pub fn feed(&mut self, bytes: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        self.partial.extend_from_slice(bytes);
        let input = std::mem::take(&mut self.partial);
        let mut at = 0;
        while let Some(len) = event_len(&input[at..]) {
            self.event(&input[at..at + len], &mut out);
            at += len;
        }
        self.partial = input[at..].to_vec();
        out.freeze()
    }

    /// The upstream's stream ended: whatever is left, and the end of the message if it was not
    /// written yet.
    pub fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        let rest = std::mem::take(&mut self.partial);
        if !rest.is_empty() {
            self.event(&rest, &mut out);
        }
        self.end(&mut out);
        out.freeze()
    }

    /// The stream failed: the error event, unless the message already ended.
    pub fn error(&mut self, kind: &str, message: &str) -> Bytes {
        if std::mem::replace(&mut self.ended, true) {
            return Bytes::new();
        }
        error_event(kind, message)
    }

    fn event(&mut self, bytes: &[u8], out: &mut BytesMut) {
        let mut data = Vec::new();
        for line in bytes.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(value) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            }
        }
        if data.is_empty() || self.ended {
            return;
        }
        if data == b"[DONE]" {
            self.end(out);
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(&data) else { return };
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("The upstream stream failed.");
            out.put_slice(&self.error("api_error", message));
            return;
        }
        if chunk.get("usage").is_some_and(Value::is_object)
            && let Some(usage) = read_usage(&data)
        {
            self.usage = Some(usage);
        }
        self.start(&chunk, out);
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else { return };
        let delta = choice.get("delta");
        if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let index = self.open_block(Block::Text, out, |_| json!({"type": "text", "text": ""}));
            write_event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
            self.tool_call(call, out);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            self.matched_stop = choice.get("stop_reason").and_then(Value::as_str).map(str::to_owned);
            self.close_block(out);
        }
    }

    /// `message_start` and a `ping`, once.
    fn start(&mut self, chunk: &Value, out: &mut BytesMut) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let message = json!({
            "id": message_id(chunk.get("id").and_then(Value::as_str)),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model").cloned().unwrap_or(Value::Null),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": self.estimated_input_tokens, "output_tokens": 0},
        });
        write_event(out, "message_start", &json!({"type": "message_start", "message": message}));
        write_event(out, "ping", &json!({"type": "ping"}));
    }

    fn tool_call(&mut self, call: &Value, out: &mut BytesMut) {
        let openai_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let known = self.tools.iter().find(|(i, _)| *i == openai_index).map(|(_, block)| *block);
        let index = match known {
            Some(block) => block,
            None => {
                let id = call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default().to_owned();
                let index = self.open_block(
                    Block::Tool(openai_index),
                    out,
                    |_| json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.tools.push((openai_index, index));
                index
            }
        };
        if let Some(arguments) =
            function.and_then(|f| f.get("arguments")).and_then(Value::as_str).filter(|a| !a.is_empty())
        {
            write_event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            );
        }
    }

    /// The index of the open block of `kind`, opening it (and closing another) if needed.
    fn open_block(&mut self, kind: Block, out: &mut BytesMut, block: impl FnOnce(usize) -> Value) -> usize {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
            "content_block": block(index)}),
        );
        index
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            write_event(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
        }
    }

    /// `message_delta` with the stop reason and the real usage, and `message_stop`.
    fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(&Value::Null, out);
        self.close_block(out);
        self.ended = true;
        let (reason, sequence) = stop_reason(
            self.finish_reason.as_deref(),
            self.matched_stop.as_deref(),
            &self.stop_sequences,
            !self.tools.is_empty(),
        );
        let usage = match &self.usage {
            Some(counts) => usage(counts),
            None => json!({"output_tokens": 0}),
        };
        write_event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage}),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

/// The length of the first whole event in `bytes`, its blank line included.
fn event_len(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes).find_map(|i| match bytes.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if bytes.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::anthropic::response::tool_input;

    /// Every event's name and data.
    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(bytes).expect("utf8");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').expect("two lines");
                let name = name.strip_prefix("event: ").expect("event line").to_owned();
                let data = serde_json::from_str(data.strip_prefix("data: ").expect("data line")).expect("json");
                (name, data)
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-7", "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    }

    const USAGE: &str =
        "data: {\"id\":\"chatcmpl-7\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n";

    #[test]
    fn text_streams_become_message_events() {
        let mut translator = StreamTranslator::new(Vec::new(), 20);
        let mut out = Vec::new();
        for frame in [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hel"}), None),
            chunk(json!({"content": "lo"}), None),
            chunk(json!({}), Some("length")),
            USAGE.to_owned(),
            "data: [DONE]\n\n".to_owned(),
        ] {
            out.extend_from_slice(&translator.feed(frame.as_bytes()));
        }
        out.extend_from_slice(&translator.finish());
        let events = events(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_7");
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 20);
        assert_eq!(events[2].1["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(events[4].1["delta"], json!({"type": "text_delta", "text": "lo"}));
        assert_eq!(
            events[6].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                "usage": {"input_tokens": 9, "output_tokens": 4}})
        );
        assert_eq!(events[0].0, events[0].1["type"]);
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_with_json_deltas() {
        let mut translator = StreamTranslator::new(Vec::new(), 1);
        let call = |delta: Value| chunk(json!({"tool_calls": [delta]}), None);
        let frames = [
            chunk(json!({"content": "Checking."}), None),
            call(json!({"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}})),
            call(json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
            call(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})),
            call(json!({"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "{}"}})),
            chunk(json!({}), Some("tool_calls")),
        ]
        .concat();
        let mut out = translator.feed(frames.as_bytes()).to_vec();
        out.extend_from_slice(&translator.finish());
        let events = events(&out);
        let starts: Vec<&Value> =
            events.iter().filter(|(n, _)| n == "content_block_start").map(|(_, d)| &d["content_block"]).collect();
        assert_eq!(
            starts,
            [
                &json!({"type": "text", "text": ""}),
                &json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
                &json!({"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}})
            ]
        );
        let json: String = events
            .iter()
            .filter(|(_, d)| d["index"] == 1 && d["delta"]["type"] == "input_json_delta")
            .map(|(_, d)| d["delta"]["partial_json"].as_str().expect("text").to_owned())
            .collect();
        assert_eq!(tool_input(&json), json!({"city": "Paris"}));
        let stops: Vec<&Value> =
            events.iter().filter(|(n, _)| n == "content_block_stop").map(|(_, d)| &d["index"]).collect();
        assert_eq!(stops, [&json!(0), &json!(1), &json!(2)]);
        let delta = &events.iter().find(|(n, _)| n == "message_delta").expect("message_delta").1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"], json!({"output_tokens": 0}), "no usage chunk: none reported");
    }

    #[test]
    fn split_events_wait_and_errors_end_the_stream() {
        let mut translator = StreamTranslator::new(vec!["END".into()], 1);
        let whole = chunk(json!({"content": "x"}), None);
        let (a, b) = whole.split_at(10);
        assert!(translator.feed(a.as_bytes()).is_empty());
        assert!(!translator.feed(b.as_bytes()).is_empty());
        let error = translator.feed(b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n");
        assert_eq!(
            events(&error),
            [("error".to_owned(), json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}))]
        );
        assert!(translator.finish().is_empty(), "nothing after the error");
        assert!(translator.error("api_error", "again").is_empty());
    }

    #[test]
    fn a_matched_stop_sequence_is_reported() {
        let mut translator = StreamTranslator::new(vec!["END".into()], 1);
        let finish =
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]});
        let mut out = translator.feed(format!("data: {finish}\n\n").as_bytes()).to_vec();
        out.extend_from_slice(&translator.finish());
        let delta = events(&out).into_iter().find(|(n, _)| n == "message_delta").expect("message_delta").1;
        assert_eq!(delta["delta"], json!({"stop_reason": "stop_sequence", "stop_sequence": "END"}));
    }
}
