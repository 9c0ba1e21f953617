//! One API request through the stages, in the order it meets them: the head is bounded and the
//! path routed, the caller identified, the body read and its model resolved, the request
//! admitted under its limits, the backends called with failover, and the answer (or the
//! refusal) written back and accounted for. The stages decide; this file only hands each one's
//! result to the next. A Messages request (Anthropic's format) is translated into a chat
//! request as soon as its body is read and its answer translated back, so every stage between
//! sees an OpenAI request; only an Anthropic backend takes the client's own body instead, and
//! its answer then goes back as it came.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use jiff::Timestamp;

use crate::Gateway;
use crate::accounting::{self, Accounting, Admitted, RequestId};
use crate::auth::{self, Caller, Need};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models;
use crate::protocol::anthropic::{self, request::Translated, stream::StreamTranslator};
use crate::protocol::openai;
use crate::resolve;
use crate::respond::{self, body::ResponseBody, body::StreamBody};
use crate::route::{self, Api, Route, Wire};
use crate::slo;
use crate::snapshot::Snapshot;
use crate::upstream::failover::{Answer, Call};
use crate::upstream::outbound::Native;

/// A refused request, with what is known about it when it was refused.
struct Rejection<'s> {
    error: ApiError,
    /// Project and endpoint slugs, once the path named ones the key opens.
    at: Option<(&'s str, &'s str)>,
    /// The account, once the request was admitted.
    admitted: Option<Admitted>,
    /// Headers beyond the error's own.
    headers: HeaderMap,
}

impl<'s> Rejection<'s> {
    fn at(caller: &Caller<'s>, error: ApiError) -> Self {
        let at = Some((&*caller.project.slug, &*caller.endpoint.slug));
        Self { error, at, admitted: None, headers: HeaderMap::new() }
    }
}

impl From<ApiError> for Rejection<'_> {
    fn from(error: ApiError) -> Self {
        Self { error, at: None, admitted: None, headers: HeaderMap::new() }
    }
}

impl<'s> From<auth::Refused<'s>> for Rejection<'s> {
    fn from(refused: auth::Refused<'s>) -> Self {
        let at = refused.at.map(|(project, endpoint)| (&*project.slug, &*endpoint.slug));
        Self { error: refused.error, at, admitted: None, headers: HeaderMap::new() }
    }
}

/// Serves one API request; never fails (refusals become responses).
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>, remote: SocketAddr) -> Response<ResponseBody> {
    let started = Instant::now();
    let request_id = gateway.request_id(request.headers());
    let snapshot = gateway.snapshot();
    let wire = Wire::of_path(request.uri().path());
    let mut response = match serve(&gateway, &snapshot, request, remote, started, &request_id).await {
        Ok(response) => response,
        Err(rejection) => refuse(&gateway.metrics, wire, rejection, &request_id, started),
    };
    respond::set_request_id(&mut response, request_id);
    response
}

/// Settles or logs a refusal, and answers it.
fn refuse(
    metrics: &Metrics,
    wire: Wire,
    rejection: Rejection<'_>,
    request_id: &RequestId,
    started: Instant,
) -> Response<ResponseBody> {
    let Rejection { error, at, admitted, headers } = rejection;
    let (status, _, code) = error.parts();
    match admitted {
        Some(admitted) => admitted.refused(status.as_u16()),
        None => accounting::refused(metrics, request_id, at, status.as_u16(), code, started),
    }
    let mut response = respond::error_response(wire, error);
    response.headers_mut().extend(headers);
    response
}

/// Everything up to the route: the head, the path, the caller.
async fn serve<'s>(
    gateway: &Gateway,
    snapshot: &'s Snapshot,
    request: Request<Incoming>,
    remote: SocketAddr,
    started: Instant,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, Rejection<'s>> {
    super::check_head(&request, gateway.max_header_bytes)?;
    let unknown_path =
        || ApiError::UnknownPath { method: request.method().to_string(), path: request.uri().path().to_owned() };
    let target = route::parse_path(request.uri().path()).ok_or_else(unknown_path)?;
    if snapshot.generation == 0 {
        return Err(ApiError::NotReady.into());
    }
    let now = Timestamp::now();
    let caller = auth::identify(snapshot, &request, &target, remote.ip(), now, unknown_path)?;
    let reject = |error| Rejection::at(&caller, error);
    target.route.check_method(request.method()).map_err(reject)?;
    match target.route {
        Route::Api(api) => call_model(gateway, caller, api, Wire::OpenAi, request, started, now, request_id).await,
        Route::Messages => {
            call_model(gateway, caller, Api::ChatCompletions, Wire::Anthropic, request, started, now, request_id).await
        }
        Route::CountTokens => count_tokens(gateway, caller, request, started, now, request_id).await,
        models_route @ (Route::ListModels | Route::GetModel(_)) => {
            caller.check_scope(Need::ListModels).map_err(reject)?;
            let body = models::answer(snapshot, &caller, models_route, now).map_err(reject)?;
            accounting::models_listed(&gateway.metrics, request_id, &caller, started);
            Ok(respond::json(body))
        }
    }
}

/// A model call: body, model, limits, upstream, answer. A Messages request (`wire` Anthropic)
/// is a chat completion in between.
#[allow(clippy::too_many_arguments)] // each is one thing the stages need; a struct would only rename them
async fn call_model<'s>(
    gateway: &Gateway,
    caller: Caller<'s>,
    api: Api,
    wire: Wire,
    request: Request<Incoming>,
    started: Instant,
    now: Timestamp,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, Rejection<'s>> {
    let reject = |error| Rejection::at(&caller, error);
    let shown = match wire {
        Wire::OpenAi => api.display(),
        Wire::Anthropic => "/v1/messages",
    };
    if !caller.endpoint.serves(api) {
        return Err(reject(ApiError::ApiNotEnabled(shown)));
    }
    caller.check_scope(Need::Inference(shown)).map_err(reject)?;

    let (parts, body) = request.into_parts();
    let slo = slo::hints(&parts.headers, &caller.tier.config).map_err(reject)?;
    let body = super::read_body(body, &parts.headers, caller.endpoint.max_body_bytes).await.map_err(reject)?;
    let (body, messages, original) = match wire {
        Wire::OpenAi => (body, None, None),
        Wire::Anthropic => {
            anthropic::check_version(parts.headers.get("anthropic-version").map(|v| v.as_bytes())).map_err(reject)?;
            let Translated { body: translated, stop_sequences } =
                anthropic::request::to_openai(&body).map_err(reject)?;
            (translated, Some(stop_sequences), Some(body))
        }
    };
    let fields = openai::read_fields(&body).map_err(reject)?;
    let original_fields = original.as_ref().map(|body| openai::read_fields(body)).transpose().map_err(reject)?;
    let native = original.as_ref().zip(original_fields.as_ref()).map(|(body, fields)| Native { body, fields });
    let resolved = resolve::resolve(&caller, api, &fields, now).map_err(reject)?;

    let tier = caller.tier;
    let estimated_prompt = openai::estimate_prompt_tokens(body.len());
    let estimate = estimated_prompt + fields.max_tokens.unwrap_or(0);
    let admission =
        caller.key.state.admit(&tier.config, caller.key.budget.as_ref(), estimate, started, now).map_err(|error| {
            Rejection { headers: respond::refusal_headers(resolved.deprecation, None), ..reject(error) }
        })?;
    tier.retries.deposit(tier.config.retry_percent);
    let report = admission.report;
    let admitted = Admitted::new(
        request_id.clone(),
        started,
        &caller,
        resolved.model,
        admission,
        estimated_prompt,
        gateway.metrics.clone(),
    );

    let deadline = started + Duration::from_millis(u64::from(tier.config.total_ms));
    let call = Call {
        caller: &caller,
        model: resolved.model,
        api,
        client_headers: &parts.headers,
        body: &body,
        fields: &fields,
        native,
        deadline,
        request_id,
        metrics: &gateway.metrics,
        slo,
    };
    match call.run().await {
        Ok(answered) => {
            let accounting = Accounting::new(
                admitted,
                answered.backend,
                answered.attempt,
                answered.first_byte,
                answered.status,
                fields.stream,
            );
            let mut status = answered.status;
            // A Messages request passed through to an Anthropic backend has nothing to translate.
            let messages = messages.filter(|_| !answered.reading.is_native());
            let body = match answered.body {
                Answer::Whole(bytes) => {
                    accounting.finish_whole(&bytes, answered.reading.format());
                    match &messages {
                        None => ResponseBody::full(bytes),
                        Some(stop_sequences) => {
                            let (translated_status, translated) =
                                respond::anthropic_whole(status, &bytes, stop_sequences);
                            status = translated_status;
                            ResponseBody::full(translated)
                        }
                    }
                }
                Answer::Stream { body, tap, first } => {
                    let idle = Duration::from_millis(u64::from(tier.config.idle_stream_ms));
                    let stream = StreamBody::new(body, tap, first, idle, deadline, accounting);
                    let stream = match messages {
                        None => stream,
                        Some(stop_sequences) => {
                            stream.translated(StreamTranslator::new(stop_sequences, estimated_prompt))
                        }
                    };
                    ResponseBody::Stream(Box::new(stream))
                }
            };
            let (headers, backend) = (&answered.headers, answered.backend);
            let predicted = answered.predicted_ttft_ms;
            Ok(respond::answered(status, headers, backend, predicted, body, &report, tier, resolved.deprecation))
        }
        Err(error) => Err(Rejection {
            headers: respond::refusal_headers(resolved.deprecation, Some((&report, tier))),
            admitted: Some(admitted),
            ..reject(error)
        }),
    }
}

/// `count_tokens`: the gateway's own estimate of a Messages prompt, for a model the key may
/// use. Answered here, without an upstream call, and charged to no limit.
async fn count_tokens<'s>(
    gateway: &Gateway,
    caller: Caller<'s>,
    request: Request<Incoming>,
    started: Instant,
    now: Timestamp,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, Rejection<'s>> {
    let reject = |error| Rejection::at(&caller, error);
    let shown = "/v1/messages/count_tokens";
    if !caller.endpoint.serves(Api::ChatCompletions) {
        return Err(reject(ApiError::ApiNotEnabled(shown)));
    }
    caller.check_scope(Need::Inference(shown)).map_err(reject)?;
    let (parts, body) = request.into_parts();
    anthropic::check_version(parts.headers.get("anthropic-version").map(|v| v.as_bytes())).map_err(reject)?;
    let body = super::read_body(body, &parts.headers, caller.endpoint.max_body_bytes).await.map_err(reject)?;
    let count = anthropic::request::count_tokens(&body).map_err(reject)?;
    let fields = openai::read_fields(&count.body).map_err(reject)?;
    let resolved = resolve::resolve(&caller, Api::ChatCompletions, &fields, now).map_err(reject)?;
    accounting::tokens_counted(&gateway.metrics, request_id, &caller, resolved.model, count.input_tokens, started);
    Ok(respond::json(serde_json::json!({"input_tokens": count.input_tokens}).to_string()))
}
