//! Gemini's `embedContent` and `batchEmbedContents` served by an OpenAI embeddings backend: the
//! request's contents (their text parts) become the `input` of an embeddings request, and the
//! vectors come back as `{"embedding": {"values"}}` (or `{"embeddings": [...]}`, in request
//! order). `taskType` and `title` have no OpenAI field and are dropped; `outputDimensionality`
//! is `dimensions`.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::request::model_name;
use crate::error::ApiError;

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_argument", message: message.into() }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "unsupported_parameter", message: message.into() }
}

/// Translates an `embedContent` body (`batch: false`) or a `batchEmbedContents` body for
/// `model` (from the URL) into an OpenAI embeddings request body.
pub fn to_openai(body: &[u8], model: &str, batch: bool) -> Result<Bytes, ApiError> {
    let request = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(ApiError::InvalidJson("the body must be a JSON object".into())),
        Err(e) => return Err(ApiError::InvalidJson(e.to_string())),
    };
    let model = model_name(model);
    let requests: Vec<(&Map<String, Value>, String)> = if batch {
        let Some(Value::Array(requests)) = request.get("requests") else {
            return Err(invalid("requests", "requests: Field required (a list of EmbedContentRequest)"));
        };
        if requests.is_empty() {
            return Err(invalid("requests", "requests: must not be empty"));
        }
        requests
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(item) => Ok((item, format!("requests.{i}"))),
                _ => Err(invalid("requests", format!("requests.{i}: must be an EmbedContentRequest"))),
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![(&request, String::new())]
    };
    let mut inputs = Vec::with_capacity(requests.len());
    let mut dimensions: Option<Option<u64>> = None;
    for (item, at) in &requests {
        let field = |name: &str| if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") };
        if let Some(named) = item.get("model").filter(|m| !m.is_null())
            && named.as_str().map(model_name) != Some(model)
        {
            return Err(invalid(
                "model",
                format!("{}: {named} is not the model in the URL ({model:?})", field("model")),
            ));
        }
        inputs.push(Value::String(content_text(item.get("content"), &field("content"))?));
        let wanted = match item.get("outputDimensionality") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64().filter(|d| *d > 0) {
                Some(d) => Some(d),
                None => {
                    return Err(invalid(
                        "outputDimensionality",
                        format!("{}: must be a positive integer", field("outputDimensionality")),
                    ));
                }
            },
        };
        match dimensions {
            Some(earlier) if earlier != wanted => {
                return Err(unsupported(
                    "outputDimensionality",
                    "outputDimensionality: every request of a batch must ask for the same (one OpenAI request carries one)",
                ));
            }
            _ => dimensions = Some(wanted),
        }
    }
    let input = match (batch, inputs.as_slice()) {
        (false, [one]) => one.clone(),
        _ => Value::Array(inputs),
    };
    let mut out = json!({"model": model, "input": input, "encoding_format": "float"});
    if let Some(Some(dimensions)) = dimensions {
        out["dimensions"] = json!(dimensions);
    }
    Ok(Bytes::from(out.to_string()))
}

/// The text of a `Content`: its text parts, joined by newlines (one content, one embedding).
fn content_text(content: Option<&Value>, at: &str) -> Result<String, ApiError> {
    let parts = match content {
        Some(Value::Object(content)) => content.get("parts"),
        _ => return Err(invalid("content", format!("{at}: Field required (a Content with text parts)"))),
    };
    let Some(Value::Array(parts)) = parts else {
        return Err(invalid("content", format!("{at}.parts: Field required")));
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (p, part) in parts.iter().enumerate() {
        match part.get("text").and_then(Value::as_str) {
            Some(text) => texts.push(text),
            None => {
                return Err(unsupported("content", format!("{at}.parts.{p}: only text parts are embedded here")));
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Translates an OpenAI embeddings answer into `embedContent`'s answer (`batch: false`) or
/// `batchEmbedContents`'s, with `usageMetadata`. `None` when the body is no list of float
/// embeddings.
pub fn response_from_openai(body: &[u8], batch: bool) -> Option<Vec<u8>> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let mut data: Vec<&Value> = answer.get("data")?.as_array()?.iter().collect();
    data.sort_by_key(|item| item.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX));
    let embeddings = data
        .iter()
        .map(|item| {
            let values = item.get("embedding")?.as_array()?;
            values.iter().all(Value::is_number).then(|| json!({"values": values}))
        })
        .collect::<Option<Vec<Value>>>()?;
    let prompt = answer.get("usage").and_then(|u| u.get("prompt_tokens")).and_then(Value::as_u64).unwrap_or(0);
    let usage = json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
    let out = if batch {
        json!({"embeddings": embeddings, "usageMetadata": usage})
    } else {
        let [embedding] = <[Value; 1]>::try_from(embeddings).ok()?;
        json!({"embedding": embedding, "usageMetadata": usage})
    };
    serde_json::to_vec(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::golden;

    fn translated(fixture: &str, batch: bool) -> Value {
        let body = to_openai(golden::text(fixture).as_bytes(), "models/m-embed", batch).expect("translates");
        serde_json::from_slice(&body).expect("json")
    }

    #[test]
    fn embed_content_becomes_an_embeddings_request_and_back() {
        golden::check("gemini/embed.openai.json", &translated("gemini/embed.gemini.json", false));
        let answer = golden::text("gemini/embed.response.openai.json");
        let out = response_from_openai(answer.as_bytes(), false).expect("an embedding");
        golden::check("gemini/embed.response.gemini.json", &serde_json::from_slice(&out).expect("json"));
    }

    #[test]
    fn batch_embed_contents_keeps_the_request_order() {
        golden::check("gemini/batch_embed.openai.json", &translated("gemini/batch_embed.gemini.json", true));
        let answer = golden::text("gemini/batch_embed.response.openai.json");
        let out = response_from_openai(answer.as_bytes(), true).expect("embeddings");
        golden::check("gemini/batch_embed.response.gemini.json", &serde_json::from_slice(&out).expect("json"));
    }

    #[test]
    fn what_cannot_be_embedded_is_refused_by_name() {
        let refused = |body: Value, batch: bool| {
            let error = to_openai(body.to_string().as_bytes(), "m", batch).expect_err("refused");
            (error.param().unwrap_or_default(), error.to_string())
        };
        assert_eq!(refused(json!({}), false).0, "content");
        assert_eq!(refused(json!({"requests": []}), true).0, "requests");
        let image = json!({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}});
        assert_eq!(refused(image, false), ("content", "content.parts.0: only text parts are embedded here".into()));
        let other = json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]});
        assert_eq!(refused(other, true).0, "model");
        let mixed = json!({"requests": [
            {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
            {"content": {"parts": [{"text": "b"}]}}
        ]});
        assert_eq!(refused(mixed, true).0, "outputDimensionality");
        assert_eq!(
            refused(json!({"content": {"parts": []}, "outputDimensionality": 0}), false).0,
            "outputDimensionality"
        );
    }

    #[test]
    fn answers_that_are_no_float_embeddings_are_not_translated() {
        assert!(response_from_openai(br#"{"data":[{"index":0,"embedding":"AAAA"}]}"#, false).is_none());
        assert!(response_from_openai(br#"{"data":[]}"#, false).is_none(), "one embedding for embedContent");
        assert!(response_from_openai(b"{}", true).is_none());
    }
}
