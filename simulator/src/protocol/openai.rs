//! OpenAI Chat Completions (`POST /v1/chat/completions`, plain and SSE) and the model list
//! (`GET /v1/models`), as OpenAI documents them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ApiError, Dialect, IMAGE_TOKENS, accept, admit, bad_request, content_text, echo_or, error_response,
    json_value_response, push_sse, stream_response,
};
use crate::engine::{DETERMINISTIC_CREATED, Simulator};
use crate::generation::{Output, OutputMode, OutputSpec, generate};
use crate::prompt::PromptBuilder;
use crate::rng::combine;
use crate::streaming::{Renderer, StreamPlan};

const DIALECT: Dialect = Dialect::OpenAi;
const FINGERPRINT: &str = "fp_sluice_sim";

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub(crate) fn into_vec(stop: Option<Stop>) -> Vec<String> {
        match stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

impl StreamOptions {
    /// Whether a stream ends with a usage chunk (only when the client asks).
    pub(crate) fn include_usage(options: Option<StreamOptions>) -> bool {
        options.and_then(|o| o.include_usage).unwrap_or(false)
    }
}

/// The fields of a chat request the simulator reads; others are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    stop: Option<Stop>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    response_format: Option<Value>,
    ignore_eos: Option<bool>,
    seed: Option<u64>,
}

impl super::ModelRequest for ChatRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Value>,
    name: Option<String>,
    tool_calls: Option<Value>,
    tool_call_id: Option<String>,
}

/// Adds message content (a string, or a list of text/image parts) to a prompt.
pub(crate) fn add_content(builder: &mut PromptBuilder, content: Option<&Value>) {
    match content {
        Some(Value::String(text)) => {
            builder.text(text);
        }
        Some(Value::Array(parts)) => {
            for part in parts {
                match part.get("text").and_then(Value::as_str) {
                    Some(text) => {
                        builder.text(text);
                    }
                    None => {
                        builder.markers(6, IMAGE_TOKENS);
                    }
                }
            }
        }
        _ => {}
    }
}

fn build_prompt(sim: &Simulator, request: &ChatRequest) -> crate::prompt::Prompt {
    let mut builder = PromptBuilder::new(&request.model, sim.profile().prefix_cache_block_size as usize);
    builder.tools(request.tools.as_ref());
    for message in &request.messages {
        builder.message(&message.role, |b| {
            add_content(b, message.content.as_ref());
            if let Some(name) = &message.name {
                b.text(name);
            }
            if let Some(calls) = &message.tool_calls {
                b.text(&calls.to_string());
            }
            if let Some(id) = &message.tool_call_id {
                b.text(id);
            }
        });
    }
    builder.finish_chat()
}

/// The function a chat request calls, if any: a named `tool_choice`, else (with `auto` or
/// `required`) the first tool, unless `auto` and the conversation ends with a tool result.
fn chosen_tool<'a>(request: &'a ChatRequest) -> Option<(&'a str, Option<&'a Value>)> {
    let tools = request.tools.as_deref().unwrap_or_default();
    let function = |tool: &'a Value| {
        let function = tool.get("function")?;
        Some((function.get("name")?.as_str()?, function.get("parameters")))
    };
    match &request.tool_choice {
        Some(Value::String(mode)) if mode == "none" => None,
        Some(Value::Object(choice)) => {
            let wanted = choice.get("function")?.get("name")?.as_str()?;
            tools.iter().filter_map(function).find(|(name, _)| *name == wanted)
        }
        Some(Value::String(mode)) if mode == "required" => tools.iter().find_map(function),
        _ => {
            let after_tool = request.messages.last().is_some_and(|m| m.role == "tool");
            if after_tool { None } else { tools.iter().find_map(function) }
        }
    }
}

fn output_mode(request: &ChatRequest) -> OutputMode<'_> {
    if let Some((name, parameters)) = chosen_tool(request) {
        return OutputMode::Tool { name, parameters };
    }
    let format = request.response_format.as_ref();
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => OutputMode::Json(None),
        Some("json_schema") => {
            OutputMode::Json(format.and_then(|f| f.get("json_schema")).and_then(|s| s.get("schema")))
        }
        _ => OutputMode::Text,
    }
}

/// The text of the last user message (what the profile's `echo` repeats).
fn last_user_text(messages: &[ChatMessage]) -> Option<String> {
    messages.iter().rev().find(|m| m.role == "user")?.content.as_ref().map(content_text)
}

/// OpenAI's `usage` object.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PromptTokensDetails {
    pub cached_tokens: usize,
    pub audio_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CompletionTokensDetails {
    pub reasoning_tokens: usize,
    pub audio_tokens: usize,
    pub accepted_prediction_tokens: usize,
    pub rejected_prediction_tokens: usize,
}

impl Usage {
    pub(crate) fn new(prompt: usize, cached: usize, completion: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: cached, audio_tokens: 0 },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

/// Plan shared by every generating route: steps, generated tokens and the finish reason label.
pub(crate) fn plan_of(outputs: &[Output], fault: Option<crate::faults::Fault>) -> StreamPlan {
    StreamPlan {
        steps: outputs.iter().map(|o| o.tokens.len()).max().unwrap_or(0),
        generated: outputs.iter().map(|o| o.tokens.len()).sum(),
        finish_reason: outputs.first().map_or("stop", |o| o.finish.openai()),
        fault,
    }
}

/// `n`, checked as OpenAI does (1 to 128, default 1).
pub(crate) fn choice_count(n: Option<u32>) -> Result<usize, ApiError> {
    match n.unwrap_or(1) {
        n @ 1..=128 => Ok(n as usize),
        _ => Err(bad_request(DIALECT, "'n' must be between 1 and 128.")),
    }
}

/// `max_tokens`, when given, must be at least 1.
pub(crate) fn check_max_tokens(max_tokens: Option<u32>) -> Result<(), ApiError> {
    if max_tokens == Some(0) {
        return Err(bad_request(DIALECT, "'max_tokens' must be at least 1."));
    }
    Ok(())
}

/// The id of a tool call, from its choice's seed.
pub(crate) fn tool_call_id(prefix: &str, output: &Output) -> String {
    format!("{prefix}{:016x}{:08x}", combine(output.seed, 7), output.seed >> 32)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accepted, mut request) = accept::<ChatRequest>(&sim, DIALECT, &headers, &body).await?;
    if request.messages.is_empty() {
        return Err(bad_request(DIALECT, "'messages' must contain at least one message."));
    }
    let n = choice_count(request.n)?;
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    check_max_tokens(max_tokens)?;
    let prompt = build_prompt(&sim, &request);
    let prompt_hash = request.seed.map_or(prompt.hash, |s| combine(prompt.hash, s));
    let stops = Stop::into_vec(request.stop.take());
    let echo = sim.profile().echo.then(|| last_user_text(&request.messages)).flatten();
    let spec = OutputSpec {
        max_tokens,
        ignore_eos: request.ignore_eos.unwrap_or(sim.profile().ignore_eos),
        stops: &stops,
        mode: echo_or(&sim, output_mode(&request), echo.as_deref()),
    };
    let outputs: Vec<Output> = (0..n).map(|choice| generate(sim.profile(), prompt_hash, choice, &spec)).collect();
    let plan = plan_of(&outputs, accepted.fault);
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &prompt, plan.generated).await?;
    let (id, created) = sim.response_ids(admission.index, prompt_hash);
    let usage = Usage::new(prompt.tokens, admission.cached_tokens, plan.generated);
    let reply = Reply { id: format!("chatcmpl-{id}"), created, model: request.model, outputs, usage };
    if request.stream.unwrap_or(false) {
        let include_usage = StreamOptions::include_usage(request.stream_options);
        let renderer = ChatStream { reply, include_usage };
        return Ok(stream_response(&sim, admission, renderer, plan, "text/event-stream"));
    }
    sim.generate_unstreamed(&mut admission, &plan).await;
    Ok(json_value_response(DIALECT, &reply.completion(), plan.fault))
}

/// Everything a chat response is made of.
struct Reply {
    id: String,
    created: u64,
    model: String,
    outputs: Vec<Output>,
    usage: Usage,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChatChoice<'a>>,
    usage: &'a Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: usize,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl Reply {
    fn completion(&self) -> ChatCompletion<'_> {
        let choices = self
            .outputs
            .iter()
            .enumerate()
            .map(|(index, output)| {
                let tool_calls = output.tool.as_deref().map(|name| {
                    [ToolCall {
                        id: tool_call_id("call_", output),
                        kind: "function",
                        function: Function { name, arguments: output.tokens.text() },
                    }]
                });
                ChatChoice {
                    index,
                    message: AssistantMessage {
                        role: "assistant",
                        content: tool_calls.is_none().then(|| output.tokens.text()),
                        refusal: None,
                        tool_calls,
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: output.finish.openai(),
                }
            })
            .collect();
        ChatCompletion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices,
            usage: &self.usage,
            system_fingerprint: FINGERPRINT,
        }
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Renders a chat completion as `chat.completion.chunk` events: a role chunk, one chunk per
/// token per choice, a finish chunk per choice, the usage chunk when asked for, `[DONE]`.
struct ChatStream {
    reply: Reply,
    include_usage: bool,
}

impl ChatStream {
    fn chunk<'a>(&'a self, choices: &'a [ChunkChoice<'a>], usage: Option<Option<&'a Usage>>) -> Chunk<'a> {
        let reply = &self.reply;
        Chunk {
            id: &reply.id,
            object: "chat.completion.chunk",
            created: reply.created,
            model: &reply.model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        }
    }

    fn push(&self, out: &mut Vec<u8>, choice: ChunkChoice<'_>) -> crate::Result<()> {
        // With include_usage, every chunk but the last carries `"usage": null`.
        push_sse(out, None, &self.chunk(std::slice::from_ref(&choice), self.include_usage.then_some(None)))
    }
}

impl Renderer for ChatStream {
    fn head(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        for (index, output) in self.reply.outputs.iter().enumerate() {
            let delta = match output.tool.as_deref() {
                Some(name) => Delta {
                    role: Some("assistant"),
                    tool_calls: Some([ToolCallDelta {
                        index: 0,
                        id: Some(tool_call_id("call_", output)),
                        kind: Some("function"),
                        function: FunctionDelta { name: Some(name), arguments: "" },
                    }]),
                    ..Delta::default()
                },
                None => Delta { role: Some("assistant"), content: Some(""), ..Delta::default() },
            };
            self.push(out, ChunkChoice { index, delta, logprobs: None, finish_reason: None })?;
        }
        Ok(())
    }

    fn step(&mut self, step: usize, out: &mut Vec<u8>) -> crate::Result<()> {
        for (index, output) in self.reply.outputs.iter().enumerate() {
            if step >= output.tokens.len() {
                continue;
            }
            let token = output.tokens.token(step);
            let delta = if output.tool.is_some() {
                Delta {
                    tool_calls: Some([ToolCallDelta {
                        index: 0,
                        id: None,
                        kind: None,
                        function: FunctionDelta { name: None, arguments: token },
                    }]),
                    ..Delta::default()
                }
            } else {
                Delta { content: Some(token), ..Delta::default() }
            };
            self.push(out, ChunkChoice { index, delta, logprobs: None, finish_reason: None })?;
        }
        Ok(())
    }

    fn tail(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        for (index, output) in self.reply.outputs.iter().enumerate() {
            self.push(
                out,
                ChunkChoice {
                    index,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason: Some(output.finish.openai()),
                },
            )?;
        }
        if self.include_usage {
            push_sse(out, None, &self.chunk(&[], Some(Some(&self.reply.usage))))?;
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Ok(())
    }
}

/// One entry of `/v1/models`.
#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn model(id: &str) -> Model<'_> {
    Model { id, object: "model", created: DETERMINISTIC_CREATED, owned_by: "sluice-sim" }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

/// `GET /v1/models`: the profile's models, or `sluice-sim` when it serves any name.
pub(crate) async fn list_models(State(sim): State<Simulator>) -> Response {
    let list = ModelList { object: "list", data: sim.profile().listed_models().into_iter().map(model).collect() };
    json_value_response(DIALECT, &list, None)
}

/// `GET /v1/models/{id}`.
pub(crate) async fn get_model(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    if !sim.profile().serves(&id) {
        return error_response(
            DIALECT,
            StatusCode::NOT_FOUND,
            &format!("The model `{id}` does not exist or you do not have access to it."),
            Some("model_not_found"),
        );
    }
    json_value_response(DIALECT, &model(&id), None)
}
