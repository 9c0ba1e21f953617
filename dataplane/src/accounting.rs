//! The end of a request: usage and cost, limits settled, metrics, the access log line and (with
//! `--audit-log`) the audit record. An
//! admitted request is settled exactly once however it ends (answered whole, streamed to the
//! end, timed out, upstream crash, every backend failed, client gone): [`Admitted`] from the
//! moment the limits let it in, [`Accounting`] once a backend has answered.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::StatusCode;
use hyper::header::HeaderValue;
use sluice_crds::config::PricingConfig;

use crate::audit::record::nano_dollars;
use crate::audit::{RequestAudit, RequestRecord};
use crate::auth::{Caller, KeyCaller};
use crate::backends::health::Verdict;
use crate::backends::{Attempt, Outcome};
use crate::limits::{Admission, KeyState, Used};
use crate::logging::{ADDRESS_TEXT, AccessRecord, Address};
use crate::metrics::{Metrics, ModelMetrics, upstream_error};
use crate::protocol::AnswerFormat;
use crate::protocol::openai::Usage;
use crate::protocol::sse::SseTap;
use crate::route::Api;
use crate::snapshot::{Backend, Model, Tier};
use crate::traces::RequestTrace;
use crate::traces::content::Output;
use crate::usage_api::UsageBook;
use crate::usage_api::book::Settled;

/// A request's id: the client's `x-request-id`, or one made here. Kept as the header value it is
/// sent back as; every log line about the request carries it.
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

    /// The id as text: empty for a client's id that is not visible ASCII (as `Display` writes it).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cost in US dollars of `usage` at `pricing` (per million tokens) times `multiplier`.
pub fn cost_usd(usage: &Usage, pricing: Option<&PricingConfig>, multiplier: f64) -> f64 {
    let Some(p) = pricing else { return 0.0 };
    let cached = usage.cached_tokens.min(usage.prompt_tokens) as f64;
    let uncached = usage.prompt_tokens as f64 - cached;
    (uncached * p.input_per_million
        + cached * p.cached_input_per_million
        + usage.completion_tokens as f64 * p.output_per_million)
        / 1_000_000.0
        * multiplier
}

/// Why a streamed response ended before its upstream's stream did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutShort {
    /// The tier's total time ran out.
    TotalTimeout,
    /// The upstream was silent for longer than the tier's idle limit.
    IdleTimeout,
    /// The upstream's stream broke.
    UpstreamError,
}

impl CutShort {
    /// As the access log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TotalTimeout => "total timeout",
            Self::IdleTimeout => "idle timeout",
            Self::UpstreamError => "upstream stream error",
        }
    }
}

/// A request the limits let in, until it is settled. Dropped unsettled (the client went away
/// while the backends were tried), it settles as a 499.
pub struct Admitted {
    request_id: RequestId,
    project: Arc<str>,
    endpoint: Arc<str>,
    model: Arc<str>,
    key_id: Arc<str>,
    /// The client's address.
    client: IpAddr,
    started: Instant,
    /// Prompt tokens estimated before the call (used when the answer reports none).
    estimated_prompt_tokens: u64,
    key_state: Arc<KeyState>,
    tier: Arc<Tier>,
    admission: Admission,
    metrics: ModelMetrics,
    all_metrics: Arc<Metrics>,
    /// Where usage per key, endpoint and model is summed.
    usage: Arc<UsageBook>,
    /// The period of the key's counters (its budget's; monthly without one).
    key_period: sluice_crds::api::BudgetPeriod,
    settled: bool,
    /// The API called, for the GenAI metrics' operation.
    api: Api,
    /// The request's trace, told the usage and cost.
    trace: RequestTrace,
    /// Where its audit record goes (with `--audit-log`).
    audit: Option<RequestAudit>,
}

/// The backend that answered.
struct Served {
    backend: Arc<str>,
    /// Its index in the model's backends (for its metric series).
    index: usize,
    provider: Arc<str>,
    pricing: Option<PricingConfig>,
    first_byte: Instant,
    /// The attempt, in flight on the backend until the end reports it.
    attempt: Attempt,
}

/// How the answer ended, as far as the gateway saw it.
#[derive(Default)]
struct End {
    /// What ended; `None`: the account was dropped (the client went away).
    answer: Option<AnswerKind>,
    usage: Option<Usage>,
    /// Events that carried text (an estimate of output tokens when usage is missing).
    events: u64,
    cut_short: Option<CutShort>,
    /// The error code of a refusal after admission.
    error: Option<&'static str>,
    /// The answer's text, for a request span that records it.
    output: Option<Box<Output>>,
}

/// The kind of answer that ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AnswerKind {
    Whole,
    Stream,
}

impl Admitted {
    /// Opens the account of `caller`'s request to `model`, admitted as `admission`.
    #[allow(clippy::too_many_arguments)] // each is one thing the account keeps; a struct would only rename them
    pub fn new(
        request_id: RequestId,
        started: Instant,
        caller: &Caller<'_>,
        model: &Model,
        admission: Admission,
        estimated_prompt_tokens: u64,
        all_metrics: Arc<Metrics>,
        usage: Arc<UsageBook>,
    ) -> Self {
        model.metrics.in_flight.inc();
        Self {
            request_id,
            project: caller.project.slug.clone(),
            endpoint: caller.endpoint.slug.clone(),
            model: model.name.clone(),
            key_id: caller.key.id.clone(),
            client: caller.client,
            started,
            estimated_prompt_tokens,
            key_state: caller.key.state.clone(),
            tier: caller.tier.clone(),
            admission,
            metrics: model.metrics.clone(),
            all_metrics,
            usage,
            key_period: caller.key.budget.as_ref().map_or(sluice_crds::api::BudgetPeriod::Monthly, |b| b.period),
            settled: false,
            api: Api::ChatCompletions,
            trace: RequestTrace::default(),
            audit: None,
        }
    }

    /// The account of a call to `api`, reporting to the request's `trace`.
    pub fn observed(mut self, api: Api, trace: RequestTrace) -> Self {
        self.api = api;
        self.trace = trace;
        self
    }

    /// The account of a request whose record goes to `audit`.
    pub fn audited(mut self, audit: Option<&RequestAudit>) -> Self {
        self.audit = audit.cloned();
        self
    }

    /// Settles a request that got no answer: every backend failed, with `status` and `code`.
    pub fn refused(mut self, status: u16, code: &'static str) {
        self.settle(status, None, false, End { error: Some(code), ..End::default() });
    }

    /// Settles the request. Runs once; later calls (and the drop) do nothing.
    fn settle(&mut self, status: u16, served: Option<&mut Served>, streamed: bool, end: End) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let now = Instant::now();
        self.metrics.in_flight.dec();
        // A stream that broke before its usage chunk is billed for what was seen, once.
        let usage = end.usage.unwrap_or(Usage {
            prompt_tokens: if status < 400 { self.estimated_prompt_tokens } else { 0 },
            completion_tokens: end.events,
            cached_tokens: 0,
        });
        let billable = status < 400;
        let served = served.map(|served| {
            served.attempt.finish(backend_outcome(status, streamed, served.first_byte, now, &usage, &end));
            &*served
        });
        let pricing = served.and_then(|s| s.pricing.as_ref());
        let cost = if billable { cost_usd(&usage, pricing, self.tier.config.price_multiplier) } else { 0.0 };
        let used = if billable {
            Used { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, cost_usd: cost }
        } else {
            Used::default()
        };
        let wall = jiff::Timestamp::now();
        self.key_state.settle(&self.admission, &self.tier.config, used, now, wall);
        self.usage.record(&Settled {
            project: &self.project,
            key_id: &self.key_id,
            endpoint: &self.endpoint,
            model: &self.model,
            used,
            key_state: &self.key_state,
            key_period: self.key_period,
            at: wall,
        });

        let status = if status == 0 { 499 } else { status };
        self.metrics.count(status);
        let elapsed = now.duration_since(self.started);
        // The exemplar's trace id: only for a sampled request (none is read otherwise).
        let trace_id = self.trace.trace_id();
        self.metrics.duration.observe(elapsed.as_secs_f64(), trace_id);
        if billable {
            self.metrics.tokens_in.inc_by(usage.prompt_tokens);
            self.metrics.tokens_out.inc_by(usage.completion_tokens);
            self.metrics.tokens_cached.inc_by(usage.cached_tokens.min(usage.prompt_tokens));
            self.metrics.cost_usd.inc_by(cost);
        }
        let ttft = served.map(|s| s.first_byte.duration_since(self.started));
        let genai = served
            .and_then(|s| self.metrics.backends.get(s.index))
            .map(|b| b.genai(&self.all_metrics, self.api, streamed));
        if let Some(genai) = genai {
            genai.request_duration.observe(elapsed.as_secs_f64(), trace_id);
            if billable {
                genai.input_tokens.observe(usage.prompt_tokens as f64);
                genai.output_tokens.observe(usage.completion_tokens as f64);
            }
        }
        self.trace.settled(&usage, cost, ttft, end.cut_short.map(CutShort::as_str));
        if let Some(output) = end.output {
            self.trace.output(*output);
        }
        // Time to first token means something for streams only (a whole answer's first byte is
        // its last).
        if let (Some(ttft), true) = (ttft, streamed && (200..300).contains(&status)) {
            self.metrics.ttft.observe(ttft.as_secs_f64(), trace_id);
            if let Some(histogram) = genai.and_then(|g| g.ttft.as_ref()) {
                histogram.observe(ttft.as_secs_f64(), trace_id);
            }
            if usage.completion_tokens > 1 && end.cut_short.is_none() {
                let decode = elapsed.saturating_sub(ttft).as_secs_f64();
                let tpot = decode / (usage.completion_tokens - 1) as f64;
                self.metrics.tpot.observe(tpot);
                if let Some(histogram) = genai.and_then(|g| g.tpot.as_ref()) {
                    histogram.observe(tpot);
                }
            }
        }
        if let (Some(CutShort::UpstreamError), Some(served)) = (end.cut_short, served) {
            self.all_metrics.upstream_error(&self.project, &self.endpoint, &served.provider, upstream_error::STREAM);
        }
        AccessRecord {
            request_id: self.request_id.as_str(),
            project: &self.project,
            endpoint: &self.endpoint,
            model: &self.model,
            key: &self.key_id,
            client: self.client,
            backend: served.map_or("", |s| &*s.backend),
            status,
            duration_ms: elapsed.as_millis() as u64,
            ttft_ms: ttft.map(|t| t.as_millis() as u64),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            // Whole nano-dollars: `2e-5`, not the `2.0000000000000005e-5` of summed float prices.
            cost_usd: (cost * 1e9).round() / 1e9,
            cut_short: end.cut_short.map(CutShort::as_str),
        }
        .log();
        if let Some(audit) = &self.audit {
            audit.record(RequestRecord {
                time: wall,
                request_id: self.request_id.0.clone(),
                project: Some(self.project.clone()),
                endpoint: Some(self.endpoint.clone()),
                key_id: Some(self.key_id.clone()),
                model: Some(self.model.clone()),
                backend: served.map(|s| s.backend.clone()),
                status,
                // Dropped unsettled: the client went away before the answer (or the stream) ended.
                error: end.error.or(end.answer.is_none().then_some("client_closed_request")),
                cut_short: end.cut_short.map(CutShort::as_str),
                duration_ms: elapsed.as_millis() as u64,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_nano_usd: nano_dollars(cost),
                client: audit.client(),
            });
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.settle(0, None, false, End::default());
    }
}

/// The account of a request a backend answered, settled when the answer ends.
pub struct Accounting {
    admitted: Admitted,
    served: Served,
    /// Status sent to the client.
    status: u16,
    /// Whether the client asked for a stream.
    streamed: bool,
}

impl Accounting {
    /// The account of `admitted` once `backend` has answered with `status`, its first byte at
    /// `first_byte`.
    pub fn new(
        admitted: Admitted,
        backend: &Backend,
        index: usize,
        attempt: Attempt,
        first_byte: Instant,
        status: StatusCode,
        streamed: bool,
    ) -> Self {
        let served = Served {
            backend: backend.label.clone(),
            index,
            provider: backend.upstream.id.clone(),
            pricing: backend.pricing.clone(),
            first_byte,
            attempt,
        };
        Self { admitted, served, status: status.as_u16(), streamed }
    }

    /// For log lines.
    pub fn request_id(&self) -> &RequestId {
        &self.admitted.request_id
    }

    /// The backend that answered, for log lines.
    pub fn backend(&self) -> &str {
        &self.served.backend
    }

    /// Settles an answer read whole: its usage is the body's (a successful one's), read in
    /// `format`.
    pub fn finish_whole(mut self, body: &[u8], format: AnswerFormat) {
        let ok = (200..300).contains(&self.status);
        let usage = if ok { format.read_usage(body) } else { None };
        let records = ok && self.admitted.api == Api::ChatCompletions && self.admitted.trace.records_content();
        let output = records.then(|| Box::new(Output::whole(format, body)));
        self.finish(End { answer: Some(AnswerKind::Whole), usage, output, ..End::default() });
    }

    /// Settles a stream that ended, `cut_short` or not, with what `tap` read from it.
    pub fn finish_stream(&mut self, tap: &mut SseTap, cut_short: Option<CutShort>) {
        self.finish(End {
            answer: Some(AnswerKind::Stream),
            usage: tap.usage,
            events: tap.text_events,
            cut_short,
            error: None,
            output: tap.output.take(),
        });
    }

    fn finish(&mut self, end: End) {
        self.admitted.settle(self.status, Some(&mut self.served), self.streamed, end);
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.finish(End::default());
    }
}

/// What an answer that ended says about its backend: a whole answer is a success (measured when
/// 2xx); a stream that ended is one, one that broke or stalled a failure, one the tier's total
/// time or the client cut short says nothing about health but still measures its first token.
fn backend_outcome(
    status: u16,
    streamed: bool,
    first_byte: Instant,
    now: Instant,
    usage: &Usage,
    end: &End,
) -> Outcome {
    let ok = (200..300).contains(&status);
    let verdict = match end.cut_short {
        None => Verdict::Success,
        Some(CutShort::UpstreamError | CutShort::IdleTimeout) => Verdict::Failure,
        Some(CutShort::TotalTimeout) => Verdict::Neutral,
    };
    match end.answer {
        Some(AnswerKind::Whole) => Outcome::Whole { head: first_byte, tokens: ok.then_some(usage.completion_tokens) },
        Some(AnswerKind::Stream) if ok => {
            Outcome::Stream { first: first_byte, end: now, tokens: usage.completion_tokens, verdict }
        }
        Some(AnswerKind::Stream) => Outcome::Missed(Verdict::Success),
        None if ok && streamed => {
            Outcome::Stream { first: first_byte, end: now, tokens: usage.completion_tokens, verdict: Verdict::Neutral }
        }
        None => Outcome::Missed(Verdict::Neutral),
    }
}

/// Counts, logs and audits a request refused before it was admitted: there is nothing to
/// settle. `at` is the project and endpoint, once the path named ones the key opens; `key` the
/// key's id once it was recognised.
#[allow(clippy::too_many_arguments)] // each is one fact about the refusal; a struct would only rename them
pub fn refused(
    metrics: &Metrics,
    request_id: &RequestId,
    at: Option<(&str, &str)>,
    client: IpAddr,
    key: Option<&str>,
    status: u16,
    code: &'static str,
    started: Instant,
    audit: Option<&RequestAudit>,
) {
    let (project, endpoint) = at.unwrap_or_default();
    metrics.count_unrouted(project, endpoint, status);
    metrics.rejection(project, endpoint, code);
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut address = [0; ADDRESS_TEXT];
    tracing::info!(target: crate::logging::ACCESS_TARGET, request_id = request_id.as_str(), project,
        endpoint, client = Address(client).text(&mut address), status, error = code, duration_ms, "request refused");
    if let Some(audit) = audit {
        // Refusals are the one audited path that copies its strings (the slugs are borrowed
        // here); only with the audit log on.
        audit.record(RequestRecord {
            project: at.map(|(project, _)| project.into()),
            endpoint: at.map(|(_, endpoint)| endpoint.into()),
            key_id: key.map(Into::into),
            error: Some(code),
            duration_ms,
            ..RequestRecord::new(request_id.0.clone(), status, audit.client())
        });
    }
}

/// The record of a request the gateway answered itself (no backend, no cost).
fn answered_here(
    request_id: &RequestId,
    caller: &Caller<'_>,
    model: Option<&Model>,
    started: Instant,
    audit: &RequestAudit,
) -> RequestRecord {
    RequestRecord {
        project: Some(caller.project.slug.clone()),
        endpoint: Some(caller.endpoint.slug.clone()),
        key_id: Some(caller.key.id.clone()),
        model: model.map(|m| m.name.clone()),
        duration_ms: started.elapsed().as_millis() as u64,
        ..RequestRecord::new(request_id.0.clone(), 200, audit.client())
    }
}

/// Audits a project-level answer (`/<project>/v1/usage`, `/keys/self`, the key API), which
/// [`crate::usage_api`] and [`crate::keys_api`] log.
pub fn project_api_answered(
    request_id: &RequestId,
    caller: KeyCaller<'_>,
    status: u16,
    started: Instant,
    audit: Option<&RequestAudit>,
) {
    if let Some(audit) = audit {
        audit.record(RequestRecord {
            project: Some(caller.project.slug.clone()),
            key_id: Some(caller.key.id.clone()),
            duration_ms: started.elapsed().as_millis() as u64,
            ..RequestRecord::new(request_id.0.clone(), status, audit.client())
        });
    }
}

/// Counts, logs and audits a `/v1/models` answer.
pub fn models_listed(
    metrics: &Metrics,
    request_id: &RequestId,
    caller: &Caller<'_>,
    started: Instant,
    audit: Option<&RequestAudit>,
) {
    let (project, endpoint) = (&caller.project.slug, &caller.endpoint.slug);
    metrics.count_unrouted(project, endpoint, 200);
    let mut address = [0; ADDRESS_TEXT];
    tracing::info!(target: crate::logging::ACCESS_TARGET, request_id = request_id.as_str(), project = &**project,
        endpoint = &**endpoint, key = &*caller.key.id, client = Address(caller.client).text(&mut address), status = 200,
        duration_ms = started.elapsed().as_millis() as u64, "models listed");
    if let Some(audit) = audit {
        audit.record(answered_here(request_id, caller, None, started, audit));
    }
}

/// Counts, logs and audits a `count_tokens` answer (made by the gateway, charged to no limit).
pub fn tokens_counted(
    metrics: &Metrics,
    request_id: &RequestId,
    caller: &Caller<'_>,
    model: &Model,
    input_tokens: u64,
    started: Instant,
    audit: Option<&RequestAudit>,
) {
    let (project, endpoint) = (&caller.project.slug, &caller.endpoint.slug);
    metrics.count_unrouted(project, endpoint, 200);
    let mut address = [0; ADDRESS_TEXT];
    tracing::info!(target: crate::logging::ACCESS_TARGET, request_id = request_id.as_str(), project = &**project,
        endpoint = &**endpoint, model = &*model.name, key = &*caller.key.id,
        client = Address(caller.client).text(&mut address), status = 200, input_tokens,
        duration_ms = started.elapsed().as_millis() as u64, "tokens counted");
    if let Some(audit) = audit {
        audit.record(answered_here(request_id, caller, Some(model), started, audit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_counts_cached_tokens_at_their_price() {
        let pricing = PricingConfig { input_per_million: 1.0, cached_input_per_million: 0.1, output_per_million: 2.0 };
        let usage = Usage { prompt_tokens: 1_000_000, completion_tokens: 500_000, cached_tokens: 400_000 };
        let cost = cost_usd(&usage, Some(&pricing), 1.5);
        // (600k * 1 + 400k * 0.1 + 500k * 2) / 1M = 1.64, times 1.5.
        assert!((cost - 2.46).abs() < 1e-9, "{cost}");
        assert_eq!(cost_usd(&usage, None, 1.0), 0.0);
    }

    #[test]
    fn generated_request_ids_are_unique_hex() {
        let id = RequestId::generate(0x0123_4567_89ab_cdef, 42).to_string();
        assert_eq!(id, "req_0123456789abcdef0000002a");
    }
}
