//! Replays a trace through a gateway, open loop: a thread sleeps to each request's due time and
//! hands it to a pooled hyper client, never waiting for answers. Each streamed answer is timed
//! token by token (TTFT to the first token event, TPOT over the rest), and the gateway's
//! `x-sluice-predicted-ttft-ms` and `x-sluice-backend` are kept. Fault switches of the fleet are
//! posted on the same clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::fleet::{FaultSwitch, MODEL};
use super::trace::{SloClass, TraceRequest, WorkloadKind};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What happened to one request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Due time, seconds after the start.
    pub at: f64,
    /// Recorded (after the warm-up).
    pub measured: bool,
    /// Its class.
    pub class: Option<SloClass>,
    /// Its workload.
    pub workload: Option<WorkloadKind>,
    /// HTTP status, if a response came.
    pub status: Option<u16>,
    /// Client-visible failure: `status_NNN`, `connect`, `request`, `body` (cut), `stream_error`
    /// (an error event), `timeout`, `incomplete` (fewer tokens than asked).
    pub error: Option<String>,
    /// From handing the request over to the first token event, ms.
    pub ttft_ms: Option<f64>,
    /// Mean gap between token events after the first, ms.
    pub tpot_ms: Option<f64>,
    /// Token events received.
    pub tokens: u32,
    /// From handing over to the end of the stream, ms.
    pub e2e_ms: Option<f64>,
    /// `x-sluice-predicted-ttft-ms`.
    pub predicted_ttft_ms: Option<f64>,
    /// `x-sluice-backend`.
    pub backend: Option<String>,
    /// How late it was handed over against the schedule, ms.
    pub lag_ms: f64,
}

/// Where and how to send the trace.
#[derive(Clone, Debug)]
pub struct Target {
    /// Chat completions URL.
    pub url: String,
    /// API key.
    pub key: String,
    /// Seconds at the start that are not recorded.
    pub warmup_secs: f64,
    /// A request not finished after this long is a `timeout`.
    pub timeout: Duration,
}

/// The request body of a trace request: streamed, exactly `output_tokens` tokens.
pub fn body(request: &TraceRequest) -> String {
    serde_json::json!({
        "model": MODEL,
        "messages": request.messages,
        "max_tokens": request.output_tokens,
        "stream": true,
    })
    .to_string()
}

/// Sends the trace and returns every request's outcome, in trace order.
pub fn run(
    target: &Target,
    trace: &[TraceRequest],
    faults: &[(SocketAddr, FaultSwitch)],
) -> anyhow::Result<Vec<Outcome>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let uri: Uri = target.url.parse()?;
    let outcomes = Arc::new(Mutex::new(vec![Outcome::default(); trace.len()]));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut switches: Vec<&(SocketAddr, FaultSwitch)> = faults.iter().collect();
    switches.sort_by(|a, b| a.1.at.total_cmp(&b.1.at));
    let mut switches = switches.into_iter().peekable();

    let start = Instant::now() + Duration::from_millis(20);
    for (index, request) in trace.iter().enumerate() {
        let due = start + Duration::from_secs_f64(request.at);
        while let Some((addr, switch)) = switches.next_if(|(_, s)| s.at <= request.at) {
            sleep_until(start + Duration::from_secs_f64(switch.at));
            runtime.spawn(post_faults(client.clone(), *addr, switch.faults.to_string()));
        }
        sleep_until(due);
        let (ttft, tpot) = request.class.hints();
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", target.key));
        if let Some(ms) = ttft {
            builder = builder.header("x-slo-ttft-ms", ms.to_string());
        }
        if let Some(ms) = tpot {
            builder = builder.header("x-slo-tpot-ms", ms.to_string());
        }
        let http = builder.body(Full::new(Bytes::from(body(request))))?;
        let dispatched = Instant::now();
        let base = Outcome {
            at: request.at,
            measured: request.at >= target.warmup_secs,
            class: Some(request.class),
            workload: Some(request.workload),
            lag_ms: dispatched.saturating_duration_since(due).as_secs_f64() * 1000.0,
            ..Outcome::default()
        };
        let (client, outcomes, in_flight, timeout) =
            (client.clone(), outcomes.clone(), in_flight.clone(), target.timeout);
        in_flight.fetch_add(1, Ordering::Relaxed);
        runtime.spawn(async move {
            let mut outcome = base;
            match tokio::time::timeout(timeout, exchange(&client, http, dispatched, &mut outcome)).await {
                Ok(Ok(())) => {}
                Ok(Err(kind)) => outcome.error = Some(kind),
                Err(_) => outcome.error = Some("timeout".into()),
            }
            outcomes.lock().unwrap_or_else(PoisonError::into_inner)[index] = outcome;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    for (addr, switch) in switches {
        sleep_until(start + Duration::from_secs_f64(switch.at));
        runtime.spawn(post_faults(client.clone(), *addr, switch.faults.to_string()));
    }
    let deadline = Instant::now() + target.timeout + Duration::from_secs(1);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    runtime.shutdown_timeout(Duration::from_millis(200));
    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(PoisonError::into_inner));
    for (outcome, request) in outcomes.iter_mut().zip(trace) {
        if outcome.class.is_none() {
            // Never finished before the runtime stopped.
            *outcome = Outcome {
                at: request.at,
                measured: request.at >= target.warmup_secs,
                class: Some(request.class),
                workload: Some(request.workload),
                error: Some("timeout".into()),
                ..Outcome::default()
            };
        }
    }
    Ok(outcomes)
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

async fn post_faults(client: HttpClient, addr: SocketAddr, faults: String) {
    let Ok(request) = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/_sim/faults"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(faults)))
    else {
        return;
    };
    if let Ok(response) = client.request(request).await {
        let _ = response.into_body().collect().await;
    }
}

/// One exchange: fills `outcome`, or returns the kind of client-visible failure.
async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    dispatched: Instant,
    outcome: &mut Outcome,
) -> Result<(), String> {
    let response =
        client.request(request).await.map_err(|e| if e.is_connect() { "connect" } else { "request" }.to_owned())?;
    let status = response.status();
    outcome.status = Some(status.as_u16());
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    outcome.predicted_ttft_ms = header("x-sluice-predicted-ttft-ms").and_then(|v| v.parse().ok());
    outcome.backend = header("x-sluice-backend");
    let mut body = response.into_body();
    let mut events = SseEvents::default();
    let (mut first, mut last, mut stream_error, mut done) = (None, None, false, false);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body".to_owned())?;
        let Some(data) = frame.data_ref() else { continue };
        let now = Instant::now();
        for event in events.feed(data) {
            match event {
                Event::Token => {
                    first.get_or_insert(now);
                    last = Some(now);
                    outcome.tokens += 1;
                }
                Event::Error => stream_error = true,
                Event::Done => done = true,
                Event::Other => {}
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    outcome.e2e_ms = Some(ms(dispatched.elapsed()));
    if let (Some(first), Some(last)) = (first, last) {
        outcome.ttft_ms = Some(ms(first - dispatched));
        if outcome.tokens >= 2 {
            outcome.tpot_ms = Some(ms(last - first) / f64::from(outcome.tokens - 1));
        }
    }
    if !status.is_success() {
        return Err(format!("status_{}", status.as_u16()));
    }
    if stream_error {
        return Err("stream_error".into());
    }
    if !done {
        return Err("incomplete".into());
    }
    Ok(())
}

/// What a server-sent event of a chat stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A chunk with generated text.
    Token,
    /// An error event (`data: {"error": ...}`).
    Error,
    /// `data: [DONE]`.
    Done,
    /// Anything else (a role-only or usage-only chunk).
    Other,
}

/// Splits a chat stream into events across arbitrary chunk boundaries.
#[derive(Debug, Default)]
pub struct SseEvents {
    pending: Vec<u8>,
}

impl SseEvents {
    /// Feeds the next bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.pending.extend(bytes.iter().copied().filter(|&b| b != b'\r'));
        let mut events = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            events.push(classify(&event));
        }
        events
    }
}

fn classify(event: &[u8]) -> Event {
    let text = String::from_utf8_lossy(event);
    let data: String = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    if data == "[DONE]" {
        return Event::Done;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&data) else { return Event::Other };
    if value.get("error").is_some() {
        return Event::Error;
    }
    let content = value["choices"][0]["delta"]["content"].as_str().unwrap_or_default();
    if content.is_empty() { Event::Other } else { Event::Token }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_classified_across_chunks() {
        let mut sse = SseEvents::default();
        let role = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        assert_eq!(sse.feed(role), vec![Event::Other]);
        assert_eq!(sse.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"He"), vec![]);
        assert_eq!(
            sse.feed(b"llo\"}}]}\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\" you\"}}]}\n\n"),
            vec![Event::Token, Event::Token]
        );
        assert_eq!(
            sse.feed(b"data: {\"error\":{\"message\":\"upstream cut\"}}\n\ndata: [DONE]\n\n"),
            vec![Event::Error, Event::Done]
        );
    }

    #[test]
    fn the_body_streams_exactly_the_asked_tokens() {
        let request = TraceRequest {
            at: 0.0,
            class: SloClass::Batch,
            workload: WorkloadKind::SharedPrefix,
            messages: serde_json::json!([{"role": "user", "content": "hi"}]),
            prompt_tokens: 4,
            output_tokens: 17,
        };
        let body: serde_json::Value = serde_json::from_str(&body(&request)).expect("json");
        assert_eq!(body["max_tokens"], 17);
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], MODEL);
    }
}
