//! OpenAI's Responses API, served by chat backends. Modes (the input's first byte, then the
//! body or, for streams, the cuts and the stream; see the crate's doc):
//!
//! - `0`: a client's `/v1/responses` body into a chat request, which the gateway must then be
//!   able to read (model, stream), and whose echo makes a response object.
//! - `1`: an upstream's chat completion (or error) back into a response object.
//! - `2`: an upstream's chat completion stream into the Responses event stream.
//!
//! Every output must be JSON (streams: well-formed events of JSON), and a stream's output must
//! not depend on where it was cut.

#![no_main]

use hyper::StatusCode;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sluice_fuzz::{Cuts, assert_chat_request, assert_client_stream, assert_json};
use sluice_gateway::protocol::responses::{Echo, request};
use sluice_gateway::respond::{Translation, translate_whole};

/// What the requests of modes 1 and 2 asked for, as a response object repeats it.
fn echo() -> Echo {
    let request: Map<String, Value> = [
        ("instructions".to_owned(), json!("Answer briefly.")),
        ("temperature".to_owned(), json!(0.2)),
        ("metadata".to_owned(), json!({"team": "search"})),
    ]
    .into_iter()
    .collect();
    Echo::of(&request)
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = sluice_fuzz::mode(data, 3) else { return };
    match mode {
        0 => {
            let Ok(translated) = request::to_openai(body) else { return };
            let Value::Object(request) = assert_json("a Responses body to_openai accepted", body) else {
                panic!("to_openai accepted a body that is no object")
            };
            let model = request.get("model").and_then(Value::as_str).unwrap_or_default();
            let stream = request.get("stream") == Some(&Value::Bool(true));
            assert_chat_request("responses::request::to_openai", &translated.body, model, stream);
            let completion = br#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
            let (_, answer) = translate_whole(&Translation::Responses(translated.echo), StatusCode::OK, completion, 0);
            assert_json("translate_whole (Responses) with the request's echo", &answer);
        }
        1 => {
            for status in [StatusCode::OK, StatusCode::BAD_REQUEST] {
                let (_, answer) = translate_whole(&Translation::Responses(echo()), status, body, 0);
                if status.is_success() {
                    assert_json("translate_whole (Responses)", &answer);
                }
            }
        }
        _ => assert_client_stream("the Responses stream", &Cuts::read(body), || {
            Translation::Responses(echo()).stream(12, 1_700_000_000)
        }),
    }
});
