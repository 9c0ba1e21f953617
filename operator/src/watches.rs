//! The operator's watches: one per kind, with the selectors that keep each cache small, the
//! caches every reconcile reads, and the [`WatchIndex`] they feed. Controllers take their
//! trigger streams from here before [`Watches::start`].

use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::runtime::watcher;
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};
use tokio::task::JoinSet;

use crate::cache::{Change, Informer, fingerprint, wait_synced};
use crate::context::Caches;
use crate::labels::{PROJECT_LABEL, gateway_pod_selector, managed_selector, usage_selector};
use crate::settings::{Settings, WatchedNamespaces};
use crate::watch_index::{Indexed, WatchIndex};

/// One informer per watched kind (and selector), not started yet.
pub struct Watches {
    /// Projects in the watched namespaces.
    pub projects: Informer<Project>,
    /// Endpoints in the watched namespaces.
    pub endpoints: Informer<Endpoint>,
    /// ApiKeys in the watched namespaces.
    pub apikeys: Informer<ApiKey>,
    /// Providers in the watched and the shared namespace.
    pub providers: Informer<Provider>,
    /// Every ServiceTier.
    pub tiers: Informer<ServiceTier>,
    /// Secrets that Sluice objects may reference (config Secrets excluded).
    pub secrets: Informer<Secret>,
    /// Config Secrets in the data-plane namespace.
    pub config_secrets: Informer<Secret>,
    /// ConfigMaps that Providers may reference (CA bundles) in the watched and the shared
    /// namespace (the gateways' usage ConfigMaps excluded).
    pub config_maps: Informer<ConfigMap>,
    /// Gateway Deployments.
    pub deployments: Informer<Deployment>,
    /// Watched to repair drift (someone deleted or edited them), and to apply only what differs.
    pub services: Informer<Service>,
    /// See [`Watches::services`].
    pub service_accounts: Informer<ServiceAccount>,
    /// See [`Watches::services`].
    pub roles: Informer<Role>,
    /// See [`Watches::services`].
    pub role_bindings: Informer<RoleBinding>,
    /// See [`Watches::services`].
    pub ingresses: Informer<Ingress>,
    /// Written by the gateway pods every few seconds: read for usage, and repaired on drift.
    pub usage_config_maps: Informer<ConfigMap>,
    /// Which pods' usage reports are still live.
    pub gateway_pods: Informer<Pod>,
    /// EndpointSlices of Services in the watched and the shared namespace: the pods of
    /// self-hosted pools (Providers with `spec.service`).
    pub endpoint_slices: Informer<EndpointSlice>,
    index: Arc<RwLock<WatchIndex>>,
}

impl Watches {
    /// The watches `settings` ask for; nothing runs until [`Watches::start`].
    pub fn new(client: &Client, settings: &Settings) -> Self {
        let tenants = match &settings.namespaces {
            WatchedNamespaces::All => None,
            WatchedNamespaces::Only(names) => Some(names.clone()),
        };
        let with_shared = settings.namespaces.with(&settings.shared_namespace);
        let dataplane = [settings.dataplane_namespace.clone()];
        let plain = watcher::Config::default();
        let managed = watcher::Config::default().labels(&managed_selector());
        // Config Secrets (large) stay out of the tenant Secret cache, and so do Secrets that no
        // Sluice object can reference.
        let tenant_secrets = watcher::Config::default()
            .labels(&format!("!{PROJECT_LABEL}"))
            .fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token");
        let index = Arc::new(RwLock::new(WatchIndex::new(settings.shared_namespace.clone())));

        let mut projects = Informer::namespaced(client, tenants.as_deref(), plain.clone());
        let mut endpoints = Informer::namespaced(client, tenants.as_deref(), plain.clone());
        let mut apikeys = Informer::namespaced(client, tenants.as_deref(), plain.clone());
        let mut providers = Informer::namespaced(client, with_shared.as_deref(), plain.clone());
        projects.on_change(index_hook(&index));
        endpoints.on_change(index_hook(&index));
        apikeys.on_change(index_hook(&index));
        providers.on_change(index_hook(&index));
        Self {
            projects,
            endpoints,
            apikeys,
            providers,
            tiers: Informer::cluster(client, plain),
            secrets: Informer::namespaced(client, with_shared.as_deref(), tenant_secrets),
            config_maps: Informer::namespaced(
                client,
                with_shared.as_deref(),
                watcher::Config::default().labels(&format!("!{PROJECT_LABEL}")),
            ),
            config_secrets: Informer::namespaced(client, Some(&dataplane), managed.clone()),
            deployments: Informer::namespaced(client, Some(&dataplane), managed.clone()),
            services: Informer::namespaced(client, Some(&dataplane), managed.clone()),
            service_accounts: Informer::namespaced(client, Some(&dataplane), managed.clone()),
            roles: Informer::namespaced(client, Some(&dataplane), managed.clone()),
            role_bindings: Informer::namespaced(client, Some(&dataplane), managed.clone()),
            ingresses: Informer::namespaced(client, Some(&dataplane), managed),
            usage_config_maps: Informer::namespaced(
                client,
                Some(&dataplane),
                watcher::Config::default().labels(&usage_selector()),
            ),
            gateway_pods: Informer::namespaced(
                client,
                Some(&dataplane),
                watcher::Config::default().labels(&gateway_pod_selector()),
            ),
            endpoint_slices: Informer::namespaced(
                client,
                with_shared.as_deref(),
                watcher::Config::default().labels(SERVICE_NAME_LABEL),
            ),
            index,
        }
    }

    /// The stores and the index, for the reconciles.
    pub fn caches(&self) -> Caches {
        Caches {
            projects: self.projects.store(),
            endpoints: self.endpoints.store(),
            apikeys: self.apikeys.store(),
            providers: self.providers.store(),
            tiers: self.tiers.store(),
            secrets: self.secrets.store(),
            config_secrets: self.config_secrets.store(),
            config_maps: self.config_maps.store(),
            deployments: self.deployments.store(),
            usage_config_maps: self.usage_config_maps.store(),
            services: self.services.store(),
            service_accounts: self.service_accounts.store(),
            roles: self.roles.store(),
            role_bindings: self.role_bindings.store(),
            ingresses: self.ingresses.store(),
            gateway_pods: self.gateway_pods.store(),
            endpoint_slices: self.endpoint_slices.store(),
            index: self.index.clone(),
        }
    }

    /// Starts every watch and waits until each has listed. The watches run as long as the
    /// returned set is kept.
    pub async fn start(self) -> JoinSet<()> {
        let synced = vec![
            self.projects.synced(),
            self.endpoints.synced(),
            self.apikeys.synced(),
            self.providers.synced(),
            self.tiers.synced(),
            self.secrets.synced(),
            self.config_secrets.synced(),
            self.config_maps.synced(),
            self.deployments.synced(),
            self.usage_config_maps.synced(),
            self.gateway_pods.synced(),
            self.endpoint_slices.synced(),
        ];
        let mut running = JoinSet::new();
        running.spawn(self.projects.run());
        running.spawn(self.endpoints.run());
        running.spawn(self.apikeys.run());
        running.spawn(self.providers.run());
        running.spawn(self.tiers.run());
        running.spawn(self.secrets.run());
        running.spawn(self.config_secrets.run());
        running.spawn(self.config_maps.run());
        running.spawn(self.deployments.run());
        running.spawn(self.services.run());
        running.spawn(self.service_accounts.run());
        running.spawn(self.roles.run());
        running.spawn(self.role_bindings.run());
        running.spawn(self.ingresses.run());
        running.spawn(self.usage_config_maps.run());
        running.spawn(self.gateway_pods.run());
        running.spawn(self.endpoint_slices.run());
        wait_synced(synced).await;
        running
    }
}

/// Feeds an informer's changes into the index.
fn index_hook<K: Indexed>(index: &Arc<RwLock<WatchIndex>>) -> impl Fn(Change<'_, K>) + Send + Sync + 'static {
    let index = index.clone();
    move |change| {
        let mut index = index.write().unwrap_or_else(PoisonError::into_inner);
        match change {
            Change::Applied(object) => index.apply(object),
            Change::Deleted(object) => index.delete(object),
        }
    }
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The ready addresses of an EndpointSlice, sorted: what a pool's configuration is made of.
pub fn ready_addresses(slice: &EndpointSlice) -> Vec<String> {
    let mut addresses: Vec<String> = slice
        .endpoints
        .iter()
        // `ready` unset means ready (the API's rule); terminating endpoints are not ready.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Fingerprint of a ConfigMap's data: what the controllers that read CA bundles react to.
pub fn config_map_fingerprint(config_map: &ConfigMap) -> u64 {
    let binary: Vec<(&String, &Vec<u8>)> = config_map.binary_data.iter().flatten().map(|(k, v)| (k, &v.0)).collect();
    fingerprint((&config_map.data, binary))
}

/// Fingerprint of a Secret's data and of the `sluice.dev/` annotations that schedule it (when a
/// generated secret was issued or is to be rotated): what the controllers that read Secrets react
/// to. Without the annotations, an edit that makes a rotation due would wait for the next resync.
pub fn secret_fingerprint(secret: &Secret) -> u64 {
    let data: Vec<(&String, &Vec<u8>)> = secret.data.iter().flatten().map(|(k, v)| (k, &v.0)).collect();
    let string_data: Vec<(&String, &String)> = secret.string_data.iter().flatten().collect();
    let schedule: Vec<(&String, &String)> =
        secret.metadata.annotations.iter().flatten().filter(|(k, _)| k.starts_with("sluice.dev/")).collect();
    fingerprint((data, string_data, schedule))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn annotated(annotations: &[(&str, &str)]) -> Secret {
        let mut secret = Secret::default();
        let annotations = annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        secret.metadata.annotations = Some(annotations.collect::<BTreeMap<_, _>>());
        secret
    }

    #[test]
    fn a_secrets_schedule_annotations_wake_its_readers_and_other_annotations_do_not() {
        let issued = annotated(&[("sluice.dev/issued-at", "2026-11-01T00:00:00Z")]);
        let backdated = annotated(&[("sluice.dev/issued-at", "2026-10-01T00:00:00Z")]);
        assert_ne!(secret_fingerprint(&issued), secret_fingerprint(&backdated));
        let noted = annotated(&[("sluice.dev/issued-at", "2026-11-01T00:00:00Z"), ("example.com/note", "hello")]);
        assert_eq!(secret_fingerprint(&issued), secret_fingerprint(&noted));
    }
}
