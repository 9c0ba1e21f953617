//! OpenAI image generation (`POST /v1/images/generations`): every image is the same valid
//! 1x1 PNG, as `b64_json` (the default) or, for `response_format: "url"`, as a `data:` URL that
//! needs no server to fetch. The prompt is prefilled like any other; each image counts
//! [`IMAGE_TOKENS`] output tokens in the `usage` OpenAI reports for `gpt-image-1`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ApiError, Dialect, IMAGE_TOKENS, accept, admit, bad_request, json_value_response};
use crate::engine::Simulator;
use crate::prompt::PromptBuilder;
use crate::streaming::StreamPlan;

const DIALECT: Dialect = Dialect::OpenAi;
/// The model of a request that names none (OpenAI's API lets `model` be left out).
const DEFAULT_MODEL: &str = "gpt-image-1";
/// Most images one request may ask for (OpenAI's limit).
const MAX_IMAGES: u32 = 10;
/// A 1x1 transparent PNG, base64.
pub(crate) const PIXEL_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

#[derive(Debug, Deserialize)]
struct ImageRequest {
    model: Option<String>,
    prompt: String,
    n: Option<u32>,
    response_format: Option<String>,
    stream: Option<bool>,
}

impl super::ModelRequest for ImageRequest {
    fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }
}

#[derive(Serialize)]
struct ImagesResponse {
    created: u64,
    data: Vec<Image>,
    usage: ImageUsage,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Image {
    B64Json(&'static str),
    Url(String),
}

#[derive(Serialize)]
struct ImageUsage {
    total_tokens: usize,
    input_tokens: usize,
    output_tokens: usize,
    input_tokens_details: InputDetails,
}

#[derive(Serialize)]
struct InputDetails {
    text_tokens: usize,
    image_tokens: usize,
}

/// `POST /v1/images/generations`.
pub(crate) async fn generations(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accepted, request) = accept::<ImageRequest>(&sim, DIALECT, &headers, &body).await?;
    if request.prompt.trim().is_empty() {
        return Err(bad_request(DIALECT, "'prompt' must be a non-empty string."));
    }
    if request.stream == Some(true) {
        return Err(bad_request(DIALECT, "Streamed image generation is not simulated: leave 'stream' out."));
    }
    let n = request.n.unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return Err(bad_request(DIALECT, format!("'n' must be between 1 and {MAX_IMAGES}.")));
    }
    let url = match request.response_format.as_deref() {
        None | Some("b64_json") => false,
        Some("url") => true,
        Some(other) => {
            return Err(bad_request(DIALECT, format!("'response_format' must be 'b64_json' or 'url', not '{other}'.")));
        }
    };
    let model = super::ModelRequest::model(&request);
    let mut builder = PromptBuilder::new(model, sim.profile().prefix_cache_block_size as usize);
    builder.text(&request.prompt);
    let prompt = builder.finish();
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &prompt, 0).await?;
    sim.generate_unstreamed(&mut admission, &StreamPlan::prefill_only(accepted.fault)).await;
    let image =
        || if url { Image::Url(format!("data:image/png;base64,{PIXEL_PNG}")) } else { Image::B64Json(PIXEL_PNG) };
    let output_tokens = n as usize * IMAGE_TOKENS;
    let (_, created) = sim.response_ids(admission.index, prompt.hash);
    let response = ImagesResponse {
        created,
        data: (0..n).map(|_| image()).collect(),
        usage: ImageUsage {
            total_tokens: prompt.tokens + output_tokens,
            input_tokens: prompt.tokens,
            output_tokens,
            input_tokens_details: InputDetails { text_tokens: prompt.tokens, image_tokens: 0 },
        },
    };
    Ok(json_value_response(DIALECT, &response, accepted.fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_is_a_png() {
        let bytes = decode(PIXEL_PNG);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{bytes:?}");
        assert!(bytes.ends_with(b"IEND\xaeB`\x82"));
        let images = ImagesResponse {
            created: 1,
            data: vec![Image::B64Json(PIXEL_PNG), Image::Url("data:x".into())],
            usage: ImageUsage {
                total_tokens: 3,
                input_tokens: 1,
                output_tokens: 2,
                input_tokens_details: InputDetails { text_tokens: 1, image_tokens: 0 },
            },
        };
        let json = serde_json::to_value(&images).expect("json");
        assert_eq!(json["data"][0]["b64_json"], PIXEL_PNG);
        assert_eq!(json["data"][1]["url"], "data:x");
        assert_eq!(json["usage"]["input_tokens_details"]["image_tokens"], 0);
    }

    /// Standard base64 decoding, for the test only.
    fn decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let values: Vec<u32> = text
            .bytes()
            .filter(|b| *b != b'=')
            .map(|b| ALPHABET.iter().position(|a| *a == b).expect("base64") as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in values.chunks(4) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | (v << (18 - 6 * i)));
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }
}
