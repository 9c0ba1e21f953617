//! Helpers of the operator's cluster tests: an operator per test, run in-process against the
//! shared real apiserver with namespaces of its own; polling for what it writes; a real
//! `sluice-gateway` process watching a config Secret.

#![allow(dead_code)] // Each test binary uses a different part.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::Api;
use sluice_crds::config::GatewayConfig;
use sluice_crds::config_secret;
use sluice_operator::metrics::Metrics;
use sluice_operator::settings::{Settings, WatchedNamespaces};
use sluice_testenv::TestEnv;

/// One test's world: a tenant namespace, a shared-Provider namespace and a data-plane namespace,
/// an operator that watches only those, and a stand-in for the kubelet that reports the gateway
/// Deployments it writes as available.
pub struct World {
    pub env: &'static TestEnv,
    pub client: Client,
    pub tenant: String,
    pub shared: String,
    pub dataplane: String,
    pub settings: Settings,
    /// Reports the data plane's Deployments as rolled out (no kubelet here); pause it to test
    /// what happens while no gateway replica is available.
    pub rollouts: sluice_testenv::Rollouts,
    /// The operator's metrics; its client's requests are counted in `api_calls`.
    pub metrics: Arc<Metrics>,
    operator: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

impl World {
    /// Creates the namespaces and starts an operator on them.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, |_| {}).await
    }

    /// Like [`World::start`], with the settings adjusted first.
    pub async fn start_with(name: &str, adjust: impl FnOnce(&mut Settings)) -> anyhow::Result<Self> {
        let env = TestEnv::shared();
        let client = env.client()?;
        let tenant = env.namespace(name).await?;
        let shared = env.namespace(&format!("{name}-shared")).await?;
        let dataplane = env.namespace(&format!("{name}-dp")).await?;
        let mut settings = Settings {
            namespaces: WatchedNamespaces::Only(vec![tenant.clone()]),
            shared_namespace: shared.clone(),
            dataplane_namespace: dataplane.clone(),
            identity: format!("test-{tenant}"),
            ..Settings::default()
        };
        adjust(&mut settings);
        let metrics = Arc::new(Metrics::new());
        let operator = {
            let (client, settings) = (metrics.api_calls.client(env.config().clone())?, settings.clone());
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(err) =
                    sluice_operator::run_with_metrics(client, settings, metrics, std::future::pending()).await
                {
                    eprintln!("the operator stopped: {err}");
                }
            })
        };
        let rollouts = sluice_testenv::Rollouts::start(client.clone(), &dataplane);
        Ok(Self { env, client, tenant, shared, dataplane, settings, rollouts, metrics, operator })
    }

    /// Applies manifests: namespaced objects into the tenant namespace, except those that
    /// `sluice-system` names (Providers and their Secrets), which go into this world's shared
    /// namespace.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let yaml = yaml.replace("sluice-system", &self.shared);
        for doc in yaml.split("\n---") {
            if doc.trim().lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                continue;
            }
            let namespace = if doc.contains(&format!("namespace: {}", self.shared)) && !doc.contains("kind: Endpoint") {
                &self.shared
            } else {
                &self.tenant
            };
            sluice_testenv::apply_yaml(&self.client, namespace, doc).await?;
        }
        Ok(())
    }

    /// A tenant served by a simulated Provider (no network): ServiceTier `<tenant>-tier`,
    /// Provider `sim` (model `sim-chat`), Project `slug` with one gateway replica, and Endpoint
    /// `chat` exposing `assistant`.
    pub async fn apply_simulated_tenant(&self, slug: &str) -> anyhow::Result<()> {
        let tier = format!("{}-tier", self.tenant);
        self.apply(&format!(
            "apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: {tier}}}
spec: {{}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: sim}}
spec:
  type: simulated
  models: [{{name: sim-chat}}]
  simulation: {{prefillOverheadMs: 1, interTokenMs: 1, outputTokens: 4, seed: 7}}
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {{name: {slug}}}
spec: {{slug: {slug}, defaultTier: {tier}, dataPlane: {{replicas: 1}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat}}
spec:
  slug: chat
  models: [{{name: assistant, backends: [{{providerRef: {{name: sim}}, model: sim-chat}}]}}]
"
        ))
        .await
    }

    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The configuration in a project's config Secrets, reassembled as the gateway does.
    pub async fn config(&self, slug: &str) -> anyhow::Result<Option<GatewayConfig>> {
        let secrets: Api<Secret> = self.api(&self.dataplane);
        let Some(primary) = secrets.get_opt(&config_secret::primary_name(slug)).await? else { return Ok(None) };
        let data = primary.data.unwrap_or_default();
        let mut shards = Vec::new();
        for index in 0..config_secret::shard_count(&data)?.unwrap_or(0) {
            let shard = secrets.get(&config_secret::shard_name(slug, index)).await?;
            shards.push(shard.data.unwrap_or_default());
        }
        let bytes = config_secret::assemble(&data, |i| shards.get(i))?;
        Ok(Some(serde_json::from_slice(&bytes)?))
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `timeout`; the error names
/// `what` and the last thing seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(state)) => state,
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `name`'s `Ready` condition is True (`conditions` reads them) and returns it.
pub async fn ready<K>(api: &Api<K>, name: &str, conditions: impl Fn(&K) -> Vec<Condition>) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} to be Ready"), Duration::from_secs(60), || async {
        let object = api.get(name).await?;
        let found = conditions(&object);
        Ok(match condition(&found, "Ready") {
            Some(c) if c.status == "True" => Ok(object),
            _ => Err(describe(&found)),
        })
    })
    .await
}

/// The condition of `type_` in `conditions`.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `(status, message)` of a condition, for messages.
pub fn describe(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A decoded string value of a Secret.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// The `sluice-gateway` binary: `$SLUICE_GATEWAY_BIN`, else built once with cargo (a no-op when
/// `cargo test --workspace` already built it).
pub fn gateway_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("SLUICE_GATEWAY_BIN") {
                return Ok(PathBuf::from(path));
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = std::process::Command::new(cargo)
                .args(["build", "-p", "sluice-gateway", "--bin", "sluice-gateway", "--message-format", "json"])
                .current_dir(sluice_testenv::workspace_root())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("running cargo build -p sluice-gateway: {e}"))?;
            if !output.status.success() {
                return Err("cargo build -p sluice-gateway failed (see its output above)".into());
            }
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "sluice-gateway")
                .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
                .ok_or_else(|| "cargo build -p sluice-gateway named no executable".to_owned())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A `sluice-gateway` process on loopback, killed when dropped.
pub struct Gateway {
    pub base: String,
    pub admin: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Gateway {
    /// Starts the gateway watching `namespace/name` through the env's kubeconfig and waits until
    /// it is ready (it has loaded a configuration).
    pub async fn start(env: &TestEnv, secret: &str) -> anyhow::Result<Self> {
        Self::start_with(env, secret, &[]).await
    }

    /// Like [`Gateway::start`], with more arguments.
    pub async fn start_with(env: &TestEnv, secret: &str, extra: &[String]) -> anyhow::Result<Self> {
        Self::start_as(env.kubeconfig(), secret, extra).await
    }

    /// Like [`Gateway::start_with`], with the credentials of `kubeconfig` (see
    /// [`TestEnv::kubeconfig_as`] for a gateway with only its ServiceAccount's permissions).
    pub async fn start_as(kubeconfig: &std::path::Path, secret: &str, extra: &[String]) -> anyhow::Result<Self> {
        let [api, admin] = free_ports()?;
        let log = std::env::temp_dir().join(format!("sluice-gateway-{}-{api}.log", std::process::id()));
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(gateway_binary()?)
            .arg("--config-secret")
            .arg(secret)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--listen")
            .arg(format!("127.0.0.1:{api}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"))
            .args(extra)
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting sluice-gateway")?;
        let mut gateway =
            Self { base: format!("http://127.0.0.1:{api}"), admin: format!("http://127.0.0.1:{admin}"), child, log };
        let http = reqwest::Client::new();
        let ready = format!("{}/readyz", gateway.admin);
        let started = eventually("the gateway to be ready", Duration::from_secs(60), || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                Ok(match http.get(&ready).send().await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("/readyz answered {}", response.status())),
                    Err(err) => Err(err.to_string()),
                })
            }
        })
        .await;
        if let Err(err) = started {
            let exited = gateway.child.try_wait()?;
            bail!("{err}; exited: {exited:?}; log ends:\n{}", gateway.log_tail());
        }
        Ok(gateway)
    }

    /// The last lines of the gateway's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
