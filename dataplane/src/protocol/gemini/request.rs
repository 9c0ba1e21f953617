//! An OpenAI chat completions request turned into Gemini's `GenerateContentRequest`: system
//! messages into `systemInstruction`, the conversation into `contents` of `parts` (text,
//! images, `functionCall`, `functionResponse`), tools into `functionDeclarations`, sampling and
//! JSON mode into `generationConfig`. The model and streaming are in the URL, not the body.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::protocol::anthropic::outbound::parse_data_url;
use crate::protocol::anthropic::response::tool_input;

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "unsupported_parameter", message: message.into() }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_value", message: message.into() }
}

/// Translates an OpenAI chat completions body into a `GenerateContentRequest` body.
pub fn request_from_openai(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(ApiError::InvalidJson("the body must be a JSON object".into())),
    };
    if request.contains_key("functions") || request.contains_key("function_call") {
        return Err(unsupported("functions", "functions: use tools (the legacy functions API is not translated)"));
    }
    let Some(Value::Array(messages)) = request.get("messages") else {
        return Err(invalid("messages", "messages: must be a list"));
    };
    let mut system: Vec<String> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Gemini answers a call by the function's name; OpenAI by the call's id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(text_of(content, i)?),
            "user" => push_turn(&mut contents, "user", user_parts(content, i)?),
            "assistant" => {
                let mut parts = Vec::new();
                let text = text_of(content, i)?;
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let function = call.get("function");
                    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
                    let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id.to_owned(), name.to_owned());
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": tool_input(arguments)}}));
                }
                push_turn(&mut contents, "model", parts);
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                let name = call_names
                    .get(id)
                    .map(String::as_str)
                    .or(message.get("name").and_then(Value::as_str))
                    .ok_or_else(|| {
                        invalid("messages", format!("messages.{i}.tool_call_id: {id:?} answers no earlier tool call"))
                    })?;
                let text = text_of(content, i)?;
                // Gemini wants an object: a JSON object result is sent as is, anything else as
                // its `output`, the key Google's docs name for a function's output.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({"output": text}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => return Err(unsupported("messages", format!("messages.{i}.role: {other:?} is not translated"))),
        }
    }
    let mut out = Map::new();
    out.insert(
        "contents".into(),
        Value::Array(contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect()),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": system.join("\n\n")}]}));
    }
    if let Some(Value::Array(tools)) = request.get("tools")
        && !tools.is_empty()
    {
        let declarations = tools
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                let function = tool
                    .get("function")
                    .filter(|_| tool.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
                    .ok_or_else(|| unsupported("tools", format!("tools.{i}: only function tools are translated")))?;
                let mut declaration = json!({"name": function.get("name").cloned().unwrap_or(Value::Null)});
                if let Some(description) = function.get("description") {
                    declaration["description"] = description.clone();
                }
                if let Some(parameters) = function.get("parameters") {
                    declaration["parametersJsonSchema"] = parameters.clone();
                }
                Ok(declaration)
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    let calling = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"mode": "AUTO"})),
            "none" => Some(json!({"mode": "NONE"})),
            "required" => Some(json!({"mode": "ANY"})),
            other => return Err(invalid("tool_choice", format!("tool_choice: unknown value {other:?}"))),
        },
        Some(object) => {
            let name = object.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            let name = name.ok_or_else(|| invalid("tool_choice", "tool_choice.function.name: Field required"))?;
            Some(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
    };
    if let Some(calling) = calling {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": calling}));
    }
    let config = generation_config(&request);
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

fn generation_config(request: &Map<String, Value>) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(max) = request.get("max_completion_tokens").or(request.get("max_tokens")).filter(|v| v.is_u64()) {
        config.insert("maxOutputTokens".into(), max.clone());
    }
    for (openai, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(value @ Value::Number(_)) = request.get(openai) {
            config.insert(gemini.into(), value.clone());
        }
    }
    match request.get("stop") {
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            config.insert("stopSequences".into(), Value::Array(items.clone()));
        }
        _ => {}
    }
    let format = request.get("response_format");
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some("json_schema") => {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let Some(schema) = format.and_then(|f| f.get("json_schema")).and_then(|s| s.get("schema")) {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => {}
    }
    config
}

/// Appends parts to the conversation, one turn per run of messages of the same role.
fn push_turn(contents: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => contents.push((role, parts)),
    }
}

/// The text of a string or a list of text parts (joined by newlines).
fn text_of(content: &Value, index: usize) -> Result<String, ApiError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => texts.push(text),
                    _ => {
                        return Err(unsupported(
                            "messages",
                            format!("messages.{index}.content: only text parts are translated in this message"),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(invalid("messages", format!("messages.{index}.content: must be a string or a list"))),
    }
}

/// A user message's parts: text, and images (`inlineData` from base64 data URLs, `fileData`
/// from http(s) URLs).
fn user_parts(content: &Value, index: usize) -> Result<Vec<Value>, ApiError> {
    let Value::Array(parts) = content else {
        let text = text_of(content, index)?;
        return Ok(if text.is_empty() { Vec::new() } else { vec![json!({"text": text})] });
    };
    let mut out = Vec::with_capacity(parts.len());
    for (p, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                if !text.is_empty() {
                    out.push(json!({"text": text}));
                }
            }
            Some("image_url") => {
                let url = part.get("image_url").and_then(|i| i.get("url").or(Some(i))).and_then(Value::as_str);
                let url = url.ok_or_else(|| {
                    invalid("messages", format!("messages.{index}.content.{p}.image_url.url: Field required"))
                })?;
                if let Some((mime_type, data)) = parse_data_url(url) {
                    out.push(json!({"inlineData": {"mimeType": mime_type, "data": data}}));
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    out.push(json!({"fileData": {"mimeType": image_mime_type(url), "fileUri": url}}));
                } else {
                    return Err(invalid(
                        "messages",
                        format!("messages.{index}.content.{p}.image_url.url: must be an http(s) or base64 data URL"),
                    ));
                }
            }
            other => {
                return Err(unsupported(
                    "messages",
                    format!("messages.{index}.content.{p}: parts of type {other:?} are not translated for Gemini"),
                ));
            }
        }
    }
    Ok(out)
}

/// Gemini's `fileData` needs a MIME type, which an image URL only hints at by its extension.
fn image_mime_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_types_come_from_the_extension() {
        assert_eq!(image_mime_type("https://x.test/a.PNG?size=2"), "image/png");
        assert_eq!(image_mime_type("https://x.test/photo"), "image/jpeg");
    }

    #[test]
    fn a_tool_result_must_answer_a_known_call() {
        let body = json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]});
        let error = request_from_openai(body.to_string().as_bytes()).expect_err("no such call");
        assert!(error.to_string().contains("nope"), "{error}");
    }
}
