//! One module per controller, each with a `controller` constructor that takes its trigger
//! streams from the [`Watches`](crate::watches::Watches) and returns the running controller.
//!
//! - [`project`]: compiles each Project and writes its config Secrets and data plane (a pure
//!   plan, then an executor), and publishes the verdicts the others report.
//! - [`apikey`]: generates and rotates keys, reports verdicts and spend.
//! - [`endpoint`], [`provider`], [`service_tier`]: report status.

pub mod apikey;
pub mod endpoint;
pub mod project;
pub mod provider;
pub mod service_tier;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use crate::conditions::{REFERENCES_RESOLVED, Verdict};
use crate::context::Context;
use crate::error::Error;

/// Reconciles of one kind that may run at once, for controllers that mostly wait for the
/// apiserver. (Project and ApiKey reconciles have their own limits.)
const CONCURRENCY: u16 = 8;

/// Logs the outcome of one reconcile, for a controller's `for_each`.
async fn log_result<K, E>(result: Result<(ObjectRef<K>, Action), controller::Error<Error, E>>)
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

/// A Warning Event on `object` when its references turn invalid or its problems change: the
/// cause, where `kubectl describe` and `kubectl events` show it, once per new message.
async fn announce_problems<K: Resource<DynamicType = ()>>(
    object: &K,
    previous: &[Condition],
    verdicts: &[Verdict],
    ctx: &Context,
) {
    let Some(resolved) = verdicts.iter().find(|v| v.type_ == REFERENCES_RESOLVED && !v.status) else { return };
    let before = previous.iter().find(|c| c.type_ == REFERENCES_RESOLVED);
    if before.is_some_and(|c| c.status == "False" && c.message == resolved.message) {
        return;
    }
    ctx.event(object, EventType::Warning, &resolved.reason, resolved.message.clone()).await;
}
