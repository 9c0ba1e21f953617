//! OpenAI legacy Completions (`POST /v1/completions`, plain and SSE), as OpenAI documents them
//! (`max_tokens` defaults to 16 there).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::openai::{StreamOptions, Usage, check_max_tokens, choice_count, plan_of};
use super::{ApiError, Dialect, accept, admit, bad_request, echo_or, json_value_response, push_sse, stream_response};
use crate::engine::Simulator;
use crate::generation::{Output, OutputMode, OutputSpec, generate};
use crate::prompt::{Prompt, PromptBuilder};
use crate::rng::{combine, mix64};
use crate::streaming::Renderer;

const DIALECT: Dialect = Dialect::OpenAi;
/// OpenAI's documented default of `max_tokens` for this endpoint.
const DEFAULT_MAX_TOKENS: u32 = 16;

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: Value,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    stop: Option<super::openai::Stop>,
    max_tokens: Option<u32>,
    ignore_eos: Option<bool>,
    seed: Option<u64>,
}

impl super::ModelRequest for CompletionRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

/// The prompts of a request: a string, a list of strings, a list of token ids, or a list of
/// lists of token ids. `None` if it is none of these.
fn prompts(sim: &Simulator, model: &str, prompt: &Value) -> Option<Vec<Prompt>> {
    let block = sim.profile().prefix_cache_block_size as usize;
    let of_text = |text: &str| {
        let mut builder = PromptBuilder::new(model, block);
        builder.text(text);
        builder.finish()
    };
    let of_ids = |ids: &[Value]| {
        let mut builder = PromptBuilder::new(model, block);
        for id in ids {
            builder.markers(mix64(id.as_u64()?), 1);
        }
        Some(builder.finish())
    };
    match prompt {
        Value::String(text) => Some(vec![of_text(text)]),
        Value::Array(items) if items.iter().all(Value::is_string) && !items.is_empty() => {
            Some(items.iter().filter_map(Value::as_str).map(of_text).collect())
        }
        Value::Array(items) if items.iter().all(Value::is_u64) => Some(vec![of_ids(items)?]),
        Value::Array(items) if !items.is_empty() => items.iter().map(|item| of_ids(item.as_array()?)).collect(),
        _ => None,
    }
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (accepted, mut request) = accept::<CompletionRequest>(&sim, DIALECT, &headers, &body).await?;
    let Some(prompts) = prompts(&sim, &request.model, &request.prompt) else {
        return Err(bad_request(DIALECT, "'prompt' must be a string, a list of strings, or a list of token ids."));
    };
    let n = choice_count(request.n)?;
    let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    check_max_tokens(Some(max_tokens))?;
    let stops = super::openai::Stop::into_vec(request.stop.take());
    // An echo repeats the first prompt's text (a string prompt, or the first of a list).
    let echo = match &request.prompt {
        Value::Array(items) => items.first().and_then(Value::as_str),
        other => other.as_str(),
    };
    let spec = OutputSpec {
        max_tokens: Some(max_tokens),
        ignore_eos: request.ignore_eos.unwrap_or(sim.profile().ignore_eos),
        stops: &stops,
        mode: echo_or(&sim, OutputMode::Text, echo),
    };
    let salt = |hash: u64| request.seed.map_or(hash, |s| combine(hash, s));
    let outputs: Vec<Output> =
        prompts.iter().flat_map(|p| (0..n).map(|i| generate(sim.profile(), salt(p.hash), i, &spec))).collect();
    // One batch entry for the whole request; the prefix cache sees the first prompt.
    let combined = Prompt {
        tokens: prompts.iter().map(|p| p.tokens).sum(),
        blocks: prompts[0].blocks.clone(),
        hash: salt(prompts[0].hash),
    };
    let plan = plan_of(&outputs, accepted.fault);
    let mut admission = admit(&sim, DIALECT, accepted.arrival, &combined, plan.generated).await?;
    let (id, created) = sim.response_ids(admission.index, combined.hash);
    let reply = Reply {
        id: format!("cmpl-{id}"),
        created,
        model: request.model,
        usage: Usage::new(combined.tokens, admission.cached_tokens, plan.generated),
        outputs,
    };
    if request.stream.unwrap_or(false) {
        let include_usage = StreamOptions::include_usage(request.stream_options);
        let renderer = CompletionStream { reply, include_usage };
        return Ok(stream_response(&sim, admission, renderer, plan, "text/event-stream"));
    }
    sim.generate_unstreamed(&mut admission, &plan).await;
    let choices: Vec<Choice<'_>> = reply
        .outputs
        .iter()
        .enumerate()
        .map(|(index, output)| Choice {
            text: output.tokens.text(),
            index,
            logprobs: None,
            finish_reason: Some(output.finish.openai()),
        })
        .collect();
    Ok(json_value_response(DIALECT, &reply.body(&choices, Some(&reply.usage)), plan.fault))
}

struct Reply {
    id: String,
    created: u64,
    model: String,
    outputs: Vec<Output>,
    usage: Usage,
}

impl Reply {
    fn body<'a>(&'a self, choices: &'a [Choice<'a>], usage: Option<&'a Usage>) -> Completion<'a> {
        Completion {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            choices,
            usage,
            system_fingerprint: "fp_sluice_sim",
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    usage: Option<&'a Usage>,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    text: &'a str,
    index: usize,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// Renders `text_completion` chunks: one per token per choice, a finish chunk per choice, the
/// usage chunk when asked for, `[DONE]`.
struct CompletionStream {
    reply: Reply,
    include_usage: bool,
}

impl CompletionStream {
    fn push(&self, out: &mut Vec<u8>, choice: Choice<'_>) -> crate::Result<()> {
        push_sse(out, None, &self.reply.body(std::slice::from_ref(&choice), None))
    }
}

impl Renderer for CompletionStream {
    fn head(&mut self, _out: &mut Vec<u8>) -> crate::Result<()> {
        Ok(())
    }

    fn step(&mut self, step: usize, out: &mut Vec<u8>) -> crate::Result<()> {
        for (index, output) in self.reply.outputs.iter().enumerate() {
            if step < output.tokens.len() {
                let choice = Choice { text: output.tokens.token(step), index, logprobs: None, finish_reason: None };
                self.push(out, choice)?;
            }
        }
        Ok(())
    }

    fn tail(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        for (index, output) in self.reply.outputs.iter().enumerate() {
            let choice = Choice { text: "", index, logprobs: None, finish_reason: Some(output.finish.openai()) };
            self.push(out, choice)?;
        }
        if self.include_usage {
            push_sse(out, None, &self.reply.body(&[], Some(&self.reply.usage)))?;
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Ok(())
    }
}
