//! What keys can read about usage, against the real gateway binary and the simulator:
//! `GET /<project>/v1/keys/self` before and after requests (usage, remaining budget), the
//! project's `GET /<project>/v1/usage` as JSON and CSV with rows per key, endpoint and model,
//! the refusals (401 without a key, 403 without `usage.read`, 400, 404, 405) in OpenAI's shape,
//! the per-key Prometheus counters, and, with two gateways sharing one `redis-server`, a key's
//! usage as the whole cluster saw it.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

fn manifest_text(upstream: &str) -> String {
    let mut text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: free}}\nspec: {{}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: r100}}\nspec:\n  limits: {{requestsPerMinute: 100, maxConcurrent: 4}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: use, namespace: use}}\nspec: {{slug: use, defaultTier: free}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: oth, namespace: oth}}\nspec: {{slug: oth, defaultTier: free}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: sim, namespace: use}}\nspec:\n  type: openai\n  baseUrl: {upstream}\n  models:\n    - name: up\n      capabilities: [chat]\n      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: use}}\nspec:\n  slug: chat\n  models:\n    - name: m\n      backends: [{{providerRef: {{name: sim}}, model: up}}]\n    - name: m2\n      backends: [{{providerRef: {{name: sim}}, model: up}}]\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: other, namespace: use}}\nspec:\n  slug: other\n  models:\n    - name: m\n      backends: [{{providerRef: {{name: sim}}, model: up}}]\n"
    );
    for (namespace, name, extra) in [
        ("use", "caller", "  tier: r100\n  budget: {limitUsd: 1.0, period: monthly}\n"),
        ("use", "reader", "  scopes: [usage.read]\n"),
        ("use", "plain", ""),
        ("oth", "stranger", "  scopes: [inference, usage.read]\n"),
    ] {
        text.push_str("---\n");
        text.push_str(&apikey(namespace, name, &key(name), extra));
        text.push('\n');
    }
    text
}

fn key(name: &str) -> String {
    format!("sl_use_{name}_000000000000000001")
}

/// A chat call with key `key_name`; returns the answer's cost in nano-USD and its usage.
async fn chat(gateway: &Gateway, key_name: &str, endpoint: &str, model: &str) -> (u64, u64, u64) {
    let body = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]});
    let response = client()
        .post(gateway.url(&format!("/use/{endpoint}/v1/chat/completions")))
        .bearer_auth(key(key_name))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    let prompt = answer["usage"]["prompt_tokens"].as_u64().expect("prompt");
    let completion = answer["usage"]["completion_tokens"].as_u64().expect("completion");
    // $1 per million in, $2 out: one token in is 1,000 nano-USD.
    ((prompt + 2 * completion) * 1000, prompt, completion)
}

async fn get(gateway: &Gateway, path: &str, key_name: Option<&str>) -> reqwest::Response {
    let mut request = client().get(gateway.url(path));
    if let Some(name) = key_name {
        request = request.bearer_auth(key(name));
    }
    request.send().await.expect("request")
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn usd(nano: u64) -> f64 {
    nano as f64 / 1e9
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-12)
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn keys_read_their_own_usage_and_readers_the_projects() {
    let sim = Sim::start(Sim::fast()).await;
    let manifests = Manifests::new();
    manifests.write("use.yaml", &manifest_text(&sim.base_url()));
    let gateway = Gateway::start(Some(manifests.path()), &[]);

    let before = json_of(get(&gateway, "/use/v1/keys/self", Some("caller")).await).await;
    assert_eq!(before["object"], "api_key");
    assert_eq!(
        (&before["id"], &before["name"], &before["namespace"]),
        (&json!("use/caller"), &json!("caller"), &json!("use"))
    );
    assert_eq!(before["scopes"], json!(["inference"]));
    assert_eq!(before["tier"], json!({"name": "r100", "source": "key"}));
    assert_eq!(before["limits"]["requests_per_minute"], 100);
    assert_eq!(before["limits"]["max_concurrent"], 4);
    assert!(before["limits"]["tokens_per_minute"].is_null());
    assert_eq!(before["usage"]["scope"], "replica");
    assert_eq!(before["usage"]["period"]["kind"], "monthly");
    assert_eq!(before["usage"]["requests"], 0);
    assert!(close(&before["budget"]["remaining_usd"], 1.0), "{before}");
    assert!(!before.to_string().contains(&key("caller")), "no key material");

    let mut cost = 0;
    let (mut prompt, mut completion) = (0, 0);
    for (endpoint, model) in [("chat", "m"), ("chat", "m2"), ("other", "m"), ("chat", "m")] {
        let (c, p, o) = chat(&gateway, "caller", endpoint, model).await;
        cost += c;
        prompt += p;
        completion += o;
    }
    chat(&gateway, "plain", "chat", "m").await;

    let after = json_of(get(&gateway, "/use/v1/keys/self", Some("caller")).await).await;
    let usage = &after["usage"];
    assert_eq!(
        (&usage["requests"], &usage["input_tokens"], &usage["output_tokens"]),
        (&json!(4), &json!(prompt), &json!(completion))
    );
    assert!(close(&usage["cost_usd"], usd(cost)), "{after}");
    assert!(close(&after["budget"]["spent_usd"], usd(cost)), "{after}");
    assert!(close(&after["budget"]["remaining_usd"], 1.0 - usd(cost)), "{after}");
    assert!(cost > 0);

    // Any valid key reads itself; a key without a budget has none left to show.
    let reader = json_of(get(&gateway, "/use/v1/keys/self", Some("reader")).await).await;
    assert_eq!((&reader["scopes"], &reader["tier"]["source"]), (&json!(["usage.read"]), &json!("project")));
    assert!(reader["budget"].is_null());
    assert_eq!(reader["usage"]["requests"], 0);

    // The project's usage, by key, endpoint and model.
    let report = json_of(get(&gateway, "/use/v1/usage", Some("reader")).await).await;
    assert_eq!(
        (&report["object"], &report["scope"], &report["period"]["which"]),
        (&json!("usage"), &json!("replica"), &json!("current"))
    );
    let rows: Vec<(String, String, String, u64)> = report["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let s = |f: &str| r[f].as_str().expect("label").to_owned();
            (s("key_id"), s("endpoint"), s("model"), r["requests"].as_u64().expect("requests"))
        })
        .collect();
    let row = |k: &str, e: &str, m: &str, n| (k.to_owned(), e.to_owned(), m.to_owned(), n);
    assert_eq!(
        rows,
        [
            row("use/caller", "chat", "m", 2),
            row("use/caller", "chat", "m2", 1),
            row("use/caller", "other", "m", 1),
            row("use/plain", "chat", "m", 1)
        ]
    );
    assert_eq!(report["totals"]["requests"], 5);
    let by = |list: &str, label: &str| -> Vec<(String, u64)> {
        report[list]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| (g[label].as_str().expect("label").to_owned(), g["requests"].as_u64().expect("n")))
            .collect()
    };
    assert_eq!(by("by_endpoint", "endpoint"), [("chat".to_owned(), 4), ("other".to_owned(), 1)]);
    assert_eq!(by("by_model", "model"), [("m".to_owned(), 4), ("m2".to_owned(), 1)]);
    assert_eq!(by("by_key", "key_id"), [("use/caller".to_owned(), 4), ("use/plain".to_owned(), 1)]);
    let caller_cost = report["by_key"][0]["cost_usd"].clone();
    assert!(close(&caller_cost, usd(cost)), "{report}");

    // The same as CSV, asked for in the query or the Accept header.
    for response in [
        get(&gateway, "/use/v1/usage?format=csv", Some("reader")).await,
        client()
            .get(gateway.url("/use/v1/usage"))
            .bearer_auth(key("reader"))
            .header("accept", "text/csv")
            .send()
            .await
            .expect("csv"),
    ] {
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().expect("type").starts_with("text/csv"));
        let text = response.text().await.expect("text");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "month,key_id,endpoint,model,requests,input_tokens,output_tokens,cost_usd");
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[1].contains(",use/caller,chat,m,2,"), "{text}");
        assert!(lines[4].contains(",use/plain,chat,m,1,"), "{text}");
    }
    let previous = json_of(get(&gateway, "/use/v1/usage?period=previous", Some("reader")).await).await;
    assert_eq!(previous["data"], json!([]));
    assert_ne!(previous["period"]["id"], report["period"]["id"]);

    // Refusals, in OpenAI's shape.
    assert_error(get(&gateway, "/use/v1/usage", None).await, 401, "missing_api_key").await;
    assert_error(get(&gateway, "/use/v1/keys/self", None).await, 401, "missing_api_key").await;
    let wrong =
        client().get(gateway.url("/use/v1/keys/self")).bearer_auth("sl_use_nobody_0000000000000000").send().await;
    assert_error(wrong.expect("request"), 401, "invalid_api_key").await;
    let refused = assert_error(get(&gateway, "/use/v1/usage", Some("caller")).await, 403, "scope_insufficient").await;
    assert!(refused["error"]["message"].as_str().expect("message").contains("usage.read"));
    assert_error(get(&gateway, "/use/v1/usage?period=last", Some("reader")).await, 400, "invalid_value").await;
    assert_error(get(&gateway, "/use/v1/keys/self", Some("stranger")).await, 404, "unknown_url").await;
    assert_error(get(&gateway, "/use/v1/usage", Some("stranger")).await, 404, "unknown_url").await;
    let post = client().post(gateway.url("/use/v1/usage")).bearer_auth(key("reader")).send().await.expect("post");
    assert_error(post, 405, "method_not_allowed").await;

    // Per-key counters, by id and never by key material.
    let metrics =
        client().get(gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"sluice_key_requests_total{project="use",key_id="use/caller"} 4"#), "{metrics}");
    assert!(metrics.contains(&format!(
        r#"sluice_key_tokens_total{{project="use",key_id="use/caller",direction="input"}} {prompt}"#
    )));
    assert!(metrics.contains(r#"sluice_key_requests_total{project="use",key_id="use/plain"} 1"#));
    assert!(metrics.lines().any(|l| l.starts_with(r#"sluice_key_cost_usd_total{project="use",key_id="use/caller"}"#)));
    for name in ["caller", "reader", "plain", "stranger"] {
        assert!(!metrics.contains(&key(name)), "metrics hold no key material");
        assert!(!gateway.log_text().contains(&key(name)), "logs hold no key material");
    }
}

/// A redis-server of this test's own, on a free loopback port.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let binary = match std::env::var("SLUICE_REDIS_SERVER") {
            Ok(path) if !path.is_empty() => path,
            _ => panic!("SLUICE_REDIS_SERVER is not set: run `source tests/setup/redis.sh` first"),
        };
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = Self { child, port, _dir: dir };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let client = redis::Client::open(server.url()).expect("url");
            let answered = client
                .get_connection_with_timeout(Duration::from_millis(500))
                .ok()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok());
            if answered.is_some() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", server.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn with_redis_a_key_sees_what_the_whole_cluster_served() {
    let redis = RedisServer::start();
    let sim = Sim::start(Sim::fast()).await;
    let manifests = Manifests::new();
    manifests.write("use.yaml", &manifest_text(&sim.base_url()));
    let args = ["--redis-url", &redis.url(), "--replicas-hint", "2", "--redis-probe-ms", "100"];
    let a = Gateway::start(Some(manifests.path()), &[&args[..], &["--pod-name", "a"]].concat());
    let b = Gateway::start(Some(manifests.path()), &[&args[..], &["--pod-name", "b"]].concat());

    let (mut cost, mut prompt) = (0, 0);
    for i in 0..5 {
        let gateway = if i < 2 { &a } else { &b };
        let (c, p, _) = chat(gateway, "caller", "chat", "m").await;
        cost += c;
        prompt += p;
    }
    // Each replica publishes its figures every --redis-probe-ms: A sees B's three once they are.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let converged = eventually(Duration::from_secs(10), || {
        let (a, seen) = (&a, seen.clone());
        async move {
            let answer = json_of(get(a, "/use/v1/keys/self", Some("caller")).await).await;
            let done = answer["usage"]["requests"] == 5;
            *seen.lock().expect("lock") = answer;
            done
        }
    })
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert!(converged.is_some(), "A never saw the cluster's 5 requests: {seen}");
    assert_eq!(seen["usage"]["scope"], "cluster");
    assert_eq!(seen["usage"]["input_tokens"], prompt);
    assert!(close(&seen["usage"]["cost_usd"], usd(cost)), "{seen}");
    assert!(close(&seen["budget"]["remaining_usd"], 1.0 - usd(cost)), "{seen}");
    // B sees the same (its own live, A's published).
    let from_b = json_of(get(&b, "/use/v1/keys/self", Some("caller")).await).await;
    assert_eq!((&from_b["usage"]["scope"], &from_b["usage"]["requests"]), (&json!("cluster"), &json!(5)));
    // The per-endpoint report stays each replica's own.
    let report = json_of(get(&a, "/use/v1/usage", Some("reader")).await).await;
    assert_eq!((&report["scope"], &report["totals"]["requests"]), (&json!("replica"), &json!(2)));
}
