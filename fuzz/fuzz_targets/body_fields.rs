//! The request and response bodies the gateway reads without parsing them whole. Modes (the
//! input's first byte, then the body):
//!
//! - `0`: `openai::read_fields` on a request body, then `rewrite_body` with a new model and
//!   the usage chunk asked for: the rewritten body must still be one JSON object whose fields
//!   read back as written, every other field unchanged.
//! - `1`: the same, leaving `stream_options` alone (only the model rewritten).
//! - `2`: `RequestDefaults::fill`: a JSON object stays one, keeps every field it had and gains
//!   the defaults it lacked; anything else passes unchanged.
//! - `3`: the usage readers of every answer format (`openai::read_usage`, Anthropic's and
//!   Gemini's), which scan upstream bodies and stream events.

#![no_main]

use std::collections::BTreeMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sluice_gateway::protocol::AnswerFormat;
use sluice_gateway::protocol::anthropic::usage::MessageUsage;
use sluice_gateway::protocol::defaults::RequestDefaults;
use sluice_gateway::protocol::openai::{self, Rewrite};

/// The upstream name written into rewritten bodies: one that needs escaping in JSON.
const UPSTREAM_MODEL: &str = "vendor/model \"v2\"";

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = sluice_fuzz::mode(data, 4) else { return };
    match mode {
        0 => fields_and_rewrite(body, true),
        1 => fields_and_rewrite(body, false),
        2 => fill_defaults(body),
        _ => read_usage(body),
    }
});

/// `bytes` as JSON, with invalid UTF-8 inside strings read as U+FFFD; `None` for a number
/// beyond `f64` or a lone surrogate escape (JSON's grammar allows both; `serde_json::Value`
/// holds neither). `read_fields` and `fill` skip the fields they do not need without
/// validating them (the body is not parsed whole, by design; the upstream judges those
/// fields), so a body they accept may hold any of these: its structure is what must hold.
fn structure(what: &str, bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_str(&String::from_utf8_lossy(bytes)) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => panic!("{what} is no JSON object: {other}"),
        Err(e) if ["number out of range", "lone leading surrogate"].iter().any(|m| e.to_string().starts_with(m)) => {
            None
        }
        Err(e) => panic!("{what} wrote invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)),
    }
}

/// Checks that every field of `original` is in `map` with the same value, but those named in
/// `changed`.
fn assert_kept(original: Option<&Map<String, Value>>, map: Option<&Map<String, Value>>, changed: &[&str]) {
    let (Some(original), Some(map)) = (original, map) else { return };
    for (name, value) in original.iter().filter(|(name, _)| !changed.contains(&name.as_str())) {
        assert_eq!(map.get(name), Some(value), "{name} changed");
    }
}

fn fields_and_rewrite(body: &[u8], include_usage: bool) {
    let Ok(fields) = openai::read_fields(body) else { return };
    let original = structure("a body read_fields accepted", body);
    if let Some(prompt) = fields.prompt(body) {
        let _ = structure("the prompt span", format!("{{\"prompt\":{}}}", String::from_utf8_lossy(prompt)).as_bytes());
    }
    let body = Bytes::copy_from_slice(body);
    let rewritten = openai::rewrite_body(&body, &fields, Rewrite { model: Some(UPSTREAM_MODEL), include_usage });
    let map = structure("rewrite_body", &rewritten);
    let again = match openai::read_fields(&rewritten) {
        Ok(again) => again,
        Err(e) => panic!("the rewritten body no longer reads ({e:?}): {}", String::from_utf8_lossy(&rewritten)),
    };
    assert_eq!(again.model, UPSTREAM_MODEL);
    assert_eq!((again.stream, again.max_tokens), (fields.stream, fields.max_tokens));
    assert_eq!(again.include_usage, fields.include_usage || include_usage);
    assert_eq!(again.prompt(&rewritten), fields.prompt(&body), "the prompt's bytes are left alone");
    assert_kept(original.as_ref(), map.as_ref(), &["model", "stream_options"]);
}

fn fill_defaults(body: &[u8]) {
    let parameters: BTreeMap<String, Value> =
        [("temperature".to_owned(), json!(0.7)), ("max_tokens".to_owned(), json!(512))].into();
    let defaults = RequestDefaults::new(Some("default-model"), &parameters);
    let body = Bytes::copy_from_slice(body);
    let filled = defaults.fill(&body, true);
    let has_defaults = |map: &Map<String, Value>| {
        map.contains_key("model")
            && map.contains_key("temperature")
            && (map.contains_key("max_tokens") || map.contains_key("max_completion_tokens"))
    };
    if filled == body {
        // Unchanged: it is no JSON object, or it already names every field.
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
            assert!(has_defaults(&map), "fill left out a default");
        }
        return;
    }
    let original = structure("a body fill changed", &body);
    let map = structure("RequestDefaults::fill", &filled);
    assert_kept(original.as_ref(), map.as_ref(), &[]);
    if let Some(map) = &map {
        assert!(has_defaults(map), "fill left out a default");
    }
}

fn read_usage(body: &[u8]) {
    let _ = openai::read_usage(body);
    for format in [AnswerFormat::OpenAi, AnswerFormat::Anthropic, AnswerFormat::Gemini] {
        let _ = format.read_usage(body);
    }
    let mut usage = MessageUsage::default();
    if usage.observe(body) {
        let _ = usage.to_usage();
    }
}
