//! Anthropic's Messages API, both ways. Modes (the input's first byte, then the body or, for
//! streams, the cuts and the stream; see the crate's doc):
//!
//! - `0`, `1`: a client's `/v1/messages` and `count_tokens` body into a chat request, which the
//!   gateway must then be able to read (model, stream).
//! - `2`: an upstream's chat completion (or error) back into a message, as the gateway answers.
//! - `3`: an upstream's chat completion stream into Messages events.
//! - `4`: a chat request into a Messages request for an Anthropic upstream.
//! - `5`: an Anthropic upstream's message (or error) into a chat completion.
//! - `6`: an Anthropic upstream's event stream into chat completion chunks.
//!
//! Every output must be JSON (streams: well-formed events of JSON), and a stream's output must
//! not depend on where it was cut.

#![no_main]

use hyper::StatusCode;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_fuzz::{Cuts, assert_chat_request, assert_client_stream, assert_json, assert_stream_to_openai};
use sluice_gateway::protocol::anthropic::{outbound, request};
use sluice_gateway::protocol::openai;
use sluice_gateway::respond::{Translation, translate_whole};

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = sluice_fuzz::mode(data, 7) else { return };
    let stop_sequences = || vec!["END".to_owned(), "\n\nHuman:".to_owned()];
    match mode {
        0 => {
            let Ok(translated) = request::to_openai(body) else { return };
            let Value::Object(request) = assert_json("a Messages body to_openai accepted", body) else {
                panic!("to_openai accepted a body that is no object")
            };
            let model = request.get("model").and_then(Value::as_str).unwrap_or_default();
            let stream = request.get("stream") == Some(&Value::Bool(true));
            assert_chat_request("anthropic::request::to_openai", &translated.body, model, stream);
        }
        1 => {
            let Ok(count) = request::count_tokens(body) else { return };
            let model = serde_json::from_slice::<Value>(body).ok().and_then(|b| b["model"].as_str().map(str::to_owned));
            assert_chat_request("anthropic::request::count_tokens", &count.body, &model.unwrap_or_default(), false);
        }
        2 => {
            for status in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE] {
                let (_, answer) = translate_whole(&Translation::Messages(stop_sequences()), status, body, 0);
                assert_json("translate_whole (Messages)", &answer);
            }
        }
        3 => assert_client_stream("the Messages stream", &Cuts::read(body), || {
            Translation::Messages(stop_sequences()).stream(12, 0)
        }),
        4 => {
            let Ok(translated) = outbound::request_from_openai(body, "claude-sonnet-4-5", 4096) else { return };
            let request = assert_json("anthropic::outbound::request_from_openai", &translated);
            assert_eq!(request["model"], "claude-sonnet-4-5");
            assert!(request["max_tokens"].is_u64(), "max_tokens must be an integer: {request}");
        }
        5 => {
            if let Some(completion) = outbound::completion_from_message(body, 1_700_000_000) {
                assert_json("anthropic::outbound::completion_from_message", &completion);
                assert!(openai::read_usage(&completion).is_some(), "a translated completion has usage");
            }
            for status in [StatusCode::BAD_REQUEST, StatusCode::INTERNAL_SERVER_ERROR] {
                assert_json("anthropic::outbound::error_to_openai", &outbound::error_to_openai(status, body));
            }
        }
        _ => assert_stream_to_openai("chat chunks from Messages events", &Cuts::read(body), || {
            Box::new(outbound::ChunksFromEvents::new(1_700_000_000))
        }),
    }
});
