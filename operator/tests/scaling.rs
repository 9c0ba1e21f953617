//! A Project that scales with load: the operator writes a HorizontalPodAutoscaler and leaves the
//! Deployment's replica count to it (it never fights the autoscaler), and takes the count back
//! when autoscaling is turned off.

mod common;

use std::time::Duration;

use common::{World, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Patch, PatchParams};
use sluice_crds::api::{ApiKey, Project};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_autoscaled_project_leaves_replicas_to_its_autoscaler() -> anyhow::Result<()> {
    let world = World::start("scaling").await?;
    let tenant = world.tenant.clone();
    world.apply_simulated_tenant("scaled").await?;
    let projects = world.api::<Project>(&tenant);
    let deployments = world.api::<Deployment>(&world.dataplane);
    let autoscalers = world.api::<HorizontalPodAutoscaler>(&world.dataplane);
    let replicas = || async {
        let deployment = deployments.get_opt("sluice-gw-scaled").await?;
        anyhow::Ok(deployment.and_then(|d| d.spec?.replicas))
    };
    eventually("the Deployment with the Project's one replica", WAIT, || async {
        Ok(match replicas().await? {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        })
    })
    .await?;

    let scale = serde_json::json!({"spec": {"dataPlane": {"autoscaling":
        {"minReplicas": 2, "maxReplicas": 6, "targetCpuUtilizationPercent": 70}}}});
    projects.patch("scaled", &PatchParams::default(), &Patch::Merge(&scale)).await?;
    let hpa = eventually("the autoscaler", WAIT, || async {
        Ok(autoscalers.get_opt("sluice-gw-scaled").await?.ok_or_else(|| "none yet".to_owned()))
    })
    .await?;
    let spec = hpa.spec.expect("spec");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    assert_eq!(spec.scale_target_ref.name, "sluice-gw-scaled");

    // The autoscaler scales the Deployment (as kube-controller-manager's HPA controller does,
    // through the scale subresource); a reconcile of the Project afterwards leaves it alone.
    let five = serde_json::json!({"spec": {"replicas": 5}});
    let as_hpa = PatchParams { field_manager: Some("horizontal-pod-autoscaler".into()), ..PatchParams::default() };
    deployments.patch_scale("sluice-gw-scaled", &as_hpa, &Patch::Merge(&five)).await?;
    world
        .apply("apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: app}\nspec: {scopes: [inference]}\n")
        .await?;
    eventually("the Project to serve the new key", WAIT, || async {
        let keys = projects.get("scaled").await?.status.and_then(|s| s.keys).unwrap_or(0);
        Ok(if keys == 1 { Ok(()) } else { Err(format!("{keys} keys")) })
    })
    .await?;
    let keys = world.api::<ApiKey>(&tenant);
    assert!(keys.get_opt("app").await?.is_some());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replicas().await?, Some(5), "the autoscaler's count stands after a reconcile");

    // Autoscaling off: the autoscaler goes and the Project's count is applied again.
    let fixed = serde_json::json!({"spec": {"dataPlane": {"autoscaling": null, "replicas": 3}}});
    projects.patch("scaled", &PatchParams::default(), &Patch::Merge(&fixed)).await?;
    eventually("the Project's own count and no autoscaler", WAIT, || async {
        let hpa = autoscalers.get_opt("sluice-gw-scaled").await?;
        Ok(match (replicas().await?, hpa) {
            (Some(3), None) => Ok(()),
            (count, hpa) => Err(format!("replicas {count:?}, autoscaler present: {}", hpa.is_some())),
        })
    })
    .await?;
    Ok(())
}
