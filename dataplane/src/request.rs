//! A request's path through the gateway, stage by stage: route by path, authenticate, read the
//! body, resolve the model, admit under the tier's limits, route to a backend (failing over
//! before the first byte), then answer with the upstream's bytes. Every refusal is an
//! [`ApiError`], turned into a response in one place ([`error_response`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use jiff::Timestamp;

use crate::Gateway;
use crate::auth::{self, Need};
use crate::error::ApiError;
use crate::limits::LimitReport;
use crate::metrics::upstream_error;
use crate::protocol::openai::{self, Rewrite};
use crate::protocol::sse::SseTap;
use crate::routing;
use crate::snapshot::{Endpoint, Model, NameTarget, Project, Snapshot, Tier};
use crate::upstream::{Api, UpstreamBody, UpstreamError};
use crate::usage::{Accounting, ResponseBody, StreamBody, collect_body};

/// Largest non-streaming upstream answer the gateway relays.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest upstream error body read (to pass on or to log).
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_SLUICE_BACKEND: HeaderName = HeaderName::from_static("x-sluice-backend");

/// A request's id: the client's `x-request-id`, or one made here. Kept as the header value it is
/// sent back as.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// `req_<16 hex digits of the process prefix><8 hex digits of the counter>`.
    pub fn generate(prefix: u64, counter: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = *b"req_000000000000000000000000";
        for (i, slot) in buf[4..20].iter_mut().enumerate() {
            *slot = HEX[((prefix >> (60 - 4 * i)) & 0xf) as usize];
        }
        for (i, slot) in buf[20..28].iter_mut().enumerate() {
            *slot = HEX[((counter >> (28 - 4 * i)) & 0xf) as usize];
        }
        // Only ASCII hex digits and `req_`: always a valid header value.
        Self(HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("req")))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.to_str().unwrap_or_default())
    }
}

/// What the path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'p> {
    Api(Api),
    ListModels,
    GetModel(&'p str),
}

/// Splits `/<project>/<endpoint>/v1/<api>`.
fn parse_path(path: &str) -> Option<(&str, &str, Route<'_>)> {
    let rest = path.strip_prefix('/')?;
    let (project, rest) = rest.split_once('/')?;
    let (endpoint, rest) = rest.split_once('/')?;
    let api = rest.strip_prefix("v1/")?;
    let route = match api {
        "chat/completions" => Route::Api(Api::ChatCompletions),
        "completions" => Route::Api(Api::Completions),
        "embeddings" => Route::Api(Api::Embeddings),
        "rerank" => Route::Api(Api::Rerank),
        "models" => Route::ListModels,
        other => Route::GetModel(other.strip_prefix("models/").filter(|id| !id.is_empty())?),
    };
    (!project.is_empty() && !endpoint.is_empty()).then_some((project, endpoint, route))
}

/// A refused request, with what is known about where it was going.
struct Rejection {
    error: ApiError,
    accounting: Option<Accounting>,
    project: Option<Arc<str>>,
    endpoint: Option<Arc<str>>,
    headers: HeaderMap,
}

impl From<ApiError> for Rejection {
    fn from(error: ApiError) -> Self {
        Self { error, accounting: None, project: None, endpoint: None, headers: HeaderMap::new() }
    }
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>, remote: SocketAddr) -> Response<ResponseBody> {
    let started = Instant::now();
    let request_id = gateway.request_id(request.headers());
    let snapshot = gateway.snapshot();
    let mut response = match serve(&gateway, &snapshot, request, remote, started, &request_id).await {
        Ok(response) => response,
        Err(rejection) => {
            let Rejection { error, accounting, project, endpoint, headers } = rejection;
            let (status, _, code) = error.parts();
            match accounting {
                Some(mut accounting) => {
                    accounting.status = status.as_u16();
                    accounting.finish();
                }
                None => {
                    let project = project.as_deref().unwrap_or_default();
                    let endpoint = endpoint.as_deref().unwrap_or_default();
                    gateway.metrics.count_unrouted(project, endpoint, status.as_u16());
                    tracing::info!(target: "sluice::access", request_id = %request_id, project,
                        endpoint, status = status.as_u16(), error = code,
                        duration_ms = started.elapsed().as_millis() as u64, "request refused");
                }
            }
            let mut response = error_response(error);
            response.headers_mut().extend(headers);
            response
        }
    };
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.0);
    response
}

/// The one place an [`ApiError`] becomes a response.
pub fn error_response(error: ApiError) -> Response<ResponseBody> {
    let (status, body, retry_after) = error.into_parts();
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some((name, value)) = retry_after {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn serve(
    gateway: &Arc<Gateway>,
    snapshot: &Arc<Snapshot>,
    request: Request<Incoming>,
    remote: SocketAddr,
    started: Instant,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, Rejection> {
    // hyper bounds the head only while it arrives incomplete; this bounds it however it was read.
    let head_bytes = request.uri().path().len()
        + request.uri().query().map_or(0, str::len)
        + request.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    if head_bytes > gateway.max_header_bytes {
        return Err(ApiError::HeadersTooLarge { limit: gateway.max_header_bytes }.into());
    }
    let unknown_path =
        || ApiError::UnknownPath { method: request.method().to_string(), path: request.uri().path().to_owned() };
    let (project_slug, endpoint_slug, route) = parse_path(request.uri().path()).ok_or_else(unknown_path)?;
    if snapshot.generation == 0 {
        return Err(ApiError::NotReady.into());
    }
    let now = Timestamp::now();
    let credential = auth::presented_credential(request.headers(), request.uri().query());
    let found = auth::authenticate(snapshot, credential, project_slug, now, unknown_path)?;
    let (project, key) = (found.project, found.key);
    let endpoint = project.endpoints.get(endpoint_slug).ok_or_else(unknown_path)?;
    let reject = |error: ApiError| Rejection {
        error,
        accounting: None,
        project: Some(project.slug.clone()),
        endpoint: Some(endpoint.slug.clone()),
        headers: HeaderMap::new(),
    };
    auth::check_source(key, remote.ip()).map_err(reject)?;
    auth::check_endpoint(key, &endpoint.slug).map_err(reject)?;
    let tier = key.tier.as_ref().or(endpoint.tier.as_ref()).unwrap_or(&project.default_tier);

    let api = match route {
        Route::ListModels | Route::GetModel(_) => {
            if request.method() != Method::GET {
                return Err(reject(ApiError::MethodNotAllowed(request.method().to_string())));
            }
            auth::check_scope(key, Need::ListModels).map_err(reject)?;
            let response = models_response(snapshot, endpoint, key, tier, route, now).map_err(reject)?;
            gateway.metrics.count_unrouted(&project.slug, &endpoint.slug, 200);
            tracing::info!(target: "sluice::access", request_id = %request_id, project = %project.slug, endpoint = %endpoint.slug,
                key = %key.id, status = 200, duration_ms = started.elapsed().as_millis() as u64, "models listed");
            return Ok(response);
        }
        Route::Api(api) => api,
    };
    if request.method() != Method::POST {
        return Err(reject(ApiError::MethodNotAllowed(request.method().to_string())));
    }
    if !endpoint.serves(api) {
        return Err(reject(ApiError::ApiNotEnabled(api.display())));
    }
    auth::check_scope(key, Need::Inference(api.display())).map_err(reject)?;

    let (parts, body) = request.into_parts();
    let limit = endpoint.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(reject(ApiError::BodyTooLarge { limit }));
    }
    let body = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                reject(ApiError::BodyTooLarge { limit })
            } else {
                reject(ApiError::InvalidJson(format!("the request body could not be read: {e}")))
            }
        })?
        .to_bytes();
    let fields = openai::read_fields(&body).map_err(reject)?;

    // Resolve the model.
    let target =
        endpoint.resolve(&fields.model).ok_or_else(|| reject(ApiError::ModelNotFound(fields.model.to_string())))?;
    let model = &endpoint.models[target.model()];
    let mut headers = HeaderMap::new();
    if let NameTarget::Alias { deprecated, sunset, .. } = target {
        if let Some(sunset) = sunset.filter(|s| *s <= now) {
            return Err(reject(ApiError::ModelRetired {
                alias: fields.model.to_string(),
                sunset: sunset.strftime("%Y-%m-%d").to_string(),
                replacement: model.name.to_string(),
            }));
        }
        if deprecated {
            deprecation_headers(&mut headers, sunset, &model.name);
        }
    }
    if !auth::model_allowed(key, &fields.model, &model.name) {
        return Err(reject(ApiError::ModelNotAllowed(fields.model.to_string())));
    }
    if !model.capabilities.contains(&api.capability()) {
        return Err(reject(ApiError::ModelUnsupported { model: model.name.to_string(), api: api.display() }));
    }
    if let (Some(cap), Some(asked)) = (endpoint.max_tokens, fields.max_tokens)
        && asked > cap
    {
        return Err(reject(ApiError::InvalidParam {
            param: "max_tokens",
            code: "max_tokens_exceeded",
            message: format!("max_tokens is {asked}, above this endpoint's limit of {cap}"),
        }));
    }

    // Admit under the tier's limits.
    let estimated_prompt = openai::estimate_prompt_tokens(body.len());
    let estimate = estimated_prompt + fields.max_tokens.unwrap_or(0);
    let admission = key
        .state
        .admit(&tier.config, key.budget.as_ref(), estimate, started, now)
        .map_err(|error| Rejection { headers: headers.clone(), ..reject(error) })?;
    let report = admission.report;
    tier.retries.deposit(tier.config.retry_percent);
    let mut accounting = Accounting::new(
        request_id.clone(),
        project.slug.clone(),
        endpoint.slug.clone(),
        model.name.clone(),
        key.id.clone(),
        started,
        estimated_prompt,
        key.state.clone(),
        tier.clone(),
        admission,
        model.metrics.clone(),
        gateway.metrics.clone(),
    );
    accounting.streamed = fields.stream;

    // Route, with failover before the first byte.
    let attempt = Attempt {
        gateway,
        project,
        endpoint,
        model,
        tier,
        api,
        client_headers: &parts.headers,
        body: &body,
        fields: &fields,
        total_deadline: started + Duration::from_millis(u64::from(tier.config.total_ms)),
    };
    match attempt.run(&mut accounting).await {
        Ok((status, upstream_headers, answer)) => {
            accounting.status = status.as_u16();
            let mut response = match answer {
                Answer::Whole(bytes) => {
                    if status.is_success() {
                        accounting.usage = openai::read_usage(&bytes);
                    }
                    accounting.finish();
                    Response::new(ResponseBody::full(bytes))
                }
                Answer::Stream { body, tap, first } => {
                    let idle = Duration::from_millis(u64::from(tier.config.idle_stream_ms));
                    let stream = StreamBody::new(body, tap, first, idle, attempt.total_deadline, accounting);
                    Response::new(ResponseBody::Stream(Box::new(stream)))
                }
            };
            *response.status_mut() = status;
            let out = response.headers_mut();
            out.reserve(upstream_headers.len() + 10);
            copy_response_headers(&upstream_headers, out);
            limit_headers(out, &report, tier);
            if !headers.is_empty() {
                out.extend(headers);
            }
            Ok(response)
        }
        Err(error) => {
            limit_headers(&mut headers, &report, tier);
            Err(Rejection {
                error,
                accounting: Some(accounting),
                project: Some(project.slug.clone()),
                endpoint: Some(endpoint.slug.clone()),
                headers,
            })
        }
    }
}

/// An upstream answer the client will get.
enum Answer {
    Whole(Bytes),
    Stream { body: UpstreamBody, tap: SseTap, first: Bytes },
}

/// Why one backend did not answer.
enum Miss {
    Connect(String),
    Timeout,
    Request(String),
    Status { status: StatusCode, retry_after: Option<HeaderValue> },
    Unsupported,
}

struct Attempt<'a> {
    gateway: &'a Arc<Gateway>,
    project: &'a Project,
    endpoint: &'a Endpoint,
    model: &'a Model,
    tier: &'a Arc<Tier>,
    api: Api,
    client_headers: &'a HeaderMap,
    body: &'a Bytes,
    fields: &'a openai::RequestFields<'a>,
    total_deadline: Instant,
}

impl Attempt<'_> {
    /// Tries backends in the routing plan's order until one answers, within the retry budget.
    async fn run(&self, accounting: &mut Accounting) -> Result<(StatusCode, HeaderMap, Answer), ApiError> {
        let order = routing::plan(self.model, self.endpoint.routing, &mut rand::rng());
        let mut last_miss = None;
        for (attempt, &index) in order.iter().enumerate() {
            if attempt > 0 && !self.tier.retries.withdraw(self.tier.config.min_retries_per_second, Instant::now()) {
                tracing::warn!(request_id = %accounting.request_id, "retry budget spent; no more failover");
                break;
            }
            if Instant::now() >= self.total_deadline {
                last_miss = Some(Miss::Timeout);
                break;
            }
            let backend = &self.model.backends[index];
            backend.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = self.try_backend(index).await;
            let miss = match result {
                Ok((status, headers, answer, first_byte)) => {
                    accounting.backend = backend.label.clone();
                    accounting.provider = backend.upstream.id.clone();
                    accounting.pricing = backend.pricing.clone();
                    accounting.first_byte = Some(first_byte);
                    accounting.backend_in_flight = Some(backend.in_flight.clone());
                    if attempt > 0 {
                        self.model.metrics.failovers.inc();
                    }
                    let mut headers = headers;
                    headers.insert(X_SLUICE_BACKEND.clone(), backend.label_header.clone());
                    return Ok((status, headers, answer));
                }
                Err(miss) => miss,
            };
            backend.in_flight.fetch_sub(1, Ordering::Relaxed);
            let kind = match &miss {
                Miss::Connect(_) => upstream_error::CONNECT,
                Miss::Timeout => upstream_error::TIMEOUT,
                Miss::Request(_) | Miss::Unsupported => upstream_error::REQUEST,
                Miss::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => upstream_error::STATUS_429,
                Miss::Status { .. } => upstream_error::STATUS_5XX,
            };
            self.gateway.metrics.upstream_error(&self.project.slug, &self.endpoint.slug, &backend.upstream.id, kind);
            let detail = match &miss {
                Miss::Connect(e) | Miss::Request(e) => e.clone(),
                Miss::Status { status, .. } => format!("status {status}"),
                Miss::Timeout => "no first byte in time".into(),
                Miss::Unsupported => "unsupported provider type".into(),
            };
            tracing::warn!(request_id = %accounting.request_id, backend = %backend.label, kind, detail = %detail,
                remaining = order.len() - attempt - 1, "backend failed before the first byte");
            last_miss = Some(miss);
        }
        let name = self.model.name.to_string();
        Err(match last_miss {
            Some(Miss::Timeout) => ApiError::UpstreamTimeout(name),
            Some(Miss::Status { status, retry_after }) if status == StatusCode::TOO_MANY_REQUESTS => {
                ApiError::UpstreamRateLimited { model: name, retry_after }
            }
            Some(Miss::Status { status, .. }) => ApiError::UpstreamStatus { model: name, status: status.as_u16() },
            Some(Miss::Request(_)) => ApiError::UpstreamStatus { model: name, status: 502 },
            Some(Miss::Connect(_) | Miss::Unsupported) | None => ApiError::NoHealthyBackend(name),
        })
    }

    /// One backend: sends, waits for the first bytes (or the whole answer when not streaming).
    async fn try_backend(&self, index: usize) -> Result<(StatusCode, HeaderMap, Answer, Instant), Miss> {
        let backend = &self.model.backends[index];
        let strip_usage = self.fields.stream && !self.fields.include_usage;
        let body = openai::rewrite_body(
            self.body,
            self.fields,
            Rewrite {
                model: backend.rewrite_from.as_ref().map(|_| backend.model.as_str()),
                include_usage: strip_usage,
            },
        );
        let now = Instant::now();
        let timeout_at = if self.fields.stream {
            (now + Duration::from_millis(u64::from(self.tier.config.first_token_ms))).min(self.total_deadline)
        } else {
            self.total_deadline
        };
        let streaming = self.fields.stream;
        let call = async {
            let response = backend.upstream.send(self.api, self.client_headers, body).await.map_err(|e| match e {
                UpstreamError::Connect(e) => Miss::Connect(e),
                UpstreamError::Request(e) => Miss::Request(e),
                UpstreamError::Unsupported(_) => Miss::Unsupported,
            })?;
            let headers_at = Instant::now();
            let (parts, mut body) = response.into_parts();
            let status = parts.status;
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = parts.headers.get(header::RETRY_AFTER).cloned();
                return Err(Miss::Status { status, retry_after });
            }
            let event_stream =
                parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            if streaming && status.is_success() && event_stream {
                let mut tap = SseTap::new(!self.fields.include_usage);
                loop {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else { continue };
                            let first = tap.feed(data);
                            if !first.is_empty() {
                                return Ok((
                                    status,
                                    parts.headers,
                                    Answer::Stream { body, tap, first },
                                    Instant::now(),
                                ));
                            }
                        }
                        Some(Err(e)) => return Err(Miss::Request(format!("stream: {e}"))),
                        None => {
                            let first = tap.finish();
                            return Ok((status, parts.headers, Answer::Stream { body, tap, first }, Instant::now()));
                        }
                    }
                }
            }
            let limit = if status.is_success() { MAX_RESPONSE_BYTES } else { MAX_ERROR_BODY_BYTES };
            let bytes = collect_body(body, limit).await.map_err(Miss::Request)?;
            Ok((status, parts.headers, Answer::Whole(bytes), headers_at))
        };
        match tokio::time::timeout_at(timeout_at.into(), call).await {
            Ok(result) => result,
            Err(_) => Err(Miss::Timeout),
        }
    }
}

/// Response headers from upstream that the client must not get: hop-by-hop ones, lengths the
/// gateway recomputes, cookies, and the upstream's own rate limits (the client's are ours).
fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        let dropped = matches!(
            n,
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "set-cookie"
                | "trailer"
                | "upgrade"
                | "proxy-connection"
                | "te"
        ) || n.starts_with("x-ratelimit-")
            || n == "retry-after";
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
}

/// `Deprecation`, `Sunset` (RFC 8594) and the model to move to.
fn deprecation_headers(headers: &mut HeaderMap, sunset: Option<Timestamp>, replacement: &str) {
    headers.insert(HeaderName::from_static("deprecation"), HeaderValue::from_static("true"));
    if let Some(sunset) = sunset {
        let date = sunset.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(value) = HeaderValue::try_from(date) {
            headers.insert(HeaderName::from_static("sunset"), value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(replacement) {
        headers.insert(HeaderName::from_static("x-sluice-model-replacement"), value);
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` in OpenAI's format.
fn limit_headers(headers: &mut HeaderMap, report: &LimitReport, tier: &Tier) {
    static NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    for ((names, numbers), limit) in NAMES.iter().zip([report.requests, report.tokens]).zip(&tier.limit_headers) {
        let (Some((_, remaining, reset)), Some(limit)) = (numbers, limit) else { continue };
        headers.insert(names[0].clone(), limit.clone());
        headers.insert(names[1].clone(), HeaderValue::from(remaining));
        if let Ok(value) = HeaderValue::try_from(format_reset(reset)) {
            headers.insert(names[2].clone(), value);
        }
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `120ms`, `7s`, `1.5s`, `6m0s`.
fn format_reset(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut numbers = itoa::Buffer::new();
    let mut text = String::with_capacity(12);
    if ms < 1000 {
        text.push_str(numbers.format(ms));
        text.push_str("ms");
    } else if ms < 60_000 {
        text.push_str(numbers.format(ms / 1000));
        let fraction = ms % 1000;
        if fraction > 0 {
            let digits = format!("{fraction:03}");
            text.push('.');
            text.push_str(digits.trim_end_matches('0'));
        }
        text.push('s');
    } else {
        text.push_str(numbers.format(ms / 60_000));
        text.push('m');
        text.push_str(numbers.format((ms % 60_000) / 1000));
        text.push('s');
    }
    text
}

/// `GET /v1/models` and `GET /v1/models/{id}`: what this key may use on this endpoint.
fn models_response(
    snapshot: &Snapshot,
    endpoint: &Endpoint,
    key: &crate::snapshot::Key,
    tier: &Tier,
    route: Route<'_>,
    now: Timestamp,
) -> Result<Response<ResponseBody>, ApiError> {
    let created = snapshot.loaded_at.as_second();
    let describe = |model: &Model| {
        let aliases: Vec<&str> = model
            .aliases
            .iter()
            .filter(|(_, sunset)| sunset.is_none_or(|s| s > now))
            .map(|(name, _)| name.as_str())
            .collect();
        let pricing = model.backends.first().and_then(|b| b.pricing.as_ref()).map(|p| {
            let m = tier.config.price_multiplier;
            serde_json::json!({
                "currency": "USD",
                "input_per_million": p.input_per_million * m,
                "cached_input_per_million": p.cached_input_per_million * m,
                "output_per_million": p.output_per_million * m,
            })
        });
        serde_json::json!({
            "id": &*model.name,
            "object": "model",
            "created": created,
            "owned_by": model.owned_by,
            "context_window": model.context_window,
            "max_output_tokens": model.max_output_tokens,
            "pricing": pricing,
            "capabilities": model.capabilities,
            "aliases": aliases,
        })
    };
    let body = match route {
        Route::GetModel(id) => {
            let target = endpoint.resolve(id).ok_or_else(|| ApiError::ModelNotFound(id.to_owned()))?;
            let model = &endpoint.models[target.model()];
            if let NameTarget::Alias { sunset: Some(sunset), .. } = target
                && sunset <= now
            {
                return Err(ApiError::ModelRetired {
                    alias: id.to_owned(),
                    sunset: sunset.strftime("%Y-%m-%d").to_string(),
                    replacement: model.name.to_string(),
                });
            }
            if !auth::model_allowed(key, id, &model.name) {
                return Err(ApiError::ModelNotFound(id.to_owned()));
            }
            describe(model)
        }
        _ => {
            let data: Vec<serde_json::Value> = endpoint
                .models
                .iter()
                .filter(|m| {
                    auth::model_allowed(key, &m.name, &m.name)
                        || m.aliases.iter().any(|(a, _)| auth::model_allowed(key, a, &m.name))
                })
                .map(describe)
                .collect();
            serde_json::json!({"object": "list", "data": data})
        }
    };
    let mut response = Response::new(ResponseBody::full(body.to_string()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_project_endpoint_and_api() {
        assert_eq!(
            parse_path("/demo/assistant/v1/chat/completions"),
            Some(("demo", "assistant", Route::Api(Api::ChatCompletions)))
        );
        assert_eq!(parse_path("/demo/assistant/v1/models"), Some(("demo", "assistant", Route::ListModels)));
        assert_eq!(
            parse_path("/demo/assistant/v1/models/Qwen/Qwen2.5-7B"),
            Some(("demo", "assistant", Route::GetModel("Qwen/Qwen2.5-7B")))
        );
        assert_eq!(parse_path("/demo/assistant/v1/models/"), None);
        assert_eq!(parse_path("/demo/assistant/v2/chat/completions"), None);
        assert_eq!(parse_path("//assistant/v1/models"), None);
        assert_eq!(parse_path("/demo/v1/models"), None);
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(format_reset(Duration::from_millis(120)), "120ms");
        assert_eq!(format_reset(Duration::from_millis(7000)), "7s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn generated_request_ids_are_unique_hex() {
        let id = RequestId::generate(0x0123_4567_89ab_cdef, 42).to_string();
        assert_eq!(id, "req_0123456789abcdef0000002a");
    }
}
