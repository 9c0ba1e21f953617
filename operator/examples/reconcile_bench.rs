//! Benchmark: how long the operator takes to reconcile 100 projects with 10 endpoints and 100
//! generated keys each (10,000 keys) against a real apiserver, from a cold start with every object
//! already declared until every Project reports its full configuration.
//!
//!     source tests/setup/kube.sh
//!     cargo run --release -p sluice-operator --example reconcile_bench [-- PROJECTS ENDPOINTS KEYS]
//!
//! Prints the figures and writes them to target/bench/reconcile.json. A program, not a test:
//! `cargo test` builds it (test = false in Cargo.toml) but never runs it, and nothing asserts time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use sluice_crds::api::{ApiKey, Endpoint, Project};
use sluice_operator::settings::{Settings, WatchedNamespaces};
use sluice_testenv::TestEnv;

/// Creates in flight at once while declaring the objects.
const PARALLEL: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let projects = args.next().transpose()?.unwrap_or(100);
    let endpoints = args.next().transpose()?.unwrap_or(10);
    let keys = args.next().transpose()?.unwrap_or(100);

    let env = TestEnv::builder().sluice_crds().with_controller_manager().start().await?;
    let client = env.client()?;
    let shared = env.namespace("bench-shared").await?;
    let dataplane = env.namespace("bench-dp").await?;
    sluice_testenv::apply_yaml(
        &client,
        &shared,
        "apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {name: bench}
spec: {}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {name: sim}
spec: {type: simulated, models: [{name: sim-chat}]}
",
    )
    .await?;

    // Declare everything first, so the figure is the operator's alone.
    let declared = Instant::now();
    let mut tenants = Vec::new();
    for p in 0..projects {
        tenants.push(env.namespace(&format!("bench-{p:03}")).await?);
    }
    let mut objects: Vec<(String, ApiResource, serde_json::Value)> = Vec::new();
    let resource = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&kube::core::GroupVersionKind::gvk("sluice.dev", "v1alpha1", kind), plural)
    };
    for (p, tenant) in tenants.iter().enumerate() {
        objects.push((
            tenant.clone(),
            resource("Project", "projects"),
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"slug": format!("p{p:03}"), "defaultTier": "bench"}}),
        ));
        for e in 0..endpoints {
            objects.push((
                tenant.clone(),
                resource("Endpoint", "endpoints"),
                serde_json::json!({"metadata": {"name": format!("e{e}")}, "spec": {"slug": format!("e{e}"),
                    "models": [{"name": "m", "backends": [{"providerRef": {"name": "sim"}, "model": "sim-chat"}]}]}}),
            ));
        }
        for k in 0..keys {
            objects.push((
                tenant.clone(),
                resource("ApiKey", "apikeys"),
                serde_json::json!({"metadata": {"name": format!("k{k:03}")}, "spec": {"scopes": ["inference"]}}),
            ));
        }
    }
    let total = objects.len();
    futures::stream::iter(objects)
        .map(|(namespace, resource, mut body)| {
            let client = client.clone();
            async move {
                body["apiVersion"] = "sluice.dev/v1alpha1".into();
                body["kind"] = resource.kind.clone().into();
                let object: DynamicObject = serde_json::from_value(body)?;
                Api::<DynamicObject>::namespaced_with(client, &namespace, &resource)
                    .create(&PostParams::default(), &object)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    let declare_time = declared.elapsed();
    eprintln!("declared {total} objects in {:.1} s", declare_time.as_secs_f64());

    let settings = Settings {
        namespaces: WatchedNamespaces::Only(tenants.clone()),
        shared_namespace: shared.clone(),
        dataplane_namespace: dataplane.clone(),
        identity: "bench".to_owned(),
        ..Settings::default()
    };
    let started = Instant::now();
    let operator = tokio::spawn(sluice_operator::run(client.clone(), settings, std::future::pending()));
    let all_projects = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        anyhow::ensure!(!operator.is_finished(), "the operator stopped");
        let mut done = 0;
        for tenant in &tenants {
            let project = Api::<Project>::namespaced(client.clone(), tenant).get("p").await?;
            let status = project.status.unwrap_or_default();
            if status.keys == Some(u32::try_from(keys)?) && status.endpoints == Some(u32::try_from(endpoints)?) {
                done += 1;
            }
        }
        if done == projects {
            break started.elapsed();
        }
    };
    // Statuses of every ApiKey and Endpoint follow the projects' verdicts.
    let statuses = loop {
        let mut pending = 0;
        for tenant in &tenants {
            let ready = |conditions: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
                conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True")
            };
            let keys = Api::<ApiKey>::namespaced(client.clone(), tenant).list(&ListParams::default()).await?;
            pending += keys.items.into_iter().filter(|k| !ready(k.status.clone().map(|s| s.conditions))).count();
            let eps = Api::<Endpoint>::namespaced(client.clone(), tenant).list(&ListParams::default()).await?;
            pending += eps.items.into_iter().filter(|e| !ready(e.status.clone().map(|s| s.conditions))).count();
        }
        if pending == 0 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    operator.abort();

    let figures = serde_json::json!({
        "benchmark": "reconcile",
        "projects": projects,
        "endpoints_per_project": endpoints,
        "keys_per_project": keys,
        "objects_declared": total,
        "declare_seconds": declare_time.as_secs_f64(),
        "all_projects_configured_seconds": all_projects.as_secs_f64(),
        "all_statuses_ready_seconds": statuses.as_secs_f64(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    eprintln!(
        "operator: {projects} projects x {endpoints} endpoints x {keys} keys configured in {:.1} s; every status Ready after {:.1} s",
        all_projects.as_secs_f64(),
        statuses.as_secs_f64()
    );
    let dir = sluice_testenv::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("reconcile.json");
    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
