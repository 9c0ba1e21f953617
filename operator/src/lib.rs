//! sluice-operator: Kubernetes controllers that turn Sluice's custom resources into live
//! per-tenant data planes.
//!
//! One controller per kind: [`project`] compiles each Project (with `sluice-crds`) and writes its
//! config Secrets and gateway workload into the data-plane namespace; [`apikey`] generates and
//! rotates keys and reports the spend the gateways report ([`usage`]); [`endpoint`], [`provider`]
//! and [`service_tier`] report status. They share one watch per kind ([`cache`]) and the compile
//! verdicts of each project ([`reports`]). [`run`] starts them all, behind a leader Lease when
//! several replicas run.

pub mod apikey;
pub mod cache;
pub mod conditions;
pub mod config_secret;
pub mod context;
pub mod data_plane;
pub mod endpoint;
pub mod error;
pub mod key_material;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod project;
pub mod provider;
pub mod reports;
pub mod service_tier;
pub mod settings;
pub mod usage;

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};
use tokio::task::JoinSet;

use crate::cache::{Informer, fingerprint, spec_fingerprint, wait_synced};
use crate::context::{Caches, Context, error_policy};
use crate::labels::{
    CONFIG_HASH_ANNOTATION, PROJECT_LABEL, ROTATE_AT_ANNOTATION, gateway_pod_selector, managed_selector, usage_selector,
};
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::reports::Reports;

pub use crate::error::{Error, Result};
pub use crate::settings::Settings;

/// Reconciles of one kind that may run at once. Project reconciles compile whole projects (CPU),
/// the others mostly wait for the apiserver.
const PROJECT_CONCURRENCY: u16 = 4;
const APIKEY_CONCURRENCY: u16 = 32;
const OTHER_CONCURRENCY: u16 = 8;

/// Runs the operator until `shutdown` completes (then gives up the leader Lease) or a fatal error.
pub async fn run(client: Client, settings: Settings, shutdown: impl Future<Output = ()>) -> Result<()> {
    if let Some(parent) = &settings.route.gateway_parent
        && settings.route.kind != settings::RouteKind::HttpRoute
    {
        tracing::warn!(gateway_parent = ?parent, "a gateway parent is only used with route kind httproute");
    }
    if settings.route.kind == settings::RouteKind::HttpRoute && settings.route.gateway_parent.is_none() {
        return Err(Error::Settings("route kind httproute needs a gateway parent (NAMESPACE/NAME)".into()));
    }
    let metrics = Arc::new(Metrics::new());
    let mut background = JoinSet::new();
    if let Some(address) = settings.metrics_listen {
        background.spawn(metrics::serve(address, metrics.clone()));
    }
    let elector =
        settings.leader_election.as_ref().map(|le| LeaderElector::new(client.clone(), le, &settings.identity));
    let work = async {
        if let Some(elector) = &elector {
            // A standby replica is ready: it waits for its turn.
            metrics.set_ready(true);
            elector.acquire().await;
        }
        metrics.leader.set(1);
        let result = match &elector {
            Some(elector) => tokio::select! {
                result = run_controllers(client.clone(), settings.clone(), metrics.clone()) => result,
                result = elector.hold() => result,
            },
            None => run_controllers(client.clone(), settings.clone(), metrics.clone()).await,
        };
        metrics.leader.set(0);
        result
    };
    let server_failed = async {
        while let Some(finished) = background.join_next().await {
            if let Ok(Err(err)) = finished {
                return Err(err);
            }
        }
        std::future::pending().await
    };
    let result = tokio::select! {
        result = work => result,
        result = server_failed => result,
        () = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    if let Some(elector) = &elector {
        elector.release().await;
    }
    result
}

fn secret_fingerprint(secret: &Secret) -> u64 {
    let data: Vec<(&String, &Vec<u8>)> = secret.data.iter().flatten().map(|(k, v)| (k, &v.0)).collect();
    let string_data: Vec<(&String, &String)> = secret.string_data.iter().flatten().collect();
    fingerprint((data, string_data))
}

async fn log_result<K, E>(result: Result<(ObjectRef<K>, controller::Action), controller::Error<Error, E>>)
where
    K: Resource,
    E: std::error::Error,
{
    match result {
        Ok((object, _)) => tracing::debug!(%object, "reconciled"),
        Err(controller::Error::ObjectNotFound(object)) => tracing::debug!(%object, "gone before its reconcile"),
        // The error policy already logged the reconcile's own errors.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(err) => tracing::warn!(error = %err, "controller"),
    }
}

/// Objects in `namespace` of a cached kind, as references.
fn refs_in<K>(store: &kube::runtime::reflector::Store<K>, namespace: Option<String>) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    ObjectRef<K>: Hash,
{
    store.state_filter(|o| o.namespace() == namespace).iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// Starts one watch per kind, waits until each has listed, then runs the five controllers.
async fn run_controllers(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Result<()> {
    let tenants = match &settings.namespaces {
        settings::WatchedNamespaces::All => None,
        settings::WatchedNamespaces::Only(names) => Some(names.clone()),
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

    let mut projects = Informer::<Project>::namespaced(&client, tenants.as_deref(), plain.clone());
    let mut endpoints = Informer::<Endpoint>::namespaced(&client, tenants.as_deref(), plain.clone());
    let mut apikeys = Informer::<ApiKey>::namespaced(&client, tenants.as_deref(), plain.clone());
    let mut providers = Informer::<Provider>::namespaced(&client, with_shared.as_deref(), plain.clone());
    let mut tiers = Informer::<ServiceTier>::cluster(&client, plain.clone());
    let mut secrets = Informer::<Secret>::namespaced(&client, with_shared.as_deref(), tenant_secrets);
    let mut config_secrets = Informer::<Secret>::namespaced(&client, Some(&dataplane), managed.clone());
    let mut deployments = Informer::<Deployment>::namespaced(&client, Some(&dataplane), managed.clone());
    // Watched only to repair drift (someone deleted or edited them).
    let mut services = Informer::<Service>::namespaced(&client, Some(&dataplane), managed.clone());
    let mut service_accounts = Informer::<ServiceAccount>::namespaced(&client, Some(&dataplane), managed.clone());
    let mut roles = Informer::<Role>::namespaced(&client, Some(&dataplane), managed.clone());
    let mut role_bindings = Informer::<RoleBinding>::namespaced(&client, Some(&dataplane), managed.clone());
    let mut ingresses = Informer::<Ingress>::namespaced(&client, Some(&dataplane), managed);
    // Written by the gateway pods every few seconds: read for usage, and repaired on drift.
    let mut usage_config_maps = Informer::<ConfigMap>::namespaced(
        &client,
        Some(&dataplane),
        watcher::Config::default().labels(&usage_selector()),
    );
    // Which pods' usage reports are still live.
    let gateway_pods = Informer::<Pod>::namespaced(
        &client,
        Some(&dataplane),
        watcher::Config::default().labels(&gateway_pod_selector()),
    );

    let caches = Caches {
        projects: projects.store(),
        endpoints: endpoints.store(),
        apikeys: apikeys.store(),
        providers: providers.store(),
        tiers: tiers.store(),
        secrets: secrets.store(),
        config_secrets: config_secrets.store(),
        deployments: deployments.store(),
        usage_config_maps: usage_config_maps.store(),
        gateway_pods: gateway_pods.store(),
    };
    let (reports, nudges) = Reports::new();
    let reporter = Reporter { controller: labels::MANAGER.to_owned(), instance: Some(settings.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client, settings, caches.clone(), reports, recorder, metrics.clone()));

    // The Project controller: its own changes, and everything a configuration is made of.
    let shared_ns = ctx.settings.shared_namespace.clone();
    let project_controller = {
        let (c1, c2, c3, c4) = (caches.clone(), caches.clone(), caches.clone(), caches.clone());
        let ctx_secrets = ctx.clone();
        Controller::for_shared_stream(projects.subscribe_changes(spec_fingerprint), caches.projects.clone())
            .watches_shared_stream(endpoints.subscribe_changes(spec_fingerprint), move |e: Arc<Endpoint>| {
                project::projects_in(&c1, e.namespace().as_deref())
            })
            .watches_shared_stream(apikeys.subscribe_changes(spec_fingerprint), move |k: Arc<ApiKey>| {
                project::projects_in(&c2, k.namespace().as_deref())
            })
            .watches_shared_stream(providers.subscribe_changes(spec_fingerprint), move |p: Arc<Provider>| {
                project::projects_using_provider(&c3, &shared_ns, &p)
            })
            .watches_shared_stream(tiers.subscribe_changes(spec_fingerprint), move |t: Arc<ServiceTier>| {
                project::projects_using_tier(&c4, &t.name_any())
            })
            .watches_shared_stream(secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
                project::projects_using_secret(&ctx_secrets, &s)
            })
            .watches_shared_stream(
                config_secrets.subscribe_changes(|s: &Secret| fingerprint(s.annotations().get(CONFIG_HASH_ANNOTATION))),
                |s: Arc<Secret>| project::owner_of(s.as_ref()),
            )
            .watches_shared_stream(
                deployments.subscribe_changes(|d: &Deployment| {
                    let status = d.status.as_ref();
                    fingerprint((
                        d.metadata.generation,
                        status.and_then(|s| s.ready_replicas),
                        status.and_then(|s| s.observed_generation),
                    ))
                }),
                |d: Arc<Deployment>| project::owner_of(d.as_ref()),
            )
            .watches_shared_stream(services.subscribe(), |o: Arc<Service>| project::owner_of(o.as_ref()))
            .watches_shared_stream(service_accounts.subscribe(), |o: Arc<ServiceAccount>| project::owner_of(o.as_ref()))
            .watches_shared_stream(roles.subscribe(), |o: Arc<Role>| project::owner_of(o.as_ref()))
            .watches_shared_stream(role_bindings.subscribe(), |o: Arc<RoleBinding>| project::owner_of(o.as_ref()))
            .watches_shared_stream(ingresses.subscribe(), |o: Arc<Ingress>| project::owner_of(o.as_ref()))
            // Not on the pods' data writes: only when the operator's part (metadata) drifted.
            .watches_shared_stream(
                usage_config_maps.subscribe_changes(|c: &ConfigMap| fingerprint((c.labels(), c.annotations()))),
                |o: Arc<ConfigMap>| project::owner_of(o.as_ref()),
            )
            .with_config(controller::Config::default().concurrency(PROJECT_CONCURRENCY))
            .run(project::reconcile, error_policy, ctx.clone())
            .for_each(log_result)
    };

    let (usage_nudge, usage_nudges) = futures::channel::mpsc::unbounded();
    let usage_follower = usage::follow(ctx.clone(), usage_config_maps.subscribe(), usage_nudge);

    let apikey_controller = {
        let (ctx1, ctx2) = (ctx.clone(), ctx.clone());
        let rotation_fingerprint =
            |k: &ApiKey| fingerprint((spec_fingerprint(k), k.annotations().get(ROTATE_AT_ANNOTATION)));
        Controller::for_shared_stream(apikeys.subscribe_changes(rotation_fingerprint), caches.apikeys.clone())
            .watches_shared_stream(secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
                apikey::keys_of_secret(&ctx1, &s)
            })
            .watches_shared_stream(projects.subscribe_changes(spec_fingerprint), move |p: Arc<Project>| {
                apikey::waiting_for_project(&ctx2, &p)
            })
            .reconcile_on(nudges.apikeys)
            .reconcile_on(usage_nudges)
            .with_config(controller::Config::default().concurrency(APIKEY_CONCURRENCY))
            .run(apikey::reconcile, error_policy, ctx.clone())
            .for_each(log_result)
    };

    let endpoint_controller = {
        let store = caches.endpoints.clone();
        Controller::for_shared_stream(endpoints.subscribe_changes(spec_fingerprint), caches.endpoints.clone())
            .watches_shared_stream(projects.subscribe_changes(spec_fingerprint), move |p: Arc<Project>| {
                refs_in(&store, p.namespace())
            })
            .reconcile_on(nudges.endpoints)
            .with_config(controller::Config::default().concurrency(OTHER_CONCURRENCY))
            .run(endpoint::reconcile, error_policy, ctx.clone())
            .for_each(log_result)
    };

    let provider_controller = {
        let ctx1 = ctx.clone();
        Controller::for_shared_stream(providers.subscribe_changes(spec_fingerprint), caches.providers.clone())
            .watches_shared_stream(secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
                provider::providers_of_secret(&ctx1, &s)
            })
            .with_config(controller::Config::default().concurrency(OTHER_CONCURRENCY))
            .run(provider::reconcile, error_policy, ctx.clone())
            .for_each(log_result)
    };

    let tier_controller =
        Controller::for_shared_stream(tiers.subscribe_changes(spec_fingerprint), caches.tiers.clone())
            .reconcile_on(nudges.tiers)
            .with_config(controller::Config::default().concurrency(OTHER_CONCURRENCY))
            .run(service_tier::reconcile, error_policy, ctx.clone())
            .for_each(log_result);

    let synced = vec![
        projects.synced(),
        endpoints.synced(),
        apikeys.synced(),
        providers.synced(),
        tiers.synced(),
        secrets.synced(),
        config_secrets.synced(),
        deployments.synced(),
        usage_config_maps.synced(),
        gateway_pods.synced(),
    ];
    let mut watches = JoinSet::new();
    watches.spawn(projects.run());
    watches.spawn(endpoints.run());
    watches.spawn(apikeys.run());
    watches.spawn(providers.run());
    watches.spawn(tiers.run());
    watches.spawn(secrets.run());
    watches.spawn(config_secrets.run());
    watches.spawn(deployments.run());
    watches.spawn(services.run());
    watches.spawn(service_accounts.run());
    watches.spawn(roles.run());
    watches.spawn(role_bindings.run());
    watches.spawn(ingresses.run());
    watches.spawn(usage_config_maps.run());
    watches.spawn(gateway_pods.run());
    wait_synced(synced).await;
    metrics.set_ready(true);
    tracing::info!("caches synced; controllers start");

    tokio::join!(
        project_controller,
        apikey_controller,
        endpoint_controller,
        provider_controller,
        tier_controller,
        usage_follower
    );
    Ok(())
}
