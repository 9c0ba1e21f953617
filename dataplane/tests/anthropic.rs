//! Anthropic's Messages API on the gateway, in front of an OpenAI-compatible upstream (sluice-sim
//! on a real socket): the official `anthropic` Python SDK used as its docs show, and raw requests
//! for what the SDK will not send. The access log must carry the token counts the client saw.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client};

const KEY: &str = "sl_acme_anthropic_000000001";
const TIGHT_KEY: &str = "sl_acme_anthropic_tight_001";
const EMBED_ONLY_KEY: &str = "sl_acme_anthropic_embed_001";

fn manifests(upstream: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: standard}}
spec:
  timeouts: {{firstTokenMs: 5000, totalMs: 20000, idleStreamMs: 5000}}
---
apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: tight}}
spec:
  limits: {{requestsPerMinute: 1}}
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {{name: acme, namespace: acme}}
spec: {{slug: acme, defaultTier: standard}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: primary, namespace: acme}}
spec:
  type: openai
  baseUrl: {upstream}
  models:
    - name: up-model
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
    - name: embed-model
      capabilities: [embeddings]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
    - name: m-embed
      backends: [{{providerRef: {{name: primary}}, model: embed-model}}]
---
{}
---
{}
---
{}
"#,
        apikey("acme", "full", KEY, ""),
        apikey("acme", "tight", TIGHT_KEY, "  tier: tight\n"),
        apikey("acme", "embed-only", EMBED_ONLY_KEY, "  models: [m-embed]\n"),
    )
}

async fn start() -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&sim.base_url()));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    (sim, dir, gateway)
}

fn python() -> String {
    support::tool("SLUICE_PYTHON", "python.sh")
}

/// The client's usage (`input_tokens` leaves out cache reads) against what the gateway accounted.
fn assert_accounted(gateway: &Gateway, id: &str, seen: &Value) {
    let line = gateway.access_line(id);
    let fields = &line["fields"];
    let input = seen["input_tokens"].as_u64().expect("input") + seen["cache_read_input_tokens"].as_u64().expect("c");
    assert_eq!(fields["prompt_tokens"].as_u64(), Some(input), "{id}: {line}");
    assert_eq!(fields["completion_tokens"], seen["output_tokens"], "{id}: {line}");
    assert!(fields["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{id}: {line}");
    assert_eq!(fields["status"], 200, "{id}: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anthropic_python_sdk_talks_to_an_openai_upstream() {
    let python = python();
    let (_sim, _dir, gateway) = start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/python/gateway_anthropic.py");
    let output = Command::new(python)
        .arg(script)
        .args([&gateway.url("/acme/chat"), KEY, TIGHT_KEY, EMBED_ONLY_KEY])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "anthropic SDK checks failed:\n{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        gateway.log_text()
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    assert_eq!(seen["create"]["stop_reason"], "max_tokens");
    assert_eq!(seen["create"]["output_tokens"], 5);
    assert_accounted(&gateway, "anth-create", &seen["create"]);

    assert_eq!(seen["natural"]["stop_reason"], "end_turn");
    assert!(seen["natural"]["output_tokens"].as_u64().is_some_and(|n| n > 0 && n < 500));
    assert_accounted(&gateway, "anth-natural", &seen["natural"]);

    assert_eq!(seen["stream"]["stop_reason"], "end_turn");
    assert_accounted(&gateway, "anth-stream", &seen["stream"]);

    let events: Vec<&str> = seen["events"].as_array().expect("events").iter().filter_map(Value::as_str).collect();
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "three tokens, in Anthropic's event order (the SDK hides ping)"
    );

    assert_eq!(seen["tool"]["stop_reason"], "tool_use");
    assert!(seen["tool"]["input"].is_object());
    assert_eq!(seen["tool_result"]["stop_reason"], "end_turn", "after a tool result the model answers");
    assert_eq!(seen["tool_result"]["types"], json!(["text"]));
    assert_eq!(seen["tool_stream"]["stop_reason"], "tool_use");
    assert!(seen["tool_stream"]["json_deltas"].as_u64().is_some_and(|n| n >= 1), "{}", seen["tool_stream"]);
    assert_accounted(&gateway, "anth-tool-stream", &seen["tool_stream"]);
    assert!(
        seen["tool"]["input"].get("city").is_some_and(Value::is_string),
        "input follows the schema: {}",
        seen["tool"]
    );

    let counts: Vec<u64> = seen["count_tokens"].as_array().expect("counts").iter().filter_map(Value::as_u64).collect();
    assert!(counts[0] > 0 && counts[1] > counts[0], "{counts:?}");

    let errors = &seen["errors"];
    let expect = |name: &str, class: &str, status: u64, kind: &str| {
        let error = &errors[name];
        assert_eq!(
            (error["class"].as_str(), error["status"].as_u64(), error["type"].as_str()),
            (Some(class), Some(status), Some(kind)),
            "{name}: {error}"
        );
    };
    expect("bad_key", "AuthenticationError", 401, "authentication_error");
    expect("unknown_model", "NotFoundError", 404, "not_found_error");
    expect("not_allowed", "PermissionDeniedError", 403, "permission_error");
    expect("count_unknown_model", "NotFoundError", 404, "not_found_error");
    expect("rate_limited", "RateLimitError", 429, "rate_limit_error");
    assert!(errors["unknown_model"]["message"].as_str().is_some_and(|m| m.contains("no-such-model")));
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_requests_get_anthropic_answers() {
    let (_sim, _dir, gateway) = start().await;
    let http = client();
    let url = gateway.url("/acme/chat/v1/messages");
    let hello = json!({"model": "m-ok", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]});

    // Authorization: Bearer works too, and anthropic-version may be left out.
    let response = http.post(&url).bearer_auth(KEY).json(&hello).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!((body["type"].as_str(), body["stop_reason"].as_str()), (Some("message"), Some("max_tokens")));
    assert_eq!(body["usage"]["output_tokens"], 4);

    let send = |body: Value, version: &'static str| {
        http.post(&url).header("x-api-key", KEY).header("anthropic-version", version).json(&body).send()
    };
    let error = |status: u16, kind: &str, response: reqwest::Response| {
        let kind = kind.to_owned();
        async move {
            assert_eq!(response.status(), status);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], kind.as_str(), "{body}");
            body["error"]["message"].as_str().expect("message").to_owned()
        }
    };
    let message = error(
        400,
        "invalid_request_error",
        send(json!({"model": "m-ok", "messages": []}), "2023-06-01").await.expect("send"),
    )
    .await;
    assert!(message.contains("max_tokens"), "{message}");
    error(400, "invalid_request_error", send(hello.clone(), "latest").await.expect("send")).await;
    let message = error(400, "invalid_request_error", send(json!({"model": "m-ok", "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}), "2023-06-01").await.expect("send")).await;
    assert!(message.contains("web_search_20250305"), "{message}");
    error(
        400,
        "invalid_request_error",
        http.post(&url).header("x-api-key", KEY).body("not json").send().await.expect("send"),
    )
    .await;
    let message = error(401, "authentication_error", http.post(&url).json(&hello).send().await.expect("send")).await;
    assert!(message.contains("x-api-key"), "{message}");
    error(
        404,
        "not_found_error",
        http.post(gateway.url("/nope/chat/v1/messages"))
            .header("x-api-key", KEY)
            .json(&hello)
            .send()
            .await
            .expect("send"),
    )
    .await;
    // An embeddings model cannot take a chat request.
    error(
        400,
        "invalid_request_error",
        send(
            json!({"model": "m-embed", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}),
            "2023-06-01",
        )
        .await
        .expect("send"),
    )
    .await;

    // count_tokens over plain HTTP.
    let response = http
        .post(gateway.url("/acme/chat/v1/messages/count_tokens"))
        .header("x-api-key", KEY)
        .json(&json!({"model": "m-ok", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["input_tokens"].as_u64().is_some_and(|n| n > 0), "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");

    // The OpenAI path is unchanged: OpenAI errors there.
    let response = http.post(gateway.url("/acme/chat/v1/chat/completions")).json(&hello).send().await.expect("send");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_api_key");
}
