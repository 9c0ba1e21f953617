//! vLLM-style Prometheus metrics, so a gateway's router and dashboards can scrape the simulator
//! exactly as they would scrape vLLM (names as in vLLM v1's `vllm/v1/metrics/loggers.py`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// vLLM's buckets for `time_to_first_token_seconds`.
const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
/// vLLM's buckets for `time_per_output_token_seconds` and `inter_token_latency_seconds`.
const ITL_BUCKETS: [f64; 19] =
    [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
/// vLLM's buckets for `e2e_request_latency_seconds`.
const E2E_BUCKETS: [f64; 22] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0, 15360.0,
];

type Labels = [(&'static str, String); 1];

/// The metrics of one simulated backend.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub running: Gauge,
    pub waiting: Gauge,
    pub kv_cache_usage: Gauge<f64, AtomicU64>,
    pub gpu_cache_usage: Gauge<f64, AtomicU64>,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub prefix_cache_queries: Counter,
    pub prefix_cache_hits: Counter,
    pub ttft: Histogram,
    pub time_per_output_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_latency: Histogram,
    pub success: Family<Labels, Counter>,
    pub faults: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers every metric, labelled with `model_name` as vLLM does.
    pub fn new(model_name: &str) -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_label(("model_name".into(), model_name.to_owned().into()));
        let metrics = Self {
            registry: Registry::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_cache_usage: Gauge::default(),
            gpu_cache_usage: Gauge::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            prefix_cache_queries: Counter::default(),
            prefix_cache_hits: Counter::default(),
            ttft: Histogram::new(TTFT_BUCKETS),
            time_per_output_token: Histogram::new(ITL_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            e2e_latency: Histogram::new(E2E_BUCKETS),
            success: Family::default(),
            faults: Family::default(),
        };
        let m = &metrics;
        registry.register(
            "vllm:num_requests_running",
            "Number of requests in model execution batches",
            m.running.clone(),
        );
        registry.register("vllm:num_requests_waiting", "Number of requests waiting to be processed", m.waiting.clone());
        registry.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage",
            m.kv_cache_usage.clone(),
        );
        registry.register(
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage (deprecated vLLM name of kv_cache_usage_perc)",
            m.gpu_cache_usage.clone(),
        );
        registry.register("vllm:prompt_tokens", "Number of prefill tokens processed", m.prompt_tokens.clone());
        registry.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            m.generation_tokens.clone(),
        );
        registry.register(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens",
            m.prefix_cache_queries.clone(),
        );
        registry.register(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens",
            m.prefix_cache_hits.clone(),
        );
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            m.ttft.clone(),
        );
        registry.register(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds",
            m.time_per_output_token.clone(),
        );
        registry.register(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds",
            m.inter_token_latency.clone(),
        );
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds",
            m.e2e_latency.clone(),
        );
        registry.register(
            "vllm:request_success",
            "Count of successfully processed requests, by finished_reason",
            m.success.clone(),
        );
        registry.register("sluice_sim:faults_injected", "Faults injected by the simulator, by kind", m.faults.clone());
        Self { registry: root, ..metrics }
    }

    /// Counts a finished request.
    pub fn finished(&self, reason: &str) {
        self.success.get_or_create(&[("finished_reason", reason.to_owned())]).inc();
    }

    /// Counts an injected fault.
    pub fn fault(&self, kind: String) {
        self.faults.get_or_create(&[("kind", kind)]).inc();
    }

    /// The Prometheus text exposition of every metric, `kv_usage` (0-1) set first.
    pub fn render(&self, kv_usage: f64) -> String {
        self.kv_cache_usage.set(kv_usage);
        self.gpu_cache_usage.set(kv_usage);
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_vllm_names_with_model_label() {
        let m = Metrics::new("llama");
        m.running.inc();
        m.prompt_tokens.inc_by(7);
        m.ttft.observe(0.05);
        m.finished("stop");
        let text = m.render(0.25);
        for line in [
            "vllm:num_requests_running{model_name=\"llama\"} 1",
            "vllm:prompt_tokens_total{model_name=\"llama\"} 7",
            "vllm:kv_cache_usage_perc{model_name=\"llama\"} 0.25",
            "vllm:time_to_first_token_seconds_count{model_name=\"llama\"} 1",
            "vllm:request_success_total{model_name=\"llama\",finished_reason=\"stop\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
