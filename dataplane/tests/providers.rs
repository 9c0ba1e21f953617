//! Providers of type `anthropic` and `gemini`: sluice-sim on a real socket speaking Anthropic's and
//! Gemini's wire formats behind them, driven by the official `openai` Python SDK (chat
//! completions translated both ways) and the `anthropic` SDK (Messages passed through, failover
//! across mixed backends, and Messages served by Gemini). Every answer's usage must be what the
//! access log accounted, at the Provider's prices.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use sluice_sim::Profile;
use support::{Gateway, Manifests, Sim, apikey, client, dead_url, recorder};

const KEY: &str = "sl_acme_providers_00000001";
const UPSTREAM_KEY: &str = "upstream-provider-secret";

/// Prices, per million tokens, of the two translated models.
const CLAUDE_PRICES: (f64, f64, f64) = (3.0, 0.3, 15.0);
const GEMINI_PRICES: (f64, f64, f64) = (1.25, 0.125, 10.0);

fn manifests(sim: &str, dead: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: standard}}
spec:
  timeouts: {{firstTokenMs: 5000, totalMs: 20000, idleStreamMs: 5000}}
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {{name: acme, namespace: acme}}
spec: {{slug: acme, defaultTier: standard}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream, namespace: acme}}
stringData: {{token: {UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: acme}}
spec:
  type: anthropic
  baseUrl: {sim}/v1
  credentials: {{secretKeyRef: {{name: upstream, key: token}}}}
  models:
    - name: claude-up
      maxOutputTokens: 64
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: {}, cachedInputPerMillion: {}, outputPerMillion: {}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: gem, namespace: acme}}
spec:
  type: gemini
  baseUrl: {sim}/v1beta
  credentials: {{secretKeyRef: {{name: upstream, key: token}}}}
  models:
    - name: gemini-up
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: {}, cachedInputPerMillion: {}, outputPerMillion: {}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: compatible, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}/v1
  credentials: {{secretKeyRef: {{name: upstream, key: token}}}}
  models:
    - name: open-up
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: dead-openai, namespace: acme}}
spec:
  type: openai
  baseUrl: {dead}
  models: [{{name: open-up, capabilities: [chat]}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: dead-claude, namespace: acme}}
spec:
  type: anthropic
  baseUrl: {dead}
  models: [{{name: claude-up, capabilities: [chat]}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: claude
      backends: [{{providerRef: {{name: claude}}, model: claude-up}}]
    - name: gemini
      backends: [{{providerRef: {{name: gem}}, model: gemini-up}}]
    - name: mixed-a
      backends:
        - {{providerRef: {{name: dead-openai}}, model: open-up, priority: 0}}
        - {{providerRef: {{name: claude}}, model: claude-up, priority: 1}}
    - name: mixed-b
      backends:
        - {{providerRef: {{name: dead-claude}}, model: claude-up, priority: 0}}
        - {{providerRef: {{name: compatible}}, model: open-up, priority: 1}}
---
{}
"#,
        CLAUDE_PRICES.0,
        CLAUDE_PRICES.1,
        CLAUDE_PRICES.2,
        GEMINI_PRICES.0,
        GEMINI_PRICES.1,
        GEMINI_PRICES.2,
        apikey("acme", "full", KEY, ""),
    )
}

async fn start() -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Profile { api_key: Some(UPSTREAM_KEY.into()), ..Sim::fast() }).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr), &dead_url()));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    (sim, dir, gateway)
}

fn python() -> String {
    support::tool("SLUICE_PYTHON", "python.sh")
}

fn run_script(gateway: &Gateway, name: &str, args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/python").join(name);
    let output = Command::new(python()).arg(script).args(args).output().expect("python runs");
    assert!(
        output.status.success(),
        "{name} failed:\n{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        gateway.log_text()
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// What the client saw (`prompt_tokens` with its cached part) against what the gateway
/// accounted: the same tokens, charged at `prices` (input, cached input, output per million).
fn assert_accounted(gateway: &Gateway, id: &str, prompt: u64, cached: u64, completion: u64, prices: (f64, f64, f64)) {
    let line = gateway.access_line(id);
    let fields = &line["fields"];
    assert_eq!(fields["status"], 200, "{id}: {line}");
    assert_eq!(fields["prompt_tokens"].as_u64(), Some(prompt), "{id}: {line}");
    assert_eq!(fields["completion_tokens"].as_u64(), Some(completion), "{id}: {line}");
    let expected =
        ((prompt - cached) as f64 * prices.0 + cached as f64 * prices.1 + completion as f64 * prices.2) / 1e6;
    let cost = fields["cost_usd"].as_f64().expect("cost");
    assert!(cost > 0.0 && (cost - expected).abs() < 1e-8, "{id}: cost {cost}, expected {expected}: {line}");
}

fn openai_usage(seen: &Value) -> (u64, u64, u64) {
    let n = |name: &str| seen[name].as_u64().unwrap_or_else(|| panic!("{name} in {seen}"));
    (n("prompt_tokens"), n("cached_tokens"), n("completion_tokens"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_talks_to_anthropic_and_gemini_upstreams() {
    let (_sim, _dir, gateway) = start().await;
    let base = gateway.url("/acme/chat/v1");
    let seen = run_script(&gateway, "gateway_providers_openai.py", &[&base, KEY, "claude", "gemini"]);

    for (model, prices) in [("claude", CLAUDE_PRICES), ("gemini", GEMINI_PRICES)] {
        let calls = &seen[model];
        assert_eq!(calls["create"]["finish_reason"], "length", "{model}: {calls}");
        assert_eq!(calls["create"]["completion_tokens"], 5, "{model}");
        assert_eq!(calls["natural"]["finish_reason"], "stop", "{model}: {calls}");
        assert!(calls["natural"]["completion_tokens"].as_u64().is_some_and(|n| n > 0 && n < 500), "{model}");
        assert_eq!(calls["stream"]["finish_reason"], "length", "{model}: {calls}");
        assert_eq!(calls["stream"]["completion_tokens"], 6, "{model}");
        assert_eq!(calls["tool"]["finish_reason"], "tool_calls", "{model}: {calls}");
        assert_eq!(calls["tool"]["name"], "get_weather", "{model}");
        assert!(calls["tool"]["arguments"]["city"].is_string(), "arguments follow the schema: {model}: {calls}");
        assert_eq!(calls["tool_result"]["finish_reason"], "stop", "after a tool result the model answers: {model}");
        assert!(calls["tool_result"]["content"].as_str().is_some_and(|c| !c.is_empty()), "{model}: {calls}");
        assert_eq!(calls["tool_stream"]["finish_reason"], "tool_calls", "{model}: {calls}");
        assert_eq!(calls["tool_stream"]["names"], json!(["get_weather"]), "{model}: {calls}");
        assert!(calls["tool_stream"]["arguments"]["city"].is_string(), "{model}: {calls}");
        for call in ["create", "natural", "stream", "tool", "tool_result", "tool_stream"] {
            let (prompt, cached, completion) = openai_usage(&calls[call]);
            assert!(prompt > 0, "{model}-{call}: {calls}");
            let id = format!("{model}-{}", call.replace('_', "-"));
            assert_accounted(&gateway, &id, prompt, cached, completion, prices);
        }
        let line = gateway.access_line(&format!("{model}-stream-plain"));
        assert!(line["fields"]["completion_tokens"].as_u64().is_some_and(|n| n == 4), "usage read anyway: {line}");
        let backend = if model == "claude" { "acme/claude/claude-up" } else { "acme/gem/gemini-up" };
        assert_eq!(line["fields"]["backend"], backend);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anthropic_sdk_is_passed_through_to_anthropic_upstreams() {
    let (_sim, _dir, gateway) = start().await;
    let seen = run_script(&gateway, "gateway_providers_anthropic.py", &[&gateway.url("/acme/chat"), KEY]);
    let anthropic_usage = |seen: &Value| {
        let n = |name: &str| seen[name].as_u64().unwrap_or_else(|| panic!("{name} in {seen}"));
        let cached = n("cache_read_input_tokens");
        (n("input_tokens") + cached, cached, n("output_tokens"))
    };

    // Passed through: the upstream's own message (its id and model name), its usage accounted.
    let create = &seen["create"];
    assert_eq!(create["stop_reason"], "max_tokens", "{create}");
    assert_eq!(create["model"], "claude-up", "the model rewritten to the backend's");
    assert!(create["id"].as_str().is_some_and(|id| id.starts_with("msg_")), "{create}");
    let (prompt, cached, completion) = anthropic_usage(create);
    assert_eq!(completion, 5);
    assert_accounted(&gateway, "anth-create", prompt, cached, completion, CLAUDE_PRICES);

    assert_eq!(seen["tool"]["stop_reason"], "tool_use", "{seen}");
    assert!(seen["tool"]["input"]["city"].is_string(), "{seen}");
    let (prompt, cached, completion) = anthropic_usage(&seen["tool"]);
    assert_accounted(&gateway, "anth-tool", prompt, cached, completion, CLAUDE_PRICES);

    let stream = &seen["stream"];
    assert_eq!(stream["stop_reason"], "max_tokens", "{stream}");
    let events: Vec<&str> = stream["events"].as_array().expect("events").iter().filter_map(Value::as_str).collect();
    assert_eq!(events.first(), Some(&"message_start"), "{events:?}");
    assert_eq!(events.last(), Some(&"message_stop"), "{events:?}");
    let (prompt, cached, completion) = anthropic_usage(stream);
    assert_eq!(completion, 7);
    assert_accounted(&gateway, "anth-stream", prompt, cached, completion, CLAUDE_PRICES);

    // Failover across mixed backends picks each attempt's translation.
    for (call, backend, prices) in
        [("mixed-a", "acme/claude/claude-up", CLAUDE_PRICES), ("mixed-b", "acme/compatible/open-up", (1.0, 1.0, 2.0))]
    {
        let answer = &seen[call];
        assert_eq!(answer["stop_reason"], "max_tokens", "{call}: {answer}");
        assert_eq!(answer["types"], json!(["text"]), "{call}: {answer}");
        let line = gateway.access_line(&format!("anth-{call}"));
        assert_eq!(line["fields"]["backend"], backend, "{call}: {line}");
        let (prompt, cached, completion) = anthropic_usage(answer);
        assert_accounted(&gateway, &format!("anth-{call}"), prompt, cached, completion, prices);
    }
    assert_eq!(seen["mixed-a"]["model"], "claude-up", "passed through from the Anthropic backend");

    // Messages served by Gemini: translated to chat, to Gemini, and back.
    let gemini = &seen["gemini"];
    assert_eq!(gemini["stop_reason"], "max_tokens", "{gemini}");
    let (prompt, cached, completion) = anthropic_usage(gemini);
    assert_eq!(completion, 5);
    assert_accounted(&gateway, "anth-gemini", prompt, cached, completion, GEMINI_PRICES);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_get_their_own_authentication_and_never_the_clients_key() {
    let message = json!({"id": "msg_r", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 1}});
    let (url, recorded) = recorder(message).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&url, &dead_url()));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    let http = client();

    let response = http
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("accept-encoding", "gzip")
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi");
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let response = http
        .post(gateway.url("/acme/chat/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2024-01-01")
        .header("anthropic-beta", "some-beta")
        .body(r#"{"model": "claude",  "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], "msg_r", "passed through");

    let received = recorded.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(received.len(), 2, "{received:?}");
    let (translated, passed) = (&received[0], &received[1]);
    for request in [translated, passed] {
        assert_eq!(request.path, "/v1/messages");
        assert_eq!(request.headers.get("x-api-key").map(String::as_str), Some(UPSTREAM_KEY));
        assert!(!request.headers.contains_key("authorization"), "{request:?}");
        assert!(request.headers.values().all(|v| !v.contains(KEY)), "the client's key leaked: {request:?}");
    }
    assert_eq!(translated.headers.get("anthropic-version").map(String::as_str), Some("2023-06-01"));
    assert!(!translated.headers.contains_key("accept-encoding"), "a translated answer must come uncompressed");
    assert_eq!(translated.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(translated.body["model"], "claude-up");
    assert_eq!(translated.body["max_tokens"], 64, "the model's maxOutputTokens when the request sets none");
    assert_eq!(passed.headers.get("anthropic-version").map(String::as_str), Some("2024-01-01"), "the client's");
    assert_eq!(passed.headers.get("anthropic-beta").map(String::as_str), Some("some-beta"));
    assert_eq!(
        passed.body,
        json!({"model": "claude-up", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}),
        "the client's body, its model renamed"
    );

    // Gemini: the model in the URL, the key in x-goog-api-key.
    let response = http
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gemini", "messages": [{"role": "user", "content": "Hi"}], "stream": true}))
        .send()
        .await
        .expect("send");
    // The recorder answers with a message, which no Gemini stream is: a 502 in OpenAI's shape.
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    let received = recorded.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let gemini = received.last().expect("a request");
    assert_eq!(gemini.path, "/v1beta/models/gemini-up:streamGenerateContent?alt=sse");
    assert_eq!(gemini.headers.get("x-goog-api-key").map(String::as_str), Some(UPSTREAM_KEY));
    assert!(!gemini.headers.contains_key("authorization"));
    assert_eq!(gemini.body["contents"], json!([{"role": "user", "parts": [{"text": "Hi"}]}]));
}
