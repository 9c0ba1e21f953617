//! Official client SDKs, used exactly as their docs show, against the real gateway: in front of
//! sluice-sim providers of each type (`openai`, `anthropic`, `gemini`) on a real socket, and on
//! the embedded quickstart. Python `google-genai` (Gemini inbound, embeddings included) and
//! `openai` (Responses, image generation); Node `openai` (chat completions, embeddings) and
//! `@anthropic-ai/sdk` (Messages); Go `openai-go` (chat completions). Each client lives under
//! `tests/compat/<lang>/`, asserts what the SDK must be able to do, and prints what it saw; this
//! driver checks that against the gateway's access log. A missing tool fails the test naming the
//! setup script.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, tool};

const KEY: &str = "sl_acme_compat_000000000001";
/// The quickstart's key and endpoint (`examples/quickstart/`), served with no `--config`.
const QUICKSTART_KEY: &str = "sl_demo_quickstartkey";
const QUICKSTART: &str = "/demo/assistant";

fn manifests(sim: &str) -> String {
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
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: primary, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}/v1
  models:
    - name: up-model
      capabilities: [chat, tools, json]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
    - name: embed-model
      capabilities: [embeddings]
      pricing: {{inputPerMillion: 0.1}}
    - name: image-model
      capabilities: [images]
      pricing: {{inputPerMillion: 5.0, outputPerMillion: 40.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: claude, namespace: acme}}
spec:
  type: anthropic
  baseUrl: {sim}/v1
  models:
    - name: claude-up
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 3.0, cachedInputPerMillion: 0.3, outputPerMillion: 15.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: gem, namespace: acme}}
spec:
  type: gemini
  baseUrl: {sim}/v1beta
  models:
    - name: gemini-up
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 1.25, cachedInputPerMillion: 0.125, outputPerMillion: 10.0}}
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
    - name: m-image
      backends: [{{providerRef: {{name: primary}}, model: image-model}}]
    - name: claude
      backends: [{{providerRef: {{name: claude}}, model: claude-up}}]
    - name: gemini
      backends: [{{providerRef: {{name: gem}}, model: gemini-up}}]
---
{}
"#,
        apikey("acme", "full", KEY, ""),
    )
}

async fn start() -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr)));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    (sim, dir, gateway)
}

/// A tool a setup script exported, or a failure saying which script to source.
fn script(lang: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(lang).join(name)
}

/// Runs a client and returns the JSON it printed, failing with its output and the gateway's log.
fn run(gateway: &Gateway, mut command: Command) -> Value {
    let output = command.output().expect("the client runs");
    assert!(
        output.status.success(),
        "SDK checks failed:\n{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        gateway.log_text()
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("the client prints JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

/// What the client saw (`input`/`prompt` and `output` tokens) is what the gateway accounted.
fn assert_accounted(gateway: &Gateway, id: &str, input: &Value, output: &Value) {
    let line = gateway.access_line(id);
    let fields = &line["fields"];
    assert_eq!(&fields["prompt_tokens"], input, "{id}: {line}");
    assert_eq!(&fields["completion_tokens"], output, "{id}: {line}");
    assert_eq!(fields["status"], 200, "{id}: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_google_genai_generates_streams_counts_and_embeds() {
    let python = tool("SLUICE_PYTHON", "python.sh");
    let (_sim, _dir, gateway) = start().await;
    let mut command = Command::new(python);
    command.arg(script("python", "gemini_genai.py")).args([&gateway.url("/acme/chat"), KEY]);
    let seen = run(&gateway, command);
    assert_eq!(seen["generate"]["output"], 5, "{seen}");
    for (name, id) in [("generate", "genai-generate"), ("stream", "genai-stream")] {
        assert_accounted(&gateway, id, &seen[name]["prompt"], &seen[name]["output"]);
    }
    assert!(seen["count"].as_u64().is_some_and(|n| n > 0), "{seen}");
    let embed = &seen["embed"];
    assert_eq!((embed["count"].as_u64(), embed["dimensions"].as_u64()), (Some(2), Some(16)), "{seen}");
    assert_accounted(&gateway, "genai-embed", &embed["prompt"], &json!(0));
    assert_eq!(seen["not_found"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_openai_responses_create_and_stream() {
    let python = tool("SLUICE_PYTHON", "python.sh");
    let (_sim, _dir, gateway) = start().await;
    let mut command = Command::new(python);
    command.arg(script("python", "openai_responses.py")).args([&gateway.url("/acme/chat/v1"), KEY]);
    let seen = run(&gateway, command);
    assert_eq!(seen["create"]["status"], "incomplete", "{seen}");
    assert_eq!(seen["create"]["output"], 5, "{seen}");
    for (name, id) in [("create", "py-resp-create"), ("stream", "py-resp-stream"), ("helper", "py-resp-helper")] {
        assert_accounted(&gateway, id, &seen[name]["input"], &seen[name]["output"]);
    }
    let events: Vec<&str> =
        seen["stream"]["events"].as_array().expect("events").iter().filter_map(Value::as_str).collect();
    assert_eq!(events.first(), Some(&"response.created"), "{events:?}");
    assert_eq!(events.last(), Some(&"response.incomplete"), "cut by max_output_tokens: {events:?}");
    assert_eq!(seen["previous"], "unsupported_parameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_openai_images_generate() {
    let python = tool("SLUICE_PYTHON", "python.sh");
    let (_sim, _dir, gateway) = start().await;
    let mut command = Command::new(python);
    command.arg(script("python", "openai_images.py")).args([&gateway.url("/acme/chat/v1"), KEY]);
    let seen = run(&gateway, command);
    assert_eq!(seen["image"]["count"], 1, "{seen}");
    assert_accounted(&gateway, "py-image", &seen["image"]["input"], &seen["image"]["output"]);
    assert_eq!(seen["urls"], 2, "{seen}");
    assert_eq!(seen["chat_model"], "model_not_supported", "{seen}");
}

/// Where a client's requests should land: the model it asks for, the backend the access log
/// must name, and whether that backend honours JSON mode (Anthropic and Gemini are only asked).
struct Target {
    /// The endpoint's URL without `/v1` (what Anthropic's SDK takes; OpenAI's get `/v1` added).
    base: String,
    key: &'static str,
    model: &'static str,
    embed: Option<&'static str>,
    backend: &'static str,
    json_mode: bool,
}

/// The embedded quickstart, as `cargo run -p sluice-gateway` serves it.
fn quickstart() -> (Gateway, Target) {
    let gateway = Gateway::start(None, &[]);
    let target = Target {
        base: gateway.url(QUICKSTART),
        key: QUICKSTART_KEY,
        model: "demo-chat",
        embed: Some("demo-embed"),
        backend: "demo/simulated-chat/sim-chat-8b",
        json_mode: true,
    };
    (gateway, target)
}

/// The acme endpoint's model of one provider type, in front of sluice-sim.
fn provider(gateway: &Gateway, kind: &str) -> Target {
    let (model, embed, backend, json_mode) = match kind {
        "openai" => ("m-ok", Some("m-embed"), "acme/primary/up-model", true),
        "anthropic" => ("claude", None, "acme/claude/claude-up", false),
        "gemini" => ("gemini", None, "acme/gem/gemini-up", false),
        other => panic!("no provider of type {other}"),
    };
    Target { base: gateway.url("/acme/chat"), key: KEY, model, embed, backend, json_mode }
}

/// `node <script>` run from a temporary folder whose `node_modules` is the one `node.sh`
/// installed: ES modules resolve packages from the script's own folder (not `NODE_PATH`).
fn node(name: &str, args: &[&str]) -> (tempfile::TempDir, Command) {
    let modules = tool("SLUICE_NODE_MODULES", "node.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).expect("link node_modules");
    let copy = dir.path().join(name);
    std::fs::copy(script("node", name), &copy).expect("copy the client");
    let mut command = Command::new("node");
    command.arg(copy).args(args);
    (dir, command)
}

/// The access log line of `id`: answered 200 by `backend`, with the client's token counts.
fn assert_served(gateway: &Gateway, id: &str, backend: &str, prompt: u64, completion: u64) {
    let line = gateway.access_line(id);
    let fields = &line["fields"];
    assert_eq!(fields["status"], 200, "{id}: {line}");
    assert_eq!(fields["backend"], backend, "{id}: {line}");
    assert_eq!(fields["prompt_tokens"].as_u64(), Some(prompt), "{id}: {line}");
    assert_eq!(fields["completion_tokens"].as_u64(), Some(completion), "{id}: {line}");
    assert!(fields["cost_usd"].as_f64().is_some_and(|cost| cost > 0.0), "{id}: {line}");
}

fn count(seen: &Value, name: &str) -> u64 {
    seen[name].as_u64().unwrap_or_else(|| panic!("{name} in {seen}"))
}

/// What the OpenAI SDKs (Node and Go) saw of chat completions, checked against the log.
fn check_openai_chat(gateway: &Gateway, target: &Target, prefix: &str, seen: &Value) {
    let model = target.model;
    assert_eq!(seen["create"]["finish_reason"], "length", "{model}: {seen}");
    assert_eq!(seen["create"]["completion_tokens"], 5, "{model}: {seen}");
    assert_eq!(seen["stream"]["finish_reason"], "length", "{model}: {seen}");
    assert_eq!(seen["stream"]["completion_tokens"], 6, "{model}: {seen}");
    assert!(seen["stream"]["chunks"].as_u64().is_some_and(|n| n >= 3), "{model}: {seen}");
    assert_eq!(seen["tool"]["finish_reason"], "tool_calls", "{model}: {seen}");
    assert_eq!(seen["tool"]["name"], "get_weather", "{model}: {seen}");
    assert!(seen["tool"]["arguments"]["city"].is_string(), "arguments follow the schema: {model}: {seen}");
    assert_eq!(seen["tool_result"]["finish_reason"], "stop", "after the tool's result: {model}: {seen}");
    assert!(seen["tool_result"]["content"].as_str().is_some_and(|c| !c.is_empty()), "{model}: {seen}");
    for call in ["create", "stream", "tool", "tool_result"] {
        let usage = &seen[call];
        assert_eq!(count(usage, "total_tokens"), count(usage, "prompt_tokens") + count(usage, "completion_tokens"));
        let id = format!("{prefix}-{}", call.replace('_', "-"));
        assert_served(gateway, &id, target.backend, count(usage, "prompt_tokens"), count(usage, "completion_tokens"));
    }
    assert_eq!(seen["not_found"]["status"], 404, "{seen}");
    assert_eq!(seen["not_found"]["code"], "model_not_found", "{seen}");
}

/// Runs `tests/compat/node/openai.mjs` against `target` and checks all it saw.
fn node_openai(gateway: &Gateway, target: &Target, prefix: &str) {
    let base = format!("{}/v1", target.base);
    let args = [base.as_str(), target.key, target.model, target.embed.unwrap_or("-"), prefix];
    let (_dir, command) = node("openai.mjs", &args);
    let seen = run(gateway, command);
    check_openai_chat(gateway, target, prefix, &seen);

    let answer = &seen["json"];
    if target.json_mode {
        assert_eq!(answer["is_object"], true, "JSON mode gives a JSON object: {answer}");
    } else {
        assert!(answer["content"].as_str().is_some_and(|c| !c.is_empty()), "JSON mode is only asked: {answer}");
    }
    let id = format!("{prefix}-json");
    assert_served(gateway, &id, target.backend, count(answer, "prompt_tokens"), count(answer, "completion_tokens"));

    match target.embed {
        Some(embed) => {
            let embedding = &seen["embed"];
            assert_eq!(embedding["count"], 2, "{embedding}");
            assert!(count(embedding, "dimensions") > 0, "{embedding}");
            let line = gateway.access_line(&format!("{prefix}-embed"));
            assert_eq!(line["fields"]["status"], 200, "{line}");
            assert_eq!(line["fields"]["prompt_tokens"], embedding["prompt_tokens"], "{line}");
            assert!(seen["models"].as_array().is_some_and(|m| m.contains(&json!(embed))), "{seen}");
        }
        None => assert!(seen["embed"].is_null(), "{seen}"),
    }
    assert!(seen["models"].as_array().is_some_and(|m| m.contains(&json!(target.model))), "{seen}");
    assert_eq!(seen["not_found"]["class"], "NotFoundError", "{seen}");
    assert_eq!(seen["not_found"]["request_id"], format!("{prefix}-not-found"), "{seen}");
    assert_eq!(seen["bad_key"]["class"], "AuthenticationError", "{seen}");
    assert_eq!(seen["bad_key"]["status"], 401, "{seen}");
}

/// Runs `tests/compat/node/anthropic.mjs` against `target` and checks all it saw.
fn node_anthropic(gateway: &Gateway, target: &Target, prefix: &str) {
    let (_dir, command) = node("anthropic.mjs", &[&target.base, target.key, target.model, prefix]);
    let seen = run(gateway, command);
    let model = target.model;
    assert_eq!(seen["create"]["stop_reason"], "max_tokens", "{model}: {seen}");
    assert_eq!(seen["create"]["output_tokens"], 5, "{model}: {seen}");
    assert_eq!(seen["stream"]["stop_reason"], "max_tokens", "{model}: {seen}");
    assert_eq!(seen["stream"]["output_tokens"], 8, "{model}: {seen}");
    assert_eq!(seen["tool"]["stop_reason"], "tool_use", "{model}: {seen}");
    assert_eq!(seen["tool"]["name"], "get_weather", "{model}: {seen}");
    assert!(seen["tool"]["input"]["city"].is_string(), "input follows the schema: {model}: {seen}");
    assert_eq!(seen["tool_result"]["stop_reason"], "end_turn", "{model}: {seen}");
    assert!(seen["tool_result"]["types"].as_array().is_some_and(|t| t.contains(&json!("text"))), "{seen}");
    for call in ["create", "stream", "tool", "tool_result"] {
        let usage = &seen[call];
        // Anthropic's input_tokens leave out the cached part; the log's prompt_tokens count it.
        let prompt = count(usage, "input_tokens")
            + count(usage, "cache_creation_input_tokens")
            + count(usage, "cache_read_input_tokens");
        let id = format!("{prefix}-{}", call.replace('_', "-"));
        assert_served(gateway, &id, target.backend, prompt, count(usage, "output_tokens"));
    }
    assert!(count(&seen, "count") > 0, "{seen}");
    assert_eq!(seen["not_found"], json!({"class": "NotFoundError", "status": 404, "type": "not_found_error"}));
    assert_eq!(seen["bad_key"], json!({"class": "AuthenticationError", "status": 401, "type": "authentication_error"}));
}

/// Runs the `tests/compat/go` client (built by `go.sh`) against `target` and checks all it saw.
fn go_openai(gateway: &Gateway, target: &Target, prefix: &str) {
    let binary = tool("SLUICE_GO_COMPAT", "go.sh");
    let mut command = Command::new(binary);
    command.args([&format!("{}/v1", target.base), target.key, target.model, prefix]);
    let seen = run(gateway, command);
    check_openai_chat(gateway, target, prefix, &seen);
    assert_eq!(seen["not_found"]["type"], "invalid_request_error", "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_openai_on_the_quickstart() {
    let (gateway, target) = quickstart();
    node_openai(&gateway, &target, "node-openai-quickstart");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_openai_on_an_openai_provider() {
    let (_sim, _dir, gateway) = start().await;
    node_openai(&gateway, &provider(&gateway, "openai"), "node-openai-openai");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_openai_reaches_claude_through_translation() {
    let (_sim, _dir, gateway) = start().await;
    node_openai(&gateway, &provider(&gateway, "anthropic"), "node-openai-anthropic");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_openai_reaches_gemini_through_translation() {
    let (_sim, _dir, gateway) = start().await;
    node_openai(&gateway, &provider(&gateway, "gemini"), "node-openai-gemini");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_anthropic_on_the_quickstart() {
    let (gateway, target) = quickstart();
    node_anthropic(&gateway, &target, "node-anthropic-quickstart");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_anthropic_passed_through_to_an_anthropic_provider() {
    let (_sim, _dir, gateway) = start().await;
    node_anthropic(&gateway, &provider(&gateway, "anthropic"), "node-anthropic-anthropic");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_anthropic_reaches_gemini_through_translation() {
    let (_sim, _dir, gateway) = start().await;
    node_anthropic(&gateway, &provider(&gateway, "gemini"), "node-anthropic-gemini");
}

#[tokio::test(flavor = "multi_thread")]
async fn go_openai_on_the_quickstart() {
    let (gateway, target) = quickstart();
    go_openai(&gateway, &target, "go-quickstart");
}

#[tokio::test(flavor = "multi_thread")]
async fn go_openai_on_an_openai_provider() {
    let (_sim, _dir, gateway) = start().await;
    go_openai(&gateway, &provider(&gateway, "openai"), "go-openai");
}

#[tokio::test(flavor = "multi_thread")]
async fn go_openai_reaches_claude_through_translation() {
    let (_sim, _dir, gateway) = start().await;
    go_openai(&gateway, &provider(&gateway, "anthropic"), "go-anthropic");
}

#[tokio::test(flavor = "multi_thread")]
async fn go_openai_reaches_gemini_through_translation() {
    let (_sim, _dir, gateway) = start().await;
    go_openai(&gateway, &provider(&gateway, "gemini"), "go-gemini");
}
