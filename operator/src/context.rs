//! What every reconcile shares: the client, the settings, the caches of watched objects and
//! their index, the compile reports, the reported usage, the event recorder, metrics and
//! per-object error backoff. State only one controller needs lives with that controller.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};
use sluice_crds::objects::{ConfigMapData, Object, SecretData};

use crate::error::{Error, Result};
use crate::labels::FIELD_MANAGER;
use crate::metrics::Metrics;
use crate::reports::Reports;
use crate::settings::Settings;
use crate::usage::UsageIndex;
use crate::watch_index::WatchIndex;
use crate::watches::{SERVICE_NAME_LABEL, ready_addresses};

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
    /// ConfigMaps in the watched and the shared namespace (Providers' CA bundles; usage
    /// ConfigMaps excluded).
    pub config_maps: Store<ConfigMap>,
    /// Gateway Deployments in the data-plane namespace.
    pub deployments: Store<Deployment>,
    /// Usage ConfigMaps in the data-plane namespace.
    pub usage_config_maps: Store<ConfigMap>,
    /// The operator's Services in the data-plane namespace.
    pub services: Store<Service>,
    /// The operator's ServiceAccounts in the data-plane namespace.
    pub service_accounts: Store<ServiceAccount>,
    /// The operator's Roles in the data-plane namespace.
    pub roles: Store<Role>,
    /// The operator's RoleBindings in the data-plane namespace.
    pub role_bindings: Store<RoleBinding>,
    /// The operator's Ingresses in the data-plane namespace.
    pub ingresses: Store<Ingress>,
    /// Gateway pods in the data-plane namespace (whose usage reports are still live).
    pub gateway_pods: Store<Pod>,
    /// EndpointSlices of Services in the watched and the shared namespace.
    pub endpoint_slices: Store<EndpointSlice>,
    /// Who refers to what, fed by the watches of Projects, Endpoints, ApiKeys and Providers.
    pub index: Arc<RwLock<WatchIndex>>,
}

impl Caches {
    /// Reads the index.
    pub fn index(&self) -> RwLockReadGuard<'_, WatchIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Project of `namespace`: the first by name, as the compiler has it (one per namespace).
    pub fn project_in(&self, namespace: &str) -> Option<Arc<Project>> {
        let first = self.index().project_in(namespace)?.object_ref();
        self.projects.get(&first)
    }

    /// The ready addresses of the pods behind Service `namespace/service`, from its
    /// EndpointSlices: sorted, without duplicates.
    pub fn pool_addresses(&self, namespace: &str, service: &str) -> Vec<String> {
        let slices = self.endpoint_slices.state_filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace)
                && slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        });
        let mut addresses: Vec<String> = slices.iter().flat_map(|slice| ready_addresses(slice)).collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// A Secret from the cache.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }

    /// A ConfigMap from the cache.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&ObjectRef::new(name).within(namespace))
    }

    /// The Secrets and ConfigMaps `provider` reads that the caches hold, as compiler input.
    pub fn provider_reads(&self, provider: &Provider) -> Vec<Object> {
        let namespace = provider.namespace().unwrap_or_default();
        let secrets = provider.spec.secret_names().into_iter().filter_map(|name| self.secret(&namespace, name));
        let config_maps =
            provider.spec.config_map_names().into_iter().filter_map(|name| self.config_map(&namespace, name));
        secrets
            .map(|s| Object::Secret(SecretData::from(s.as_ref())))
            .chain(config_maps.map(|c| Object::ConfigMap(ConfigMapData::from(c.as_ref()))))
            .collect()
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
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
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
        }
    }

    /// Publishes an Event about `object`; failures are logged, never fatal.
    ///
    /// The recorder counts a repeat of the same object, reason and action as one Event series
    /// and keeps the series' first note; the action names the note too (`<reason>-<digest>`),
    /// so the same message repeated is counted (`x3`) while a new message is a new Event that
    /// reads as it is now.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, object: &K, type_: EventType, reason: &str, note: String) {
        let action = event_action(reason, &note);
        let event = Event { type_, reason: reason.to_owned(), note: Some(note), action, secondary: None };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(reason, error = %err, "could not publish an Event");
        }
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

/// Adds or removes the operator's `finalizer` on `object` by server-side apply: finalizers are
/// a set, so this touches only the operator's own entry. Removing it from an object already
/// gone is done.
pub async fn set_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str, present: bool) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut metadata = serde_json::json!({ "name": name });
    if present {
        metadata["finalizers"] = serde_json::json!([finalizer]);
    }
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "metadata": metadata});
    match api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        Err(err) if !present && is_not_found(&err) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The action of an Event: its reason and a digest of its note.
fn event_action(reason: &str, note: &str) -> String {
    format!("{reason}-{:08x}", crate::cache::fingerprint(note) as u32)
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
pub async fn observe<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    object: &K,
    ctx: &Context,
    reconcile: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let key = backoff_key(object);
    let started = Instant::now();
    let result = reconcile.await;
    ctx.metrics.reconciled(controller, started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// The error policy of every controller: log, then retry with per-object exponential backoff.
pub fn error_policy<K, C>(object: Arc<K>, error: &Error, ctx: Arc<C>) -> Action
where
    K: Resource<DynamicType = ()>,
    C: AsRef<Context>,
{
    let key = backoff_key(object.as_ref());
    let delay = (*ctx).as_ref().next_backoff(key.clone());
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
    fn an_event_series_is_one_message_repeated() {
        let first = event_action("ConfigWritten", "configuration sha256:aa: 3 key(s)");
        assert_eq!(first, event_action("ConfigWritten", "configuration sha256:aa: 3 key(s)"), "repeats count");
        assert_ne!(first, event_action("ConfigWritten", "configuration sha256:bb: 4 key(s)"), "news is new");
        assert!(first.starts_with("ConfigWritten-") && first.len() <= 128, "a valid action: {first}");
    }
}
