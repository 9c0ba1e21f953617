//! The end of a request: its response body (streamed event by event or sent whole), and the
//! accounting that runs exactly once when the response ends, however it ends (complete, timed
//! out, upstream crash, client gone): usage and cost, limits settled, metrics, the access log.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use sluice_crds::config::PricingConfig;
use tokio::time::Sleep;

use crate::limits::Admission;
use crate::metrics::{Metrics, ModelMetrics, upstream_error};
use crate::protocol::openai::Usage;
use crate::protocol::sse::SseTap;
use crate::snapshot::Tier;
use crate::upstream::UpstreamBody;

/// Cost in US dollars of `usage` at `pricing` (per million tokens) times `multiplier`.
pub fn cost_usd(usage: &Usage, pricing: Option<&PricingConfig>, multiplier: f64) -> f64 {
    let Some(p) = pricing else { return 0.0 };
    let cached = usage.cached_tokens.min(usage.prompt_tokens) as f64;
    let uncached = usage.prompt_tokens as f64 - cached;
    (uncached * p.input_per_million
        + cached * p.cached_input_per_million
        + usage.completion_tokens as f64 * p.output_per_million)
        / 1_000_000.0
        * multiplier
}

/// Everything needed to settle a request once it ends.
pub struct Accounting {
    /// For the log line.
    pub request_id: crate::request::RequestId,
    /// `<project>/<endpoint>` slugs and model, for the log line.
    pub project: Arc<str>,
    /// Endpoint slug.
    pub endpoint: Arc<str>,
    /// Model as exposed.
    pub model: Arc<str>,
    /// ApiKey id (never the key).
    pub key_id: Arc<str>,
    /// Backend that answered.
    pub backend: Arc<str>,
    /// Provider of that backend, for upstream error metrics.
    pub provider: Arc<str>,
    /// Status sent to the client.
    pub status: u16,
    /// When the gateway received the request.
    pub started: Instant,
    /// When the first byte of the answer arrived from upstream.
    pub first_byte: Option<Instant>,
    /// Usage read from the answer.
    pub usage: Option<Usage>,
    /// Prompt tokens estimated before the call (used when the answer reports none).
    pub estimated_prompt_tokens: u64,
    /// Events that carried text (an estimate of output tokens when usage is missing).
    pub events: u64,
    /// Why the response ended early, if it did.
    pub cut_short: Option<&'static str>,
    /// Prices of the backend's model.
    pub pricing: Option<PricingConfig>,
    /// Key counters to settle.
    pub key_state: Arc<crate::limits::KeyState>,
    /// Tier the request ran under.
    pub tier: Arc<Tier>,
    /// Its admission.
    pub admission: Admission,
    /// Per-model metric handles.
    pub metrics: ModelMetrics,
    /// Gateway-wide metrics.
    pub all_metrics: Arc<Metrics>,
    /// The backend's in-flight counter, released at the end.
    pub backend_in_flight: Option<Arc<AtomicU32>>,
    /// Whether the request streamed.
    pub streamed: bool,
    settled: bool,
}

impl Accounting {
    /// Starts the accounting of an admitted request.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request_id: crate::request::RequestId,
        project: Arc<str>,
        endpoint: Arc<str>,
        model: Arc<str>,
        key_id: Arc<str>,
        started: Instant,
        estimated_prompt_tokens: u64,
        key_state: Arc<crate::limits::KeyState>,
        tier: Arc<Tier>,
        admission: Admission,
        metrics: ModelMetrics,
        all_metrics: Arc<Metrics>,
    ) -> Self {
        metrics.in_flight.inc();
        Self {
            request_id,
            project,
            endpoint,
            model,
            key_id,
            backend: Arc::from(""),
            provider: Arc::from(""),
            status: 0,
            started,
            first_byte: None,
            usage: None,
            estimated_prompt_tokens,
            events: 0,
            cut_short: None,
            pricing: None,
            key_state,
            tier,
            admission,
            metrics,
            all_metrics,
            backend_in_flight: None,
            streamed: false,
            settled: false,
        }
    }

    /// Settles the request. Runs once; later calls (and the drop) do nothing.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let now = Instant::now();
        if let Some(counter) = self.backend_in_flight.take() {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics.in_flight.dec();
        // A stream that broke before its usage chunk is billed for what was seen, once.
        let usage = self.usage.unwrap_or(Usage {
            prompt_tokens: if self.status < 400 { self.estimated_prompt_tokens } else { 0 },
            completion_tokens: self.events,
            cached_tokens: 0,
        });
        let billable = self.status < 400;
        let cost =
            if billable { cost_usd(&usage, self.pricing.as_ref(), self.tier.config.price_multiplier) } else { 0.0 };
        let used = if billable {
            crate::limits::Used {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_usd: cost,
            }
        } else {
            crate::limits::Used::default()
        };
        self.key_state.settle(&self.admission, &self.tier.config, used, now, jiff::Timestamp::now());

        let status = if self.status == 0 { 499 } else { self.status };
        self.metrics.count(status);
        let elapsed = now.duration_since(self.started);
        self.metrics.duration.observe(elapsed.as_secs_f64());
        if billable {
            self.metrics.tokens_in.inc_by(usage.prompt_tokens);
            self.metrics.tokens_out.inc_by(usage.completion_tokens);
        }
        let ttft = self.first_byte.map(|at| at.duration_since(self.started));
        if let Some(ttft) = ttft {
            self.metrics.ttft.observe(ttft.as_secs_f64());
            if self.streamed && usage.completion_tokens > 1 && self.cut_short.is_none() {
                let decode = elapsed.saturating_sub(ttft).as_secs_f64();
                self.metrics.tpot.observe(decode / (usage.completion_tokens - 1) as f64);
            }
        }
        if let Some(reason) = self.cut_short
            && reason == "upstream stream error"
        {
            self.all_metrics.upstream_error(&self.project, &self.endpoint, &self.provider, upstream_error::STREAM);
        }
        tracing::info!(
            target: "sluice::access",
            request_id = %self.request_id,
            project = %self.project,
            endpoint = %self.endpoint,
            model = %self.model,
            key = %self.key_id,
            backend = %self.backend,
            status,
            duration_ms = elapsed.as_millis() as u64,
            ttft_ms = ttft.map(|t| t.as_millis() as u64),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            // Whole nano-dollars: `2e-5`, not the `2.0000000000000005e-5` of summed float prices.
            cost_usd = (cost * 1e9).round() / 1e9,
            cut_short = self.cut_short,
            "request"
        );
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The body of every response the gateway sends. Never fails: upstream errors inside a stream
/// become a final SSE error event.
pub enum ResponseBody {
    /// A complete body.
    Full(Option<Bytes>),
    /// An upstream stream, forwarded event by event.
    Stream(Box<StreamBody>),
}

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Self::Stream(stream) => stream.poll_next(cx).map(|next| next.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Stream(stream) => stream.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

/// A streaming answer in flight.
pub struct StreamBody {
    upstream: UpstreamBody,
    tap: SseTap,
    pending: Option<Bytes>,
    idle_limit: Duration,
    idle: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    accounting: Accounting,
    ended: bool,
}

impl StreamBody {
    /// Wraps an upstream stream whose first (already tapped) bytes are `first`.
    pub fn new(
        upstream: UpstreamBody,
        tap: SseTap,
        first: Bytes,
        idle_limit: Duration,
        deadline: Instant,
        accounting: Accounting,
    ) -> Self {
        Self {
            upstream,
            tap,
            pending: (!first.is_empty()).then_some(first),
            idle_limit,
            idle: Box::pin(tokio::time::sleep(idle_limit)),
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            accounting,
            ended: false,
        }
    }

    fn end(&mut self, reason: Option<&'static str>) {
        self.ended = true;
        self.accounting.cut_short = reason;
        self.accounting.usage = self.tap.usage.or(self.accounting.usage);
        self.accounting.events = self.tap.text_events;
        self.accounting.finish();
    }

    /// The SSE event that tells an OpenAI SDK the stream failed.
    fn error_event(code: &str, message: &str) -> Bytes {
        let body = serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
        Bytes::from(format!("data: {body}\n\n"))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.pending.take() {
            return Poll::Ready(Some(first));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.end(Some("total timeout"));
            return Poll::Ready(Some(Self::error_event(
                "stream_timeout",
                "The response exceeded the tier's total time limit.",
            )));
        }
        loop {
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let deadline = tokio::time::Instant::now() + self.idle_limit;
                    self.idle.as_mut().reset(deadline);
                    let out = self.tap.feed(data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(out));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(request_id = %self.accounting.request_id, backend = %self.accounting.backend,
                        error = %error, "upstream stream broke");
                    let rest = self.tap.finish();
                    self.end(Some("upstream stream error"));
                    let mut event = rest.to_vec();
                    event.extend_from_slice(&Self::error_event("upstream_stream_error", "The upstream stream broke."));
                    return Poll::Ready(Some(Bytes::from(event)));
                }
                Poll::Ready(None) => {
                    let rest = self.tap.finish();
                    self.end(None);
                    return Poll::Ready((!rest.is_empty()).then_some(rest));
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        self.end(Some("idle timeout"));
                        return Poll::Ready(Some(Self::error_event(
                            "stream_idle_timeout",
                            "The upstream sent nothing for longer than the tier's idle stream limit.",
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Reads a whole upstream body, up to `limit` bytes (a single-frame body is not copied).
pub async fn collect_body(mut body: UpstreamBody, limit: usize) -> Result<Bytes, String> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            return Err(format!("the upstream answer exceeds {limit} bytes"));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            previous => {
                if let Some(previous) = previous {
                    joined.extend_from_slice(&previous);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_counts_cached_tokens_at_their_price() {
        let pricing = PricingConfig { input_per_million: 1.0, cached_input_per_million: 0.1, output_per_million: 2.0 };
        let usage = Usage { prompt_tokens: 1_000_000, completion_tokens: 500_000, cached_tokens: 400_000 };
        let cost = cost_usd(&usage, Some(&pricing), 1.5);
        // (600k * 1 + 400k * 0.1 + 500k * 2) / 1M = 1.64, times 1.5.
        assert!((cost - 2.46).abs() < 1e-9, "{cost}");
        assert_eq!(cost_usd(&usage, None, 1.0), 0.0);
    }
}
