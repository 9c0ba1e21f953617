//! The open-loop load generator: sends requests on a fixed schedule (see [`crate::schedule`])
//! from a dedicated thread, never waiting for responses, and records each one's latency, and for
//! streams the arrival of every server-sent event.
//!
//! It runs as its own process (`sluice-bench open-loop`), so it can be pinned to a CPU and its
//! own CPU time is measured apart from the system under test. A thread that sleeps to each due
//! time keeps the schedule to about 0.1 ms (a tokio timer would batch to 1 ms); latency counts
//! from the moment a request is handed to the client, and the lag behind the schedule is
//! reported beside it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;
use crate::stats::{Summary, summarize_micros};

/// Line the generator prints when the recorded part of the schedule starts.
pub const MEASURE_START: &str = "MEASURE-START";
/// Line the generator prints when the last request of the schedule was sent.
pub const MEASURE_END: &str = "MEASURE-END";

/// What to send, how fast and for how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenLoopSpec {
    /// Full URL (`http://127.0.0.1:PORT/path`).
    pub url: String,
    /// Request headers (a `content-type` among them).
    pub headers: Vec<(String, String)>,
    /// API keys sent round-robin as `authorization: Bearer KEY`; none: no such header is added.
    pub keys: Vec<String>,
    /// Request body (POST).
    pub body: String,
    /// Requests per second.
    pub rate: f64,
    /// Seconds sent first and not recorded.
    pub warmup_secs: f64,
    /// Seconds recorded.
    pub duration_secs: f64,
    /// Count server-sent events and time them.
    pub stream: bool,
    /// Requests in flight beyond which new ones are dropped (and counted as `overload`).
    pub max_in_flight: usize,
    /// A request not finished after this long counts as `timeout`.
    pub timeout_secs: f64,
    /// Return every stream's event arrival offsets (for per-event delay against a baseline).
    pub keep_events: bool,
}

/// What one open-loop run measured (recorded requests only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpenLoopResult {
    /// Requests per second offered.
    pub offered_rate: f64,
    /// Seconds of the recorded part of the schedule.
    pub measured_secs: f64,
    /// Recorded requests sent.
    pub sent: u64,
    /// Of them, answered 2xx with a whole body.
    pub ok: u64,
    /// Failures by kind: `status_NNN`, `connect`, `request`, `body`, `timeout`, `overload`.
    pub errors: BTreeMap<String, u64>,
    /// From handing the request to the client to the last byte of the response (2xx only).
    pub latency: Option<Summary>,
    /// The same from the request's due time in the schedule (adds the generator's own lag).
    pub latency_from_due: Option<Summary>,
    /// From handing the request to the client to the first byte of the body.
    pub ttfb: Option<Summary>,
    /// How late requests were handed to the client against the schedule.
    pub dispatch_lag: Option<Summary>,
    /// Gaps between consecutive events of a stream.
    pub event_gaps: Option<Summary>,
    /// Server-sent events per stream.
    pub events_per_stream: Option<Summary>,
    /// Per recorded stream, each event's arrival after the request was handed over (µs); only
    /// with `keep_events`.
    pub stream_events_us: Vec<Vec<u32>>,
    /// CPU seconds (user + system) the generator used in all.
    pub cpu_secs: f64,
}

/// Counts server-sent events (blank-line terminated) across arbitrary chunk boundaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct SseCounter {
    newline: bool,
}

impl SseCounter {
    /// Feeds the next bytes; returns how many events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut events = 0;
        for &b in bytes {
            match b {
                b'\n' if self.newline => {
                    events += 1;
                    self.newline = false;
                }
                b'\n' => self.newline = true,
                b'\r' => {}
                _ => self.newline = false,
            }
        }
        events
    }
}

struct Record {
    measured: bool,
    due: Instant,
    dispatched: Instant,
    outcome: Result<Done, String>,
}

struct Done {
    finished: Instant,
    first_byte: Option<Instant>,
    events: Vec<Instant>,
}

/// Runs the schedule and returns what it measured. Prints [`MEASURE_START`] and
/// [`MEASURE_END`] on stdout as the recorded part starts and ends, so a supervisor can sample
/// the system under test over exactly that window.
#[allow(clippy::print_stdout)] // The markers are this function's protocol with its supervisor.
pub fn run(spec: &OpenLoopSpec) -> anyhow::Result<OpenLoopResult> {
    use std::io::Write as _;
    let schedule = Schedule::new(spec.rate, spec.warmup_secs, spec.duration_secs);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let uri: Uri = spec.url.parse()?;
    let mut headers = Vec::new();
    for (name, value) in &spec.headers {
        headers.push((HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?));
    }
    let headers = Arc::new(headers);
    let keys: Vec<HeaderValue> =
        spec.keys.iter().map(|k| HeaderValue::from_str(&format!("Bearer {k}"))).collect::<Result<_, _>>()?;
    let body = Bytes::from(spec.body.clone());
    let timeout = Duration::from_secs_f64(spec.timeout_secs);
    let records = Arc::new(Mutex::new(Vec::with_capacity(schedule.total as usize)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut dropped = 0u64;

    let start = Instant::now() + Duration::from_millis(20);
    let mut stdout = std::io::stdout();
    for k in 0..schedule.total {
        let due = start + schedule.due(k);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let measured = schedule.measured(k);
        if k == schedule.warmup {
            writeln!(stdout, "{MEASURE_START}")?;
            stdout.flush()?;
        }
        if in_flight.load(Ordering::Relaxed) >= spec.max_in_flight {
            if measured {
                dropped += 1;
            }
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let mut request = Request::builder().method(Method::POST).uri(uri.clone());
        for (name, value) in headers.iter() {
            request = request.header(name, value);
        }
        if !keys.is_empty() {
            request = request.header(AUTHORIZATION, keys[(k % keys.len() as u64) as usize].clone());
        }
        let request = request.body(Full::new(body.clone()))?;
        let dispatched = Instant::now();
        let (client, records, in_flight, stream) = (client.clone(), records.clone(), in_flight.clone(), spec.stream);
        runtime.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, exchange(&client, request, stream)).await {
                Ok(outcome) => outcome,
                Err(_) => Err("timeout".to_owned()),
            };
            records.lock().unwrap_or_else(PoisonError::into_inner).push(Record { measured, due, dispatched, outcome });
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    writeln!(stdout, "{MEASURE_END}")?;
    stdout.flush()?;
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(PoisonError::into_inner));
    let mut result = analyse(&schedule, records, spec.keep_events);
    if dropped > 0 {
        *result.errors.entry("overload".to_owned()).or_default() += dropped;
        result.sent += dropped;
    }
    result.cpu_secs = crate::procs::self_cpu_secs();
    Ok(result)
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    stream: bool,
) -> Result<Done, String> {
    let response =
        client.request(request).await.map_err(|e| if e.is_connect() { "connect" } else { "request" }.to_owned())?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    let mut events = Vec::new();
    let mut sse = SseCounter::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body".to_owned())?;
        if let Some(data) = frame.data_ref() {
            let now = Instant::now();
            if first_byte.is_none() && !data.is_empty() {
                first_byte = Some(now);
            }
            if stream {
                for _ in 0..sse.feed(data) {
                    events.push(now);
                }
            }
        }
    }
    if !status.is_success() {
        return Err(format!("status_{}", status.as_u16()));
    }
    Ok(Done { finished: Instant::now(), first_byte, events })
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

fn analyse(schedule: &Schedule, records: Vec<Record>, keep_events: bool) -> OpenLoopResult {
    let mut result = OpenLoopResult {
        offered_rate: schedule.rate,
        measured_secs: schedule.measured_secs(),
        ..OpenLoopResult::default()
    };
    let (mut latency, mut from_due, mut ttfb, mut lag, mut gaps, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for record in records.into_iter().filter(|r| r.measured) {
        result.sent += 1;
        lag.push(micros(record.dispatched.saturating_duration_since(record.due)));
        match record.outcome {
            Err(kind) => *result.errors.entry(kind).or_default() += 1,
            Ok(done) => {
                result.ok += 1;
                latency.push(micros(done.finished - record.dispatched));
                from_due.push(micros(done.finished - record.due));
                if let Some(first) = done.first_byte {
                    ttfb.push(micros(first - record.dispatched));
                }
                if !done.events.is_empty() {
                    counts.push(done.events.len() as u64 * 1000);
                    gaps.extend(done.events.windows(2).map(|w| micros(w[1] - w[0])));
                    if keep_events {
                        result.stream_events_us.push(
                            done.events
                                .iter()
                                .map(|&t| micros(t - record.dispatched).min(u32::MAX as u64) as u32)
                                .collect(),
                        );
                    }
                }
            }
        }
    }
    result.latency = summarize_micros(&latency);
    result.latency_from_due = summarize_micros(&from_due);
    result.ttfb = summarize_micros(&ttfb);
    result.dispatch_lag = summarize_micros(&lag);
    result.event_gaps = summarize_micros(&gaps);
    // Counts were scaled by 1000 so that the "milliseconds" of the summary read as plain counts.
    result.events_per_stream = summarize_micros(&counts);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_counted_across_chunk_boundaries() {
        let mut sse = SseCounter::default();
        assert_eq!(sse.feed(b"data: {\"a\":1}\n\ndata: {\"b\""), 1);
        assert_eq!(sse.feed(b":2}\n"), 0);
        assert_eq!(sse.feed(b"\ndata: [DONE]\r\n\r\n"), 2);
        assert_eq!(sse.feed(b"data: x\n"), 0);
        assert_eq!(sse.feed(b"data: y\n\n"), 1);
    }
}
