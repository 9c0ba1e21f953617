//! Black-box: every fault kind, forced per request with `x-sim-fault`, switched at run time
//! through `/_sim/faults`, or drawn from the profile's rates, is observable by a client.

mod common;

use std::time::{Duration, Instant};

use common::{Sim, client, post_json};
use serde_json::{Value, json};

const FAST: &[&str] =
    &["--prefill-overhead-ms", "1", "--inter-token-ms", "1", "--jitter", "0", "--output-tokens", "12"];

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "Hello"}]})
}

fn with_fault(sim: &Sim, path: &str, fault: &str, body: &Value) -> reqwest::RequestBuilder {
    client().post(sim.at(path)).header("x-sim-fault", fault).header("anthropic-version", "2023-06-01").json(body)
}

#[tokio::test]
async fn error_statuses_in_each_format_with_retry_after() {
    let sim = Sim::start(FAST);
    let response = with_fault(&sim, "/v1/chat/completions", "503", &chat(false)).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "server_error");

    let response = with_fault(&sim, "/v1/chat/completions", "429", &chat(true)).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let response =
        with_fault(&sim, "/v1/embeddings", "500", &json!({"model": "m", "input": "x"})).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 500);
    assert!(response.headers().get("retry-after").is_none());

    let anthropic = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let response = with_fault(&sim, "/v1/messages", "529", &anthropic).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 529);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");

    let gemini = json!({"contents": [{"parts": [{"text": "x"}]}]});
    let response = with_fault(&sim, "/v1beta/models/g:generateContent", "429", &gemini).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 429);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");

    // `none` overrides the rates; a bad value is a 400.
    let response = with_fault(&sim, "/v1/chat/completions", "none", &chat(false)).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200);
    let response = with_fault(&sim, "/v1/chat/completions", "explode", &chat(false)).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn admin_endpoint_switches_faults_at_run_time() {
    let sim = Sim::start(FAST);
    let url = sim.at("/v1/chat/completions");
    let (status, faults) = post_json(&sim.at("/_sim/faults"), &json!({"errors": [{"status": 503, "rate": 1.0}]})).await;
    assert_eq!(status, 200);
    assert_eq!(faults["errors"][0]["status"], 503);
    for _ in 0..10 {
        let (status, _) = post_json(&url, &chat(false)).await;
        assert_eq!(status, 503, "rate 1.0 forces the status on every request");
    }
    let current: Value = client().get(sim.at("/_sim/faults")).send().await.expect("get").json().await.expect("json");
    assert_eq!(current, faults);
    let (status, _) = post_json(&sim.at("/_sim/faults"), &json!({"hangRate": 2})).await;
    assert_eq!(status, 400, "invalid faults are refused");
    let (status, _) = post_json(&sim.at("/_sim/faults"), &json!({"hangRates": 0})).await;
    assert_eq!(status, 400, "unknown fields are refused");
    let (status, _) = post_json(&url, &chat(false)).await;
    assert_eq!(status, 503, "a refused update changes nothing");
    let (status, _) = post_json(&sim.at("/_sim/reset"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(&url, &chat(false)).await;
    assert_eq!(status, 200, "reset restores the profile's faults");
    let metrics = client().get(sim.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains("sluice_sim:faults_injected_total{model_name=\"sluice-sim\",kind=\"status_503\"} 11"),
        "{metrics}"
    );
}

#[tokio::test]
async fn profile_rates_are_drawn_per_request() {
    let sim =
        Sim::start(&["--inter-token-ms", "0", "--prefill-overhead-ms", "0", "--fault-error", "500=0.3", "--seed", "3"]);
    let mut errors = 0;
    for _ in 0..200 {
        let (status, _) = post_json(&sim.at("/v1/chat/completions"), &chat(false)).await;
        if status == 500 {
            errors += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    // Binomial(200, 0.3): mean 60, sd 6.5.
    assert!((35..=85).contains(&errors), "{errors} errors of 200");
}

#[tokio::test]
async fn hang_delays_the_first_byte() {
    let sim = Sim::start(FAST);
    let start = Instant::now();
    let response = with_fault(&sim, "/v1/chat/completions", "hang=300", &chat(true)).send().await.expect("send");
    let headers_after = start.elapsed();
    assert!(headers_after >= Duration::from_millis(300), "headers after {headers_after:?}");
    assert_eq!(response.status().as_u16(), 200);
    response.bytes().await.expect("then the answer comes");

    let timed_out =
        with_fault(&sim, "/v1/chat/completions", "hang", &chat(false)).timeout(Duration::from_millis(200)).send().await;
    assert!(timed_out.is_err_and(|e| e.is_timeout()), "the default hang outlasts a client timeout");
}

#[tokio::test]
async fn reset_cuts_the_body() {
    let sim = Sim::start(FAST);
    let mut response = with_fault(&sim, "/v1/chat/completions", "reset=3", &chat(true)).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200);
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("the stream ended cleanly: {}", String::from_utf8_lossy(&received)),
            Err(e) => break e,
        }
    };
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("\"content\":\"").count(), 4, "role chunk + 3 tokens before the cut: {text}");
    assert!(!text.contains("[DONE]"));
    eprintln!("client saw: {error}");

    let plain = with_fault(&sim, "/v1/chat/completions", "reset", &chat(false)).send().await.expect("headers come");
    assert!(plain.bytes().await.is_err(), "a plain body is cut halfway");
}

#[tokio::test]
async fn malformed_bodies_do_not_parse() {
    let sim = Sim::start(FAST);
    let response = with_fault(&sim, "/v1/chat/completions", "malformed", &chat(false)).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    let response = with_fault(&sim, "/v1/chat/completions", "malformed", &chat(true)).send().await.expect("send");
    let text = response.text().await.expect("body");
    let broken = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter(|data| serde_json::from_str::<Value>(data).is_err())
        .count();
    assert_eq!(broken, 1, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn drip_slows_the_body() {
    let sim = Sim::start(FAST);
    let start = Instant::now();
    let text = with_fault(&sim, "/v1/chat/completions", "drip=40", &chat(true))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    let elapsed = start.elapsed();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(elapsed >= Duration::from_millis(11 * 40), "12 tokens, 40 ms apart: {elapsed:?}");

    let start = Instant::now();
    let mut response = with_fault(&sim, "/v1/chat/completions", "drip=5", &chat(false)).send().await.expect("send");
    let mut chunks = 0;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        chunks += 1;
        body.extend_from_slice(&chunk);
    }
    assert!(serde_json::from_slice::<Value>(&body).is_ok(), "a drip is slow, not broken");
    assert!(chunks >= body.len() / 16 / 2, "{chunks} chunks for {} bytes", body.len());
    assert!(start.elapsed() >= Duration::from_millis(5 * (body.len() as u64 / 16 - 1)));
}
