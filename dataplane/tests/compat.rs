//! Official client SDKs, used exactly as their docs show, against the real gateway in front of
//! an OpenAI-compatible upstream (sluice-sim on a real socket): Python `google-genai` (Gemini
//! inbound) and `openai` (Responses). Each client script lives under `tests/compat/<lang>/`,
//! asserts what the SDK must be able to do, and prints what it saw; this driver checks that
//! against the gateway's access log. A missing tool fails the test naming the setup script.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{Gateway, Manifests, Sim, apikey};

const KEY: &str = "sl_acme_compat_000000000001";

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
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
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
fn tool(variable: &str, script: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with `tests/run-all` (or `source tests/setup/{script}` first)")
    })
}

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

/// The access log line of the request with `id`.
fn access_line(gateway: &Gateway, id: &str) -> Value {
    let needle = format!("\"request_id\":\"{id}\"");
    let logs = gateway.logs_with(&needle);
    logs.lines()
        .filter(|line| line.contains(&needle) && line.contains("sluice::access"))
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or_else(|| panic!("no access log line for {id}:\n{logs}"))
}

/// What the client saw (`input`/`prompt` and `output` tokens) is what the gateway accounted.
fn assert_accounted(gateway: &Gateway, id: &str, input: &Value, output: &Value) {
    let line = access_line(gateway, id);
    let fields = &line["fields"];
    assert_eq!(&fields["prompt_tokens"], input, "{id}: {line}");
    assert_eq!(&fields["completion_tokens"], output, "{id}: {line}");
    assert_eq!(fields["status"], 200, "{id}: {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_google_genai_generates_streams_and_counts() {
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
