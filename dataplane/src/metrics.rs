//! Prometheus metrics. Label values come only from the configuration (project, endpoint, model,
//! provider slugs, API key ids `<namespace>/<name>`) or fixed sets (status class, error kind),
//! never from client input or key material, so cardinality is bounded by what the operator
//! declared. The per-key families (`sluice_key_*`) have one series per key that has been used,
//! and one (`key_id="jwt"`) for all the JWT subjects of a project together ([`key_label`]):
//! subjects come from tokens, not configuration, so they never become labels. Per-model handles are resolved when a
//! snapshot is built, so the request path increments atomics without hashing labels.
//!
//! Beside the `sluice_*` families, the histograms the OpenTelemetry GenAI semantic conventions
//! define are exposed under their names (`gen_ai.server.request.duration` as
//! `gen_ai_server_request_duration_seconds`, `gen_ai.client.token.usage` as
//! `gen_ai_client_token_usage`...), with the conventions' buckets and attributes as labels
//! (operation, provider type, requested and upstream model) plus project, endpoint and stream.
//! Their series are made on a backend's first use for an (operation, stream) pair, then kept in
//! [`ModelMetrics`] like the others. Every label value is a configured name or one of a fixed set.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use sluice_crds::api::RoutingPolicy;

use crate::backends::health::EjectReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    project: String,
    endpoint: String,
    model: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    project: String,
    endpoint: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    project: String,
    endpoint: String,
    model: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    project: String,
    key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyTokenLabels {
    project: String,
    key_id: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    project: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    project: String,
    endpoint: String,
    provider: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    provider: String,
    model: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    provider: String,
    model: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    provider: String,
    model: String,
    strategy: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SloLabels {
    provider: String,
    model: String,
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    provider: String,
    model: String,
    pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodScrapeLabels {
    provider: String,
    pod: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    project: String,
    endpoint: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedactionLabels {
    project: String,
    endpoint: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContentRuleLabels {
    project: String,
    endpoint: String,
    rule_kind: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiLabels {
    project: String,
    endpoint: String,
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: String,
    gen_ai_response_model: String,
    stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiTokenLabels {
    #[prometheus(flatten)]
    call: GenAiLabels,
    gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedisErrorLabels {
    kind: &'static str,
}

/// The shared limiter's health (`sluice_limits_*`): registered always, moved only with
/// `--redis-url`.
#[derive(Clone, Debug, Default)]
pub struct LimiterMetrics {
    /// 1 while Redis answers (the circuit is closed), 0 while replicas enforce their share.
    pub redis_up: Gauge,
    /// Admissions decided by this replica's fallback counters because Redis was unavailable.
    pub fallback_admissions: Counter,
    /// Key-periods whose spend Redis has not confirmed yet.
    pub unwritten_spend: Gauge,
    redis_errors: Family<RedisErrorLabels, Counter>,
}

impl LimiterMetrics {
    /// Failed Redis calls of `kind` (`timeout` or `error`).
    pub fn redis_errors(&self, kind: &'static str) -> Counter {
        self.redis_errors.get_or_create_owned(&RedisErrorLabels { kind })
    }
}

/// The audit log's writer (`sluice_audit_*`): registered always, moved only with `--audit-log`.
#[derive(Clone, Debug, Default)]
pub struct AuditMetrics {
    /// Request records written to the audit log.
    pub records: Counter,
    /// Checkpoints written.
    pub checkpoints: Counter,
    /// Records dropped because the writer's queue was full (each declared in a `gap` line).
    pub dropped: Counter,
}

/// The `key_id` label of a key id: itself for an API key (`<namespace>/<name>`), `jwt` for
/// every JWT subject (`jwt:<subject>`; an API key id has no `:`, a namespace cannot).
pub fn key_label(key_id: &Arc<str>) -> Arc<str> {
    if key_id.starts_with("jwt:") { Arc::from("jwt") } else { key_id.clone() }
}

/// Handles for one API key (`sluice_key_*`), resolved once per key.
#[derive(Clone, Debug, Default)]
pub struct KeyMetrics {
    /// Requests admitted and settled (answered or failed after admission).
    pub requests: Counter,
    /// Prompt tokens billed.
    pub tokens_in: Counter,
    /// Completion tokens billed.
    pub tokens_out: Counter,
    /// Cost in US dollars.
    pub cost_usd: Counter<f64, AtomicU64>,
}

/// The exemplar of a latency bucket: the trace of a sampled request that fell in it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    trace_id: String,
}

/// A latency histogram (request duration, time to first token). With tracing on, each bucket
/// keeps the trace id of the last sampled request it counted, as an OpenMetrics exemplar;
/// with tracing off it is a plain histogram and an observation does no exemplar work at all.
#[derive(Clone, Debug)]
pub enum LatencyHistogram {
    /// Without exemplars.
    Plain(Histogram),
    /// With a trace id per bucket.
    Traced(HistogramWithExemplars<TraceExemplar>),
}

impl LatencyHistogram {
    /// Counts `seconds`; `trace` is the trace id of a sampled request (the bucket's exemplar).
    pub fn observe(&self, seconds: f64, trace: Option<opentelemetry::trace::TraceId>) {
        match self {
            Self::Plain(histogram) => histogram.observe(seconds),
            Self::Traced(histogram) => {
                let exemplar = trace.map(|id| TraceExemplar { trace_id: id.to_string() });
                histogram.observe(seconds, exemplar, None);
            }
        }
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Plain(histogram) => histogram.encode(encoder),
            Self::Traced(histogram) => histogram.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Makes a family's [`LatencyHistogram`]s: its buckets, with exemplars or not.
#[derive(Clone, Copy)]
struct Latency {
    buckets: fn() -> Vec<f64>,
    exemplars: bool,
}

impl MetricConstructor<LatencyHistogram> for Latency {
    fn new_metric(&self) -> LatencyHistogram {
        let buckets = (self.buckets)().into_iter();
        if self.exemplars {
            LatencyHistogram::Traced(HistogramWithExemplars::new(buckets))
        } else {
            LatencyHistogram::Plain(Histogram::new(buckets))
        }
    }
}

type LatencyFamily<L> = Family<L, LatencyHistogram, Latency>;

/// `gen_ai.server.request.duration`'s buckets, seconds.
fn genai_duration_buckets() -> Vec<f64> {
    vec![0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
}

/// `gen_ai.server.time_to_first_token`'s buckets, seconds.
fn genai_ttft_buckets() -> Vec<f64> {
    vec![0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
}

/// `sluice_request_duration_seconds`' and `sluice_time_to_first_token_seconds`' buckets.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.005, 2.0, 16).collect()
}

/// The GenAI conventions' histograms, in a registry of their own (no `sluice` prefix).
struct GenAi {
    registry: Registry,
    request_duration: LatencyFamily<GenAiLabels>,
    ttft: LatencyFamily<GenAiLabels>,
    tpot: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    token_usage: Family<GenAiTokenLabels, Histogram, fn() -> Histogram>,
}

/// `gen_ai.server.time_per_output_token`'s buckets, seconds.
fn genai_tpot_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5])
}

/// `gen_ai.client.token.usage`'s buckets, tokens.
fn genai_token_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 14))
}

impl GenAi {
    fn new(exemplars: bool) -> Self {
        let mut registry = Registry::default();
        let request_duration = Family::new_with_constructor(Latency { buckets: genai_duration_buckets, exemplars });
        registry.register(
            "gen_ai_server_request_duration_seconds",
            "GenAI server request duration (gen_ai.server.request.duration)",
            request_duration.clone(),
        );
        let ttft = Family::new_with_constructor(Latency { buckets: genai_ttft_buckets, exemplars });
        registry.register(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first token of a stream (gen_ai.server.time_to_first_token)",
            ttft.clone(),
        );
        let tpot = Family::new_with_constructor(genai_tpot_histogram as fn() -> Histogram);
        registry.register(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token of a stream after the first (gen_ai.server.time_per_output_token)",
            tpot.clone(),
        );
        let token_usage = Family::new_with_constructor(genai_token_histogram as fn() -> Histogram);
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per request by type, as the upstream reported them (gen_ai.client.token.usage)",
            token_usage.clone(),
        );
        Self { registry, request_duration, ttft, tpot, token_usage }
    }
}

/// The GenAI histograms of one backend for one (operation, stream) pair.
#[derive(Clone, Debug)]
pub struct GenAiSeries {
    /// `gen_ai_server_request_duration_seconds`.
    pub request_duration: LatencyHistogram,
    /// `gen_ai_server_time_to_first_token_seconds` (streams only: no series otherwise).
    pub ttft: Option<LatencyHistogram>,
    /// `gen_ai_server_time_per_output_token_seconds` (streams only).
    pub tpot: Option<Histogram>,
    /// `gen_ai_client_token_usage{gen_ai_token_type="input"}`.
    pub input_tokens: Histogram,
    /// `gen_ai_client_token_usage{gen_ai_token_type="output"}`.
    pub output_tokens: Histogram,
}

/// The outcomes of an upstream attempt (`sluice_upstream_attempts_total{outcome}`): success,
/// then the kinds of [`upstream_error`].
pub const ATTEMPT_OUTCOMES: [&str; 8] = [
    "success",
    upstream_error::CONNECT,
    upstream_error::TLS,
    upstream_error::TIMEOUT,
    upstream_error::STATUS_5XX,
    upstream_error::STATUS_429,
    upstream_error::REQUEST,
    "untranslatable",
];

/// Handles for one backend of one model: its attempts, and its GenAI histograms, made on first
/// use for each (operation, stream) pair.
#[derive(Debug)]
pub struct BackendSeries {
    labels: GenAiLabels,
    attempts: [Counter; ATTEMPT_OUTCOMES.len()],
    /// Attempt duration (to the answer's head, or first event of a stream, or the failure),
    /// succeeded and failed.
    attempt_duration: [Histogram; 2],
    genai: [[std::sync::OnceLock<GenAiSeries>; 2]; 5],
}

impl BackendSeries {
    /// Counts an attempt that ended with `outcome` (one of [`ATTEMPT_OUTCOMES`]) after `took`.
    pub fn attempt(&self, outcome: &str, took: std::time::Duration) {
        let index = ATTEMPT_OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(ATTEMPT_OUTCOMES.len() - 1);
        self.attempts[index].inc();
        self.attempt_duration[usize::from(index != 0)].observe(took.as_secs_f64());
    }

    /// The GenAI histograms for calls of `api`, streamed or not.
    pub fn genai(&self, metrics: &Metrics, api: crate::route::Api, stream: bool) -> &GenAiSeries {
        let operation = crate::route::Api::ALL.iter().position(|a| *a == api).unwrap_or_default();
        self.genai[operation.min(4)][usize::from(stream)].get_or_init(|| {
            let labels = GenAiLabels {
                gen_ai_operation_name: crate::genai::operation(api),
                stream: if stream { "true" } else { "false" },
                ..self.labels.clone()
            };
            let tokens = |gen_ai_token_type| {
                metrics
                    .genai
                    .token_usage
                    .get_or_create_owned(&GenAiTokenLabels { call: labels.clone(), gen_ai_token_type })
            };
            GenAiSeries {
                request_duration: metrics.genai.request_duration.get_or_create_owned(&labels),
                ttft: stream.then(|| metrics.genai.ttft.get_or_create_owned(&labels)),
                tpot: stream.then(|| metrics.genai.tpot.get_or_create_owned(&labels)),
                input_tokens: tokens("input"),
                output_tokens: tokens("output"),
            }
        })
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    genai: GenAi,
    rejections: Family<RejectionLabels, Counter>,
    redactions: Family<RedactionLabels, Counter>,
    content_rule_matches: Family<ContentRuleLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: Family<AttemptLabels, Histogram, fn() -> Histogram>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    cached_tokens: Family<ModelLabels, Counter>,
    key_requests: Family<KeyLabels, Counter>,
    key_tokens: Family<KeyTokenLabels, Counter>,
    key_cost: Family<KeyLabels, Counter<f64, AtomicU64>>,
    requests: Family<RequestLabels, Counter>,
    duration: LatencyFamily<ModelLabels>,
    ttft: LatencyFamily<ModelLabels>,
    tpot: Family<ModelLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    in_flight: Family<EndpointLabels, Gauge>,
    failovers: Family<ModelLabels, Counter>,
    ejections: Family<EjectionLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    ejected: Family<BackendLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    prediction_error: Family<BackendLabels, Histogram, fn() -> Histogram>,
    slo: Family<SloLabels, Counter>,
    sheds: Family<ModelLabels, Counter>,
    pod_ejected: Family<PodLabels, Gauge>,
    pod_scrapes: Family<PodScrapeLabels, Counter>,
    /// Generation of the live configuration.
    pub config_generation: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    /// 1 while the last attempt to load the configuration succeeded, 0 after a refusal.
    config_last_reload_successful: Gauge,
    /// Unix time of the last successful load.
    pub config_last_success: Gauge,
    /// API keys loaded.
    pub keys_loaded: Gauge,
    /// Client connections open on the API listener.
    pub connections_open: Gauge,
    /// The shared limiter's health.
    pub limits: LimiterMetrics,
    /// The audit log's writer.
    pub audit: AuditMetrics,
}

/// Handles for one (project, endpoint, model), resolved at load time.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    requests: [Counter; 5],
    /// Request duration, seconds.
    pub duration: LatencyHistogram,
    /// Time to first token, seconds.
    pub ttft: LatencyHistogram,
    /// Time per output token after the first, seconds.
    pub tpot: Histogram,
    /// Prompt tokens.
    pub tokens_in: Counter,
    /// Completion tokens.
    pub tokens_out: Counter,
    /// Requests served by a backend other than the first choice.
    pub failovers: Counter,
    /// Requests in flight on the endpoint.
    pub in_flight: Gauge,
    /// Requests of a sheddable tier refused because no backend could meet their hints.
    pub sheds: Counter,
    /// Cost in US dollars.
    pub cost_usd: Counter<f64, AtomicU64>,
    /// Prompt tokens the upstream served from its cache.
    pub tokens_cached: Counter,
    /// Each backend's series, in the model's backend order.
    pub backends: std::sync::Arc<[BackendSeries]>,
}

impl ModelMetrics {
    /// Counts a finished request by its status.
    pub fn count(&self, status: u16) {
        self.requests[status_index(status)].inc();
    }
}

/// Why the router chose a backend first (`sluice_routing_decisions_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionReason {
    /// Predicted to meet the request's hints (or it had none).
    SloMet,
    /// Predicted to meet them and holds the prompt's prefix.
    Affinity,
    /// Not measured yet: tried optimistically.
    Cold,
    /// No backend was predicted to meet the hints: the smallest predicted miss.
    SmallestMiss,
    /// The exploration share.
    Explore,
    /// Its half-open probe.
    Probe,
    /// A strategy without prediction chose it.
    Policy,
}

impl DecisionReason {
    const ALL: [Self; 7] =
        [Self::SloMet, Self::Affinity, Self::Cold, Self::SmallestMiss, Self::Explore, Self::Probe, Self::Policy];

    /// As metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SloMet => "slo_met",
            Self::Affinity => "affinity",
            Self::Cold => "cold",
            Self::SmallestMiss => "smallest_miss",
            Self::Explore => "explore",
            Self::Probe => "probe",
            Self::Policy => "policy",
        }
    }
}

/// Every routing strategy, in label order.
const STRATEGIES: [RoutingPolicy; 6] = [
    RoutingPolicy::SloAware,
    RoutingPolicy::LeastRequest,
    RoutingPolicy::Weighted,
    RoutingPolicy::RoundRobin,
    RoutingPolicy::PriorityFailover,
    RoutingPolicy::QueueScore,
];

/// A strategy's metric label (its configuration spelling).
pub fn strategy_label(policy: RoutingPolicy) -> &'static str {
    match policy {
        RoutingPolicy::SloAware => "sloAware",
        RoutingPolicy::LeastRequest => "leastRequest",
        RoutingPolicy::Weighted => "weighted",
        RoutingPolicy::RoundRobin => "roundRobin",
        RoutingPolicy::PriorityFailover => "priorityFailover",
        RoutingPolicy::QueueScore => "queueScore",
    }
}

/// Whether `strategy` can give `reason` (only those series are exported).
fn gives(strategy: RoutingPolicy, reason: DecisionReason) -> bool {
    match strategy {
        RoutingPolicy::SloAware => reason != DecisionReason::Policy,
        RoutingPolicy::QueueScore => {
            matches!(reason, DecisionReason::Policy | DecisionReason::Probe | DecisionReason::Affinity)
        }
        _ => matches!(reason, DecisionReason::Policy | DecisionReason::Probe),
    }
}

/// Which SLO hint a result is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SloKind {
    /// Time to first token.
    Ttft,
    /// Time per output token.
    Tpot,
}

/// Handles for one backend (provider and upstream model), resolved when its state is made.
#[derive(Clone, Debug)]
pub struct BackendMetrics {
    /// By strategy and reason.
    decisions: [[Counter; DecisionReason::ALL.len()]; STRATEGIES.len()],
    /// |observed - predicted| time to first token, seconds.
    pub ttft_prediction_error: Histogram,
    /// TTFT met, TTFT missed, TPOT met, TPOT missed.
    slo: [Counter; 4],
    ejections: [Counter; 4],
    /// Half-open probes begun.
    pub probes_started: Counter,
    /// Probes that let the backend back in.
    pub probes_succeeded: Counter,
    /// Probes that ejected it again.
    pub probes_failed: Counter,
    /// 1 while ejected.
    pub ejected: Gauge,
}

const EJECT_REASONS: [EjectReason; 4] =
    [EjectReason::ConsecutiveFailures, EjectReason::Timeout, EjectReason::ErrorRate, EjectReason::ProbeFailed];

impl Default for BackendMetrics {
    /// Unregistered handles (a state outside any registry, in tests).
    fn default() -> Self {
        Self {
            decisions: Default::default(),
            ttft_prediction_error: latency_histogram(),
            slo: Default::default(),
            ejections: Default::default(),
            probes_started: Counter::default(),
            probes_succeeded: Counter::default(),
            probes_failed: Counter::default(),
            ejected: Gauge::default(),
        }
    }
}

impl BackendMetrics {
    /// The decision counter of `strategy` for `reason`.
    pub fn decision(&self, strategy: RoutingPolicy, reason: DecisionReason) -> &Counter {
        let s = STRATEGIES.iter().position(|p| *p == strategy).unwrap_or_default();
        let r = DecisionReason::ALL.iter().position(|x| *x == reason).unwrap_or_default();
        &self.decisions[s][r]
    }

    /// The counter of `kind` hints met (or missed).
    pub fn slo(&self, kind: SloKind, met: bool) -> &Counter {
        &self.slo[usize::from(kind == SloKind::Tpot) * 2 + usize::from(!met)]
    }

    /// The ejection counter for `reason`.
    pub fn ejections(&self, reason: EjectReason) -> &Counter {
        let index = EJECT_REASONS.iter().position(|r| *r == reason).unwrap_or_default();
        &self.ejections[index]
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

fn tpot_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The kinds of upstream failure counted in `sluice_upstream_errors_total`.
pub mod upstream_error {
    /// Connection refused, DNS failure, connect timeout.
    pub const CONNECT: &str = "connect";
    /// A failed TLS handshake (an untrusted certificate, a refused client certificate).
    pub const TLS: &str = "tls";
    /// No first byte in time.
    pub const TIMEOUT: &str = "timeout";
    /// A 5xx answer.
    pub const STATUS_5XX: &str = "status_5xx";
    /// A 429 answer.
    pub const STATUS_429: &str = "status_429";
    /// Reset or protocol error.
    pub const REQUEST: &str = "request";
    /// The stream broke after it started.
    pub const STREAM: &str = "stream";
}

impl Metrics {
    /// Registers every metric under the `sluice` prefix, without exemplars.
    pub fn new() -> Self {
        Self::with_exemplars(false)
    }

    /// Registers every metric under the `sluice` prefix; with `exemplars` (tracing on), the
    /// latency histograms keep the trace id of a sampled request per bucket.
    pub fn with_exemplars(exemplars: bool) -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::default();
        registry.register("requests", "Requests answered, by status class", requests.clone());
        let duration = Family::new_with_constructor(Latency { buckets: latency_buckets, exemplars });
        registry.register("request_duration_seconds", "Time from request to the end of the response", duration.clone());
        let ttft = Family::new_with_constructor(Latency { buckets: latency_buckets, exemplars });
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to the first event of a successful stream",
            ttft.clone(),
        );
        let tpot = Family::new_with_constructor(tpot_histogram as fn() -> Histogram);
        registry.register(
            "time_per_output_token_seconds",
            "Streaming time per output token after the first",
            tpot.clone(),
        );
        let tokens = Family::default();
        registry.register("tokens", "Tokens by direction (input = prompt, output = completion)", tokens.clone());
        let upstream_errors = Family::default();
        registry.register("upstream_errors", "Failed upstream attempts by kind", upstream_errors.clone());
        let in_flight = Family::default();
        registry.register("requests_in_flight", "Requests being served", in_flight.clone());
        let failovers = Family::default();
        registry.register("failovers", "Requests answered by a backend other than the first choice", failovers.clone());
        let ejections = Family::default();
        registry.register(
            "backend_ejections",
            "Backends ejected by passive health checks, by reason",
            ejections.clone(),
        );
        let probes = Family::default();
        registry.register("backend_probes", "Half-open probes of ejected backends, by result", probes.clone());
        let ejected = Family::default();
        registry.register("backend_ejected", "1 while a backend is ejected", ejected.clone());
        let decisions = Family::default();
        registry.register(
            "routing_decisions",
            "Backends chosen first by the router, by strategy and reason",
            decisions.clone(),
        );
        let prediction_error = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "backend_ttft_prediction_error_seconds",
            "Absolute difference between a stream's predicted and observed time to first token",
            prediction_error.clone(),
        );
        let slo = Family::default();
        registry.register("backend_slo", "Streams whose SLO hint was met or missed, by kind", slo.clone());
        let sheds = Family::default();
        registry.register(
            "routing_sheds",
            "Requests of sheddable tiers refused because no backend could meet their SLO hints",
            sheds.clone(),
        );
        let pod_ejected = Family::default();
        registry.register("pod_ejected", "1 while a pool's pod is ejected (per pod)", pod_ejected.clone());
        let pod_scrapes = Family::default();
        registry.register("pod_scrapes", "Scrapes of pool pods' metrics, by result", pod_scrapes.clone());
        let config_generation = Gauge::default();
        registry.register("config_generation", "Generation of the live configuration", config_generation.clone());
        let reloads = Family::default();
        registry.register("config_reloads", "Configuration loads by result", reloads.clone());
        let config_last_reload_successful = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 while the last configuration load succeeded, 0 while a refused one has the last good configuration serving",
            config_last_reload_successful.clone(),
        );
        let config_last_success = Gauge::default();
        registry.register(
            "config_last_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            config_last_success.clone(),
        );
        let keys_loaded = Gauge::default();
        registry.register("api_keys", "API keys loaded", keys_loaded.clone());
        let connections_open = Gauge::default();
        registry.register("connections_open", "Client connections open on the API listener", connections_open.clone());
        let key_requests = Family::default();
        registry.register(
            "key_requests",
            "Requests admitted per API key id (answered or failed after admission)",
            key_requests.clone(),
        );
        let key_tokens = Family::default();
        registry.register("key_tokens", "Tokens billed per API key id, by direction", key_tokens.clone());
        let key_cost = Family::default();
        registry.register("key_cost_usd", "Cost in US dollars per API key id", key_cost.clone());
        let rejections = Family::default();
        registry.register(
            "rejections",
            "Requests refused before reaching a backend, by reason (the OpenAI error code)",
            rejections.clone(),
        );
        let redactions = Family::default();
        registry.register(
            "redactions",
            "Values in prompts replaced by placeholders before leaving the gateway, by kind",
            redactions.clone(),
        );
        let content_rule_matches = Family::default();
        registry.register(
            "content_rule_matches",
            "Requests whose prompt matched an endpoint's content rule, by rule kind and mode",
            content_rule_matches.clone(),
        );
        let attempts = Family::default();
        registry.register("upstream_attempts", "Upstream attempts by outcome", attempts.clone());
        let attempt_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_attempt_duration_seconds",
            "Upstream attempt duration (to the answer's head or a stream's first event), by outcome",
            attempt_duration.clone(),
        );
        let cost = Family::default();
        registry.register("cost_usd", "Cost in US dollars", cost.clone());
        let cached_tokens = Family::default();
        registry.register("cached_tokens", "Prompt tokens served from the upstream's cache", cached_tokens.clone());
        let limits = LimiterMetrics::default();
        registry.register("limits_redis_up", "1 while Redis answers for shared limits", limits.redis_up.clone());
        registry.register(
            "limits_fallback_admissions",
            "Admissions decided by per-replica fallback limits because Redis was unavailable",
            limits.fallback_admissions.clone(),
        );
        registry.register(
            "limits_unwritten_spend",
            "Key-periods whose spend Redis has not confirmed yet",
            limits.unwritten_spend.clone(),
        );
        registry.register("limits_redis_errors", "Failed Redis calls by kind", limits.redis_errors.clone());
        let audit = AuditMetrics::default();
        registry.register("audit_records", "Request records written to the audit log", audit.records.clone());
        registry.register("audit_checkpoints", "Checkpoints written to the audit log", audit.checkpoints.clone());
        registry.register(
            "audit_records_dropped",
            "Audit records dropped because the writer's queue was full (declared in the log's gap lines)",
            audit.dropped.clone(),
        );
        Self {
            registry,
            genai: GenAi::new(exemplars),
            rejections,
            redactions,
            content_rule_matches,
            attempts,
            attempt_duration,
            cost,
            cached_tokens,
            key_requests,
            key_tokens,
            key_cost,
            requests,
            duration,
            ttft,
            tpot,
            tokens,
            upstream_errors,
            in_flight,
            failovers,
            ejections,
            probes,
            ejected,
            decisions,
            prediction_error,
            slo,
            sheds,
            pod_ejected,
            pod_scrapes,
            config_generation,
            reloads,
            config_last_reload_successful,
            config_last_success,
            keys_loaded,
            connections_open,
            limits,
            audit,
        }
    }

    /// Resolves the handles of one model.
    pub fn model(&self, project: &str, endpoint: &str, model: &str) -> ModelMetrics {
        let labels = ModelLabels { project: project.into(), endpoint: endpoint.into(), model: model.into() };
        let requests = STATUS_CLASSES.map(|class| {
            self.requests.get_or_create_owned(&RequestLabels {
                project: project.into(),
                endpoint: endpoint.into(),
                model: model.into(),
                status_class: class,
            })
        });
        let tokens = |direction| {
            self.tokens.get_or_create_owned(&TokenLabels {
                project: project.into(),
                endpoint: endpoint.into(),
                model: model.into(),
                direction,
            })
        };
        ModelMetrics {
            requests,
            duration: self.duration.get_or_create_owned(&labels),
            ttft: self.ttft.get_or_create_owned(&labels),
            tpot: self.tpot.get_or_create_owned(&labels),
            tokens_in: tokens("input"),
            tokens_out: tokens("output"),
            failovers: self.failovers.get_or_create_owned(&labels),
            sheds: self.sheds.get_or_create_owned(&labels),
            cost_usd: self.cost.get_or_create_owned(&labels),
            tokens_cached: self.cached_tokens.get_or_create_owned(&labels),
            backends: std::sync::Arc::new([]),
            in_flight: self
                .in_flight
                .get_or_create_owned(&EndpointLabels { project: project.into(), endpoint: endpoint.into() }),
        }
    }

    /// Resolves the series of `model`'s backends, each `(provider id, provider type, upstream
    /// model)`, for its handles.
    pub fn model_backends<'b>(
        &self,
        model: &mut ModelMetrics,
        project: &str,
        endpoint: &str,
        name: &str,
        backends: impl IntoIterator<Item = (&'b str, sluice_crds::api::ProviderType, &'b str)>,
    ) {
        model.backends = backends
            .into_iter()
            .map(|(provider, kind, upstream_model)| {
                let attempt =
                    |outcome| AttemptLabels { provider: provider.into(), model: upstream_model.into(), outcome };
                BackendSeries {
                    labels: GenAiLabels {
                        project: project.into(),
                        endpoint: endpoint.into(),
                        gen_ai_operation_name: "",
                        gen_ai_provider_name: crate::genai::provider(kind),
                        gen_ai_request_model: name.into(),
                        gen_ai_response_model: upstream_model.into(),
                        stream: "",
                    },
                    attempts: ATTEMPT_OUTCOMES.map(|outcome| self.attempts.get_or_create_owned(&attempt(outcome))),
                    attempt_duration: ["success", "failure"]
                        .map(|outcome| self.attempt_duration.get_or_create_owned(&attempt(outcome))),
                    genai: Default::default(),
                }
            })
            .collect();
    }

    /// Counts a request refused before it reached a backend, by its error code. `project` and
    /// `endpoint` must be configured slugs or empty.
    pub fn rejection(&self, project: &str, endpoint: &str, reason: &'static str) {
        self.rejections
            .get_or_create(&RejectionLabels { project: project.into(), endpoint: endpoint.into(), reason })
            .inc();
    }

    /// The counter of values of `kind` (a [`sluice_crds::api::RedactionKind`] name) redacted in
    /// prompts to an endpoint, resolved when its configuration is loaded.
    pub fn redactions(&self, project: &str, endpoint: &str, kind: &'static str) -> Counter {
        self.redactions.get_or_create_owned(&RedactionLabels {
            project: project.into(),
            endpoint: endpoint.into(),
            kind,
        })
    }

    /// The counter of requests to an endpoint that matched a content rule of `rule_kind` in
    /// `mode` (`enforce` or `dryRun`), resolved when its configuration is loaded.
    pub fn content_rule_matches(
        &self,
        project: &str,
        endpoint: &str,
        rule_kind: &'static str,
        mode: &'static str,
    ) -> Counter {
        self.content_rule_matches.get_or_create_owned(&ContentRuleLabels {
            project: project.into(),
            endpoint: endpoint.into(),
            rule_kind,
            mode,
        })
    }

    /// Resolves the handles of one API key (by its id, never its material).
    pub fn key(&self, project: &str, key_id: &str) -> KeyMetrics {
        let labels = KeyLabels { project: project.into(), key_id: key_id.into() };
        let tokens = |direction| {
            self.key_tokens.get_or_create_owned(&KeyTokenLabels {
                project: project.into(),
                key_id: key_id.into(),
                direction,
            })
        };
        KeyMetrics {
            requests: self.key_requests.get_or_create_owned(&labels),
            tokens_in: tokens("input"),
            tokens_out: tokens("output"),
            cost_usd: self.key_cost.get_or_create_owned(&labels),
        }
    }

    /// Resolves the handles of one backend. A pool's pods share their Provider's counters (its
    /// decisions, hints and ejections add up over the pods); whether each pod is ejected shows
    /// in `sluice_pod_ejected`, labelled with the pod.
    pub fn backend(&self, provider: &str, model: &str, pod: Option<&str>) -> BackendMetrics {
        let probe = |result| {
            self.probes.get_or_create_owned(&ProbeLabels { provider: provider.into(), model: model.into(), result })
        };
        let backend = BackendLabels { provider: provider.into(), model: model.into() };
        let decisions = STRATEGIES.map(|strategy| {
            DecisionReason::ALL.map(|reason| {
                if !gives(strategy, reason) {
                    return Counter::default();
                }
                self.decisions.get_or_create_owned(&DecisionLabels {
                    provider: provider.into(),
                    model: model.into(),
                    strategy: strategy_label(strategy),
                    reason: reason.as_str(),
                })
            })
        });
        let slo = [("ttft", "met"), ("ttft", "missed"), ("tpot", "met"), ("tpot", "missed")].map(|(kind, result)| {
            self.slo.get_or_create_owned(&SloLabels { provider: provider.into(), model: model.into(), kind, result })
        });
        BackendMetrics {
            decisions,
            ttft_prediction_error: self.prediction_error.get_or_create_owned(&backend),
            slo,
            ejections: EJECT_REASONS.map(|reason| {
                self.ejections.get_or_create_owned(&EjectionLabels {
                    provider: provider.into(),
                    model: model.into(),
                    reason: reason.as_str(),
                })
            }),
            probes_started: probe("started"),
            probes_succeeded: probe("succeeded"),
            probes_failed: probe("failed"),
            ejected: match pod {
                None => {
                    self.ejected.get_or_create_owned(&BackendLabels { provider: provider.into(), model: model.into() })
                }
                Some(pod) => self.pod_ejected.get_or_create_owned(&PodLabels {
                    provider: provider.into(),
                    model: model.into(),
                    pod: pod.into(),
                }),
            },
        }
    }

    /// The scrape counters of a pool's pod: succeeded, failed.
    pub fn pod_scrapes(&self, provider: &str, pod: &str) -> [Counter; 2] {
        ["success", "failure"].map(|result| {
            self.pod_scrapes.get_or_create_owned(&PodScrapeLabels {
                provider: provider.into(),
                pod: pod.into(),
                result,
            })
        })
    }

    /// Counts a request that failed before a model was known. `project` and `endpoint` must be
    /// configured slugs or empty.
    pub fn count_unrouted(&self, project: &str, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                project: project.into(),
                endpoint: endpoint.into(),
                model: String::new(),
                status_class: STATUS_CLASSES[status_index(status)],
            })
            .inc();
    }

    /// Counts a failed upstream attempt.
    pub fn upstream_error(&self, project: &str, endpoint: &str, provider: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                project: project.into(),
                endpoint: endpoint.into(),
                provider: provider.into(),
                kind,
            })
            .inc();
    }

    /// Counts a configuration load.
    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ReloadLabels { result: if ok { "success" } else { "failure" } }).inc();
        self.config_last_reload_successful.set(i64::from(ok));
    }

    /// Notes a load that found the live configuration unchanged (not counted as a reload): the
    /// source is good again, as after a bad edit was reverted.
    pub fn reload_unchanged(&self) {
        self.config_last_reload_successful.set(1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.genai.registry);
        let _ = encode_eof(&mut out);
        out
    }

    /// Every metric in the Prometheus text format (0.0.4), for scrapers that do not ask for
    /// OpenMetrics: the same samples, without exemplars (which that format cannot carry) and
    /// without the `# EOF` line.
    pub fn render_text(&self) -> String {
        prometheus_text(&self.render())
    }
}

/// OpenMetrics text as Prometheus text: exemplars (` # {...} value` after a sample) and the
/// `# EOF` line dropped; the rest is read the same by both formats' parsers.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        out.push_str(if line.starts_with('#') { line } else { &line[..exemplar_start(line)] });
        out.push('\n');
    }
    out
}

/// Where a sample line's exemplar starts (the line's length when it has none): the first
/// ` # ` outside the quoted label values.
fn exemplar_start(line: &str) -> usize {
    let bytes = line.as_bytes();
    let (mut quoted, mut escaped) = (false, false);
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b' ' if !quoted && bytes[i..].starts_with(b" # ") => return i,
            _ => {}
        }
    }
    line.len()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemplars_are_kept_from_the_prometheus_text_format() {
        let metrics = Metrics::with_exemplars(true);
        let model = metrics.model("p", "e", "m # {");
        let trace = opentelemetry::trace::TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128);
        model.duration.observe(0.2, Some(trace));
        model.duration.observe(3.0, None);
        let openmetrics = metrics.render();
        assert!(openmetrics.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.2"), "{openmetrics}");
        let text = metrics.render_text();
        assert!(!text.contains("trace_id") && !text.contains("# EOF"), "{text}");
        assert!(text.contains("sluice_request_duration_seconds_count{project=\"p\",endpoint=\"e\",model=\"m # {\"} 2"));
        assert!(!Metrics::new().render().contains("trace_id"));
    }

    #[test]
    fn the_last_reload_gauge_follows_refusals_and_recoveries() {
        let metrics = Metrics::new();
        let gauge = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("sluice_config_last_reload_successful "))
                .map(str::to_owned)
                .expect("the gauge is exported")
        };
        metrics.reload(true);
        assert_eq!(gauge(&metrics.render()), "1");
        metrics.reload(false);
        let text = metrics.render();
        assert_eq!(gauge(&text), "0", "a refused configuration");
        assert!(text.contains("sluice_config_reloads_total{result=\"failure\"} 1"), "{text}");
        metrics.reload_unchanged();
        let text = metrics.render();
        assert_eq!(gauge(&text), "1", "the source was put back as it was");
        assert!(
            text.contains("sluice_config_reloads_total{result=\"success\"} 1"),
            "an unchanged load is not a reload"
        );
    }
}
