//! The Project controller: compiles each project from its Endpoints, ApiKeys and what they
//! reference, writes the config Secrets and the data plane into the data-plane namespace, reports
//! verdicts for the other controllers, and removes the data plane through a finalizer.
//!
//! One broken Endpoint or ApiKey does not hold the project back: it is left out of the
//! configuration (and says why in its status) while the rest is served. Only problems in the
//! Project itself stop a new configuration; the last good one keeps serving.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use sluice_crds::api::{ApiKey, Endpoint, Project, ProjectStatus, Provider, ProviderRef};
use sluice_crds::compile::{CompileErrors, CompileOptions, GeneratedKeys, compile_project, generated_key_secret_name};
use sluice_crds::config::GatewayConfig;
use sluice_crds::objects::{Object, ObjectRef as SourceRef, SecretData};

use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::config_secret::{self, ConfigSecrets, ConfigTarget, SHARDS_FIELD, primary_name, shard_name};
use crate::context::{Caches, Context, apply, apply_status, is_not_found, observe};
use crate::data_plane::{self, DataPlaneInput, Route, http_route_resource, workload_name};
use crate::error::{Error, Result};
use crate::labels::{CONFIG_HASH_ANNOTATION, FIELD_MANAGER, OWNER_ANNOTATION, PROJECT_FINALIZER, PROJECT_LABEL};
use crate::reports::{ObjectVerdict, ProjectReport};
use crate::settings::RouteKind;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "project";
/// Reconcile at least this often, to repair drift that no watch reported.
const RESYNC: Duration = Duration::from_secs(300);
/// Configuration writes of one project are spaced by this much per MiB of configuration, so a
/// large project whose keys change all the time does not flood etcd with multi-MiB revisions.
const SPACING_PER_MIB: Duration = Duration::from_secs(1);
/// Upper bound of that spacing.
const MAX_SPACING: Duration = Duration::from_secs(20);
/// Rounds of leaving out broken objects before giving up (Provider, then Endpoint, then ApiKey).
const MAX_ROUNDS: usize = 6;

/// Picks one kind's verdicts out of a published report.
type Verdicts = fn(&ProjectReport) -> &std::collections::HashMap<String, ObjectVerdict>;

/// Reconciles one Project.
pub async fn reconcile(project: Arc<Project>, ctx: Arc<Context>) -> Result<Action> {
    observe(CONTROLLER, project, ctx, |project, ctx| async move {
        let namespace = project
            .namespace()
            .ok_or_else(|| Error::Incomplete(format!("Project {}", project.name_any()), "namespace"))?;
        let api: Api<Project> = Api::namespaced(ctx.client.clone(), &namespace);
        let has_finalizer = project.finalizers().iter().any(|f| f == PROJECT_FINALIZER);
        if project.meta().deletion_timestamp.is_some() {
            if has_finalizer {
                cleanup(&project, &namespace, &ctx).await?;
                set_finalizer(&api, &project, false).await?;
            }
            return Ok(Action::await_change());
        }
        if !has_finalizer {
            set_finalizer(&api, &project, true).await?;
        }
        apply_project(&project, &namespace, &api, &ctx).await
    })
    .await
}

/// Adds or removes the finalizer by server-side apply: finalizers are a set, so this touches
/// only the operator's own entry.
async fn set_finalizer(api: &Api<Project>, project: &Project, present: bool) -> Result<()> {
    let mut metadata = serde_json::json!({"name": project.name_any()});
    if present {
        metadata["finalizers"] = serde_json::json!([PROJECT_FINALIZER]);
    }
    let patch = serde_json::json!({"apiVersion": Project::api_version(&()), "kind": "Project", "metadata": metadata});
    match api.patch(&project.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        Err(err) if !present && is_not_found(&err) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// What a partial compile gives: the configuration of everything that compiles, and what was
/// wrong with the rest.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// `None` when the Project itself has problems.
    pub config: Option<GatewayConfig>,
    /// Problems by object, each `field: message`.
    pub problems: BTreeMap<SourceRef, Vec<String>>,
    /// Endpoints and ApiKeys left out of the configuration.
    pub left_out: BTreeSet<SourceRef>,
}

/// Compiles `project`, leaving out Endpoints and ApiKeys with problems (and Endpoints whose
/// Provider has problems) until the rest compiles.
pub fn compile_partially(project: &Project, mut objects: Vec<Object>, options: &CompileOptions) -> Compiled {
    let namespace = project.namespace().unwrap_or_default();
    let mut compiled = Compiled::default();
    for _ in 0..MAX_ROUNDS {
        let errors = match compile_project(project, &objects, options) {
            Ok(config) => {
                compiled.config = Some(config);
                break;
            }
            Err(CompileErrors(errors)) => errors,
        };
        let mut drop = BTreeSet::new();
        let mut broken_providers = BTreeSet::new();
        let mut fatal = false;
        for error in errors {
            compiled
                .problems
                .entry(error.object.clone())
                .or_default()
                .push(format!("{}: {}", error.field, error.message));
            match error.object.kind {
                "Endpoint" | "ApiKey" => {
                    drop.insert(error.object);
                }
                "Provider" => {
                    broken_providers.insert(error.object);
                }
                _ => fatal = true,
            }
        }
        if !broken_providers.is_empty() {
            for (endpoint, field, provider) in provider_uses(&objects, &namespace, &options.shared_namespace) {
                if broken_providers.contains(&provider) {
                    compiled
                        .problems
                        .entry(endpoint.clone())
                        .or_default()
                        .push(format!("{field}: {provider} is not usable (see its status)"));
                    drop.insert(endpoint);
                }
            }
        }
        if fatal || drop.is_empty() {
            break;
        }
        objects.retain(|object| !drop.contains(&object.object_ref()));
        compiled.left_out.extend(drop);
    }
    for problems in compiled.problems.values_mut() {
        problems.sort();
        problems.dedup();
    }
    compiled
}

/// `(Endpoint, field, Provider)` for every backend in `namespace` whose Provider exists, resolved
/// as the compiler does (explicit namespace, else own then shared).
fn provider_uses(objects: &[Object], namespace: &str, shared: &str) -> Vec<(SourceRef, String, SourceRef)> {
    let providers: HashSet<(String, String)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Provider(p) => Some((p.namespace().unwrap_or_default(), p.name_any())),
            _ => None,
        })
        .collect();
    let resolve = |reference: &ProviderRef| {
        let candidates = match &reference.namespace {
            Some(ns) => vec![ns.clone()],
            None => vec![namespace.to_owned(), shared.to_owned()],
        };
        candidates.into_iter().find(|ns| providers.contains(&(ns.clone(), reference.name.clone())))
    };
    let mut uses = Vec::new();
    for object in objects {
        let Object::Endpoint(endpoint) = object else { continue };
        for (m, model) in endpoint.spec.models.iter().enumerate() {
            for (b, backend) in model.backends.iter().enumerate() {
                if let Some(provider_ns) = resolve(&backend.provider_ref) {
                    uses.push((
                        object.object_ref(),
                        format!("spec.models[{m}].backends[{b}].providerRef"),
                        SourceRef {
                            kind: "Provider",
                            namespace: Some(provider_ns),
                            name: backend.provider_ref.name.clone(),
                        },
                    ));
                }
            }
        }
    }
    uses
}

/// Everything the compiler needs for the Project in `namespace`, from the caches.
fn gather(project: &Project, namespace: &str, ctx: &Context) -> (Vec<Object>, Vec<Arc<Endpoint>>, Vec<Arc<ApiKey>>) {
    let caches = &ctx.caches;
    let shared = ctx.settings.shared_namespace.as_str();
    let in_namespace = |ns: Option<String>| ns.as_deref() == Some(namespace);
    let endpoints = caches.endpoints.state_filter(|e| in_namespace(e.namespace()));
    let apikeys = caches.apikeys.state_filter(|k| in_namespace(k.namespace()));
    let providers = caches
        .providers
        .state_filter(|p| matches!(p.namespace().as_deref(), Some(ns) if ns == namespace || ns == shared));

    let mut secrets: BTreeSet<(String, String)> = BTreeSet::new();
    for provider in &providers {
        if let Some(credentials) = &provider.spec.credentials {
            secrets.insert((provider.namespace().unwrap_or_default(), credentials.secret_key_ref.name.clone()));
        }
    }
    for apikey in &apikeys {
        let name = match &apikey.spec.secret_ref {
            Some(reference) => reference.name.clone(),
            None => generated_key_secret_name(&apikey.name_any()),
        };
        secrets.insert((namespace.to_owned(), name));
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
    (objects, endpoints, apikeys)
}

/// Why this Project may not serve: a second Project in its namespace, or a slug another Project
/// had first.
fn conflict(project: &Project, namespace: &str, caches: &Caches) -> Option<String> {
    if let Some(first) = caches.project_in(namespace)
        && first.name_any() != project.name_any()
    {
        return Some(format!(
            "namespace {namespace} already has Project {}; one Project per namespace",
            first.name_any()
        ));
    }
    let key = |p: &Project| (p.creation_timestamp().map(|t| t.0), p.namespace(), p.name_any());
    let mine = key(project);
    caches
        .projects
        .state()
        .into_iter()
        .filter(|other| other.spec.slug == project.spec.slug && other.meta().deletion_timestamp.is_none())
        .filter(|other| (other.namespace(), other.name_any()) != (project.namespace(), project.name_any()))
        .find(|other| key(other) < mine)
        .map(|other| {
            format!(
                "slug {:?} is already served for Project {}/{}",
                project.spec.slug,
                other.namespace().unwrap_or_default(),
                other.name_any()
            )
        })
}

async fn apply_project(project: &Project, namespace: &str, api: &Api<Project>, ctx: &Arc<Context>) -> Result<Action> {
    let now = Timestamp::now();
    let slug = project.spec.slug.as_str();
    let previous = ctx.reports.get(namespace);
    if let Some(reason) = conflict(project, namespace, &ctx.caches) {
        ctx.reports.publish(
            namespace,
            ProjectReport {
                project: project.name_any(),
                slug: slug.to_owned(),
                failure: Some(reason.clone()),
                ..ProjectReport::default()
            },
        );
        let verdicts = [
            Verdict::no(READY, "Conflict", reason.clone()),
            Verdict::no(REFERENCES_RESOLVED, "Conflict", reason),
            Verdict::no(DEGRADED, "NotServing", "this Project is not served"),
        ];
        write_status(api, project, &verdicts, None, None, now).await?;
        return Ok(Action::requeue(RESYNC));
    }

    let options = CompileOptions {
        shared_namespace: ctx.settings.shared_namespace.clone(),
        generated_keys: GeneratedKeys::Operator,
        now: Some(now),
    };
    // Gathering, compiling and serializing a project with tens of thousands of keys takes CPU
    // for a while: off the async workers, so other reconciles and watches keep going.
    let owner = format!("{namespace}/{}", project.name_any());
    let (compiled, endpoints, apikeys, secrets) = {
        let (project, namespace, owner, ctx) = (project.clone(), namespace.to_owned(), owner.clone(), ctx.clone());
        tokio::task::spawn_blocking(move || -> Result<_> {
            let (objects, endpoints, apikeys) = gather(&project, &namespace, &ctx);
            let compiled = compile_partially(&project, objects, &options);
            let target =
                ConfigTarget { slug: &project.spec.slug, namespace: &ctx.settings.dataplane_namespace, owner: &owner };
            let secrets = compiled.config.as_ref().map(|config| config_secret::build(target, config)).transpose()?;
            Ok((compiled, endpoints, apikeys, secrets))
        })
        .await??
    };
    let problem_lines: Vec<String> = compiled
        .problems
        .iter()
        .flat_map(|(object, problems)| problems.iter().map(move |p| format!("{object}: {p}")))
        .collect();
    let verdict_of = |kind: &'static str, name: String, served: bool| {
        let object = SourceRef { kind, namespace: Some(namespace.to_owned()), name: name.clone() };
        (name, ObjectVerdict { served, problems: compiled.problems.get(&object).cloned().unwrap_or_default() })
    };

    // What the last published report said is served: still true while no new configuration is
    // written (the project is broken, or a large configuration's write is deferred).
    let served_before =
        |name: &str, of: Verdicts| previous.as_deref().and_then(|r| of(r).get(name)).is_some_and(|v| v.served);
    let (Some(config), Some(secrets)) = (&compiled.config, secrets) else {
        // The Project itself is broken: keep serving what was served, report the problems.
        let message = conditions::join_problems(&problem_lines);
        let report = ProjectReport {
            project: project.name_any(),
            slug: slug.to_owned(),
            failure: Some(message.clone()),
            endpoints: endpoints
                .iter()
                .map(|e| verdict_of("Endpoint", e.name_any(), served_before(&e.name_any(), |r| &r.endpoints)))
                .collect(),
            keys: apikeys
                .iter()
                .map(|k| verdict_of("ApiKey", k.name_any(), served_before(&k.name_any(), |r| &r.keys)))
                .collect(),
            tiers: previous.as_deref().map(|r| r.tiers.clone()).unwrap_or_default(),
        };
        ctx.reports.publish(namespace, report);
        let verdicts = [
            Verdict::no(READY, "CompileFailed", message.clone()),
            Verdict::no(REFERENCES_RESOLVED, "InvalidReferences", message.clone()),
            Verdict::no(DEGRADED, "NotCompiled", "no new configuration: the last one written keeps serving"),
        ];
        if project.status.as_ref().and_then(|s| conditions_message(&s.conditions, READY)) != Some(message.as_str()) {
            ctx.event(project, EventType::Warning, "CompileFailed", message).await;
        }
        let hash = project.status.as_ref().and_then(|s| s.config_hash.clone());
        write_status(api, project, &verdicts, hash, None, now).await?;
        return Ok(Action::requeue(RESYNC));
    };

    let written = write_config(project, &owner, config, secrets, ctx).await?;
    apply_data_plane(project, &owner, written.shards, ctx).await?;

    // A deferred write leaves the last written configuration serving: objects and counts are
    // reported from it, not from the one that waits.
    let deferred = written.deferred.is_some();
    let served_endpoints: HashSet<&str> = config.endpoints.values().map(|e| e.id.as_str()).collect();
    let served_keys: HashSet<&str> = config.keys.iter().map(|k| k.id.as_str()).collect();
    let served_now = |kind: &'static str, name: String, written: &HashSet<&str>, reported: Verdicts| {
        let served = if deferred {
            served_before(&name, reported)
        } else {
            written.contains(format!("{namespace}/{name}").as_str())
        };
        verdict_of(kind, name, served)
    };
    ctx.reports.publish(
        namespace,
        ProjectReport {
            project: project.name_any(),
            slug: slug.to_owned(),
            failure: None,
            endpoints: endpoints
                .iter()
                .map(|e| served_now("Endpoint", e.name_any(), &served_endpoints, |r| &r.endpoints))
                .collect(),
            keys: apikeys.iter().map(|k| served_now("ApiKey", k.name_any(), &served_keys, |r| &r.keys)).collect(),
            tiers: config.tiers.keys().cloned().collect(),
        },
    );

    let deployment =
        ctx.caches.deployments.get(&ObjectRef::new(&workload_name(slug)).within(&ctx.settings.dataplane_namespace));
    let ready_replicas = deployment.and_then(|d| d.status.as_ref().and_then(|s| s.ready_replicas)).unwrap_or(0);
    let short_hash: String = written.hash.chars().take(19).collect();
    let (served_endpoints, served_keys) = serving_counts(config, deferred, project.status.as_ref());
    let mut serving = format!(
        "configuration {short_hash} serves {served_endpoints} endpoint(s) and {served_keys} key(s); {ready_replicas} of {} gateway replica(s) ready",
        project.spec.data_plane.replicas
    );
    if let Some(wait) = written.deferred {
        serving.push_str(&format!(
            "; a newer configuration is written in {}s (large configurations are spaced)",
            wait.as_secs() + 1
        ));
    }
    let references = if problem_lines.is_empty() {
        Verdict::yes(REFERENCES_RESOLVED, "Resolved", "every reference resolves")
    } else {
        Verdict::no(REFERENCES_RESOLVED, "InvalidReferences", conditions::join_problems(&problem_lines))
    };
    let degraded = if compiled.left_out.is_empty() {
        Verdict::no(DEGRADED, "AsDeclared", "every valid Endpoint and ApiKey is in the configuration")
    } else {
        let left_out: Vec<String> = compiled.left_out.iter().map(ToString::to_string).collect();
        Verdict::yes(
            DEGRADED,
            "ObjectsLeftOut",
            format!("left out of the configuration (see their status): {}", conditions::join_problems(&left_out)),
        )
    };
    let old_degraded =
        project.status.as_ref().and_then(|s| conditions_message(&s.conditions, REFERENCES_RESOLVED)).map(str::to_owned);
    if !problem_lines.is_empty() && old_degraded.as_deref() != Some(references.message.as_str()) {
        ctx.event(project, EventType::Warning, "InvalidReferences", references.message.clone()).await;
    }
    let verdicts = [Verdict::yes(READY, "Serving", serving), references, degraded];
    write_status(
        api,
        project,
        &verdicts,
        Some(written.hash.clone()),
        Some((served_endpoints, served_keys, ready_replicas)),
        now,
    )
    .await?;

    let mut requeue = RESYNC;
    if let Some(wait) = written.deferred {
        requeue = requeue.min(wait);
    }
    if let Some(expiry) = next_expiry(config, now) {
        let until = Duration::try_from(expiry.duration_since(now)).unwrap_or_default();
        requeue = requeue.min(until + Duration::from_millis(50));
    }
    Ok(Action::requeue(requeue))
}

/// Endpoints and keys the data plane serves: those of `config` once written, the counts last
/// reported while its write is `deferred`.
fn serving_counts(config: &GatewayConfig, deferred: bool, previous: Option<&ProjectStatus>) -> (usize, usize) {
    if deferred {
        let count = |n: Option<u32>| n.map_or(0, |n| n as usize);
        previous.map_or((0, 0), |s| (count(s.endpoints), count(s.keys)))
    } else {
        (config.endpoints.len(), config.keys.len())
    }
}

fn conditions_message<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.as_str())
}

/// The next instant a key or a rotated-out key hash of `config` expires.
pub fn next_expiry(config: &GatewayConfig, now: Timestamp) -> Option<Timestamp> {
    config
        .keys
        .iter()
        .flat_map(|key| key.expires_at.into_iter().chain(key.hashes.iter().filter_map(|h| h.expires_at)))
        .filter(|at| *at > now)
        .min()
}

async fn write_status(
    api: &Api<Project>,
    project: &Project,
    verdicts: &[Verdict],
    config_hash: Option<String>,
    counts: Option<(usize, usize, i32)>,
    now: Timestamp,
) -> Result<()> {
    let previous = project.status.clone().unwrap_or_default();
    let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let status = ProjectStatus {
        conditions: conditions::conditions(verdicts, &previous.conditions, project.metadata.generation, now),
        observed_generation: project.metadata.generation,
        endpoints: counts.map(|c| to_u32(c.0)).or(previous.endpoints),
        keys: counts.map(|c| to_u32(c.1)).or(previous.keys),
        config_hash,
        ready_replicas: counts.map(|c| c.2).or(previous.ready_replicas),
    };
    if project.status.as_ref() != Some(&status) {
        apply_status(api, project, &status).await?;
    }
    Ok(())
}

/// What is written for a project now.
struct Written {
    /// Hash of the configuration the Secrets hold.
    hash: String,
    /// Their shard count.
    shards: usize,
    /// A newer configuration waits this long (write spacing).
    deferred: Option<Duration>,
}

/// Writes the config Secrets unless they already hold `config`: shards first, the primary last,
/// then removes shards the new primary no longer names.
async fn write_config(
    project: &Project,
    owner: &str,
    config: &GatewayConfig,
    set: ConfigSecrets,
    ctx: &Context,
) -> Result<Written> {
    let slug = project.spec.slug.as_str();
    let namespace = ctx.settings.dataplane_namespace.as_str();
    let cached = |name: &str| ctx.caches.config_secrets.get(&ObjectRef::new(name).within(namespace));
    let hash_of = |secret: &Secret| secret.annotations().get(CONFIG_HASH_ANNOTATION).cloned();
    let current = cached(&primary_name(slug));
    let current_hash = current.as_deref().and_then(hash_of);
    let current_shards = current
        .as_deref()
        .and_then(|s| s.data.as_ref()?.get(SHARDS_FIELD).cloned())
        .and_then(|v| String::from_utf8(v.0).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let shards_in_place = set.shards.iter().all(|shard| {
        shard.metadata.name.as_deref().and_then(cached).as_deref().and_then(hash_of).as_deref()
            == Some(set.hash.as_str())
    });
    if current_hash.as_deref() == Some(set.hash.as_str()) && shards_in_place {
        return Ok(Written { hash: set.hash, shards: set.shards.len(), deferred: None });
    }
    if let (Some(hash), Some(last)) = (&current_hash, ctx.config_written_at(slug)) {
        let mib = set.size as f64 / (1024.0 * 1024.0);
        let spacing = SPACING_PER_MIB.mul_f64(mib).min(MAX_SPACING);
        let elapsed = last.elapsed();
        if elapsed < spacing {
            return Ok(Written { hash: hash.clone(), shards: current_shards, deferred: Some(spacing - elapsed) });
        }
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    // While the set switches, the gateway may read the old and the new shards.
    let widest = DataPlaneInput {
        slug,
        owner,
        namespace,
        replicas: project.spec.data_plane.replicas,
        resources: None,
        shards: current_shards.max(set.shards.len()),
    };
    let role = data_plane::build(&widest, &ctx.settings.gateway, &ctx.settings.route).role;
    apply(&Api::<Role>::namespaced(ctx.client.clone(), namespace), &role).await?;
    for shard in &set.shards {
        apply(&secrets, shard).await?;
    }
    apply(&secrets, &set.primary).await?;
    for index in set.shards.len()..current_shards.max(set.shards.len()) {
        delete_if_present(&secrets, &shard_name(slug, index)).await?;
    }
    ctx.set_config_written(slug, Some(Instant::now()));
    ctx.metrics.config_writes.inc();
    ctx.metrics
        .config_bytes
        .get_or_create(&[("project", slug.to_owned())])
        .set(i64::try_from(set.size).unwrap_or(i64::MAX));
    let note = format!(
        "configuration {} ({} bytes in {} Secret(s)): {} endpoint(s), {} key(s)",
        set.hash,
        set.size,
        1 + set.shards.len(),
        config.endpoints.len(),
        config.keys.len()
    );
    tracing::info!(project = owner, hash = %set.hash, bytes = set.size, shards = set.shards.len(), "configuration written");
    ctx.event(project, EventType::Normal, "ConfigWritten", note).await;
    Ok(Written { hash: set.hash, shards: set.shards.len(), deferred: None })
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Applies the ServiceAccount, Role, RoleBinding, usage ConfigMap, Deployment, Service and route.
async fn apply_data_plane(project: &Project, owner: &str, shards: usize, ctx: &Context) -> Result<()> {
    let namespace = ctx.settings.dataplane_namespace.as_str();
    let input = DataPlaneInput {
        slug: &project.spec.slug,
        owner,
        namespace,
        replicas: project.spec.data_plane.replicas,
        resources: project.spec.data_plane.resources.as_ref(),
        shards,
    };
    let objects = data_plane::build(&input, &ctx.settings.gateway, &ctx.settings.route);
    let client = &ctx.client;
    apply(&Api::<ServiceAccount>::namespaced(client.clone(), namespace), &objects.service_account).await?;
    apply(&Api::<Role>::namespaced(client.clone(), namespace), &objects.role).await?;
    apply(&Api::<RoleBinding>::namespaced(client.clone(), namespace), &objects.role_binding).await?;
    // Metadata only: the data keys are the gateway pods'.
    apply(&Api::<ConfigMap>::namespaced(client.clone(), namespace), &objects.usage_config_map).await?;
    apply(&Api::<Deployment>::namespaced(client.clone(), namespace), &objects.deployment).await?;
    apply(&Api::<Service>::namespaced(client.clone(), namespace), &objects.service).await?;
    match &objects.route {
        Route::Ingress(ingress) => {
            apply(&Api::<Ingress>::namespaced(client.clone(), namespace), ingress).await?;
        }
        Route::HttpRoute(route) => {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &http_route_resource());
            apply(&api, route).await?;
        }
        Route::None => {}
    }
    Ok(())
}

/// Deletes every data-plane object this Project owns.
async fn cleanup(project: &Project, namespace: &str, ctx: &Context) -> Result<()> {
    let owner = format!("{namespace}/{}", project.name_any());
    let dataplane = ctx.settings.dataplane_namespace.as_str();
    let selector = format!("{PROJECT_LABEL}={}", project.spec.slug);
    let client = &ctx.client;
    delete_owned(&Api::<Deployment>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    delete_owned(&Api::<Service>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    delete_owned(&Api::<Ingress>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    if ctx.settings.route.kind == RouteKind::HttpRoute {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), dataplane, &http_route_resource());
        delete_owned(&api, &selector, &owner).await?;
    }
    delete_owned(&Api::<RoleBinding>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    delete_owned(&Api::<Role>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    delete_owned(&Api::<ServiceAccount>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    delete_owned(&Api::<Secret>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    delete_owned(&Api::<ConfigMap>::namespaced(client.clone(), dataplane), &selector, &owner).await?;
    ctx.reports.remove(namespace);
    ctx.set_config_written(&project.spec.slug, None);
    ctx.metrics.config_bytes.remove(&[("project", project.spec.slug.clone())]);
    tracing::info!(project = owner, "data plane removed");
    Ok(())
}

async fn delete_owned<K>(api: &Api<K>, selector: &str, owner: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    for object in api.list_metadata(&ListParams::default().labels(selector)).await?.items {
        if object.metadata.annotations.as_ref().and_then(|a| a.get(OWNER_ANNOTATION)).map(String::as_str) == Some(owner)
        {
            delete_if_present(api, &object.name_any()).await?;
        }
    }
    Ok(())
}

/// The Projects of `namespace` (all of them, so a second one learns it conflicts).
pub fn projects_in(caches: &Caches, namespace: Option<&str>) -> Vec<ObjectRef<Project>> {
    namespace
        .map(|ns| caches.projects_in(ns).iter().map(|p| ObjectRef::from_obj(p.as_ref())).collect())
        .unwrap_or_default()
}

/// Projects whose configuration may use `provider`.
pub fn projects_using_provider(caches: &Caches, shared: &str, provider: &Provider) -> Vec<ObjectRef<Project>> {
    let namespace = provider.namespace();
    if namespace.as_deref() != Some(shared) {
        return projects_in(caches, namespace.as_deref());
    }
    let name = provider.name_any();
    let namespaces: BTreeSet<String> = caches
        .endpoints
        .state_filter(|e| {
            e.spec.models.iter().flat_map(|m| &m.backends).any(|b| {
                b.provider_ref.name == name && b.provider_ref.namespace.as_deref().is_none_or(|ns| ns == shared)
            })
        })
        .iter()
        .filter_map(|e| e.namespace())
        .collect();
    namespaces.iter().flat_map(|ns| projects_in(caches, Some(ns))).collect()
}

/// Projects whose configuration may use ServiceTier `tier`.
pub fn projects_using_tier(caches: &Caches, tier: &str) -> Vec<ObjectRef<Project>> {
    let mut namespaces: BTreeSet<String> =
        caches.projects.state_filter(|p| p.spec.default_tier == tier).iter().filter_map(|p| p.namespace()).collect();
    namespaces.extend(
        caches.endpoints.state_filter(|e| e.spec.tier.as_deref() == Some(tier)).iter().filter_map(|e| e.namespace()),
    );
    namespaces.extend(
        caches.apikeys.state_filter(|k| k.spec.tier.as_deref() == Some(tier)).iter().filter_map(|k| k.namespace()),
    );
    namespaces.iter().flat_map(|ns| projects_in(caches, Some(ns))).collect()
}

/// Projects whose configuration may read `secret`: key Secrets (generated or brought), and
/// Provider credentials.
pub fn projects_using_secret(ctx: &Context, secret: &Secret) -> Vec<ObjectRef<Project>> {
    let Some(namespace) = secret.namespace() else { return Vec::new() };
    let name = secret.name_any();
    let caches = &ctx.caches;
    let credentials = caches.providers.state_filter(|p| {
        p.namespace().as_deref() == Some(namespace.as_str())
            && p.spec.credentials.as_ref().is_some_and(|c| c.secret_key_ref.name == name)
    });
    let mut projects: Vec<ObjectRef<Project>> =
        credentials.iter().flat_map(|p| projects_using_provider(caches, &ctx.settings.shared_namespace, p)).collect();
    let key_secret =
        secret.owner_references().iter().any(|o| o.kind == "ApiKey") || !ctx.secret_users(&namespace, &name).is_empty();
    if key_secret {
        projects.extend(projects_in(caches, Some(&namespace)));
    }
    projects
}

/// The Project that owns a data-plane object, from its owner annotation.
pub fn owner_of<K: Resource>(object: &K) -> Option<ObjectRef<Project>> {
    let owner = object.meta().annotations.as_ref()?.get(OWNER_ANNOTATION)?;
    let (namespace, name) = owner.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use sluice_crds::config::KeyHash;

    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        yaml.split("\n---\n")
            .map(|doc| {
                // The fixtures are JSON documents.
                let value: serde_json::Value = serde_json::from_str(doc).expect("a JSON fixture");
                match value["kind"].as_str() {
                    Some("Project") => Object::Project(serde_json::from_value(value).expect("project")),
                    Some("Endpoint") => Object::Endpoint(serde_json::from_value(value).expect("endpoint")),
                    Some("ApiKey") => Object::ApiKey(serde_json::from_value(value).expect("apikey")),
                    Some("Provider") => Object::Provider(serde_json::from_value(value).expect("provider")),
                    Some("ServiceTier") => Object::ServiceTier(serde_json::from_value(value).expect("tier")),
                    Some("Secret") => {
                        let secret: Secret = serde_json::from_value(value).expect("secret");
                        Object::Secret(SecretData::from(&secret))
                    }
                    other => panic!("unexpected kind {other:?}"),
                }
            })
            .collect()
    }

    const FIXTURE: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Project","metadata":{"name":"p","namespace":"t"},"spec":{"slug":"p","defaultTier":"std"}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ServiceTier","metadata":{"name":"std"},"spec":{}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"sim","namespace":"sluice-system"},"spec":{"type":"simulated","models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"broken","namespace":"t"},"spec":{"type":"openai","baseUrl":"https://x.example/v1","credentials":{"secretKeyRef":{"name":"missing","key":"k"}},"models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"good","namespace":"t"},"spec":{"slug":"good","models":[{"name":"m","backends":[{"providerRef":{"name":"sim"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"typo","namespace":"t"},"spec":{"slug":"typo","models":[{"name":"m","backends":[{"providerRef":{"name":"nope"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"via-broken","namespace":"t"},"spec":{"slug":"via-broken","models":[{"name":"m","backends":[{"providerRef":{"name":"broken"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"ok","namespace":"t"},"spec":{"secretRef":{"name":"ok-key"}}}
---
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ok-key","namespace":"t"},"stringData":{"key":"sl_p_0123456789abcdef0123456789"}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"wants-typo","namespace":"t"},"spec":{"endpoints":["typo"],"secretRef":{"name":"ok2"}}}
---
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ok2","namespace":"t"},"stringData":{"key":"sl_p_abcdefabcdefabcdefabcdef00"}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"pending","namespace":"t"},"spec":{}}"#;

    fn project(objects: &[Object]) -> Project {
        objects
            .iter()
            .find_map(|o| match o {
                Object::Project(p) => Some(p.clone()),
                _ => None,
            })
            .expect("a project")
    }

    fn options() -> CompileOptions {
        CompileOptions { generated_keys: GeneratedKeys::Operator, ..CompileOptions::default() }
    }

    #[test]
    fn broken_objects_are_left_out_and_the_rest_is_served() {
        let objects = objects(FIXTURE);
        let compiled = compile_partially(&project(&objects), objects, &options());
        let config = compiled.config.expect("a configuration");
        assert_eq!(config.endpoints.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(config.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["t/ok"]);
        let left_out: Vec<String> = compiled.left_out.iter().map(ToString::to_string).collect();
        assert_eq!(left_out, ["ApiKey t/wants-typo", "Endpoint t/typo", "Endpoint t/via-broken"]);
        let problem = |kind, name: &str| {
            compiled.problems[&SourceRef { kind, namespace: Some("t".into()), name: name.into() }].join(" | ")
        };
        assert!(problem("Endpoint", "typo").contains("no Provider \"nope\""), "{}", problem("Endpoint", "typo"));
        assert!(problem("Endpoint", "via-broken").contains("Provider t/broken is not usable"));
        assert!(problem("Provider", "broken").contains("no Secret \"missing\""));
        assert!(problem("ApiKey", "wants-typo").contains("spec.endpoints[0]"));
    }

    #[test]
    fn project_problems_stop_the_configuration() {
        let mut objects = objects(FIXTURE);
        objects.retain(|o| !matches!(o, Object::ServiceTier(_)));
        let compiled = compile_partially(&project(&objects), objects, &options());
        assert!(compiled.config.is_none());
        let project_ref = SourceRef { kind: "Project", namespace: Some("t".into()), name: "p".into() };
        assert!(compiled.problems[&project_ref].join("").contains("no ServiceTier \"std\""));
    }

    #[test]
    fn a_deferred_write_reports_what_the_secrets_hold() {
        let objects = objects(FIXTURE);
        let config = compile_partially(&project(&objects), objects, &options()).config.expect("config");
        let served = (config.endpoints.len(), config.keys.len());
        assert_eq!(serving_counts(&config, false, None), served);
        let written = ProjectStatus { endpoints: Some(7), keys: Some(48_451), ..ProjectStatus::default() };
        assert_eq!(serving_counts(&config, false, Some(&written)), served);
        assert_eq!(serving_counts(&config, true, Some(&written)), (7, 48_451));
        assert_eq!(serving_counts(&config, true, None), (0, 0));
    }

    #[test]
    fn the_next_expiry_is_the_earliest_future_one() {
        let objects = objects(FIXTURE);
        let mut config = compile_partially(&project(&objects), objects, &options()).config.expect("config");
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        assert_eq!(next_expiry(&config, now), None);
        config.keys[0].expires_at = Some("2026-03-01T00:00:00Z".parse().expect("time"));
        config.keys[0]
            .hashes
            .push(KeyHash { sha256: "0".repeat(64), expires_at: Some("2026-02-01T00:00:00Z".parse().expect("time")) });
        assert_eq!(next_expiry(&config, now), Some("2026-02-01T00:00:00Z".parse().expect("time")));
        assert_eq!(
            next_expiry(&config, "2026-02-15T00:00:00Z".parse().expect("time")),
            Some("2026-03-01T00:00:00Z".parse().expect("time"))
        );
    }
}
