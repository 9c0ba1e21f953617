//! Golden fixtures for the Gemini translation (`tests/fixtures/protocols/gemini/`).

use serde_json::{Value, json};

use super::*;
use crate::protocol::gemini::request::request_from_openai;
use crate::protocol::golden;

fn translate_stream(input: &[u8], frame: usize) -> (Vec<u8>, Result<(), String>) {
    let mut translator = ChunksFromGemini::new(1_700_000_000);
    let mut out = bytes::BytesMut::new();
    for piece in input.chunks(frame) {
        if let Err(e) = translator.feed(piece, &mut out) {
            return (out.to_vec(), Err(e));
        }
    }
    let result = translator.finish(&mut out);
    (out.to_vec(), result)
}

#[test]
fn a_chat_request_becomes_a_generate_content_request() {
    let input = golden::text("gemini/request.openai.json");
    let out = request_from_openai(input.as_bytes()).expect("translates");
    golden::check("gemini/request.gemini.json", &serde_json::from_slice(&out).expect("json"));
}

#[test]
fn json_mode_and_tool_choice_strings() {
    let body = json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "tool_choice": "required",
        "response_format": {"type": "json_object"}});
    let out: Value =
        serde_json::from_slice(&request_from_openai(body.to_string().as_bytes()).expect("ok")).expect("json");
    assert_eq!(
        out,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {"responseMimeType": "application/json"}})
    );
}

#[test]
fn a_response_becomes_a_chat_completion() {
    let out = completion_from_response(golden::text("gemini/response.json").as_bytes(), 1_700_000_000).expect("ok");
    golden::check("gemini/response.openai.json", &serde_json::from_slice(&out).expect("json"));
    let out = completion_from_response(golden::text("gemini/response.blocked.json").as_bytes(), 1).expect("ok");
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["usage"]["prompt_tokens"], 8);
    assert!(completion_from_response(golden::text("gemini/error.json").as_bytes(), 1).is_none());
}

#[test]
fn a_stream_becomes_chat_chunks_whatever_the_framing() {
    let input = golden::text("gemini/stream.sse");
    let (whole, result) = translate_stream(input.as_bytes(), input.len());
    assert_eq!(result, Ok(()));
    golden::check("gemini/stream.openai.json", &Value::Array(golden::sse_data(&whole)));
    for frame in [1, 5, 100] {
        let (out, result) = translate_stream(input.as_bytes(), frame);
        assert_eq!((out.as_slice(), result), (whole.as_slice(), Ok(())), "frames of {frame} bytes");
    }
    let mut tap = crate::protocol::sse::SseTap::new(false);
    tap.feed(bytes::Bytes::from(whole));
    assert_eq!(tap.usage, Some(Usage { prompt_tokens: 12, completion_tokens: 9, cached_tokens: 0 }));
}

#[test]
fn a_stream_cut_midway_is_an_error_after_what_arrived() {
    let input = golden::text("gemini/stream.sse");
    let cut = input.rfind("data: ").expect("fixture");
    let (out, result) = translate_stream(&input.as_bytes()[..cut + 30], 40);
    assert_eq!(result, Err("the upstream's stream ended before a finish reason".to_owned()));
    let chunks = golden::sse_data(&out);
    let texts: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(texts, ["", "Hel", "lo."]);
}

#[test]
fn an_error_event_midway_fails_the_stream() {
    let input = golden::text("gemini/stream.sse");
    let cut = input.rfind("data: ").expect("fixture");
    let broken = format!("{}data: {}\r\n\r\n", &input[..cut], golden::text("gemini/error.json").trim());
    let (out, result) = translate_stream(broken.as_bytes(), 1000);
    assert_eq!(result, Err("the upstream's stream failed: Resource has been exhausted (e.g. check quota).".to_owned()));
    assert_eq!(golden::sse_data(&out).len(), 3);
}

#[test]
fn an_event_that_is_not_json_is_refused_without_repeating_it() {
    let (_, result) = translate_stream(b"data: the secret answer is 42\n\n", 7);
    let error = result.expect_err("not JSON");
    assert!(error.contains("not JSON") && error.contains("bytes"), "{error}");
    assert!(!error.contains("secret answer"), "completion text never reaches an error: {error}");
}
