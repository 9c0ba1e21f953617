//! sluice-operator: Kubernetes controllers that turn Sluice's custom resources into live
//! per-tenant data planes.
//!
//! [`run`] composes the pieces, behind a leader Lease when several replicas run:
//!
//! - [`watches`]: one watch per kind ([`cache`]), the caches every reconcile reads, and the
//!   [`watch_index`] of who refers to what, which maps each change to the objects to reconcile.
//! - [`controllers`]: one module per controller, each with its own constructor.
//!   [`controllers::project`] compiles each Project (with `sluice-crds`) into a pure plan and
//!   executes it: config Secrets ([`config_secret`]) and gateway workload ([`data_plane`]) in the
//!   data-plane namespace, and the status. It publishes each project's verdicts ([`reports`]),
//!   which [`controllers::endpoint`], [`controllers::apikey`] and [`controllers::service_tier`]
//!   report; [`controllers::apikey`] also generates and rotates keys ([`key_material`]) and
//!   reports the spend the gateways report ([`usage`]); [`controllers::provider`] checks
//!   Providers.
//! - [`context`]: what every reconcile shares (client, settings, caches, reports, Events,
//!   metrics, error backoff); [`api_calls`] counts the client's requests for the metrics.

pub mod api_calls;
pub mod cache;
pub mod conditions;
pub mod config_secret;
pub mod context;
pub mod controllers;
pub mod data_plane;
pub mod error;
pub mod key_material;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod reports;
pub mod settings;
pub mod signing_secret;
pub mod usage;
pub mod watch_index;
pub mod watches;

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::task::JoinSet;

use crate::context::Context;
use crate::controllers::{apikey, endpoint, project, provider, service_tier};
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::reports::Reports;
use crate::watches::Watches;

pub use crate::error::{Error, Result};
pub use crate::settings::Settings;

/// Runs the operator until `shutdown` completes (then gives up the leader Lease) or a fatal error.
pub async fn run(client: Client, settings: Settings, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_with_metrics(client, settings, Arc::new(Metrics::new()), shutdown).await
}

/// [`run`] with the caller's metrics: those of a client made by their
/// [`ApiCalls::client`](api_calls::ApiCalls::client) count its requests, and the caller may
/// read them too (the benchmark does).
pub async fn run_with_metrics(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if let Some(parent) = &settings.route.gateway_parent
        && settings.route.kind != settings::RouteKind::HttpRoute
    {
        tracing::warn!(gateway_parent = ?parent, "a gateway parent is only used with route kind httproute");
    }
    if settings.route.kind == settings::RouteKind::HttpRoute && settings.route.gateway_parent.is_none() {
        return Err(Error::Settings("route kind httproute needs a gateway parent (NAMESPACE/NAME)".into()));
    }
    let mut background = JoinSet::new();
    if let Some(address) = settings.metrics_listen {
        background.spawn(metrics::serve(address, metrics.clone()));
    }
    let elector =
        settings.leader_election.as_ref().map(|le| LeaderElector::new(client.clone(), le, &settings.identity));
    let work = async {
        if let Some(elector) = &elector {
            // A standby replica is ready: it waits for its turn.
            metrics.set_ready(true);
            elector.acquire().await;
        }
        metrics.leader.set(1);
        let result = match &elector {
            Some(elector) => tokio::select! {
                result = run_controllers(client.clone(), settings.clone(), metrics.clone()) => result,
                result = elector.hold() => result,
            },
            None => run_controllers(client.clone(), settings.clone(), metrics.clone()).await,
        };
        metrics.leader.set(0);
        result
    };
    let server_failed = async {
        while let Some(finished) = background.join_next().await {
            if let Ok(Err(err)) = finished {
                return Err(err);
            }
        }
        std::future::pending().await
    };
    let result = tokio::select! {
        result = work => result,
        result = server_failed => result,
        () = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    if let Some(elector) = &elector {
        elector.release().await;
    }
    result
}

/// Starts one watch per kind, waits until each has listed, then runs the controllers.
async fn run_controllers(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Result<()> {
    let mut watches = Watches::new(&client, &settings);
    let (reports, verdicts) = Reports::new();
    let reporter = Reporter { controller: labels::MANAGER.to_owned(), instance: Some(settings.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client, settings, watches.caches(), reports, recorder, metrics.clone()));
    let budgets: Arc<dyn metrics::KeyBudgets> = ctx.clone();
    metrics.follow_key_budgets(Arc::downgrade(&budgets));

    let (usage_nudge, usage_changed) = futures::channel::mpsc::unbounded();
    let usage_follower = usage::follow(ctx.clone(), watches.usage_config_maps.subscribe(), usage_nudge);
    let project_controller = project::controller(&mut watches, ctx.clone());
    let apikey_controller = apikey::controller(&mut watches, ctx.clone(), verdicts.apikeys, usage_changed);
    let endpoint_controller = endpoint::controller(&mut watches, ctx.clone(), verdicts.endpoints);
    let provider_controller = provider::controller(&mut watches, ctx.clone());
    let tier_controller = service_tier::controller(&mut watches, ctx, verdicts.tiers);

    let _running = watches.start().await;
    metrics.set_ready(true);
    tracing::info!("caches synced; controllers start");
    tokio::join!(
        project_controller,
        apikey_controller,
        endpoint_controller,
        provider_controller,
        tier_controller,
        usage_follower
    );
    Ok(())
}
