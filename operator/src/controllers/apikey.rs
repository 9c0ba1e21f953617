//! The ApiKey controller: generates each key into a Secret in the tenant's namespace (owned by
//! the ApiKey), rotates it on request with a grace period for the old key, drops the old key
//! when the grace period ends, and reports the key's state in its status, with the spend in its
//! current budget period that the gateway pods report ([`crate::usage`]). Key material never
//! leaves the Secret: not in logs, status, Events or metrics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sluice_crds::api::{ApiKey, ApiKeyStatus, Project};
use sluice_crds::compile::{PREVIOUS_KEY_EXPIRES_FIELD, generated_key_secret_name};

use super::{announce_problems, log_result};
use crate::cache::{fingerprint, spec_fingerprint};
use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Caches, Context, apply_status, error_policy, is_conflict, observe};
use crate::error::{Error, Result};
use crate::key_material::{self, KeySecret, Step, key_prefix, next_step, rotation_request};
use crate::labels::{COMPONENT_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGER, PART_OF_LABEL, ROTATE_AT_ANNOTATION};
use crate::reports::GATEWAY_UNAVAILABLE;
use crate::usage;
use crate::watches::{Watches, secret_fingerprint};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "apikey";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(1800);
/// ApiKey reconciles that may run at once: they mostly wait for the apiserver, and a project
/// may have tens of thousands of keys. More in flight did not make a busy apiserver write more
/// a second (docs/operator.md, "Scale"): it made each write wait longer.
const CONCURRENCY: u16 = 32;

/// What the ApiKey controller keeps between reconciles.
struct State {
    ctx: Arc<Context>,
    spend_written: Mutex<SpendWrites>,
}

impl AsRef<Context> for State {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

/// The ApiKey controller: its own changes (rotation requests included), its key Secret's, its
/// Project's while it waits for one, the keys whose verdict the Project controller changed
/// (`verdicts`) and those whose reported usage changed (`usage`).
pub fn controller(
    watches: &mut Watches,
    ctx: Arc<Context>,
    verdicts: UnboundedReceiver<ObjectRef<ApiKey>>,
    usage: UnboundedReceiver<ObjectRef<ApiKey>>,
) -> impl Future<Output = ()> + use<> {
    let (by_secret, by_project) = (ctx.caches.clone(), ctx.caches.clone());
    let rotation_fingerprint =
        |k: &ApiKey| fingerprint((spec_fingerprint(k), k.annotations().get(ROTATE_AT_ANNOTATION)));
    let state = Arc::new(State { ctx: ctx.clone(), spend_written: Mutex::default() });
    Controller::for_shared_stream(watches.apikeys.subscribe_changes(rotation_fingerprint), ctx.caches.apikeys.clone())
        .watches_shared_stream(watches.secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
            by_secret.index().keys_using_secret(&s)
        })
        // Every key of the namespace: whether and how it is served follows its Project, which
        // may also be going away (a deleted Project's keys are not Ready within seconds).
        .watches_shared_stream(watches.projects.subscribe_changes(spec_fingerprint), move |p: Arc<Project>| {
            keys_in(&by_project, &p)
        })
        .reconcile_on(verdicts)
        .reconcile_on(usage)
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, state)
        .for_each(log_result)
}

/// Reconciles one ApiKey.
async fn reconcile(apikey: Arc<ApiKey>, state: Arc<State>) -> Result<Action> {
    observe(CONTROLLER, apikey.as_ref(), &state.ctx, reconcile_key(&apikey, &state)).await
}

async fn reconcile_key(apikey: &ApiKey, controller: &State) -> Result<Action> {
    let ctx = controller.ctx.as_ref();
    let name = apikey.name_any();
    let namespace = apikey.namespace().ok_or_else(|| Error::Incomplete(format!("ApiKey {name}"), "namespace"))?;
    if apikey.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let project = ctx.caches.project_in(&namespace);
    let rotation = rotation_request(apikey);
    let mut status = ApiKeyStatus::default();
    let mut wake: Option<Timestamp> = None;
    let mut key_problem: Option<Verdict> = None;
    let mut key_present = false;

    match (&apikey.spec.secret_ref, &project) {
        // Minted over the management API or by `kubectl sluice`: only the hash exists.
        (None, _) if let Some(hashed) = &apikey.spec.key_hash => {
            key_present = true;
            status.key_prefix = hashed.prefix.clone();
            status.issued_at = hashed.issued_at.clone();
            status.previous_key_expires_at =
                hashed.previous.as_ref().map(|p| p.expires_at.clone()).filter(|t| t.0 > now);
            if status.previous_key_expires_at.is_some() {
                status.rotated_at = hashed.issued_at.clone();
            }
            wake = status.previous_key_expires_at.as_ref().map(|t| t.0);
        }
        (Some(reference), _) => {
            status.secret_name = Some(reference.name.clone());
            if let Some(secret) = ctx.caches.secret(&namespace, &reference.name) {
                key_present = true;
                let data = secret.data.clone().unwrap_or_default();
                let text = |field: &str| data.get(field).and_then(|v| String::from_utf8(v.0.clone()).ok());
                status.key_prefix = text(&reference.key).as_deref().and_then(key_prefix);
                let expires = text(PREVIOUS_KEY_EXPIRES_FIELD).and_then(|t| t.trim().parse::<Timestamp>().ok());
                status.previous_key_expires_at = expires.filter(|at| *at > now).map(Time);
                wake = status.previous_key_expires_at.as_ref().map(|t| t.0);
            }
        }
        (None, None) => {}
        (None, Some(project)) => {
            let secret_name = generated_key_secret_name(&name);
            status.secret_name = Some(secret_name.clone());
            let cached = ctx.caches.secret(&namespace, &secret_name);
            if let Some(secret) = cached.as_deref().filter(|s| !owned_by(s, apikey)) {
                key_problem = Some(Verdict::no(
                    REFERENCES_RESOLVED,
                    "SecretConflict",
                    format!(
                        "Secret {namespace}/{} exists and does not belong to this ApiKey; delete or rename it",
                        secret.name_any()
                    ),
                ));
            } else {
                let current = cached.as_deref().and_then(|s| {
                    KeySecret::parse(
                        &s.data.clone().unwrap_or_default(),
                        s.annotations(),
                        s.creation_timestamp().map(|t| t.0),
                    )
                });
                let request = rotation.clone().ok().flatten();
                let step = next_step(current.as_ref(), request, now);
                let next = key_material::apply_step(&step, current.as_ref(), &project.spec.slug, now, &mut rand::rng());
                let state = match (&step, next) {
                    (Step::Wait(until), _) => {
                        wake = *until;
                        current
                    }
                    (step, Some(next)) => {
                        let written =
                            write_key_secret(apikey, &namespace, &secret_name, cached.as_deref(), &next, ctx).await?;
                        if !written {
                            // The cache was behind the apiserver; look again in a moment.
                            return Ok(Action::requeue(Duration::from_secs(1)));
                        }
                        announce(apikey, step, &next, ctx).await;
                        wake = next.previous.as_ref().map(|p| p.expires_at);
                        Some(next)
                    }
                    (_, None) => current,
                };
                if let Some(state) = &state {
                    key_present = true;
                    status.key_prefix = key_prefix(&state.key);
                    status.issued_at = state.issued_at.map(Time);
                    status.rotated_at = state.rotated_at.map(Time);
                    status.previous_key_expires_at = state.previous.as_ref().map(|p| Time(p.expires_at));
                    if let Some(request) = request.filter(|r| r.at > now) {
                        wake = Some(wake.map_or(request.at, |w| w.min(request.at)));
                    }
                }
            }
        }
    }

    if let Some(expiry) = apikey.spec.expires_at.as_ref().map(|t| t.0).filter(|at| *at > now) {
        wake = Some(wake.map_or(expiry, |w| w.min(expiry)));
    }
    let key_id = format!("{namespace}/{name}");
    let period = usage::key_period(apikey);
    status.current_period_spend_usd = ctx.usage.spend(&key_id, &usage::period_id(period, now));
    // A new period starts from nothing (or from what pods already report for it): look again
    // then, unless nothing was ever reported for this key.
    if ctx.usage.has_entries(&key_id)
        && let Some(end) = usage::period_end(period, now)
    {
        wake = Some(wake.map_or(end, |w| w.min(end)));
    }
    let requeue = wake
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_millis(50))
        .map_or(RESYNC, |d| d.min(RESYNC));

    // Whether the Project controller has yet to compile this key as it now is: its verdict
    // nudges this ApiKey, and one status write then says it all (half the writes for a burst of
    // new keys).
    let expired = apikey.spec.expires_at.as_ref().is_some_and(|t| t.0 <= now);
    let awaiting_compile = project.is_some()
        && key_problem.is_none()
        && !expired
        && match ctx.reports.get(&namespace).as_deref() {
            None => true,
            Some(report) if report.failure.is_some() => false,
            Some(report) => report.keys.get(&name).is_none_or(|v| !v.served && v.problems.is_empty() && key_present),
        };
    if awaiting_compile {
        return Ok(Action::requeue(requeue));
    }
    let rotation_problem = match (&rotation, &apikey.spec.secret_ref) {
        (Err(message), _) => Some(("InvalidRotationRequest", message.clone())),
        (Ok(Some(_)), None) if apikey.spec.key_hash.is_some() => Some((
            "RotationNotApplicable",
            "this key is stored as its hash (spec.keyHash): rotate it with the management API or `kubectl sluice keys \
             rotate`; sluice.dev/rotate-at and spec.rotation rotate generated keys only"
                .to_owned(),
        )),
        (Ok(Some(_)), Some(reference)) => Some((
            "RotationNotApplicable",
            format!(
                "this key comes from Secret {namespace}/{} (spec.secretRef): rotate it by changing that Secret; \
                 sluice.dev/rotate-at and spec.rotation rotate generated keys only",
                reference.name
            ),
        )),
        (Ok(_), _) => None,
    };
    let verdicts = verdicts(apikey, &namespace, project.as_deref(), key_problem, rotation_problem, now, ctx);
    let has_status = apikey.status.as_ref().is_some_and(|s| !s.conditions.is_empty());
    let created = apikey.creation_timestamp().map(|t| t.0);
    if let (Some(report), Some(ready)) = (ctx.reports.get(&namespace), verdicts.iter().find(|v| v.type_ == READY))
        && let Some(wait) = report
            .first_status_wait(has_status, ready, now)
            .or_else(|| report.import_wait(has_status, ready, created, now))
    {
        return Ok(Action::requeue(requeue.min(wait + Duration::from_millis(50))));
    }
    status.conditions = conditions::conditions(
        &verdicts,
        apikey.status.as_ref().map_or(&[], |s| &s.conditions),
        apikey.metadata.generation,
        now,
    );
    status.observed_generation = apikey.metadata.generation;
    if apikey.status.as_ref() != Some(&status) {
        announce_problems(apikey, apikey.status.as_ref().map_or(&[], |s| &s.conditions), &verdicts, ctx).await;
        let old_spend = apikey.status.as_ref().and_then(|s| s.current_period_spend_usd);
        let spend_changed = old_spend != status.current_period_spend_usd;
        let only_spend = spend_changed
            && apikey.status.as_ref() == Some(&ApiKeyStatus { current_period_spend_usd: old_spend, ..status.clone() });
        if only_spend && let Some(wait) = controller.spend_write_wait(&key_id) {
            // A busy key's spend changes with every report: its status follows at a slower pace.
            return Ok(Action::requeue(requeue.min(wait)));
        }
        apply_status(&Api::<ApiKey>::namespaced(ctx.client.clone(), &namespace), apikey, &status).await?;
        if spend_changed {
            controller.note_spend_written(&key_id);
        }
    }

    Ok(Action::requeue(requeue))
}

fn owned_by(secret: &Secret, apikey: &ApiKey) -> bool {
    let uid = apikey.uid();
    secret.owner_references().iter().any(|o| o.kind == "ApiKey" && Some(&o.uid) == uid.as_ref())
}

/// Creates the key Secret (first key) or replaces it at the cached resourceVersion (rotation,
/// dropping the previous key). Create-if-absent and compare-and-swap are what key material
/// needs: an apply could overwrite a key that a stale cache did not show. `false`: the cache was
/// stale and nothing was written.
async fn write_key_secret(
    apikey: &ApiKey,
    namespace: &str,
    name: &str,
    cached: Option<&Secret>,
    state: &KeySecret,
    ctx: &Context,
) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut labels = cached.and_then(|s| s.metadata.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    labels.insert(PART_OF_LABEL.to_owned(), "sluice".to_owned());
    labels.insert(COMPONENT_LABEL.to_owned(), "api-key".to_owned());
    let mut annotations = cached.and_then(|s| s.metadata.annotations.clone()).unwrap_or_default();
    annotations.extend(state.annotations());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(apikey.controller_owner_ref(&()).into_iter().collect()),
            resource_version: cached.and_then(|s| s.resource_version()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(state.data()),
        ..Secret::default()
    };
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
    let result = match cached {
        None => api.create(&params, &secret).await.map(drop),
        Some(_) => api.replace(name, &params, &secret).await.map(drop),
    };
    match result {
        Ok(()) => Ok(true),
        Err(err) if is_conflict(&err) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Counts and tells of a key change. A first key gets no Event (its status says when it was
/// issued): creating many keys at once would otherwise write as many Events as keys.
async fn announce(apikey: &ApiKey, step: &Step, state: &KeySecret, ctx: &Context) {
    let prefix = key_prefix(&state.key).unwrap_or_default();
    let (reason, note) = match step {
        Step::Issue => {
            ctx.metrics.keys_issued.inc();
            tracing::debug!(apikey = %ObjectRef::from_obj(apikey), "key issued");
            return;
        }
        Step::Rotate(_) => {
            ctx.metrics.keys_issued.inc();
            ctx.metrics.keys_rotated.inc();
            let until = state.previous.as_ref().map_or_else(|| "now".to_owned(), |p| p.expires_at.to_string());
            ("KeyRotated", format!("issued key {prefix}...; the previous key works until {until}"))
        }
        Step::DropPrevious => {
            ("PreviousKeyExpired", "the previous key's grace period ended; it no longer works".to_owned())
        }
        Step::Wait(_) => return,
    };
    tracing::info!(apikey = %ObjectRef::from_obj(apikey), reason, "key Secret updated");
    ctx.event(apikey, EventType::Normal, reason, note).await;
}

fn verdicts(
    apikey: &ApiKey,
    namespace: &str,
    project: Option<&Project>,
    key_problem: Option<Verdict>,
    rotation_problem: Option<(&'static str, String)>,
    now: Timestamp,
    ctx: &Context,
) -> Vec<Verdict> {
    let degraded = match rotation_problem {
        Some((reason, message)) => Verdict::yes(DEGRADED, reason, message),
        None => Verdict::no(DEGRADED, "AsDeclared", "nothing to report"),
    };
    let Some(project) = project else {
        let message = format!("no Project in namespace {namespace}; keys belong to the Project of their namespace");
        return vec![
            Verdict::no(READY, "NoProject", message.clone()),
            Verdict::no(REFERENCES_RESOLVED, "NoProject", message),
            degraded,
        ];
    };
    if let Some(problem) = key_problem {
        return vec![Verdict::no(READY, problem.reason.clone(), problem.message.clone()), problem, degraded];
    }
    let report = ctx.reports.get(namespace);
    let verdict = report.as_deref().and_then(|r| r.keys.get(&apikey.name_any()));
    let resolved = match verdict {
        Some(v) if !v.problems.is_empty() => {
            Verdict::no(REFERENCES_RESOLVED, "InvalidReferences", conditions::join_problems(&v.problems))
        }
        _ => Verdict::yes(REFERENCES_RESOLVED, "Resolved", "every reference resolves"),
    };
    let expired = apikey.spec.expires_at.as_ref().is_some_and(|t| t.0 <= now);
    let ready = match (report.as_deref(), verdict) {
        _ if expired => {
            Verdict::no(READY, "Expired", "the key expired (spec.expiresAt) and was removed from the gateway")
        }
        (Some(report), _) if report.failure.is_some() && !verdict.is_some_and(|v| v.served) => Verdict::no(
            READY,
            "ProjectNotServing",
            format!("Project {}: {}", project.name_any(), report.failure.clone().unwrap_or_default()),
        ),
        (Some(report), Some(v)) if v.served && report.gateway_unavailable.is_some() => Verdict::no(
            READY,
            GATEWAY_UNAVAILABLE,
            format!("configured, but {}", report.gateway_unavailable.clone().unwrap_or_default()),
        ),
        (_, Some(v)) if v.served => {
            Verdict::yes(READY, "Serving", format!("the gateway of project {} accepts this key", project.spec.slug))
        }
        (_, Some(v)) if !v.problems.is_empty() => {
            Verdict::no(READY, "InvalidReferences", "left out of the gateway's configuration: see ReferencesResolved")
        }
        _ => Verdict::no(
            READY,
            "Pending",
            format!("waiting for Project {} to take the key into its configuration", project.name_any()),
        ),
    };
    vec![ready, resolved, degraded]
}

/// The ApiKeys of a Project's namespace.
fn keys_in(caches: &Caches, project: &Project) -> Vec<ObjectRef<ApiKey>> {
    let Some(namespace) = project.namespace() else { return Vec::new() };
    caches
        .apikeys
        .state_filter(|k| k.namespace().as_deref() == Some(namespace.as_str()))
        .iter()
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}

impl State {
    /// How long ApiKey `id` must wait before a status write that changes only its spend; `None`:
    /// it may write now.
    fn spend_write_wait(&self, id: &str) -> Option<Duration> {
        let written = self.spend_written.lock().unwrap_or_else(PoisonError::into_inner);
        spacing_wait(written.at.get(id).copied(), Instant::now(), self.ctx.settings.spend_status_interval)
    }

    /// Notes that ApiKey `id`'s status got a new spend now.
    fn note_spend_written(&self, id: &str) {
        let mut written = self.spend_written.lock().unwrap_or_else(PoisonError::into_inner);
        let interval = self.ctx.settings.spend_status_interval;
        // Keys written longer ago than the interval need no spacing any more: forget them
        // (deleted keys included) whenever the map has doubled since the last time.
        if written.at.len() >= written.prune_at {
            written.at.retain(|_, at| at.elapsed() < interval);
            written.prune_at = (written.at.len() * 2).max(1024);
        }
        written.at.insert(id.to_owned(), Instant::now());
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
