//! The Project controller: compiles each project from its Endpoints, ApiKeys and what they
//! reference, writes the config Secrets and the data plane into the data-plane namespace, reports
//! verdicts for the other controllers, and removes the data plane through a finalizer.
//!
//! One broken Endpoint or ApiKey does not hold the project back: it is left out of the
//! configuration (and says why in its status) while the rest is served. Only problems in the
//! Project itself stop a new configuration; the last good one keeps serving.
//!
//! A reconcile gathers its [`Inputs`] from the caches, makes a [`Plan`] ([`plan()`], pure) and
//! carries it out ([`execute`]), which writes the status in one place.

mod applied;
mod execute;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};
use sluice_crds::compile::{generated_key_secret_name, generated_signing_secret_name};
use sluice_crds::objects::{ConfigMapData, Object, SecretData};

pub use self::plan::{Inputs, Plan, WrittenConfig, plan};
use super::log_result;
use crate::cache::{fingerprint, spec_fingerprint};
use crate::config_secret::{SHARDS_FIELD, primary_name};
use crate::context::{Caches, Context, error_policy, is_conflict, observe};
use crate::data_plane::workload_name;
use crate::error::Result;
use crate::labels::{
    COMPONENT_LABEL, CONFIG_HASH_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGER, PART_OF_LABEL, PROJECT_LABEL,
};
use crate::signing_secret::{self, Next, SigningSecret};
use crate::watch_index::owner_of;
use crate::watches::{SERVICE_NAME_LABEL, Watches, config_map_fingerprint, ready_addresses, secret_fingerprint};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "project";
/// Project reconciles that may run at once: each compiles a whole project (CPU). More at once
/// only made more, smaller configuration writes while keys arrived (docs/operator.md, "Scale").
const CONCURRENCY: u16 = 4;

/// What the Project controller keeps between reconciles.
struct State {
    ctx: Arc<Context>,
    /// When this process last wrote each project's configuration, by slug (write spacing).
    config_written: Mutex<HashMap<String, Instant>>,
    /// What this process last applied of each project's data plane.
    applied: applied::Applied,
}

impl AsRef<Context> for State {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

impl State {
    /// Notes a configuration write (or forgets the project with `None`).
    fn set_config_written(&self, slug: &str, at: Option<Instant>) {
        let mut written = self.config_written.lock().unwrap_or_else(PoisonError::into_inner);
        match at {
            Some(at) => written.insert(slug.to_owned(), at),
            None => written.remove(slug),
        };
    }
}

/// The Project controller: its own changes, everything a configuration is made of, and drift
/// of the data-plane objects it wrote.
pub fn controller(watches: &mut Watches, ctx: Arc<Context>) -> impl Future<Output = ()> + use<> {
    let caches = &ctx.caches;
    let (by_endpoint, by_key, by_provider, by_tier, by_secret, by_slice, by_config_map) = (
        caches.clone(),
        caches.clone(),
        caches.clone(),
        caches.clone(),
        caches.clone(),
        caches.clone(),
        caches.clone(),
    );
    let in_namespace = |caches: &Caches, namespace: Option<String>| {
        namespace.map(|ns| caches.index().projects_in(&ns)).unwrap_or_default()
    };
    let deployment_fingerprint = |d: &Deployment| {
        let status = d.status.as_ref();
        fingerprint((
            d.metadata.generation,
            status.and_then(|s| s.ready_replicas),
            status.and_then(|s| s.available_replicas),
            status.and_then(|s| s.observed_generation),
        ))
    };
    let state =
        Arc::new(State { ctx: ctx.clone(), config_written: Mutex::default(), applied: applied::Applied::default() });
    let contenders = caches.clone();
    Controller::for_shared_stream(watches.projects.subscribe_changes(spec_fingerprint), caches.projects.clone())
        .watches_shared_stream(watches.projects.subscribe_changes(spec_fingerprint), move |p: Arc<Project>| {
            p.namespace().map(|ns| contenders.index().contenders(&ns, &p.spec.slug)).unwrap_or_default()
        })
        .watches_shared_stream(watches.endpoints.subscribe_changes(spec_fingerprint), move |e: Arc<Endpoint>| {
            in_namespace(&by_endpoint, e.namespace())
        })
        .watches_shared_stream(watches.apikeys.subscribe_changes(spec_fingerprint), move |k: Arc<ApiKey>| {
            in_namespace(&by_key, k.namespace())
        })
        .watches_shared_stream(watches.providers.subscribe_changes(spec_fingerprint), move |p: Arc<Provider>| {
            p.namespace().map(|ns| by_provider.index().projects_using_provider(&ns, &p.name_any())).unwrap_or_default()
        })
        // A pool's pods come and go: the Projects whose Providers name the Service.
        .watches_shared_stream(
            watches.endpoint_slices.subscribe_changes(|s: &EndpointSlice| fingerprint(ready_addresses(s))),
            move |slice: Arc<EndpointSlice>| {
                let (Some(namespace), Some(service)) = (slice.namespace(), slice.labels().get(SERVICE_NAME_LABEL))
                else {
                    return Vec::new();
                };
                let pools = by_slice.providers.state_filter(|p| {
                    p.namespace().as_deref() == Some(namespace.as_str())
                        && p.spec.service.as_ref().is_some_and(|s| &s.name == service)
                });
                let index = by_slice.index();
                pools.iter().flat_map(|p| index.projects_using_provider(&namespace, &p.name_any())).collect::<Vec<_>>()
            },
        )
        .watches_shared_stream(watches.tiers.subscribe_changes(spec_fingerprint), move |t: Arc<ServiceTier>| {
            by_tier.index().projects_using_tier(&t.name_any())
        })
        .watches_shared_stream(watches.secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
            by_secret.index().projects_using_secret(&s)
        })
        .watches_shared_stream(
            watches.config_maps.subscribe_changes(config_map_fingerprint),
            move |c: Arc<ConfigMap>| by_config_map.index().projects_using_config_map(&c),
        )
        .watches_shared_stream(
            watches
                .config_secrets
                .subscribe_changes(|s: &Secret| fingerprint(s.annotations().get(CONFIG_HASH_ANNOTATION))),
            |s: Arc<Secret>| owner_of(s.as_ref()),
        )
        .watches_shared_stream(watches.deployments.subscribe_changes(deployment_fingerprint), |d: Arc<Deployment>| {
            owner_of(d.as_ref())
        })
        .watches_shared_stream(watches.services.subscribe(), |o: Arc<Service>| owner_of(o.as_ref()))
        .watches_shared_stream(watches.service_accounts.subscribe(), |o: Arc<ServiceAccount>| owner_of(o.as_ref()))
        .watches_shared_stream(watches.roles.subscribe(), |o: Arc<Role>| owner_of(o.as_ref()))
        .watches_shared_stream(watches.role_bindings.subscribe(), |o: Arc<RoleBinding>| owner_of(o.as_ref()))
        .watches_shared_stream(watches.ingresses.subscribe(), |o: Arc<Ingress>| owner_of(o.as_ref()))
        // Not on the pods' data writes: only when the operator's part (metadata) drifted.
        .watches_shared_stream(
            watches.usage_config_maps.subscribe_changes(|c: &ConfigMap| fingerprint((c.labels(), c.annotations()))),
            |o: Arc<ConfigMap>| owner_of(o.as_ref()),
        )
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, state)
        .for_each(log_result)
}

/// Reconciles one Project: gather, plan, execute.
async fn reconcile(project: Arc<Project>, state: Arc<State>) -> Result<Action> {
    observe(CONTROLLER, project.as_ref(), &state.ctx, async {
        // The signing secret first: the compile below reads it.
        let signing_wake = ensure_signing_secret(&project, &state.ctx).await?;
        // Gathering, compiling and serializing a project with tens of thousands of keys takes
        // CPU for a while: off the async workers, so other reconciles and watches keep going.
        let mut plan = {
            let (project, state) = (project.clone(), state.clone());
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let inputs = inputs(project, &state, Timestamp::now());
                let metrics = &state.ctx.metrics;
                metrics.project_phase("gather", started.elapsed());
                let plan = plan(&inputs, &state.ctx.settings, || written_config(&inputs.project.spec.slug, &state));
                if let Ok(plan) = &plan {
                    metrics.project_phase("compile", plan.timings.compile);
                    metrics.project_phase("serialize", plan.timings.serialize);
                    if plan.config_deferred.is_some() {
                        metrics.config_writes_deferred.inc();
                    }
                }
                plan
            })
            .await??
        };
        if let Some(wake) = signing_wake {
            let until = Duration::try_from(wake.duration_since(Timestamp::now())).unwrap_or_default();
            let until = until + Duration::from_millis(50);
            plan.requeue = Some(plan.requeue.map_or(until, |r| r.min(until)));
        }
        execute::execute(plan, &project, &state).await
    })
    .await
}

/// Generates or rotates the Project's signing secret when it signs with one the operator
/// makes (`spec.signing` without `secretName`); returns when to look again. A Secret of that
/// name that another object owns is left alone (and used as it is).
async fn ensure_signing_secret(project: &Project, ctx: &Context) -> Result<Option<Timestamp>> {
    let Some(spec) = project.spec.signing.as_ref().filter(|s| s.secret_name.is_none()) else { return Ok(None) };
    if project.meta().deletion_timestamp.is_some() {
        return Ok(None);
    }
    let namespace = project.namespace().unwrap_or_default();
    let name = generated_signing_secret_name(&project.name_any());
    let cached = ctx.caches.secret(&namespace, &name);
    if let Some(secret) = cached.as_deref().filter(|s| !owned_by(s, project)) {
        tracing::warn!(project = %ObjectRef::from_obj(project), secret = %secret.name_any(),
            "the signing Secret exists and does not belong to this Project: using it as it is, never rotating it");
        return Ok(None);
    }
    let current = cached.as_deref().and_then(|s| {
        SigningSecret::parse(&s.data.clone().unwrap_or_default(), s.annotations(), s.creation_timestamp().map(|t| t.0))
    });
    let (rotation, grace) = signing_secret::schedule(spec);
    let now = Timestamp::now();
    let next = signing_secret::next(current.as_ref(), rotation, grace, now, &mut rand::rng());
    match next {
        Next::Keep(wake) => Ok(wake),
        Next::Write(next, wake) => {
            let what = match &current {
                None => "generated",
                Some(c) if c.secret != next.secret => "rotated",
                Some(_) => "previous secret dropped",
            };
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let mut labels = cached.as_ref().and_then(|s| s.metadata.labels.clone()).unwrap_or_default();
            labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
            labels.insert(PART_OF_LABEL.to_owned(), "sluice".to_owned());
            labels.insert(COMPONENT_LABEL.to_owned(), "signing-secret".to_owned());
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    annotations: Some(next.annotations()),
                    owner_references: Some(project.controller_owner_ref(&()).into_iter().collect()),
                    resource_version: cached.as_ref().and_then(|s| s.resource_version()),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(next.data()),
                ..Secret::default()
            };
            let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
            let written = match &cached {
                None => api.create(&params, &secret).await.map(drop),
                Some(_) => api.replace(&name, &params, &secret).await.map(drop),
            };
            match written {
                Ok(()) => {
                    tracing::info!(project = %ObjectRef::from_obj(project), secret = %name, what, "signing secret written");
                    if what == "rotated" {
                        let until = next.previous.as_ref().map_or_else(|| "now".to_owned(), |p| p.1.to_string());
                        let note = format!("Signing secret {name} rotated; the previous one signs until {until}");
                        ctx.event(project, EventType::Normal, "SigningSecretRotated", note).await;
                    }
                    Ok(wake)
                }
                // The cache was behind the apiserver: the watch brings the Secret and another pass.
                Err(error) if is_conflict(&error) => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
    }
}

fn owned_by(secret: &Secret, project: &Project) -> bool {
    let uid = project.uid();
    secret.owner_references().iter().any(|o| o.kind == "Project" && Some(&o.uid) == uid.as_ref())
}

/// What the caches hold for `project`.
fn inputs(project: Arc<Project>, state: &State, now: Timestamp) -> Inputs {
    let ctx = state.ctx.as_ref();
    let caches = &ctx.caches;
    let namespace = project.namespace().unwrap_or_default();
    let slug = project.spec.slug.clone();
    let objects =
        if project.meta().deletion_timestamp.is_some() { Vec::new() } else { gather(&project, &namespace, ctx) };
    let (neighbours, slug_claims) = {
        let index = caches.index();
        let neighbours = index.claims_in(&namespace).into_iter().cloned().collect();
        (neighbours, index.serving_claims_of_slug(&slug).into_iter().cloned().collect())
    };

    let deployment =
        caches.deployments.get(&ObjectRef::new(&workload_name(&slug)).within(&ctx.settings.dataplane_namespace));
    let mut pool_addresses = BTreeMap::new();
    for object in &objects {
        if let Object::Provider(provider) = object
            && let Some(service) = &provider.spec.service
        {
            let namespace = provider.namespace().unwrap_or_default();
            let addresses = caches.pool_addresses(&namespace, &service.name);
            pool_addresses.insert((namespace, service.name.clone()), addresses);
        }
    }
    let status = deployment.as_ref().and_then(|d| d.status.as_ref());
    let ready_replicas = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let available_replicas = status.and_then(|s| s.available_replicas).unwrap_or(0);
    let gateway_created = deployment.as_ref().and_then(|d| d.metadata.creation_timestamp.as_ref()).map(|t| t.0);
    Inputs {
        previous: ctx.reports.get(&namespace),
        gateway_created,
        project,
        now,
        objects,
        neighbours,
        slug_claims,
        ready_replicas,
        available_replicas,
        pool_addresses,
    }
}

/// What the config Secrets of project `slug` hold, as the cache has them, and how long ago this
/// process last wrote them.
fn written_config(slug: &str, state: &State) -> WrittenConfig {
    let config_secrets = state
        .ctx
        .caches
        .config_secrets
        .state_filter(|s| s.labels().get(PROJECT_LABEL).map(String::as_str) == Some(slug));
    let hashes: BTreeMap<String, String> = config_secrets
        .iter()
        .filter_map(|s| Some((s.name_any(), s.annotations().get(CONFIG_HASH_ANNOTATION)?.clone())))
        .collect();
    let primary = primary_name(slug);
    let shards = config_secrets
        .iter()
        .find(|s| s.name_any() == primary)
        .and_then(|s| s.data.as_ref()?.get(SHARDS_FIELD).cloned())
        .and_then(|v| String::from_utf8(v.0).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let since_last_write =
        state.config_written.lock().unwrap_or_else(PoisonError::into_inner).get(slug).map(Instant::elapsed);
    WrittenConfig { hashes, shards, since_last_write }
}

/// Everything the compiler needs for the Project in `namespace`, from the caches.
fn gather(project: &Project, namespace: &str, ctx: &Context) -> Vec<Object> {
    let caches = &ctx.caches;
    let shared = ctx.settings.shared_namespace.as_str();
    let in_namespace = |ns: Option<String>| ns.as_deref() == Some(namespace);
    let endpoints = caches.endpoints.state_filter(|e| in_namespace(e.namespace()));
    let apikeys = caches.apikeys.state_filter(|k| in_namespace(k.namespace()));
    let providers = caches
        .providers
        .state_filter(|p| matches!(p.namespace().as_deref(), Some(ns) if ns == namespace || ns == shared));

    // Each once, however many objects read it.
    let mut secrets: BTreeSet<(String, String)> = BTreeSet::new();
    let mut config_maps: BTreeSet<(String, String)> = BTreeSet::new();
    for provider in &providers {
        let ns = provider.namespace().unwrap_or_default();
        secrets.extend(provider.spec.secret_names().into_iter().map(|name| (ns.clone(), name.to_owned())));
        config_maps.extend(provider.spec.config_map_names().into_iter().map(|name| (ns.clone(), name.to_owned())));
    }
    for apikey in &apikeys {
        let name = match &apikey.spec.secret_ref {
            Some(reference) => reference.name.clone(),
            None => generated_key_secret_name(&apikey.name_any()),
        };
        secrets.insert((namespace.to_owned(), name));
    }
    if let Some(signing) = &project.spec.signing {
        let name = signing.secret_name.clone().unwrap_or_else(|| generated_signing_secret_name(&project.name_any()));
        secrets.insert((namespace.to_owned(), name));
    }
    if let Some(name) = crate::watch_index::jwks_secret_name(project) {
        secrets.insert((namespace.to_owned(), name.to_owned()));
    }

    let mut objects = Vec::with_capacity(1 + endpoints.len() + apikeys.len() * 2 + providers.len());
    objects.push(Object::Project(project.clone()));
    objects.extend(endpoints.iter().map(|e| Object::Endpoint(e.as_ref().clone())));
    objects.extend(apikeys.iter().map(|k| Object::ApiKey(k.as_ref().clone())));
    objects.extend(providers.iter().map(|p| Object::Provider(p.as_ref().clone())));
    objects.extend(caches.tiers.state().iter().map(|t| Object::ServiceTier(t.as_ref().clone())));
    for (ns, name) in &secrets {
        if let Some(secret) = caches.secret(ns, name) {
            objects.push(Object::Secret(SecretData::from(secret.as_ref())));
        }
    }
    for (ns, name) in &config_maps {
        if let Some(config_map) = caches.config_map(ns, name) {
            objects.push(Object::ConfigMap(ConfigMapData::from(config_map.as_ref())));
        }
    }
    objects
}
