//! The real gateway binary against simulated upstreams: every refusal with its status and
//! OpenAI error body, byte-exact streaming, failover, credential handling and observability.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Acme, FULL_KEY, chat_body, client};

/// Asserts an OpenAI-shaped error with `status` and `code`; returns the message.
async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    let got = response.status().as_u16();
    assert!(response.headers().contains_key("x-request-id"), "every response has a request id");
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(got, status, "status for {code}: {body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"].get("param").is_some(), "{body}");
    body["error"]["message"].as_str().expect("message").to_owned()
}

#[tokio::test]
async fn every_refusal_has_its_status_and_error_body() {
    let acme = Acme::start().await;
    let http = client();
    let url = |path: &str| acme.gateway.url(path);
    let chat = |key: &'static str, body: Value| acme.chat("chat", key, body);

    // 401
    let r = http.post(url("/acme/chat/v1/chat/completions")).json(&chat_body("m-ok")).send().await.expect("send");
    expect_error(r, 401, "missing_api_key").await;
    expect_error(chat("sl_acme_wrong_key_0000001", chat_body("m-ok")).await, 401, "invalid_api_key").await;
    expect_error(chat("sl_acme_expired_000000001", chat_body("m-ok")).await, 401, "api_key_expired").await;
    // Rotation: both keys work during the grace period, only the new one after it.
    for key in ["sl_acme_rotating_new_0001", "sl_acme_rotating_old_0001", "sl_acme_rotated_new_00001"] {
        assert_eq!(chat(key, chat_body("m-ok")).await.status(), 200, "{key}");
    }
    expect_error(chat("sl_acme_rotated_old_00001", chat_body("m-ok")).await, 401, "api_key_expired").await;

    // 403
    let message =
        expect_error(chat("sl_acme_reader_0000000001", chat_body("m-ok")).await, 403, "scope_insufficient").await;
    assert!(message.contains("inference"), "{message}");
    expect_error(chat("sl_acme_slowonly_00000001", chat_body("m-ok")).await, 403, "endpoint_not_allowed").await;
    expect_error(chat("sl_acme_embedonly_0000001", chat_body("m-ok")).await, 403, "model_not_allowed").await;
    let message = expect_error(chat("sl_acme_office_0000000001", chat_body("m-ok")).await, 403, "ip_not_allowed").await;
    assert!(message.contains("127.0.0.1"), "{message}");

    // 404: unknown project, another tenant's project, unknown endpoint, model, retired alias, disabled API.
    let r = http.post(url("/nope/chat/v1/chat/completions")).bearer_auth(FULL_KEY).json(&chat_body("m-ok")).send();
    expect_error(r.await.expect("send"), 404, "unknown_url").await;
    let r = http
        .post(url("/acme/chat/v1/chat/completions"))
        .bearer_auth("sl_other_key_0000000001")
        .json(&chat_body("m-ok"));
    expect_error(r.send().await.expect("send"), 404, "unknown_url").await;
    let r = http.post(url("/other/chat/v1/chat/completions")).bearer_auth(FULL_KEY).json(&chat_body("m-ok"));
    expect_error(r.send().await.expect("send"), 404, "unknown_url").await;
    let r = http.post(url("/acme/nope/v1/chat/completions")).bearer_auth(FULL_KEY).json(&chat_body("m-ok"));
    expect_error(r.send().await.expect("send"), 404, "unknown_url").await;
    let message = expect_error(chat(FULL_KEY, chat_body("gpt-5")).await, 404, "model_not_found").await;
    assert!(message.contains("gpt-5"), "{message}");
    let message = expect_error(chat(FULL_KEY, chat_body("m-gone")).await, 404, "model_not_found").await;
    assert!(message.contains("m-ok"), "the retired alias names its replacement: {message}");
    let r = http.post(url("/acme/vectors/v1/chat/completions")).bearer_auth(FULL_KEY).json(&chat_body("m-embed"));
    expect_error(r.send().await.expect("send"), 404, "api_not_enabled").await;

    // 405
    let r = http.get(url("/acme/chat/v1/chat/completions")).bearer_auth(FULL_KEY).send().await.expect("send");
    expect_error(r, 405, "method_not_allowed").await;

    // 400
    let r = http.post(url("/acme/chat/v1/chat/completions")).bearer_auth(FULL_KEY).body("{not json").send();
    expect_error(r.await.expect("send"), 400, "invalid_json").await;
    expect_error(chat(FULL_KEY, json!({"messages": []})).await, 400, "missing_required_parameter").await;
    let big = json!({"model": "m-ok", "messages": [], "max_tokens": 1000});
    expect_error(chat(FULL_KEY, big).await, 400, "max_tokens_exceeded").await;
    let r =
        http.post(url("/acme/chat/v1/embeddings")).bearer_auth(FULL_KEY).json(&json!({"model": "m-ok", "input": "x"}));
    expect_error(r.send().await.expect("send"), 400, "model_not_supported").await;

    // 413 and 431
    let huge = json!({"model": "m-ok", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    expect_error(chat(FULL_KEY, huge).await, 413, "request_too_large").await;
    let r = http
        .post(url("/acme/chat/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .header("x-padding", "p".repeat(40 * 1024))
        .json(&chat_body("m-ok"))
        .send()
        .await
        .expect("send");
    expect_error(r, 431, "request_headers_too_large").await;

    // 402 and 429 (the key's own limits)
    expect_error(chat("sl_acme_broke_00000000001", chat_body("m-ok")).await, 402, "budget_exhausted").await;
    let first = chat("sl_acme_tight_00000000001", chat_body("m-ok")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-requests"], "1");
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "0");
    let second = chat("sl_acme_tight_00000000001", chat_body("m-ok")).await;
    let retry_after: u64 = second.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(second, 429, "rate_limit_exceeded").await;

    // Upstream failures: 429 passed on with Retry-After, 502, 503, 504.
    let r = chat(FULL_KEY, chat_body("m-429")).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 429, "upstream_rate_limited").await;
    expect_error(chat(FULL_KEY, chat_body("m-500")).await, 502, "upstream_error").await;
    expect_error(chat(FULL_KEY, chat_body("m-dead")).await, 503, "no_healthy_backend").await;
    let started = Instant::now();
    let stream = json!({"model": "m-hang", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = http
        .post(url("/acme/slow/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .json(&stream)
        .send()
        .await
        .expect("send");
    expect_error(r, 504, "upstream_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(5), "the tier's first-token timeout cut the hang short");
}

#[tokio::test]
async fn streamed_bytes_equal_upstream_bytes_and_arrive_as_sent() {
    let acme = Acme::start().await;
    let body = json!({"model": "m-ok", "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 12,
        "messages": [{"role": "user", "content": "Count to twelve"}]});
    let mut direct_body = body.clone();
    direct_body["model"] = json!("up-model");
    let direct = client()
        .post(format!("{}/chat/completions", acme.primary.base_url()))
        .bearer_auth("upstream-secret-a")
        .json(&direct_body)
        .send()
        .await
        .expect("direct");
    assert_eq!(direct.status(), 200);
    let direct = direct.bytes().await.expect("direct body");
    let through = acme.chat("chat", FULL_KEY, body.clone()).await;
    assert_eq!(through.status(), 200);
    assert_eq!(through.headers()["content-type"], "text/event-stream");
    assert_eq!(through.headers()["x-sluice-backend"], "acme/primary/up-model");
    let through = through.bytes().await.expect("gateway body");
    assert_eq!(String::from_utf8_lossy(&through), String::from_utf8_lossy(&direct), "byte for byte");
    assert!(direct.ends_with(b"data: [DONE]\n\n"));

    // Without include_usage the gateway still asks for usage, and keeps that one chunk back.
    let mut plain = body.clone();
    plain.as_object_mut().expect("object").remove("stream_options");
    let through = acme.chat("chat", FULL_KEY, plain).await.bytes().await.expect("body");
    let events: Vec<&str> = std::str::from_utf8(&direct).expect("utf8").split_inclusive("\n\n").collect();
    let without_usage: String = events.iter().filter(|e| !e.contains("\"choices\":[]")).copied().collect();
    assert_eq!(events.len(), without_usage.split_inclusive("\n\n").count() + 1, "exactly one usage chunk");
    assert_eq!(String::from_utf8_lossy(&through), without_usage);

    // Events are forwarded as they come, not buffered: with 40 ms between tokens the client sees
    // them spread over time.
    let slow = support::Sim::start(sluice_sim::Profile {
        inter_token_ms: 40.0,
        prefill_overhead_ms: 0.0,
        jitter: 0.0,
        ..support::Sim::fast()
    })
    .await;
    let manifests = support::Manifests::new();
    manifests.write("t.yaml", &support::render_acme(&slow.base_url(), &support::dead_url()));
    manifests.write("k.yaml", include_str!("fixtures/acme-keys.yaml"));
    let gateway = support::Gateway::start(Some(manifests.path()), &[]);
    let mut response = client()
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .json(&body)
        .send()
        .await
        .expect("send");
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        arrivals.push((Instant::now(), chunk.len()));
    }
    let spread = arrivals.last().expect("chunks").0.duration_since(arrivals[0].0);
    assert!(arrivals.len() >= 10, "events arrive one by one, got {} chunks", arrivals.len());
    assert!(spread >= Duration::from_millis(200), "events were held back: all arrived within {spread:?}");
}

#[tokio::test]
async fn failover_hides_dead_and_failing_backends() {
    let acme = Acme::start().await;
    for stream in [false, true] {
        let mut body = chat_body("m-failover");
        body["stream"] = json!(stream);
        let response = acme.chat("chat", FULL_KEY, body).await;
        assert_eq!(response.status(), 200, "served despite a dead and a 503 backend");
        assert_eq!(response.headers()["x-sluice-backend"], "acme/primary/up-model");
        let text = response.text().await.expect("body");
        assert!(!text.contains("error"), "{text}");
    }
    let metrics =
        client().get(acme.gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let line = |needle: &str| {
        metrics.lines().find(|l| l.contains(needle) && !l.starts_with('#')).unwrap_or_default().to_owned()
    };
    assert!(
        line(
            "sluice_upstream_errors_total{project=\"acme\",endpoint=\"chat\",provider=\"acme/dead\",kind=\"connect\"}"
        )
        .ends_with(" 2"),
        "{metrics}"
    );
    assert!(line("provider=\"acme/flaky\",kind=\"status_5xx\"").ends_with(" 2"), "{metrics}");
    assert!(
        line("sluice_failovers_total{project=\"acme\",endpoint=\"chat\",model=\"m-failover\"}").ends_with(" 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn credentials_stay_on_their_side() {
    let acme = Acme::start().await;
    // The primary simulator only accepts the provider's credential: it gets that, not the client's key.
    let response = acme.chat("chat", FULL_KEY, chat_body("m-ok")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["model"], "up-model", "the model name was rewritten for the upstream");
    assert!(body["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0));

    let metrics =
        client().get(acme.gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let config =
        client().get(acme.gateway.admin_url("/config")).send().await.expect("config").text().await.expect("text");
    let logs = acme.gateway.logs_with("\"key\":\"acme/full\"");
    for secret in [FULL_KEY, "upstream-secret-a", "sl_acme_reader"] {
        assert!(!metrics.contains(secret), "{secret} in metrics");
        assert!(!config.contains(secret), "{secret} in /config");
        assert!(!logs.contains(secret), "{secret} in logs");
    }
    assert!(logs.contains("\"key\":\"acme/full\""), "access logs name the key by id");
}

#[tokio::test]
async fn models_deprecation_and_admin_endpoints() {
    let acme = Acme::start().await;
    let http = client();
    let url = acme.gateway.url("/acme/chat/v1/models");
    let models = |key: &'static str| {
        let url = url.clone();
        async move { client().get(url).bearer_auth(key).send().await.expect("models").json::<Value>().await.expect("json") }
    };
    let list = models("sl_acme_reader_0000000001").await;
    let ids: Vec<&str> = list["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["m-429", "m-500", "m-dead", "m-embed", "m-failover", "m-ok", "m-rerank"]);
    let ok = list["data"].as_array().expect("data").iter().find(|m| m["id"] == "m-ok").expect("m-ok");
    assert_eq!(ok["aliases"], json!(["m-old"]), "retired aliases are not listed");
    assert_eq!(ok["pricing"]["input_per_million"], 1.0);
    let limited = models("sl_acme_embedonly_0000001").await;
    assert_eq!(limited["data"].as_array().map(Vec::len), Some(1), "only the models this key may use: {limited}");
    let one = http.get(acme.gateway.url("/acme/chat/v1/models/m-old")).bearer_auth(FULL_KEY).send().await.expect("get");
    assert_eq!(one.json::<Value>().await.expect("json")["id"], "m-ok");

    let echoed = http
        .post(acme.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .header("x-request-id", "trace-4242")
        .json(&chat_body("m-ok"))
        .send()
        .await
        .expect("send");
    assert_eq!(echoed.headers()["x-request-id"], "trace-4242", "a client's request id is kept");
    assert!(acme.gateway.logs_with("\"request_id\":\"trace-4242\"").contains("\"request_id\":\"trace-4242\""));
    let generated = acme.chat("chat", FULL_KEY, chat_body("m-ok")).await;
    assert!(generated.headers()["x-request-id"].to_str().is_ok_and(|id| id.starts_with("req_") && id.len() == 28));

    let deprecated = acme.chat("chat", FULL_KEY, chat_body("m-old")).await;
    assert_eq!(deprecated.status(), 200);
    assert_eq!(deprecated.headers()["deprecation"], "true");
    assert_eq!(deprecated.headers()["sunset"], "Thu, 01 Jan 2099 00:00:00 GMT");
    assert_eq!(deprecated.headers()["x-sluice-model-replacement"], "m-ok");

    assert_eq!(http.get(acme.gateway.admin_url("/healthz")).send().await.expect("healthz").status(), 200);
    assert_eq!(http.get(acme.gateway.admin_url("/readyz")).send().await.expect("readyz").status(), 200);
    let config: Value =
        http.get(acme.gateway.admin_url("/config")).send().await.expect("config").json().await.expect("json");
    assert_eq!(config["generation"], 1);
    assert_eq!(config["keys"], 11, "a key in its rotation grace period counts once");
    assert!(config["hashes"][0].as_str().is_some_and(|h| h.starts_with("sha256:")));
    let metrics =
        http.get(acme.gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for name in [
        "sluice_requests_total{project=\"acme\",endpoint=\"chat\",model=\"m-ok\",status_class=\"2xx\"} 3",
        "sluice_tokens_total{project=\"acme\",endpoint=\"chat\",model=\"m-ok\",direction=\"output\"}",
        "sluice_request_duration_seconds_bucket",
        "sluice_time_to_first_token_seconds_bucket",
        "sluice_requests_in_flight{project=\"acme\",endpoint=\"chat\"} 0",
        "sluice_config_generation 1",
        "sluice_config_reloads_total{result=\"success\"} 1",
        "sluice_api_keys 11",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn completions_embeddings_and_rerank_are_proxied() {
    let acme = Acme::start().await;
    let http = client();
    let post = |api: &str, body: Value| {
        http.post(acme.gateway.url(&format!("/acme/chat/v1/{api}"))).bearer_auth(FULL_KEY).json(&body).send()
    };
    let completion: Value = post("completions", json!({"model": "m-ok", "prompt": "Once upon", "max_tokens": 5}))
        .await
        .expect("completions")
        .json()
        .await
        .expect("json");
    assert_eq!(completion["object"], "text_completion", "{completion}");
    assert_eq!(completion["usage"]["completion_tokens"], 5);
    let embeddings: Value = post("embeddings", json!({"model": "m-embed", "input": ["a", "b"]}))
        .await
        .expect("embeddings")
        .json()
        .await
        .expect("json");
    assert_eq!(embeddings["data"].as_array().map(Vec::len), Some(2), "{embeddings}");
    let rerank = post("rerank", json!({"model": "m-rerank", "query": "rivers", "documents": ["the Nile", "a cat"]}))
        .await
        .expect("rerank");
    assert_eq!(rerank.status(), 200);
    let rerank: Value = rerank.json().await.expect("json");
    assert_eq!(rerank["results"].as_array().map(Vec::len), Some(2), "{rerank}");
}

#[tokio::test]
async fn streams_that_break_or_stall_end_with_an_error_event_and_are_billed_once() {
    let acme = Acme::start().await;
    let http = client();
    let stream = |model: &str| json!({"model": model, "stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": "go"}]});

    // The upstream cuts the connection after three tokens.
    let response = http
        .post(acme.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .header("x-sim-fault", "reset=3")
        .json(&stream("m-ok"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "the stream had started");
    let text = response.text().await.expect("the gateway ends the stream cleanly");
    assert!(text.contains("\"code\":\"upstream_stream_error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    // The upstream stalls longer than the tier's idle-stream limit (300 ms on endpoint slow).
    let started = Instant::now();
    let response = http
        .post(acme.gateway.url("/acme/slow/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .header("x-sim-fault", "drip=2000")
        .json(&stream("m-slow"))
        .send()
        .await
        .expect("send");
    let text = response.text().await.expect("body");
    assert!(text.contains("\"code\":\"stream_idle_timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2), "cut at the idle limit, not after the drip");

    // Events 100 ms apart keep a stream alive for longer than the idle limit: the limit is on
    // silence, not on the stream's length.
    let started = Instant::now();
    let response = http
        .post(acme.gateway.url("/acme/slow/v1/chat/completions"))
        .bearer_auth(FULL_KEY)
        .header("x-sim-fault", "drip=100")
        .json(&json!({"model": "m-slow", "stream": true, "max_tokens": 8, "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .expect("send");
    let text = response.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("stream_idle_timeout"), "{text}");
    assert!(started.elapsed() > Duration::from_millis(600), "longer than the idle limit: {:?}", started.elapsed());

    let metrics = client().get(acme.gateway.admin_url("/metrics")).send().await.expect("m").text().await.expect("text");
    assert!(metrics.contains("provider=\"acme/primary\",kind=\"stream\"} 1"), "{metrics}");
    let logs = acme.gateway.logs_with("\"cut_short\":\"upstream stream error\"");
    let billed: Vec<&str> = logs.lines().filter(|l| l.contains("\"cut_short\":\"upstream stream error\"")).collect();
    assert_eq!(billed.len(), 1, "the broken stream was settled exactly once:\n{logs}");
    assert!(billed[0].contains("\"completion_tokens\":3"), "billed for what was delivered: {}", billed[0]);
}

/// Sends one request on `stream` and reads its answer's first bytes (nothing if none came
/// within `wait`).
fn ask(stream: &mut std::net::TcpStream, wait: Duration) -> String {
    use std::io::{Read, Write};
    stream.write_all(b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n").expect("request sent");
    stream.set_read_timeout(Some(wait)).expect("timeout set");
    let mut buffer = [0u8; 512];
    let read = stream.read(&mut buffer).unwrap_or(0);
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn the_listener_holds_at_most_max_connections_and_counts_them() {
    let gateway = support::Gateway::start(None, &["--max-connections", "2"]);
    let connect = || std::net::TcpStream::connect(gateway.api).expect("connected");
    let (mut first, mut second) = (connect(), connect());
    assert!(ask(&mut first, Duration::from_secs(5)).starts_with("HTTP/1.1 "));
    assert!(ask(&mut second, Duration::from_secs(5)).starts_with("HTTP/1.1 "));
    let metrics = client()
        .get(gateway.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics read");
    assert!(
        metrics.lines().any(|l| l == "sluice_connections_open 2"),
        "{}",
        metrics.lines().filter(|l| l.contains("connections")).collect::<Vec<_>>().join("\n")
    );

    // A third waits in the listen queue, unanswered, until one of the two closes.
    let mut third = connect();
    assert_eq!(ask(&mut third, Duration::from_millis(700)), "", "not served while two are open");
    drop(first);
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer.is_empty() && Instant::now() < deadline {
        let mut buffer = [0u8; 512];
        let read = std::io::Read::read(&mut third, &mut buffer).unwrap_or(0);
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 "), "served once one closed");
    assert!(gateway.log_text().contains("connection limit reached"), "the limit is logged");
    drop(second);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let gateway = support::Gateway::start(None, &["--header-read-timeout-seconds", "1"]);
    let mut stream = std::net::TcpStream::connect(gateway.api).expect("connected");
    assert!(ask(&mut stream, Duration::from_secs(5)).starts_with("HTTP/1.1 "));
    let idle = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout set");
    let mut buffer = [0u8; 64];
    let read = std::io::Read::read(&mut stream, &mut buffer);
    assert!(matches!(read, Ok(0)), "closed by the gateway: {read:?}");
    assert!(idle.elapsed() >= Duration::from_millis(900), "after the timeout, not at once: {:?}", idle.elapsed());
}
