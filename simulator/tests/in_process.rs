//! In-process use, as the gateway's `simulated` provider does it: the `Router` driven with
//! `tower::ServiceExt::oneshot`, no socket. With tokio's clock paused, virtual time advances
//! only through the simulator's own timers, so the latency model's arithmetic shows exactly.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_sim::{ErrorFault, FaultConfig, Profile, Simulator};
use tokio::time::Instant;
use tower::ServiceExt;

fn request(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn call(router: &Router, path: &str, body: &Value) -> (StatusCode, Bytes) {
    let response = router.clone().oneshot(request(path, body)).await.expect("infallible");
    let status = response.status();
    (status, to_bytes(response.into_body(), usize::MAX).await.expect("body"))
}

/// Each data frame of a streamed response and the virtual time it came at.
async fn frames(router: &Router, path: &str, body: &Value) -> Vec<(Duration, Bytes)> {
    let start = Instant::now();
    let response = router.clone().oneshot(request(path, body)).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            out.push((start.elapsed(), data));
        }
    }
    out
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "Tell me a story."}]});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test(start_paused = true)]
async fn instant_profile_arms_no_timer() {
    let router = Simulator::new(Profile::instant()).expect("valid").router();
    let start = Instant::now();
    let frames =
        frames(&router, "/v1/chat/completions", &chat(json!({"stream": true, "max_tokens": 500, "ignore_eos": true})))
            .await;
    let (status, _) = call(&router, "/v1/chat/completions", &chat(json!({"max_tokens": 500}))).await;
    assert_eq!(status, StatusCode::OK);
    // With the clock paused, any sleep would have advanced it.
    assert_eq!(start.elapsed(), Duration::ZERO);
    // role chunk + 500 tokens + finish chunk + [DONE], one frame each (the last two share one).
    assert_eq!(frames.len(), 1 + 500 + 1);
}

#[tokio::test(start_paused = true)]
async fn virtual_time_follows_the_model_exactly() {
    let profile = Profile {
        prefill_overhead_ms: 40.0,
        prefill_per_token_ms: 0.5,
        inter_token_ms: 10.0,
        jitter: 0.0,
        output_tokens: 20,
        prefix_cache_blocks: 0,
        ..Profile::default()
    };
    let router = Simulator::new(profile).expect("valid").router();
    let frames = frames(
        &router,
        "/v1/chat/completions",
        &chat(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    let last: Value = {
        let text = String::from_utf8_lossy(&frames[frames.len() - 1].1).to_string();
        let usage_line = text.lines().rfind(|l| l.contains("\"usage\":{")).unwrap_or_default().to_owned();
        serde_json::from_str(usage_line.trim_start_matches("data: ")).expect("usage chunk")
    };
    let prompt_tokens = last["usage"]["prompt_tokens"].as_f64().expect("prompt tokens");
    let ttft = Duration::from_secs_f64((40.0 + 0.5 * prompt_tokens) / 1000.0);
    // Frame 0 is the role chunk, frames 1..=20 the tokens, then the tail.
    let token_times: Vec<Duration> = frames[1..=20].iter().map(|(at, _)| *at).collect();
    let ms = Duration::from_millis(1); // the timer wheel's granularity
    assert!(token_times[0] >= ttft && token_times[0] <= ttft + ms, "{:?} vs {ttft:?}", token_times[0]);
    for pair in token_times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(9) && gap <= Duration::from_millis(11), "{gap:?}");
    }
    let total = token_times[19] - token_times[0];
    assert!(total >= Duration::from_millis(190) && total <= Duration::from_millis(191), "{total:?}");

    // A plain request takes the same time in all.
    let start = Instant::now();
    let (status, _) = call(&router, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let expected = ttft + Duration::from_millis(190);
    assert!(start.elapsed() >= expected && start.elapsed() <= expected + 2 * ms, "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_queues_the_next_request() {
    let profile = Profile {
        prefill_overhead_ms: 100.0,
        prefill_per_token_ms: 0.0,
        inter_token_ms: 0.0,
        jitter: 0.0,
        max_num_seqs: 1,
        ..Profile::default()
    };
    let sim = Simulator::new(profile).expect("valid");
    let router = sim.router();
    let start = Instant::now();
    let first = tokio::spawn({
        let router = router.clone();
        async move { call(&router, "/v1/chat/completions", &chat(json!({}))).await }
    });
    let second = tokio::spawn({
        let router = router.clone();
        async move { call(&router, "/v1/chat/completions", &chat(json!({}))).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((sim.running(), sim.waiting()), (1, 1));
    let _ = first.await.expect("first");
    let _ = second.await.expect("second");
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_millis(202), "{elapsed:?}");
    assert_eq!((sim.running(), sim.waiting()), (0, 0));
}

#[tokio::test]
async fn every_route_answers_in_process() {
    let sim = Simulator::new(Profile::instant()).expect("valid");
    let router = sim.router();
    let (status, body) = call(&router, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, _) = call(&router, "/v1/embeddings", &json!({"model": "e", "input": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &router,
        "/v1/messages",
        &json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        call(&router, "/v1beta/models/g:generateContent", &json!({"contents": [{"parts": [{"text": "hi"}]}]})).await;
    assert_eq!(status, StatusCode::OK);
    let models = router
        .clone()
        .oneshot(Request::get("/v1/models").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(models.status(), StatusCode::OK);
    let metrics = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let text = to_bytes(metrics.into_body(), usize::MAX).await.expect("body");
    assert!(String::from_utf8_lossy(&text).contains("vllm:prompt_tokens_total"));

    // Faults switched through the library API, then reset.
    sim.set_faults(FaultConfig { errors: vec![ErrorFault { status: 503, rate: 1.0 }], ..FaultConfig::default() })
        .expect("valid faults");
    let (status, _) = call(&router, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(sim.set_faults(FaultConfig { hang_rate: 2.0, ..FaultConfig::default() }).is_err());
    sim.reset();
    let (status, _) = call(&router, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn echo_streams_the_last_user_message_token_by_token() {
    let router = Simulator::new(Profile { echo: true, ..Profile::instant() }).expect("valid").router();
    let asked = "Mail [EMAIL_1] please";
    let body = json!({"model": "m", "stream": true, "messages": [
        {"role": "system", "content": "ignored"}, {"role": "user", "content": asked}]});
    let deltas: Vec<String> = frames(&router, "/v1/chat/completions", &body)
        .await
        .iter()
        .flat_map(|(_, data)| String::from_utf8_lossy(data).split("\n\n").map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|event| serde_json::from_str::<Value>(event.strip_prefix("data: ")?).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas.concat(), asked);
    assert!(deltas.iter().all(|d| !d.contains("[EMAIL_1]")), "the placeholder is split over events: {deltas:?}");
    // Plain answers, Messages and Gemini echo too; tool calls are not echoes.
    let (_, plain) = call(&router, "/v1/chat/completions", &chat(json!({}))).await;
    let plain: Value = serde_json::from_slice(&plain).expect("json");
    assert_eq!(plain["choices"][0]["message"]["content"], "Tell me a story.");
    let messages = json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]});
    let (_, answer) = call(&router, "/v1/messages", &messages).await;
    let answer: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(answer["content"][0]["text"], "Hi there");
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "Hallo"}]}]});
    let (_, answer) = call(&router, "/v1beta/models/m:generateContent", &gemini).await;
    let answer: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(answer["candidates"][0]["content"]["parts"][0]["text"], "Hallo");
    let tools =
        chat(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}));
    let (_, called) = call(&router, "/v1/chat/completions", &tools).await;
    let called: Value = serde_json::from_slice(&called).expect("json");
    assert_eq!(called["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test(start_paused = true)]
async fn the_last_requests_received_are_listed_and_bounded() {
    let sim = Simulator::new(Profile { record_requests: 2, ..Profile::instant() }).expect("valid");
    let router = sim.router();
    for text in ["one", "two", "three"] {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
        let (status, _) = call(&router, "/v1/chat/completions", &body).await;
        assert_eq!(status, StatusCode::OK);
    }
    let get = |router: Router| async move {
        let response =
            router.oneshot(Request::get("/_sim/requests").body(Body::empty()).expect("request")).await.expect("ok");
        let listed: Value =
            serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.expect("body")).expect("json");
        listed
    };
    let listed = get(router.clone()).await;
    assert_eq!(listed["recording"], true);
    let texts: Vec<&str> = listed["requests"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            assert_eq!(r["path"], "/v1/chat/completions");
            r["body"]["messages"][0]["content"].as_str().expect("text")
        })
        .collect();
    assert_eq!(texts, ["two", "three"], "the last two, oldest first");
    let cleared = router.clone().oneshot(Request::delete("/_sim/requests").body(Body::empty()).expect("request")).await;
    assert_eq!(cleared.expect("ok").status(), StatusCode::OK);
    assert_eq!(get(router.clone()).await["requests"], json!([]));

    // Off by default: nothing is kept, and the list says so.
    let quiet = Simulator::new(Profile::instant()).expect("valid").router();
    let _ = call(&quiet, "/v1/chat/completions", &chat(json!({}))).await;
    let listed = get(quiet).await;
    assert_eq!((listed["recording"].as_bool(), listed["requests"].as_array().map(Vec::len)), (Some(false), Some(0)));
}
