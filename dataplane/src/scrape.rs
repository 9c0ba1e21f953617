//! Scraping a self-hosted pool's pods: each pod's vLLM metrics (requests waiting and running,
//! KV-cache use) read from its Prometheus text every `intervalMs`, kept in the pod's
//! [`PodSignals`] for the predictor ([`crate::routing::predict`]) and shown at `/config`.
//!
//! Why scrape at all, when the gateway counts its own requests in flight: the pod also serves
//! other gateway replicas and other clients, and its queue is what a new request waits behind.
//! One task per pod runs only while the configuration has that pod with `metrics` set; a reload
//! that drops the pod (or its `metrics`) aborts the task, so a gateway without pools pays
//! nothing. Each scrape is bounded in time ([`SCRAPE_TIMEOUT`]) and size ([`MAX_METRICS_BYTES`]);
//! a failed scrape counts in `sluice_pod_scrapes_total{result="failure"}`, and signals older than
//! [`STALE_INTERVALS`] intervals are ignored, so a pod that stops answering its metrics is routed
//! on the gateway's own counts alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use sluice_crds::config::PodMetricsConfig;

use crate::metrics::Metrics;

/// Longest wait for one scrape (less when the interval is shorter).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest metrics text read (vLLM's, histograms included, is a few hundred KiB at most).
pub const MAX_METRICS_BYTES: usize = 4 << 20;
/// Signals older than this many intervals are ignored.
pub const STALE_INTERVALS: u64 = 3;
/// Scrapes in a row that cannot connect after which a pod is left out of routing.
pub const UNREACHABLE_SCRAPES: u32 = 2;

/// What a pod's metrics say about its load.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PodLoad {
    /// `vllm:num_requests_waiting`: requests queued for a batch slot.
    pub waiting: u32,
    /// `vllm:num_requests_running`: sequences in the running batch.
    pub running: u32,
    /// `vllm:kv_cache_usage_perc` (or the older `vllm:gpu_cache_usage_perc`), 0 to 1.
    pub kv_cache_usage: Option<f32>,
}

/// Reads a pod's load from vLLM's Prometheus text. Series of several models (one per
/// `model_name` label) add up; the KV-cache use is the highest. `None` when the text has
/// neither request count (not a vLLM server, or the wrong path).
pub fn parse_vllm_metrics(text: &str) -> Option<PodLoad> {
    let (mut waiting, mut running, mut kv, mut seen) = (0.0f64, 0.0f64, None::<f64>, false);
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
        let name = &line[..name_end];
        let rest = &line[name_end..];
        // The value follows the labels (which may hold spaces inside quotes).
        let after_labels = if rest.starts_with('{') { rest.rfind('}').map_or("", |i| &rest[i + 1..]) } else { rest };
        let Some(value) = after_labels.split_ascii_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if !value.is_finite() || value < 0.0 {
            continue;
        }
        match name {
            "vllm:num_requests_waiting" => {
                waiting += value;
                seen = true;
            }
            "vllm:num_requests_running" => {
                running += value;
                seen = true;
            }
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" => {
                kv = Some(kv.map_or(value, |k| k.max(value)));
            }
            _ => {}
        }
    }
    seen.then(|| PodLoad {
        waiting: waiting.min(f64::from(u32::MAX)) as u32,
        running: running.min(f64::from(u32::MAX)) as u32,
        kv_cache_usage: kv.map(|k| k.min(1.0) as f32),
    })
}

/// The URL of a pod's metrics: its base URL's scheme, host and port, and `path`.
pub fn metrics_uri(pod: &str, path: &str) -> Option<Uri> {
    let base: Uri = pod.parse().ok()?;
    format!("{}://{}{path}", base.scheme_str()?, base.authority()?).parse().ok()
}

const UNKNOWN_KV: u32 = u32::MAX;

/// One pod's latest scraped load, shared by its backends (one per model) and its scrape task.
#[derive(Debug)]
pub struct PodSignals {
    epoch: Instant,
    interval_ms: AtomicU64,
    waiting: AtomicU32,
    running: AtomicU32,
    kv_bits: AtomicU32,
    /// ms since `epoch` of the last good scrape; 0 before the first.
    scraped_at_ms: AtomicU64,
    failures: AtomicU32,
    /// Failed scrapes in a row that could not even connect.
    refusals: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Default for PodSignals {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: AtomicU64::new(1_000),
            waiting: AtomicU32::new(0),
            running: AtomicU32::new(0),
            kv_bits: AtomicU32::new(UNKNOWN_KV),
            scraped_at_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            refusals: AtomicU32::new(0),
            last_error: Mutex::new(None),
        }
    }
}

impl PodSignals {
    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Stores a good scrape.
    pub fn record(&self, load: PodLoad) {
        self.waiting.store(load.waiting, Ordering::Relaxed);
        self.running.store(load.running, Ordering::Relaxed);
        self.kv_bits.store(load.kv_cache_usage.map_or(UNKNOWN_KV, f32::to_bits), Ordering::Relaxed);
        self.scraped_at_ms.store(self.now_ms(), Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        self.refusals.store(0, Ordering::Relaxed);
    }

    /// Notes a failed scrape (`unreachable`: no connection could be made); returns whether it
    /// is the first since a good one.
    pub fn fail(&self, error: String, unreachable: bool) -> bool {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        if unreachable {
            self.refusals.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refusals.store(0, Ordering::Relaxed);
        }
        self.failures.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// Whether the last [`UNREACHABLE_SCRAPES`] scrapes could not connect: the pod is gone
    /// (stopped, its node lost) and is left out of routing until a scrape connects again. A
    /// slow or garbled answer is no such sign: the pod is there, maybe busy.
    pub fn unreachable(&self) -> bool {
        self.refusals.load(Ordering::Relaxed) >= UNREACHABLE_SCRAPES
    }

    /// The last good scrape, if recent enough to route on.
    pub fn fresh(&self) -> Option<PodLoad> {
        let at = self.scraped_at_ms.load(Ordering::Acquire);
        let limit = STALE_INTERVALS * self.interval_ms.load(Ordering::Relaxed);
        (at != 0 && self.now_ms().saturating_sub(at) <= limit).then(|| self.load())
    }

    fn load(&self) -> PodLoad {
        let kv = self.kv_bits.load(Ordering::Relaxed);
        PodLoad {
            waiting: self.waiting.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            kv_cache_usage: (kv != UNKNOWN_KV).then(|| f32::from_bits(kv)),
        }
    }

    /// What `/config` shows.
    pub fn view(&self) -> PodSignalsView {
        let at = self.scraped_at_ms.load(Ordering::Acquire);
        let load = self.load();
        PodSignalsView {
            requests_waiting: (at != 0).then_some(load.waiting),
            requests_running: (at != 0).then_some(load.running),
            kv_cache_usage: load.kv_cache_usage.filter(|_| at != 0),
            age_ms: (at != 0).then(|| self.now_ms().saturating_sub(at)),
            fresh: self.fresh().is_some(),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            unreachable: self.unreachable(),
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

/// A pod's scraped load as `/config` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSignalsView {
    /// Requests waiting at the last good scrape.
    pub requests_waiting: Option<u32>,
    /// Requests running at the last good scrape.
    pub requests_running: Option<u32>,
    /// KV-cache use (0 to 1) at the last good scrape.
    pub kv_cache_usage: Option<f32>,
    /// Age of the last good scrape, ms.
    pub age_ms: Option<u64>,
    /// Whether routing uses it (scraped within the last few intervals).
    pub fresh: bool,
    /// Failed scrapes since the last good one.
    pub consecutive_failures: u32,
    /// The last scrapes could not connect: the pod is left out of routing.
    pub unreachable: bool,
    /// Why the last scrape failed.
    pub last_error: Option<String>,
}

/// A pod the configuration names: its Provider, base URL and scraping, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    /// `<namespace>/<name>` of the Provider.
    pub provider: String,
    /// The pod's base URL.
    pub pod: String,
    /// Scraping, when the Provider sets `metrics`.
    pub metrics: Option<PodMetricsConfig>,
}

struct Pod {
    signals: Arc<PodSignals>,
    task: Option<(PodMetricsConfig, tokio::task::AbortHandle)>,
}

type ScrapeClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Every pool pod's signals and scrape task, kept across reloads.
#[derive(Default)]
pub struct Scrapes {
    pods: Mutex<HashMap<(String, String), Pod>>,
    client: OnceLock<Option<ScrapeClient>>,
}

impl Drop for Scrapes {
    fn drop(&mut self) {
        for pod in self.pods.get_mut().unwrap_or_else(PoisonError::into_inner).values() {
            if let Some((_, task)) = &pod.task {
                task.abort();
            }
        }
    }
}

impl Scrapes {
    /// The signals of `provider`'s `pod`, made on first use.
    pub fn signals(&self, provider: &str, pod: &str) -> Arc<PodSignals> {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        pods.entry((provider.to_owned(), pod.to_owned()))
            .or_insert_with(|| Pod { signals: Arc::default(), task: None })
            .signals
            .clone()
    }

    /// Makes the scrape tasks match `targets`: forgets pods no longer named (aborting their
    /// tasks), starts tasks for new ones and restarts those whose scraping changed. Outside a
    /// Tokio runtime (unit tests) no task starts.
    pub fn sync(&self, targets: &[PodTarget], metrics: &Metrics) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        pods.retain(|(provider, pod), state| {
            let keep = targets.iter().any(|t| t.provider == *provider && t.pod == *pod);
            if !keep && let Some((_, task)) = state.task.take() {
                task.abort();
            }
            keep
        });
        for target in targets {
            let state = pods
                .entry((target.provider.clone(), target.pod.clone()))
                .or_insert_with(|| Pod { signals: Arc::default(), task: None });
            if state.task.as_ref().map(|(config, _)| config) == target.metrics.as_ref() {
                continue;
            }
            if let Some((_, task)) = state.task.take() {
                task.abort();
            }
            let Some(config) = target.metrics.clone() else { continue };
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { continue };
            let Some(uri) = metrics_uri(&target.pod, &config.path) else {
                tracing::warn!(provider = %target.provider, pod = %target.pod, "no metrics URL for this pod");
                continue;
            };
            let Some(client) = self.client.get_or_init(scrape_client).clone() else { continue };
            state.signals.interval_ms.store(u64::from(config.interval_ms.max(1)), Ordering::Relaxed);
            let counters = metrics.pod_scrapes(&target.provider, &target.pod);
            let label = PodLabel { provider: target.provider.clone(), pod: target.pod.clone() };
            let every = Duration::from_millis(u64::from(config.interval_ms.max(1)));
            let task = runtime.spawn(scrape_pod(client, uri, every, state.signals.clone(), counters, label));
            state.task = Some((config, task.abort_handle()));
        }
    }

    /// How many scrape tasks run (tests).
    pub fn running(&self) -> usize {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner).values().filter(|p| p.task.is_some()).count()
    }
}

fn scrape_client() -> Option<ScrapeClient> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(SCRAPE_TIMEOUT));
    let https = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
    {
        Ok(builder) => builder.https_or_http().enable_http1().wrap_connector(http),
        Err(error) => {
            tracing::error!(%error, "TLS setup for scraping pods failed; pods are not scraped");
            return None;
        }
    };
    Some(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(https))
}

struct PodLabel {
    provider: String,
    pod: String,
}

/// Scrapes one pod every `every` until aborted.
async fn scrape_pod(
    client: ScrapeClient,
    uri: Uri,
    every: Duration,
    signals: Arc<PodSignals>,
    [succeeded, failed]: [Counter; 2],
    label: PodLabel,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = every.min(SCRAPE_TIMEOUT);
    loop {
        ticker.tick().await;
        let result = match tokio::time::timeout(timeout, fetch(&client, &uri)).await {
            Ok(Ok(text)) => parse_vllm_metrics(&text)
                .ok_or_else(|| ("no vllm:num_requests_* series in the metrics text".to_owned(), false)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err((format!("no answer within {} ms", timeout.as_millis()), false)),
        };
        match result {
            Ok(load) => {
                succeeded.inc();
                signals.record(load);
            }
            Err((error, unreachable)) => {
                failed.inc();
                if signals.fail(error.clone(), unreachable) {
                    tracing::warn!(provider = %label.provider, pod = %label.pod, %error, "scraping pod metrics failed");
                }
            }
        }
    }
}

/// One scrape's text, or why not and whether no connection could be made.
async fn fetch(client: &ScrapeClient, uri: &Uri) -> Result<String, (String, bool)> {
    let response = client.get(uri.clone()).await.map_err(|e| (format!("GET {uri}: {e}"), e.is_connect()))?;
    if !response.status().is_success() {
        return Err((format!("GET {uri}: status {}", response.status()), false));
    }
    let body = Limited::new(response.into_body(), MAX_METRICS_BYTES)
        .collect()
        .await
        .map_err(|e| (format!("GET {uri}: body: {e}"), false))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| (format!("GET {uri}: not UTF-8"), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM v1's text (trimmed), as sluice-sim serves it too.
    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_waiting_by_reason{reason="capacity"} 99
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
vllm:prompt_tokens_total{model_name="m"} 12345
"#;

    #[test]
    fn vllm_text_is_read() {
        let load = parse_vllm_metrics(VLLM).expect("vLLM text");
        assert_eq!(load, PodLoad { waiting: 3, running: 7, kv_cache_usage: Some(0.42) });
    }

    #[test]
    fn series_add_up_and_the_older_cache_name_counts() {
        let text = "vllm:num_requests_waiting{model_name=\"a\"} 2\nvllm:num_requests_waiting{model_name=\"b b\"} 5 1700000000\n\
                    vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.9\nvllm:gpu_cache_usage_perc{model_name=\"b\"} 0.3\n";
        assert_eq!(parse_vllm_metrics(text), Some(PodLoad { waiting: 7, running: 0, kv_cache_usage: Some(0.9) }));
    }

    #[test]
    fn text_without_request_counts_or_with_nonsense_is_no_load() {
        assert_eq!(parse_vllm_metrics("# nothing\nprocess_cpu_seconds_total 3\n"), None);
        assert_eq!(parse_vllm_metrics("<html>not found</html>"), None);
        let odd = "vllm:num_requests_running NaN\nvllm:num_requests_running -1\nvllm:num_requests_running x\n";
        assert_eq!(parse_vllm_metrics(odd), None);
        let bare = "vllm:num_requests_running 4\n";
        assert_eq!(parse_vllm_metrics(bare), Some(PodLoad { waiting: 0, running: 4, kv_cache_usage: None }));
    }

    #[test]
    fn the_metrics_url_is_on_the_pods_host_and_port() {
        let uri = metrics_uri("http://10.0.3.7:8000/v1", "/metrics").expect("uri");
        assert_eq!(uri.to_string(), "http://10.0.3.7:8000/metrics");
        let uri = metrics_uri("https://[fd00::7]:8443/api/v1", "/stats").expect("uri");
        assert_eq!(uri.to_string(), "https://[fd00::7]:8443/stats");
        assert_eq!(metrics_uri("not a url", "/metrics"), None);
    }

    #[test]
    fn signals_go_stale_and_failures_count() {
        let signals = PodSignals::default();
        assert_eq!(signals.fresh(), None, "never scraped");
        signals.record(PodLoad { waiting: 4, running: 2, kv_cache_usage: None });
        assert_eq!(signals.fresh().map(|l| l.waiting), Some(4));
        assert!(signals.fail("slow".into(), false), "the first failure is news");
        assert!(!signals.fail("refused".into(), true));
        let view = signals.view();
        assert_eq!((view.consecutive_failures, view.requests_waiting), (2, Some(4)));
        assert!(!view.unreachable, "one refusal is not a dead pod");
        assert!(!signals.fail("refused".into(), true));
        assert!(signals.unreachable(), "two in a row are");
        signals.fail("slow".into(), false);
        assert!(!signals.unreachable(), "a connection made, however slow, is a pod that is there");
        signals.fail("refused".into(), true);
        signals.fail("refused".into(), true);
        signals.record(PodLoad::default());
        assert!(!signals.unreachable(), "a good scrape brings it back");
        // Three intervals without a good scrape: stale.
        signals.interval_ms.store(1, Ordering::Relaxed);
        signals.scraped_at_ms.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(signals.fresh(), None);
        assert!(!signals.view().fresh);
    }

    #[test]
    fn sync_keeps_signals_of_pods_still_named_and_forgets_the_others() {
        let scrapes = Scrapes::default();
        let metrics = Metrics::new();
        let target = |pod: &str| PodTarget { provider: "t/pool".into(), pod: pod.into(), metrics: None };
        let a = scrapes.signals("t/pool", "http://a/v1");
        let b = scrapes.signals("t/pool", "http://b/v1");
        scrapes.sync(&[target("http://a/v1"), target("http://b/v1")], &metrics);
        assert!(Arc::ptr_eq(&a, &scrapes.signals("t/pool", "http://a/v1")));
        scrapes.sync(&[target("http://a/v1")], &metrics);
        assert!(Arc::ptr_eq(&a, &scrapes.signals("t/pool", "http://a/v1")), "a survives the reload");
        assert!(!Arc::ptr_eq(&b, &scrapes.signals("t/pool", "http://b/v1")), "b was forgotten");
        assert_eq!(scrapes.running(), 0, "no runtime, no metrics: no task");
    }

    #[tokio::test]
    async fn tasks_run_only_for_pods_with_metrics_and_stop_when_dropped() {
        let scrapes = Scrapes::default();
        let metrics = Metrics::new();
        let config = PodMetricsConfig { path: "/metrics".into(), interval_ms: 1_000 };
        let with = PodTarget { provider: "t/pool".into(), pod: "http://127.0.0.1:9/v1".into(), metrics: Some(config) };
        let without = PodTarget { pod: "http://127.0.0.1:10/v1".into(), metrics: None, ..with.clone() };
        scrapes.sync(&[with.clone(), without.clone()], &metrics);
        assert_eq!(scrapes.running(), 1);
        scrapes.sync(&[with.clone(), without.clone()], &metrics);
        assert_eq!(scrapes.running(), 1, "unchanged scraping keeps its task");
        scrapes.sync(&[without], &metrics);
        assert_eq!(scrapes.running(), 0);
        scrapes.sync(&[], &metrics);
        assert_eq!(scrapes.running(), 0);
    }
}
