//! Self-hosted pools against real sockets: a Provider with `addresses` routes to each pod as a
//! backend of its own. Shared-prefix traffic sticks to one pod and spills past the load bound; a
//! pod whose scraped vLLM metrics report a long queue gets little tight-SLO traffic; a pod that
//! dies is left out (unreachable) without a client seeing an error; a pod removed from `addresses` on reload is
//! forgotten. The pods are `sluice-sim` servers on loopback ports that can be shut down.
//! Assertions count answers by pod, never time.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_sim::{Profile, Simulator};
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

const KEY: &str = "sl_pool_interactive_0001";

/// A simulated vLLM pod that can be shut down (closing its port and its idle connections).
struct Pod {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Pod {
    async fn start(profile: Profile) -> Self {
        let sim = Simulator::new(profile).expect("valid profile");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = sim
                .serve_with_shutdown(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { addr, stop: Some(stop), task }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `x-sluice-backend` of answers from this pod.
    fn label(&self) -> String {
        format!("t/pool/m@{}", self.addr)
    }

    async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tenant(pods: &[&Pod]) -> String {
    let addresses: Vec<String> = pods.iter().map(|p| format!("\"{}\"", p.url())).collect();
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: interactive}}\n\
spec: {{timeouts: {{firstTokenMs: 20000, totalMs: 60000, idleStreamMs: 20000}}}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: t, namespace: t}}\nspec: {{slug: t, defaultTier: interactive}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: pool, namespace: t}}\n\
spec: {{type: openai, addresses: [{}], metrics: {{intervalMs: 100}}, models: [{{name: m}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: t}}\n\
spec: {{slug: chat, models: [{{name: chat, backends: [{{providerRef: {{name: pool}}, model: m}}]}}]}}\n",
        addresses.join(", ")
    )
}

/// A system prompt long enough for prefix affinity (which hashes the first 2 KiB).
fn shared_prefix() -> String {
    "You are a careful assistant for the pool test. ".repeat(60)
}

struct Setup {
    manifests: Manifests,
    gateway: Gateway,
}

/// One streamed chat's status and `x-sluice-backend`.
struct Reply {
    status: u16,
    backend: String,
}

impl Setup {
    fn start(pods: &[&Pod]) -> Self {
        let manifests = Manifests::new();
        manifests.write("tenant.yaml", &tenant(pods));
        manifests.write("key.yaml", &apikey("t", "k", KEY, ""));
        let gateway = Gateway::start(Some(manifests.path()), &[]);
        Self { manifests, gateway }
    }

    async fn chat(&self, system: Option<&str>, question: &str, ttft_hint: Option<u32>, max_tokens: u32) -> Reply {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": question}));
        let mut request = client()
            .post(self.gateway.url("/t/chat/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "chat", "stream": true, "max_tokens": max_tokens, "messages": messages}));
        if let Some(ms) = ttft_hint {
            request = request.header("X-SLO-TTFT-Ms", ms.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let backend = response
            .headers()
            .get("x-sluice-backend")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response.text().await.expect("body");
        assert!(status != 200 || body.ends_with("data: [DONE]\n\n"), "{body}");
        Reply { status, backend }
    }

    async fn pods(&self) -> Vec<Value> {
        let config: Value =
            client().get(self.gateway.admin_url("/config")).send().await.expect("config").json().await.expect("json");
        config["backends"].as_array().cloned().unwrap_or_default()
    }

    async fn pod(&self, pod: &Pod) -> Value {
        let url = pod.url();
        self.pods().await.into_iter().find(|b| b["pod"] == url.as_str()).unwrap_or(Value::Null)
    }

    /// Sends unhinted requests without a shared prefix until every pod in `pods` has the five
    /// first-token samples the router predicts from (bounded).
    async fn measure(&self, pods: &[&Pod]) {
        for i in 0..200 {
            let mut measured = true;
            for pod in pods {
                let samples = self.pod(pod).await["byLoad"]
                    .as_array()
                    .map_or(0, |b| b.iter().filter_map(|l| l["samples"].as_u64()).sum::<u64>());
                measured &= samples >= 5;
            }
            if measured {
                return;
            }
            let reply = self.chat(None, &format!("warm up {i}"), None, 4).await;
            assert_eq!(reply.status, 200);
        }
        panic!("pods not measured after 200 requests: {:#?}", self.pods().await);
    }
}

fn counts(replies: &[Reply]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        *counts.entry(reply.backend.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_routes_per_pod_with_affinity_ejection_and_reload() {
    // Each answer takes a while (60 ms to the first token, 20 ms per token), so a burst overlaps.
    let profile = Profile { prefill_overhead_ms: 60.0, inter_token_ms: 20.0, ..Sim::fast() };
    let (a, b, c) = (Pod::start(profile.clone()).await, Pod::start(profile.clone()).await, Pod::start(profile).await);
    let setup = Setup::start(&[&a, &b, &c]);
    let labels = [a.label(), b.label(), c.label()];
    setup.measure(&[&a, &b, &c]).await;

    // One after the other, a shared prefix always lands on the same pod.
    let system = shared_prefix();
    let mut sequential = Vec::new();
    for i in 0..20 {
        sequential.push(setup.chat(Some(&system), &format!("question {i}"), None, 4).await);
    }
    assert!(sequential.iter().all(|r| r.status == 200));
    let owner = sequential[0].backend.clone();
    assert!(labels.contains(&owner), "x-sluice-backend names the pod: {owner}");
    assert!(sequential.iter().all(|r| r.backend == owner), "{:?}", counts(&sequential));

    // A burst of the same prefix: the owner takes the largest share, but the load bound
    // (1.25 x the mean in flight) spills the rest to other pods instead of piling on it.
    let burst: Vec<Reply> = futures::future::join_all((0..12).map(|i| {
        let (setup, system) = (&setup, &system);
        async move { setup.chat(Some(system), &format!("burst {i}"), None, 40).await }
    }))
    .await;
    assert!(burst.iter().all(|r| r.status == 200));
    let shares = counts(&burst);
    let owned = shares.get(&owner).copied().unwrap_or(0);
    assert!((3..12).contains(&owned), "the owner takes a share within the bound: {shares:?}");
    assert!(shares.values().all(|&n| n <= owned), "the owner takes the most: {shares:?}");
    assert!(shares.len() >= 2, "the bound spills to other pods: {shares:?}");

    // The owner dies: every request is still answered (failover before the first byte), and
    // once two scrapes in a row cannot connect the pod is left out as unreachable.
    let (dead, alive): (Vec<Pod>, Vec<Pod>) = [a, b, c].into_iter().partition(|p| p.label() == owner);
    let dead = dead.into_iter().next().expect("the owner is one of the pods");
    let dead_url = dead.url();
    dead.kill().await;
    let mut after = Vec::new();
    for i in 0..20 {
        after.push(setup.chat(Some(&system), &format!("after {i}"), None, 4).await);
    }
    assert!(after.iter().all(|r| r.status == 200), "no client-visible error: {:?}", counts(&after));
    assert!(after.iter().all(|r| r.backend != owner));
    let find = |pods: Vec<Value>| pods.into_iter().find(|p| p["pod"] == dead_url.as_str()).unwrap_or(Value::Null);
    let marked =
        eventually(Duration::from_secs(10), || async { find(setup.pods().await)["health"] == "unreachable" }).await;
    let dead_view = find(setup.pods().await);
    assert!(marked.is_some(), "a dead pod is marked unreachable: {dead_view:#}");
    assert_eq!(dead_view["health"], "unreachable", "{dead_view:#}");
    assert_eq!(dead_view["podLoad"]["unreachable"], true, "{dead_view:#}");
    assert!(dead_view["podLoad"]["consecutiveFailures"].as_u64().unwrap_or(0) >= 2, "its scrapes fail: {dead_view:#}");
    let metrics = client().get(setup.gateway.admin_url("/metrics")).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics.contains(&format!(
            "sluice_pod_scrapes_total{{provider=\"t/pool\",pod=\"{dead_url}\",result=\"failure\"}}"
        ))
    );

    // A reload without the second pod forgets it; it gets nothing more although it is alive.
    let (kept, removed) = (&alive[0], &alive[1]);
    setup.manifests.write("tenant.yaml", &tenant(&[kept]));
    let removed_url = removed.url();
    let forgotten = eventually(Duration::from_secs(15), || async {
        let pods = setup.pods().await;
        pods.len() == 1 && pods[0]["pod"] == kept.url().as_str()
    })
    .await;
    assert!(forgotten.is_some(), "still listed: {:#?}", setup.pods().await);
    let mut reloaded = Vec::new();
    for i in 0..10 {
        reloaded.push(setup.chat(Some(&system), &format!("reloaded {i}"), None, 4).await);
    }
    assert!(reloaded.iter().all(|r| r.status == 200 && r.backend == kept.label()), "{:?}", counts(&reloaded));
    let metrics = client().get(setup.gateway.admin_url("/config")).send().await.expect("config");
    assert!(!metrics.text().await.expect("text").contains(&removed_url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reporting_a_long_queue_gets_little_tight_traffic() {
    // One sequence at a time: whatever else arrives waits, and says so in its metrics.
    let profile = Profile { prefill_overhead_ms: 100.0, inter_token_ms: 20.0, max_num_seqs: 1, ..Sim::fast() };
    let (calm, busy) = (Pod::start(profile.clone()).await, Pod::start(profile).await);
    let setup = Setup::start(&[&calm, &busy]);
    setup.measure(&[&calm, &busy]).await;

    // Another client floods the busy pod directly, past the gateway.
    let flood: Vec<_> = (0..30)
        .map(|i| {
            let url = format!("{}/chat/completions", busy.url());
            tokio::spawn(async move {
                let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": format!("flood {i}")}]});
                let _ = client().post(url).json(&body).send().await;
            })
        })
        .collect();
    let seen = eventually(Duration::from_secs(15), || async {
        setup.pod(&busy).await["podLoad"]["requestsWaiting"].as_u64().unwrap_or(0) >= 10
    })
    .await;
    assert!(seen.is_some(), "the scrape shows the queue: {:#}", setup.pod(&busy).await);

    // Tight requests: the busy pod is predicted to miss the hint (its queue counts as load), so
    // only exploration sends it any.
    let mut tight = Vec::new();
    for i in 0..20 {
        tight.push(setup.chat(None, &format!("tight {i}"), Some(300), 2).await);
    }
    assert!(tight.iter().all(|r| r.status == 200));
    let shares = counts(&tight);
    let to_busy = shares.get(&busy.label()).copied().unwrap_or(0);
    assert!(to_busy <= 4, "the queued pod got {to_busy} of 20: {shares:?}");
    assert!(shares.get(&calm.label()).copied().unwrap_or(0) >= 16, "{shares:?}");
    for task in flood {
        task.abort();
    }
}
