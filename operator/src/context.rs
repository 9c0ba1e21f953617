//! What every reconcile shares: the client, the settings, the caches of watched objects, the
//! compile reports, the reported usage, the event recorder, metrics and per-object error backoff.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};

use crate::error::{Error, Result};
use crate::labels::FIELD_MANAGER;
use crate::metrics::Metrics;
use crate::reports::Reports;
use crate::settings::Settings;
use crate::usage::UsageIndex;

/// Longest wait between retries of a failing reconcile.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// In-memory views of the watched objects.
#[derive(Clone)]
pub struct Caches {
    /// Projects in the watched namespaces.
    pub projects: Store<Project>,
    /// Endpoints in the watched namespaces.
    pub endpoints: Store<Endpoint>,
    /// ApiKeys in the watched namespaces.
    pub apikeys: Store<ApiKey>,
    /// Providers in the watched and the shared namespace.
    pub providers: Store<Provider>,
    /// Every ServiceTier.
    pub tiers: Store<ServiceTier>,
    /// Secrets in the watched and the shared namespace (credentials and keys; config Secrets
    /// excluded).
    pub secrets: Store<Secret>,
    /// Config Secrets in the data-plane namespace.
    pub config_secrets: Store<Secret>,
    /// Gateway Deployments in the data-plane namespace.
    pub deployments: Store<Deployment>,
    /// Usage ConfigMaps in the data-plane namespace.
    pub usage_config_maps: Store<ConfigMap>,
    /// Gateway pods in the data-plane namespace (whose usage reports are still live).
    pub gateway_pods: Store<Pod>,
}

impl Caches {
    /// The Project of `namespace`: the first by name, as the compiler has it (one per namespace).
    pub fn project_in(&self, namespace: &str) -> Option<Arc<Project>> {
        self.projects_in(namespace).into_iter().next()
    }

    /// Every Project of `namespace`, by name.
    pub fn projects_in(&self, namespace: &str) -> Vec<Arc<Project>> {
        let mut projects = self.projects.state_filter(|p| p.namespace().as_deref() == Some(namespace));
        projects.sort_by_key(|p| p.name_any());
        projects
    }

    /// A Secret from the cache.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The apiserver.
    pub client: Client,
    /// Start-up settings.
    pub settings: Settings,
    /// Watched objects.
    pub caches: Caches,
    /// Compile verdicts of each project.
    pub reports: Reports,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// What the gateway pods reported each key spent.
    pub usage: UsageIndex,
    failures: Mutex<HashMap<String, u32>>,
    config_written: Mutex<HashMap<String, Instant>>,
    spend_written: Mutex<SpendWrites>,
    secret_users: RwLock<HashMap<(String, String), BTreeSet<String>>>,
}

impl Context {
    /// A context over `caches`.
    pub fn new(
        client: Client,
        settings: Settings,
        caches: Caches,
        reports: Reports,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            settings,
            caches,
            reports,
            recorder,
            metrics,
            usage: UsageIndex::default(),
            failures: Mutex::default(),
            config_written: Mutex::default(),
            spend_written: Mutex::default(),
            secret_users: RwLock::default(),
        }
    }

    /// Publishes an Event about `object`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, object: &K, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.to_owned(), note: Some(note), action: reason.to_owned(), secondary: None };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(reason, error = %err, "could not publish an Event");
        }
    }

    /// Records that ApiKey `apikey` uses bring-your-own Secret `secret` (both in `namespace`), so
    /// a change to the Secret finds the key without scanning every ApiKey.
    pub fn record_secret_user(&self, namespace: &str, secret: &str, apikey: &str) {
        let mut users = self.secret_users.write().unwrap_or_else(PoisonError::into_inner);
        users.entry((namespace.to_owned(), secret.to_owned())).or_default().insert(apikey.to_owned());
    }

    /// ApiKeys recorded as using Secret `namespace/secret`.
    pub fn secret_users(&self, namespace: &str, secret: &str) -> Vec<String> {
        let users = self.secret_users.read().unwrap_or_else(PoisonError::into_inner);
        users.get(&(namespace.to_owned(), secret.to_owned())).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// When project `slug`'s configuration was last written by this process.
    pub fn config_written_at(&self, slug: &str) -> Option<Instant> {
        self.config_written.lock().unwrap_or_else(PoisonError::into_inner).get(slug).copied()
    }

    /// Notes a configuration write (or forgets the project with `None`).
    pub fn set_config_written(&self, slug: &str, at: Option<Instant>) {
        let mut written = self.config_written.lock().unwrap_or_else(PoisonError::into_inner);
        match at {
            Some(at) => written.insert(slug.to_owned(), at),
            None => written.remove(slug),
        };
    }

    /// How long ApiKey `id` must wait before a status write that changes only its spend; `None`:
    /// it may write now.
    pub fn spend_write_wait(&self, id: &str) -> Option<Duration> {
        let written = self.spend_written.lock().unwrap_or_else(PoisonError::into_inner);
        spacing_wait(written.at.get(id).copied(), Instant::now(), self.settings.spend_status_interval)
    }

    /// Notes that ApiKey `id`'s status got a new spend now.
    pub fn note_spend_written(&self, id: &str) {
        let mut written = self.spend_written.lock().unwrap_or_else(PoisonError::into_inner);
        let interval = self.settings.spend_status_interval;
        // Keys written longer ago than the interval need no spacing any more: forget them
        // (deleted keys included) whenever the map has doubled since the last time.
        if written.at.len() >= written.prune_at {
            written.at.retain(|_, at| at.elapsed() < interval);
            written.prune_at = (written.at.len() * 2).max(1024);
        }
        written.at.insert(id.to_owned(), Instant::now());
    }

    /// The retry delay after a failed reconcile of `key`: 1 s, doubling up to 5 minutes.
    fn next_backoff(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(9)).min(MAX_BACKOFF)
    }

    fn reset_backoff(&self, key: &str) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// When each ApiKey's status last got a new spend.
#[derive(Default)]
struct SpendWrites {
    at: HashMap<String, Instant>,
    /// Size at which old entries are dropped.
    prune_at: usize,
}

/// What is left of `interval` since `last` at `now`; `None` when nothing is.
fn spacing_wait(last: Option<Instant>, now: Instant, interval: Duration) -> Option<Duration> {
    let left = interval.checked_sub(now.saturating_duration_since(last?))?;
    (!left.is_zero()).then_some(left)
}

fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or(""),
        object.meta().name.as_deref().unwrap_or("")
    )
}

/// Runs one reconcile of `controller` with metrics and a reset of its error backoff on success.
pub async fn observe<K, F, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let key = backoff_key(object.as_ref());
    let started = Instant::now();
    let result = reconcile(object, ctx.clone()).await;
    ctx.metrics.reconciled(controller, started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// The error policy of every controller: log, then retry with per-object exponential backoff.
pub fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = backoff_key(object.as_ref());
    let delay = ctx.next_backoff(key.clone());
    tracing::warn!(object = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Server-side applies `object` under the operator's field manager.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource + Serialize + Clone + DeserializeOwned + Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or_else(|| Error::Incomplete(format!("a {}", std::any::type_name::<K>()), "name"))?;
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await?)
}

/// Server-side applies `status` to the status subresource of `object`.
pub async fn apply_status<K>(api: &Api<K>, object: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Whether an apiserver error is a 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Whether an apiserver error is a 409 (already exists, or a stale resourceVersion).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_writes_are_spaced() {
        let now = Instant::now();
        let interval = Duration::from_secs(30);
        assert_eq!(spacing_wait(None, now, interval), None, "a first spend is written at once");
        assert_eq!(spacing_wait(Some(now), now + Duration::from_secs(10), interval), Some(Duration::from_secs(20)));
        assert_eq!(spacing_wait(Some(now), now + interval, interval), None);
        assert_eq!(spacing_wait(Some(now), now + Duration::from_secs(99), interval), None);
        assert_eq!(spacing_wait(Some(now), now, Duration::ZERO), None, "no spacing");
    }
}
