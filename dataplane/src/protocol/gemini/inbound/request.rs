//! A Gemini `GenerateContentRequest` turned into the OpenAI chat completions request that means
//! the same: `systemInstruction` into a system message, `contents` into messages (text, inline
//! and file images, `functionCall` into tool calls, `functionResponse` into tool messages),
//! `functionDeclarations` into tools, `toolConfig` into `tool_choice` and `generationConfig`
//! into sampling, stop sequences and JSON mode. The model and streaming come from the URL.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::protocol::openai;

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_argument", message: message.into() }
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, code: "unsupported_parameter", message: message.into() }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson("the body must be a JSON object".into())),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// The model named in the URL (`gemini-pro` or `models/gemini-pro`).
pub fn model_name(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// Translates a `generateContent` body for `model` into a chat completions body; `stream`
/// (from the method) asks for a stream with its usage chunk.
pub fn to_openai(body: &[u8], model: &str, stream: bool) -> Result<Bytes, ApiError> {
    let request = parse_object(body)?;
    if request.get("cachedContent").is_some_and(|c| !c.is_null()) {
        return Err(unsupported("cachedContent", "cachedContent: the gateway keeps no cached content"));
    }
    let mut out = prompt(&request, model)?;
    if let Some(config) = request.get("generationConfig").filter(|c| !c.is_null()) {
        generation_config(config, &mut out)?;
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Bytes::from(serde_json::to_vec(&Value::Object(out)).unwrap_or_default()))
}

/// A `countTokens` request: its translated body (to resolve the model) and the gateway's
/// estimate of the prompt.
#[derive(Debug)]
pub struct TokenCount {
    /// The translated body.
    pub body: Bytes,
    /// Estimated prompt tokens.
    pub total_tokens: u64,
}

/// Estimates a `countTokens` body: `contents` (and tools...) at the top level, or a whole
/// `generateContentRequest`.
pub fn count_tokens(body: &[u8], model: &str) -> Result<TokenCount, ApiError> {
    let mut request = parse_object(body)?;
    if let Some(Value::Object(inner)) = request.remove("generateContentRequest") {
        request = inner;
    }
    if !request.contains_key("contents") {
        request.insert("contents".into(), json!([]));
    }
    let mut out = prompt(&request, model)?;
    let body = Bytes::from(serde_json::to_vec(&Value::Object(out.clone())).unwrap_or_default());
    out.remove("model");
    let counted_len = serde_json::to_vec(&Value::Object(out)).map_or(0, |v| v.len());
    Ok(TokenCount { body, total_tokens: openai::estimate_prompt_tokens(counted_len) })
}

/// `model`, `messages`, `tools` and `tool_choice`.
fn prompt(request: &Map<String, Value>, model: &str) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model_name(model).to_owned()));
    let mut messages = Vec::new();
    if let Some(system) = request.get("systemInstruction").filter(|s| !s.is_null()) {
        let text = match system {
            Value::String(text) => text.clone(),
            content => texts(content.get("parts"), "systemInstruction")?,
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    let Some(Value::Array(contents)) = request.get("contents") else {
        return Err(invalid("contents", "contents: Field required (a list of Content)"));
    };
    let mut calls = Calls::default();
    for (i, content) in contents.iter().enumerate() {
        translate_content(content, i, &mut calls, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        let Value::Array(tools) = tools else { return Err(invalid("tools", "tools: must be a list")) };
        let mut functions = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            let Some(Value::Object(tool)) = Some(tool) else { continue };
            for (kind, value) in tool {
                match kind.as_str() {
                    "functionDeclarations" | "function_declarations" => {
                        for declaration in value.as_array().into_iter().flatten() {
                            functions.push(function_tool(declaration, i)?);
                        }
                    }
                    other => {
                        return Err(unsupported(
                            "tools",
                            format!("tools.{i}.{other}: only functionDeclarations are translated"),
                        ));
                    }
                }
            }
        }
        if !functions.is_empty() {
            out.insert("tools".into(), Value::Array(functions));
        }
    }
    let calling = request.get("toolConfig").and_then(|c| c.get("functionCallingConfig"));
    if let Some(calling) = calling.filter(|c| !c.is_null()) {
        let allowed: Vec<&str> = calling
            .get("allowedFunctionNames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let choice = match calling.get("mode").and_then(Value::as_str).unwrap_or("AUTO") {
            "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => json!("auto"),
            "NONE" => json!("none"),
            "ANY" if allowed.len() == 1 => json!({"type": "function", "function": {"name": allowed[0]}}),
            "ANY" => json!("required"),
            other => {
                return Err(invalid(
                    "toolConfig",
                    format!("toolConfig.functionCallingConfig.mode: unknown mode {other:?}"),
                ));
            }
        };
        out.insert("tool_choice".into(), choice);
    }
    Ok(out)
}

/// A `functionDeclaration` as an OpenAI function tool. Gemini's `parameters` is an OpenAPI
/// schema with upper-case type names, JSON Schema's are lower-case; `parametersJsonSchema` is
/// JSON Schema already.
fn function_tool(declaration: &Value, index: usize) -> Result<Value, ApiError> {
    let name = declaration
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("tools", format!("tools.{index}.functionDeclarations: name is required")))?;
    let mut function = json!({"name": name});
    if let Some(description) = declaration.get("description").filter(|d| !d.is_null()) {
        function["description"] = description.clone();
    }
    let parameters = match (declaration.get("parametersJsonSchema"), declaration.get("parameters")) {
        (Some(schema), _) if !schema.is_null() => Some(schema.clone()),
        (_, Some(schema)) if !schema.is_null() => Some(json_schema(schema)),
        _ => None,
    };
    function["parameters"] = parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    Ok(json!({"type": "function", "function": function}))
}

/// An OpenAPI `Schema` as JSON Schema: type names lower-cased, `nullable` kept as is (a
/// keyword JSON Schema validators ignore).
fn json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), value) {
                        ("type", Value::String(kind)) => Value::String(kind.to_ascii_lowercase()),
                        ("properties", Value::Object(properties)) => Value::Object(
                            properties.iter().map(|(name, property)| (name.clone(), json_schema(property))).collect(),
                        ),
                        ("items" | "anyOf", other) => json_schema(other),
                        (_, other) => other.clone(),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(json_schema).collect()),
        other => other.clone(),
    }
}

/// The tool calls of the conversation so far, so that a `functionResponse` (which names the
/// function, and its call's id only when the client kept it) answers the right call.
#[derive(Default)]
struct Calls {
    /// (id, name, answered).
    made: Vec<(String, String, bool)>,
}

impl Calls {
    fn call(&mut self, id: Option<&str>, name: &str) -> String {
        let id = id.map_or_else(|| format!("call_{}", self.made.len()), str::to_owned);
        self.made.push((id.clone(), name.to_owned(), false));
        id
    }

    /// The id of the call a response answers: its own id, else the first unanswered call of
    /// the function.
    fn answer(&mut self, id: Option<&str>, name: &str) -> Option<String> {
        let slot = match id {
            Some(id) => self.made.iter().position(|(made, _, _)| made == id),
            None => self.made.iter().position(|(_, made, answered)| made == name && !answered),
        };
        match slot {
            Some(slot) => {
                self.made[slot].2 = true;
                Some(self.made[slot].0.clone())
            }
            None => id.map(str::to_owned),
        }
    }
}

/// The text of a list of text parts, joined by newlines.
fn texts(parts: Option<&Value>, param: &'static str) -> Result<String, ApiError> {
    let Some(Value::Array(parts)) = parts else { return Err(invalid(param, format!("{param}.parts: Field required"))) };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("text").and_then(Value::as_str) {
            Some(text) => out.push(text),
            None => return Err(unsupported(param, format!("{param}: only text parts are supported here"))),
        }
    }
    Ok(out.join("\n"))
}

/// One `Content`, appended to `out` as one or more messages: a user turn's function responses
/// become `tool` messages (first, right after the calls they answer), a model turn's function
/// calls become `tool_calls`.
fn translate_content(content: &Value, index: usize, calls: &mut Calls, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = content.get("role").and_then(Value::as_str).unwrap_or("user");
    let Some(Value::Array(parts)) = content.get("parts") else {
        return Err(invalid("contents", format!("contents.{index}.parts: Field required")));
    };
    match role {
        "user" | "function" => {
            let mut user_parts = Vec::new();
            for (p, part) in parts.iter().enumerate() {
                let at = || format!("contents.{index}.parts.{p}");
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    user_parts.push(json!({"type": "text", "text": text}));
                } else if let Some(data) = part.get("inlineData") {
                    let mime_type = data.get("mimeType").and_then(Value::as_str).unwrap_or_default();
                    let bytes = data.get("data").and_then(Value::as_str).unwrap_or_default();
                    if !mime_type.starts_with("image/") {
                        return Err(unsupported(
                            "contents",
                            format!("{}.inlineData: only images are translated", at()),
                        ));
                    }
                    user_parts.push(
                        json!({"type": "image_url", "image_url": {"url": format!("data:{mime_type};base64,{bytes}")}}),
                    );
                } else if let Some(file) = part.get("fileData") {
                    let mime_type = file.get("mimeType").and_then(Value::as_str).unwrap_or("image/jpeg");
                    let uri = file.get("fileUri").and_then(Value::as_str).unwrap_or_default();
                    if !mime_type.starts_with("image/") || !(uri.starts_with("https://") || uri.starts_with("http://"))
                    {
                        return Err(unsupported(
                            "contents",
                            format!("{}.fileData: only images at http(s) URLs are translated", at()),
                        ));
                    }
                    user_parts.push(json!({"type": "image_url", "image_url": {"url": uri}}));
                } else if let Some(response) = part.get("functionResponse") {
                    let name = response.get("name").and_then(Value::as_str).unwrap_or_default();
                    let id = response.get("id").and_then(Value::as_str);
                    let call_id = calls.answer(id, name).ok_or_else(|| {
                        invalid(
                            "contents",
                            format!("{}.functionResponse: {name:?} answers no earlier functionCall", at()),
                        )
                    })?;
                    let result = response.get("response").cloned().unwrap_or(Value::Null);
                    out.push(json!({"role": "tool", "tool_call_id": call_id, "content": result.to_string()}));
                } else {
                    return Err(unsupported("contents", format!("{}: this kind of part is not translated", at())));
                }
            }
            if !user_parts.is_empty() {
                let all_text = user_parts.iter().all(|p| p["type"] == "text");
                let content = if all_text {
                    let text: Vec<&str> = user_parts.iter().filter_map(|p| p["text"].as_str()).collect();
                    Value::String(text.join("\n"))
                } else {
                    Value::Array(user_parts)
                };
                out.push(json!({"role": "user", "content": content}));
            }
        }
        "model" => {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for (p, part) in parts.iter().enumerate() {
                if part.get("thought") == Some(&Value::Bool(true)) {
                    continue;
                }
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                } else if let Some(call) = part.get("functionCall") {
                    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                    let id = calls.call(call.get("id").and_then(Value::as_str), name);
                    let arguments = call.get("args").map_or_else(|| "{}".to_owned(), Value::to_string);
                    tool_calls.push(json!({"id": id, "type": "function",
                        "function": {"name": name, "arguments": arguments}}));
                } else {
                    return Err(unsupported(
                        "contents",
                        format!(
                            "contents.{index}.parts.{p}: only text and functionCall parts are translated in model turns"
                        ),
                    ));
                }
            }
            let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }});
            if !tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(tool_calls);
            }
            out.push(message);
        }
        other => {
            return Err(invalid("contents", format!("contents.{index}.role: {other:?} must be user or model")));
        }
    }
    Ok(())
}

/// `generationConfig`: sampling, length, stop sequences, candidates and JSON mode. `topK`,
/// `thinkingConfig`, `responseModalities` and the like have no chat completions field and are
/// left out.
fn generation_config(config: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Value::Object(config) = config else {
        return Err(invalid("generationConfig", "generationConfig: must be an object"));
    };
    for (from, to) in [
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("maxOutputTokens", "max_tokens"),
        ("candidateCount", "n"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
        ("seed", "seed"),
    ] {
        match config.get(from) {
            None | Some(Value::Null) => {}
            Some(value @ Value::Number(_)) => {
                out.insert(to.into(), value.clone());
            }
            Some(_) => return Err(invalid("generationConfig", format!("generationConfig.{from}: must be a number"))),
        }
    }
    match config.get("stopSequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => {
            return Err(invalid("generationConfig", "generationConfig.stopSequences: must be a list of strings"));
        }
    }
    let schema = config
        .get("responseJsonSchema")
        .filter(|s| !s.is_null())
        .cloned()
        .or_else(|| config.get("responseSchema").filter(|s| !s.is_null()).map(json_schema));
    match (config.get("responseMimeType").and_then(Value::as_str), schema) {
        (_, Some(schema)) => {
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
        }
        (Some("application/json"), None) => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        (None | Some("text/plain"), None) => {}
        (Some(other), None) => {
            return Err(unsupported(
                "generationConfig",
                format!("generationConfig.responseMimeType: {other:?} is not translated"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value, stream: bool) -> Value {
        let out = to_openai(body.to_string().as_bytes(), "models/m-ok", stream).expect("translates");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn a_conversation_with_function_calls_becomes_chat_messages() {
        let out = translate(
            json!({
                "systemInstruction": {"parts": [{"text": "Be terse."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]},
                    {"role": "model", "parts": [{"text": "21", "thought": true}, {"text": "It is 21C."}]},
                    {"parts": [{"text": "Thanks"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}
                ],
                "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
                "generationConfig": {"temperature": 0.5, "maxOutputTokens": 20, "stopSequences": ["END"],
                    "responseMimeType": "application/json", "topK": 3}
            }),
            true,
        );
        assert_eq!(
            out,
            json!({
                "model": "m-ok",
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":21}"},
                    {"role": "assistant", "content": "It is 21C."},
                    {"role": "user", "content": [{"type": "text", "text": "Thanks"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "temperature": 0.5,
                "max_tokens": 20,
                "stop": ["END"],
                "response_format": {"type": "json_object"},
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn what_cannot_be_translated_is_refused_by_name() {
        let refused =
            |body: Value| to_openai(body.to_string().as_bytes(), "m", false).expect_err("refused").to_string();
        assert!(refused(json!({})).contains("contents"));
        assert!(refused(json!({"contents": [], "tools": [{"googleSearch": {}}]})).contains("googleSearch"));
        assert!(refused(json!({"contents": [], "cachedContent": "c/1"})).contains("cachedContent"));
        let orphan =
            json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]});
        assert!(refused(orphan).contains("answers no earlier functionCall"));
        let audio = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA"}}]}]});
        assert!(refused(audio).contains("only images"));
    }

    #[test]
    fn function_responses_answer_calls_by_id_or_by_name_in_order() {
        let out = translate(
            json!({"contents": [
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}},
                    {"functionCall": {"id": "x9", "name": "f", "args": {"a": 1}}}]},
                {"role": "user", "parts": [{"functionResponse": {"id": "x9", "name": "f", "response": {"r": 2}}},
                    {"functionResponse": {"name": "f", "response": {"r": 1}}}]}
            ]}),
            false,
        );
        let ids: Vec<&str> = out["messages"].as_array().expect("messages")[1..]
            .iter()
            .filter_map(|m| m["tool_call_id"].as_str())
            .collect();
        assert_eq!(ids, ["x9", "call_0"]);
        assert!(out.get("stream").is_none());
    }

    #[test]
    fn counting_accepts_a_whole_generate_request() {
        let count = count_tokens(
            json!({"generateContentRequest": {"contents": [{"parts": [{"text": "hello there"}]}]}})
                .to_string()
                .as_bytes(),
            "m",
        )
        .expect("counts");
        assert!(count.total_tokens > 0);
        let body: Value = serde_json::from_slice(&count.body).expect("json");
        assert_eq!(body["model"], "m");
        assert!(count_tokens(b"[]", "m").is_err());
    }
}
