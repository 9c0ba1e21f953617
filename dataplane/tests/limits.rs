//! Limits in one gateway process (no Redis): the refusal of the request past a limit with its
//! headers and body, token limits settled on real usage, concurrency released however a
//! request ends, budgets turning to 402 at the right request, a cut stream billed once.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

/// A project `lim` with one tier per limit and one key per tier, on the simulator at `upstream`.
pub fn manifests(upstream: &str) -> String {
    let mut text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: free}}\nspec: {{}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: rpm}}\nspec:\n  limits: {{requestsPerMinute: 2}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: tpm}}\nspec:\n  limits: {{tokensPerMinute: 600}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: one}}\nspec:\n  limits: {{maxConcurrent: 1}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: lim, namespace: lim}}\nspec: {{slug: lim, defaultTier: free}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: sim, namespace: lim}}\nspec:\n  type: openai\n  baseUrl: {upstream}\n  models:\n    - name: up\n      capabilities: [chat]\n      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: lim}}\nspec:\n  slug: chat\n  models:\n    - name: m\n      backends: [{{providerRef: {{name: sim}}, model: up}}]\n"
    );
    for (name, extra) in [
        ("rpm", "  tier: rpm\n"),
        ("tpm", "  tier: tpm\n"),
        ("one", "  tier: one\n"),
        ("budget", "  budget: {limitUsd: 0.0001, period: monthly}\n"),
        ("shared", "  tier: rpm\n"),
    ] {
        text.push_str("---\n");
        text.push_str(&apikey("lim", name, &key(name), extra));
        text.push('\n');
    }
    text
}

/// The key material of key `name`.
pub fn key(name: &str) -> String {
    format!("sl_lim_{name}_000000000000000001")
}

pub fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]})
}

pub async fn post(gateway: &Gateway, key_name: &str, body: &Value, fault: Option<&str>) -> reqwest::Response {
    let mut request = client().post(gateway.url("/lim/chat/v1/chat/completions")).bearer_auth(key(key_name)).json(body);
    if let Some(fault) = fault {
        request = request.header("x-sim-fault", fault);
    }
    request.send().await.expect("request")
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default()
}

fn number(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name).parse().unwrap_or_else(|_| panic!("{name} is a number: {:?}", response.headers()))
}

/// Cost of a chat answer at the fixture's prices.
pub fn cost(usage: &Value) -> f64 {
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt tokens") as f64;
    let completion = usage["completion_tokens"].as_u64().expect("completion tokens") as f64;
    (prompt * 1.0 + completion * 2.0) / 1e6
}

async fn start() -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let manifests = Manifests::new();
    manifests.write("lim.yaml", &manifests_text(&sim));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    (sim, manifests, gateway)
}

fn manifests_text(sim: &Sim) -> String {
    manifests(&sim.base_url())
}

#[tokio::test]
async fn the_request_past_the_limit_is_refused_with_headers_and_a_body_naming_it() {
    let (_sim, _manifests, gateway) = start().await;
    for left in [1, 0] {
        let response = post(&gateway, "rpm", &chat(false), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(number(&response, "x-ratelimit-limit-requests"), 2);
        assert_eq!(number(&response, "x-ratelimit-remaining-requests"), left);
        assert!(header(&response, "x-ratelimit-reset-requests").ends_with('s'), "{:?}", response.headers());
        assert_eq!(number(&response, "x-ratelimit-limit"), 2);
        assert_eq!(number(&response, "x-ratelimit-remaining"), left);
        let unix_now = jiff::Timestamp::now().as_second() as u64;
        let reset = number(&response, "x-ratelimit-reset");
        assert!((unix_now..=unix_now + 61).contains(&reset), "Unix seconds within the minute: {reset} vs {unix_now}");
    }
    let refused = post(&gateway, "rpm", &chat(false), None).await;
    assert_eq!(refused.status(), 429);
    let retry_after = number(&refused, "retry-after");
    assert!((1..=30).contains(&retry_after), "one request comes back every 30 s: {retry_after}");
    assert_eq!(number(&refused, "x-ratelimit-remaining-requests"), 0);
    assert_eq!(number(&refused, "x-ratelimit-limit-requests"), 2);
    assert_eq!(number(&refused, "x-ratelimit-remaining"), 0);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("for requests:"), "the body names the limit: {message}");

    // The same limit on the Anthropic Messages route, in Anthropic's error shape.
    let anthropic = client()
        .post(gateway.url("/lim/chat/v1/messages"))
        .header("x-api-key", key("rpm"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(anthropic.status(), 429);
    assert!(anthropic.headers().contains_key("retry-after"));
    assert_eq!(number(&anthropic, "x-ratelimit-remaining-requests"), 0);
    let body: Value = anthropic.json().await.expect("json");
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("for requests:"), "{body}");
}

#[tokio::test]
async fn token_limits_settle_on_the_real_usage() {
    let (_sim, _manifests, gateway) = start().await;
    let body = json!({"model": "m", "max_tokens": 200, "messages": [{"role": "user", "content": "Say hello"}]});
    let first = post(&gateway, "tpm", &body, None).await;
    assert_eq!(first.status(), 200);
    let after_first = number(&first, "x-ratelimit-remaining-tokens");
    let estimate = 600 - after_first;
    assert!(estimate >= 200, "the estimate reserves max_tokens: {estimate}");
    let answer: Value = first.json().await.expect("json");
    let used = answer["usage"]["total_tokens"].as_u64().expect("usage");
    assert!(used < estimate, "the simulator's answer is shorter than max_tokens: {used} vs {estimate}");
    let started = Instant::now();
    let second = post(&gateway, "tpm", &body, None).await;
    assert_eq!(second.status(), 200);
    let left = number(&second, "x-ratelimit-remaining-tokens");
    // Settled: 600 - used - estimate, plus what refilled (10 tokens a second) since.
    let settled = 600 - used - estimate;
    let refill = (started.elapsed().as_secs_f64() * 10.0).ceil() as u64 + 1;
    assert!((settled..=settled + refill).contains(&left), "left {left}, settled {settled}, refill {refill}");
    assert!(left > 600 - 2 * estimate + refill, "the first request's unused reservation came back");
}

#[tokio::test]
async fn concurrency_is_released_on_completion_disconnect_and_upstream_error() {
    let (_sim, _manifests, gateway) = start().await;
    // Completion.
    assert_eq!(post(&gateway, "one", &chat(false), None).await.status(), 200);
    assert_eq!(post(&gateway, "one", &chat(false), None).await.status(), 200);
    // Upstream error.
    let failed = post(&gateway, "one", &chat(false), Some("500")).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    assert_eq!(post(&gateway, "one", &chat(false), None).await.status(), 200, "the failed request's slot is free");
    // A client that goes away mid-stream: the slot is held while it streams, then freed.
    let streaming = post(&gateway, "one", &chat(true), Some("drip=300")).await;
    assert_eq!(streaming.status(), 200);
    let busy = post(&gateway, "one", &chat(false), None).await;
    assert_eq!(busy.status(), 429, "the stream holds the only slot");
    let body: Value = busy.json().await.expect("json");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("for concurrency:"), "{body}");
    drop(streaming);
    let freed = eventually(Duration::from_secs(10), || async {
        post(&gateway, "one", &chat(false), None).await.status() == 200
    })
    .await;
    assert!(freed.is_some(), "the disconnected stream's slot was released:\n{}", gateway.log_text());
}

#[tokio::test]
async fn budgets_turn_to_402_at_the_first_request_after_they_are_spent() {
    let (_sim, _manifests, gateway) = start().await;
    let mut spent = 0.0;
    let mut answered = 0;
    loop {
        let response = post(&gateway, "budget", &chat(false), None).await;
        if response.status() == 402 {
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(spent < 0.0001, "admitted although {spent} of 0.0001 was spent");
        let answer: Value = response.json().await.expect("json");
        spent += cost(&answer["usage"]);
        answered += 1;
        assert!(answered < 100, "the budget never ran out");
    }
    assert!(spent >= 0.0001, "refused only once spent: {spent}");
    assert!(answered >= 2, "{answered}");
}

#[tokio::test]
async fn a_stream_cut_midway_is_billed_once() {
    let (_sim, _manifests, gateway) = start().await;
    let response = post(&gateway, "tpm", &chat(true), Some("reset=3")).await;
    assert_eq!(response.status(), 200);
    let id = header(&response, "x-request-id");
    let text = response.text().await.expect("body");
    assert!(text.contains("upstream_stream_error"), "{text}");
    let logs = gateway.logs_with(&format!("\"request_id\":\"{id}\""));
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&id) && l.contains("completion_tokens")).collect();
    assert_eq!(lines.len(), 1, "settled once:\n{logs}");
    assert!(lines[0].contains("\"completion_tokens\":3"), "billed for what was delivered: {}", lines[0]);
    // And the token bucket was settled once with that: the next answer shows it.
    let next = post(&gateway, "tpm", &chat(false), None).await;
    assert_eq!(next.status(), 200);
    assert!(number(&next, "x-ratelimit-remaining-tokens") < 600);
}
