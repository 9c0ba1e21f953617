//! Prometheus metrics. Label values come only from the configuration (project, endpoint, model,
//! provider slugs) or fixed sets (status class, error kind), never from client input or keys, so
//! cardinality is bounded by what the operator declared. Per-model handles are resolved when a
//! snapshot is built, so the request path increments atomics without hashing labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
struct ReloadLabels {
    result: &'static str,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    ttft: Family<ModelLabels, Histogram, fn() -> Histogram>,
    tpot: Family<ModelLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    in_flight: Family<EndpointLabels, Gauge>,
    failovers: Family<ModelLabels, Counter>,
    ejections: Family<EjectionLabels, Counter>,
    probes: Family<ProbeLabels, Counter>,
    ejected: Family<BackendLabels, Gauge>,
    /// Generation of the live configuration.
    pub config_generation: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    /// Unix time of the last successful load.
    pub config_last_success: Gauge,
    /// API keys loaded.
    pub keys_loaded: Gauge,
}

/// Handles for one (project, endpoint, model), resolved at load time.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    requests: [Counter; 5],
    /// Request duration, seconds.
    pub duration: Histogram,
    /// Time to first token, seconds.
    pub ttft: Histogram,
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
}

impl ModelMetrics {
    /// Counts a finished request by its status.
    pub fn count(&self, status: u16) {
        self.requests[status_index(status)].inc();
    }
}

/// Handles for one backend (provider and upstream model), resolved when its state is made.
#[derive(Clone, Debug, Default)]
pub struct BackendMetrics {
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

impl BackendMetrics {
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
    /// Connection refused, DNS or TLS failure, connect timeout.
    pub const CONNECT: &str = "connect";
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
    /// Registers every metric under the `sluice` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::default();
        registry.register("requests", "Requests answered, by status class", requests.clone());
        let duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("request_duration_seconds", "Time from request to the end of the response", duration.clone());
        let ttft = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to the first byte of the answer",
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
        let config_generation = Gauge::default();
        registry.register("config_generation", "Generation of the live configuration", config_generation.clone());
        let reloads = Family::default();
        registry.register("config_reloads", "Configuration loads by result", reloads.clone());
        let config_last_success = Gauge::default();
        registry.register(
            "config_last_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            config_last_success.clone(),
        );
        let keys_loaded = Gauge::default();
        registry.register("api_keys", "API keys loaded", keys_loaded.clone());
        Self {
            registry,
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
            config_generation,
            reloads,
            config_last_success,
            keys_loaded,
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
            in_flight: self
                .in_flight
                .get_or_create_owned(&EndpointLabels { project: project.into(), endpoint: endpoint.into() }),
        }
    }

    /// Resolves the handles of one backend.
    pub fn backend(&self, provider: &str, model: &str) -> BackendMetrics {
        let probe = |result| {
            self.probes.get_or_create_owned(&ProbeLabels { provider: provider.into(), model: model.into(), result })
        };
        BackendMetrics {
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
            ejected: self
                .ejected
                .get_or_create_owned(&BackendLabels { provider: provider.into(), model: model.into() }),
        }
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
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
