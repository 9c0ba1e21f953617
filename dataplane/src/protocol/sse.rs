//! Server-sent events from the upstream: forwarded event by event, byte for byte, while the tap
//! reads usage and timing from them. The one change it can make is to drop the usage-only chunk
//! that the gateway asked for on the client's behalf.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

use super::AnswerFormat;
use super::anthropic::usage::MessageUsage;
use super::openai::{Usage, read_usage};
use crate::traces::content::Output;

/// Reads a stream as it passes.
#[derive(Debug, Default)]
pub struct SseTap {
    partial: BytesMut,
    strip_usage_chunk: bool,
    /// Anthropic's counts, when the stream is a Messages stream passed through.
    anthropic: Option<MessageUsage>,
    /// Whether the stream is a Gemini stream passed through (`usageMetadata` in its events).
    gemini: bool,
    /// The last non-null `usage` seen.
    pub usage: Option<Usage>,
    /// `data:` events seen (not counting `[DONE]`).
    pub events: u64,
    /// Events that carried generated text: an estimate of output tokens when a stream breaks
    /// before its usage arrives.
    pub text_events: u64,
    /// Whether `data: [DONE]` was seen.
    pub done: bool,
    /// The answer's text, read only for a request that records its content.
    pub output: Option<Box<Output>>,
}

/// Finds the end of the first event in `bytes`: the index just past its blank line.
fn event_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes).find_map(|i| match bytes.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if bytes.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// The substrings the tap looks for in every event, each searched for in one pass. Walking the
/// event's quotes instead (a `memchr` call per quote, three times an event) cost about 7,000
/// instructions an event, half of what forwarding a stream cost.
struct Needles {
    content: Finder<'static>,
    text: Finder<'static>,
    usage: Finder<'static>,
    usage_metadata: Finder<'static>,
    no_choices: Finder<'static>,
}

static NEEDLES: LazyLock<Needles> = LazyLock::new(|| Needles {
    content: Finder::new(b"\"content\":\""),
    text: Finder::new(b"\"text\":\""),
    usage: Finder::new(b"\"usage\""),
    usage_metadata: Finder::new(b"\"usageMetadata\""),
    no_choices: Finder::new(b"\"choices\":[]"),
});

/// Whether a chunk carries generated text (`"content":"x` or `"text":"x`, not empty).
fn carries_text(data: &[u8]) -> bool {
    [&NEEDLES.content, &NEEDLES.text].into_iter().any(|needle| {
        let after = needle.needle().len();
        needle.find_iter(data).any(|at| data.get(at + after) != Some(&b'"'))
    })
}

/// The lines of an event (split at `\n`, as `split` would, a line a search).
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', event).chain(std::iter::once(event.len())).map(move |end| {
        let line = &event[start..end];
        start = end + 1;
        line
    })
}

impl SseTap {
    /// A tap; with `strip_usage_chunk`, the final usage-only chunk (`"choices":[]` with `usage`)
    /// is kept from the client.
    pub fn new(strip_usage_chunk: bool) -> Self {
        Self { strip_usage_chunk, ..Self::default() }
    }

    /// A tap on a stream in `format`: an OpenAI stream's usage chunk is kept from the client
    /// with `strip_usage_chunk`; an Anthropic stream is never changed, its usage read from
    /// `message_start` and `message_delta`.
    pub fn reading(format: AnswerFormat, strip_usage_chunk: bool) -> Self {
        match format {
            AnswerFormat::OpenAi => Self::new(strip_usage_chunk),
            AnswerFormat::Anthropic => Self { anthropic: Some(MessageUsage::default()), ..Self::default() },
            AnswerFormat::Gemini => Self { gemini: true, ..Self::default() },
        }
    }

    /// Also assembles the answer's text (in `format`), for a request span that records it.
    pub fn record_output(&mut self, format: AnswerFormat) {
        self.output = Some(Box::new(Output::reading(format)));
    }

    /// Takes the next upstream frame and returns the bytes to send on: whole events only (an
    /// incomplete event waits for the rest, which a client could not use anyway).
    pub fn feed(&mut self, frame: Bytes) -> Bytes {
        let mut input = if self.partial.is_empty() {
            frame
        } else {
            self.partial.extend_from_slice(&frame);
            self.partial.split().freeze()
        };
        let mut out: Option<BytesMut> = None;
        let mut kept_until = 0;
        let mut at = 0;
        while let Some(len) = event_end(&input[at..]) {
            let event = input.slice(at..at + len);
            let keep = self.inspect(&event);
            if !keep {
                // Copy what came before the dropped event; continue after it.
                let buf = out.get_or_insert_with(BytesMut::new);
                buf.extend_from_slice(&input[kept_until..at]);
                kept_until = at + len;
            }
            at += len;
        }
        let rest = input.split_off(at);
        if !rest.is_empty() {
            self.partial.extend_from_slice(&rest);
        }
        match out {
            None if kept_until == 0 => input,
            _ => {
                let mut buf = out.unwrap_or_default();
                buf.extend_from_slice(&input[kept_until..]);
                buf.freeze()
            }
        }
    }

    /// What is left when the upstream ends: an unterminated last event is passed on as it is.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.partial.split().freeze();
        if !rest.is_empty() {
            self.inspect(&rest);
        }
        rest
    }

    /// Reads one event; returns whether to forward it.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let mut keep = true;
        let needles = &*NEEDLES;
        for line in lines(event) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else { continue };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            self.events += 1;
            if let Some(output) = &mut self.output {
                output.event(data);
            }
            if carries_text(data) {
                self.text_events += 1;
            }
            if self.gemini {
                if needles.usage_metadata.find(data).is_some()
                    && let Some(usage) = AnswerFormat::Gemini.read_usage(data)
                {
                    self.usage = Some(usage);
                }
                continue;
            }
            if let Some(counts) = &mut self.anthropic {
                if needles.usage.find(data).is_some() && counts.observe(data) {
                    self.usage = Some(counts.to_usage());
                }
                continue;
            }
            // `read_usage` finds the key itself (every chunk of a stream that asked for usage
            // has one, most of them `null`).
            if let Some(usage) = read_usage(data) {
                self.usage = Some(usage);
                if self.strip_usage_chunk && needles.no_choices.find(data).is_some() {
                    keep = false;
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const USAGE: &str =
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(tap: &mut SseTap, frames: &[&str]) -> String {
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(frame.as_bytes())));
        }
        out.extend_from_slice(&tap.finish());
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn gemini_streams_pass_unchanged_with_their_last_usage() {
        let mut tap = SseTap::reading(AnswerFormat::Gemini, true);
        let first = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"promptTokenCount\":4}}\r\n\r\n";
        let last = "data: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":1}}\r\n\r\n";
        assert_eq!(run(&mut tap, &[first, last]), format!("{first}{last}"));
        assert_eq!(tap.usage, Some(Usage { prompt_tokens: 4, completion_tokens: 3, cached_tokens: 0 }));
        assert_eq!(tap.text_events, 1);
    }

    #[test]
    fn forwards_whole_events_unchanged_and_reads_usage() {
        let mut tap = SseTap::new(false);
        let all = format!("{CHUNK}{USAGE}{DONE}");
        assert_eq!(run(&mut tap, &[CHUNK, USAGE, DONE]), all);
        assert_eq!(tap.usage, Some(Usage { prompt_tokens: 5, completion_tokens: 2, cached_tokens: 0 }));
        assert_eq!(tap.events, 2);
        assert_eq!(tap.text_events, 1);
        assert!(tap.done);
    }

    #[test]
    fn frames_split_inside_events_are_reassembled() {
        let mut tap = SseTap::new(false);
        let all = format!("{CHUNK}{USAGE}{DONE}");
        let (a, b) = all.split_at(17);
        let (b, c) = b.split_at(90);
        assert_eq!(run(&mut tap, &[a, b, c]), all);
        assert!(tap.usage.is_some());
    }

    #[test]
    fn the_requested_usage_chunk_is_dropped_when_the_client_did_not_ask() {
        let mut tap = SseTap::new(true);
        assert_eq!(run(&mut tap, &[CHUNK, &format!("{USAGE}{DONE}")]), format!("{CHUNK}{DONE}"));
        assert_eq!(tap.usage.map(|u| u.completion_tokens), Some(2));
    }

    #[test]
    fn crlf_events_are_understood() {
        let mut tap = SseTap::new(true);
        let crlf = USAGE.replace("\n\n", "\r\n\r\n");
        assert_eq!(run(&mut tap, &[&crlf, DONE]), DONE);
    }

    #[test]
    fn anthropic_streams_pass_unchanged_with_their_usage_read() {
        let mut tap = SseTap::reading(AnswerFormat::Anthropic, true);
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":6,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(run(&mut tap, &[stream]), stream);
        assert_eq!(tap.usage, Some(Usage { prompt_tokens: 10, completion_tokens: 3, cached_tokens: 4 }));
        assert_eq!(tap.text_events, 1);
    }

    #[test]
    fn whole_frames_pass_without_copy() {
        let mut tap = SseTap::new(false);
        let frame = Bytes::from_static(CHUNK.as_bytes());
        let out = tap.feed(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr());
    }

    #[test]
    fn lines_split_as_split_does() {
        for event in ["", "\n", "data: x\n\n", "a\r\nb\r\n\r\n", "no newline", "\n\nx\n"] {
            let ours: Vec<&[u8]> = lines(event.as_bytes()).collect();
            let split: Vec<&[u8]> = event.as_bytes().split(|b| *b == b'\n').collect();
            assert_eq!(ours, split, "{event:?}");
        }
    }

    #[test]
    fn text_is_told_from_empty_and_missing_text() {
        let says = |data: &str| carries_text(data.as_bytes());
        assert!(says(r#"{"choices":[{"delta":{"content":"hi"}}]}"#));
        assert!(says(r#"{"delta":{"type":"text_delta","text":"x"}}"#));
        assert!(!says(r#"{"choices":[{"delta":{"content":""}}]}"#), "empty");
        assert!(!says(r#"{"choices":[{"delta":{"content":null,"role":"assistant"}}]}"#), "null");
        assert!(!says(r#"{"choices":[{"delta":{}}],"text":""}"#));
        assert!(says(r#"{"a":{"content":""},"b":{"content":"later"}}"#), "a later one counts");
        assert!(!says(r#"{"content""#), "cut off");
    }
}
