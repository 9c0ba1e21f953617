//! The ServiceTier controller: reports how many projects use each tier. The schema already
//! validates a tier completely, so a tier that exists is ready.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use sluice_crds::api::{ServiceTier, ServiceTierStatus};

use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Context, apply_status, observe};
use crate::error::Result;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "servicetier";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(1800);

/// Reconciles one ServiceTier.
pub async fn reconcile(tier: Arc<ServiceTier>, ctx: Arc<Context>) -> Result<Action> {
    observe(CONTROLLER, tier, ctx, |tier, ctx| async move {
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
