//! The Endpoint controller: reports each Endpoint's URL and whether its project's gateway serves
//! it, from the verdict of the project's last compile.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use sluice_crds::api::{Endpoint, EndpointStatus, Project};

use super::{CONCURRENCY, announce_problems, log_result};
use crate::cache::spec_fingerprint;
use crate::conditions::{self, DEGRADED, READY, REFERENCES_RESOLVED, Verdict};
use crate::context::{Context, apply_status, error_policy, observe};
use crate::data_plane::{HTTP_PORT, workload_name};
use crate::error::{Error, Result};
use crate::reports::GATEWAY_UNAVAILABLE;
use crate::settings::Settings;
use crate::watches::Watches;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "endpoint";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(1800);

/// The Endpoint controller: its own changes, its Project's, and the Endpoints whose verdict the
/// Project controller changed (`verdicts`).
pub fn controller(
    watches: &mut Watches,
    ctx: Arc<Context>,
    verdicts: UnboundedReceiver<ObjectRef<Endpoint>>,
) -> impl Future<Output = ()> + use<> {
    let store = ctx.caches.endpoints.clone();
    Controller::for_shared_stream(watches.endpoints.subscribe_changes(spec_fingerprint), store.clone())
        .watches_shared_stream(watches.projects.subscribe_changes(spec_fingerprint), move |p: Arc<Project>| {
            endpoints_in(&store, p.namespace())
        })
        .reconcile_on(verdicts)
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, ctx)
        .for_each(log_result)
}

/// The Endpoints of `namespace`.
fn endpoints_in(store: &Store<Endpoint>, namespace: Option<String>) -> Vec<ObjectRef<Endpoint>> {
    store.state_filter(|e| e.namespace() == namespace).iter().map(|e| ObjectRef::from_obj(e.as_ref())).collect()
}

/// Reconciles one Endpoint.
async fn reconcile(endpoint: Arc<Endpoint>, ctx: Arc<Context>) -> Result<Action> {
    observe(CONTROLLER, endpoint.as_ref(), &ctx, async {
        let name = endpoint.name_any();
        let namespace =
            endpoint.namespace().ok_or_else(|| Error::Incomplete(format!("Endpoint {name}"), "namespace"))?;
        if endpoint.meta().deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let now = Timestamp::now();
        let project = ctx.caches.project_in(&namespace);
        let report = ctx.reports.get(&namespace);
        let verdict = report.as_deref().and_then(|r| r.endpoints.get(&name));
        let served = verdict.is_some_and(|v| v.served);
        let problems = verdict.map_or(&[][..], |v| v.problems.as_slice());
        let verdicts = match (&project, report.as_deref()) {
            (None, _) => {
                let message =
                    format!("no Project in namespace {namespace}; Endpoints belong to the Project of their namespace");
                vec![
                    Verdict::no(READY, "NoProject", message.clone()),
                    Verdict::no(REFERENCES_RESOLVED, "NoProject", message),
                    Verdict::no(DEGRADED, "AsDeclared", "nothing to report"),
                ]
            }
            (Some(project), report) => {
                let resolved = if problems.is_empty() {
                    Verdict::yes(REFERENCES_RESOLVED, "Resolved", "every reference resolves")
                } else {
                    Verdict::no(REFERENCES_RESOLVED, "InvalidReferences", conditions::join_problems(problems))
                };
                let unavailable = report.and_then(|r| r.gateway_unavailable.clone());
                let ready = match (served, unavailable) {
                    (true, Some(why)) => Verdict::no(READY, GATEWAY_UNAVAILABLE, format!("configured, but {why}")),
                    (true, None) => Verdict::yes(
                        READY,
                        "Serving",
                        format!("served by the gateway of project {}", project.spec.slug),
                    ),
                    (false, _) if !problems.is_empty() => Verdict::no(
                        READY,
                        "InvalidReferences",
                        "left out of the gateway's configuration: see ReferencesResolved",
                    ),
                    (false, _) => match report.and_then(|r| r.failure.clone()) {
                        Some(failure) => Verdict::no(
                            READY,
                            "ProjectNotServing",
                            format!("Project {}: {failure}", project.name_any()),
                        ),
                        None => Verdict::no(
                            READY,
                            "Pending",
                            format!("waiting for Project {} to compile", project.name_any()),
                        ),
                    },
                };
                // Served with problems: backends whose Provider is gone or broken were dropped.
                let degraded = if served && !problems.is_empty() {
                    Verdict::yes(
                        DEGRADED,
                        "BackendsLeftOut",
                        format!("served without what these name: {}", conditions::join_problems(problems)),
                    )
                } else {
                    Verdict::no(DEGRADED, "AsDeclared", "nothing to report")
                };
                vec![ready, resolved, degraded]
            }
        };
        let previous = endpoint.status.as_ref().map_or(&[][..], |s| &s.conditions);
        // A first status waits for what the Project controller is about to say (its report
        // nudges this Endpoint): one write rather than "pending", "unavailable", then "serving".
        let has_status = !previous.is_empty();
        if !has_status
            && project.is_some()
            && report.as_deref().is_none_or(|r| r.failure.is_none() && verdict.is_none())
        {
            return Ok(Action::requeue(RESYNC));
        }
        if let (Some(report), Some(ready)) = (report.as_deref(), verdicts.iter().find(|v| v.type_ == READY))
            && let Some(wait) = report.first_status_wait(has_status, ready, now)
        {
            return Ok(Action::requeue(wait + Duration::from_millis(50)));
        }
        let status = EndpointStatus {
            conditions: conditions::conditions(&verdicts, previous, endpoint.metadata.generation, now),
            observed_generation: endpoint.metadata.generation,
            // Only an Endpoint in the configuration has a URL that answers.
            url: project
                .as_ref()
                .filter(|_| served)
                .map(|p| endpoint_url(&ctx.settings, &p.spec.slug, &endpoint.spec.slug)),
            tier: project.as_ref().map(|p| endpoint.spec.tier.clone().unwrap_or_else(|| p.spec.default_tier.clone())),
        };
        if endpoint.status.as_ref() != Some(&status) {
            announce_problems(endpoint.as_ref(), previous, &verdicts, &ctx).await;
            apply_status(&Api::<Endpoint>::namespaced(ctx.client.clone(), &namespace), endpoint.as_ref(), &status)
                .await?;
        }
        Ok(Action::requeue(RESYNC))
    })
    .await
}

/// The base URL for OpenAI SDKs: `<public URL>/<project>/<endpoint>/v1`. The public URL is
/// `--public-url`, else `https://<--host>`, else the project's Service inside the cluster.
pub fn endpoint_url(settings: &Settings, project: &str, endpoint: &str) -> String {
    let base = match (&settings.public_url, &settings.route.host) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(host)) => format!("https://{host}"),
        (None, None) => format!("http://{}.{}.svc:{HTTP_PORT}", workload_name(project), settings.dataplane_namespace),
    };
    format!("{base}/{project}/{endpoint}/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_prefer_the_public_url_then_the_host_then_the_service() {
        let mut settings = Settings::default();
        assert_eq!(
            endpoint_url(&settings, "team-a", "chat"),
            "http://sluice-gw-team-a.sluice-dataplanes.svc:8080/team-a/chat/v1"
        );
        settings.route.host = Some("llm.example.com".into());
        assert_eq!(endpoint_url(&settings, "team-a", "chat"), "https://llm.example.com/team-a/chat/v1");
        settings.public_url = Some("http://localhost:8080/".into());
        assert_eq!(endpoint_url(&settings, "team-a", "chat"), "http://localhost:8080/team-a/chat/v1");
    }
}
