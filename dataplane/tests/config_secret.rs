//! In-cluster hot reload against a real kube-apiserver: the gateway watches its config Secret
//! (whole or sharded), applies changes in about a second, and refuses shards out of step.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};
use sluice_crds::compile::CompileOptions;
use sluice_crds::config::{GatewayConfig, KeyHash, hash_key};
use sluice_gateway::config_source;
use support::{Gateway, client, eventually};

const NEW_KEY: &str = "sl_demo_fromthesecret0001";

fn quickstart() -> GatewayConfig {
    config_source::quickstart(&CompileOptions::default()).expect("quickstart compiles").remove(0)
}

fn secret(name: &str, data: &[(&str, Vec<u8>)]) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.clone()))).collect::<BTreeMap<_, _>>()),
        ..Secret::default()
    }
}

/// The primary Secret (and shard Secrets when `shard_bytes` splits it), as the operator writes them.
fn secrets(name: &str, config: &GatewayConfig, shard_bytes: Option<usize>) -> Vec<Secret> {
    let bytes = config.to_canonical_json().expect("json");
    let hash = config.content_hash().expect("hash").into_bytes();
    match shard_bytes {
        None => vec![secret(name, &[("config.json", bytes), ("hash", hash)])],
        Some(size) => {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let mut all: Vec<Secret> = chunks
                .iter()
                .enumerate()
                .map(|(i, chunk)| secret(&format!("{name}-shard-{i}"), &[("part", chunk.to_vec())]))
                .collect();
            all.push(secret(name, &[("shards", chunks.len().to_string().into_bytes()), ("hash", hash)]));
            all
        }
    }
}

async fn put(api: &Api<Secret>, secret: Secret) {
    let name = secret.metadata.name.clone().expect("name");
    match api.get_opt(&name).await.expect("get") {
        Some(existing) => {
            let mut secret = secret;
            secret.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &secret).await.expect("replace");
        }
        None => {
            api.create(&PostParams::default(), &secret).await.expect("create");
        }
    }
}

async fn models_status(gateway: &Gateway, key: &str) -> u16 {
    client()
        .get(gateway.url("/demo/assistant/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn config_page(gateway: &Gateway) -> Value {
    client().get(gateway.admin_url("/config")).send().await.expect("config").json().await.expect("json")
}

#[tokio::test]
async fn the_gateway_follows_its_config_secret() {
    sluice_testenv::install_crypto_provider();
    let env = sluice_testenv::TestEnv::shared();
    let kube = env.client().expect("client");
    let namespace = env.namespace("gateway").await.expect("namespace");
    let api: Api<Secret> = Api::namespaced(kube, &namespace);
    let name = "sluice-config-demo";
    let mut config = quickstart();
    for s in secrets(name, &config, None) {
        put(&api, s).await;
    }

    let kubeconfig = env.kubeconfig().to_string_lossy().into_owned();
    let target = format!("{namespace}/{name}");
    let gateway = Gateway::start(None, &["--config-secret", &target, "--kubeconfig", &kubeconfig]);
    let ready =
        eventually(Duration::from_secs(10), || async { models_status(&gateway, "sl_demo_quickstartkey").await == 200 })
            .await;
    assert!(ready.is_some(), "never served the Secret's configuration:\n{}", gateway.log_text());
    assert_eq!(config_page(&gateway).await["source"], format!("secret {target}"));

    // A new key, written as one Secret: live within about a second.
    config.keys[0].hashes.push(KeyHash { sha256: hash_key(NEW_KEY.as_bytes()), expires_at: None });
    for s in secrets(name, &config, None) {
        put(&api, s).await;
    }
    let took = eventually(Duration::from_secs(2), || async { models_status(&gateway, NEW_KEY).await == 200 }).await;
    assert!(took.is_some(), "the new key did not work within 2 s");

    // The same configuration minus the quickstart key, sharded into 1 KiB Secrets.
    config.keys[0].hashes.remove(0);
    for s in secrets(name, &config, Some(1024)) {
        put(&api, s).await;
    }
    let took =
        eventually(Duration::from_secs(2), || async { models_status(&gateway, "sl_demo_quickstartkey").await == 401 })
            .await;
    assert!(took.is_some(), "the sharded configuration did not apply within 2 s:\n{}", gateway.log_text());
    assert_eq!(models_status(&gateway, NEW_KEY).await, 200);
    let live_hash = config.content_hash().expect("hash");
    assert_eq!(config_page(&gateway).await["hashes"], json!([live_hash]));

    // A primary whose hash does not match its shards is refused; the live configuration stays.
    let mut stale = secrets(name, &config, Some(1024)).pop().expect("primary");
    stale.data.as_mut().expect("data").insert("hash".into(), ByteString(b"sha256:0000".to_vec()));
    put(&api, stale).await;
    let refused =
        eventually(Duration::from_secs(3), || async { !config_page(&gateway).await["lastError"].is_null() }).await;
    assert!(refused.is_some());
    let page = config_page(&gateway).await;
    assert!(page["lastError"].as_str().is_some_and(|e| e.contains("shards out of step")), "{page}");
    assert_eq!(page["hashes"], json!([live_hash]));
    assert_eq!(models_status(&gateway, NEW_KEY).await, 200);
}

#[tokio::test]
async fn usage_is_reported_and_budgets_hold_across_replicas() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    use sluice_crds::api::BudgetPeriod;
    use sluice_crds::config::BudgetConfig;

    sluice_testenv::install_crypto_provider();
    let env = sluice_testenv::TestEnv::shared();
    let kube = env.client().expect("client");
    let namespace = env.namespace("usage").await.expect("namespace");
    let secrets_api: Api<Secret> = Api::namespaced(kube.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(kube, &namespace);
    let mut config = quickstart();
    config.keys[0].budget = Some(BudgetConfig { limit_usd: 0.5, period: BudgetPeriod::Daily });
    for s in secrets("sluice-config-demo", &config, None) {
        put(&secrets_api, s).await;
    }
    let empty = ConfigMap {
        metadata: ObjectMeta { name: Some("sluice-usage-demo".into()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &empty).await.expect("usage ConfigMap");

    let kubeconfig = env.kubeconfig().to_string_lossy().into_owned();
    let secret = format!("{namespace}/sluice-config-demo");
    let usage = format!("{namespace}/sluice-usage-demo");
    let gateway = Gateway::start(
        None,
        &[
            "--config-secret",
            &secret,
            "--usage-configmap",
            &usage,
            "--usage-report-seconds",
            "1",
            "--pod-name",
            "gw-a",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    let chat = || async {
        client()
            .post(gateway.url("/demo/assistant/v1/chat/completions"))
            .bearer_auth("sl_demo_quickstartkey")
            .json(&json!({"model": "demo-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("send")
    };
    let ready =
        eventually(Duration::from_secs(10), || async { models_status(&gateway, "sl_demo_quickstartkey").await == 200 })
            .await;
    assert!(ready.is_some(), "{}", gateway.log_text());
    assert_eq!(chat().await.status(), 200);
    assert_eq!(chat().await.status(), 200);

    // This pod's report appears, with the key's usage in today's period.
    let today = sluice_gateway::limits::period_id(BudgetPeriod::Daily, jiff::Timestamp::now());
    let report = || async {
        let map = maps.get("sluice-usage-demo").await.expect("get");
        map.data.unwrap_or_default().get("gw-a.json").and_then(|text| serde_json::from_str::<Value>(text).ok())
    };
    let reported = eventually(Duration::from_secs(5), || async {
        report().await.is_some_and(|r| r["keys"]["demo/demo"]["requests"] == 2)
    })
    .await;
    assert!(reported.is_some(), "no report: {:?}\n{}", report().await, gateway.log_text());
    let own = report().await.expect("report");
    assert_eq!(own["pod"], "gw-a");
    assert_eq!(own["keys"]["demo/demo"]["period"], today);
    assert!(own["keys"]["demo/demo"]["spendUsd"].as_f64().is_some_and(|usd| usd > 0.0 && usd < 0.5), "{own}");
    assert!(own["keys"]["demo/demo"]["completionTokens"] == 8, "{own}");

    // Another replica reports having spent more than the budget: this one stops admitting.
    let other = json!({"pod": "gw-b", "reportedAt": "2026-01-01T00:00:00Z",
        "keys": {"demo/demo": {"period": today, "spendUsd": 0.6, "requests": 9, "promptTokens": 1, "completionTokens": 1}}});
    let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sluice-usage-demo"},
        "data": {"gw-b.json": other.to_string()}});
    maps.patch("sluice-usage-demo", &PatchParams::apply("sluice-gateway-gw-b").force(), &Patch::Apply(&patch))
        .await
        .expect("patch");
    let refused = eventually(Duration::from_secs(5), || async { chat().await.status() == 402 }).await;
    assert!(refused.is_some(), "the budget ignored the other replica's spend");
    let body: Value = chat().await.json().await.expect("json");
    assert_eq!(body["error"]["code"], "budget_exhausted");
    let data = maps.get("sluice-usage-demo").await.expect("get").data.unwrap_or_default();
    assert!(
        data.contains_key("gw-a.json") && data.contains_key("gw-b.json"),
        "replicas keep their own entries: {data:?}"
    );
}
