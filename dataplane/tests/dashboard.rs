//! The chart's Grafana dashboard and alerts against the real gateway: after a chat, a streamed
//! chat with SLO hints, an embeddings call, a call to a pool and a refused request, every metric
//! their PromQL names is a series of the gateway's `/metrics` (histograms by their `_bucket`
//! series). `up` comes from Prometheus, and the operator's metrics are checked against the
//! operator's registry (operator/tests/monitoring.rs).

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use sluice_testenv::monitoring::{
    alert_expressions, dashboard, dashboard_expressions, metric_names, series_names, without_grafana_variables,
};
use support::{Gateway, Manifests, Sim, apikey, client};

const KEY: &str = "sl_acme_dashboard_0000000001";

fn tenant(sim: &str, pod: &str) -> String {
    format!(
        r#"{project}apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: primary, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}/v1
  models:
    - name: up-model
      capabilities: [chat]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
    - name: embed-model
      capabilities: [embeddings]
      pricing: {{inputPerMillion: 0.1, outputPerMillion: 0.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: pool, namespace: acme}}
spec: {{type: openai, addresses: ["{pod}/v1"], models: [{{name: up-model}}]}}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-chat
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
    - name: m-pool
      backends: [{{providerRef: {{name: pool}}, model: up-model}}]
    - name: m-embed
      backends: [{{providerRef: {{name: primary}}, model: embed-model}}]
---
{key}"#,
        project = support::ACME_PROJECT,
        key = apikey("acme", "dashboard", KEY, "  scopes: [inference]\n  budget: {limitUsd: 10}\n"),
    )
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let sim = Sim::start(Sim::fast()).await;
    let pod = Sim::start(Sim::fast()).await;
    let manifests = Manifests::new();
    manifests.write("tenant.yaml", &tenant(&format!("http://{}", sim.addr), &format!("http://{}", pod.addr)));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let http = client();
    let post = |path: &str, key: &str, body: serde_json::Value| {
        http.post(gateway.url(&format!("/acme/chat/v1/{path}"))).bearer_auth(key).json(&body)
    };
    let chat = json!({"model": "m-chat", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8});

    let answered = post("chat/completions", KEY, chat.clone()).send().await.expect("a chat");
    assert_eq!(answered.status(), 200, "{}", answered.text().await.unwrap_or_default());
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let streamed = post("chat/completions", KEY, stream)
        .header("X-SLO-TTFT-Ms", "5000")
        .header("X-SLO-TPOT-Ms", "1000")
        .send()
        .await
        .expect("a streamed chat");
    assert_eq!(streamed.status(), 200);
    let events = streamed.text().await.expect("the stream");
    assert!(events.contains("data: [DONE]"), "{events}");
    let embedded =
        post("embeddings", KEY, json!({"model": "m-embed", "input": "hello"})).send().await.expect("embeddings");
    assert_eq!(embedded.status(), 200, "{}", embedded.text().await.unwrap_or_default());
    let mut pooled = chat.clone();
    pooled["model"] = json!("m-pool");
    let pooled = post("chat/completions", KEY, pooled).send().await.expect("a pool's chat");
    assert_eq!(pooled.status(), 200, "{}", pooled.text().await.unwrap_or_default());
    let refused = post("chat/completions", "sl_acme_not_a_key_0000000000", chat).send().await.expect("a refusal");
    assert_eq!(refused.status(), 401);

    let scrape = http.get(gateway.admin_url("/metrics")).send().await.expect("a scrape");
    assert_eq!(scrape.status(), 200);
    let exported = series_names(&scrape.text().await.expect("the exposition"));

    // Where each name is used, to say so when one is missing.
    let mut used: Vec<(String, String)> = Vec::new();
    let board = dashboard().expect("the dashboard");
    let queries = dashboard_expressions(&board);
    assert!(queries.len() >= 30, "every panel's queries: {}", queries.len());
    for expr in &queries {
        for name in metric_names(&without_grafana_variables(expr)) {
            used.push((name, format!("dashboard: {expr}")));
        }
    }
    let alerts = alert_expressions().expect("the alerts");
    assert!(alerts.len() >= 7, "{alerts:?}");
    for (alert, expr) in &alerts {
        for name in metric_names(expr) {
            used.push((name, format!("alert {alert}")));
        }
    }
    let gateway_names: BTreeSet<&str> = used
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| *name != "up" && !name.starts_with("sluice_operator_"))
        .collect();
    // The reading of the PromQL finds what the panels are about (a reader that found nothing
    // would pass vacuously).
    for expected in [
        "sluice_requests_total",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_server_time_per_output_token_seconds_bucket",
        "sluice_cost_usd_total",
        "sluice_backend_slo_total",
        "sluice_backend_ejected",
        "sluice_pod_ejected",
        "sluice_upstream_attempts_total",
        "sluice_config_last_reload_successful",
    ] {
        assert!(gateway_names.contains(expected), "{expected} is not among {gateway_names:?}");
    }
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| gateway_names.contains(name.as_str()) && !exported.contains(name))
        .map(|(name, place)| format!("{name} ({place})"))
        .collect();
    assert!(missing.is_empty(), "not in the gateway's /metrics:\n{}\nexported: {exported:?}", missing.join("\n"));
}
