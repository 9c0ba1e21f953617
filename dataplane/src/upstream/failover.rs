//! Failover before the first byte: a model's backends are tried in the routing plan's order,
//! within the tier's retry budget and deadlines, until one answers. An answer is a whole body,
//! or a stream whose first event has arrived; once a byte has gone to the client there is no
//! going back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use sluice_crds::api::RoutingPolicy;

use crate::accounting::RequestId;
use crate::auth::Caller;
use crate::backends::health::Verdict;
use crate::backends::{Attempt, Outcome, latency};
use crate::error::ApiError;
use crate::metrics::{Metrics, upstream_error};
use crate::protocol::openai::{self, RequestFields};
use crate::protocol::sse::SseTap;
use crate::route::Api;
use crate::routing::{self, RouteRequest};
use crate::slo::SloHints;
use crate::snapshot::{Backend, Model, Project};
use crate::traces::{RequestTrace, StageSpan};
use crate::upstream::client::{UpstreamBody, UpstreamError};
use crate::upstream::outbound::{self, Native, Reading, Unfit};

/// Largest non-streaming upstream answer the gateway relays.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest upstream error body read (to pass on or to log).
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// One request's call to a model, with everything its attempts need.
pub struct Call<'a> {
    /// Who calls, on which endpoint, under which tier.
    pub caller: &'a Caller<'a>,
    /// The model whose backends are tried.
    pub model: &'a Model,
    /// The API called.
    pub api: Api,
    /// The client's headers (filtered on the way out).
    pub client_headers: &'a HeaderMap,
    /// The client's body, as read.
    pub body: &'a Bytes,
    /// Its fields.
    pub fields: &'a RequestFields<'a>,
    /// For a Messages request: the client's own body, which Anthropic backends take as it is
    /// (`body` is its chat completions translation, for the others).
    pub native: Option<Native<'a>>,
    /// When the whole request must be over.
    pub deadline: Instant,
    /// For the log lines of failed attempts.
    pub request_id: &'a RequestId,
    /// Where failed attempts are counted.
    pub metrics: &'a Metrics,
    /// The request's SLO hints, for the router.
    pub slo: SloHints,
    /// The request's trace: the routing decision and each attempt are spans of it.
    pub trace: &'a RequestTrace,
}

/// The backend that answered, and its answer so far.
pub struct Answered<'a> {
    /// The backend.
    pub backend: &'a Backend,
    /// Its index in the model's backends.
    pub index: usize,
    /// The attempt that answered: in flight on the backend until the account reports it.
    pub attempt: Attempt,
    /// Upstream status.
    pub status: StatusCode,
    /// Upstream headers, unfiltered.
    pub headers: HeaderMap,
    /// The body.
    pub body: Answer,
    /// When its first byte arrived (for a stream, its first event).
    pub first_byte: Instant,
    /// The time to first token the router predicted on the backend, ms.
    pub predicted_ttft_ms: Option<f32>,
    /// The format of `body`: OpenAI's, or the client's own Messages format (passed through).
    pub reading: Reading,
}

/// An upstream answer the client will get.
pub enum Answer {
    /// Read whole.
    Whole(Bytes),
    /// A stream whose first events (`first`, already read through `tap`) are in hand.
    Stream {
        /// The rest of the stream.
        body: UpstreamBody,
        /// What has read the stream so far.
        tap: SseTap,
        /// The events to send first.
        first: Bytes,
    },
}

/// Why one backend did not answer.
enum Miss {
    Connect(String),
    /// A failed TLS handshake: why for the client, and the whole error for the log.
    Tls {
        reason: &'static str,
        detail: String,
    },
    Timeout,
    Request(String),
    Status {
        status: StatusCode,
        retry_after: Option<HeaderValue>,
    },
    /// The backend's wire format has no such API.
    Unsupported,
    /// The request cannot be translated into the backend's wire format.
    Untranslatable(ApiError),
}

impl Miss {
    /// What the miss says about the backend's health.
    fn verdict(&self) -> Verdict {
        match self {
            Self::Timeout => Verdict::Timeout,
            Self::Connect(_) | Self::Tls { .. } | Self::Request(_) => Verdict::Failure,
            Self::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => Verdict::Neutral,
            Self::Status { .. } => Verdict::Failure,
            Self::Unsupported | Self::Untranslatable(_) => Verdict::Neutral,
        }
    }
}

impl<'a> Call<'a> {
    /// Tries backends in the routing plan's order until one answers, within the retry budget.
    pub async fn run(&self) -> Result<Answered<'a>, ApiError> {
        let Caller { project, endpoint, tier, .. } = *self.caller;
        let request = self.route_request(endpoint.routing, tier.config.priority < 0);
        let mut span = self.trace.stage("sluice.route");
        let plan = match routing::plan(self.model, endpoint.routing, &request, &mut rand::rng()) {
            Ok(plan) => plan,
            Err(shed) => {
                span.fail("shed");
                self.model.metrics.sheds.inc();
                return Err(ApiError::Shed { model: self.model.name.to_string(), retry_after: shed.retry_after });
            }
        };
        let order = plan.steps();
        let first = order.first().map(|step| &*self.model.backends[step.index].label);
        span.routed(endpoint.routing, plan.reason, order.len(), first);
        span.end();
        let tokens = request.prompt_tokens + self.fields.max_tokens.unwrap_or(0);
        let mut last_miss = None;
        let mut tried = 0;
        for (attempt, &routing::Step { index, probe, .. }) in order.iter().enumerate() {
            if attempt > 0 && !tier.retries.withdraw(tier.config.min_retries_per_second, Instant::now()) {
                tracing::warn!(request_id = %self.request_id, "retry budget spent; no more failover");
                break;
            }
            if Instant::now() >= self.deadline {
                last_miss = Some(Miss::Timeout);
                break;
            }
            let backend = &self.model.backends[index];
            tried = attempt + 1;
            let expected = routing::expected_of(&plan, attempt, &backend.state, &request);
            // Dropped with this future (the client went away), the attempt still leaves.
            let mut in_flight = backend.state.start(tokens, probe);
            in_flight.expect(expected);
            let server = if self.trace.is_recording() { server_address(project, backend) } else { None };
            let mut span = self.trace.attempt(self.api, backend, attempt, server, expected.ttft_ms);
            let attempt_started = Instant::now();
            let result = self.try_backend(backend, &span).await;
            let series = self.model.metrics.backends.get(index);
            if !matches!(
                result,
                Err(Miss::Timeout | Miss::Connect(_) | Miss::Tls { .. } | Miss::Unsupported | Miss::Untranslatable(_))
            ) {
                in_flight.answered();
            }
            let miss = match result {
                Ok((status, headers, body, first_byte, reading)) => {
                    if self.fields.stream && status.is_success() {
                        in_flight.first_token(first_byte);
                    }
                    if attempt > 0 {
                        self.model.metrics.failovers.inc();
                    }
                    if let Some(series) = series {
                        series.attempt("success", attempt_started.elapsed());
                    }
                    span.answered(status.as_u16());
                    span.end();
                    self.trace.retries(attempt);
                    self.trace.served(backend, server, expected.ttft_ms);
                    return Ok(Answered {
                        backend,
                        index,
                        attempt: in_flight,
                        status,
                        headers,
                        body,
                        first_byte,
                        predicted_ttft_ms: expected.ttft_ms,
                        reading,
                    });
                }
                Err(miss) => miss,
            };
            in_flight.report(Outcome::Missed(miss.verdict()));
            if let Miss::Untranslatable(error) = &miss {
                // The client's request, not the backend, is at fault: no upstream error.
                tracing::debug!(request_id = %self.request_id, backend = %backend.label, error = %error,
                    "request not translatable for this backend");
                span.fail("untranslatable");
                if let Some(series) = series {
                    series.attempt("untranslatable", attempt_started.elapsed());
                }
                last_miss = Some(miss);
                continue;
            }
            let kind = match &miss {
                Miss::Connect(_) => upstream_error::CONNECT,
                Miss::Tls { .. } => upstream_error::TLS,
                Miss::Timeout => upstream_error::TIMEOUT,
                Miss::Request(_) | Miss::Unsupported | Miss::Untranslatable(_) => upstream_error::REQUEST,
                Miss::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => upstream_error::STATUS_429,
                Miss::Status { .. } => upstream_error::STATUS_5XX,
            };
            self.metrics.upstream_error(&project.slug, &endpoint.slug, &backend.upstream.id, kind);
            if let Some(series) = series {
                series.attempt(kind, attempt_started.elapsed());
            }
            if let Miss::Status { status, .. } = &miss {
                span.answered(status.as_u16());
            }
            span.fail(kind);
            drop(span);
            let detail = match &miss {
                Miss::Connect(e) | Miss::Request(e) | Miss::Tls { detail: e, .. } => e.clone(),
                Miss::Status { status, .. } => format!("status {status}"),
                Miss::Timeout => "no first byte in time".into(),
                Miss::Unsupported => format!("{} cannot serve {}", backend.upstream.kind.as_str(), self.api.display()),
                Miss::Untranslatable(e) => e.to_string(),
            };
            tracing::warn!(request_id = %self.request_id, backend = %backend.label, kind, detail = %detail,
                remaining = order.len() - attempt - 1, "backend failed before the first byte");
            last_miss = Some(miss);
        }
        self.trace.retries(tried.saturating_sub(1));
        let name = self.model.name.to_string();
        Err(match last_miss {
            Some(Miss::Timeout) => ApiError::UpstreamTimeout(name),
            Some(Miss::Status { status, retry_after }) if status == StatusCode::TOO_MANY_REQUESTS => {
                ApiError::UpstreamRateLimited { model: name, retry_after }
            }
            Some(Miss::Status { status, .. }) => ApiError::UpstreamStatus { model: name, status: status.as_u16() },
            Some(Miss::Request(_)) => ApiError::UpstreamStatus { model: name, status: 502 },
            Some(Miss::Tls { reason, .. }) => ApiError::UpstreamTls { model: name, reason },
            Some(Miss::Untranslatable(error)) => error,
            Some(Miss::Connect(_) | Miss::Unsupported) | None => ApiError::NoHealthyBackend(name),
        })
    }

    /// What the router needs to know about this request. The prompt's prefix is hashed only
    /// for the strategies that use it.
    fn route_request(&self, policy: RoutingPolicy, sheddable: bool) -> RouteRequest {
        let affinity = matches!(policy, RoutingPolicy::SloAware | RoutingPolicy::QueueScore)
            && matches!(self.api, Api::ChatCompletions | Api::Completions);
        RouteRequest {
            ttft_hint_ms: self.slo.ttft.map(|h| h.ms),
            tpot_hint_ms: self.slo.tpot.map(|h| h.ms),
            prefix: if affinity {
                self.fields.prompt(self.body).and_then(routing::affinity::prefix_hash)
            } else {
                None
            },
            sheddable,
            prompt_tokens: openai::estimate_prompt_tokens(self.body.len()),
            max_tokens: self.fields.max_tokens,
        }
    }

    /// Waits for a non-streamed answer's head until `head_at`. A backend that answered someone
    /// else meanwhile is busy, not hung: each such answer buys another `wait`, up to the
    /// request's deadline. One that answered no one has hung: a timeout.
    async fn await_head<F, T>(&self, backend: &Backend, sent: F, wait: Duration, head_at: Instant) -> Result<T, Miss>
    where
        F: Future<Output = T>,
    {
        let since = backend.state.now_ms();
        let mut sent = std::pin::pin!(sent);
        let mut until = head_at;
        loop {
            match tokio::time::timeout_at(until.into(), &mut sent).await {
                Ok(response) => return Ok(response),
                Err(_) if until < self.deadline && backend.state.answered_since(since) => {
                    until = (until + wait).min(self.deadline);
                }
                Err(_) => return Err(Miss::Timeout),
            }
        }
    }

    /// One backend: sends, waits for the first bytes (or the whole answer when not streaming).
    async fn try_backend(
        &self,
        backend: &Backend,
        span: &StageSpan,
    ) -> Result<(StatusCode, HeaderMap, Answer, Instant, Reading), Miss> {
        let strip_usage = self.fields.stream && !self.fields.include_usage;
        let outbound = outbound::prepare(self.api, backend, self.body, self.fields, self.native, strip_usage).map_err(
            |unfit| match unfit {
                Unfit::Api => Miss::Unsupported,
                Unfit::Request(error) => Miss::Untranslatable(error),
            },
        )?;
        let reading = outbound.reading;
        let now = Instant::now();
        let tier = &self.caller.tier.config;
        let streaming = self.fields.stream;
        // A stream must show its first event within the tier's first-token time; a whole
        // answer its head within the backend's response deadline, then its body by the end.
        let (timeout_at, head_at) = if streaming {
            ((now + Duration::from_millis(u64::from(tier.first_token_ms))).min(self.deadline), None)
        } else {
            let model = &backend.state.latency;
            let wait = latency::response_deadline(
                model.response_per_token.get(),
                model.response_tokens.get(),
                self.fields.max_tokens,
                tier.first_token_ms,
                tier.total_ms,
            );
            (self.deadline, Some((wait, (now + wait).min(self.deadline))))
        };
        // With tracing on, the attempt's own `traceparent` goes upstream in place of the client's.
        let propagated = span.propagate(self.client_headers);
        let client_headers = propagated.as_ref().unwrap_or(self.client_headers);
        let call = async {
            let sent = backend.upstream.send(outbound.target, client_headers, outbound.body, outbound.origin);
            let response = match head_at {
                None => sent.await,
                Some((wait, head_at)) => self.await_head(backend, sent, wait, head_at).await?,
            };
            let response = response.map_err(|e| match e {
                UpstreamError::Connect(e) => Miss::Connect(e),
                UpstreamError::Request(e) => Miss::Request(e),
                UpstreamError::Tls { reason, detail } => Miss::Tls { reason, detail },
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
                body = reading.stream(body, unix_now);
                let mut tap = SseTap::reading(reading.format(), !self.fields.include_usage);
                if self.api == Api::ChatCompletions && self.trace.records_content() {
                    tap.record_output(reading.format());
                }
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
                                    reading,
                                ));
                            }
                        }
                        Some(Err(e)) => return Err(Miss::Request(format!("stream: {e}"))),
                        None => {
                            let first = tap.finish();
                            let stream = Answer::Stream { body, tap, first };
                            return Ok((status, parts.headers, stream, Instant::now(), reading));
                        }
                    }
                }
            }
            let limit = if status.is_success() { MAX_RESPONSE_BYTES } else { MAX_ERROR_BODY_BYTES };
            let collect = collect_body(body, limit);
            let bytes = match head_at {
                // Within the stream's first-token time (the timeout around the whole call).
                None => collect.await,
                Some(_) => tokio::time::timeout_at(self.deadline.into(), collect).await.map_err(|_| Miss::Timeout)?,
            }
            .map_err(Miss::Request)?;
            let (status, bytes) = reading.whole(status, bytes, unix_now);
            Ok((status, parts.headers, Answer::Whole(bytes), headers_at, reading))
        };
        if !streaming {
            // The head's wait ends by the deadline, and the body's has a timer of its own,
            // armed only when the body is not there with its head: one timer a request, not a
            // second one around the whole call (a timer costs a lock and the wheel's insert and
            // removal).
            return call.await;
        }
        match tokio::time::timeout_at(timeout_at.into(), call).await {
            Ok(result) => result,
            Err(_) => Err(Miss::Timeout),
        }
    }
}

/// `host[:port]` of the upstream `backend` calls: its pod's, or its Provider's base URL's.
fn server_address<'p>(project: &'p Project, backend: &'p Backend) -> Option<&'p str> {
    match backend.label.split_once('@') {
        Some((_, pod)) => Some(pod),
        None => project.servers.get(&*backend.upstream.id).map(String::as_str),
    }
}

/// Now, in Unix seconds: when a translated completion was made.
fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Reads a whole upstream body, up to `limit` bytes (a single-frame body is not copied).
async fn collect_body(mut body: UpstreamBody, limit: usize) -> Result<Bytes, String> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            return Err(format!("the upstream answer exceeds {limit} bytes"));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            previous => {
                if let Some(previous) = previous {
                    joined.extend_from_slice(&previous);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}
