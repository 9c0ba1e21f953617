//! The key-management API on the real binary, standalone: a `management` key creates, lists,
//! reads, updates, rotates and revokes keys, each written as a manifest into the config folder
//! that holds only the key's hash; each change works on the gateway within 2 seconds. A key
//! without `management` gets 403, a key may not be given scopes its creator lacks, another
//! project's key sees nothing, and keys from the user's own files are read but not changed.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

const ADMIN: &str = "sl_acme_keys_admin_0000001";
const PLAIN: &str = "sl_acme_keys_plain_0000001";
const OTHER_ADMIN: &str = "sl_other_keys_admin_000001";
/// The issue's bound on a key change reaching the gateway.
const PROPAGATION: Duration = Duration::from_secs(2);

struct Setup {
    _sim: Sim,
    manifests: Manifests,
    gateway: Gateway,
}

impl Setup {
    async fn start() -> Self {
        let sim = Sim::start(Sim::fast()).await;
        let manifests = Manifests::new();
        // The tenant names the simulator's root; its base URL ends in /v1.
        let root = sim.base_url().trim_end_matches("/v1").to_owned();
        let tenant = support::acme_tenant(&root);
        let text = format!(
            "{tenant}apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: acme}}\n\
spec: {{slug: chat, models: [{{name: m-ok, backends: [{{providerRef: {{name: primary}}, model: up-model}}]}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: other, namespace: other}}\nspec: {{slug: other, defaultTier: standard}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: other}}\n\
spec: {{slug: chat, models: [{{name: m-ok, backends: [{{providerRef: {{name: primary}}, model: up-model}}]}}]}}\n---\n{}\n---\n{}\n---\n{}\n",
            apikey("acme", "admin", ADMIN, "  scopes: [management, inference, models.read]\n"),
            apikey("acme", "plain", PLAIN, ""),
            apikey("other", "admin", OTHER_ADMIN, "  scopes: [management, inference]\n"),
        )
        // The other project's Provider: the same simulator.
        .replace(
            "apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {name: chat, namespace: other}",
            &format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: primary, namespace: other}}\n\
spec: {{type: openai, baseUrl: \"{root}/v1\", models: [{{name: up-model}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: other}}"
            ),
        );
        manifests.write("tenant.yaml", &text);
        let gateway = Gateway::start(Some(manifests.path()), &[]);
        Self { _sim: sim, manifests, gateway }
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = client().request(method, self.gateway.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The status of a small chat with `key`.
    async fn chat_status(&self, key: &str) -> StatusCode {
        let body = json!({"model": "m-ok", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        let response = client()
            .post(self.gateway.url("/acme/chat/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("chat");
        response.status()
    }

    /// Polls until a chat with `key` gets `want`, within the issue's bound.
    async fn until_chat(&self, key: &str, want: StatusCode) -> Duration {
        let took = eventually(PROPAGATION, || async { self.chat_status(key).await == want }).await;
        took.unwrap_or_else(|| panic!("a chat did not get {want} within {PROPAGATION:?}"))
    }

    /// Every file of the config folder, concatenated.
    fn folder_text(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.manifests.path()).expect("folder").flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }
}

fn key_of(value: &Value) -> String {
    value["key"].as_str().expect("the plaintext, once").to_owned()
}

#[tokio::test]
async fn a_management_key_creates_updates_rotates_and_revokes_keys_that_work_within_two_seconds() {
    let setup = Setup::start().await;
    let create = json!({"name": "ci-bot", "description": "CI pipeline", "scopes": ["inference"],
        "budget": {"limitUsd": 5.0, "period": "daily"}});
    let (status, created) = setup.call(Method::POST, "/acme/v1/keys", ADMIN, Some(create.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = key_of(&created);
    assert!(key.starts_with("sl_acme_") && key.len() > 40, "{key}");
    assert_eq!(created["name"], "ci-bot");
    assert_eq!(created["source"], "minted");
    assert_eq!(created["description"], "CI pipeline");
    assert_eq!(created["budget"], json!({"limitUsd": 5.0, "period": "daily"}), "the CRD's field names");
    assert_eq!(created["keyPrefix"], &key[..12]);
    let took = setup.until_chat(&key, StatusCode::OK).await;
    eprintln!("created key answered after {took:?}");

    // Stored as its hash only: the folder holds the hash, never the key.
    let folder = setup.folder_text();
    let hash = sluice_crds::config::hash_key(key.as_bytes());
    assert!(folder.contains(&hash), "the manifest holds the hash");
    assert!(!folder.contains(&key), "no file holds the plaintext");
    assert!(!setup.gateway.log_text().contains(&key), "no log holds the plaintext");

    // Listed and read without the key or its hash.
    let (status, list) = setup.call(Method::GET, "/acme/v1/keys", ADMIN, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list["data"].as_array().expect("data").iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["admin", "ci-bot", "plain"], "every key of the project, its own files' too");
    assert!(!list.to_string().contains(&hash) && !list.to_string().contains(&key[12..]), "{list}");
    let (status, one) = setup.call(Method::GET, "/acme/v1/keys/ci-bot", ADMIN, None).await;
    assert_eq!((status, one["scopes"].clone()), (StatusCode::OK, json!(["inference"])), "{one}");
    assert!(one.get("key").is_none(), "the plaintext is shown once");

    // A name in use, a second create with it, is refused.
    let (status, again) = setup.call(Method::POST, "/acme/v1/keys", ADMIN, Some(create)).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_exists")), "{again}");

    // Update: only list models now; a chat is then refused.
    let (status, updated) = setup
        .call(
            Method::PATCH,
            "/acme/v1/keys/ci-bot",
            ADMIN,
            Some(json!({"scopes": ["models.read"], "description": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert!(updated.get("description").is_none(), "null removes a field: {updated}");
    setup.until_chat(&key, StatusCode::FORBIDDEN).await;
    setup.call(Method::PATCH, "/acme/v1/keys/ci-bot", ADMIN, Some(json!({"scopes": ["inference"]}))).await;
    setup.until_chat(&key, StatusCode::OK).await;

    // Rotate with a grace period: both keys work; then without one: the old stops.
    let (status, rotated) =
        setup.call(Method::POST, "/acme/v1/keys/ci-bot/rotate", ADMIN, Some(json!({"gracePeriodSeconds": 600}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = key_of(&rotated);
    assert_ne!(second, key);
    assert!(rotated["previousKeyExpiresAt"].is_string(), "{rotated}");
    setup.until_chat(&second, StatusCode::OK).await;
    assert_eq!(setup.chat_status(&key).await, StatusCode::OK, "the old key works through the grace period");
    let (status, third) =
        setup.call(Method::POST, "/acme/v1/keys/ci-bot/rotate", ADMIN, Some(json!({"gracePeriodSeconds": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let third = key_of(&third);
    setup.until_chat(&third, StatusCode::OK).await;
    setup.until_chat(&second, StatusCode::UNAUTHORIZED).await;
    setup.until_chat(&key, StatusCode::UNAUTHORIZED).await;

    // Revoke: gone from the folder and from the gateway.
    let (status, revoked) = setup.call(Method::DELETE, "/acme/v1/keys/ci-bot", ADMIN, None).await;
    assert_eq!((status, revoked["deleted"].clone()), (StatusCode::OK, json!(true)), "{revoked}");
    let took = setup.until_chat(&third, StatusCode::UNAUTHORIZED).await;
    eprintln!("revoked key refused after {took:?}");
    let (status, gone) = setup.call(Method::GET, "/acme/v1/keys/ci-bot", ADMIN, None).await;
    assert_eq!((status, gone["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("key_not_found")));

    // Every call is in the access log, with what it did.
    let logs = setup.gateway.logs_with("key management");
    for action in ["\"create\"", "\"list\"", "\"update\"", "\"rotate\"", "\"revoke\""] {
        assert!(logs.contains(action), "{action} missing from:\n{logs}");
    }
    assert!(!setup.gateway.log_text().contains(&third), "no log holds a key");
}

#[tokio::test]
async fn scopes_projects_and_the_users_own_files_bound_what_a_key_may_do() {
    let setup = Setup::start().await;
    // Without `management`: 403, naming the scope.
    let (status, body) = setup.call(Method::GET, "/acme/v1/keys", PLAIN, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "scope_insufficient");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("management"), "{body}");
    let (status, _) = setup.call(Method::POST, "/acme/v1/keys", PLAIN, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Only scopes the caller holds.
    let (status, body) =
        setup.call(Method::POST, "/acme/v1/keys", ADMIN, Some(json!({"scopes": ["usage.read"]}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_not_grantable")));
    assert_eq!(body["error"]["param"], "scopes");

    // What the compiler would refuse is refused before anything is written.
    for (field, value) in [
        ("endpoints", json!(["nope"])),
        ("models", json!(["nope"])),
        ("tier", json!("gold")),
        ("allowedCidrs", json!(["10.0.0.0/33"])),
        ("expiresAt", json!("2020-01-01T00:00:00Z")),
    ] {
        let (status, body) = setup.call(Method::POST, "/acme/v1/keys", ADMIN, Some(json!({field: value}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }
    let (status, body) = setup.call(Method::POST, "/acme/v1/keys", ADMIN, Some(json!({"keyHash": {}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "key material is not writable: {body}");
    let (status, body) = setup.call(Method::POST, "/acme/v1/keys", ADMIN, Some(json!({"name": "Bad_Name"}))).await;
    assert_eq!((status, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
    let written: Vec<_> = std::fs::read_dir(setup.manifests.path())
        .expect("folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("key."))
        .collect();
    assert!(written.is_empty(), "nothing was written: {written:?}");

    // Another project's management key: this project's keys do not exist for it.
    let (status, body) = setup.call(Method::GET, "/acme/v1/keys", OTHER_ADMIN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = setup.call(Method::DELETE, "/acme/v1/keys/plain", OTHER_ADMIN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(setup.chat_status(PLAIN).await, StatusCode::OK, "untouched");
    let (status, list) = setup.call(Method::GET, "/other/v1/keys", OTHER_ADMIN, None).await;
    let names: Vec<&str> = list["data"].as_array().expect("data").iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!((status, names), (StatusCode::OK, vec!["admin"]), "its own project only");

    // A key from the user's own manifest is read, not rewritten.
    let (status, body) =
        setup.call(Method::PATCH, "/acme/v1/keys/plain", ADMIN, Some(json!({"description": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_conflict")), "{body}");
    let (status, body) = setup.call(Method::POST, "/acme/v1/keys/plain/rotate", ADMIN, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("key_not_rotatable")), "{body}");
    let (status, _) = setup.call(Method::PUT, "/acme/v1/keys/plain", ADMIN, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_gateway_with_nowhere_to_write_says_so() {
    let setup = Setup::start().await;
    // The same tenant as one file: a file is not a folder this API writes into.
    let file = setup.manifests.path().join("tenant.yaml");
    let gateway = Gateway::start(Some(&file), &[]);
    let response = client().get(gateway.url("/acme/v1/keys")).bearer_auth(ADMIN).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "key_management_unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("--config a folder"), "{body}");
}

/// The Python example of docs/management.md, exactly as printed, against a live gateway.
#[tokio::test]
async fn the_documented_python_example_runs() {
    let setup = Setup::start().await;
    let doc = include_str!("../../docs/management.md");
    let section = doc.split("### With Python").nth(1).expect("the section");
    let code = section.split("```python\n").nth(1).and_then(|rest| rest.split("\n```").next()).expect("a python block");
    let script = setup.manifests.path().join("example.py.txt");
    std::fs::write(&script, code).expect("write the example");
    let python = support::tool("SLUICE_PYTHON", "python.sh");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .env("SLUICE", setup.gateway.url("/acme"))
        .env("ADMIN_KEY", ADMIN)
        .env("ENDPOINT", "chat")
        .env("MODEL", "m-ok")
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("created python-demo sl_acme_"), "{stdout}");
    assert!(stdout.contains("answered True"), "{stdout}");
    assert!(stdout.contains("'python-demo'"), "listed: {stdout}");
    assert!(stdout.contains("revoked True"), "{stdout}");
    let (status, _) = setup.call(Method::GET, "/acme/v1/keys/python-demo", ADMIN, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "revoked for real");
}
