//! The plan of one Project reconcile: from what the caches hold ([`Inputs`]) to everything the
//! reconcile does ([`Plan`]): the finalizer, the config Secrets and data plane to write or
//! remove, the report the other controllers read, the Events, the status and when to look
//! again. Pure: unit-tested without an API server; [`super::execute`] carries it out.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::rbac::v1::Role;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use sluice_crds::api::{DataPlaneSpec, Project, ProjectStatus};
use sluice_crds::compile::{
    CompileOptions, GeneratedKeys, PartialCompile, compile_partially, generated_key_secret_name,
};
use sluice_crds::config::GatewayConfig;
use sluice_crds::objects::{Object, ObjectRef as SourceRef};

use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::config_secret::{self, ConfigSecrets, ConfigTarget, primary_name, shard_name};
use crate::data_plane::{self, DataPlaneInput, DataPlaneObjects};
use crate::error::{Error, Result};
use crate::labels::PROJECT_FINALIZER;
use crate::reports::{GATEWAY_UNAVAILABLE, ObjectVerdict, ProjectReport};
use crate::settings::Settings;
use crate::watch_index::ProjectClaim;

/// Reconcile at least this often, to repair drift that no watch reported.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Configuration writes of one project are spaced by this much per MiB of configuration, so a
/// large project whose keys change all the time does not flood etcd with multi-MiB revisions.
const SPACING_PER_MIB: Duration = Duration::from_secs(1);
/// Upper bound of that spacing.
const MAX_SPACING: Duration = Duration::from_secs(20);
/// How long a new gateway Deployment's first rollout may take before the first status of its
/// Endpoints and ApiKeys says it is unavailable (see `ProjectReport::first_status_wait`).
pub const FIRST_ROLLOUT_GRACE: SignedDuration = SignedDuration::from_secs(30);

/// What one reconcile of a Project starts from.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The Project.
    pub project: Arc<Project>,
    /// The time of this reconcile.
    pub now: Timestamp,
    /// What the compiler reads: the Project, its namespace's Endpoints and ApiKeys, and the
    /// Providers, ServiceTiers and Secrets they may use. Not gathered while it is deleted.
    pub objects: Vec<Object>,
    /// Every Project of its namespace.
    pub neighbours: Vec<ProjectClaim>,
    /// Every Project that claims its slug and serves its own namespace.
    pub slug_claims: Vec<ProjectClaim>,
    /// The report its last reconcile published.
    pub previous: Option<Arc<ProjectReport>>,
    /// Ready replicas of its gateway Deployment.
    pub ready_replicas: i32,
    /// The ready pod addresses behind each Service a gathered Provider names
    /// (`spec.service`), by `(namespace, service)`.
    pub pool_addresses: BTreeMap<(String, String), Vec<String>>,
    /// Available replicas of its gateway Deployment (ready for `minReadySeconds`): none, and
    /// nothing is served whatever the configuration says.
    pub available_replicas: i32,
    /// When its gateway Deployment was created; `None`: not yet.
    pub gateway_created: Option<Timestamp>,
}

/// The project's config Secrets as the cache has them.
#[derive(Clone, Debug, Default)]
pub struct WrittenConfig {
    /// The content hash each config Secret is annotated with, by Secret name.
    pub hashes: BTreeMap<String, String>,
    /// How many shards the primary names.
    pub shards: usize,
    /// How long ago this process last wrote the project's configuration.
    pub since_last_write: Option<Duration>,
}

/// What the operator's finalizer needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Finalizer {
    /// Nothing.
    #[default]
    Keep,
    /// Add it before anything else.
    Add,
    /// Remove it after everything else (the data plane is gone).
    Remove,
}

/// Remove every data-plane object this Project owns (by its owner annotation: objects another
/// Project has taken over are left alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleanup {
    /// `<namespace>/<name>` of the Project, as the objects' owner annotation has it.
    pub owner: String,
    /// Its slug (the objects' project label).
    pub slug: String,
    /// Also forget what the operator keeps for the namespace and slug (the report, write
    /// timing, metrics): only when this Project was the one serving them.
    pub release: bool,
}

/// A new configuration to write.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigWrite {
    /// The Secrets, shards first, the primary last.
    pub secrets: ConfigSecrets,
    /// The gateway's Role while the set switches: it may read the old and the new shards.
    pub role: Role,
    /// Shards the new primary no longer names, to delete once it is written.
    pub stale_shards: Vec<String>,
    /// The Event that announces it.
    pub note: String,
}

/// An Event about the Project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub type_: EventType,
    /// Its reason.
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

/// Everything one reconcile does, in the order the executor does it.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The finalizer.
    pub finalizer: Finalizer,
    /// The data plane to remove (the Project is deleted).
    pub cleanup: Option<Cleanup>,
    /// The configuration to write.
    pub config: Option<ConfigWrite>,
    /// A newer configuration than the one written waits this long (write spacing).
    pub config_deferred: Option<Duration>,
    /// The data plane to apply.
    pub data_plane: Option<DataPlaneObjects>,
    /// The verdicts to publish for the other controllers.
    pub report: Option<ProjectReport>,
    /// Events to publish.
    pub events: Vec<Note>,
    /// The status to write; `None` when it already reads so.
    pub status: Option<ProjectStatus>,
    /// When to reconcile again; `None`: on the next change only.
    pub requeue: Option<Duration>,
    /// How long planning took, for metrics.
    pub timings: PlanTimings,
}

/// CPU time of a plan's phases.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanTimings {
    /// Compiling the project.
    pub compile: Duration,
    /// Serializing its configuration into the Secrets (canonical JSON, hash, shards).
    pub serialize: Duration,
}

/// Plans one reconcile of `inputs.project`. What its config Secrets hold (`written`) is read
/// only once a new configuration is compiled and serialized, right before it may be written: a
/// cache read before a long compile could miss the last write and defer a write for nothing.
pub fn plan(inputs: &Inputs, settings: &Settings, written: impl FnOnce() -> WrittenConfig) -> Result<Plan> {
    let project = inputs.project.as_ref();
    let namespace =
        project.namespace().ok_or_else(|| Error::Incomplete(format!("Project {}", project.name_any()), "namespace"))?;
    let has_finalizer = project.finalizers().iter().any(|f| f == PROJECT_FINALIZER);
    if project.meta().deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Plan::default());
        }
        let release = conflict(project, &namespace, inputs).is_none();
        return Ok(Plan { finalizer: Finalizer::Remove, cleanup: Some(cleanup(project, release)), ..Plan::default() });
    }
    let mut plan = match conflict(project, &namespace, inputs) {
        Some(refusal) => refused(inputs, refusal),
        None => serve(inputs, &namespace, settings, written)?,
    };
    if !has_finalizer {
        plan.finalizer = Finalizer::Add;
    }
    Ok(plan)
}

/// Why a Project may not serve.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// An older Project serves its namespace: the namespace's report is that one's.
    Namespace(String),
    /// Its slug belongs to a Project in another namespace: nothing of this namespace is served.
    Slug(String),
}

impl Refusal {
    fn message(&self) -> &str {
        match self {
            Self::Namespace(message) | Self::Slug(message) => message,
        }
    }
}

/// Who serves, deterministically and whatever order the watches deliver things in:
/// - in a namespace, the oldest Project (creation time, then UID, then name); any other is
///   refused for as long as that one exists;
/// - a slug belongs first to the namespace of the same name (so `team-a`'s tenant keeps `/team-a/`
///   however its Project is deleted and created again), otherwise to the oldest claim.
///
/// A Project being deleted claims nothing: the next one takes over as soon as it is marked.
fn conflict(project: &Project, namespace: &str, inputs: &Inputs) -> Option<Refusal> {
    let me = ProjectClaim::of(project);
    if let Some(elder) = inputs
        .neighbours
        .iter()
        .filter(|other| !other.deleting && other.name != me.name && other.seniority() < me.seniority())
        .min_by_key(|other| other.seniority())
    {
        return Some(Refusal::Namespace(format!(
            "namespace {namespace} already has Project {}; one Project per namespace",
            elder.name
        )));
    }
    let rank = |c: &ProjectClaim| (c.namespace != c.slug, c.created, c.uid.clone(), c.namespace.clone());
    inputs
        .slug_claims
        .iter()
        .filter(|other| other.slug == me.slug && !other.deleting)
        .filter(|other| (&other.namespace, &other.name) != (&me.namespace, &me.name))
        .filter(|other| rank(other) < rank(&me))
        .min_by_key(|other| rank(other))
        .map(|other| {
            Refusal::Slug(format!(
                "slug {:?} is already served for Project {}/{}",
                me.slug, other.namespace, other.name
            ))
        })
}

/// What deleting or refusing `project` removes.
fn cleanup(project: &Project, release: bool) -> Cleanup {
    Cleanup {
        owner: format!("{}/{}", project.namespace().unwrap_or_default(), project.name_any()),
        slug: project.spec.slug.clone(),
        release,
    }
}

/// The plan of a Project that may not serve: whatever it wrote before goes at once, and it
/// says why on its status and in an Event.
fn refused(inputs: &Inputs, refusal: Refusal) -> Plan {
    let project = inputs.project.as_ref();
    let reason = refusal.message().to_owned();
    let report = match refusal {
        Refusal::Namespace(_) => None,
        Refusal::Slug(_) => Some(ProjectReport {
            project: project.name_any(),
            slug: project.spec.slug.clone(),
            failure: Some(reason.clone()),
            ..ProjectReport::default()
        }),
    };
    let verdicts = [
        Verdict::no(READY, "Conflict", reason.clone()),
        Verdict::no(REFERENCES_RESOLVED, "Conflict", reason.clone()),
        Verdict::no(DEGRADED, "NotServing", "this Project is not served"),
    ];
    let events = vec![Note { type_: EventType::Warning, reason: "Conflict", message: reason }];
    Plan {
        cleanup: Some(cleanup(project, false)),
        report,
        events,
        status: status(project, &verdicts, None, None, inputs.now),
        requeue: Some(RESYNC),
        ..Plan::default()
    }
}

/// What a configuration write comes to.
struct Written {
    /// Hash of the configuration the Secrets hold once the plan is carried out.
    hash: String,
    /// Their shard count.
    shards: usize,
    /// A newer configuration waits this long (write spacing).
    deferred: Option<Duration>,
}

/// The plan of a Project that serves: compile what compiles, write it and the data plane.
fn serve(
    inputs: &Inputs,
    namespace: &str,
    settings: &Settings,
    written: impl FnOnce() -> WrittenConfig,
) -> Result<Plan> {
    let project = inputs.project.as_ref();
    let slug = project.spec.slug.as_str();
    let now = inputs.now;
    let options = CompileOptions {
        shared_namespace: settings.shared_namespace.clone(),
        generated_keys: GeneratedKeys::Operator,
        services: sluice_crds::compile::ServiceEndpoints::Operator,
        now: Some(now),
    };
    let started = Instant::now();
    let mut compiled = compile_partially(project, &inputs.objects, &options);
    if let Some(config) = compiled.config.as_mut() {
        fill_pools(config, &inputs.pool_addresses);
    }
    let mut timings = PlanTimings { compile: started.elapsed(), ..PlanTimings::default() };
    // The causes that hold the whole configuration back (the Project's own, its tier's) come
    // first, before the objects merely left out.
    let mut by_weight: Vec<_> = compiled.problems.iter().collect();
    by_weight.sort_by_key(|(object, _)| matches!(object.kind, "Endpoint" | "ApiKey" | "Provider"));
    let problem_lines: Vec<String> = by_weight
        .into_iter()
        .flat_map(|(object, problems)| problems.iter().map(move |p| format!("{object}: {p}")))
        .collect();
    let verdicts = Verdicts { inputs, namespace, compiled: &compiled };

    let Some(config) = &compiled.config else {
        // The Project itself is broken: keep serving what was served, report the problems.
        let message = conditions::join_problems(&problem_lines);
        let report = ProjectReport {
            failure: Some(message.clone()),
            gateway_unavailable: gateway_unavailable(inputs),
            tiers: inputs.previous.as_deref().map(|r| r.tiers.clone()).unwrap_or_default(),
            ..verdicts.report(|kind, name| verdicts.served_before(kind, name))
        };
        let conditions = [
            Verdict::no(READY, "CompileFailed", message.clone()),
            Verdict::no(REFERENCES_RESOLVED, "InvalidReferences", message.clone()),
            Verdict::no(DEGRADED, "NotCompiled", "no new configuration: the last one written keeps serving"),
        ];
        let mut events = Vec::new();
        if condition_message(project, READY) != Some(message.as_str()) {
            events.push(Note { type_: EventType::Warning, reason: "CompileFailed", message });
        }
        let hash = project.status.as_ref().and_then(|s| s.config_hash.clone());
        return Ok(Plan {
            report: Some(report),
            events,
            status: status(project, &conditions, hash, None, now),
            requeue: Some(RESYNC),
            timings,
            ..Plan::default()
        });
    };

    let owner = format!("{namespace}/{}", project.name_any());
    let target = ConfigTarget { slug, namespace: &settings.dataplane_namespace, owner: &owner };
    let started = Instant::now();
    let secrets = config_secret::build(target, config)?;
    timings.serialize = started.elapsed();
    // A key that stops being served (deleted, expired, left out) is a revocation: written at
    // once, whatever the spacing of large configurations says.
    let served_keys: HashSet<&str> = config.keys.iter().map(|k| k.id.as_str()).collect();
    let revokes = inputs.previous.as_deref().is_some_and(|previous| {
        previous.keys.iter().any(|(name, v)| v.served && !served_keys.contains(format!("{namespace}/{name}").as_str()))
    });
    let current = written();
    let (written, write) = write_or_wait(secrets, slug, &current, revokes);
    let data_plane_input = |shards: usize| DataPlaneInput {
        slug,
        owner: &owner,
        namespace: &settings.dataplane_namespace,
        spec: &project.spec.data_plane,
        shards,
    };
    let objects = data_plane::build(&data_plane_input(written.shards), settings);
    let config_write = write.map(|secrets| {
        let (new, old) = (secrets.shards.len(), current.shards);
        // While the set switches, the gateway may read the old and the new shards.
        let role = if old > new { data_plane::role(&data_plane_input(old)) } else { objects.role.clone() };
        let note = format!(
            "configuration {} ({} bytes in {} Secret(s)): {} endpoint(s), {} key(s)",
            secrets.hash,
            secrets.size,
            1 + new,
            config.endpoints.len(),
            config.keys.len()
        );
        ConfigWrite { role, stale_shards: (new..old).map(|i| shard_name(slug, i)).collect(), note, secrets }
    });

    // A deferred write leaves the last written configuration serving: objects and counts are
    // reported from it, not from the one that waits.
    let deferred = written.deferred.is_some();
    let served_endpoints: HashSet<&str> = config.endpoints.values().map(|e| e.id.as_str()).collect();
    let report = ProjectReport {
        tiers: config.tiers.keys().cloned().collect(),
        gateway_unavailable: gateway_unavailable(inputs),
        first_rollout_until: first_rollout_until(inputs),
        ..verdicts.report(|kind, name| {
            if deferred {
                return verdicts.served_before(kind, name);
            }
            let served = if kind == "Endpoint" { &served_endpoints } else { &served_keys };
            served.contains(format!("{namespace}/{name}").as_str())
        })
    };

    let short_hash: String = written.hash.chars().take(19).collect();
    let (endpoint_count, key_count) = serving_counts(config, deferred, project.status.as_ref());
    let (ready_replicas, available) = (inputs.ready_replicas, inputs.available_replicas);
    let replicas = replica_text(&project.spec.data_plane);
    let mut serving = format!(
        "configuration {short_hash} serves {endpoint_count} endpoint(s) and {key_count} key(s); {available} of {replicas} gateway replica(s) available"
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
    let mut events = Vec::new();
    if !problem_lines.is_empty() && condition_message(project, REFERENCES_RESOLVED) != Some(references.message.as_str())
    {
        events.push(Note {
            type_: EventType::Warning,
            reason: "InvalidReferences",
            message: references.message.clone(),
        });
    }
    let ready = if available > 0 {
        Verdict::yes(READY, "Serving", serving)
    } else {
        Verdict::no(READY, GATEWAY_UNAVAILABLE, serving)
    };
    let conditions = [ready, references, degraded];

    let mut requeue = RESYNC;
    if let Some(wait) = written.deferred {
        requeue = requeue.min(wait);
    }
    if let Some(expiry) = next_expiry(config, now) {
        let until = Duration::try_from(expiry.duration_since(now)).unwrap_or_default();
        requeue = requeue.min(until + Duration::from_millis(50));
    }
    Ok(Plan {
        config: config_write,
        config_deferred: written.deferred,
        data_plane: Some(objects),
        report: Some(report),
        events,
        status: status(
            project,
            &conditions,
            Some(written.hash),
            Some((endpoint_count, key_count, ready_replicas)),
            now,
        ),
        requeue: Some(requeue),
        timings,
        ..Plan::default()
    })
}

/// Fills the pods of every pool Provider that names a Service: each ready address behind it as
/// `ServiceConfig::pod_url` (the contract with the gateway), sorted. A Service without a ready
/// pod is a pool without pods: its backends wait, the rest is served.
fn fill_pools(config: &mut GatewayConfig, addresses: &BTreeMap<(String, String), Vec<String>>) {
    for provider in config.providers.values_mut() {
        let Some(service) = &provider.service else { continue };
        let key = (service.namespace.clone(), service.name.clone());
        let mut pods: Vec<String> = addresses.get(&key).into_iter().flatten().map(|ip| service.pod_url(ip)).collect();
        pods.sort();
        pods.dedup();
        provider.pods = pods;
    }
}

/// Why what the configuration holds is not served: no gateway replica is available.
fn gateway_unavailable(inputs: &Inputs) -> Option<String> {
    let project = inputs.project.as_ref();
    (inputs.available_replicas < 1).then(|| {
        format!(
            "none of the {} gateway replica(s) of project {} is available yet",
            replica_text(&project.spec.data_plane),
            project.spec.slug
        )
    })
}

/// Until when a gateway that no replica serves yet may still be in its first rollout: the
/// Deployment is new (or not there yet).
fn first_rollout_until(inputs: &Inputs) -> Option<Timestamp> {
    if inputs.available_replicas > 0 {
        return None;
    }
    let until = inputs.gateway_created.unwrap_or(inputs.now).checked_add(FIRST_ROLLOUT_GRACE).ok()?;
    (until > inputs.now).then_some(until)
}

/// How many gateway replicas a Project asks for: its count, or its autoscaling range.
fn replica_text(spec: &DataPlaneSpec) -> String {
    match &spec.autoscaling {
        Some(scaling) => format!("{}-{} (autoscaled)", scaling.min_replicas, scaling.max_replicas),
        None => spec.replicas.to_string(),
    }
}

/// The verdict on each Endpoint and ApiKey of the namespace.
struct Verdicts<'a> {
    inputs: &'a Inputs,
    namespace: &'a str,
    compiled: &'a PartialCompile,
}

impl Verdicts<'_> {
    /// A report with a verdict for every Endpoint and ApiKey, `served` as given.
    fn report(&self, served: impl Fn(&'static str, &str) -> bool) -> ProjectReport {
        let mut report = ProjectReport {
            project: self.inputs.project.name_any(),
            slug: self.inputs.project.spec.slug.clone(),
            ..ProjectReport::default()
        };
        let secrets: HashSet<&str> = self
            .inputs
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::Secret(s) if s.namespace == self.namespace => Some(s.name.as_str()),
                _ => None,
            })
            .collect();
        let previous = self.inputs.previous.as_deref();
        for object in &self.inputs.objects {
            let (kind, name, verdicts) = match object {
                Object::Endpoint(e) => ("Endpoint", e.name_any(), &mut report.endpoints),
                Object::ApiKey(k) => {
                    let name = k.name_any();
                    let seen_before = previous.is_some_and(|p| p.keys.contains_key(&name));
                    let generated = k.spec.secret_ref.is_none() && k.spec.key_hash.is_none();
                    if !seen_before || (generated && !secrets.contains(generated_key_secret_name(&name).as_str())) {
                        report.keys_arriving += 1;
                    }
                    ("ApiKey", name, &mut report.keys)
                }
                _ => continue,
            };
            let reference = SourceRef { kind, namespace: Some(self.namespace.to_owned()), name: name.clone() };
            let problems = self.compiled.problems.get(&reference).cloned().unwrap_or_default();
            let verdict = ObjectVerdict { served: served(kind, &name), problems };
            verdicts.insert(name, verdict);
        }
        report
    }

    /// What the last published report said is served: still true while no new configuration is
    /// written (the project is broken, or a large configuration's write is deferred).
    fn served_before(&self, kind: &str, name: &str) -> bool {
        let Some(previous) = self.inputs.previous.as_deref() else { return false };
        let verdicts = if kind == "Endpoint" { &previous.endpoints } else { &previous.keys };
        verdicts.get(name).is_some_and(|v| v.served)
    }
}

/// Whether `set` needs writing: not when the Secrets hold it already, not yet when the last
/// write was too recent for its size (then the written configuration keeps serving), unless it
/// `revokes` a key.
fn write_or_wait(
    set: ConfigSecrets,
    slug: &str,
    written: &WrittenConfig,
    revokes: bool,
) -> (Written, Option<ConfigSecrets>) {
    let current_hash = written.hashes.get(&primary_name(slug));
    let shards_in_place = set
        .shards
        .iter()
        .all(|shard| shard.metadata.name.as_ref().and_then(|name| written.hashes.get(name)) == Some(&set.hash));
    if current_hash == Some(&set.hash) && shards_in_place {
        return (Written { hash: set.hash, shards: set.shards.len(), deferred: None }, None);
    }
    if let (Some(hash), Some(elapsed), false) = (current_hash, written.since_last_write, revokes) {
        let mib = set.size as f64 / (1024.0 * 1024.0);
        let spacing = SPACING_PER_MIB.mul_f64(mib).min(MAX_SPACING);
        if elapsed < spacing {
            return (Written { hash: hash.clone(), shards: written.shards, deferred: Some(spacing - elapsed) }, None);
        }
    }
    (Written { hash: set.hash.clone(), shards: set.shards.len(), deferred: None }, Some(set))
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

fn condition_message<'a>(project: &'a Project, type_: &str) -> Option<&'a str> {
    let conditions = &project.status.as_ref()?.conditions;
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

/// The status `verdicts` (and the configuration's hash and counts) give; `None` when the
/// Project's status already reads so. Counts left out keep their last value.
fn status(
    project: &Project,
    verdicts: &[Verdict],
    config_hash: Option<String>,
    counts: Option<(usize, usize, i32)>,
    now: Timestamp,
) -> Option<ProjectStatus> {
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
    (project.status.as_ref() != Some(&status)).then_some(status)
}

#[cfg(test)]
mod tests;
