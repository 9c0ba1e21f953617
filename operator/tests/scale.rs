//! A project with 50,000 generated API keys reconciles, its configuration is sharded over
//! several Secrets, and a real gateway loads it and accepts the first and the last key.
//! Prints how long each phase took (`SLUICE_SCALE_KEYS` changes the count for a quicker look).

mod common;

use std::time::{Duration, Instant};

use anyhow::Context as _;

use common::{Gateway, World, eventually, secret_text};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use reqwest::StatusCode;
use sluice_crds::api::{ApiKey, Project};
use sluice_operator::config_secret;
use sluice_operator::metrics::Metrics;

/// Creates in flight at once: enough to keep the apiserver busy without queueing in it.
const PARALLEL_CREATES: usize = 32;

/// Where the operator's time went: its requests, the Project reconciles' CPU by phase.
fn print_breakdown(metrics: &Metrics) {
    let mut calls: Vec<_> =
        metrics.api_calls.snapshot().into_iter().filter(|((verb, _), _)| *verb != "watch").collect();
    calls.sort_by_key(|(_, tally)| std::cmp::Reverse(tally.count));
    for ((verb, resource), tally) in calls.iter().take(12) {
        eprintln!(
            "scale: operator {verb} {resource}: {} requests ({} failed), {:.1} s until answered (summed)",
            tally.count, tally.failures, tally.seconds
        );
    }
    let phase = |name: &str| metrics.project_phases.get_or_create(&[("phase", name.to_owned())]).get();
    eprintln!(
        "scale: Project reconciles' CPU: gather {:.1} s, compile {:.1} s, serialize {:.1} s; {} configurations written, {} writes deferred by spacing",
        phase("gather"),
        phase("compile"),
        phase("serialize"),
        metrics.config_writes.get(),
        metrics.config_writes_deferred.get()
    );
}

fn key_count() -> usize {
    std::env::var("SLUICE_SCALE_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000)
}

// Several worker threads, as the operator binary has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_keys_reconcile_shard_and_load() -> anyhow::Result<()> {
    let count = key_count();
    let world = World::start("scale").await?;
    world.apply_simulated_tenant("big").await?;

    let apikeys: Api<ApiKey> = world.api(&world.tenant);
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let apikeys = apikeys.clone();
            async move {
                let key: ApiKey = serde_json::from_value(serde_json::json!({
                    "apiVersion": "sluice.dev/v1alpha1",
                    "kind": "ApiKey",
                    "metadata": {"name": format!("key-{i:05}")},
                    "spec": {"scopes": ["inference"]},
                }))?;
                apikeys.create(&PostParams::default(), &key).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL_CREATES)
        .try_collect::<()>()
        .await?;
    let created = started.elapsed();
    eprintln!("scale: created {count} ApiKeys in {:.1} s", created.as_secs_f64());

    // The Project's status counts the keys; reading a multi-MiB configuration every poll would
    // load the apiserver more than the operator does.
    let projects: Api<Project> = world.api(&world.tenant);
    eventually(&format!("the Project to serve {count} keys"), Duration::from_secs(1800), || async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let keys = projects.get("big").await?.status.and_then(|s| s.keys).unwrap_or(0);
        Ok(if keys as usize == count { Ok(()) } else { Err(format!("{keys} keys")) })
    })
    .await?;
    let config = world.config("big").await?.context("no configuration")?;
    assert_eq!(config.keys.len(), count);
    let reconciled = started.elapsed();
    let primary = world.api::<Secret>(&world.dataplane).get(&config_secret::primary_name("big")).await?;
    let shards: usize = secret_text(&primary, config_secret::SHARDS_FIELD).map_or(Ok(0), |n| n.parse())?;
    let bytes = config.to_canonical_json()?.len();
    assert_eq!(shards, if bytes > config_secret::SHARD_BYTES { bytes.div_ceil(config_secret::SHARD_BYTES) } else { 0 });
    if count >= 50_000 {
        assert!(shards >= 2, "50,000 keys need more than one Secret ({bytes} bytes)");
    }
    eprintln!(
        "scale: all {count} keys in the configuration {:.1} s after the first create ({bytes} bytes in {shards} shards)",
        reconciled.as_secs_f64()
    );
    print_breakdown(&world.metrics);

    let loading = Instant::now();
    let gateway = Gateway::start(world.env, &format!("{}/sluice-config-big", world.dataplane)).await?;
    eprintln!("scale: the gateway loaded it and was ready in {:.1} s", loading.elapsed().as_secs_f64());
    let secrets: Api<Secret> = world.api(&world.tenant);
    let http = reqwest::Client::new();
    for name in ["key-00000".to_owned(), format!("key-{:05}", count - 1)] {
        let secret = secrets.get(&format!("sluice-key-{name}")).await?;
        let key = secret_text(&secret, "key").expect("a key");
        let status = http.get(format!("{}/big/chat/v1/models", gateway.base)).bearer_auth(&key).send().await?.status();
        assert_eq!(status, StatusCode::OK, "{name}; gateway log:\n{}", gateway.log_tail());
    }

    // The keys' first statuses wait for the import to end (docs/operator.md, "Scale"). The
    // operator's count of status applies tells when to list them all and look.
    let status_applies = || metrics_count(&world.metrics, "apply", "apikeys/status");
    eventually(&format!("{count} ApiKeys Ready"), Duration::from_secs(1800), || async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let applies = status_applies();
        if (applies as usize) < count {
            return Ok(Err(format!("{applies} status applies")));
        }
        let ready = ready_keys(&apikeys).await?;
        Ok(if ready == count { Ok(()) } else { Err(format!("{ready} Ready")) })
    })
    .await?;
    eprintln!(
        "scale: every ApiKey Ready in its status {:.1} s after the first create",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How many ApiKeys say Ready in their status, listed a page at a time.
async fn ready_keys(apikeys: &Api<ApiKey>) -> anyhow::Result<usize> {
    let (mut ready, mut page) = (0, ListParams::default().limit(5_000));
    loop {
        let list = apikeys.list(&page).await?;
        ready += list
            .items
            .iter()
            .filter(|k| {
                let conditions = k.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .count();
        match list.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => page = page.continue_token(&token),
            None => return Ok(ready),
        }
    }
}

fn metrics_count(metrics: &Metrics, verb: &'static str, resource: &str) -> u64 {
    metrics.api_calls.snapshot().get(&(verb, resource.to_owned())).map_or(0, |tally| tally.count - tally.failures)
}
