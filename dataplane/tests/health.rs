//! Passive health against real sockets: two backends, the first of which hangs or fails and
//! is tried first by every request while it is not ejected (`priorityFailover`), so that what
//! health saves is seen on every request, not on the ones a random draw sends there. A hung backend costs at most one deadline (non-streaming too) before it is ejected,
//! and none after; a failing one costs the client nothing; ejection survives a reload; the
//! client going away mid-attempt leaves no phantom load; malformed SLO hints are refused.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_sim::Profile;
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

const KEY: &str = "sl_health_key_0000000001";
/// The tier's first-token timeout: the cold deadline of a backend nothing is known about.
const FIRST_TOKEN_MS: u64 = 1_500;
/// A request is "fast" below this: far above a simulator's answer, far below one deadline.
const FAST: Duration = Duration::from_millis(1_200);
/// No request may take longer than this (one deadline plus slack for a loaded machine), far
/// under the tier's 120 s total time.
const AT_MOST: Duration = Duration::from_secs(8);

/// Backends `bad` (tried first) and `good` share model `chat` on endpoint `api`; endpoint
/// `solo` has only `bad`, under a patient tier.
fn tenant(good: &str, bad: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: quick}}\n\
spec: {{timeouts: {{firstTokenMs: {FIRST_TOKEN_MS}, totalMs: 120000, idleStreamMs: 5000}}, slo: {{ttftMs: 700}}}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: patient}}\n\
spec: {{timeouts: {{firstTokenMs: 30000, totalMs: 60000, idleStreamMs: 30000}}}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: t, namespace: t}}\nspec: {{slug: t, defaultTier: quick}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: good, namespace: t}}\n\
spec: {{type: openai, baseUrl: \"{good}\", models: [{{name: m}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: bad, namespace: t}}\n\
spec: {{type: openai, baseUrl: \"{bad}\", models: [{{name: m}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: api, namespace: t}}\n\
spec: {{slug: api, routing: {{policy: priorityFailover}}, models: [{{name: chat, backends: [{{providerRef: {{name: bad}}, model: m}}, {{providerRef: {{name: good}}, model: m}}]}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: solo, namespace: t}}\n\
spec: {{slug: solo, tier: patient, models: [{{name: chat, backends: [{{providerRef: {{name: bad}}, model: m}}]}}]}}\n"
    )
}

struct Setup {
    /// Serves for the test's life.
    _good: Sim,
    bad: Sim,
    manifests: Manifests,
    gateway: Gateway,
}

impl Setup {
    async fn start(bad: Profile) -> Self {
        let good = Sim::start(Sim::fast()).await;
        let bad = Sim::start(bad).await;
        let manifests = Manifests::new();
        manifests.write("tenant.yaml", &tenant(&good.base_url(), &bad.base_url()));
        manifests.write("key.yaml", &apikey("t", "k", KEY, ""));
        let gateway = Gateway::start(Some(manifests.path()), &[]);
        Self { _good: good, bad, manifests, gateway }
    }

    async fn hanging() -> Self {
        let mut profile = Sim::fast();
        profile.faults.hang_rate = 1.0;
        profile.faults.hang_ms = 60_000;
        Self::start(profile).await
    }

    /// One chat request; returns its status, `x-sluice-backend`, body and duration.
    async fn chat(&self, endpoint: &str, stream: bool) -> (u16, String, String, Duration) {
        let started = Instant::now();
        let response = client()
            .post(self.gateway.url(&format!("/t/{endpoint}/v1/chat/completions")))
            .bearer_auth(KEY)
            .json(&json!({"model": "chat", "stream": stream, "max_tokens": 8,
                "messages": [{"role": "user", "content": "Say hello"}]}))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let backend = response
            .headers()
            .get("x-sluice-backend")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response.text().await.expect("body");
        (status, backend, body, started.elapsed())
    }

    async fn config(&self) -> Value {
        client().get(self.gateway.admin_url("/config")).send().await.expect("config").json().await.expect("json")
    }

    async fn backend(&self, provider: &str) -> Value {
        let config = self.config().await;
        let backends = config["backends"].as_array().cloned().unwrap_or_default();
        backends.into_iter().find(|b| b["provider"] == provider).unwrap_or(Value::Null)
    }

    async fn metrics(&self) -> String {
        client().get(self.gateway.admin_url("/metrics")).send().await.expect("m").text().await.expect("text")
    }

    /// How many requests reached the bad simulator, by the fault it injected.
    fn bad_received(&self, kind: &str) -> u64 {
        let needle = format!("kind=\"{kind}\"}}");
        let text = self.bad.sim.render_metrics();
        let line = text.lines().find(|l| l.starts_with("sluice_sim:faults_injected") && l.contains(&needle));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Sends `n` requests one after another: each must succeed from `good` within one
    /// deadline; returns how many were slow.
    async fn all_served_by_good(&self, n: usize, stream: bool) -> usize {
        let mut slow = 0;
        for i in 0..n {
            let (status, backend, body, took) = self.chat("api", stream).await;
            assert_eq!(status, 200, "request {i}: {body}");
            assert_eq!(backend, "t/good/m", "request {i}");
            assert!(!body.contains("\"error\""), "request {i}: {body}");
            if stream {
                assert!(body.ends_with("data: [DONE]\n\n"), "request {i}: {body}");
            }
            assert!(took < AT_MOST, "request {i} took {took:?}: more than one deadline");
            if took >= FAST {
                slow += 1;
            }
        }
        slow
    }
}

async fn a_hung_backend_costs_one_deadline_then_none(stream: bool) {
    let setup = Setup::hanging().await;
    // Every request tries the hung backend first until it is ejected.
    let slow = setup.all_served_by_good(30, stream).await;
    assert_eq!(setup.bad_received("hang"), 1, "only the first request that drew it went there");
    assert_eq!(slow, 1, "one request paid one deadline, no other");
    let bad = setup.backend("t/bad").await;
    assert_eq!(bad["health"], "ejected", "{bad}");
    assert!(bad["ejectedUntil"].is_string(), "{bad}");
    assert_eq!(bad["inFlight"], 0, "{bad}");
    let good = setup.backend("t/good").await;
    assert_eq!(good["health"], "healthy", "{good}");
    assert_eq!(good["windowRequests"], 30, "{good}");
    let metrics = setup.metrics().await;
    let ejected = "sluice_backend_ejections_total{provider=\"t/bad\",model=\"m\",reason=\"timeout\"} 1";
    assert!(metrics.contains(ejected), "{metrics}");
    assert!(metrics.contains("sluice_backend_ejected{provider=\"t/bad\",model=\"m\"} 1"), "{metrics}");
    assert!(!metrics.contains(KEY), "no key in metrics");
}

#[tokio::test]
async fn a_hung_backend_costs_one_deadline_then_none_without_streaming() {
    a_hung_backend_costs_one_deadline_then_none(false).await;
}

#[tokio::test]
async fn a_hung_backend_costs_one_deadline_then_none_when_streaming() {
    a_hung_backend_costs_one_deadline_then_none(true).await;
}

#[tokio::test]
async fn a_failing_backend_costs_the_client_nothing() {
    let mut profile = Sim::fast();
    profile.faults.errors = vec![sluice_sim::ErrorFault { status: 500, rate: 1.0 }];
    let setup = Setup::start(profile).await;
    for stream in [false, true] {
        assert_eq!(setup.all_served_by_good(20, stream).await, 0, "failover is immediate");
    }
    assert_eq!(setup.bad_received("status_500"), 5, "ejected after five failures in a row");
    let bad = setup.backend("t/bad").await;
    assert_eq!((bad["health"].as_str(), bad["consecutiveFailures"].as_u64()), (Some("ejected"), Some(5)), "{bad}");
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains(
            "sluice_backend_ejections_total{provider=\"t/bad\",model=\"m\",reason=\"consecutive_failures\"} 1"
        ),
        "{metrics}"
    );
    // The tier's default TTFT hint applies; a malformed hint is refused, naming its header.
    for (header, value) in [("X-SLO-TTFT-Ms", "soon"), ("x-llm-d-slo-tpot-ms", "0"), ("X-SLO-TPOT-Ms", "600001")] {
        let response = client()
            .post(setup.gateway.url("/t/api/v1/chat/completions"))
            .bearer_auth(KEY)
            .header(header, value)
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_slo_hint", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(message.contains(&header.to_ascii_lowercase()), "{body}");
        assert!(body["error"]["param"].as_str().is_some_and(|p| p.eq_ignore_ascii_case(header)), "{body}");
    }
    let response = client()
        .post(setup.gateway.url("/t/api/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("X-SLO-TTFT-Ms", "250")
        .header("x-llm-d-slo-tpot-ms", "40")
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "well-formed hints are accepted");
}

#[tokio::test]
async fn ejection_survives_a_reload() {
    let setup = Setup::hanging().await;
    setup.all_served_by_good(30, false).await;
    let before = setup.backend("t/bad").await;
    assert_eq!(before["health"], "ejected", "{before}");
    let generation = setup.config().await["generation"].as_u64().unwrap_or_default();

    setup.manifests.write("other-key.yaml", &apikey("t", "other", "sl_health_other_00000001", ""));
    let reloaded = eventually(Duration::from_secs(5), || async {
        setup.config().await["generation"].as_u64().unwrap_or_default() > generation
    })
    .await;
    assert!(reloaded.is_some(), "the reload happened");
    let after = setup.backend("t/bad").await;
    assert_eq!(after["health"], "ejected", "{after}");
    assert_eq!(after["ejectedUntil"], before["ejectedUntil"], "the same ejection");
    assert_eq!(setup.all_served_by_good(10, false).await, 0, "nothing goes to it after the reload");
    assert_eq!(setup.bad_received("hang"), 1);
    let good = setup.backend("t/good").await;
    assert_eq!(good["windowRequests"], 40, "load and error counts carried over: {good}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_attempt_leaves_no_load_behind() {
    let setup = Setup::hanging().await;
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
    let gone = quick
        .post(setup.gateway.url("/t/solo/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    let in_flight = |v: Value| v["inFlight"].as_u64();
    let left =
        eventually(Duration::from_secs(5), || async { in_flight(setup.backend("t/bad").await) == Some(0) }).await;
    let bad = setup.backend("t/bad").await;
    assert!(left.is_some(), "the attempt still counts as in flight: {bad}");
    assert_eq!(bad["health"], "healthy", "a client leaving is not the backend's fault: {bad}");
    assert_eq!(bad["inFlightTokens"], 0, "{bad}");
}

/// An upstream that answers a head and the first bytes of a whole (non-streamed) body, then
/// stalls: the request ends at the tier's total time with a timeout, not when the upstream
/// gives up.
#[tokio::test]
async fn a_body_that_stalls_after_its_head_ends_at_the_total_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"id\":";
                let _ = socket.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let manifests = Manifests::new();
    manifests.write(
        "tenant.yaml",
        &format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: brief}}\n\
spec: {{timeouts: {{firstTokenMs: 500, totalMs: 1500, idleStreamMs: 500}}}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: t, namespace: t}}\nspec: {{slug: t, defaultTier: brief}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: stalls, namespace: t}}\n\
spec: {{type: openai, baseUrl: \"http://{address}/v1\", models: [{{name: m}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: api, namespace: t}}\n\
spec: {{slug: api, models: [{{name: chat, backends: [{{providerRef: {{name: stalls}}, model: m}}]}}]}}\n"
        ),
    );
    manifests.write("key.yaml", &apikey("t", "k", KEY, ""));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let started = Instant::now();
    let response = client()
        .post(gateway.url("/t/api/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    let took = started.elapsed();
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("an error body");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
    assert!(took >= Duration::from_millis(1_400), "not before the total time: {took:?}");
    assert!(took < AT_MOST, "at the total time, not the upstream's: {took:?}");
}
