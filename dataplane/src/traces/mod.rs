//! Traces of requests, exported over OTLP when an endpoint is configured ([`export`]): a
//! server span per request, continued from the client's `traceparent`, with a child span for
//! authentication, admission under the limits, the routing decision and each upstream attempt
//! (a client span whose context goes upstream in the attempt's own `traceparent`). Attributes
//! follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`, `server.address`) plus
//! Sluice's own (`sluice.*`). Keys appear only as their id, `<namespace>/<name>`; prompts and
//! completions only for a Project that opts in ([`content`]).
//!
//! Off, a request makes no span, clones no header and reads no clock for tracing. On, the
//! sampler decides once, when the request starts; a request it leaves out keeps only its
//! trace id and span id, for the `traceparent` its upstream calls carry (flag 00). Measured
//! (docs/performance.md): before this split an unsampled request built its whole span tree
//! (a non-recording span per stage and attempt, each with new ids and a sampler call) and
//! formatted every attribute only for the SDK to drop them, which made 1% sampling cost a
//! third of tracing everything. The request span ends when the last holder of its
//! [`RequestTrace`] lets go: the handler for an answer read whole or a refusal, the stream
//! body (through its account) for a stream.

pub mod content;
pub mod export;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanBuilder, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use sluice_crds::api::RoutingPolicy;

use crate::auth::Caller;
use crate::genai;
use crate::metrics::{self, DecisionReason};
use crate::route::Api;
use crate::slo::SloHints;
use crate::snapshot::Backend;

const TRACEPARENT: &str = "traceparent";

/// The gateway's tracer: off, or exporting through an OTLP pipeline.
#[derive(Clone, Default)]
pub struct Traces(Option<Arc<Pipeline>>);

struct Pipeline {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Traces {
    /// No traces: nothing is recorded.
    pub fn off() -> Self {
        Self(None)
    }

    /// Traces made by `provider`'s tracer.
    pub fn new(provider: SdkTracerProvider) -> Self {
        let scope = opentelemetry::InstrumentationScope::builder("sluice-gateway")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Self(Some(Arc::new(Pipeline { provider, tracer, propagator: TraceContextPropagator::new() })))
    }

    /// Whether spans are made.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Opens the server span of a request to `path`, a child of the client's `traceparent`
    /// when it sent a valid one. Sampling is decided here, once, by the configured sampler
    /// (the parent's sampled flag, or the trace id's ratio): only a sampled request gets its
    /// attributes and a context to make children in.
    pub fn start(
        &self,
        method: &hyper::Method,
        path: &str,
        headers: &HeaderMap,
        request_id: &impl std::fmt::Display,
    ) -> RequestTrace {
        let Some(pipeline) = &self.0 else { return RequestTrace(Trace::Off) };
        let parent = if headers.contains_key(TRACEPARENT) {
            pipeline.propagator.extract(&HeaderExtractor(headers))
        } else {
            Context::new()
        };
        // No attributes before the decision: the samplers offered read none, and an unsampled
        // request should not pay for them.
        let builder = SpanBuilder::from_name(method.as_str().to_owned()).with_kind(SpanKind::Server);
        let span = pipeline.tracer.build_with_context(builder, &parent);
        let context = opentelemetry::trace::Span::span_context(&span);
        if !context.is_sampled() {
            let propagation = Propagation { trace_id: context.trace_id(), span_id: context.span_id() };
            return RequestTrace(Trace::Unsampled(propagation));
        }
        let cx = parent.with_span(span);
        cx.span().set_attributes([
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("sluice.request_id", request_id.to_string()),
        ]);
        RequestTrace(Trace::Sampled(Arc::new(Live { cx, pipeline: pipeline.clone(), content: AtomicBool::new(false) })))
    }

    /// Exports every finished span now (for tests and shutdown).
    pub fn flush(&self) {
        if let Some(pipeline) = &self.0
            && let Err(error) = pipeline.provider.force_flush()
        {
            tracing::warn!(%error, "traces could not be flushed");
        }
    }

    /// Exports what is left and stops the exporter. Blocks: call it off the runtime's workers.
    pub fn shutdown(&self) {
        if let Some(pipeline) = &self.0
            && let Err(error) = pipeline.provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "traces could not be flushed at shutdown");
        }
    }
}

/// One request's trace: its server span, shared by the stages that add to it. Sampling is
/// decided once, when it starts; only a sampled request records anything. A request the
/// sampler left out keeps nothing but the context its upstream calls carry (so that the
/// decision travels with them), and its stages make no span, format no attribute and read no
/// clock.
#[derive(Clone, Default)]
pub struct RequestTrace(Trace);

#[derive(Clone, Default)]
enum Trace {
    /// Tracing is off.
    #[default]
    Off,
    /// The sampler left the request out: the `traceparent` its upstream calls get.
    Unsampled(Propagation),
    /// The request is recorded.
    Sampled(Arc<Live>),
}

/// What goes upstream for a request that records nothing: its trace id and the id of its
/// (unrecorded) span, with the sampled flag off. W3C Trace Context lets a participant pass on
/// a `parent-id` of its choosing; the one the SDK gave the unrecorded span costs nothing more.
#[derive(Clone, Copy)]
struct Propagation {
    trace_id: TraceId,
    span_id: SpanId,
}

struct Live {
    /// The request span, in the context its children are made in.
    cx: Context,
    pipeline: Arc<Pipeline>,
    /// Whether the caller's project records prompts and completions (known once the caller is).
    content: AtomicBool,
}

impl RequestTrace {
    /// Whether the request is recorded (tracing is on and the sampler kept it).
    pub fn is_recording(&self) -> bool {
        matches!(self.0, Trace::Sampled(_))
    }

    /// The trace id of a recorded request (for exemplars); `None` otherwise.
    pub fn trace_id(&self) -> Option<TraceId> {
        match &self.0 {
            Trace::Sampled(live) => Some(live.cx.span().span_context().trace_id()),
            _ => None,
        }
    }

    /// Whether the request records prompts and completions: recorded, and its project asks.
    pub fn records_content(&self) -> bool {
        matches!(&self.0, Trace::Sampled(live) if live.content.load(Ordering::Relaxed))
    }

    fn live(&self) -> Option<&Live> {
        match &self.0 {
            Trace::Sampled(live) => Some(live),
            _ => None,
        }
    }

    fn set(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(live) = self.live() {
            live.cx.span().set_attributes(attributes());
        }
    }

    fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, attributes: Vec<KeyValue>) -> StageSpan {
        let Some(live) = self.live() else { return StageSpan::default() };
        let builder = SpanBuilder::from_name(name).with_kind(kind).with_attributes(attributes);
        StageSpan(Stage::Recording(live.pipeline.tracer.build_with_context(builder, &live.cx)))
    }

    /// A span for one stage of the request (`sluice.auth`, `sluice.limits`, `sluice.route`),
    /// ended when dropped.
    pub fn stage(&self, name: &'static str) -> StageSpan {
        self.child(name, SpanKind::Internal, Vec::new())
    }

    /// Records who calls: project, endpoint, key id and tier; and whether the project's
    /// requests record their content.
    pub fn caller(&self, caller: &Caller<'_>) {
        let Some(live) = self.live() else { return };
        live.content.store(caller.project.record_content, Ordering::Relaxed);
        live.cx.span().set_attributes([
            KeyValue::new("sluice.project", caller.project.slug.to_string()),
            KeyValue::new("sluice.endpoint", caller.endpoint.slug.to_string()),
            KeyValue::new("sluice.key_id", caller.key.id.to_string()),
            KeyValue::new("sluice.tier", caller.tier.name.clone()),
        ]);
    }

    /// Records a model call: the span is named `{operation} {model}` as the GenAI conventions
    /// name inference spans, with the request's model, stream flag and SLO hints.
    pub fn model_call(&self, api: Api, model: &str, stream: bool, max_tokens: Option<u64>, slo: &SloHints) {
        let Some(live) = self.live() else { return };
        let operation = genai::operation(api);
        let span = live.cx.span();
        span.update_name(format!("{operation} {model}"));
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
            KeyValue::new("sluice.stream", stream),
        ];
        if let Some(max_tokens) = max_tokens {
            attributes.push(KeyValue::new("gen_ai.request.max_tokens", max_tokens as i64));
        }
        if let Some(hint) = slo.ttft {
            attributes.push(KeyValue::new("sluice.slo.ttft_ms", i64::from(hint.ms)));
        }
        if let Some(hint) = slo.tpot {
            attributes.push(KeyValue::new("sluice.slo.tpot_ms", i64::from(hint.ms)));
        }
        span.set_attributes(attributes);
    }

    /// Records the messages of a chat request (`body`, as it leaves for the upstream), when
    /// the request records its content.
    pub fn input(&self, api: Api, body: &[u8]) {
        if api != Api::ChatCompletions || !self.records_content() {
            return;
        }
        if let Some(messages) = content::input_messages(body) {
            self.content(content::INPUT_MESSAGES, messages);
        }
    }

    /// Records the answer's messages (read by [`content::Output`]).
    pub fn output(&self, output: content::Output) {
        if self.records_content() {
            self.content(content::OUTPUT_MESSAGES, output.into_messages());
        }
    }

    fn content(&self, key: &'static str, messages: content::Messages) {
        self.set(|| {
            let mut attributes = vec![KeyValue::new(key, messages.json)];
            if messages.truncated {
                attributes.push(KeyValue::new(content::TRUNCATED, true));
            }
            attributes
        });
    }

    /// The span of an attempt on `backend` (the `attempt`-th, from 0): a client span named as
    /// GenAI inference spans are, for the upstream model. For a request that records nothing,
    /// only the context that goes upstream.
    pub fn attempt(
        &self,
        api: Api,
        backend: &Backend,
        attempt: usize,
        server: Option<&str>,
        predicted_ttft_ms: Option<f32>,
    ) -> StageSpan {
        match &self.0 {
            Trace::Off => return StageSpan::default(),
            Trace::Unsampled(propagation) => return StageSpan(Stage::Unsampled(*propagation)),
            Trace::Sampled(_) => {}
        }
        let operation = genai::operation(api);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", genai::provider(backend.upstream.kind)),
            KeyValue::new("gen_ai.request.model", backend.model.clone()),
            KeyValue::new("sluice.backend", backend.label.to_string()),
            KeyValue::new("sluice.provider", backend.upstream.id.to_string()),
            KeyValue::new("sluice.attempt", attempt as i64),
        ];
        if let Some(address) = server {
            attributes.extend(server_attributes(address));
        }
        if let Some(ms) = predicted_ttft_ms {
            attributes.push(KeyValue::new("sluice.predicted_ttft_ms", f64::from(ms)));
        }
        self.child(format!("{operation} {}", backend.model), SpanKind::Client, attributes)
    }

    /// Records how many backends were tried after the first.
    pub fn retries(&self, retries: usize) {
        self.set(|| vec![KeyValue::new("sluice.retries", retries as i64)]);
    }

    /// Records the backend that answered (the response's model is its upstream model) and the
    /// time to first token the router predicted on it.
    pub fn served(&self, backend: &Backend, server: Option<&str>, predicted_ttft_ms: Option<f32>) {
        self.set(|| {
            let mut attributes = vec![
                KeyValue::new("gen_ai.provider.name", genai::provider(backend.upstream.kind)),
                KeyValue::new("gen_ai.response.model", backend.model.clone()),
                KeyValue::new("sluice.backend", backend.label.to_string()),
                KeyValue::new("sluice.provider", backend.upstream.id.to_string()),
            ];
            if let Some(address) = server {
                attributes.extend(server_attributes(address));
            }
            if let Some(ms) = predicted_ttft_ms {
                attributes.push(KeyValue::new("sluice.predicted_ttft_ms", f64::from(ms)));
            }
            attributes
        });
    }

    /// Records the HTTP status the client got.
    pub fn responded(&self, status: u16) {
        let Some(live) = self.live() else { return };
        let span = live.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.set_status(Status::error(status.to_string()));
        }
    }

    /// Records a refusal: `code` is its OpenAI error code (`invalid_api_key`,
    /// `rate_limit_exceeded`...).
    pub fn refused(&self, code: &str) {
        self.set(|| vec![KeyValue::new("error.type", code.to_owned())]);
    }

    /// Records how the answer ended: usage, cost, the observed time to first token and why
    /// a stream was cut short.
    pub fn settled(
        &self,
        usage: &crate::protocol::openai::Usage,
        cost_usd: f64,
        ttft: Option<Duration>,
        cut: Option<&str>,
    ) {
        let Some(live) = self.live() else { return };
        let mut attributes = vec![
            KeyValue::new("gen_ai.usage.input_tokens", usage.prompt_tokens as i64),
            KeyValue::new("gen_ai.usage.output_tokens", usage.completion_tokens as i64),
            KeyValue::new("sluice.usage.cached_input_tokens", usage.cached_tokens as i64),
            KeyValue::new("sluice.cost_usd", cost_usd),
        ];
        if let Some(ttft) = ttft {
            attributes.push(KeyValue::new("sluice.ttft_ms", ttft.as_secs_f64() * 1000.0));
        }
        if let Some(cut) = cut {
            attributes.push(KeyValue::new("sluice.cut_short", cut.to_owned()));
        }
        let span = live.cx.span();
        span.set_attributes(attributes);
        if let Some(cut) = cut {
            span.set_status(Status::error(cut.to_owned()));
        }
    }
}

/// `server.address` and `server.port` of `host[:port]`.
fn server_attributes(address: &str) -> Vec<KeyValue> {
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => match port.parse::<u16>() {
            Ok(port) => (host, Some(port)),
            Err(_) => (address, None),
        },
        _ => (address, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut attributes = vec![KeyValue::new("server.address", host.to_owned())];
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    attributes
}

/// A child span of a request, ended when dropped; empty when tracing is off or the request
/// records nothing (an attempt of such a request still carries its context upstream).
#[derive(Default)]
pub struct StageSpan(Stage);

// A stage span lives on the stack of the stage it times; boxing the SDK span would add an
// allocation to every recorded one to save stack bytes nobody is short of.
#[allow(clippy::large_enum_variant)]
#[derive(Default)]
enum Stage {
    #[default]
    Off,
    Unsampled(Propagation),
    Recording(opentelemetry_sdk::trace::Span),
}

impl StageSpan {
    /// Ends the span now.
    pub fn end(self) {}

    /// Marks the stage failed with `error_type` (an error code or failure kind).
    pub fn fail(&mut self, error_type: &str) {
        use opentelemetry::trace::Span;
        if let Stage::Recording(span) = &mut self.0 {
            span.set_attribute(KeyValue::new("error.type", error_type.to_owned()));
            span.set_status(Status::error(error_type.to_owned()));
        }
    }

    /// Adds attributes, made only when the span records.
    pub fn set(&mut self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        use opentelemetry::trace::Span;
        if let Stage::Recording(span) = &mut self.0 {
            span.set_attributes(attributes());
        }
    }

    /// Records a routing decision: the endpoint's strategy, why the first backend was chosen,
    /// how many backends the plan holds and the first of them.
    pub fn routed(&mut self, strategy: RoutingPolicy, reason: DecisionReason, candidates: usize, first: Option<&str>) {
        self.set(|| {
            let mut attributes = vec![
                KeyValue::new("sluice.routing.strategy", metrics::strategy_label(strategy)),
                KeyValue::new("sluice.routing.reason", reason.as_str()),
                KeyValue::new("sluice.routing.candidates", candidates as i64),
            ];
            if let Some(first) = first {
                attributes.push(KeyValue::new("sluice.backend", first.to_owned()));
            }
            attributes
        });
    }

    /// Records the status an upstream answered with.
    pub fn answered(&mut self, status: u16) {
        self.set(|| vec![KeyValue::new("http.response.status_code", i64::from(status))]);
    }

    /// `headers` with this span's `traceparent` in place of the client's, for the upstream
    /// request it stands for; `None` when tracing is off (the client's headers go as they
    /// are). A recorded span also writes its `tracestate`; an unrecorded request leaves the
    /// client's as it came (the W3C rule for a participant that adds nothing to it).
    pub fn propagate(&self, headers: &HeaderMap) -> Option<HeaderMap> {
        use opentelemetry::trace::Span;
        match &self.0 {
            Stage::Off => None,
            Stage::Unsampled(Propagation { trace_id, span_id }) => {
                let mut headers = headers.clone();
                let value = format!("00-{trace_id}-{span_id}-00");
                if let Ok(value) = HeaderValue::try_from(value) {
                    headers.insert(TRACEPARENT, value);
                }
                Some(headers)
            }
            Stage::Recording(span) => {
                let mut headers = headers.clone();
                headers.remove(TRACEPARENT);
                headers.remove("tracestate");
                let cx = Context::new().with_remote_span_context(span.span_context().clone());
                TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
                Some(headers)
            }
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_split_into_host_and_port() {
        let pairs = |address| {
            server_attributes(address)
                .into_iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs("api.openai.com"), [("server.address".into(), "api.openai.com".into())]);
        assert_eq!(
            pairs("10.0.0.1:8000"),
            [("server.address".into(), "10.0.0.1".into()), ("server.port".into(), "8000".into())]
        );
        assert_eq!(pairs("[fd00::1]:443")[0].1, "fd00::1");
    }

    #[test]
    fn off_makes_nothing() {
        let traces = Traces::off();
        let trace = traces.start(&hyper::Method::POST, "/p/e/v1/chat/completions", &HeaderMap::new(), &"req_1");
        assert!(!trace.is_recording());
        assert!(trace.stage("sluice.auth").propagate(&HeaderMap::new()).is_none());
    }
}
