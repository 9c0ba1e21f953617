//! Prometheus metrics of the controllers (reconciles, durations, errors, config writes) and the
//! small HTTP server that exposes them with `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

type Controller = [(&'static str, String); 1];
type ControllerReason = [(&'static str, String); 2];

#[derive(Clone, Copy)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms to about 33 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 16))
    }
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Controller, Counter>,
    errors: Family<ControllerReason, Counter>,
    durations: Family<Controller, Histogram, DurationBuckets>,
    /// Config Secret sets written (one per changed configuration).
    pub config_writes: Counter,
    /// Size of each project's configuration in bytes.
    pub config_bytes: Family<[(&'static str, String); 1], Gauge>,
    /// API keys issued (first keys and rotations).
    pub keys_issued: Counter,
    /// Key rotations.
    pub keys_rotated: Counter,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(DurationBuckets),
            config_writes: Counter::default(),
            config_bytes: Family::default(),
            keys_issued: Counter::default(),
            keys_rotated: Counter::default(),
            leader: Gauge::default(),
            ready: AtomicBool::new(false),
        };
        let registry = &mut metrics.registry;
        registry.register("sluice_operator_reconciles", "Reconciles, by controller", metrics.reconciles.clone());
        registry.register(
            "sluice_operator_reconcile_errors",
            "Reconciles that failed, by controller and kind of error",
            metrics.errors.clone(),
        );
        registry.register(
            "sluice_operator_reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            metrics.durations.clone(),
        );
        registry.register(
            "sluice_operator_config_writes",
            "Project configurations written to config Secrets",
            metrics.config_writes.clone(),
        );
        registry.register(
            "sluice_operator_config_bytes",
            "Size of each project's compiled configuration",
            metrics.config_bytes.clone(),
        );
        registry.register("sluice_operator_keys_issued", "API keys generated", metrics.keys_issued.clone());
        registry.register("sluice_operator_keys_rotated", "API keys rotated", metrics.keys_rotated.clone());
        registry.register(
            "sluice_operator_leader",
            "1 while this replica runs the controllers (holds the leader Lease)",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Counts a finished reconcile of `controller`.
    pub fn reconciled(&self, controller: &str, took: Duration, error: Option<&Error>) {
        let label = [("controller", controller.to_owned())];
        self.reconciles.get_or_create(&label).inc();
        self.durations.get_or_create(&label).observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&[("controller", controller.to_owned()), ("reason", error.metric_label().to_owned())])
                .inc();
        }
    }

    /// Marks the operator ready (caches synced, or standing by for the Lease).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until the future is dropped.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|source| Error::MetricsServer { address, source })?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router).await.map_err(|source| Error::MetricsServer { address, source })
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_counted_by_controller() {
        let metrics = Metrics::new();
        metrics.reconciled("project", Duration::from_millis(3), None);
        metrics.reconciled("project", Duration::from_millis(5), Some(&Error::Settings("x".into())));
        let text = metrics.encode();
        assert!(text.contains("sluice_operator_reconciles_total{controller=\"project\"} 2"), "{text}");
        assert!(text.contains("sluice_operator_reconcile_errors_total{controller=\"project\",reason=\"settings\"} 1"));
        assert!(text.contains("sluice_operator_reconcile_duration_seconds_count{controller=\"project\"} 2"));
    }
}
