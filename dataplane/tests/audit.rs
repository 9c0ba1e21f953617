//! The audit log end to end: the real gateway, with `--audit-log` and a key file, serves
//! answered, streamed and refused requests from the simulator and is stopped as Kubernetes stops
//! it; its log then holds one record per request with the right metadata (and no key, key hash,
//! prompt or completion text), and the real `sluice-gateway audit verify` passes it, then fails
//! every tampered copy naming the line that was changed, removed, added or moved.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Gateway, Manifests, Sim, apikey, client};

const KEY: &str = "sl_acme_audit_0000000000000001";
const PROMPT: &str = "PROMPT-MARKER-51c2: what is the capital of France?";
const AUDIT_KEY: &str = "3f1c9a0d5b7e2f4a6c8e0b1d3f5a7c9e\n";

fn manifests(sim: &str) -> String {
    format!(
        r#"{}apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
---
{}
"#,
        support::acme_tenant(sim),
        apikey("acme", "web", KEY, ""),
    )
}

fn verify(args: &[&str], files: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"));
    command.args(["audit", "verify"]).args(args).args(files).env_remove("SLUICE_AUDIT_KEY_FILE");
    command.output().expect("verify runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A copy of `lines` (each without its newline) at `dir/name`.
fn copy(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    path
}

/// Asserts verify fails on `path` naming `line` and saying `what`.
fn fails_at(path: &Path, args: &[&str], line: usize, what: &str) {
    let output = verify(args, &[path]);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    let at = format!("{}:{line} ", path.display());
    assert!(said.contains(&at), "names {at}: {said}");
    assert!(said.contains(what), "says {what:?}: {said}");
}

async fn chat(gateway: &Gateway, id: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_audited_and_verify_finds_each_kind_of_tampering() {
    let sim = Sim::start(Sim::fast()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr)));
    let work = tempfile::tempdir().unwrap();
    let (log, key_file) = (work.path().join("audit.log"), work.path().join("audit.key"));
    std::fs::write(&key_file, AUDIT_KEY).unwrap();
    let (log_arg, key_arg) = (log.to_string_lossy().into_owned(), key_file.to_string_lossy().into_owned());
    let mut gateway = Gateway::start(
        Some(dir.path()),
        &[
            "--audit-log",
            &log_arg,
            "--audit-key-file",
            &key_arg,
            "--audit-checkpoint-records",
            "2",
            "--drain-seconds",
            "0",
        ],
    );

    let ask = |stream: bool| json!({"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12, "stream": stream});
    let answered = chat(&gateway, "audit-answered", KEY, ask(false)).await;
    assert_eq!(answered.status(), 200);
    let answer: Value = answered.json().await.unwrap();
    let completion = answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let streamed = chat(&gateway, "audit-streamed", KEY, ask(true)).await;
    assert_eq!(streamed.status(), 200);
    let events = streamed.text().await.unwrap();
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    let bad_key = chat(&gateway, "audit-bad-key", "sl_acme_not_a_key_at_all_0001", ask(false)).await;
    assert_eq!(bad_key.status(), 401);
    let unknown = chat(
        &gateway,
        "audit-unknown-model",
        KEY,
        json!({"model": "nope", "messages": [{"role": "user", "content": PROMPT}]}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let models = client()
        .get(gateway.url("/acme/chat/v1/models"))
        .bearer_auth(KEY)
        .header("x-request-id", "audit-models")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);

    gateway.terminate();
    let exit = gateway.exit_status(Duration::from_secs(20)).expect("the gateway stops");
    assert!(exit.success(), "{exit:?}\n{}", gateway.log_text());
    assert!(!gateway.log_text().contains(AUDIT_KEY.trim()), "the audit key is never logged");

    // What the log holds.
    let raw = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<String> = raw.lines().map(str::to_owned).collect();
    for secret in [KEY, PROMPT, "PROMPT-MARKER", AUDIT_KEY.trim(), &hex(&Sha256::digest(KEY.as_bytes()))] {
        assert!(!raw.contains(secret), "{secret:?} in the audit log:\n{raw}");
    }
    assert!(completion.len() > 10 && !raw.contains(&completion), "completion text in the audit log:\n{raw}");
    let parsed: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l.starts_with("{\"sluice_audit\":1,\"type\":\"")), "{raw}");
    assert_eq!(parsed[0]["type"], "start");
    let last = parsed.last().unwrap();
    assert_eq!((last["type"].as_str(), last["final"].as_bool()), (Some("checkpoint"), Some(true)), "{raw}");
    let record = |id: &str| -> (usize, &Value) {
        parsed
            .iter()
            .enumerate()
            .find(|(_, r)| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no record {id}:\n{raw}"))
    };
    assert_eq!(parsed.iter().filter(|r| r["type"] == "request").count(), 5, "one record per request:\n{raw}");

    let (answered_at, answered) = record("audit-answered");
    for (field, value) in
        [("project", "acme"), ("endpoint", "chat"), ("key_id", "acme/web"), ("model", "m"), ("client", "127.0.0.1")]
    {
        assert_eq!(answered[field], value, "{field}: {answered}");
    }
    assert!(answered["backend"].as_str().unwrap().contains("up-model"), "{answered}");
    assert_eq!(answered["status"], 200);
    assert_eq!(answered["error"], Value::Null);
    assert_eq!(answered["prompt_tokens"], answer["usage"]["prompt_tokens"], "{answered}");
    assert_eq!(answered["completion_tokens"], answer["usage"]["completion_tokens"], "{answered}");
    // 1 and 2 dollars per million tokens: exact nano-dollars.
    let (prompt, completion_tokens) =
        (answered["prompt_tokens"].as_u64().unwrap(), answered["completion_tokens"].as_u64().unwrap());
    let nanos = prompt * 1000 + completion_tokens * 2000;
    assert_eq!(answered["cost_usd"].as_f64().unwrap(), nanos as f64 / 1e9, "{answered}");
    let time = answered["time"].as_str().unwrap();
    assert!(time.len() == "2026-11-22T03:37:26.442598Z".len() && time.ends_with('Z') && time.contains('.'), "{time}");
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");

    let (_, streamed) = record("audit-streamed");
    assert_eq!((streamed["status"].as_u64(), streamed["model"].as_str()), (Some(200), Some("m")), "{streamed}");
    assert!(streamed["completion_tokens"].as_u64().unwrap() > 0, "{streamed}");
    assert!(streamed["cost_usd"].as_f64().unwrap() > 0.0, "{streamed}");

    let (_, refused) = record("audit-bad-key");
    assert_eq!(
        (refused["status"].as_u64(), refused["error"].as_str()),
        (Some(401), Some("invalid_api_key")),
        "{refused}"
    );
    assert_eq!((refused["key_id"].clone(), refused["backend"].clone()), (Value::Null, Value::Null), "{refused}");
    assert_eq!(refused["cost_usd"], 0);

    let (_, unknown) = record("audit-unknown-model");
    assert_eq!(
        (unknown["status"].as_u64(), unknown["error"].as_str()),
        (Some(404), Some("model_not_found")),
        "{unknown}"
    );
    assert_eq!(
        (unknown["project"].as_str(), unknown["key_id"].as_str()),
        (Some("acme"), Some("acme/web")),
        "{unknown}"
    );
    assert_eq!(unknown["model"], Value::Null, "the client's model name is not recorded: {unknown}");

    let (_, listed) = record("audit-models");
    assert_eq!((listed["status"].as_u64(), listed["key_id"].as_str()), (Some(200), Some("acme/web")), "{listed}");

    // The real verifier passes the untouched log...
    let output = verify(&["--key-file", &key_arg, "--require-final"], &[&log]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.starts_with(&format!("intact: 1 file, {} lines", lines.len())), "{said}");
    assert!(said.contains("5 requests") && said.contains("signatures verified"), "{said}");
    assert!(said.contains("closed by a final checkpoint"), "{said}");
    // ...says when signatures were not checked...
    let output = verify(&[], &[&log]);
    assert!(output.status.success() && text(&output).contains("NOT checked"), "{}", text(&output));
    // ...and fails with another key.
    let other = work.path().join("other.key");
    std::fs::write(&other, "another-key-that-is-long-enough").unwrap();
    let output = verify(&["--key-file", &other.to_string_lossy()], &[&log]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("wrong key"), "{}", text(&output));

    // Each kind of tampering, on a copy, is found at the right line (numbered from 1).
    let line = answered_at + 1;
    assert!(answered_at + 2 < lines.len(), "the answered record has lines after it:\n{raw}");
    let key_args = ["--key-file", key_arg.as_str()];
    let mut edited = lines.clone();
    edited[answered_at] = edited[answered_at].replace("\"status\":200", "\"status\":201");
    assert_ne!(edited, lines);
    fails_at(&copy(work.path(), "edited", &edited), &key_args, line, "changed");

    let mut deleted = lines.clone();
    deleted.remove(answered_at);
    fails_at(&copy(work.path(), "deleted", &deleted), &key_args, line, "missing");

    // A copy of a later record, put right after the answered one.
    let mut inserted = lines.clone();
    inserted.insert(answered_at + 1, lines[record("audit-models").0].clone());
    fails_at(&copy(work.path(), "inserted", &inserted), &key_args, line + 1, "added");

    let mut swapped = lines.clone();
    swapped.swap(answered_at, answered_at + 1);
    fails_at(&copy(work.path(), "swapped", &swapped), &key_args, line, "out of order");

    let first_checkpoint = parsed.iter().position(|r| r["type"] == "checkpoint").unwrap();
    assert!(first_checkpoint + 1 < lines.len() - 1, "a checkpoint before the final one:\n{raw}");
    let truncated = copy(work.path(), "truncated", &lines[..=first_checkpoint]);
    fails_at(
        &truncated,
        &["--require-final", "--key-file", &key_arg],
        first_checkpoint + 1,
        "without a final checkpoint",
    );
    let output = verify(&key_args, &[&truncated]);
    assert!(output.status.success() && text(&output).contains("NOT closed"), "{}", text(&output));

    let mut forged = lines.clone();
    let signed = &forged[first_checkpoint];
    let at = signed.rfind("\"signature\":\"").unwrap() + "\"signature\":\"".len();
    let flipped = if &signed[at..=at] == "a" { "b" } else { "a" };
    forged[first_checkpoint] = format!("{}{flipped}{}", &signed[..at], &signed[at + 1..]);
    fails_at(&copy(work.path(), "forged", &forged), &key_args, first_checkpoint + 1, "bad signature");
}

#[test]
fn a_bad_key_file_stops_the_gateway_before_it_serves() {
    let work = tempfile::tempdir().unwrap();
    let key_file = work.path().join("short.key");
    std::fs::write(&key_file, "k3y-c0ntent\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--audit-log"])
        .arg(work.path().join("audit.log"))
        .arg("--audit-key-file")
        .arg(&key_file)
        .env_remove("SLUICE_CONFIG")
        .output()
        .unwrap();
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("at least 16 bytes"), "{said}");
    assert!(!said.contains("k3y-c0ntent") && !work.path().join("audit.log").exists(), "{said}");
}

#[test]
fn audit_help_names_verify_and_the_gateway_flags_still_parse() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_sluice-gateway")).args(["audit", "verify", "--help"]).output().unwrap();
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("Usage: sluice-gateway audit verify") && said.contains("--key-file"), "{said}");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-gateway")).arg("--help").output().unwrap();
    let said = text(&output);
    assert!(said.contains("--audit-log") && said.contains("sluice-gateway audit --help"), "{said}");
    let output = verify(&[], &[Path::new("/nonexistent/audit.log")]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
