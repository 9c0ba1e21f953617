//! Hot reload of a folder of manifests: keys come and go within 2 seconds, other files in the
//! folder reload nothing, a broken change is rejected while the last good configuration keeps serving (and `/metrics` says so until the
//! folder is good again), and reloads never fail requests in flight.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, Manifests, apikey, client, eventually};

/// A tenant whose one model runs in the gateway's own simulator, `latency_ms` to the first token.
fn tenant(latency_ms: u32) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: basic}}\nspec: {{}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: shop, namespace: shop}}\nspec: {{slug: shop, defaultTier: basic}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: sim, namespace: shop}}\n\
spec: {{type: simulated, simulation: {{prefillOverheadMs: {latency_ms}, interTokenMs: 5, outputTokens: 4}}, models: [{{name: m}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: api, namespace: shop}}\n\
spec: {{slug: api, models: [{{name: chat, backends: [{{providerRef: {{name: sim}}, model: m}}]}}]}}\n"
    )
}

const KEY_A: &str = "sl_shop_key_a_000000000001";
const KEY_B: &str = "sl_shop_key_b_000000000001";

async fn status(gateway: &Gateway, key: &str) -> u16 {
    client()
        .post(gateway.url("/shop/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn admin(gateway: &Gateway) -> Value {
    client().get(gateway.admin_url("/config")).send().await.expect("config").json().await.expect("json")
}

#[tokio::test]
async fn keys_added_and_removed_take_effect_within_two_seconds() {
    let manifests = Manifests::new();
    manifests.write("tenant.yaml", &tenant(0));
    manifests.write("key-a.yaml", &apikey("shop", "a", KEY_A, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    assert_eq!(status(&gateway, KEY_A).await, 200);
    assert_eq!(status(&gateway, KEY_B).await, 401);

    manifests.write("key-b.yaml", &apikey("shop", "b", KEY_B, ""));
    let took = eventually(Duration::from_secs(2), || async { status(&gateway, KEY_B).await == 200 }).await;
    assert!(took.is_some(), "a new key did not work within 2 s");

    manifests.remove("key-a.yaml");
    let took = eventually(Duration::from_secs(2), || async { status(&gateway, KEY_A).await == 401 }).await;
    assert!(took.is_some(), "a removed key still worked after 2 s");
    assert_eq!(status(&gateway, KEY_B).await, 200);
    assert_eq!(admin(&gateway).await["generation"], 3);
}

#[tokio::test]
async fn files_beside_the_manifests_that_are_not_manifests_reload_nothing() {
    let manifests = Manifests::new();
    manifests.write("tenant.yaml", &tenant(0));
    manifests.write("key-a.yaml", &apikey("shop", "a", KEY_A, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    assert_eq!(admin(&gateway).await["generation"], 1);
    // An audit log, an editor's swap file and notes written into the folder, several times over.
    let mut log = String::new();
    for round in 0..10 {
        log.push_str(&format!("{{\"seq\":{round}}}\n"));
        manifests.write("audit.log", &log);
        manifests.write(".key-a.yaml.swp", &log);
        manifests.write("NOTES", &log);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(admin(&gateway).await["generation"], 1, "no reload for files the loader does not read");

    manifests.write("key-b.yaml", &apikey("shop", "b", KEY_B, ""));
    let took = eventually(Duration::from_secs(2), || async { status(&gateway, KEY_B).await == 200 }).await;
    assert!(took.is_some(), "a new manifest still reloads within 2 s");
    assert_eq!(admin(&gateway).await["generation"], 2);
}

#[tokio::test]
async fn a_broken_change_is_rejected_and_the_last_good_config_keeps_serving() {
    let manifests = Manifests::new();
    manifests.write("tenant.yaml", &tenant(0));
    manifests.write("key-a.yaml", &apikey("shop", "a", KEY_A, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let before = admin(&gateway).await;

    // A typo in a field name, and a key referencing a Secret that does not exist.
    manifests.write("key-b.yaml", &apikey("shop", "b", KEY_B, "  scopess: [inference]\n"));
    let rejected = eventually(Duration::from_secs(3), || async { !admin(&gateway).await["lastError"].is_null() }).await;
    assert!(rejected.is_some(), "the broken file was not noticed");
    let after = admin(&gateway).await;
    let error = after["lastError"].as_str().expect("error text");
    assert!(error.contains("key-b.yaml") && error.contains("spec.scopess: unknown field"), "{error}");
    assert_eq!(after["generation"], before["generation"], "nothing was swapped");
    assert_eq!(after["hashes"], before["hashes"]);
    assert_eq!(status(&gateway, KEY_A).await, 200, "the last good configuration still serves");
    assert_eq!(status(&gateway, KEY_B).await, 401);
    let metrics = client().get(gateway.admin_url("/metrics")).send().await.expect("m").text().await.expect("text");
    assert!(metrics.contains("sluice_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(gateway.logs_with("configuration rejected").contains("configuration rejected"));

    // Fixing the file recovers.
    manifests.write("key-b.yaml", &apikey("shop", "b", KEY_B, "  scopes: [inference]\n"));
    let fixed = eventually(Duration::from_secs(3), || async { status(&gateway, KEY_B).await == 200 }).await;
    assert!(fixed.is_some());
    assert!(admin(&gateway).await["lastError"].is_null());
}

/// The value of `sluice_config_last_reload_successful`, and how many loads succeeded.
async fn reload_metrics(gateway: &Gateway) -> (String, String) {
    let text = client().get(gateway.admin_url("/metrics")).send().await.expect("m").text().await.expect("text");
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{prefix}: {text}"))
    };
    (value("sluice_config_last_reload_successful "), value("sluice_config_reloads_total{result=\"success\"} "))
}

#[tokio::test]
async fn a_reverted_broken_change_clears_the_failing_gauge() {
    let manifests = Manifests::new();
    manifests.write("tenant.yaml", &tenant(0));
    manifests.write("key-a.yaml", &apikey("shop", "a", KEY_A, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    assert_eq!(reload_metrics(&gateway).await, ("1".to_owned(), "1".to_owned()));

    manifests.write("key-b.yaml", &apikey("shop", "b", KEY_B, "  scopess: [inference]\n"));
    let refused = eventually(Duration::from_secs(3), || async { reload_metrics(&gateway).await.0 == "0" }).await;
    assert!(refused.is_some(), "the refusal does not show in /metrics");

    // Taking the bad file away leaves the folder as the live configuration already is: nothing
    // is reloaded, and the source is good again.
    manifests.remove("key-b.yaml");
    let cleared = eventually(Duration::from_secs(3), || async { reload_metrics(&gateway).await.0 == "1" }).await;
    assert!(cleared.is_some(), "the gauge stayed at 0 after the folder was put back");
    assert_eq!(reload_metrics(&gateway).await.1, "1", "an unchanged configuration is not counted as a reload");
    assert_eq!(admin(&gateway).await["generation"], 1);
}

#[tokio::test]
async fn reloads_during_a_thousand_concurrent_requests_fail_none() {
    let manifests = Manifests::new();
    manifests.write("tenant.yaml", &tenant(300));
    manifests.write("key-a.yaml", &apikey("shop", "a", KEY_A, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(2000).build().expect("client");
    let url = gateway.url("/shop/api/v1/chat/completions");
    let requests = (0..1000).map(|i| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let stream = i % 2 == 0;
            let response = http
                .post(&url)
                .bearer_auth(KEY_A)
                .json(&json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": format!("q{i}")}]}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| e.to_string())?;
            if status == 200 && !body.contains("\"error\"") { Ok(()) } else { Err(format!("{status}: {body}")) }
        }
    });
    let all = tokio::spawn(futures::future::join_all(requests));
    // Reload five times while they run: new keys, and a changed tier.
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        manifests.write(
            &format!("extra-{round}.yaml"),
            &apikey("shop", &format!("extra{round}"), &format!("sl_shop_extra_{round}_0000000001"), ""),
        );
    }
    let results = all.await.expect("join");
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of 1000 failed, e.g. {:?}", failures.len(), failures.first());
    let generation = admin(&gateway).await["generation"].as_u64().expect("generation");
    assert!(generation >= 2, "reloads happened during the requests (generation {generation})");
}

#[tokio::test]
async fn a_stream_in_flight_finishes_after_its_key_is_revoked() {
    let manifests = Manifests::new();
    manifests.write(
        "tenant.yaml",
        &tenant(0).replace("interTokenMs: 5, outputTokens: 4", "interTokenMs: 50, outputTokens: 30"),
    );
    manifests.write("key-a.yaml", &apikey("shop", "a", KEY_A, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let mut response = client()
        .post(gateway.url("/shop/api/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "long answer"}]}))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    body.extend_from_slice(&response.chunk().await.expect("chunk").expect("first chunk"));
    manifests.remove("key-a.yaml");
    let revoked = eventually(Duration::from_secs(2), || async { status(&gateway, KEY_A).await == 401 }).await;
    assert!(revoked.is_some());
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).expect("utf8");
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream finished on its snapshot: {text}");
    assert!(text.matches("data: {").count() >= 30);
}
