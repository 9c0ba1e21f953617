//! `protocol::sse::SseTap`, the tap every upstream stream passes through, fed any bytes cut into
//! any chunks. Modes: `0` an OpenAI stream, `1` an OpenAI stream whose requested usage chunk is
//! kept from the client, `2` an Anthropic stream, `3` a Gemini stream; then the cuts and the
//! stream (see the crate's doc).
//!
//! Beyond not panicking: the tap forwards and reads the same whatever the cuts, and it changes
//! nothing but the one chunk it may drop (so a stream without `"choices":[]`, or any stream
//! when it drops nothing, comes out byte for byte).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::Cuts;
use sluice_gateway::protocol::AnswerFormat;
use sluice_gateway::protocol::sse::SseTap;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = sluice_fuzz::mode(data, 4) else { return };
    let (format, strip) = match mode {
        0 => (AnswerFormat::OpenAi, false),
        1 => (AnswerFormat::OpenAi, true),
        2 => (AnswerFormat::Anthropic, false),
        _ => (AnswerFormat::Gemini, false),
    };
    let cuts = Cuts::read(rest);
    let (whole_out, whole) = tap(format, strip, &[cuts.stream]);
    let (cut_out, cut) = tap(format, strip, &cuts.chunks());
    assert_eq!(whole_out, cut_out, "forwarded bytes depend on the cuts");
    assert_eq!(
        (whole.usage, whole.events, whole.text_events, whole.done),
        (cut.usage, cut.events, cut.text_events, cut.done),
        "what the tap read depends on the cuts"
    );
    let has_usage_chunk = cuts.stream.windows(b"\"choices\":[]".len()).any(|w| w == b"\"choices\":[]");
    if !strip || !has_usage_chunk {
        assert_eq!(whole_out, cuts.stream, "the tap changed a stream it had no reason to change");
    } else {
        assert!(whole_out.len() <= cuts.stream.len());
    }
});

/// What a tap forwards of a stream fed in `chunks`, and the tap itself for what it read.
fn tap(format: AnswerFormat, strip: bool, chunks: &[&[u8]]) -> (Vec<u8>, SseTap) {
    let mut tap = SseTap::reading(format, strip);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&tap.feed(Bytes::copy_from_slice(chunk)));
    }
    out.extend_from_slice(&tap.finish());
    (out, tap)
}
