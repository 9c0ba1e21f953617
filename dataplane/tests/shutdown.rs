//! A gateway told to stop (SIGTERM, as Kubernetes stops a pod) while it serves: `/readyz` fails
//! at once, it keeps serving for the drain period, lets a long stream finish, then exits; a
//! client that follows readiness (as a Service's endpoints do) moves to the other replica and
//! sees no failure at all.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Gateway, client};

const KEY: &str = "sl_demo_quickstartkey";

fn chat(max_tokens: u32, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "demo-chat",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_drains_and_nothing_fails() {
    let drain = ["--drain-seconds", "2", "--shutdown-grace-seconds", "20"];
    let mut old = Gateway::start(None, &drain);
    let new = Gateway::start(None, &drain);
    let http = client();
    let ready = |gateway: &Gateway| {
        let (http, url) = (http.clone(), gateway.admin_url("/readyz"));
        async move { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
    };
    assert!(ready(&old).await && ready(&new).await);

    // A long stream on the replica about to stop (about 3 s at the quickstart's 12 ms a token).
    let stream = {
        let (http, url) = (http.clone(), old.url("/demo/assistant/v1/chat/completions"));
        tokio::spawn(async move {
            let response = http.post(url).bearer_auth(KEY).json(&chat(250, true)).send().await?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::Ok((status, body))
        })
    };

    // Steady traffic through a "load balancer" that sends each request to the old replica
    // while it is ready, else to the new one.
    let (sent, failed, to_old_after_stop) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stopped = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (http, sent, failed, to_old_after_stop, stopped) =
            (http.clone(), sent.clone(), failed.clone(), to_old_after_stop.clone(), stopped.clone());
        let (old_ready, old_url, new_url) = (
            old.admin_url("/readyz"),
            old.url("/demo/assistant/v1/chat/completions"),
            new.url("/demo/assistant/v1/chat/completions"),
        );
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let old_is_ready = http.get(&old_ready).send().await.is_ok_and(|r| r.status().is_success());
                let url = if old_is_ready { &old_url } else { &new_url };
                if old_is_ready && stopped.load(Ordering::Relaxed) {
                    to_old_after_stop.fetch_add(1, Ordering::Relaxed);
                }
                let ok = http
                    .post(url)
                    .bearer_auth(KEY)
                    .json(&chat(4, false))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    old.terminate();
    let told = Instant::now();
    // Not ready at once, still serving during the drain period.
    let mut unready = false;
    for _ in 0..50 {
        if !ready(&old).await {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stopped.store(true, Ordering::Relaxed);
    assert!(unready, "/readyz fails once told to stop");
    let during_drain =
        http.post(old.url("/demo/assistant/v1/chat/completions")).bearer_auth(KEY).json(&chat(4, false)).send().await;
    assert!(during_drain.is_ok_and(|r| r.status().is_success()), "the stopping replica still serves while draining");

    traffic.await.expect("traffic");
    let (status, body) = stream.await.expect("stream task").expect("the stream completes");
    assert!(status.is_success(), "{status}");
    assert!(
        body.trim_end().ends_with("data: [DONE]"),
        "the long stream finished: ...{}",
        &body[body.len().saturating_sub(200)..]
    );
    let exit = old.exit_status(Duration::from_secs(20)).expect("the stopped gateway exits");
    assert!(exit.success(), "exits cleanly: {exit:?}");
    assert!(told.elapsed() >= Duration::from_secs(2), "not before the drain period");
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent >= 10, "steady traffic: {sent} requests");
    assert_eq!(failed, 0, "no request failed across the handover ({sent} sent)");
    assert!(old.log_text().contains("drain period over"), "the log says what happened");
}
