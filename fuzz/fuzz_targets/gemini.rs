//! Gemini's API, both ways. Modes (the input's first byte, then the body or, for streams, the
//! cuts and the stream; see the crate's doc):
//!
//! - `0`, `1`: a client's `generateContent` body (`1`: `streamGenerateContent`) into a chat
//!   request, which the gateway must then be able to read (model from the URL, stream).
//! - `2`: a `countTokens` body.
//! - `3`, `4`: an `embedContent` (`4`: `batchEmbedContents`) body into an embeddings request.
//! - `5`: an upstream's chat completion, embeddings or error back into Gemini's answers, and a
//!   model list into Gemini's.
//! - `6`: an upstream's chat completion stream into Gemini's stream.
//! - `7`: a chat request into a `GenerateContentRequest` for a Gemini upstream.
//! - `8`: a Gemini upstream's answer (or error) into a chat completion.
//! - `9`: a Gemini upstream's stream into chat completion chunks.
//!
//! Every output must be JSON (streams: well-formed events of JSON), and a stream's output must
//! not depend on where it was cut.

#![no_main]

use hyper::StatusCode;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{Cuts, assert_chat_request, assert_client_stream, assert_json, assert_stream_to_openai};
use sluice_gateway::protocol::gemini::{self, inbound};
use sluice_gateway::protocol::openai;
use sluice_gateway::respond::{Translation, translate_whole};

/// The model as the URL names it, and as the chat request must name it.
const URL_MODEL: &str = "models/gemini-2.5-flash";
const MODEL: &str = "gemini-2.5-flash";

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = sluice_fuzz::mode(data, 10) else { return };
    match mode {
        0 | 1 => {
            let stream = mode == 1;
            let Ok(translated) = inbound::request::to_openai(body, URL_MODEL, stream) else { return };
            assert_chat_request("gemini::inbound::request::to_openai", &translated, MODEL, stream);
        }
        2 => {
            let Ok(count) = inbound::request::count_tokens(body, URL_MODEL) else { return };
            assert_chat_request("gemini::inbound::request::count_tokens", &count.body, MODEL, false);
        }
        3 | 4 => {
            let Ok(translated) = inbound::embed::to_openai(body, URL_MODEL, mode == 4) else { return };
            let request = assert_json("gemini::inbound::embed::to_openai", &translated);
            assert_eq!(request["model"], MODEL);
            assert!(openai::read_fields(&translated).is_ok(), "the embeddings request must read: {request}");
        }
        5 => {
            let translations = [
                Translation::Gemini,
                Translation::GeminiEmbed { batch: false },
                Translation::GeminiEmbed { batch: true },
            ];
            for translation in &translations {
                for status in [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE] {
                    let (_, answer) = translate_whole(translation, status, body, 0);
                    assert_json("translate_whole (Gemini)", &answer);
                }
            }
            if let Ok(text) = std::str::from_utf8(body)
                && serde_json::from_str::<serde_json::Value>(text).is_ok()
            {
                assert_json(
                    "gemini::inbound::response::models_from_openai",
                    inbound::response::models_from_openai(text).as_bytes(),
                );
            }
        }
        6 => assert_client_stream("the Gemini stream", &Cuts::read(body), || Translation::Gemini.stream(12, 0)),
        7 => {
            let Ok(translated) = gemini::request::request_from_openai(body) else { return };
            assert_json("gemini::request::request_from_openai", &translated);
        }
        8 => {
            if let Some(completion) = gemini::response::completion_from_response(body, 1_700_000_000) {
                assert_json("gemini::response::completion_from_response", &completion);
                assert!(openai::read_usage(&completion).is_some(), "a translated completion has usage");
            }
            for status in [StatusCode::BAD_REQUEST, StatusCode::INTERNAL_SERVER_ERROR] {
                assert_json("gemini::error_to_openai", &gemini::error_to_openai(status, body));
            }
        }
        _ => assert_stream_to_openai("chat chunks from Gemini's stream", &Cuts::read(body), || {
            Box::new(gemini::response::ChunksFromGemini::new(1_700_000_000))
        }),
    }
});
