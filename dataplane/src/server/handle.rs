//! One API request through the stages, in the order it meets them: the head is bounded and the
//! path routed, the caller identified, the body read and its model resolved, the request
//! admitted under its limits, the backends called with failover, and the answer (or the
//! refusal) written back and accounted for. The stages decide; this file only hands each one's
//! result to the next. A Messages, Gemini or Responses request is translated into a chat
//! request as soon as its body is read and its answer translated back, so every stage between
//! sees an OpenAI request; only an Anthropic backend (for Messages) or a Gemini backend (for
//! Gemini) takes the client's own body instead, and its answer then goes back as it came. An
//! OpenAI request is never translated. Gemini's `embedContent` becomes an embeddings request
//! the same way. The endpoint's default model and parameters are written into the body as
//! soon as it is read (parameters into the chat request, after a translation). The endpoint's
//! content guard then reads (and may redact) the request that will leave; with a guard, no
//! client body is passed through, and the answer gets the redacted originals back. Gemini's
//! `?key=` leaves the URI before anything else looks at it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use jiff::Timestamp;
use sluice_crds::api::ApiKind;

use crate::Gateway;
use crate::accounting::{self, Accounting, Admitted, RequestId};
use crate::audit::RequestAudit;
use crate::auth::{self, Caller, Need};
use crate::error::ApiError;
use crate::guard::restore::RestoringStream;
use crate::limits;
use crate::metrics::Metrics;
use crate::models;
use crate::protocol::AnswerFormat;
use crate::protocol::anthropic::{self, request::Translated};
use crate::protocol::gemini::inbound as gemini;
use crate::protocol::openai;
use crate::protocol::responses;
use crate::resolve;
use crate::respond::{self, Translation, body::ClientStream, body::ResponseBody, body::StreamBody};
use crate::route::{self, Api, GeminiMethod, ProjectRoute, Route, Wire};
use crate::slo;
use crate::snapshot::Snapshot;
use crate::traces::RequestTrace;
use crate::upstream::failover::{Answer, Call};
use crate::upstream::outbound::Native;
use crate::{console, keys_api, usage_api};

/// A refused request, with what is known about it when it was refused.
struct Rejection<'s> {
    error: ApiError,
    /// Project and endpoint slugs, once the path named ones the key opens.
    at: Option<(&'s str, &'s str)>,
    /// The key's id, once the key was recognised and opens them (for the audit record).
    key: Option<&'s str>,
    /// The account, once the request was admitted.
    admitted: Option<Admitted>,
    /// Headers beyond the error's own.
    headers: HeaderMap,
}

impl<'s> Rejection<'s> {
    fn at(caller: &Caller<'s>, error: ApiError) -> Self {
        let at = Some((&*caller.project.slug, &*caller.endpoint.slug));
        Self { error, at, key: Some(&caller.key.id), admitted: None, headers: HeaderMap::new() }
    }
}

impl From<ApiError> for Rejection<'_> {
    fn from(error: ApiError) -> Self {
        Self { error, at: None, key: None, admitted: None, headers: HeaderMap::new() }
    }
}

impl<'s> From<auth::Refused<'s>> for Rejection<'s> {
    fn from(refused: auth::Refused<'s>) -> Self {
        let at = refused.at.map(|(project, endpoint)| (&*project.slug, &*endpoint.slug));
        Self { error: refused.error, at, key: None, admitted: None, headers: HeaderMap::new() }
    }
}

/// Serves one API request; never fails (refusals become responses).
pub async fn handle(
    gateway: Arc<Gateway>,
    mut request: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let query_key = super::take_query_key(&mut request);
    let request_id = gateway.request_id(request.headers());
    let trace = gateway.traces.start(request.method(), request.uri().path(), request.headers(), &request_id);
    let snapshot = gateway.snapshot();
    // Only a refusal needs the path again (for its error's format): a reference to it, not a
    // second parse on every request.
    let uri = request.uri().clone();
    let client = gateway.trusted_proxies.client(remote.ip(), request.headers());
    let signing = snapshot.signing_project(request.uri().path());
    // With the audit log off this is `None`: nothing is made for it on the request path.
    let audit = gateway.audit.as_ref().map(|log| log.request(client));
    let audit = audit.as_ref();
    // A JWT caller's key lives here, beside the snapshot an API key lives in.
    let token = auth::TokenSlot::default();
    let served =
        serve(&gateway, &snapshot, &token, request, query_key.as_deref(), client, started, &request_id, &trace, audit)
            .await;
    // Signed: whatever the project's keys are answered (a refusal before a key opened the
    // project is not, so a stranger learns nothing of it).
    let (mut response, signed) = match served {
        Ok(response) => (response, true),
        Err(rejection) => {
            trace.refused(rejection.error.parts().2);
            let opened = rejection.at.is_some();
            let wire = Wire::of_path(uri.path());
            (refuse(&gateway.metrics, wire, rejection, &request_id, client, started, audit), opened)
        }
    };
    if let (Some(project), true) = (signing, signed) {
        let now = Timestamp::now();
        if let Some(keys) = project.signing_keys(now) {
            respond::sign(&mut response, &keys, now.as_second());
        }
    }
    trace.responded(response.status().as_u16());
    respond::set_request_id(&mut response, request_id);
    response
}

/// Settles or logs a refusal, and answers it.
fn refuse(
    metrics: &Metrics,
    wire: Wire,
    rejection: Rejection<'_>,
    request_id: &RequestId,
    client: IpAddr,
    started: Instant,
    audit: Option<&RequestAudit>,
) -> Response<ResponseBody> {
    let Rejection { error, at, key, admitted, headers } = rejection;
    let (status, _, code) = error.parts();
    match admitted {
        Some(admitted) => admitted.refused(status.as_u16(), code),
        None => accounting::refused(metrics, request_id, at, client, key, status.as_u16(), code, started, audit),
    }
    let mut response = respond::error_response(wire, error);
    response.headers_mut().extend(headers);
    response
}

/// Everything up to the route: the head, the path, the caller.
#[allow(clippy::too_many_arguments)] // each is one thing the stages need; a struct would only rename them
async fn serve<'s>(
    gateway: &Gateway,
    snapshot: &'s Snapshot,
    token: &'s auth::TokenSlot,
    request: Request<Incoming>,
    query_key: Option<&[u8]>,
    client: IpAddr,
    started: Instant,
    request_id: &RequestId,
    trace: &RequestTrace,
    audit: Option<&RequestAudit>,
) -> Result<Response<ResponseBody>, Rejection<'s>> {
    super::check_head(&request, gateway.max_header_bytes)?;
    let unknown_path =
        || ApiError::UnknownPath { method: request.method().to_string(), path: request.uri().path().to_owned() };
    // A model API's path first (the common case); no path is both (see `route`'s tests).
    let api_target = route::parse_path(request.uri().path());
    if api_target.is_none() && route::parse_project_path(request.uri().path()).is_some() {
        // The target borrows from its own copy of the URI: the key API takes the body.
        let uri = request.uri().clone();
        let target = route::parse_project_path(uri.path()).ok_or_else(unknown_path)?;
        if snapshot.generation == 0 {
            return Err(ApiError::NotReady.into());
        }
        let now = Timestamp::now();
        let mut span = trace.stage("sluice.auth");
        let caller =
            auth::identify_key(snapshot, token, &request, query_key, target.project, client, now, unknown_path)
                .inspect_err(|error| span.fail(error.parts().2))?;
        span.end();
        target.route.check_method(request.method())?;
        let response = match target.route {
            ProjectRoute::Keys | ProjectRoute::Key(_) | ProjectRoute::RotateKey(_) => {
                let (parts, body) = request.into_parts();
                let body = super::read_body(body, &parts.headers, keys_api::MAX_BODY_BYTES).await?;
                keys_api::answer(gateway, caller, target.route, &parts.method, &body, request_id).await?
            }
            ProjectRoute::Catalog => respond::json(console::catalog::catalog_json(&caller, now).to_string()),
            ProjectRoute::Health => respond::json(console::health::health_json(&caller, now).to_string()),
            route => {
                let (query, headers) = (request.uri().query(), request.headers());
                usage_api::answer(gateway, caller, route, query, headers, now, request_id).await?
            }
        };
        accounting::project_api_answered(request_id, caller, response.status().as_u16(), started, audit);
        return Ok(response);
    }
    let Some(target) = api_target else {
        // No API path: perhaps a console file (never looked for on an API path).
        let console = route::parse_console_path(request.uri().path()).ok_or_else(unknown_path)?;
        return Ok(console::serve(snapshot, console, request.method(), request.headers(), unknown_path)?);
    };
    if snapshot.generation == 0 {
        return Err(ApiError::NotReady.into());
    }
    let now = Timestamp::now();
    let mut span = trace.stage("sluice.auth");
    let caller = auth::identify(snapshot, token, &request, query_key, &target, client, now, unknown_path)
        .inspect_err(|refused| span.fail(refused.error.parts().2))?;
    span.end();
    trace.caller(&caller);
    let reject = |error| Rejection::at(&caller, error);
    target.route.check_method(request.method()).map_err(reject)?;
    let chat = Api::ChatCompletions;
    match target.route {
        Route::Api(api) => {
            call_model(gateway, caller, api, Format::OpenAi, request, started, now, request_id, trace, audit).await
        }
        Route::Messages => {
            call_model(gateway, caller, chat, Format::Messages, request, started, now, request_id, trace, audit).await
        }
        Route::Responses => {
            call_model(gateway, caller, chat, Format::Responses, request, started, now, request_id, trace, audit).await
        }
        Route::Gemini { model, method: method @ (GeminiMethod::Generate | GeminiMethod::StreamGenerate) } => {
            // The model is read from the path, which goes with the request.
            let model = model.to_owned();
            let format = Format::Gemini { model: &model, stream: method == GeminiMethod::StreamGenerate };
            call_model(gateway, caller, chat, format, request, started, now, request_id, trace, audit).await
        }
        Route::Gemini { model, method: method @ (GeminiMethod::EmbedContent | GeminiMethod::BatchEmbedContents) } => {
            let model = model.to_owned();
            let format = Format::GeminiEmbed { model: &model, batch: method == GeminiMethod::BatchEmbedContents };
            call_model(gateway, caller, Api::Embeddings, format, request, started, now, request_id, trace, audit).await
        }
        Route::CountTokens => {
            count_tokens(gateway, caller, Format::Messages, request, started, now, request_id, audit).await
        }
        Route::Gemini { model, method: GeminiMethod::CountTokens } => {
            let model = model.to_owned();
            let format = Format::Gemini { model: &model, stream: false };
            count_tokens(gateway, caller, format, request, started, now, request_id, audit).await
        }
        route @ (Route::ListModels | Route::GetModel(_) | Route::GeminiListModels | Route::GeminiGetModel(_)) => {
            caller.check_scope(Need::ListModels).map_err(reject)?;
            let body = match route {
                Route::GeminiListModels => gemini::response::models_from_openai(
                    &models::answer(snapshot, &caller, Route::ListModels, now).map_err(reject)?,
                ),
                Route::GeminiGetModel(model) => {
                    let model = gemini::request::model_name(model);
                    gemini::response::models_from_openai(
                        &models::answer(snapshot, &caller, Route::GetModel(model), now).map_err(reject)?,
                    )
                }
                openai => models::answer(snapshot, &caller, openai, now).map_err(reject)?,
            };
            accounting::models_listed(&gateway.metrics, request_id, &caller, started, audit);
            Ok(respond::json(body))
        }
    }
}

/// The format of a model call's request, as its route says: the gateway's own (OpenAI's), or
/// one translated into a chat completion.
#[derive(Clone, Copy, Debug)]
enum Format<'p> {
    /// OpenAI's, forwarded as it came.
    OpenAi,
    /// Anthropic's Messages.
    Messages,
    /// Gemini's `generateContent` for the model in the path (streamed or not).
    Gemini { model: &'p str, stream: bool },
    /// Gemini's `embedContent` (or `batchEmbedContents`) for the model in the path, translated
    /// into embeddings.
    GeminiEmbed { model: &'p str, batch: bool },
    /// OpenAI's Responses.
    Responses,
}

impl Format<'_> {
    /// The API as clients see it, for messages.
    fn shown(self, api: Api) -> &'static str {
        match self {
            Self::OpenAi => api.display(),
            Self::Messages => "/v1/messages",
            Self::Gemini { .. } => "/v1beta/models/{model}:generateContent",
            Self::GeminiEmbed { batch: false, .. } => "/v1beta/models/{model}:embedContent",
            Self::GeminiEmbed { batch: true, .. } => "/v1beta/models/{model}:batchEmbedContents",
            Self::Responses => "/v1/responses",
        }
    }

    /// What an endpoint's `apis` must name to serve a call to `api` in this format.
    fn kind(self, api: Api) -> ApiKind {
        match self {
            Self::OpenAi => api.kind(),
            Self::Messages => ApiKind::Messages,
            Self::Gemini { .. } | Self::GeminiEmbed { .. } => ApiKind::Gemini,
            Self::Responses => ApiKind::Responses,
        }
    }
}

/// A model call: body, model, limits, upstream, answer. A request in another format than
/// OpenAI's is a chat completion in between.
#[allow(clippy::too_many_arguments)] // each is one thing the stages need; a struct would only rename them
async fn call_model<'s>(
    gateway: &Gateway,
    caller: Caller<'s>,
    api: Api,
    format: Format<'_>,
    request: Request<Incoming>,
    started: Instant,
    now: Timestamp,
    request_id: &RequestId,
    trace: &RequestTrace,
    audit: Option<&RequestAudit>,
) -> Result<Response<ResponseBody>, Rejection<'s>> {
    let reject = |error| Rejection::at(&caller, error);
    let shown = format.shown(api);
    if !caller.endpoint.serves(format.kind(api)) {
        return Err(reject(ApiError::ApiNotEnabled(shown)));
    }
    caller.check_scope(Need::Inference(shown)).map_err(reject)?;

    let (parts, body) = request.into_parts();
    let slo = slo::hints(&parts.headers, &caller.tier.config).map_err(reject)?;
    let body = super::read_body(body, &parts.headers, caller.endpoint.max_body_bytes).await.map_err(reject)?;
    // The endpoint's default model goes into a body that names none (a Gemini body's model is
    // its URL's), its default parameters into chat completions requests only.
    let defaults = &caller.endpoint.defaults;
    let chat = api == Api::ChatCompletions;
    let body = match format {
        Format::OpenAi => defaults.fill(&body, chat),
        Format::Messages | Format::Responses => defaults.fill(&body, false),
        Format::Gemini { .. } | Format::GeminiEmbed { .. } => body,
    };
    // The chat request, how its answer goes back, and the client's own body for a backend that
    // speaks its format.
    let (body, translation, original) = match format {
        Format::OpenAi => (body, None, None),
        Format::Messages => {
            anthropic::check_version(parts.headers.get("anthropic-version").map(|v| v.as_bytes())).map_err(reject)?;
            let Translated { body: translated, stop_sequences } =
                anthropic::request::to_openai(&body).map_err(reject)?;
            (translated, Some(Translation::Messages(stop_sequences)), Some((body, AnswerFormat::Anthropic)))
        }
        Format::Gemini { model, stream } => {
            let translated = gemini::request::to_openai(&body, model, stream).map_err(reject)?;
            (translated, Some(Translation::Gemini), Some((body, AnswerFormat::Gemini)))
        }
        Format::GeminiEmbed { model, batch } => {
            let translated = gemini::embed::to_openai(&body, model, batch).map_err(reject)?;
            (translated, Some(Translation::GeminiEmbed { batch }), None)
        }
        Format::Responses => {
            let translated = responses::request::to_openai(&body).map_err(reject)?;
            (translated.body, Some(Translation::Responses(translated.echo)), None)
        }
    };
    // A translated chat request gets the default parameters too, where its translation left a
    // field unset.
    let body = if chat && translation.is_some() { defaults.fill(&body, true) } else { body };
    // The endpoint's content rules and redaction read the request as it will leave. With
    // either, the client's own body is never passed through: it is not what they read.
    let (body, original, restore) = match &caller.endpoint.guard {
        None => (body, original, None),
        Some(guard) => {
            let guarded = guard.inspect(api, body).map_err(reject)?;
            (guarded.body, None, guarded.restore)
        }
    };
    let fields = openai::read_fields(&body).map_err(reject)?;
    // A Messages body names its model (to rewrite); a Gemini body does not (it is in the URL).
    let original_fields = match &original {
        Some((body, AnswerFormat::Anthropic)) => Some(openai::read_fields(body).map_err(reject)?),
        _ => None,
    };
    let native = original.as_ref().map(|(body, format)| Native {
        body,
        fields: original_fields.as_ref().unwrap_or(&fields),
        format: *format,
    });
    let resolved = resolve::resolve(&caller, api, &fields, now).map_err(reject)?;
    trace.model_call(api, &fields.model, fields.stream, fields.max_tokens, &slo);
    // The request as it leaves (after the content guard's redaction), when the project opts in.
    trace.input(api, &body);

    let tier = caller.tier;
    let estimated_prompt = openai::estimate_prompt_tokens(body.len());
    let estimate = estimated_prompt + fields.max_tokens.unwrap_or(0);
    let ask = limits::Ask {
        project: &caller.project.slug,
        key_id: &caller.key.id,
        state: &caller.key.state,
        tier: &tier.config,
        budget: caller.key.budget.as_ref(),
        estimated_tokens: estimate,
        now: started,
        wall: now,
    };
    let mut span = trace.stage("sluice.limits");
    let admission = gateway.limiter.admit(ask).await.map_err(|refusal| {
        span.fail(refusal.error.parts().2);
        Rejection {
            headers: respond::refusal_headers(resolved.deprecation, Some((&refusal.report, tier))),
            ..reject(refusal.error)
        }
    });
    span.end();
    let admission = admission?;
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
        gateway.usage.clone(),
    )
    .observed(api, trace.clone())
    .audited(audit);

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
        trace,
    };
    match call.run().await {
        Ok(answered) => {
            let accounting = Accounting::new(
                admitted,
                answered.backend,
                answered.index,
                answered.attempt,
                answered.first_byte,
                answered.status,
                fields.stream,
            );
            let mut status = answered.status;
            // A request passed through to a backend of its own format has nothing to translate.
            let translation = translation.filter(|_| !answered.reading.is_native());
            let body = match answered.body {
                Answer::Whole(bytes) => {
                    accounting.finish_whole(&bytes, answered.reading.format());
                    let bytes = match &restore {
                        Some(restore) if status.is_success() => restore.whole(&bytes).unwrap_or(bytes),
                        _ => bytes,
                    };
                    match &translation {
                        None => ResponseBody::full(bytes),
                        Some(translation) => {
                            let (translated_status, translated) =
                                respond::translate_whole(translation, status, &bytes, now.as_second());
                            status = translated_status;
                            ResponseBody::full(translated)
                        }
                    }
                }
                Answer::Stream { body, tap, first } => {
                    let idle = Duration::from_millis(u64::from(tier.config.idle_stream_ms));
                    let stream = StreamBody::new(body, tap, first, idle, deadline, accounting);
                    let translator = translation.map(|t| t.stream(estimated_prompt, now.as_second()));
                    // Originals go back into the OpenAI events, before any translation.
                    let translator = match restore {
                        None => translator,
                        Some(restore) => {
                            Some(Box::new(RestoringStream::new(restore, translator)) as Box<dyn ClientStream>)
                        }
                    };
                    let stream = match translator {
                        None => stream,
                        Some(translator) => stream.translated(translator),
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

/// `count_tokens` (Messages) and `:countTokens` (Gemini): the gateway's own estimate of a
/// prompt, for a model the key may use. Answered here, without an upstream call, and charged to
/// no limit.
#[allow(clippy::too_many_arguments)] // each is one thing the stages need; a struct would only rename them
async fn count_tokens<'s>(
    gateway: &Gateway,
    caller: Caller<'s>,
    format: Format<'_>,
    request: Request<Incoming>,
    started: Instant,
    now: Timestamp,
    request_id: &RequestId,
    audit: Option<&RequestAudit>,
) -> Result<Response<ResponseBody>, Rejection<'s>> {
    let reject = |error| Rejection::at(&caller, error);
    let (shown, kind) = match format {
        Format::Gemini { .. } => ("/v1beta/models/{model}:countTokens", ApiKind::Gemini),
        _ => ("/v1/messages/count_tokens", ApiKind::Messages),
    };
    if !caller.endpoint.serves(kind) {
        return Err(reject(ApiError::ApiNotEnabled(shown)));
    }
    caller.check_scope(Need::Inference(shown)).map_err(reject)?;
    let (parts, body) = request.into_parts();
    if !matches!(format, Format::Gemini { .. }) {
        anthropic::check_version(parts.headers.get("anthropic-version").map(|v| v.as_bytes())).map_err(reject)?;
    }
    let body = super::read_body(body, &parts.headers, caller.endpoint.max_body_bytes).await.map_err(reject)?;
    let (translated, tokens, answer) = match format {
        Format::Gemini { model, .. } => {
            let count = gemini::request::count_tokens(&body, model).map_err(reject)?;
            (count.body, count.total_tokens, serde_json::json!({"totalTokens": count.total_tokens}))
        }
        _ => {
            let body = caller.endpoint.defaults.fill(&body, false);
            let count = anthropic::request::count_tokens(&body).map_err(reject)?;
            (count.body, count.input_tokens, serde_json::json!({"input_tokens": count.input_tokens}))
        }
    };
    let fields = openai::read_fields(&translated).map_err(reject)?;
    let resolved = resolve::resolve(&caller, Api::ChatCompletions, &fields, now).map_err(reject)?;
    accounting::tokens_counted(&gateway.metrics, request_id, &caller, resolved.model, tokens, started, audit);
    Ok(respond::json(answer.to_string()))
}
