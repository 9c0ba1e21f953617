//! The Provider controller: checks each Provider on its own (its credentials Secret, headers,
//! models) and reports the result in its status. Projects that use it are requeued by the
//! Project controller's own watch.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sluice_crds::api::{Provider, ProviderStatus};
use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::objects::{Object, SecretData};

use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Context, apply_status, observe};
use crate::error::{Error, Result};

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

/// Reconciles one Provider.
pub async fn reconcile(provider: Arc<Provider>, ctx: Arc<Context>) -> Result<Action> {
    observe(CONTROLLER, provider, ctx, |provider, ctx| async move {
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

/// Providers whose credentials are in `secret`.
pub fn providers_of_secret(ctx: &Context, secret: &Secret) -> Vec<ObjectRef<Provider>> {
    let (namespace, name) = (secret.namespace(), secret.name_any());
    ctx.caches
        .providers
        .state_filter(|p| {
            p.namespace() == namespace && p.spec.credentials.as_ref().is_some_and(|c| c.secret_key_ref.name == name)
        })
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}
