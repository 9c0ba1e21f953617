//! Sluice data plane: an OpenAI-compatible, multi-tenant LLM gateway.
//!
//! A request meets the stages in the order they are declared below, each a module of its own;
//! [`server::handle`] calls them in this order and hands each what the earlier ones decided,
//! and no module imports one that imports it back:
//!
//! 1. [`server`]: accepts connections, bounds the head and reads the body.
//! 2. [`route`]: the path and method: project, endpoint and [`route::Api`].
//! 3. [`auth`]: the key, its project, expiry, source address and endpoint, then its scope and
//!    model allow-list: every access rule.
//! 4. [`guard`]: the endpoint's content rules and PII redaction on the prompt (once the body is
//!    read and translated), and the redacted originals put back into the answer.
//! 5. [`resolve`]: the model named in the body: aliases, deprecation, retirement, capability,
//!    the `max_tokens` cap. ([`models`] answers `/v1/models` from the same lookup.) [`slo`]
//!    reads the request's SLO hints (before the body, since they are headers).
//! 6. [`limits`]: admission under the tier's rates, concurrency and the key's budget.
//! 7. [`routing`]: the order in which to try a model's backends, healthy ones only, by the
//!    endpoint's strategy (SLO-aware by default: predicted latency, affinity, price, load).
//! 8. [`upstream`]: the call, with failover until a first byte arrives.
//! 9. [`protocol`]: the wire format, read and rewritten in place.
//! 10. [`respond`]: the response: every error body and header, whole bodies and streams.
//! 11. [`accounting`]: usage and cost, limits settled, metrics, the access log and the
//!     [`audit`] record.
//!
//! A project-level request (`/<project>/v1/keys/self`, `/<project>/v1/usage`) is routed and
//! authenticated like the others, then answered by [`usage_api`] from what accounting recorded;
//! the key-management API (`/<project>/v1/keys...`) by [`keys_api`]; the catalog and health
//! APIs (`/<project>/v1/catalog`, `/<project>/v1/health`) and the web console's files
//! (`/<project>/console/`, looked for only on a path no API route matched) by [`console`].
//!
//! Beside the path: [`backends`] is every backend's live load, latency and health, which
//! routing reads and every attempt feeds, kept across reloads; [`error`] names every refusal; [`snapshot`] is the configuration as the
//! stages read it, kept current by [`reload`] from [`config_source`]; [`admin`], [`metrics`],
//! [`logging`], [`traces`] and [`usage_report`] make the gateway observable ([`genai`] names
//! what traces and metrics share); [`signing`] signs a project's responses; [`settings`] are
//! its flags.

// The request path, in the order listed above (blank lines keep rustfmt from sorting it).
pub mod server;

pub mod route;

pub mod auth;

pub mod guard;

pub mod resolve;

pub mod models;

pub mod slo;

pub mod limits;

pub mod routing;

pub mod upstream;

pub mod protocol;

pub mod respond;

pub mod accounting;

pub mod usage_api;

pub mod keys_api;

pub mod console;

// Beside it.
pub mod admin;
pub mod audit;
pub mod backends;
pub mod config_source;
pub mod error;
pub mod genai;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod scrape;
pub mod settings;
pub mod signing;
pub mod snapshot;
pub mod traces;
pub mod usage_report;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::HeaderMap;
use prometheus_client::metrics::gauge::Gauge;
use sluice_crds::compile::{CompileOptions, GeneratedKeys};
use sluice_crds::config::GatewayConfig;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reload::ReloadStatus;
use crate::settings::Settings;
use crate::snapshot::{Registries, Snapshot};

/// What can stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The initial configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The Kubernetes client could not be set up.
    #[error("Kubernetes client: {0}")]
    Kube(String),
}

/// The gateway's shared state.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    registries: Registries,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    status: Mutex<ReloadStatus>,
    install: Mutex<u64>,
    request_prefix: u64,
    request_counter: AtomicU64,
    shared_namespace: String,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Admission control: in-process, or shared through Redis (`--redis-url`).
    pub limiter: limits::Limiter,
    /// Usage per key, endpoint and model, for `/v1/usage` and the per-key metrics.
    pub usage: Arc<usage_api::UsageBook>,
    /// Request traces (off unless `--otlp-endpoint` is given).
    pub traces: traces::Traces,
    /// Proxies whose forwarding headers name the client (`--trusted-proxies`).
    pub trusted_proxies: Arc<server::client::TrustedProxies>,
    /// The audit log (off unless `--audit-log` is given).
    pub audit: Option<audit::AuditLog>,
    /// Where the key API keeps keys; set once at start.
    key_store: std::sync::OnceLock<keys_api::KeyStore>,
}

impl Gateway {
    /// A gateway with no configuration yet.
    pub fn new(shared_namespace: &str, max_header_bytes: usize) -> Arc<Self> {
        let (metrics, limiter) = (Arc::new(Metrics::new()), limits::Limiter::default());
        let trusted = Arc::default();
        Self::with_limiter(shared_namespace, max_header_bytes, metrics, limiter, traces::Traces::off(), trusted, None)
    }

    /// A gateway with no configuration yet whose admissions go through `limiter`, whose
    /// requests are traced by `traces` and audited in `audit`, and whose clients are found
    /// behind `trusted_proxies`.
    pub fn with_limiter(
        shared_namespace: &str,
        max_header_bytes: usize,
        metrics: Arc<Metrics>,
        limiter: limits::Limiter,
        traces: traces::Traces,
        trusted_proxies: Arc<server::client::TrustedProxies>,
        audit: Option<audit::AuditLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            registries: Registries::default(),
            status: Mutex::new(ReloadStatus::default()),
            install: Mutex::new(0),
            key_store: std::sync::OnceLock::new(),
            request_prefix: rand::random(),
            request_counter: AtomicU64::new(0),
            shared_namespace: shared_namespace.to_owned(),
            max_header_bytes,
            usage: Arc::new(usage_api::UsageBook::new(metrics.clone(), limiter.redis().is_some())),
            metrics,
            limiter,
            traces,
            trusted_proxies,
            audit,
        })
    }

    /// The live snapshot; a request keeps the one it got for its whole life.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Builds and swaps in a snapshot of `configs`; returns its generation.
    pub fn install(&self, configs: &[GatewayConfig]) -> Result<u64, String> {
        let mut generation = self.install.lock().unwrap_or_else(PoisonError::into_inner);
        let next = *generation + 1;
        let snapshot = snapshot::build(configs, next, &self.registries, &self.metrics).map_err(|e| e.to_string())?;
        self.metrics.keys_loaded.set(snapshot.key_count() as i64);
        self.snapshot.store(Arc::new(snapshot));
        *generation = next;
        self.metrics.config_generation.set(next as i64);
        self.metrics.config_last_success.set(jiff::Timestamp::now().as_second());
        Ok(next)
    }

    /// Where the key API keeps keys (nowhere until the gateway says).
    pub fn key_store(&self) -> &keys_api::KeyStore {
        static NOWHERE: std::sync::LazyLock<keys_api::KeyStore> = std::sync::LazyLock::new(|| {
            keys_api::KeyStore::Unavailable("it has not started with a configuration it can write to".to_owned())
        });
        self.key_store.get().unwrap_or(&NOWHERE)
    }

    /// Sets where the key API keeps keys; the first call wins.
    pub fn set_key_store(&self, store: keys_api::KeyStore) {
        let _ = self.key_store.set(store);
    }

    /// Every backend's live state, for `/config`.
    pub fn backends(&self) -> Vec<backends::BackendView> {
        self.registries.backends.views()
    }

    /// Loading status for `/config`.
    pub fn status(&self) -> MutexGuard<'_, ReloadStatus> {
        self.status_mut()
    }

    /// Loading status, to update.
    pub fn status_mut(&self) -> MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How manifests are compiled in standalone mode.
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            shared_namespace: self.shared_namespace.clone(),
            generated_keys: GeneratedKeys::Unavailable,
            services: sluice_crds::compile::ServiceEndpoints::Unavailable,
            now: None,
        }
    }

    /// The client's `x-request-id` when it is sane, else a new unique one.
    pub fn request_id(&self, headers: &HeaderMap) -> accounting::RequestId {
        if let Some(id) = headers.get(&respond::X_REQUEST_ID) {
            let bytes = id.as_bytes();
            if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic) {
                return accounting::RequestId(id.clone());
            }
        }
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        accounting::RequestId::generate(self.request_prefix, n)
    }
}

/// A running gateway.
pub struct Running {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the admin port listens.
    pub admin_addr: SocketAddr,
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Resolves when both listeners have shut down.
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts the gateway: initial load, watchers, listeners. Returns once it is serving.
pub async fn start(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, Error> {
    let traces = traces::export::from_settings(&settings).map_err(Error::Config)?;
    let metrics = Arc::new(Metrics::with_exemplars(traces.enabled()));
    let limiter = limits::Limiter::from_settings(&settings, &metrics.limits).map_err(Error::Config)?;
    if settings.proxy_protocol != server::proxy_protocol::ProxyProtocol::Off && settings.trusted_proxies.is_empty() {
        return Err(Error::Config(
            "--proxy-protocol needs --trusted-proxies: the load balancer's addresses (0.0.0.0/0,::/0 when \
             nothing but the load balancer can reach the API port)"
                .to_owned(),
        ));
    }
    let proxies =
        server::Proxies { protocol: settings.proxy_protocol, trusted: Arc::new(settings.trusted_proxies.clone()) };
    let audit = audit::AuditLog::from_settings(&settings, &metrics.audit)?;
    let gateway = Gateway::with_limiter(
        &settings.shared_namespace,
        settings.max_header_bytes,
        metrics,
        limiter,
        traces,
        proxies.trusted.clone(),
        audit,
    );
    if !proxies.trusted.is_empty() {
        tracing::info!(trusted_proxies = %proxies.trusted, proxy_protocol = ?settings.proxy_protocol,
            "client addresses are read from forwarding headers of trusted proxies");
    }
    if let Some(redis) = gateway.limiter.redis() {
        tracing::info!(redis = %redis.describe(), replicas_hint = settings.replicas_hint, "limits are shared through Redis");
        tokio::spawn(redis.clone().maintain());
        let every = Duration::from_millis(settings.redis_probe_ms.max(10));
        tokio::spawn(usage_api::publish(gateway.clone(), redis.clone(), every));
    }
    initial_load(&gateway, &settings).await?;

    let api =
        TcpListener::bind(settings.listen).await.map_err(|source| Error::Bind { addr: settings.listen, source })?;
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .map_err(|source| Error::Bind { addr: settings.admin_listen, source })?;
    let api_addr = api.local_addr().map_err(|source| Error::Bind { addr: settings.listen, source })?;
    let admin_addr = admin.local_addr().map_err(|source| Error::Bind { addr: settings.admin_listen, source })?;

    if let Some(path) = settings.config.clone() {
        tokio::spawn(reload::watch_path(gateway.clone(), path, Duration::from_secs(settings.poll_seconds)));
    }
    let mut client = None;
    if let Some(target) = settings.config_secret.as_deref() {
        let (namespace, name) = split_target("--config-secret", target)?;
        let kube = kube_client(settings.kubeconfig.as_deref()).await?;
        client = Some(kube.clone());
        tokio::spawn(reload::watch_secret(gateway.clone(), kube, namespace, name));
    }
    gateway.set_key_store(match (&client, &settings.config) {
        (Some(kube), _) => keys_api::KeyStore::Cluster(kube.clone()),
        (None, Some(path)) if path.is_dir() => keys_api::KeyStore::Folder(path.clone()),
        (None, Some(path)) => keys_api::KeyStore::Unavailable(format!(
            "its configuration is the single file {}; give --config a folder to manage keys",
            path.display()
        )),
        (None, None) => keys_api::KeyStore::Unavailable(
            "it serves the embedded quickstart; start it with --config <folder> to manage keys".to_owned(),
        ),
    });
    if let Some(target) = settings.usage_configmap.as_deref() {
        let (namespace, name) = split_target("--usage-configmap", target)?;
        let kube = match client {
            Some(kube) => kube,
            None => kube_client(settings.kubeconfig.as_deref()).await?,
        };
        let pod = settings.pod_name.clone().unwrap_or_else(pod_name);
        let interval = Duration::from_secs(settings.usage_report_seconds.max(1));
        tokio::spawn(usage_report::run(gateway.clone(), kube, namespace, name, pod, interval));
    }

    // Opened last, once nothing else can fail: a gateway that does not start leaves no chain
    // begun and never closed.
    if let Some(audit) = &gateway.audit {
        audit.begin()?;
    }
    let limits = server::ConnectionLimits {
        max_header_bytes: settings.max_header_bytes,
        header_read_timeout: Duration::from_secs(settings.header_read_timeout_seconds),
        max_connections: settings.max_connections as usize,
        open: gateway.metrics.connections_open.clone(),
    };
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Stopping: `/readyz` fails at once, the listener keeps serving for the drain period (so
    // load balancers move on first), then closes and in-flight requests get the grace period.
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drain = Duration::from_secs(settings.drain_seconds);
    tokio::spawn({
        let draining = draining.clone();
        async move {
            shutdown.await;
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(drain_seconds = drain.as_secs(), "stopping: not ready, serving until the drain period ends");
            tokio::time::sleep(drain).await;
            tracing::info!(grace_seconds = grace.as_secs(), "drain period over: closing the listeners");
            let _ = stop_tx.send(true);
        }
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let api_handler = server::api_handler(gateway.clone());
    let api_task =
        tokio::spawn(server::serve(api, limits.clone(), proxies, api_handler, stopped(stop_rx.clone()), grace));
    let admin_gateway = gateway.clone();
    let admin_handler = move |request: hyper::Request<hyper::body::Incoming>, _remote| {
        let gateway = admin_gateway.clone();
        let draining = draining.load(std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            if draining && request.uri().path() == "/readyz" {
                return admin::draining();
            }
            admin::handle(gateway, request).await
        })
            as std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<respond::body::ResponseBody>> + Send>>
    };
    // The admin port's connections are few (probes, scrapes) and not counted with the API's.
    let admin_limits = server::ConnectionLimits { max_connections: 256, open: Gauge::default(), ..limits };
    let admin_task = tokio::spawn(server::serve(
        admin,
        admin_limits,
        server::Proxies::default(),
        admin_handler,
        stopped(stop_rx),
        Duration::from_secs(1),
    ));
    let done = tokio::spawn(async move {
        let _ = api_task.await;
        let _ = admin_task.await;
    });
    tracing::info!(api = %api_addr, admin = %admin_addr, "sluice-gateway listening");
    Ok(Running { api_addr, admin_addr, gateway, done })
}

/// The first load: must succeed from --config or the embedded quickstart; with only
/// --config-secret the gateway starts unready and the watch fills it in.
async fn initial_load(gateway: &Arc<Gateway>, settings: &Settings) -> Result<(), Error> {
    let source = match (&settings.config, &settings.config_secret) {
        (Some(path), Some(secret)) => format!("secret {secret} (fallback {})", path.display()),
        (Some(path), None) => path.display().to_string(),
        (None, Some(secret)) => format!("secret {secret}"),
        (None, None) => "embedded quickstart".to_owned(),
    };
    gateway.status_mut().source = source;
    match &settings.config {
        Some(path) => {
            let loaded = reload::load_path_once(gateway, path.clone()).await;
            if !loaded && settings.config_secret.is_none() {
                let error = gateway.status().last_error.clone().unwrap_or_default();
                return Err(Error::Config(error));
            }
        }
        None if settings.config_secret.is_none() => {
            let result = config_source::quickstart(&gateway.compile_options());
            if !reload::apply(gateway, "embedded quickstart", result) {
                let error = gateway.status().last_error.clone().unwrap_or_default();
                return Err(Error::Config(error));
            }
        }
        None => {}
    }
    Ok(())
}

fn split_target(flag: &str, target: &str) -> Result<(String, String), Error> {
    target
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
        .ok_or_else(|| Error::Config(format!("{flag} {target:?}: expected NAMESPACE/NAME")))
}

/// This replica's name when the operator did not pass one: the host name (a pod's name).
fn pod_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}

/// Compiles the configuration the settings name, for `--check` and `--print-config`.
pub fn compile_for_check(settings: &Settings) -> Result<Vec<GatewayConfig>, String> {
    let gateway = Gateway::new(&settings.shared_namespace, settings.max_header_bytes);
    match &settings.config {
        Some(path) => config_source::load_path(path, &gateway.compile_options()),
        None => config_source::quickstart(&gateway.compile_options()),
    }
}
