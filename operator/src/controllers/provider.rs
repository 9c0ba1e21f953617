//! The Provider controller: checks each Provider on its own (its credentials Secret, headers,
//! models) and reports the result in its status. Projects that use it are requeued by the
//! Project controller's own watch.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::{Resource, ResourceExt};
use sluice_crds::api::{Provider, ProviderStatus};
use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::objects::{Object, SecretData};

use super::{CONCURRENCY, log_result};
use crate::cache::spec_fingerprint;
use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Context, apply_status, error_policy, observe};
use crate::error::{Error, Result};
use crate::watches::{Watches, secret_fingerprint};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "provider";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(1800);

/// Problems of `provider` alone, given the Secret its credentials name (if found).
pub fn check(provider: &Provider, credentials: Option<&Secret>) -> Vec<String> {
    let mut objects = vec![Object::Provider(provider.clone())];
    objects.extend(credentials.map(|s| Object::Secret(SecretData::from(s))));
    match compile(&objects, &CompileOptions::default()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect(),
    }
}

/// The Provider controller: its own changes, and its credentials Secret's.
pub fn controller(watches: &mut Watches, ctx: Arc<Context>) -> impl Future<Output = ()> + use<> {
    let caches = ctx.caches.clone();
    Controller::for_shared_stream(watches.providers.subscribe_changes(spec_fingerprint), caches.providers.clone())
        .watches_shared_stream(watches.secrets.subscribe_changes(secret_fingerprint), move |s: Arc<Secret>| {
            caches.index().providers_using_secret(&s)
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
        if provider.meta().deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let credentials =
            provider.spec.credentials.as_ref().and_then(|c| ctx.caches.secret(&namespace, &c.secret_key_ref.name));
        let problems = check(&provider, credentials.as_deref());
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
        let now = Timestamp::now();
        let previous = provider.status.as_ref().map_or(&[][..], |s| &s.conditions);
        let status = ProviderStatus {
            conditions: conditions::conditions(&verdicts, previous, provider.metadata.generation, now),
            observed_generation: provider.metadata.generation,
        };
        if provider.status.as_ref() != Some(&status) {
            apply_status(&Api::<Provider>::namespaced(ctx.client.clone(), &namespace), provider.as_ref(), &status)
                .await?;
        }
        Ok(Action::requeue(RESYNC))
    })
    .await
}
