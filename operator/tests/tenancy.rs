//! Who serves, against the real apiserver: a second Project in a namespace is never served and
//! takes over promptly when the first goes; a slug belongs first to the namespace of its name,
//! so a Project elsewhere that claimed it is refused and its data plane removed.

mod common;

use std::time::{Duration, Instant};

use anyhow::ensure;
use common::{World, condition, describe, eventually};
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use sluice_crds::api::{ApiKey, Endpoint, Project};
use sluice_operator::labels::OWNER_ANNOTATION;
use sluice_operator::settings::WatchedNamespaces;

const WAIT: Duration = Duration::from_secs(60);

/// The Ready condition of Project `namespace/name`: (status, reason).
async fn ready_of(world: &World, namespace: &str, name: &str) -> anyhow::Result<(String, String)> {
    let project = world.api::<Project>(namespace).get(name).await?;
    let conditions = project.status.map(|s| s.conditions).unwrap_or_default();
    Ok(condition(&conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone())).unwrap_or_default())
}

/// Waits until Project `namespace/name` is Ready with `reason` ("Serving" or "Conflict").
async fn wait_for(world: &World, namespace: &str, name: &str, reason: &str) -> anyhow::Result<()> {
    eventually(&format!("Project {namespace}/{name} to be {reason}"), WAIT, || async {
        let project = world.api::<Project>(namespace).get(name).await?;
        let conditions = project.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Ready") {
            Some(c) if c.reason == reason => Ok(()),
            _ => Err(describe(&conditions)),
        })
    })
    .await
}

/// The owner annotation of the primary config Secret of `slug`, if it exists.
async fn config_owner(world: &World, slug: &str) -> anyhow::Result<Option<String>> {
    let secret = world.api::<Secret>(&world.dataplane).get_opt(&format!("sluice-config-{slug}")).await?;
    Ok(secret.and_then(|s| s.metadata.annotations?.get(OWNER_ANNOTATION).cloned()))
}

fn project(name: &str, slug: &str, tier: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: {name}}}\n\
         spec: {{slug: {slug}, defaultTier: {tier}, dataPlane: {{replicas: 1}}}}\n"
    )
}

#[tokio::test]
async fn a_second_project_is_never_served_and_takes_over_when_the_first_goes() -> anyhow::Result<()> {
    let world = World::start("tenancy").await?;
    let tenant = world.tenant.clone();
    world.apply_simulated_tenant("zzz").await?;
    wait_for(&world, &tenant, "zzz", "Serving").await?;
    let first_config = eventually("the first Project's configuration with its endpoint", WAIT, || async {
        Ok(match world.config("zzz").await? {
            Some(config) if config.endpoints.contains_key("chat") => Ok(config),
            other => Err(format!("{:?}", other.map(|c| c.endpoints.len()))),
        })
    })
    .await?;

    // Newer, and first by name: refused, and the first Project is untouched. (Creation times
    // have whole seconds; within one second the UID decides.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    world.apply(&project("aaa", "aaa", &format!("{tenant}-tier"))).await?;
    wait_for(&world, &tenant, "aaa", "Conflict").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ready_of(&world, &tenant, "zzz").await?, ("True".to_owned(), "Serving".to_owned()));
    assert_eq!(config_owner(&world, "zzz").await?, Some(format!("{tenant}/zzz")));
    assert_eq!(config_owner(&world, "aaa").await?, None, "a refused Project writes nothing");
    assert_eq!(world.config("zzz").await?, Some(first_config));

    // The first goes: the second serves within seconds, not at the next resync.
    let deleted = Instant::now();
    world.api::<Project>(&tenant).delete("zzz", &DeleteParams::default()).await?;
    wait_for(&world, &tenant, "aaa", "Serving").await?;
    eventually("the second Project's configuration and none of the first's", WAIT, || async {
        Ok(match (config_owner(&world, "aaa").await?, config_owner(&world, "zzz").await?) {
            (Some(owner), None) if owner == format!("{tenant}/aaa") => Ok(()),
            other => Err(format!("owners {other:?}")),
        })
    })
    .await?;
    let handover = deleted.elapsed();
    eprintln!("handover took {handover:?}");
    ensure!(handover < Duration::from_secs(60), "the handover waited for a resync ({handover:?})");
    Ok(())
}

#[tokio::test]
async fn a_slug_stays_with_the_namespace_of_its_name() -> anyhow::Result<()> {
    let env = sluice_testenv::TestEnv::shared();
    let owner_ns = env.namespace("own").await?;
    let world = World::start_with("squat", |settings| {
        if let WatchedNamespaces::Only(namespaces) = &mut settings.namespaces {
            namespaces.push(owner_ns.clone());
        }
    })
    .await?;
    let tenant = world.tenant.clone();
    // The squatter claims the other namespace's name first, and is served while nobody else
    // claims it.
    world.apply_simulated_tenant(&owner_ns).await?;
    wait_for(&world, &tenant, &owner_ns, "Serving").await?;
    assert_eq!(config_owner(&world, &owner_ns).await?, Some(format!("{tenant}/{owner_ns}")));

    // The namespace of that name claims its slug: it wins, though it came later.
    let tier = format!("{tenant}-tier");
    sluice_testenv::apply_yaml(&world.client, &owner_ns, &project("mine", &owner_ns, &tier)).await?;
    wait_for(&world, &owner_ns, "mine", "Serving").await?;
    wait_for(&world, &tenant, &owner_ns, "Conflict").await?;
    eventually("the slug's data plane to be the owner's", WAIT, || async {
        Ok(match config_owner(&world, &owner_ns).await? {
            Some(owner) if owner == format!("{owner_ns}/mine") => Ok(()),
            other => Err(format!("config Secret owned by {other:?}")),
        })
    })
    .await?;
    // And it stays so: the squatter's reconciles never take it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(config_owner(&world, &owner_ns).await?, Some(format!("{owner_ns}/mine")));
    assert_eq!(ready_of(&world, &tenant, &owner_ns).await?.1, "Conflict");
    Ok(())
}

#[tokio::test]
async fn keys_and_endpoints_stop_being_ready_when_their_project_goes() -> anyhow::Result<()> {
    let world = World::start("orphans").await?;
    let tenant = world.tenant.clone();
    world.apply_simulated_tenant("orphans").await?;
    world
        .apply("apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: app}\nspec: {scopes: [inference]}\n")
        .await?;
    let keys = world.api::<ApiKey>(&tenant);
    let endpoints = world.api::<Endpoint>(&tenant);
    let ready = |conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>| {
        condition(&conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone()))
    };
    eventually("the key and the endpoint to be Ready", WAIT, || async {
        let key = ready(keys.get("app").await?.status.map(|s| s.conditions).unwrap_or_default());
        let endpoint = ready(endpoints.get("chat").await?.status.map(|s| s.conditions).unwrap_or_default());
        Ok(match (&key, &endpoint) {
            (Some((k, _)), Some((e, _))) if k == "True" && e == "True" => Ok(()),
            _ => Err(format!("key {key:?}, endpoint {endpoint:?}")),
        })
    })
    .await?;

    let deleted = Instant::now();
    world.api::<Project>(&tenant).delete("orphans", &DeleteParams::default()).await?;
    eventually("the key and the endpoint to say their Project is gone", Duration::from_secs(20), || async {
        let key = ready(keys.get("app").await?.status.map(|s| s.conditions).unwrap_or_default());
        let endpoint = ready(endpoints.get("chat").await?.status.map(|s| s.conditions).unwrap_or_default());
        Ok(match (&key, &endpoint) {
            (Some((k, _)), Some((e, _))) if k == "False" && e == "False" => Ok(()),
            _ => Err(format!("key {key:?}, endpoint {endpoint:?}")),
        })
    })
    .await?;
    eprintln!("statuses followed the deletion in {:?}", deleted.elapsed());
    Ok(())
}

#[tokio::test]
async fn nothing_is_ready_while_no_gateway_replica_is_available() -> anyhow::Result<()> {
    let world = World::start("unavailable").await?;
    world.rollouts.pause(true);
    let tenant = world.tenant.clone();
    world.apply_simulated_tenant("unavailable").await?;
    world
        .apply("apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: app}\nspec: {scopes: [inference]}\n")
        .await?;
    let keys = world.api::<ApiKey>(&tenant);
    let endpoints = world.api::<Endpoint>(&tenant);
    let readiness = || async {
        let project = ready_of(&world, &tenant, "unavailable").await?;
        let ready = |conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>| {
            condition(&conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone())).unwrap_or_default()
        };
        let key = ready(keys.get("app").await?.status.map(|s| s.conditions).unwrap_or_default());
        let endpoint = ready(endpoints.get("chat").await?.status.map(|s| s.conditions).unwrap_or_default());
        anyhow::Ok([project, endpoint, key])
    };
    // The Endpoint's and the key's first status waits out a new gateway's first rollout (30 s)
    // before it says so.
    let not_ready = ("False".to_owned(), "GatewayUnavailable".to_owned());
    eventually("the Project, its Endpoint and key to say no gateway replica is available", WAIT, || async {
        let states = readiness().await?;
        Ok(if states.iter().all(|s| *s == not_ready) { Ok(()) } else { Err(format!("{states:?}")) })
    })
    .await?;
    // Configured all the same: the Endpoint knows its URL and tier, the Secret is written.
    let status = endpoints.get("chat").await?.status.expect("status");
    assert!(status.url.is_some_and(|u| u.ends_with("/unavailable/chat/v1")));
    assert_eq!(status.tier, Some(format!("{tenant}-tier")), "the tier it inherits from its Project");
    assert!(world.config("unavailable").await?.is_some_and(|c| c.endpoints.contains_key("chat")));

    // A replica becomes available: everything is Ready within seconds.
    let available = Instant::now();
    world.rollouts.pause(false);
    let serving = ("True".to_owned(), "Serving".to_owned());
    eventually("everything to be Ready once a replica is available", Duration::from_secs(20), || async {
        let states = readiness().await?;
        Ok(if states.iter().all(|s| *s == serving) { Ok(()) } else { Err(format!("{states:?}")) })
    })
    .await?;
    eprintln!("Ready followed the rollout in {:?}", available.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_project_refused_in_its_namespace_claims_no_slug() -> anyhow::Result<()> {
    let env = sluice_testenv::TestEnv::shared();
    let other = env.namespace("claim").await?;
    let world = World::start_with("refused", |settings| {
        if let WatchedNamespaces::Only(namespaces) = &mut settings.namespaces {
            namespaces.push(other.clone());
        }
    })
    .await?;
    let tenant = world.tenant.clone();
    let tier = format!("{tenant}-tier");
    world.apply_simulated_tenant("refused-main").await?;
    wait_for(&world, &tenant, "refused-main", "Serving").await?;
    // A younger Project beside it claims a slug: refused in its namespace, it holds nothing...
    let contested = format!("{other}-x");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    world.apply(&project("younger", &contested, &tier)).await?;
    wait_for(&world, &tenant, "younger", "Conflict").await?;
    // ...so a Project elsewhere, created later, gets that slug.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sluice_testenv::apply_yaml(&world.client, &other, &project("later", &contested, &tier)).await?;
    wait_for(&world, &other, "later", "Serving").await?;
    eventually("the slug's data plane to be the later Project's", WAIT, || async {
        Ok(match config_owner(&world, &contested).await? {
            Some(owner) if owner == format!("{other}/later") => Ok(()),
            owner => Err(format!("config Secret owned by {owner:?}")),
        })
    })
    .await?;
    let project = world.api::<Project>(&tenant).get("younger").await?;
    let conditions = project.status.map(|s| s.conditions).unwrap_or_default();
    let message = condition(&conditions, "Ready").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains("one Project per namespace"), "refused for its namespace: {message}");
    Ok(())
}
