//! The web console and its JSON APIs on the real binary, without a browser: the console's files
//! go out with their types, a strict Content-Security-Policy and cache headers, and only for a
//! project whose console is on; the catalog, health and daily-usage APIs enforce the same scopes
//! as the rest of the gateway (any key its own, `usage.read` everyone's, a wrong key 401,
//! another project's key 404); the health API shows only the project's backends, and a backend
//! the simulator fails turns `ejected` there.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Gateway, Manifests, apikey, client, eventually, quickstart_manifests};

const DEMO: &str = "sl_demo_quickstartkey";
const READONLY: &str = "sl_demo_readonlykey";
const ADMIN: &str = "sl_demo_console_admin_000001";
const OTHER: &str = "sl_other_console_key_000001";

/// The quickstart, a key of it that reads usage and manages keys, project `other` (its own
/// simulated Provider, endpoint and key) and project `quiet`, whose console is off.
fn setup() -> (Manifests, Gateway) {
    let manifests = quickstart_manifests();
    manifests.write(
        "50-admin.yaml",
        &apikey("demo", "console-admin", ADMIN, "  scopes: [inference, models.read, usage.read, management]\n"),
    );
    let other = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: other, namespace: other}}\nspec: {{slug: other, defaultTier: standard}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: other-sim, namespace: other}}\n\
spec: {{type: simulated, models: [{{name: other-model, capabilities: [chat]}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: other}}\n\
spec: {{slug: chat, models: [{{name: secret-model, backends: [{{providerRef: {{name: other-sim}}, model: other-model}}]}}]}}\n---\n{}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: quiet, namespace: quiet}}\nspec: {{slug: quiet, defaultTier: standard, console: {{enabled: false}}}}\n",
        apikey("other", "k", OTHER, "  scopes: [inference, usage.read, management]\n"),
    );
    manifests.write("60-other.yaml", &other);
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    (manifests, gateway)
}

async fn get(gateway: &Gateway, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = client().get(gateway.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn chat(gateway: &Gateway, fault: Option<&str>) -> StatusCode {
    let mut request = client()
        .post(gateway.url("/demo/assistant/v1/chat/completions"))
        .bearer_auth(DEMO)
        .json(&json!({"model": "demo-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(fault) = fault {
        request = request.header("x-sim-fault", fault);
    }
    request.send().await.expect("chat").status()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn console_files_are_served_with_a_strict_policy_and_only_where_the_console_is_on() {
    let (_manifests, gateway) = setup();
    let http = client();
    let page = http.get(gateway.url("/demo/console/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let policy = header(&page, "content-security-policy");
    for part in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(policy.contains(part), "{part} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let etag = header(&page, "etag");
    let html = page.text().await.expect("html");
    let named = |prefix: &str, suffix: &str| -> String {
        let start = html.find(prefix).unwrap_or_else(|| panic!("{prefix} in {html}"));
        let rest = &html[start..];
        rest[..rest.find(suffix).expect("suffix") + suffix.len()].to_owned()
    };
    let (script, style) = (named("app.", ".js"), named("style.", ".css"));

    let js = http.get(gateway.url(&format!("/demo/console/{script}"))).send().await.expect("js");
    assert_eq!(js.status(), 200);
    assert_eq!(header(&js, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&js, "cache-control"), "public, max-age=31536000, immutable");
    assert!(!header(&js, "content-security-policy").is_empty());
    let css = http.get(gateway.url(&format!("/demo/console/{style}"))).send().await.expect("css");
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    let again = http.get(gateway.url("/demo/console/")).header("if-none-match", &etag).send().await.expect("again");
    assert_eq!(again.status(), 304, "the page is revalidated by its ETag");

    let bare = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let redirect = bare.get(gateway.url("/demo/console")).send().await.expect("redirect");
    assert_eq!(redirect.status(), 308);
    assert_eq!(header(&redirect, "location"), "console/");
    let post = http.post(gateway.url("/demo/console/")).send().await.expect("post");
    assert_eq!(post.status(), 405);

    for path in ["/demo/console/app.js", "/demo/console/style.css", "/quiet/console/", "/nowhere/console/"] {
        let (status, body) = get(&gateway, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unknown_url", "{path}");
    }
}

#[tokio::test]
async fn the_json_apis_enforce_the_gateways_scopes_and_tenancy() {
    let (_manifests, gateway) = setup();
    let paths = ["/demo/v1/catalog", "/demo/v1/health", "/demo/v1/keys/self/daily", "/demo/v1/usage/daily"];
    for path in paths {
        let (status, body) = get(&gateway, path, Some("sl_demo_not_a_key")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_api_key")),
            "{path}"
        );
        assert_eq!(get(&gateway, path, None).await.0, 401, "{path} without a key");
        let (status, body) = get(&gateway, path, Some(OTHER)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_url")),
            "{path}: {body}"
        );
        assert!(!body.to_string().contains("demo-chat"), "another project's key learns nothing: {body}");
    }

    // Any key of the project: the catalog, the health of its backends, its own daily usage.
    let (status, catalog) = get(&gateway, "/demo/v1/catalog", Some(DEMO)).await;
    assert_eq!(status, 200, "{catalog}");
    let endpoint = &catalog["endpoints"][0];
    assert_eq!(endpoint["path"], "/demo/assistant/v1");
    let model =
        endpoint["models"].as_array().and_then(|m| m.iter().find(|m| m["id"] == "demo-chat")).expect("demo-chat");
    assert_eq!(model["aliases"][0]["name"], "demo-chat-latest");
    assert_eq!(model["context_window"], 32768);
    assert_eq!(model["backends"][0]["pricing"]["output_per_million"], 0.4);
    assert!(model["capabilities"].as_array().expect("capabilities").contains(&json!("chat")));
    let text = catalog.to_string();
    assert!(!text.contains("secret-model") && !text.contains("other-sim"), "only this project: {text}");
    assert_eq!(get(&gateway, "/demo/v1/catalog", Some(READONLY)).await.0, 200, "a models.read key too");

    assert_eq!(chat(&gateway, None).await, 200);
    let (status, mine) = get(&gateway, "/demo/v1/keys/self/daily?days=7", Some(DEMO)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["days"].as_array().map(Vec::len), Some(7));
    assert_eq!(mine["key_id"], "demo/demo");
    assert_eq!(mine["by_model"][0]["model"], "demo-chat");
    assert_eq!(mine["by_day"][6]["requests"], 1, "today is the last day: {mine}");
    let (status, body) = get(&gateway, "/demo/v1/keys/self/daily?days=0", Some(DEMO)).await;
    assert_eq!((status, body["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("days")));
    let (_, admin_own) = get(&gateway, "/demo/v1/keys/self/daily", Some(ADMIN)).await;
    assert_eq!(admin_own["data"], json!([]), "its own usage only: {admin_own}");

    // Everyone's usage needs usage.read, key management needs management: 403 otherwise.
    for (path, scope) in [("/demo/v1/usage/daily", "usage.read"), ("/demo/v1/keys", "management")] {
        let (status, body) = get(&gateway, path, Some(DEMO)).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "scope_insufficient");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(scope)), "{body}");
    }
    let (status, all) = get(&gateway, "/demo/v1/usage/daily", Some(ADMIN)).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["by_key"][0]["key_id"], "demo/demo");
    assert_eq!(all["by_key"][0]["requests"], 1);
    assert_eq!(get(&gateway, "/demo/v1/keys", Some(ADMIN)).await.0, 200);
    let (_, others) = get(&gateway, "/other/v1/usage/daily", Some(OTHER)).await;
    assert_eq!(others["data"], json!([]), "another project's usage is its own: {others}");
}

#[tokio::test]
async fn the_health_api_shows_the_projects_backends_and_one_the_simulator_fails_turns_ejected() {
    let (_manifests, gateway) = setup();
    let state = |report: &Value, backend: &str| -> Option<String> {
        report["backends"].as_array()?.iter().find(|b| b["backend"] == backend)?["state"].as_str().map(str::to_owned)
    };
    const CHAT: &str = "demo/simulated-chat/sim-chat-8b";
    let (status, report) = get(&gateway, "/demo/v1/health", Some(DEMO)).await;
    assert_eq!(status, 200, "{report}");
    let names: Vec<&str> =
        report["backends"].as_array().expect("backends").iter().filter_map(|b| b["backend"].as_str()).collect();
    assert_eq!(
        names,
        ["demo/simulated-chat/sim-chat-8b", "demo/simulated-chat/sim-image-1", "demo/simulated-embed/sim-embed-small"]
    );
    assert_eq!(state(&report, CHAT).as_deref(), Some("healthy"));
    assert!(!report.to_string().contains("other"), "never another project's backends: {report}");
    assert_eq!(report["window_seconds"], 10);

    for _ in 0..3 {
        assert_eq!(chat(&gateway, None).await, 200);
    }
    let (_, report) = get(&gateway, "/demo/v1/health", Some(DEMO)).await;
    let chat_backend =
        report["backends"].as_array().and_then(|b| b.iter().find(|b| b["backend"] == CHAT)).expect("chat");
    assert!(chat_backend["observed"]["ttft_ms"].is_number() || chat_backend["window"]["requests"].as_u64() >= Some(3));
    assert_eq!(chat_backend["window"]["error_rate"], 0.0);

    // The in-process simulator fails every request that asks it to: five failures in a row eject.
    for _ in 0..6 {
        let status = chat(&gateway, Some("500")).await;
        assert!(status.is_server_error(), "{status}");
    }
    let ejected = eventually(Duration::from_secs(5), || async {
        state(&get(&gateway, "/demo/v1/health", Some(DEMO)).await.1, CHAT).as_deref() == Some("ejected")
    })
    .await;
    let (_, report) = get(&gateway, "/demo/v1/health", Some(DEMO)).await;
    assert!(ejected.is_some(), "the backend turns ejected: {report}");
    let chat_backend =
        report["backends"].as_array().and_then(|b| b.iter().find(|b| b["backend"] == CHAT)).expect("chat");
    assert!(chat_backend["ejected_until"].is_string(), "{chat_backend}");
    assert!(chat_backend["window"]["error_rate"].as_f64().is_some_and(|r| r > 0.5), "{chat_backend}");
    assert_eq!(state(&report, "demo/simulated-embed/sim-embed-small").as_deref(), Some("healthy"));
}
