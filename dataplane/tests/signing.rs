//! Signed responses on the real binary: the Python verifier from docs/security.md (run with
//! python3, as a client would) accepts genuine answers, whole and streamed, and rejects a
//! changed byte or a stream cut short; refusals after the key opened the project are signed,
//! those before are not; during a rotation's grace both secrets verify; only a `management`
//! key reads the secret.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client};

const KEY: &str = "sl_acme_signed_000000000001";
const ADMIN_KEY: &str = "sl_acme_signed_admin_00001";
const SECRET: &str = "3f0c6c1d0b7e4a5f9e2d8c7b6a5f4e3d2c1b0a9f";
const OLD_SECRET: &str = "0000111122223333444455556666777788889999";

fn manifests(sim: &str, secret_data: &str) -> String {
    let tenant = support::acme_tenant(sim).replace(
        "spec: {slug: acme, defaultTier: standard}",
        "spec: {slug: acme, defaultTier: standard, signing: {secretName: acme-signing}}",
    );
    format!(
        r#"{tenant}apiVersion: v1
kind: Secret
metadata: {{name: acme-signing, namespace: acme}}
stringData:
{secret_data}---
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
---
{}
"#,
        apikey("acme", "caller", KEY, ""),
        apikey("acme", "admin", ADMIN_KEY, "  scopes: [management]\n"),
    )
}

/// The verifier, exactly as docs/security.md prints it, written into `dir`: each call has its
/// own copy, so tests running at once never read a file another is still writing.
fn verifier(dir: &Path) -> PathBuf {
    let doc = include_str!("../../docs/security.md");
    let section = doc.split("## Signed responses").nth(1).expect("the section");
    let code = section.split("```python\n").nth(1).and_then(|rest| rest.split("\n```").next()).expect("a python block");
    let path = dir.join("verify_sluice.py");
    std::fs::write(&path, code).expect("write the verifier");
    path
}

/// Runs the verifier; true when it says the response is genuine.
fn verifies(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("body");
    std::fs::write(&path, body).expect("write the body");
    let output = Command::new("python3")
        .arg(verifier(dir.path()))
        .args([secret, timestamp, signature])
        .arg(&path)
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(said == "valid" || said == "INVALID", "verifier: {said} {}", String::from_utf8_lossy(&output.stderr));
    output.status.success()
}

struct Raw {
    status: u16,
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

async fn post(gateway: &Gateway, key: &str, body: Value) -> Raw {
    let response = client()
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("send");
    raw(response).await
}

async fn raw(response: reqwest::Response) -> Raw {
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().expect("ascii").to_owned());
    let (status, timestamp, signature) =
        (response.status().as_u16(), header("x-sluice-timestamp"), header("x-sluice-signature"));
    let body = response.bytes().await.expect("body").to_vec();
    Raw { status, timestamp, signature, body }
}

fn chat(stream: bool) -> Value {
    json!({"model": "m-ok", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 12, "stream": stream})
}

async fn start(secret_data: &str) -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr), secret_data));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    (sim, dir, gateway)
}

#[tokio::test]
async fn whole_and_streamed_answers_verify_and_a_changed_byte_does_not() {
    let (_sim, _dir, gateway) = start(&format!("  secret: {SECRET}\n")).await;

    let whole = post(&gateway, KEY, chat(false)).await;
    assert_eq!(whole.status, 200);
    let (timestamp, signature) = (whole.timestamp.expect("timestamp"), whole.signature.expect("signature"));
    assert!(signature.starts_with("v1=") && !signature.contains(','), "{signature}");
    assert!(verifies(SECRET, &timestamp, &signature, &whole.body));
    let mut changed = whole.body.clone();
    let at = changed.iter().position(|b| *b == b'"').expect("json");
    changed[at + 1] ^= 0x01;
    assert!(!verifies(SECRET, &timestamp, &signature, &changed), "a changed byte must not verify");
    assert!(!verifies(OLD_SECRET, &timestamp, &signature, &whole.body), "another secret must not verify");
    assert!(!verifies(SECRET, "1000000000", &signature, &whole.body), "an old timestamp must not verify");

    let streamed = post(&gateway, KEY, chat(true)).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.signature.is_none(), "a stream's signature comes at its end");
    let timestamp = streamed.timestamp.expect("timestamp");
    let text = String::from_utf8_lossy(&streamed.body).into_owned();
    assert!(text.contains("data: [DONE]") && text.contains("\n: sluice-signature t="), "{text}");
    assert!(text.ends_with("\n\n"));
    assert!(verifies(SECRET, &timestamp, "-", &streamed.body));
    let mut changed = streamed.body.clone();
    let at = text.find("\"content\"").expect("a content delta") + 12;
    changed[at] ^= 0x01;
    assert!(!verifies(SECRET, &timestamp, "-", &changed), "a changed byte in a stream must not verify");
    let cut = text.find(": sluice-signature").expect("trailer");
    assert!(!verifies(SECRET, &timestamp, "-", &streamed.body[..cut]), "a stream without its end must not verify");

    // A refusal after the key opened the project is signed too...
    let unknown_model = post(&gateway, KEY, json!({"model": "nope", "messages": []})).await;
    assert_eq!(unknown_model.status, 404);
    let signature = unknown_model.signature.expect("a signed refusal");
    assert!(verifies(SECRET, &unknown_model.timestamp.expect("timestamp"), &signature, &unknown_model.body));
    // ...one before it is not: a stranger learns nothing about the project.
    let stranger = post(&gateway, "sl_acme_not_a_key_000000001", chat(false)).await;
    assert_eq!(stranger.status, 401);
    assert!(stranger.timestamp.is_none() && stranger.signature.is_none());
}

#[tokio::test]
async fn both_secrets_sign_during_a_rotation_and_only_management_keys_read_them() {
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let data =
        format!("  secret: \"{SECRET}\"\n  previousSecret: \"{OLD_SECRET}\"\n  previousSecretExpiresAt: \"{until}\"\n");
    let (_sim, _dir, gateway) = start(&data).await;

    let whole = post(&gateway, KEY, chat(false)).await;
    let (timestamp, signature) = (whole.timestamp.expect("timestamp"), whole.signature.expect("signature"));
    assert_eq!(signature.matches("v1=").count(), 2, "{signature}");
    assert!(verifies(SECRET, &timestamp, &signature, &whole.body));
    assert!(verifies(OLD_SECRET, &timestamp, &signature, &whole.body), "the previous secret verifies in its grace");
    let streamed = post(&gateway, KEY, chat(true)).await;
    let timestamp = streamed.timestamp.expect("timestamp");
    assert!(verifies(SECRET, &timestamp, "-", &streamed.body));
    assert!(verifies(OLD_SECRET, &timestamp, "-", &streamed.body));

    let read = |key: &'static str| {
        let url = gateway.url("/acme/v1/security/signing-secret");
        async move { client().get(url).bearer_auth(key).send().await.expect("send") }
    };
    let answer = read(ADMIN_KEY).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["algorithm"], "HMAC-SHA256");
    assert_eq!(body["secrets"][0]["secret"], SECRET);
    assert_eq!(body["secrets"][0]["expires_at"], Value::Null);
    assert_eq!(body["secrets"][1]["secret"], OLD_SECRET);
    assert_eq!(body["secrets"][1]["expires_at"], until.to_string());
    let refused = read(KEY).await;
    assert_eq!(refused.status(), 403);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "scope_insufficient", "{error}");
    assert!(!error.to_string().contains(SECRET));
    // A management key calls no model.
    let no_inference = post(&gateway, ADMIN_KEY, chat(false)).await;
    assert_eq!(no_inference.status, 403);
    // The secret is in no log line.
    let logs = gateway.log_text();
    assert!(!logs.contains(SECRET) && !logs.contains(OLD_SECRET));
}

#[tokio::test]
async fn an_expired_previous_secret_no_longer_signs_and_unsigned_projects_say_so() {
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let data =
        format!("  secret: \"{SECRET}\"\n  previousSecret: \"{OLD_SECRET}\"\n  previousSecretExpiresAt: \"{past}\"\n");
    let (sim, dir, gateway) = start(&data).await;
    let whole = post(&gateway, KEY, chat(false)).await;
    let (timestamp, signature) = (whole.timestamp.expect("timestamp"), whole.signature.expect("signature"));
    assert_eq!(signature.matches("v1=").count(), 1, "{signature}");
    assert!(!verifies(OLD_SECRET, &timestamp, &signature, &whole.body));

    // Signing off: no headers, and the secret endpoint says why.
    let sim = format!("http://{}", sim.addr);
    let unsigned =
        manifests(&sim, &format!("  secret: {SECRET}\n")).replace(", signing: {secretName: acme-signing}", "");
    dir.write("acme.yaml", &unsigned);
    let turned_off = support::eventually(std::time::Duration::from_secs(10), || async {
        post(&gateway, KEY, chat(false)).await.timestamp.is_none()
    })
    .await;
    assert!(turned_off.is_some(), "signing off after the reload");
    let answer = client()
        .get(gateway.url("/acme/v1/security/signing-secret"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 404);
    let error: Value = answer.json().await.expect("json");
    assert_eq!(error["error"]["code"], "signing_not_enabled");
}

#[test]
fn a_short_or_missing_signing_secret_is_a_config_error() {
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests("http://127.0.0.1:9", "  secret: too-short\n"));
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .arg("--config")
        .arg(dir.path())
        .arg("--check")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spec.signing.secretName") && stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains("too-short"), "the secret's value is never printed: {stderr}");

    // Without the operator nothing generates a secret: the Project must name its own.
    let text =
        manifests("http://127.0.0.1:9", &format!("  secret: {SECRET}\n")).replace("{secretName: acme-signing}", "{}");
    dir.write("acme.yaml", &text);
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .arg("--config")
        .arg(dir.path())
        .arg("--check")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spec.signing.secretName") && stderr.contains("required here"), "{stderr}");
}
