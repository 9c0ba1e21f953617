//! Putting redacted originals back into an answer: in a whole chat completion (or text
//! completion), and in a stream, where a placeholder may arrive split over several events. A
//! stream holds back only the end of a delta that could still become a placeholder of this
//! request (from its last `[`), sends everything before it at once, and sends what it held
//! when the next delta shows it is not one, when the choice finishes, or when the stream ends.
//! The originals live in the request's memory only, and nothing here prints them.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use serde_json::Value;

use crate::accounting::CutShort;
use crate::respond::body::ClientStream;

/// The originals behind one request's placeholders.
pub struct Restore {
    originals: BTreeMap<String, String>,
    /// Bytes of the longest placeholder.
    longest: usize,
}

impl std::fmt::Debug for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restore").field("placeholders", &self.originals.len()).finish_non_exhaustive()
    }
}

impl Restore {
    /// The restore of `(placeholder, original)` pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let longest = pairs.iter().map(|(placeholder, _)| placeholder.len()).max().unwrap_or(0);
        Self { originals: pairs.into_iter().collect(), longest }
    }

    /// Whether there is nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// `text` with each of this request's placeholders replaced by its original.
    pub fn text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for open in memchr::memchr_iter(b'[', text.as_bytes()) {
            if open < at {
                continue;
            }
            let window = &text.as_bytes()[open..text.len().min(open + self.longest)];
            let Some(close) = memchr::memchr(b']', window) else { continue };
            if let Some(original) = self.originals.get(&text[open..=open + close]) {
                out.push_str(&text[at..open]);
                out.push_str(original);
                at = open + close + 1;
            }
        }
        out.push_str(&text[at..]);
        out
    }

    /// Where the end of `text` that could still become a placeholder begins: its last `[`, when
    /// what follows is the start of one of this request's placeholders but not all of it.
    fn partial_from(&self, text: &str) -> Option<usize> {
        let open = memchr::memrchr(b'[', text.as_bytes())?;
        let tail = &text[open..];
        if tail.len() >= self.longest {
            return None;
        }
        let next = self.originals.range::<str, _>((Bound::Included(tail), Bound::Unbounded)).next()?;
        (next.0.starts_with(tail) && next.0 != tail).then_some(open)
    }

    /// A whole answer (a chat completion or a text completion) with the originals back in its
    /// choices' text; `None` when nothing changed or it is not such an answer.
    pub fn whole(&self, body: &[u8]) -> Option<Bytes> {
        let mut answer: Value = serde_json::from_slice(body).ok()?;
        let mut changed = false;
        for choice in answer.get_mut("choices")?.as_array_mut()? {
            let text = match choice.get_mut("message") {
                Some(message) => message.get_mut("content"),
                None => choice.get_mut("text"),
            };
            if let Some(Value::String(text)) = text {
                let restored = self.text(text);
                if restored != *text {
                    *text = restored;
                    changed = true;
                }
            }
        }
        changed.then(|| Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())).filter(|b| !b.is_empty())
    }
}

/// One text restored delta by delta.
#[derive(Default)]
pub struct TextStream {
    /// Held back: could still be the start of a placeholder.
    held: String,
}

impl TextStream {
    /// What of `delta` (after what was held) can be sent now, restored.
    pub fn push(&mut self, restore: &Restore, delta: &str) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(delta);
        if let Some(from) = restore.partial_from(&text) {
            self.held = text.split_off(from);
        }
        restore.text(&text)
    }

    /// Everything held, restored: the text ended.
    pub fn flush(&mut self, restore: &Restore) -> String {
        let held = std::mem::take(&mut self.held);
        restore.text(&held)
    }

    fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// An OpenAI chat completion (or text completion) stream with the originals restored in each
/// choice's text, before any translation into the client's own events.
pub struct RestoringStream {
    restore: Restore,
    /// By choice index.
    choices: BTreeMap<u64, TextStream>,
    /// `id`, `object`, `created` and `model` of the last chunk, for an event that sends what is
    /// held when the stream ends without finishing its choices.
    envelope: serde_json::Map<String, Value>,
    /// Whether the chunks are text completions (`text`) rather than chat (`delta.content`).
    completions: bool,
    /// The translation into the client's events, if any.
    then: Option<Box<dyn ClientStream>>,
}

impl RestoringStream {
    /// Restores `restore`'s placeholders, then hands the events to `then` (or to the client).
    pub fn new(restore: Restore, then: Option<Box<dyn ClientStream>>) -> Self {
        Self { restore, choices: BTreeMap::new(), envelope: serde_json::Map::new(), completions: false, then }
    }

    /// Restores every event in `bytes` (whole events, as the tap passes them on).
    fn restore_events(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = event_end(rest).unwrap_or(rest.len());
            let (event, after) = rest.split_at(end);
            self.restore_event(event, &mut out);
            rest = after;
        }
        out
    }

    fn restore_event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let lines = event.split_inclusive(|b| *b == b'\n');
        let mut rewritten = Vec::with_capacity(event.len());
        let mut changed = false;
        for line in lines {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            let Some(data) = body.strip_prefix(b"data:") else {
                rewritten.extend_from_slice(line);
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                // Whatever is still held goes before the end.
                out.extend_from_slice(&self.flush_event());
                rewritten.extend_from_slice(line);
                continue;
            }
            match serde_json::from_slice::<Value>(data).ok().and_then(|chunk| self.restore_chunk(chunk)) {
                Some(chunk) => {
                    changed = true;
                    rewritten.extend_from_slice(b"data: ");
                    rewritten.extend_from_slice(&serde_json::to_vec(&chunk).unwrap_or_default());
                    rewritten.extend_from_slice(&line[body.len()..]);
                }
                None => rewritten.extend_from_slice(line),
            }
        }
        out.extend_from_slice(if changed { &rewritten[..] } else { event });
    }

    /// The chunk with its choices' text restored; `None` when it has none to restore.
    fn restore_chunk(&mut self, mut chunk: Value) -> Option<Value> {
        let object = chunk.as_object()?;
        for field in ["id", "object", "created", "model"] {
            if let Some(value) = object.get(field) {
                self.envelope.insert(field.to_owned(), value.clone());
            }
        }
        self.completions = object.get("object").and_then(Value::as_str) == Some("text_completion");
        let mut changed = false;
        for (position, choice) in chunk.get_mut("choices")?.as_array_mut()?.iter_mut().enumerate() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            let finished = choice.get("finish_reason").is_some_and(|r| !r.is_null());
            let stream = self.choices.entry(index).or_default();
            let text = match choice.get_mut("delta") {
                Some(delta) => delta.get_mut("content"),
                None => choice.get_mut("text"),
            };
            let mut sent = match text {
                Some(Value::String(text)) => {
                    let sent = stream.push(&self.restore, text);
                    changed |= sent != *text;
                    Some(sent)
                }
                _ => None,
            };
            if finished && stream.is_holding() {
                sent.get_or_insert_with(String::new).push_str(&stream.flush(&self.restore));
                changed = true;
            }
            if let Some(sent) = sent {
                set_text(choice, sent);
            }
        }
        changed.then_some(chunk)
    }

    /// One event that sends every choice's held text, or nothing when none is held.
    fn flush_event(&mut self) -> Vec<u8> {
        let mut choices = Vec::new();
        for (index, stream) in &mut self.choices {
            if stream.is_holding() {
                let text = stream.flush(&self.restore);
                let choice = if self.completions {
                    serde_json::json!({"index": index, "text": text, "finish_reason": null})
                } else {
                    serde_json::json!({"index": index, "delta": {"content": text}, "finish_reason": null})
                };
                choices.push(choice);
            }
        }
        if choices.is_empty() {
            return Vec::new();
        }
        let mut chunk = self.envelope.clone();
        chunk.insert("choices".into(), Value::Array(choices));
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&serde_json::to_vec(&Value::Object(chunk)).unwrap_or_default());
        event.extend_from_slice(b"\n\n");
        event
    }

    fn then_feed(&mut self, bytes: Vec<u8>) -> Bytes {
        match &mut self.then {
            None => Bytes::from(bytes),
            Some(_) if bytes.is_empty() => Bytes::new(),
            Some(then) => then.feed(&bytes),
        }
    }
}

/// A choice's text is `delta.content` in a chat chunk and `text` in a completion chunk.
fn set_text(choice: &mut Value, text: String) {
    match choice.get_mut("delta") {
        Some(Value::Object(delta)) => {
            delta.insert("content".into(), Value::String(text));
        }
        _ => {
            if let Some(choice) = choice.as_object_mut() {
                choice.insert("text".into(), Value::String(text));
            }
        }
    }
}

/// Where the first event of `bytes` ends: just past its blank line.
fn event_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes).find_map(|i| match bytes.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if bytes.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

impl ClientStream for RestoringStream {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        let restored = self.restore_events(bytes);
        self.then_feed(restored)
    }

    fn finish(&mut self) -> Bytes {
        let held = self.flush_event();
        let sent = self.then_feed(held);
        match &mut self.then {
            None => sent,
            Some(then) => [sent, then.finish()].concat().into(),
        }
    }

    /// What was held goes out before the error event: the client keeps the text it was sent.
    fn cut(&mut self, cut: CutShort) -> Bytes {
        let held = self.flush_event();
        let sent = self.then_feed(held);
        let error = match &mut self.then {
            None => crate::respond::stream_error_event(cut),
            Some(then) => then.cut(cut),
        };
        [sent, error].concat().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore() -> Restore {
        Restore::new(vec![
            ("[EMAIL_1]".into(), "jane@example.com".into()),
            ("[EMAIL_12]".into(), "bob@example.org".into()),
            ("[CARD_1]".into(), "4111 1111 1111 1111".into()),
        ])
    }

    #[test]
    fn whole_texts_get_every_known_placeholder_back() {
        let restore = restore();
        assert_eq!(
            restore.text("to [EMAIL_1], [EMAIL_12] and [EMAIL_2]"),
            "to jane@example.com, bob@example.org and [EMAIL_2]"
        );
        assert_eq!(restore.text("[[EMAIL_1]] [CARD_1"), "[jane@example.com] [CARD_1");
        assert_eq!(restore.text("no brackets"), "no brackets");
        let body = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"hi [EMAIL_1]"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3}}"#;
        let restored: Value = serde_json::from_slice(&restore.whole(body).expect("changed")).expect("json");
        assert_eq!(restored["choices"][0]["message"]["content"], "hi jane@example.com");
        assert_eq!(restored["usage"]["prompt_tokens"], 3);
        assert!(restore.whole(br#"{"choices":[{"message":{"content":"nothing"}}]}"#).is_none());
        let completion = br#"{"object":"text_completion","choices":[{"index":0,"text":"[CARD_1]"}]}"#;
        let restored: Value = serde_json::from_slice(&restore.whole(completion).expect("changed")).expect("json");
        assert_eq!(restored["choices"][0]["text"], "4111 1111 1111 1111");
    }

    #[test]
    fn text_that_cannot_start_a_placeholder_is_never_held() {
        let restore = restore();
        let mut stream = TextStream::default();
        assert_eq!(stream.push(&restore, "Hello [world] "), "Hello [world] ");
        assert_eq!(stream.push(&restore, "a [X"), "a [X", "no placeholder starts with [X");
        assert_eq!(stream.push(&restore, "see [EM"), "see ");
        assert_eq!(stream.push(&restore, "AIL_1"), "", "still a prefix of [EMAIL_1] and [EMAIL_12]");
        assert_eq!(stream.push(&restore, "] ok"), "jane@example.com ok");
        assert_eq!(stream.push(&restore, "[EMAIL_1"), "");
        assert_eq!(stream.push(&restore, "0]"), "[EMAIL_10]", "not one of this request's");
        assert_eq!(stream.push(&restore, "[CAR"), "");
        assert_eq!(stream.flush(&restore), "[CAR", "held text goes out at the end as it was");
    }

    /// The text of `answer` streamed in pieces cut at `cuts`, restored piece by piece.
    fn streamed(restore: &Restore, answer: &str, cuts: &[usize]) -> String {
        let mut stream = TextStream::default();
        let mut out = String::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([answer.len()].iter()) {
            out.push_str(&stream.push(restore, &answer[at..cut]));
            at = cut;
        }
        out.push_str(&stream.flush(restore));
        out
    }

    #[test]
    fn a_stream_split_at_every_offset_restores_like_the_whole_text() {
        let restore = restore();
        let answer = "Write to [EMAIL_1] or [EMAIL_12]; [card] [CARD_1][EMAIL_1]. [EMAIL_2] é [";
        let expected = restore.text(answer);
        assert!(expected.contains("jane@example.com or bob@example.org"));
        let boundaries: Vec<usize> = (1..answer.len()).filter(|i| answer.is_char_boundary(*i)).collect();
        for &a in &boundaries {
            assert_eq!(streamed(&restore, answer, &[a]), expected, "split at {a}");
            for &b in boundaries.iter().filter(|b| **b > a) {
                assert_eq!(streamed(&restore, answer, &[a, b]), expected, "split at {a} and {b}");
            }
        }
        // One character per delta, as an echoing model streams it.
        assert_eq!(streamed(&restore, answer, &boundaries), expected);
    }

    fn chunk(index: u64, content: &str, finish: Option<&str>) -> String {
        let chunk = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": {"content": content}, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    }

    fn contents(events: &[u8]) -> String {
        let text = String::from_utf8(events.to_vec()).expect("utf8");
        text.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .map(|data| {
                let chunk: Value = serde_json::from_str(data).expect("json chunk");
                chunk["choices"][0]["delta"]["content"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    }

    #[test]
    fn sse_events_are_restored_and_held_text_goes_out_with_the_finish() {
        let mut stream = RestoringStream::new(restore(), None);
        let mut out = Vec::new();
        for event in [
            chunk(0, "Mail [EMA", None),
            chunk(0, "IL_1", None),
            chunk(0, "] now [CA", None),
            chunk(0, "", Some("stop")),
        ] {
            out.extend_from_slice(&stream.feed(event.as_bytes()));
        }
        out.extend_from_slice(&stream.feed(b"data: [DONE]\n\n"));
        out.extend_from_slice(&stream.finish());
        assert_eq!(contents(&out), "Mail jane@example.com now [CA");
        assert!(String::from_utf8_lossy(&out).ends_with("data: [DONE]\n\n"));
        // An event with nothing to restore passes as it came.
        let mut stream = RestoringStream::new(restore(), None);
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        assert_eq!(&stream.feed(role.as_bytes())[..], role.as_bytes());
    }

    #[test]
    fn a_stream_that_ends_without_finishing_sends_what_it_held() {
        let mut stream = RestoringStream::new(restore(), None);
        let mut out = stream.feed(chunk(0, "bye [EMAIL_1", None).as_bytes()).to_vec();
        out.extend_from_slice(&stream.feed(b"data: [DONE]\n\n"));
        let text = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(contents(&out), "bye [EMAIL_1");
        assert!(text.find("[EMAIL_1\"").expect("held text sent") < text.find("[DONE]").expect("done"));
        let flushed: Value =
            serde_json::from_str(text.split("\n\n").nth(1).and_then(|e| e.strip_prefix("data: ")).expect("event"))
                .expect("json");
        assert_eq!(flushed["id"], "c1", "the held text's event looks like the others");
        let mut cut = RestoringStream::new(restore(), None);
        let _ = cut.feed(chunk(0, "x [CARD_", None).as_bytes());
        let end = String::from_utf8(cut.cut(CutShort::IdleTimeout).to_vec()).expect("utf8");
        assert!(end.contains("[CARD_") && end.contains("stream_idle_timeout"), "{end}");
    }
}
