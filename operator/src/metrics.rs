//! Prometheus metrics of the controllers (reconciles, durations, errors, config writes, ApiKey
//! budgets) and the small HTTP server that exposes them with `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api_calls::ApiCalls;
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

/// One ApiKey's budget and what it spent in the current period
/// (`sluice_operator_key_budget_limit_usd`, `sluice_operator_key_budget_spend_usd`).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyBudget {
    /// `<namespace>/<name>`, as the gateway's `key_id` label spells it.
    pub key_id: String,
    /// US dollars per period.
    pub limit_usd: f64,
    /// What every gateway pod reported the key spent in the current period, summed.
    pub spend_usd: f64,
}

/// Where the budget gauges are read from on each scrape: the running controllers' caches.
pub trait KeyBudgets: Send + Sync {
    /// Every ApiKey that has a budget.
    fn key_budgets(&self) -> Vec<KeyBudget>;
}

/// The budget gauges, made on each scrape from [`KeyBudgets`] rather than kept: a deleted
/// ApiKey's series goes with it (the controller is never called for a key that is gone), and a
/// replica that does not lead, whose caches are stale or gone, exports none.
struct BudgetCollector {
    source: Mutex<Option<Weak<dyn KeyBudgets>>>,
    leader: Gauge,
}

impl std::fmt::Debug for BudgetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetCollector").finish_non_exhaustive()
    }
}

impl Collector for BudgetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self.source.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Weak::upgrade);
        let budgets = match source {
            Some(source) if self.leader.get() == 1 => source.key_budgets(),
            _ => Vec::new(),
        };
        let limit = Family::<[(&'static str, String); 1], Gauge<f64, AtomicU64>>::default();
        let spend = Family::<[(&'static str, String); 1], Gauge<f64, AtomicU64>>::default();
        for budget in budgets {
            let label = [("key_id", budget.key_id)];
            limit.get_or_create(&label).set(budget.limit_usd);
            spend.get_or_create(&label).set(budget.spend_usd);
        }
        for (name, help, family) in [
            (
                "sluice_operator_key_budget_limit_usd",
                "Budget of each ApiKey that has one, US dollars per period",
                &limit,
            ),
            (
                "sluice_operator_key_budget_spend_usd",
                "What each ApiKey with a budget spent in its current period, as the gateway pods reported it",
                &spend,
            ),
        ] {
            // As the registry does for its own metrics: no series, no descriptor.
            if family.is_empty() {
                continue;
            }
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        Ok(())
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
    /// Requests to the apiserver (of a client made by [`ApiCalls::client`]).
    pub api_calls: ApiCalls,
    /// CPU time of Project reconciles off the async workers, by phase: `gather` (inputs from
    /// the caches), `compile`, `serialize` (canonical JSON, hash, shards).
    pub project_phases: Family<[(&'static str, String); 1], Counter<f64, AtomicU64>>,
    /// Configuration writes put off by the spacing of large configurations.
    pub config_writes_deferred: Counter,
    budgets: Arc<BudgetCollector>,
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
        let leader = Gauge::default();
        let budgets = Arc::new(BudgetCollector { source: Mutex::new(None), leader: leader.clone() });
        let mut metrics = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(DurationBuckets),
            config_writes: Counter::default(),
            config_bytes: Family::default(),
            keys_issued: Counter::default(),
            keys_rotated: Counter::default(),
            leader,
            api_calls: ApiCalls::default(),
            project_phases: Family::default(),
            config_writes_deferred: Counter::default(),
            budgets: budgets.clone(),
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
        registry.register_collector(Box::new(metrics.api_calls.clone()));
        registry.register(
            "sluice_operator_project_phase_seconds",
            "CPU time of Project reconciles, by phase: gather (inputs from the caches), compile, serialize (canonical JSON, hash, shards)",
            metrics.project_phases.clone(),
        );
        registry.register(
            "sluice_operator_config_writes_deferred",
            "Configuration writes put off by the spacing of large configurations",
            metrics.config_writes_deferred.clone(),
        );
        registry.register_collector(Box::new(budgets));
        metrics
    }

    /// Reads the ApiKey budget gauges from `source` from now on (the controllers' context, held
    /// weakly: once the controllers stop, so do the gauges).
    pub fn follow_key_budgets(&self, source: Weak<dyn KeyBudgets>) {
        *self.budgets.source.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
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

    /// Adds `took` to Project reconciles' `phase`.
    pub fn project_phase(&self, phase: &str, took: Duration) {
        self.project_phases.get_or_create(&[("phase", phase.to_owned())]).inc_by(took.as_secs_f64());
    }

    /// Marks the operator ready (caches synced, or standing by for the Lease).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the operator is ready (what `/readyz` answers).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
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

    struct Fixed(Vec<KeyBudget>);

    impl KeyBudgets for Fixed {
        fn key_budgets(&self) -> Vec<KeyBudget> {
            self.0.clone()
        }
    }

    #[test]
    fn budgets_are_read_at_scrape_time_from_the_leading_controllers() {
        let metrics = Metrics::new();
        let source: Arc<dyn KeyBudgets> =
            Arc::new(Fixed(vec![KeyBudget { key_id: "team-a/web-app".to_owned(), limit_usd: 50.0, spend_usd: 46.5 }]));
        metrics.follow_key_budgets(Arc::downgrade(&source));
        assert!(!metrics.encode().contains("key_budget"), "a replica that does not lead exports none");

        metrics.leader.set(1);
        let text = metrics.encode();
        assert!(text.contains("sluice_operator_key_budget_limit_usd{key_id=\"team-a/web-app\"} 50.0"), "{text}");
        assert!(text.contains("sluice_operator_key_budget_spend_usd{key_id=\"team-a/web-app\"} 46.5"), "{text}");
        assert!(text.contains("# TYPE sluice_operator_key_budget_spend_usd gauge"), "{text}");

        drop(source);
        assert!(!metrics.encode().contains("key_budget"), "the controllers stopped: no stale series");
    }
}
