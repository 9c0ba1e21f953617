//! Golden fixtures for the outbound translation (`tests/fixtures/protocols/anthropic/`).

use serde_json::{Value, json};

use super::*;
use crate::protocol::golden;

fn translate_stream(input: &[u8], frame: usize) -> (Vec<u8>, Result<(), String>) {
    let mut translator = ChunksFromEvents::new(1_700_000_000);
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
fn a_chat_request_becomes_a_messages_request() {
    let input = golden::text("anthropic/request.openai.json");
    let out = request_from_openai(input.as_bytes(), "claude-sonnet-4-5", 8192).expect("translates");
    golden::check("anthropic/request.anthropic.json", &serde_json::from_slice(&out).expect("json"));
}

#[test]
fn max_tokens_defaults_and_simple_requests_stay_simple() {
    let body = json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 9,
        "tool_choice": {"type": "function", "function": {"name": "f"}}, "response_format": {"type": "json_object"}});
    let out: Value = serde_json::from_slice(&request_from_openai(body.to_string().as_bytes(), "up", 100).expect("ok"))
        .expect("json");
    assert_eq!(
        out,
        json!({"model": "up", "max_tokens": 9, "messages": [{"role": "user", "content": "Hi"}],
            "system": JSON_INSTRUCTION, "tool_choice": {"type": "tool", "name": "f"}})
    );
    let body = json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]});
    let out: Value = serde_json::from_slice(&request_from_openai(body.to_string().as_bytes(), "up", 100).expect("ok"))
        .expect("json");
    assert_eq!(out["max_tokens"], 100);
}

#[test]
fn what_cannot_be_translated_is_refused() {
    let refused = |body: Value| request_from_openai(body.to_string().as_bytes(), "up", 1).expect_err("refused");
    let message = |body: Value| refused(body).to_string();
    assert!(message(json!({"messages": [], "n": 2})).contains("n must be 1"));
    assert!(
        message(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})).contains("input_audio")
    );
    assert!(message(json!({"messages": [], "functions": []})).contains("tools"));
    assert!(
        message(
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]})
        )
        .contains("http")
    );
    assert!(matches!(refused(json!([1])), ApiError::InvalidJson(_)));
}

#[test]
fn a_message_becomes_a_chat_completion() {
    let out =
        completion_from_message(golden::text("anthropic/message.json").as_bytes(), 1_700_000_000).expect("a message");
    golden::check("anthropic/message.openai.json", &serde_json::from_slice(&out).expect("json"));
    let out = completion_from_message(golden::text("anthropic/message.stop_sequence.json").as_bytes(), 1).expect("ok");
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["choices"][0]["stop_reason"], "three", "the matched sequence, where vLLM puts it");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert!(completion_from_message(golden::text("anthropic/error.json").as_bytes(), 1).is_none());
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        assert_eq!(finish_reason(Some(stop)), finish, "{stop}");
    }
}

#[test]
fn errors_become_openai_errors() {
    let out = error_to_openai(StatusCode::BAD_REQUEST, golden::text("anthropic/error.json").as_bytes());
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        out,
        json!({"error": {"message": "max_tokens: 100000 > 64000, which is the maximum allowed",
            "type": "invalid_request_error", "param": null, "code": "invalid_request_error"}})
    );
    let out: Value = serde_json::from_slice(&error_to_openai(StatusCode::UNAUTHORIZED, b"nope")).expect("json");
    assert_eq!(out["error"]["type"], "invalid_request_error");
    assert_eq!(out["error"]["message"], "The upstream answered with status 401.");
}

#[test]
fn a_stream_becomes_chat_chunks_whatever_the_framing() {
    let input = golden::text("anthropic/stream.sse");
    let (whole, result) = translate_stream(input.as_bytes(), input.len());
    assert_eq!(result, Ok(()));
    golden::check("anthropic/stream.openai.json", &Value::Array(golden::sse_data(&whole)));
    for frame in [1, 7, 64] {
        let (out, result) = translate_stream(input.as_bytes(), frame);
        assert_eq!((out.as_slice(), result), (whole.as_slice(), Ok(())), "frames of {frame} bytes");
    }
    // What the gateway's tap reads from it.
    let mut tap = crate::protocol::sse::SseTap::new(true);
    let forwarded = tap.feed(bytes::Bytes::from(whole));
    assert_eq!(
        tap.usage,
        Some(crate::protocol::openai::Usage { prompt_tokens: 35, completion_tokens: 42, cached_tokens: 10 })
    );
    assert!(!String::from_utf8_lossy(&forwarded).contains("\"usage\""), "the usage chunk is kept from who did not ask");
}

#[test]
fn a_stream_cut_midway_is_an_error_after_what_arrived() {
    let input = golden::text("anthropic/stream.sse");
    let cut = input.find("event: message_delta").expect("fixture");
    let (out, result) = translate_stream(&input.as_bytes()[..cut + 10], 50);
    assert_eq!(result, Err("the upstream's stream ended before message_stop".to_owned()));
    let chunks = golden::sse_data(&out);
    assert_eq!(chunks.len(), 6, "role, two texts, the tool call and its two argument pieces: {chunks:?}");
    assert!(chunks.iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
}

#[test]
fn an_error_event_midway_fails_the_stream() {
    let input = golden::text("anthropic/stream.sse");
    let cut = input.find("event: content_block_stop").expect("fixture");
    let broken = format!(
        "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
        &input[..cut]
    );
    let (out, result) = translate_stream(broken.as_bytes(), 1000);
    assert_eq!(result, Err("the upstream's stream failed: overloaded_error: Overloaded".to_owned()));
    assert_eq!(golden::sse_data(&out).len(), 3);
}

#[test]
fn an_event_that_is_not_json_is_refused_without_repeating_it() {
    let (_, result) = translate_stream(b"data: the secret answer is 42\n\n", 7);
    let error = result.expect_err("not JSON");
    assert!(error.contains("not JSON") && error.contains("bytes"), "{error}");
    assert!(!error.contains("secret answer"), "completion text never reaches an error: {error}");
}
