//! Test harness: starts the real `sluice-sim` binary on a free loopback port and reads its
//! ready line; small helpers for SSE and JSON.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `sluice-sim` process, killed on drop.
pub struct Sim {
    child: Child,
    /// Base URL of the first backend, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The whole ready report.
    pub ready: Value,
}

impl Sim {
    /// Starts `sluice-sim --listen 127.0.0.1:0 ARGS...` and waits for its ready line.
    pub fn start(args: &[&str]) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0", "--log", "warn"];
        all.extend_from_slice(args);
        Self::spawn(&all)
    }

    /// Starts `sluice-sim ARGS...` as given and waits for its ready line.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-sim"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sluice-sim");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the ready line");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("sluice-sim did not print a ready line ({e}): {line:?}"));
        assert_eq!(ready["ready"], true);
        let url = ready["backends"][0]["url"].as_str().expect("url").to_owned();
        Self { child, url, ready }
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared HTTP client. Built once: building one loads TLS roots, CPU work that would
/// otherwise stall the runtime and skew the timings of concurrent streams.
pub fn client() -> reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> =
        LazyLock::new(|| reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"));
    CLIENT.clone()
}

/// POSTs JSON, returns status and parsed body.
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let response = client().post(url).json(body).send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// One server-sent event and when its last byte arrived (since the request was sent).
#[derive(Debug, Clone)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub at: Duration,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event is not JSON ({e}): {}", self.data))
    }
}

/// Sends a request and reads its SSE stream, timing each event; also returns the raw bytes.
pub async fn sse(request: reqwest::RequestBuilder) -> (Vec<Event>, Vec<u8>) {
    let start = Instant::now();
    let response = request.send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200, "stream status");
    let mut response = response;
    let mut raw = Vec::new();
    let mut events = Vec::new();
    let mut pending = String::new();
    while let Some(chunk) = response.chunk().await.expect("stream chunk") {
        let at = start.elapsed();
        raw.extend_from_slice(&chunk);
        pending.push_str(&String::from_utf8_lossy(&chunk));
        let normalized = pending.replace("\r\n", "\n");
        let mut parts: Vec<&str> = normalized.split("\n\n").collect();
        let rest = parts.pop().unwrap_or_default().to_owned();
        for part in parts.into_iter().filter(|p| !p.trim().is_empty()) {
            let mut event = None;
            let mut data = String::new();
            for line in part.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            events.push(Event { event, data, at });
        }
        pending = rest;
    }
    (events, raw)
}

/// Mean and standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
