//! Black-box: the latency model as a client over TCP measures it. Seeded, bounded in requests
//! and time. Tolerances are stated per test: wide enough for a loaded 2-core machine (a few ms
//! of scheduler noise on delays of tens of ms), narrow enough to catch a wrong formula.

mod common;

use std::time::{Duration, Instant};

use common::{Event, Sim, client, mean_sd, sse};
use serde_json::{Value, json};

/// Times of the content tokens of a chat stream, and its usage chunk.
struct Timed {
    tokens: Vec<Duration>,
    usage: Value,
}

fn timed(events: &[Event]) -> Timed {
    let mut tokens = Vec::new();
    let mut usage = Value::Null;
    for event in events.iter().filter(|e| e.data != "[DONE]") {
        let chunk = event.json();
        if chunk["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) {
            tokens.push(event.at);
        }
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
    }
    Timed { tokens, usage }
}

async fn stream_chat(sim: &Sim, prompt: &str) -> Timed {
    let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": prompt}]});
    let (events, _) = sse(client().post(sim.at("/v1/chat/completions")).json(&body)).await;
    timed(&events)
}

/// Runs `n` streams at once with distinct prompts.
async fn concurrent_streams(sim: &Sim, n: usize, tag: &str) -> Vec<Timed> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = sim.url.clone();
        let prompt = format!("Request {tag} {i}: describe the weather in a city you like, briefly.");
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": prompt}]});
            let (events, _) = sse(client().post(format!("{url}/v1/chat/completions")).json(&body)).await;
            timed(&events)
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("stream task"));
    }
    out
}

fn mean_gap_ms(t: &Timed) -> f64 {
    let n = t.tokens.len();
    (t.tokens[n - 1] - t.tokens[0]).as_secs_f64() * 1000.0 / (n - 1) as f64
}

/// TTFT = 80 ms + 1 ms per prompt token, ITL = 20 ms, jitter 20%, seed 7: 40 streams (5 waves of
/// 8, no load effect) of 16 tokens. Tolerance: measured mean TTFT within -10%/+15% of the model
/// (clients only add delay), mean ITL within +-10%; the spread of TTFT around the model within
/// 0.5x-2x of the configured 20%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_ttft_and_itl_match_the_configured_means() {
    let sim = Sim::start(&[
        "--prefill-overhead-ms",
        "80",
        "--prefill-per-token-ms",
        "1",
        "--inter-token-ms",
        "20",
        "--jitter",
        "0.2",
        "--seed",
        "7",
        "--load-slowdown",
        "1",
        "--prefix-cache-blocks",
        "0",
        "--output-tokens",
        "16",
    ]);
    let mut ttft_ratio = Vec::new();
    let mut measured_ttft = Vec::new();
    let mut expected_ttft = Vec::new();
    let mut itl = Vec::new();
    for wave in 0..5 {
        for t in concurrent_streams(&sim, 8, &format!("w{wave}")).await {
            assert_eq!(t.tokens.len(), 16);
            let prompt_tokens = t.usage["prompt_tokens"].as_f64().expect("usage");
            let expected = 80.0 + prompt_tokens;
            let measured = t.tokens[0].as_secs_f64() * 1000.0;
            ttft_ratio.push(measured / expected);
            measured_ttft.push(measured);
            expected_ttft.push(expected);
            itl.push(mean_gap_ms(&t));
        }
    }
    let (ttft, _) = mean_sd(&measured_ttft);
    let (model_ttft, _) = mean_sd(&expected_ttft);
    let (_, ttft_spread) = mean_sd(&ttft_ratio);
    let (itl_mean, _) = mean_sd(&itl);
    eprintln!(
        "TTFT mean {ttft:.1} ms (model {model_ttft:.1}), spread {ttft_spread:.3} (model 0.2); ITL mean {itl_mean:.2} ms (model 20)"
    );
    assert!(ttft >= 0.90 * model_ttft && ttft <= 1.15 * model_ttft, "TTFT {ttft} vs {model_ttft}");
    assert!((18.0..=22.0).contains(&itl_mean), "ITL {itl_mean}");
    assert!((0.1..=0.4).contains(&ttft_spread), "TTFT spread {ttft_spread}");
}

/// ITL 20 ms, maxNumSeqs 8, loadSlowdown 3: alone a stream runs at 20 ms a token, 4 at once at
/// 1 + 2 * 3/7 = 1.86x, 8 at once at 3x. Tolerance: solo 18-24 ms; ratios within about 15%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_grows_with_load_as_configured() {
    let sim = Sim::start(&[
        "--prefill-overhead-ms",
        "10",
        "--prefill-per-token-ms",
        "0",
        "--inter-token-ms",
        "20",
        "--max-num-seqs",
        "8",
        "--load-slowdown",
        "3",
        "--jitter",
        "0",
        "--output-tokens",
        "20",
    ]);
    let solo = mean_gap_ms(&stream_chat(&sim, "alone").await);
    let half: Vec<f64> = concurrent_streams(&sim, 4, "half").await.iter().map(mean_gap_ms).collect();
    let full: Vec<f64> = concurrent_streams(&sim, 8, "full").await.iter().map(mean_gap_ms).collect();
    let (half, _) = mean_sd(&half);
    let (full, _) = mean_sd(&full);
    eprintln!(
        "ITL solo {solo:.1} ms, 4 running {half:.1} ms ({:.2}x), 8 running {full:.1} ms ({:.2}x)",
        half / solo,
        full / solo
    );
    assert!((18.0..=24.0).contains(&solo), "solo {solo}");
    assert!((1.6..=2.15).contains(&(half / solo)), "half load {half} / {solo}");
    assert!((2.55..=3.35).contains(&(full / solo)), "full load {full} / {solo}");
}

/// maxNumSeqs 2 and 6 plain requests of about 200 ms each: they run in three waves, the
/// others wait (visible in /_sim/state and vllm:num_requests_waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_num_seqs_wait_in_a_queue() {
    let sim = Sim::start(&[
        "--prefill-overhead-ms",
        "5",
        "--prefill-per-token-ms",
        "0",
        "--inter-token-ms",
        "10",
        "--max-num-seqs",
        "2",
        "--load-slowdown",
        "1",
        "--jitter",
        "0",
        "--output-tokens",
        "20",
    ]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = sim.at("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("q{i}")}]});
            let response = client().post(url).json(&body).send().await.expect("send");
            assert_eq!(response.status().as_u16(), 200);
            response.bytes().await.expect("body");
            start.elapsed()
        }));
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let state: Value = client().get(sim.at("/_sim/state")).send().await.expect("state").json().await.expect("json");
    assert_eq!(state["running"], 2, "{state}");
    assert_eq!(state["waiting"], 4, "{state}");
    let metrics = client().get(sim.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("vllm:num_requests_waiting{model_name=\"sluice-sim\"} 4"), "{metrics}");
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.expect("task"));
    }
    done.sort();
    eprintln!("completion times {done:?}");
    // One wave is 5 + 19 * 10 = 195 ms: the last finishes after three waves.
    assert!(done[5] >= Duration::from_millis(580), "{done:?}");
    assert!(done[5].as_secs_f64() >= 2.5 * done[0].as_secs_f64(), "{done:?}");
}

/// A 1,000-token shared prefix at 0.5 ms per token: the first request pays about 520 ms, a
/// second request with the same prefix only for its uncached tail, and reports the cached
/// tokens (OpenAI's cached_tokens, Anthropic's cache_read_input_tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_prefix_is_cached_and_answers_sooner() {
    let sim = Sim::start(&[
        "--prefill-overhead-ms",
        "20",
        "--prefill-per-token-ms",
        "0.5",
        "--inter-token-ms",
        "1",
        "--jitter",
        "0",
        "--output-tokens",
        "4",
    ]);
    let system = "the river runs past old mills and quiet farms ".repeat(100);
    let ask = |question: &str| {
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": question}]})
    };
    let url = sim.at("/v1/chat/completions");
    let (events, _) = sse(client().post(&url).json(&ask("Where does it go?"))).await;
    let cold = timed(&events);
    let (events, _) = sse(client().post(&url).json(&ask("How deep is it?"))).await;
    let warm = timed(&events);
    let prompt = cold.usage["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = warm.usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    eprintln!(
        "prompt {prompt} tokens; cold TTFT {:?}, warm TTFT {:?} with {cached} cached",
        cold.tokens[0], warm.tokens[0]
    );
    assert_eq!(cold.usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert!(prompt > 1000 && cached >= 960 && cached.is_multiple_of(16), "{prompt} / {cached}");
    assert!(cold.tokens[0] >= Duration::from_millis(450), "{:?}", cold.tokens[0]);
    assert!(warm.tokens[0] * 3 < cold.tokens[0], "{:?} vs {:?}", warm.tokens[0], cold.tokens[0]);

    // The same conversation through the Anthropic API of the same backend hits the same cache.
    let anthropic: Value = client()
        .post(sim.at("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 4, "system": system,
            "messages": [{"role": "user", "content": "Any fish?"}]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(anthropic["usage"]["cache_read_input_tokens"].as_u64().unwrap_or(0) >= 960, "{anthropic}");

    // A reset empties the cache.
    client().post(sim.at("/_sim/reset")).send().await.expect("reset");
    let (events, _) = sse(client().post(&url).json(&ask("How deep is it?"))).await;
    assert_eq!(timed(&events).usage["prompt_tokens_details"]["cached_tokens"], 0);
}
