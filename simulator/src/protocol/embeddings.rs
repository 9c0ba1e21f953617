//! OpenAI Embeddings (`POST /v1/embeddings`, float or base64) and the rerank API vLLM serves
//! (`POST /v1/rerank`, Jina/Cohere shape). Vectors are deterministic hashed bags of tokens, so
//! texts that share words are close, and rerank scores follow word overlap.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, Dialect, accept, admit, bad_request, json_value_response};
use crate::engine::Simulator;
use crate::prompt::{Prompt, PromptBuilder};
use crate::rng::{SplitMix64, combine, fnv1a, mix64};
use crate::streaming::StreamPlan;
use crate::tokenizer;

const DIALECT: Dialect = Dialect::OpenAi;
/// Coordinates touched by each token of a text.
const FEATURES_PER_TOKEN: usize = 8;
/// Weight of the per-text noise that keeps distinct texts apart.
const NOISE: f32 = 0.05;

/// A unit vector of `dimensions` for `text`: the sum of signed hashed features of its tokens
/// (lower-cased, whitespace-trimmed), plus a little seeded noise, normalized.
pub(crate) fn embed(text: &str, dimensions: usize, seed: u64) -> Vec<f32> {
    let mut vector = vec![0.0f32; dimensions];
    for piece in tokenizer::pieces(text) {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        let mut hash = combine(seed, fnv1a(piece.to_ascii_lowercase().as_bytes()));
        for _ in 0..FEATURES_PER_TOKEN {
            hash = mix64(hash);
            let sign = if hash & 1 == 0 { 1.0 } else { -1.0 };
            vector[((hash >> 1) % dimensions as u64) as usize] += sign;
        }
    }
    let mut rng = SplitMix64::new(combine(seed, fnv1a(text.as_bytes())));
    let scale = NOISE * ((tokenizer::count(text) * FEATURES_PER_TOKEN) as f32 / dimensions as f32).sqrt().max(1.0);
    for value in &mut vector {
        *value += scale * (rng.next_f64() as f32 * 2.0 - 1.0);
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in &mut vector {
            *value /= norm;
        }
    }
    vector
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Standard base64 (with padding) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Value,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
}

impl super::ModelRequest for EmbeddingRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

/// The texts of an embedding input: a string, strings, token ids, or lists of token ids (token
/// ids are embedded as their decimal text).
fn inputs(input: &Value) -> Option<Vec<String>> {
    let ids = |ids: &Value| -> Option<String> {
        let ids = ids.as_array()?;
        let words: Option<Vec<String>> = ids.iter().map(|id| id.as_u64().map(|i| i.to_string())).collect();
        Some(words?.join(" "))
    };
    match input {
        Value::String(text) => Some(vec![text.clone()]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        }
        Value::Array(items) if items.iter().all(Value::is_u64) => Some(vec![ids(input)?]),
        Value::Array(items) => items.iter().map(ids).collect(),
        _ => None,
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The prompt of texts that are only prefilled (embeddings, rerank).
fn prefill_prompt(sim: &Simulator, model: &str, texts: &[&str]) -> Prompt {
    let mut builder = PromptBuilder::new(model, sim.profile().prefix_cache_block_size as usize);
    for text in texts {
        builder.text(text);
    }
    builder.finish()
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accepted, request) = accept::<EmbeddingRequest>(&sim, DIALECT, &headers, &body).await?;
    let Some(texts) = inputs(&request.input) else {
        return Err(bad_request(DIALECT, "'input' must be a non-empty string, list of strings, or list of token ids."));
    };
    let dimensions = request.dimensions.unwrap_or(sim.profile().embedding_dimensions);
    if !(1..=65_536).contains(&dimensions) {
        return Err(bad_request(DIALECT, "'dimensions' must be between 1 and 65536."));
    }
    let base64_wanted = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad_request(DIALECT, format!("'encoding_format' must be 'float' or 'base64', not '{other}'.")));
        }
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let prompt = prefill_prompt(&sim, &request.model, &refs);
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &prompt, 0).await?;
    sim.generate_unstreamed(&mut admission, &StreamPlan::prefill_only(accepted.fault)).await;
    let seed = sim.profile().seed;
    let data = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embed(text, dimensions as usize, seed);
            let embedding = if base64_wanted {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingData::Base64(base64(&bytes))
            } else {
                EmbeddingData::Float(vector)
            };
            Embedding { object: "embedding", index, embedding }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model: &request.model,
        usage: EmbeddingUsage { prompt_tokens: prompt.tokens, total_tokens: prompt.tokens },
    };
    Ok(json_value_response(DIALECT, &list, accepted.fault))
}

#[derive(Debug, Deserialize)]
struct RerankRequest {
    model: String,
    query: String,
    documents: Vec<Value>,
    top_n: Option<usize>,
    return_documents: Option<bool>,
}

impl super::ModelRequest for RerankRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

#[derive(Serialize)]
struct RerankResponse<'a> {
    id: String,
    model: &'a str,
    usage: RerankUsage,
    results: Vec<RerankResult<'a>>,
}

#[derive(Serialize)]
struct RerankUsage {
    total_tokens: usize,
}

#[derive(Serialize)]
struct RerankResult<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Document<'a>>,
    relevance_score: f32,
}

#[derive(Serialize)]
struct Document<'a> {
    text: &'a str,
}

/// `POST /v1/rerank`: documents scored by how close their embedding is to the query's,
/// highest first.
pub(crate) async fn rerank(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accepted, request) = accept::<RerankRequest>(&sim, DIALECT, &headers, &body).await?;
    let documents: Option<Vec<&str>> =
        request.documents.iter().map(|d| d.as_str().or_else(|| d.get("text")?.as_str())).collect();
    let Some(documents) = documents else {
        return Err(bad_request(DIALECT, "'documents' must be strings or objects with a 'text' field."));
    };
    let mut texts = vec![request.query.as_str()];
    texts.extend(&documents);
    let prompt = prefill_prompt(&sim, &request.model, &texts);
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &prompt, 0).await?;
    sim.generate_unstreamed(&mut admission, &StreamPlan::prefill_only(accepted.fault)).await;
    let seed = sim.profile().seed;
    let query = embed(&request.query, 256, seed);
    let mut results: Vec<RerankResult<'_>> = documents
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let similarity = cosine(&query, &embed(text, 256, seed));
            RerankResult {
                index,
                document: request.return_documents.unwrap_or(true).then_some(Document { text }),
                // A logistic of the cosine: unrelated texts near 0.1, near-duplicates near 0.9.
                relevance_score: 1.0 / (1.0 + (-(similarity * 5.0 - 2.0)).exp()),
            }
        })
        .collect();
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    results.truncate(request.top_n.unwrap_or(usize::MAX));
    let (id, _) = sim.response_ids(admission.index, prompt.hash);
    let response = RerankResponse {
        id: format!("rerank-{id}"),
        model: &request.model,
        usage: RerankUsage { total_tokens: prompt.tokens },
        results,
    };
    Ok(json_value_response(DIALECT, &response, accepted.fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_unit_deterministic_and_meaningful() {
        let a = embed("the cat sat on the mat", 256, 0);
        assert_eq!(a.len(), 256);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-4);
        assert_eq!(a, embed("the cat sat on the mat", 256, 0));
        let close = embed("the cat sat on a mat", 256, 0);
        let far = embed("quarterly revenue grew by nine percent", 256, 0);
        assert!(cosine(&a, &close) > 0.6, "{}", cosine(&a, &close));
        assert!(cosine(&a, &far) < 0.3, "{}", cosine(&a, &far));
        assert!(embed("", 8, 0).iter().any(|v| *v != 0.0));
    }

    #[test]
    fn inputs_of_every_shape() {
        assert_eq!(inputs(&serde_json::json!("a")), Some(vec!["a".to_owned()]));
        assert_eq!(inputs(&serde_json::json!(["a", "b"])).map(|v| v.len()), Some(2));
        assert_eq!(inputs(&serde_json::json!([1, 2])), Some(vec!["1 2".to_owned()]));
        assert_eq!(inputs(&serde_json::json!([[1], [2, 3]])).map(|v| v.len()), Some(2));
        assert_eq!(inputs(&serde_json::json!([])), None);
        assert_eq!(inputs(&serde_json::json!(3)), None);
    }
}
