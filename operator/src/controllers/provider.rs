//! The Provider controller: checks each Provider on its own (its credentials Secret, its TLS
//! CA bundle and client certificate, headers, models) and reports the result in its status. Projects that use it are requeued by the
//! Project controller's own watch.
//!
//! A Provider that Endpoints use is not deleted under them: its finalizer holds the deletion,
//! with a Warning Event and a `Ready: False InUse` condition naming the Endpoints, until none
//! uses it. (Should it go anyway, the partial compile drops only the backends that named it.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sluice_crds::api::{Endpoint, Provider, ProviderStatus};
use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::objects::Object;

use super::{CONCURRENCY, log_result};
use crate::cache::spec_fingerprint;
use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Context, apply_status, error_policy, observe, set_finalizer};
use crate::error::{Error, Result};
use crate::labels::PROVIDER_FINALIZER;
use crate::watches::{Watches, config_map_fingerprint, secret_fingerprint};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "provider";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(1800);

/// Problems of `provider` alone, given the Secrets and ConfigMaps it reads that were found
/// ([`crate::context::Caches::provider_reads`]).
pub fn check(provider: &Provider, reads: Vec<Object>) -> Vec<String> {
    let mut objects = vec![Object::Provider(provider.clone())];
    objects.extend(reads);
    match compile(&objects, &CompileOptions::default()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect(),
    }
}

/// The Provider controller: its own changes, those of the Secrets and ConfigMaps it reads, and
/// those of the Endpoints that may name it (a deletion waits for them).
pub fn controller(watches: &mut Watches, ctx: Arc<Context>) -> impl Future<Output = ()> + use<> {
    let (caches, by_config_map, deleting) = (ctx.caches.clone(), ctx.caches.clone(), ctx.caches.providers.clone());
    let shared = ctx.settings.shared_namespace.clone();
    Controller::for_shared_stream(watches.providers.subscribe_changes(spec_fingerprint), caches.providers.clone())
        .watches_shared_stream(watches.secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
            caches.index().providers_using_secret(&s)
        })
        .watches_shared_stream(
            watches.config_maps.subscribe_changes(config_map_fingerprint),
            move |c: Arc<ConfigMap>| by_config_map.index().providers_using_config_map(&c),
        )
        // An Endpoint that changes or goes may release a Provider whose deletion waits: the
        // new spec no longer names it, so every waiting one it could have used looks again.
        .watches_shared_stream(watches.endpoints.subscribe_changes(spec_fingerprint), move |e: Arc<Endpoint>| {
            let own = e.namespace().unwrap_or_default();
            deleting
                .state_filter(|p| {
                    p.meta().deletion_timestamp.is_some()
                        && matches!(p.namespace().as_deref(), Some(ns) if ns == own || ns == shared)
                })
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, ctx)
        .for_each(log_result)
}

/// Reconciles one Provider.
async fn reconcile(provider: Arc<Provider>, ctx: Arc<Context>) -> Result<Action> {
    observe(CONTROLLER, provider.as_ref(), &ctx, async {
        let name = provider.name_any();
        let namespace =
            provider.namespace().ok_or_else(|| Error::Incomplete(format!("Provider {name}"), "namespace"))?;
        let api = Api::<Provider>::namespaced(ctx.client.clone(), &namespace);
        let has_finalizer = provider.finalizers().iter().any(|f| f == PROVIDER_FINALIZER);
        if provider.meta().deletion_timestamp.is_some() {
            if !has_finalizer {
                return Ok(Action::await_change());
            }
            let endpoints = ctx.caches.endpoints.state();
            let users = users(&provider, endpoints.iter().map(AsRef::as_ref), &ctx.settings.shared_namespace, |ns| {
                ctx.caches.providers.get(&ObjectRef::new(&name).within(ns)).is_some()
            });
            if users.is_empty() {
                set_finalizer(&api, provider.as_ref(), PROVIDER_FINALIZER, false).await?;
                return Ok(Action::await_change());
            }
            let message = format!(
                "deletion waits until no Endpoint uses this Provider: {}; remove those backends (or the Endpoints) first",
                conditions::join_problems(&users)
            );
            let previous = provider.status.as_ref().map_or(&[][..], |s| &s.conditions);
            if previous.iter().find(|c| c.type_ == READY).is_none_or(|c| c.message != message) {
                ctx.event(provider.as_ref(), EventType::Warning, "DeletionBlocked", message.clone()).await;
            }
            write_status(&api, &provider, &[Verdict::no(READY, "InUse", message)]).await?;
            return Ok(Action::requeue(RESYNC));
        }
        if !has_finalizer {
            set_finalizer(&api, provider.as_ref(), PROVIDER_FINALIZER, true).await?;
        }
        let problems = check(&provider, ctx.caches.provider_reads(&provider));
        let verdicts = if problems.is_empty() {
            vec![
                Verdict::yes(
                    READY,
                    "Valid",
                    format!(
                        "{} upstream with {} model(s)",
                        provider.spec.provider_type.as_str(),
                        provider.spec.models.len()
                    ),
                ),
                Verdict::yes(REFERENCES_RESOLVED, "Resolved", "every reference resolves"),
            ]
        } else {
            let message = conditions::join_problems(&problems);
            vec![
                Verdict::no(READY, "Invalid", message.clone()),
                Verdict::no(REFERENCES_RESOLVED, "InvalidReferences", message),
            ]
        };
        let verdicts: Vec<Verdict> =
            verdicts.into_iter().chain([Verdict::no(DEGRADED, "AsDeclared", "nothing to report")]).collect();
        write_status(&api, &provider, &verdicts).await?;
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// Writes the status `verdicts` give, if it reads otherwise.
async fn write_status(api: &Api<Provider>, provider: &Provider, verdicts: &[Verdict]) -> Result<()> {
    let previous = provider.status.as_ref().map_or(&[][..], |s| &s.conditions);
    let status = ProviderStatus {
        conditions: conditions::conditions(verdicts, previous, provider.metadata.generation, Timestamp::now()),
        observed_generation: provider.metadata.generation,
    };
    if provider.status.as_ref() != Some(&status) {
        apply_status(api, provider, &status).await?;
    }
    Ok(())
}

/// The backends of `endpoints` (not being deleted) that resolve to `provider`, as
/// `<namespace>/<endpoint> (spec.models[m].backends[b])`. `exists_in(ns)`: whether a Provider of
/// that name exists in namespace `ns` (a backend without a namespace takes its own namespace's
/// before the shared one's).
fn users<'a>(
    provider: &Provider,
    endpoints: impl Iterator<Item = &'a Endpoint>,
    shared: &str,
    exists_in: impl Fn(&str) -> bool,
) -> Vec<String> {
    let (namespace, name) = (provider.namespace().unwrap_or_default(), provider.name_any());
    let mut users = Vec::new();
    for endpoint in endpoints.filter(|e| e.meta().deletion_timestamp.is_none()) {
        let own = endpoint.namespace().unwrap_or_default();
        for (m, model) in endpoint.spec.models.iter().enumerate() {
            for (b, backend) in model.backends.iter().enumerate() {
                let reference = &backend.provider_ref;
                if reference.name != name {
                    continue;
                }
                let target = match &reference.namespace {
                    Some(ns) => ns.clone(),
                    None if exists_in(&own) => own.clone(),
                    None => shared.to_owned(),
                };
                if target == namespace {
                    users.push(format!("{own}/{} (spec.models[{m}].backends[{b}])", endpoint.name_any()));
                }
            }
        }
    }
    users.sort();
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(namespace: &str, name: &str) -> Provider {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "simulated", "models": [{"name": "m"}]},
        }))
        .expect("a provider")
    }

    fn endpoint(namespace: &str, name: &str, refs: &[serde_json::Value]) -> Endpoint {
        let backends: Vec<serde_json::Value> =
            refs.iter().map(|r| serde_json::json!({"providerRef": r, "model": "m"})).collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Endpoint",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"slug": name, "models": [{"name": "m", "backends": backends}]},
        }))
        .expect("an endpoint")
    }

    #[test]
    fn users_are_the_backends_that_resolve_to_the_provider() {
        let shared = "sluice-system";
        let endpoints = [
            endpoint("team-a", "chat", &[serde_json::json!({"name": "glm"}), serde_json::json!({"name": "ds"})]),
            endpoint("team-b", "own", &[serde_json::json!({"name": "ds"})]),
            endpoint("team-c", "explicit", &[serde_json::json!({"name": "ds", "namespace": shared})]),
        ];
        // team-b has a Provider "ds" of its own: its Endpoint uses that one, not the shared one.
        let exists_in = |ns: &str| ns == "team-b" || ns == shared;
        let users = users(&provider(shared, "ds"), endpoints.iter(), shared, exists_in);
        assert_eq!(users, ["team-a/chat (spec.models[0].backends[1])", "team-c/explicit (spec.models[0].backends[0])"]);
        let own = super::users(&provider("team-b", "ds"), endpoints.iter(), shared, exists_in);
        assert_eq!(own, ["team-b/own (spec.models[0].backends[0])"]);
        assert!(super::users(&provider(shared, "unused"), endpoints.iter(), shared, exists_in).is_empty());

        let mut deleting = endpoints[0].clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().expect("time")));
        assert!(super::users(&provider(shared, "glm"), [&deleting].into_iter(), shared, exists_in).is_empty());
    }
}
