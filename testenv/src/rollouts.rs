//! A stand-in for the kubelet and the Deployment controller, which cannot run here (no container
//! runtime): [`Rollouts`] reports every Deployment of a namespace as rolled out, with all its
//! replicas ready and available, the way they report a healthy rollout. Tests of what depends on
//! availability (the operator's `Ready`) pause it and write the status they need.
//!
//! It writes only Deployment status, through the status subresource, as those controllers do;
//! nothing else about the API server changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

/// The field manager of the status it writes.
pub const FIELD_MANAGER: &str = "sluice-testenv-rollouts";

/// How often the namespace's Deployments are looked at.
const PERIOD: Duration = Duration::from_millis(200);

/// Reports the Deployments of one namespace as available while it lives (see the module docs).
pub struct Rollouts {
    paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Rollouts {
    /// Starts reporting the Deployments of `namespace` as available.
    pub fn start(client: Client, namespace: &str) -> Self {
        let paused = Arc::new(AtomicBool::new(false));
        let api: Api<Deployment> = Api::namespaced(client, namespace);
        let task = tokio::spawn({
            let paused = paused.clone();
            async move {
                loop {
                    if !paused.load(Ordering::Relaxed)
                        && let Err(err) = roll_out(&api).await
                    {
                        eprintln!("sluice-testenv: rollouts: {err}");
                    }
                    tokio::time::sleep(PERIOD).await;
                }
            }
        });
        Self { paused, task }
    }

    /// Stops (`true`) or resumes (`false`) reporting: while paused, a test may write the status
    /// it needs and it stays so.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
}

impl Drop for Rollouts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the status of a finished rollout on every Deployment whose status says otherwise.
async fn roll_out(api: &Api<Deployment>) -> kube::Result<()> {
    for deployment in api.list(&ListParams::default()).await?.items {
        let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = deployment.metadata.generation;
        let status = deployment.status.clone().unwrap_or_default();
        let done = status.observed_generation == generation
            && [status.replicas, status.ready_replicas, status.available_replicas, status.updated_replicas]
                .iter()
                .all(|n| n.unwrap_or(0) == replicas);
        if done {
            continue;
        }
        let patch = serde_json::json!({"status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }});
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        match api.patch_status(&deployment.name_any(), &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
