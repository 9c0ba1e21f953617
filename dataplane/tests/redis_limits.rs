//! Limits shared by two gateway processes through one real `redis-server` (started here, on a
//! free loopback port, from `SLUICE_REDIS_SERVER`: run `source tests/setup/redis.sh`): the
//! combined limit holds; Redis killed mid-run follows the fallback policy and, once back, holds
//! every cent of spend exactly once; a Redis that accepts and never answers does not stall
//! requests.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

/// A redis-server of this test's own, with an append-only file so a restart keeps its data.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn redis_binary() -> String {
    match std::env::var("SLUICE_REDIS_SERVER") {
        Ok(path) if !path.is_empty() => path,
        _ => panic!(
            "SLUICE_REDIS_SERVER is not set: run `source tests/setup/redis.sh` (tests/run-all sources it) \
before `cargo test -p sluice-gateway --test redis_limits`"
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl RedisServer {
    fn start() -> Self {
        let mut server = Self { child: None, port: free_port(), dir: tempfile::tempdir().expect("tempdir") };
        server.run();
        server
    }

    fn run(&mut self) {
        let child = Command::new(redis_binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.connection().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut connection = client.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        redis::cmd("PING").query::<String>(&mut connection).ok()?;
        Some(connection)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sum of every field of the spend hashes of key `key_id`, nano-USD.
    fn spend_nano(&self, key_id: &str) -> u64 {
        let mut connection = self.connection().expect("redis answers");
        let hashes: Vec<String> =
            redis::cmd("KEYS").arg(format!("sluice:lim:{key_id}:spend:*")).query(&mut connection).expect("keys");
        hashes
            .iter()
            .map(|hash| {
                let fields: Vec<(String, u64)> = redis::cmd("HGETALL").arg(hash).query(&mut connection).expect("hash");
                fields.iter().map(|(_, v)| v).sum::<u64>()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn manifest_text(upstream: &str) -> String {
    let mut text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: free}}\nspec: {{}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: r20}}\nspec:\n  limits: {{requestsPerMinute: 20}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: lim, namespace: lim}}\nspec: {{slug: lim, defaultTier: free}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: sim, namespace: lim}}\nspec:\n  type: openai\n  baseUrl: {upstream}\n  models:\n    - name: up\n      capabilities: [chat]\n      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: lim}}\nspec:\n  slug: chat\n  models:\n    - name: m\n      backends: [{{providerRef: {{name: sim}}, model: up}}]\n"
    );
    for (name, extra) in [
        ("r20", "  tier: r20\n"),
        ("budget", "  budget: {limitUsd: 0.0003, period: monthly}\n"),
        ("spend", "  budget: {limitUsd: 100, period: daily}\n"),
    ] {
        text.push_str("---\n");
        text.push_str(&apikey("lim", name, &key(name), extra));
        text.push('\n');
    }
    text
}

fn key(name: &str) -> String {
    format!("sl_lim_{name}_000000000000000001")
}

async fn post(gateway: &Gateway, key_name: &str) -> reqwest::Response {
    let body = json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]});
    client()
        .post(gateway.url("/lim/chat/v1/chat/completions"))
        .bearer_auth(key(key_name))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// The cost of an answer in whole nano-USD, as the gateway rounds it.
async fn cost_nano(response: reqwest::Response) -> u64 {
    let answer: Value = response.json().await.expect("json");
    let usage = &answer["usage"];
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt") as f64;
    let completion = usage["completion_tokens"].as_u64().expect("completion") as f64;
    ((prompt + 2.0 * completion) / 1e6 * 1e9).round() as u64
}

async fn metric(gateway: &Gateway, name: &str) -> f64 {
    let text = client().get(gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

struct Setup {
    _sim: Sim,
    _manifests: Manifests,
    a: Gateway,
    b: Gateway,
}

async fn two_gateways(redis_url: &str) -> Setup {
    let sim = Sim::start(Sim::fast()).await;
    let manifests = Manifests::new();
    manifests.write("lim.yaml", &manifest_text(&sim.base_url()));
    let args =
        ["--redis-url", redis_url, "--replicas-hint", "2", "--redis-timeout-ms", "50", "--redis-probe-ms", "100"];
    let a = Gateway::start(Some(manifests.path()), &[&args[..], &["--pod-name", "a"]].concat());
    let b = Gateway::start(Some(manifests.path()), &[&args[..], &["--pod-name", "b"]].concat());
    Setup { _sim: sim, _manifests: manifests, a, b }
}

#[tokio::test]
async fn two_gateways_enforce_one_combined_limit() {
    let redis = RedisServer::start();
    let setup = two_gateways(&redis.url()).await;
    let started = Instant::now();
    let mut admitted = 0;
    for i in 0..40 {
        let gateway = if i % 2 == 0 { &setup.a } else { &setup.b };
        let response = post(gateway, "r20").await;
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => assert!(response.headers().contains_key("retry-after")),
            other => panic!("unexpected {other}"),
        }
    }
    // Tolerance: the 20 of the minute plus what refilled (one every 3 s) while the test ran.
    let refilled = (started.elapsed().as_secs_f64() / 3.0).ceil() as u64;
    assert!((20..=20 + refilled).contains(&admitted), "{admitted} admitted, {refilled} refilled");
    assert_eq!(metric(&setup.a, "sluice_limits_fallback_admissions_total").await, 0.0);

    // A budget over both: refused at the first request after it is spent, whichever replica.
    let mut spent = 0;
    let mut last = 0;
    for i in 0..200 {
        let gateway = if i % 2 == 0 { &setup.a } else { &setup.b };
        let response = post(gateway, "budget").await;
        if response.status() == 402 {
            break;
        }
        assert_eq!(response.status(), 200);
        // Settles are written right after each answer; tolerance: one request's spend in flight.
        assert!(spent < 300_000 + last, "admitted after {spent} of 300000 nano-USD");
        last = cost_nano(response).await;
        spent += last;
    }
    assert!(spent >= 300_000, "refused only once spent: {spent}");
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_then_loses_and_doubles_no_spend() {
    let mut redis = RedisServer::start();
    let setup = two_gateways(&redis.url()).await;
    let mut expected = 0;
    let mut requests = 0;
    for gateway in [&setup.a, &setup.b, &setup.a, &setup.b] {
        let response = post(gateway, "spend").await;
        assert_eq!(response.status(), 200);
        expected += cost_nano(response).await;
        requests += 1;
    }
    let written = eventually(Duration::from_secs(5), || async { redis.spend_nano("lim/spend") == expected }).await;
    assert!(written.is_some(), "spend written while Redis is up: {} vs {expected}", redis.spend_nano("lim/spend"));

    redis.kill();
    // The policy: every request is still served, each replica enforcing half of the tier.
    let mut admitted = 0;
    for _ in 0..14 {
        let response = post(&setup.a, "r20").await;
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!((10..=11).contains(&admitted), "half of 20 per replica (plus one refill at most): {admitted}");
    for gateway in [&setup.a, &setup.b, &setup.a, &setup.b, &setup.b] {
        let response = post(gateway, "spend").await;
        assert_eq!(response.status(), 200, "served on the fallback");
        expected += cost_nano(response).await;
        requests += 1;
    }
    assert!(metric(&setup.a, "sluice_limits_fallback_admissions_total").await >= 1.0);
    assert_eq!(metric(&setup.a, "sluice_limits_redis_up").await, 0.0);
    let logs = setup.a.logs_with("Redis unavailable");
    assert_eq!(logs.matches("Redis unavailable").count(), 1, "logged once:\n{logs}");

    redis.run();
    let back = eventually(Duration::from_secs(10), || async {
        metric(&setup.a, "sluice_limits_redis_up").await == 1.0
            && metric(&setup.b, "sluice_limits_redis_up").await == 1.0
            && redis.spend_nano("lim/spend") == expected
    })
    .await;
    assert!(back.is_some(), "after Redis returns every cent is there: {} vs {expected}", redis.spend_nano("lim/spend"));
    // Replays and later settles never count twice.
    for gateway in [&setup.a, &setup.b] {
        let response = post(gateway, "spend").await;
        assert_eq!(response.status(), 200);
        expected += cost_nano(response).await;
        requests += 1;
    }
    let settled = eventually(Duration::from_secs(5), || async { redis.spend_nano("lim/spend") == expected }).await;
    assert!(settled.is_some(), "{} vs {expected} after {requests} requests", redis.spend_nano("lim/spend"));
    tokio::time::sleep(Duration::from_millis(500)).await; // several probe intervals of replays
    assert_eq!(redis.spend_nano("lim/spend"), expected, "nothing counted twice");
    assert_eq!(metric(&setup.b, "sluice_limits_unwritten_spend").await, 0.0);
}

#[tokio::test]
async fn a_redis_that_never_answers_does_not_stall_requests() {
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let setup = two_gateways(&url).await;
    for i in 0..10 {
        let gateway = if i % 2 == 0 { &setup.a } else { &setup.b };
        let started = Instant::now();
        let response = post(gateway, "spend").await;
        let took = started.elapsed();
        assert_eq!(response.status(), 200);
        // The bound is 50 ms per Redis call; a generous multiple (20x) absorbs a loaded machine.
        assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
    }
    assert!(metric(&setup.a, "sluice_limits_fallback_admissions_total").await >= 1.0);
    assert!(metric(&setup.a, "sluice_limits_redis_errors_total").await >= 1.0);
}
