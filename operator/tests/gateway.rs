//! The operator and a real `sluice-gateway` process together: the gateway watches its project's
//! config Secret through the apiserver (as in a cluster, but on loopback with a kubeconfig) and
//! serves the endpoint with the generated key; creating, rotating and deleting ApiKeys changes
//! what it accepts. Each change's delay, from the apiserver accepting the object to the gateway
//! answering differently, is printed and held to the 2 seconds.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, World, eventually, secret_text};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use reqwest::StatusCode;
use sluice_crds::api::ApiKey;

const WAIT: Duration = Duration::from_secs(60);
/// The bound on a key change reaching the gateway.
const PROPAGATION: Duration = Duration::from_secs(2);

/// The status of `GET /gw/chat/v1/models` with `key`.
async fn models_status(http: &reqwest::Client, gateway: &Gateway, key: &str) -> anyhow::Result<StatusCode> {
    Ok(http.get(format!("{}/gw/chat/v1/models", gateway.base)).bearer_auth(key).send().await?.status())
}

/// Polls until the gateway answers `want` for `key`; returns how long it took since `since`.
async fn until_gateway(
    http: &reqwest::Client,
    gateway: &Gateway,
    key: &str,
    want: StatusCode,
    since: Instant,
    what: &str,
) -> anyhow::Result<Duration> {
    let deadline = since + WAIT;
    loop {
        let status = models_status(http, gateway, key).await?;
        if status == want {
            let took = since.elapsed();
            eprintln!("gateway: {what} took {:.0} ms", took.as_secs_f64() * 1000.0);
            return Ok(took);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{what}: the gateway still answers {status} after {WAIT:?}; log:\n{}", gateway.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn key_in(secrets: &Api<Secret>, name: &str, field: &str) -> anyhow::Result<Result<String, String>> {
    Ok(match secrets.get_opt(name).await? {
        Some(secret) => secret_text(&secret, field).ok_or_else(|| format!("Secret {name} has no {field}")),
        None => Err(format!("no Secret {name}")),
    })
}

#[tokio::test]
async fn key_changes_reach_a_live_gateway() -> anyhow::Result<()> {
    let world = World::start("gateway").await?;
    world.apply_simulated_tenant("gw").await?;
    world
        .apply(
            "apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata: {name: first}
spec:
  rotation: {requestedAt: \"2020-01-01T00:00:00Z\", gracePeriodSeconds: 3}
",
        )
        .await?;
    let secrets: Api<Secret> = world.api(&world.tenant);
    let first = eventually("the first key", WAIT, || key_in(&secrets, "sluice-key-first", "key")).await?;
    eventually("the first key and the endpoint in the configuration", WAIT, || async {
        let config = world.config("gw").await?;
        let keys = config.as_ref().map_or(0, |c| c.keys.len());
        let endpoint = config.as_ref().is_some_and(|c| c.endpoints.contains_key("chat"));
        Ok(if keys == 1 && endpoint { Ok(()) } else { Err(format!("{keys} keys, endpoint chat: {endpoint}")) })
    })
    .await?;

    let gateway = Gateway::start(world.env, &format!("{}/sluice-config-gw", world.dataplane)).await?;
    let http = reqwest::Client::new();
    assert_eq!(models_status(&http, &gateway, &first).await?, StatusCode::OK, "{}", gateway.log_tail());
    assert_eq!(models_status(&http, &gateway, "sl_gw_not-a-key-at-all-000000000").await?, StatusCode::UNAUTHORIZED);
    let completion = http
        .post(format!("{}/gw/chat/v1/chat/completions", gateway.base))
        .bearer_auth(&first)
        .json(&serde_json::json!({"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
        .send()
        .await?;
    assert_eq!(completion.status(), StatusCode::OK);
    let body: serde_json::Value = completion.json().await?;
    assert_eq!(body["object"], "chat.completion", "{body}");

    // Create: a new ApiKey opens the gateway.
    let apikeys: Api<ApiKey> = world.api(&world.tenant);
    let created = Instant::now();
    world.apply("apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: second}\nspec: {}\n").await?;
    let second = eventually("the second key", WAIT, || key_in(&secrets, "sluice-key-second", "key")).await?;
    let create_took = until_gateway(&http, &gateway, &second, StatusCode::OK, created, "a created key").await?;

    // Rotate by annotation: the new key works, the old one through the 3 s grace period only.
    // The request (whole seconds) must be newer than the key it replaces, or it counts as
    // answered: within the second the key was issued, wait for the next one.
    let issued = eventually("the first key's issuedAt", WAIT, || async {
        Ok(apikeys.get("first").await?.status.and_then(|s| s.issued_at).map(|t| t.0).ok_or_else(|| "none".to_owned()))
    })
    .await?;
    while jiff::Timestamp::now().as_second() <= issued.as_second() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rotated = Instant::now();
    // Whole seconds: status times are RFC 3339 with second precision.
    let stamp = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())?.to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {"sluice.dev/rotate-at": stamp}}});
    apikeys.patch("first", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let new_first = eventually("the rotated key", WAIT, || async {
        Ok(match key_in(&secrets, "sluice-key-first", "key").await? {
            Ok(key) if key != first => Ok(key),
            Ok(_) => Err("not rotated yet".to_owned()),
            Err(state) => Err(state),
        })
    })
    .await?;
    let rotate_took = until_gateway(&http, &gateway, &new_first, StatusCode::OK, rotated, "a rotated key").await?;
    let previous = key_in(&secrets, "sluice-key-first", "previousKey").await?;
    assert_eq!(previous.as_deref(), Ok(first.as_str()), "the old key is kept for the grace period");
    assert_eq!(
        models_status(&http, &gateway, &first).await?,
        StatusCode::OK,
        "the old key works during the grace period"
    );
    let status = apikeys.get("first").await?.status.expect("status");
    let grace_ends = status.previous_key_expires_at.expect("previousKeyExpiresAt").0;
    let rotated_at = status.rotated_at.expect("rotatedAt").0;
    assert_eq!(Some(rotated_at), status.issued_at.map(|t| t.0), "rotated when the new key was issued");
    assert!(rotated_at >= stamp.parse::<jiff::Timestamp>()?, "not before the request");

    let grace_took =
        until_gateway(&http, &gateway, &first, StatusCode::UNAUTHORIZED, rotated, "the old key's grace period").await?;
    assert!(jiff::Timestamp::now() >= grace_ends, "the old key stopped only after its grace period");
    assert!(grace_took >= Duration::from_secs(2), "the old key worked for its grace period ({grace_took:?})");
    eventually("the previous key to leave the Secret", WAIT, || async {
        Ok(match key_in(&secrets, "sluice-key-first", "previousKey").await? {
            Ok(_) => Err("previousKey still there".to_owned()),
            Err(_) => Ok(()),
        })
    })
    .await?;
    assert_eq!(models_status(&http, &gateway, &new_first).await?, StatusCode::OK);

    // Delete: the key stops working.
    let deleted = Instant::now();
    apikeys.delete("second", &DeleteParams::default()).await?;
    let delete_took =
        until_gateway(&http, &gateway, &second, StatusCode::UNAUTHORIZED, deleted, "a deleted key").await?;

    // Expire: a key whose expiry is moved to the past stops working as promptly.
    let expired = Instant::now();
    let patch = serde_json::json!({"spec": {"expiresAt": "2026-01-01T00:00:00Z"}});
    apikeys.patch("first", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let expire_took =
        until_gateway(&http, &gateway, &new_first, StatusCode::UNAUTHORIZED, expired, "an expired key").await?;

    let changes = [("create", create_took), ("rotate", rotate_took), ("delete", delete_took), ("expire", expire_took)];
    for (what, took) in changes {
        assert!(took <= PROPAGATION, "{what} took {took:?}, more than {PROPAGATION:?}");
    }
    Ok(())
}
