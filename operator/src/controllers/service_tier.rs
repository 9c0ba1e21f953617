//! The ServiceTier controller: reports how many projects use each tier. The schema already
//! validates a tier completely, so a tier that exists is ready.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use sluice_crds::api::{ServiceTier, ServiceTierStatus};

use super::{CONCURRENCY, log_result};
use crate::cache::spec_fingerprint;
use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Context, apply_status, error_policy, observe};
use crate::error::Result;
use crate::watches::Watches;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "servicetier";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(1800);
/// A tier is reconciled once its user count has settled for this long.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// The ServiceTier controller: its own changes, and the tiers whose users the Project controller
/// changed (`users_changed`).
pub fn controller(
    watches: &mut Watches,
    ctx: Arc<Context>,
    users_changed: UnboundedReceiver<ObjectRef<ServiceTier>>,
) -> impl Future<Output = ()> + use<> {
    Controller::for_shared_stream(watches.tiers.subscribe_changes(spec_fingerprint), ctx.caches.tiers.clone())
        .reconcile_on(users_changed)
        // Each project's compile may change a tier's user count: one status write per burst.
        .with_config(controller::Config::default().concurrency(CONCURRENCY).debounce(DEBOUNCE))
        .run(reconcile, error_policy, ctx)
        .for_each(log_result)
}

/// Reconciles one ServiceTier.
async fn reconcile(tier: Arc<ServiceTier>, ctx: Arc<Context>) -> Result<Action> {
    observe(CONTROLLER, tier.as_ref(), &ctx, async {
        let projects = ctx.reports.tier_users(&tier.name_any());
        let verdicts = [
            Verdict::yes(READY, "Valid", format!("used by {projects} project(s)")),
            Verdict::yes(REFERENCES_RESOLVED, "Resolved", "a ServiceTier references nothing"),
            Verdict::no(DEGRADED, "AsDeclared", "nothing to report"),
        ];
        let previous = tier.status.as_ref().map_or(&[][..], |s| &s.conditions);
        let status = ServiceTierStatus {
            conditions: conditions::conditions(&verdicts, previous, tier.metadata.generation, Timestamp::now()),
            observed_generation: tier.metadata.generation,
            projects: Some(projects),
        };
        if tier.status.as_ref() != Some(&status) {
            apply_status(&Api::<ServiceTier>::all(ctx.client.clone()), tier.as_ref(), &status).await?;
        }
        Ok(Action::requeue(RESYNC))
    })
    .await
}
