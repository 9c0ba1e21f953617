//! OpenAI chat completions written by the gateway, for upstreams that speak another format
//! (Anthropic, Gemini): the whole body's `usage`, stream chunks, the usage chunk and `[DONE]`,
//! error bodies; and the reader of an upstream's server-sent events that their stream
//! translators share. Only translated answers come through here: an OpenAI upstream's bytes
//! never do.

use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};

use super::openai::Usage;

/// A stream translator from an upstream's own events to OpenAI chat completion chunks. Fed the
/// upstream's bytes as they arrive; an `Err` means the stream failed (the upstream sent an error
/// event, or ended before its end), with a message for the gateway's log.
pub trait ToOpenAiStream: Send {
    /// Translates the next bytes (whole events or not) into OpenAI chunks (possibly none yet),
    /// written to `out` even when a later event fails.
    fn feed(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), String>;
    /// The upstream's stream ended: the last chunks (the usage chunk and `[DONE]`), or `Err` if
    /// it ended before its answer did (an unterminated last event is read if it is whole).
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), String>;
}

/// OpenAI's `usage` object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

/// An OpenAI error body for an upstream's error, `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string().into_bytes()
}

/// Writes the chunks of one translated stream, all with the same `id`, `created` and `model`.
#[derive(Debug, Default)]
pub struct ChunkWriter {
    /// `chatcmpl-...`.
    pub id: String,
    /// The upstream's model name.
    pub model: String,
    /// Unix seconds.
    pub created: i64,
}

impl ChunkWriter {
    fn event(out: &mut BytesMut, value: &Value) {
        out.put_slice(b"data: ");
        out.put_slice(value.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    /// One chunk with choice `index`'s `delta` (and its finish reason).
    pub fn chunk(&self, out: &mut BytesMut, index: u64, delta: Value, finish_reason: Option<&str>) {
        let value = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        Self::event(out, &value);
    }

    /// The chunk that ends choice `index`: an empty delta and the finish reason, with the stop
    /// sequence that matched as `stop_reason` (where vLLM says it) when known.
    pub fn finish_chunk(&self, out: &mut BytesMut, index: u64, finish_reason: &str, stop_sequence: Option<&str>) {
        let mut value = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason}],
        });
        if let Some(sequence) = stop_sequence {
            value["choices"][0]["stop_reason"] = json!(sequence);
        }
        Self::event(out, &value);
    }

    /// The usage chunk (`"choices":[]`, which the gateway keeps from clients that did not ask
    /// for it) and `[DONE]`.
    pub fn end(&self, out: &mut BytesMut, usage: Option<&Usage>) {
        if let Some(usage) = usage {
            let value = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage_json(usage),
            });
            Self::event(out, &value);
        }
        out.put_slice(b"data: [DONE]\n\n");
    }
}

/// Splits an upstream's server-sent events as they arrive: whole events only, each as its
/// `event:` name (if any) and its `data:` lines joined.
#[derive(Debug, Default)]
pub struct EventReader {
    partial: Vec<u8>,
}

/// One server-sent event.
pub struct Event<'a> {
    /// Its `event:` field.
    pub name: Option<&'a [u8]>,
    /// Its `data:` lines, joined by newlines.
    pub data: Vec<u8>,
}

impl EventReader {
    /// Calls `each` with every whole event in what has arrived so far, stopping at its first
    /// error.
    pub fn feed<E>(&mut self, bytes: &[u8], mut each: impl FnMut(Event<'_>) -> Result<(), E>) -> Result<(), E> {
        self.partial.extend_from_slice(bytes);
        let input = std::mem::take(&mut self.partial);
        let mut at = 0;
        let mut result = Ok(());
        while let Some(len) = event_len(&input[at..]) {
            result = each(parse(&input[at..at + len]));
            at += len;
            if result.is_err() {
                break;
            }
        }
        self.partial = input[at..].to_vec();
        result
    }

    /// The bytes of an unterminated last event, when the stream ended.
    pub fn rest(&mut self) -> Option<Event<'static>> {
        let rest = std::mem::take(&mut self.partial);
        let event = parse(&rest);
        (!event.data.is_empty()).then_some(Event { name: None, data: event.data })
    }
}

fn parse(bytes: &[u8]) -> Event<'_> {
    let mut name = None;
    let mut data = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        } else if let Some(value) = line.strip_prefix(b"event:") {
            name = Some(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    Event { name, data }
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

    #[test]
    fn events_are_split_whole_with_their_names() {
        let mut reader = EventReader::default();
        let mut seen = Vec::new();
        {
            let mut collect = |e: Event<'_>| -> Result<(), ()> {
                let name = e.name.map(|n| String::from_utf8_lossy(n).into_owned());
                seen.push((name, String::from_utf8_lossy(&e.data).into_owned()));
                Ok(())
            };
            reader.feed(b"event: a\ndata: {\"x\":1}\n\ndata: {\"y\"", &mut collect).expect("ok");
            reader.feed(b":2}\r\n\r\n", &mut collect).expect("ok");
            reader.feed(b"data: tail", &mut collect).expect("ok");
        }
        assert_eq!(seen, [(Some("a".to_owned()), "{\"x\":1}".to_owned()), (None, "{\"y\":2}".to_owned())]);
        assert_eq!(reader.rest().map(|e| e.data), Some(b"tail".to_vec()));
    }

    #[test]
    fn chunks_and_the_end_are_openai_events() {
        let writer = ChunkWriter { id: "chatcmpl-1".into(), model: "m".into(), created: 5 };
        let mut out = BytesMut::new();
        writer.chunk(&mut out, 0, json!({"content": "hi"}), None);
        writer.end(&mut out, Some(&Usage { prompt_tokens: 3, completion_tokens: 2, cached_tokens: 1 }));
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3);
        let usage: Value = serde_json::from_str(events[1].strip_prefix("data: ").expect("data")).expect("json");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert!(text.contains("\"choices\":[]"), "the tap recognises the usage chunk by these bytes");
        assert_eq!(events[2], "data: [DONE]");
    }
}
