//! Gemini `generateContent` and `streamGenerateContent` (`POST
//! /v1beta/models/{model}:{method}`), as Google documents them: `contents` of `parts`,
//! `generationConfig`, function calling, `usageMetadata`, SSE (`alt=sse`) or a streamed JSON
//! array, and Google's error shape.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::openai::plan_of;
use super::{
    ApiError, Dialect, IMAGE_TOKENS, admit, bad_request, check_model, echo_or, json_value_response, parse_body,
    prelude, stream_response,
};
use crate::engine::Simulator;
use crate::generation::{Finish, Output, OutputMode, OutputSpec, generate};
use crate::prompt::{Prompt, PromptBuilder};
use crate::streaming::Renderer;

const DIALECT: Dialect = Dialect::Gemini;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<Content>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<Content>,
    tools: Option<Vec<Value>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<Value>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Debug, Deserialize)]
struct Content {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u32>,
    #[serde(alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
    #[serde(alias = "candidate_count")]
    candidate_count: Option<u32>,
    #[serde(alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(alias = "response_json_schema")]
    response_json_schema: Option<Value>,
}

/// The text parts of the last user turn (what the profile's `echo` repeats).
fn last_user_text(contents: &[Content]) -> Option<String> {
    let turn = contents.iter().rev().find(|c| c.role.as_deref().is_none_or(|role| role == "user"))?;
    Some(turn.parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect())
}

fn add_parts(builder: &mut PromptBuilder, parts: &[Value]) {
    for part in parts {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            builder.text(text);
        } else if let Some(call) = part.get("functionCall").or_else(|| part.get("function_call")) {
            builder.text(&call.to_string());
        } else if let Some(response) = part.get("functionResponse").or_else(|| part.get("function_response")) {
            builder.text(&response.to_string());
        } else {
            builder.markers(6, IMAGE_TOKENS);
        }
    }
}

fn build_prompt(sim: &Simulator, model: &str, request: &GenerateRequest) -> Prompt {
    let mut builder = PromptBuilder::new(model, sim.profile().prefix_cache_block_size as usize);
    builder.tools(request.tools.as_ref());
    let system = request.system_instruction.iter().map(|c| ("system", c));
    let turns = request.contents.iter().map(|c| (c.role.as_deref().unwrap_or("user"), c));
    for (role, content) in system.chain(turns) {
        builder.message(role, |b| add_parts(b, &content.parts));
    }
    builder.finish_chat()
}

/// The function called: with mode ANY the first allowed declaration; with AUTO (default) the
/// first declaration unless the last turn carries a function response; none with NONE.
fn chosen_function(request: &GenerateRequest) -> Option<(&str, Option<&Value>)> {
    let config = request
        .tool_config
        .as_ref()
        .and_then(|c| c.get("functionCallingConfig").or_else(|| c.get("function_calling_config")));
    let mode = config.and_then(|c| c.get("mode")).and_then(Value::as_str).unwrap_or("AUTO");
    let allowed: Vec<&str> = config
        .and_then(|c| c.get("allowedFunctionNames").or_else(|| c.get("allowed_function_names")))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut declarations = request.tools.iter().flatten().flat_map(|tool| {
        tool.get("functionDeclarations")
            .or_else(|| tool.get("function_declarations"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    });
    fn declaration(d: &Value) -> Option<(&str, Option<&Value>)> {
        let name = d.get("name")?.as_str()?;
        let parameters =
            d.get("parameters").or_else(|| d.get("parametersJsonSchema")).or_else(|| d.get("parameters_json_schema"));
        Some((name, parameters))
    }
    let pick = |d| declaration(d).filter(|(name, _)| allowed.is_empty() || allowed.contains(name));
    match mode.to_ascii_uppercase().as_str() {
        "NONE" => None,
        "ANY" => declarations.find_map(pick),
        _ => {
            let after_response = request.contents.last().is_some_and(|c| {
                c.parts.iter().any(|p| p.get("functionResponse").is_some() || p.get("function_response").is_some())
            });
            if after_response { None } else { declarations.find_map(pick) }
        }
    }
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Length => "MAX_TOKENS",
        Finish::Stop | Finish::StopSequence(_) | Finish::ToolCall => "STOP",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    candidates: Vec<Candidate<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<&'a UsageMetadata>,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: CandidateContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: usize,
}

#[derive(Serialize)]
struct CandidateContent<'a> {
    parts: Vec<Part<'a>>,
    role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
    },
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: Value,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: usize,
    candidates_token_count: usize,
    total_token_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<usize>,
}

struct Reply {
    id: String,
    model: String,
    outputs: Vec<Output>,
    usage: UsageMetadata,
}

impl Reply {
    fn part<'a>(&'a self, output: &'a Output, text: &'a str) -> Part<'a> {
        match output.tool.as_deref() {
            Some(name) => Part::FunctionCall {
                function_call: FunctionCall {
                    name,
                    args: serde_json::from_str(output.tokens.text()).unwrap_or_else(|_| Value::Object(Map::new())),
                },
            },
            None => Part::Text { text },
        }
    }

    fn body<'a>(&'a self, candidates: Vec<Candidate<'a>>, usage: bool) -> GenerateContentResponse<'a> {
        GenerateContentResponse {
            candidates,
            usage_metadata: usage.then_some(&self.usage),
            model_version: &self.model,
            response_id: &self.id,
        }
    }
}

/// `POST /v1beta/models/{model}:{method}` with method `generateContent` or
/// `streamGenerateContent`.
pub(crate) async fn models_action(
    State(sim): State<Simulator>,
    Path(action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    };
    let key = param("key");
    let Some((model, method)) = action.rsplit_once(':') else {
        return Err(not_found(&action));
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return Err(not_found(&action)),
    };
    let accepted = prelude(&sim, DIALECT, &headers, key.as_deref()).await?;
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    let request: GenerateRequest = parse_body(DIALECT, &body)?;
    check_model(&sim, DIALECT, &model)?;
    if request.contents.is_empty() {
        return Err(bad_request(DIALECT, "* GenerateContentRequest.contents: contents is not specified"));
    }
    let config = request.generation_config.as_ref();
    let candidates = config.and_then(|c| c.candidate_count).unwrap_or(1);
    if !(1..=8).contains(&candidates) {
        return Err(bad_request(DIALECT, "candidateCount must be between 1 and 8."));
    }
    let prompt = build_prompt(&sim, &model, &request);
    let stops = config.and_then(|c| c.stop_sequences.clone()).unwrap_or_default();
    let json_mode = config.and_then(|c| c.response_mime_type.as_deref()) == Some("application/json");
    let mode = match chosen_function(&request) {
        Some((name, parameters)) => OutputMode::Tool { name, parameters },
        None if json_mode => {
            OutputMode::Json(config.and_then(|c| c.response_json_schema.as_ref().or(c.response_schema.as_ref())))
        }
        None => OutputMode::Text,
    };
    let echo = sim.profile().echo.then(|| last_user_text(&request.contents)).flatten();
    let mode = echo_or(&sim, mode, echo.as_deref());
    let spec = OutputSpec {
        // Function call arguments are whole objects in Gemini: never cut them.
        max_tokens: match mode {
            OutputMode::Tool { .. } => None,
            _ => config.and_then(|c| c.max_output_tokens),
        },
        ignore_eos: sim.profile().ignore_eos,
        stops: &stops,
        mode,
    };
    let outputs: Vec<Output> =
        (0..candidates as usize).map(|i| generate(sim.profile(), prompt.hash, i, &spec)).collect();
    let plan = plan_of(&outputs, accepted.fault);
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &prompt, plan.generated).await?;
    let (id, _) = sim.response_ids(admission.index, prompt.hash);
    let cached = admission.cached_tokens;
    let reply = Reply {
        id,
        model,
        usage: UsageMetadata {
            prompt_token_count: prompt.tokens,
            candidates_token_count: plan.generated,
            total_token_count: prompt.tokens + plan.generated,
            cached_content_token_count: (cached > 0).then_some(cached),
        },
        outputs,
    };
    if stream {
        let sse = param("alt").as_deref() == Some("sse");
        let content_type = if sse { "text/event-stream" } else { "application/json" };
        let renderer = GeminiStream { reply, sse, sent: false };
        return Ok(stream_response(&sim, admission, renderer, plan, content_type));
    }
    sim.generate_unstreamed(&mut admission, &plan).await;
    let candidates = reply
        .outputs
        .iter()
        .enumerate()
        .map(|(index, output)| Candidate {
            content: CandidateContent { parts: vec![reply.part(output, output.tokens.text())], role: "model" },
            finish_reason: Some(finish_reason(output.finish)),
            index,
        })
        .collect();
    Ok(json_value_response(DIALECT, &reply.body(candidates, true), plan.fault))
}

fn not_found(action: &str) -> ApiError {
    ApiError::new(
        DIALECT,
        StatusCode::NOT_FOUND,
        format!("models/{action} is not found for API version v1beta, or is not supported."),
        None,
    )
}

/// Renders `GenerateContentResponse` chunks: one per token step; a candidate's last chunk has
/// its finish reason (a function call comes whole, in it), the last chunk has the usage. As
/// SSE events (`alt=sse`) or as the elements of one JSON array.
struct GeminiStream {
    reply: Reply,
    sse: bool,
    sent: bool,
}

impl Renderer for GeminiStream {
    fn head(&mut self, _out: &mut Vec<u8>) -> crate::Result<()> {
        Ok(())
    }

    fn step(&mut self, step: usize, out: &mut Vec<u8>) -> crate::Result<()> {
        let reply = &self.reply;
        let steps = reply.outputs.iter().map(|o| o.tokens.len()).max().unwrap_or(0);
        let mut candidates = Vec::new();
        for (index, output) in reply.outputs.iter().enumerate() {
            let len = output.tokens.len();
            let last = step + 1 == len;
            if step >= len || (output.tool.is_some() && !last) {
                continue;
            }
            candidates.push(Candidate {
                content: CandidateContent { parts: vec![reply.part(output, output.tokens.token(step))], role: "model" },
                finish_reason: last.then(|| finish_reason(output.finish)),
                index,
            });
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&reply.body(candidates, step + 1 == steps))?;
        self.push_raw(out, &bytes);
        Ok(())
    }

    fn tail(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        if !self.sent {
            // Nothing was generated: one closing chunk with empty parts.
            let candidates = self
                .reply
                .outputs
                .iter()
                .enumerate()
                .map(|(index, output)| Candidate {
                    content: CandidateContent { parts: Vec::new(), role: "model" },
                    finish_reason: Some(finish_reason(output.finish)),
                    index,
                })
                .collect();
            let bytes = serde_json::to_vec(&self.reply.body(candidates, true))?;
            self.push_raw(out, &bytes);
        }
        if !self.sse {
            out.extend_from_slice(b"]");
        }
        Ok(())
    }

    fn malformed(&mut self, out: &mut Vec<u8>) {
        self.push_raw(out, b"{\"candidates\": [{\"content\": {\"parts\": [{\"text\": ");
    }
}

impl GeminiStream {
    /// Frames one JSON chunk: an SSE event, or an element of the streamed array.
    fn push_raw(&mut self, out: &mut Vec<u8>, json: &[u8]) {
        if self.sse {
            out.extend_from_slice(b"data: ");
        } else {
            out.extend_from_slice(if self.sent { b",\r\n" } else { b"[" });
        }
        out.extend_from_slice(json);
        if self.sse {
            out.extend_from_slice(b"\r\n\r\n");
        }
        self.sent = true;
    }
}
