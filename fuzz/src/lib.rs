//! What the fuzz targets share: how an input picks what it exercises, how a stream is cut into
//! the chunks a translator is fed, and the checks every translated output must pass.
//!
//! An input's first byte picks a mode, read as an ASCII digit so that seeds stay readable
//! (`0{"model":...}` is mode 0 with that body). A stream mode then reads where to cut the
//! stream with `arbitrary`: the chunk lengths as its `Vec<u8>` (each length after an odd byte,
//! the list ended by an even byte such as a newline), then the stream itself, so a seed that
//! starts `3\n` is mode 3 with the stream left whole.

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use serde_json::Value;
use sluice_gateway::accounting::CutShort;
use sluice_gateway::protocol::completion::ToOpenAiStream;
use sluice_gateway::protocol::defaults::RequestDefaults;
use sluice_gateway::protocol::openai;
use sluice_gateway::respond::body::ClientStream;

/// The mode an input picks among `modes`, and the rest of it.
pub fn mode(data: &[u8], modes: u8) -> Option<(u8, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first.wrapping_sub(b'0') % modes, rest))
}

/// A stream and where to cut it.
#[derive(Arbitrary, Debug)]
pub struct Cuts<'a> {
    /// Lengths of the chunks before the last, which is whatever is left.
    lengths: Vec<u8>,
    /// The stream's bytes.
    pub stream: &'a [u8],
}

impl<'a> Cuts<'a> {
    /// Reads the chunk lengths and then the stream from `bytes`.
    pub fn read(bytes: &'a [u8]) -> Self {
        // Reading integers never fails for want of bytes (they read as zero), so this cannot
        // fail; an error would only mean "no cuts".
        Self::arbitrary_take_rest(Unstructured::new(bytes)).unwrap_or(Self { lengths: Vec::new(), stream: bytes })
    }

    /// The stream in its chunks; a length past the end cuts at the end, and a zero length is an
    /// empty chunk (which a socket never delivers, but a translator must take in its stride).
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut chunks = Vec::with_capacity(self.lengths.len() + 1);
        let mut rest = self.stream;
        for &length in &self.lengths {
            let (chunk, after) = rest.split_at(usize::from(length).min(rest.len()));
            chunks.push(chunk);
            rest = after;
        }
        chunks.push(rest);
        chunks
    }
}

/// Parses `bytes` as one JSON value, or fails naming `what` produced them.
pub fn assert_json(what: &str, bytes: &[u8]) -> Value {
    match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => panic!("{what} wrote invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)),
    }
}

/// Checks that `bytes` are whole server-sent events as the gateway writes them: `event:` and
/// `data:` lines, each event ended by a blank line, every `data:` one JSON value or `[DONE]`.
pub fn assert_events(what: &str, bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        panic!("{what} wrote a stream that is not UTF-8: {}", String::from_utf8_lossy(bytes));
    };
    if text.is_empty() {
        return;
    }
    let Some(events) = text.strip_suffix("\n\n") else { panic!("{what} left an event unterminated: {text:?}") };
    for event in events.split("\n\n") {
        for line in event.split('\n') {
            if let Some(data) = line.strip_prefix("data: ") {
                if data != "[DONE]" {
                    assert_json(what, data.as_bytes());
                }
            } else if !line.starts_with("event: ") {
                panic!("{what} wrote a line that is neither event: nor data: {line:?} in {text:?}");
            }
        }
    }
}

/// Checks a request body a translation wrote, as the gateway goes on with it: the endpoint's
/// defaults filled in, then its fields read. It must read, naming `model` and asking for a
/// stream (with its usage chunk) exactly when `stream`.
pub fn assert_chat_request(what: &str, body: &[u8], model: &str, stream: bool) {
    let Value::Object(_) = assert_json(what, body) else { panic!("{what} wrote no JSON object") };
    let parameters = [("temperature".to_owned(), serde_json::json!(0.7))].into();
    let body = RequestDefaults::new(Some("default-model"), &parameters).fill(&Bytes::copy_from_slice(body), true);
    let fields = match openai::read_fields(&body) {
        Ok(fields) => fields,
        Err(e) => panic!("{what} wrote a request the gateway refuses ({e:?}): {}", String::from_utf8_lossy(&body)),
    };
    assert_eq!(fields.model, model, "{what}: the model");
    assert_eq!((fields.stream, fields.include_usage), (stream, stream), "{what}: stream and its usage");
}

/// Everything a client stream wrote for an upstream stream fed in `chunks`, ended by the
/// upstream (`cut: None`) or cut short.
pub fn drive(stream: &mut dyn ClientStream, chunks: &[&[u8]], cut: Option<CutShort>) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&stream.feed(chunk));
    }
    out.extend_from_slice(&match cut {
        None => stream.finish(),
        Some(cut) => stream.cut(cut),
    });
    out
}

/// Checks a translator of chat completion chunks into a client's stream: fed the stream whole
/// or in `cuts`' chunks it writes the same (a translator must not care where the network split
/// its input), and what it writes is well-formed, whether the stream ends or is cut short.
pub fn assert_client_stream(what: &str, cuts: &Cuts<'_>, new: impl Fn() -> Box<dyn ClientStream>) {
    let whole = drive(new().as_mut(), &[cuts.stream], None);
    let cut = drive(new().as_mut(), &cuts.chunks(), None);
    assert!(
        whole == cut,
        "{what}: the stream cut at {:?} translated differently:\nwhole: {}\ncut:   {}",
        cuts.lengths,
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&cut)
    );
    assert_events(what, &whole);
    assert_events(what, &drive(new().as_mut(), &cuts.chunks(), Some(CutShort::UpstreamError)));
}

/// Everything a translator to OpenAI's stream wrote for a stream fed in `chunks`, and how it
/// ended: as the gateway drives one, nothing is fed after the first error.
pub fn drive_to_openai(translator: &mut dyn ToOpenAiStream, chunks: &[&[u8]]) -> (Vec<u8>, Result<(), String>) {
    let mut out = BytesMut::new();
    for chunk in chunks {
        if let Err(e) = translator.feed(chunk, &mut out) {
            return (out.to_vec(), Err(e));
        }
    }
    let ended = translator.finish(&mut out);
    (out.to_vec(), ended)
}

/// Checks a translator of an upstream's own stream into OpenAI's, as [`assert_client_stream`]
/// does; how the stream ended (cleanly or not) must not depend on the cuts either.
pub fn assert_stream_to_openai(what: &str, cuts: &Cuts<'_>, new: impl Fn() -> Box<dyn ToOpenAiStream>) {
    let whole = drive_to_openai(new().as_mut(), &[cuts.stream]);
    let cut = drive_to_openai(new().as_mut(), &cuts.chunks());
    assert!(
        whole == cut,
        "{what}: the stream cut at {:?} translated differently:\nwhole: {} {:?}\ncut:   {} {:?}",
        cuts.lengths,
        String::from_utf8_lossy(&whole.0),
        whole.1,
        String::from_utf8_lossy(&cut.0),
        cut.1
    );
    assert_events(what, &whole.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_read_lengths_then_the_stream() {
        // Odd byte, length 2; odd byte, length 1; even byte ends the list.
        let cuts = Cuts::read(b"\x01\x02\x01\x01\nabcdef");
        assert_eq!(cuts.stream, b"abcdef");
        assert_eq!(cuts.chunks(), vec![&b"ab"[..], b"c", b"def"]);
        let whole = Cuts::read(b"\ndata: x\n\n");
        assert_eq!(whole.chunks(), vec![&b"data: x\n\n"[..]]);
        let past_the_end = Cuts::read(b"\x01\xff\nab");
        assert_eq!(past_the_end.chunks(), vec![&b"ab"[..], b""]);
    }

    #[test]
    fn modes_are_digits() {
        assert_eq!(mode(b"3{}", 8), Some((3, &b"{}"[..])));
        assert_eq!(mode(b"9", 8), Some((1, &b""[..])));
        assert_eq!(mode(b"", 8), None);
    }

    #[test]
    #[should_panic(expected = "unterminated")]
    fn an_unterminated_event_is_caught() {
        assert_events("test", b"data: {}\n");
    }

    #[test]
    #[should_panic(expected = "invalid JSON")]
    fn data_that_is_not_json_is_caught() {
        assert_events("test", b"event: x\ndata: {\n\n");
    }
}
