//! Traces over OTLP: the real gateway binary exports to a real OTLP/HTTP receiver (protobuf
//! bodies decoded with the official definitions, `opentelemetry-proto`), and stand-in
//! upstreams record the `traceparent` each attempt carries. Checked: the spans of a streamed
//! request and of a failed-over one (names, kinds, parent-child links, GenAI and Sluice
//! attributes), the client's trace continued, each attempt's own context sent upstream, and no
//! prompt text or key anywhere in what was exported. Over TLS, both protocols (gRPC configured
//! by the `OTEL_*` variables, OTLP/HTTP by flags) reach a receiver that requires a client
//! certificate and records the one it got; a CA that does not match, or no client certificate,
//! costs the spans and never a request; TLS files with an `http://` endpoint stop the start.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use support::{Gateway, Manifests, Recorded, apikey, client, eventually};
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

const KEY: &str = "sl_acme_tracing_0000000000001";
const UPSTREAM_SECRET: &str = "upstream-secret-trace";
const PROMPT: &str = "PROMPT-MARKER-7f3a: tell me about the weather";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// The most text each content attribute holds (`LIMIT_BYTES` in the gateway's traces).
const CONTENT_LIMIT: usize = 16 * 1024;

/// What the receiver got: every export request, raw and decoded, and the client certificate
/// each came with over TLS.
#[derive(Clone, Default)]
struct Receiver {
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    spans: Arc<Mutex<Vec<Span>>>,
    resources: Arc<Mutex<Vec<HashMap<String, String>>>>,
    client_certificates: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// What tonic knows of a connection it accepted over TLS.
type TlsInfo = TlsConnectInfo<TcpConnectInfo>;

impl Receiver {
    /// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a loopback port.
    async fn start() -> (String, Self) {
        let receiver = Self::default();
        let app = receiver.http_routes();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), receiver)
    }

    /// The same over TLS ([`serve`]): its server certificate, requiring a client certificate
    /// its CA signed. HTTP/2, which a collector's Go server also picks for a client offering it.
    async fn start_https(pki: &Pki) -> (String, Self) {
        let receiver = Self::default();
        let addr = serve(Routes::from(receiver.http_routes()), Some(pki)).await;
        (format!("https://{addr}"), receiver)
    }

    /// `POST /v1/traces`: checks the headers, decodes and records the export.
    fn http_routes(&self) -> axum::Router {
        let state = self.clone();
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |tls: Option<axum::Extension<TlsInfo>>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        assert_eq!(
                            headers.get("content-type").map(|v| v.as_bytes()),
                            Some(&b"application/x-protobuf"[..])
                        );
                        assert_eq!(headers.get("x-collector-token").map(|v| v.as_bytes()), Some(&b"t0ken"[..]));
                        let request = ExportTraceServiceRequest::decode(body.clone()).expect("an OTLP trace request");
                        state.saw_client(tls.as_ref().map(|axum::Extension(info)| info));
                        state.record(request, body.to_vec());
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        ([("content-type", "application/x-protobuf")], answer)
                    }
                },
            ),
        )
    }

    /// An OTLP/gRPC receiver (the generated `TraceService`, served by tonic) on a loopback port.
    async fn start_grpc() -> (String, Self) {
        Self::start_grpc_tls(None).await
    }

    /// The same over TLS when `tls` is given ([`serve`]).
    async fn start_grpc_tls(tls: Option<&Pki>) -> (String, Self) {
        let receiver = Self::default();
        let addr = serve(Routes::new(TraceServiceServer::new(receiver.clone())), tls).await;
        let scheme = if tls.is_some() { "https" } else { "http" };
        (format!("{scheme}://{addr}"), receiver)
    }

    /// Records the client certificate of a connection over TLS.
    fn saw_client(&self, tls: Option<&TlsInfo>) {
        let leaf = tls.and_then(TlsInfo::peer_certs).and_then(|chain| chain.first().map(|c| c.to_vec()));
        if let Some(leaf) = leaf {
            self.client_certificates.lock().unwrap().push(leaf);
        }
    }

    fn record(&self, request: ExportTraceServiceRequest, raw: Vec<u8>) {
        self.raw.lock().unwrap().push(raw);
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
            self.resources.lock().unwrap().push(resource);
            for scope in resource_spans.scope_spans {
                self.spans.lock().unwrap().extend(scope.spans);
            }
        }
    }

    /// The spans of trace `trace_id` once `count` of them have arrived.
    async fn trace(&self, trace_id: &str, count: usize) -> Vec<Span> {
        let of_trace = || -> Vec<Span> {
            self.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect()
        };
        eventually(Duration::from_secs(10), || async { of_trace().len() >= count }).await;
        let spans = of_trace();
        assert_eq!(spans.len(), count, "spans of {trace_id}: {:#?}", names(&spans));
        spans
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let token = request.metadata().get("x-collector-token").map(|v| v.as_bytes().to_vec());
        assert_eq!(token.as_deref(), Some(&b"t0ken"[..]));
        self.saw_client(request.extensions().get::<TlsInfo>());
        let request = request.into_inner();
        let raw = request.encode_to_vec();
        self.record(request, raw);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves `routes` with tonic on a loopback port, over TLS when `tls` is given: its server
/// certificate, requiring a client certificate its CA signed. Returns the address.
async fn serve(routes: Routes, tls: Option<&Pki>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut server = tonic::transport::Server::builder();
    if let Some(pki) = tls {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
            .client_ca_root(Certificate::from_pem(&pki.ca));
        server = server.tls_config(config).expect("server TLS");
    }
    tokio::spawn(async move {
        let _ = server.add_routes(routes).serve_with_incoming(connections(listener)).await;
    });
    addr
}

/// The connections `listener` accepts, as tonic takes them.
fn connections(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn attributes(list: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// Checks that `span` has each of `expected`'s attributes with its value.
fn has_attributes(span: &Span, expected: &[(&str, &str)]) {
    let attrs = attributes(&span.attributes);
    for (key, value) in expected {
        assert_eq!(attrs.get(*key).map(String::as_str), Some(*value), "{key} of {} in {attrs:#?}", span.name);
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name:?} in {:?}", names(spans)))
}

/// A stand-in OpenAI upstream that records each request's headers and answers a stream (when
/// asked for one) or a whole completion, or fails with `fail` when set.
async fn upstream(fail: Option<u16>) -> (String, Recorded) {
    let seen: Recorded = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let headers = parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let path = parts.uri.path().to_owned();
            let stream = body["stream"] == true;
            // A prompt that starts with LONG gets an answer longer than the traces' content limit.
            let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
            let long = last["content"].as_str().is_some_and(|c| c.starts_with("LONG"));
            let first_text =
                if long { format!("COMPLETION-{}", "y".repeat(CONTENT_LIMIT)) } else { "COMPLETION-".into() };
            record.lock().unwrap().push(support::Received { path, headers, body });
            let response = axum::response::Response::builder();
            if let Some(status) = fail {
                return response
                    .status(status)
                    .body(axum::body::Body::from(r#"{"error":{"message":"down"}}"#))
                    .unwrap();
            }
            if stream {
                let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                };
                let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                    "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}});
                let events = [
                    chunk(json!({"role": "assistant", "content": first_text}), json!(null)),
                    chunk(json!({"content": "MARKER"}), json!(null)),
                    chunk(json!({}), json!("stop")),
                    usage,
                ];
                let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
                text.push_str("data: [DONE]\n\n");
                return response
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from(text))
                    .unwrap();
            }
            let whole = json!({"id": "c2", "object": "chat.completion", "created": 1, "model": "up-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "COMPLETION-MARKER"},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}});
            response.header("content-type", "application/json").body(axum::body::Body::from(whole.to_string())).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn manifests(good: &str, bad: &str) -> String {
    manifests_recording(good, bad, false)
}

/// The tenant, its Project recording prompts and completions when `record_content`.
fn manifests_recording(good: &str, bad: &str, record_content: bool) -> String {
    let provider = |name: &str, url: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  \
type: openai\n  baseUrl: {url}/v1\n  credentials: {{secretKeyRef: {{name: upstream, key: token}}}}\n  models:\n    \
- name: up-model\n      capabilities: [chat]\n      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}\n---\n"
        )
    };
    let acme = if record_content {
        support::ACME_PROJECT.replace(
            "spec: {slug: acme, defaultTier: standard}",
            "spec: {slug: acme, defaultTier: standard, tracing: {recordContent: true}}",
        )
    } else {
        support::ACME_PROJECT.to_owned()
    };
    format!(
        r#"{acme}apiVersion: v1
kind: Secret
metadata: {{name: upstream, namespace: acme}}
stringData: {{token: {UPSTREAM_SECRET}}}
---
{}{}apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-stream
      backends: [{{providerRef: {{name: good}}, model: up-model}}]
    - name: m-failover
      backends:
        - {{providerRef: {{name: bad}}, model: up-model, priority: 0}}
        - {{providerRef: {{name: good}}, model: up-model, priority: 1}}
---
{}
"#,
        provider("good", good),
        provider("bad", bad),
        apikey("acme", "full", KEY, ""),
    )
}

struct Setup {
    receiver: Receiver,
    good: Recorded,
    bad: Recorded,
    good_url: String,
    _manifests: Manifests,
    gateway: Gateway,
}

async fn start() -> Setup {
    start_with("http/protobuf").await
}

async fn start_with(protocol: &str) -> Setup {
    start_recording(protocol, false).await
}

async fn start_recording(protocol: &str, record_content: bool) -> Setup {
    let (collector, receiver) = if protocol == "grpc" { Receiver::start_grpc().await } else { Receiver::start().await };
    start_exporting(collector, receiver, protocol, record_content, |_| {}).await
}

/// The gateway exporting to `collector` with the `OTEL_*` variables, and whatever flags or
/// variables `configure` adds.
async fn start_exporting(
    collector: String,
    receiver: Receiver,
    protocol: &str,
    record_content: bool,
    configure: impl FnOnce(&mut std::process::Command),
) -> Setup {
    let (good_url, good) = upstream(None).await;
    let (bad_url, bad) = upstream(Some(503)).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests_recording(&good_url, &bad_url, record_content));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-gateway"));
    command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"]);
    command.arg("--config").arg(dir.path());
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t0ken")
        .env("OTEL_SERVICE_NAME", "gateway-under-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    configure(&mut command);
    let gateway = Gateway::spawn(command);
    Setup { receiver, good, bad, good_url, _manifests: dir, gateway }
}

/// The `traceparent` an upstream got: (trace id, parent span id).
fn upstream_parent(recorded: &Recorded, index: usize) -> (String, String) {
    let seen = recorded.lock().unwrap();
    let value = seen[index].headers.get("traceparent").cloned().expect("a traceparent upstream");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_a_stream_and_a_failover_follow_the_genai_conventions() {
    let setup = start().await;

    // A streamed request, continuing the client's trace.
    let response = client()
        .post(setup.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "m-stream", "stream": true, "max_tokens": 20,
            "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    assert!(text.contains("COMPLETION-") && text.contains("[DONE]"), "{text}");

    let spans = setup.receiver.trace(CLIENT_TRACE, 5).await;
    let request = named(&spans, "chat m-stream");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN, "the client's span is the parent");
    has_attributes(
        request,
        &[
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.request.model", "m-stream"),
            ("gen_ai.response.model", "up-model"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.usage.input_tokens", "11"),
            ("gen_ai.usage.output_tokens", "3"),
            ("gen_ai.request.max_tokens", "20"),
            ("server.address", "127.0.0.1"),
            ("sluice.project", "acme"),
            ("sluice.endpoint", "chat"),
            ("sluice.key_id", "acme/full"),
            ("sluice.tier", "standard"),
            ("sluice.backend", "acme/good/up-model"),
            ("sluice.stream", "true"),
            ("sluice.retries", "0"),
            ("http.response.status_code", "200"),
            ("http.request.method", "POST"),
        ],
    );
    let attrs = attributes(&request.attributes);
    assert!(attrs.get("sluice.ttft_ms").and_then(|v| v.parse::<f64>().ok()).is_some(), "{attrs:#?}");
    let port = setup.good_url.rsplit(':').next().expect("port");
    assert_eq!(attrs.get("server.port").map(String::as_str), Some(port));
    for stage in ["sluice.auth", "sluice.limits", "sluice.route"] {
        let span = named(&spans, stage);
        assert_eq!(span.parent_span_id, request.span_id, "{stage} is a child of the request");
        assert_eq!(span.kind, SpanKind::Internal as i32, "{stage}");
    }
    let route = attributes(&named(&spans, "sluice.route").attributes);
    assert_eq!(route.get("sluice.routing.strategy").map(String::as_str), Some("sloAware"), "{route:#?}");
    assert_eq!(route.get("sluice.routing.candidates").map(String::as_str), Some("1"), "{route:#?}");
    let attempt = named(&spans, "chat up-model");
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(attempt.parent_span_id, request.span_id);
    let attempt_attrs = attributes(&attempt.attributes);
    assert_eq!(attempt_attrs.get("gen_ai.request.model").map(String::as_str), Some("up-model"));
    assert_eq!(attempt_attrs.get("http.response.status_code").map(String::as_str), Some("200"));
    // The upstream was called in the attempt's context.
    assert_eq!(upstream_parent(&setup.good, 0), (CLIENT_TRACE.to_owned(), hex(&attempt.span_id)));

    // A request failed over from a 503 to the good backend, in a trace of its own.
    let response = client()
        .post(setup.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "m-failover", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let (trace_id, _) = upstream_parent(&setup.bad, 0);
    let spans = setup.receiver.trace(&trace_id, 6).await;
    let request = named(&spans, "chat m-failover");
    assert!(request.parent_span_id.is_empty(), "a new trace starts at the gateway");
    let attrs = attributes(&request.attributes);
    assert_eq!(attrs.get("sluice.retries").map(String::as_str), Some("1"), "{attrs:#?}");
    assert_eq!(attrs.get("sluice.backend").map(String::as_str), Some("acme/good/up-model"));
    assert_eq!(attrs.get("gen_ai.usage.output_tokens").map(String::as_str), Some("2"));
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "chat up-model").collect();
    attempts.sort_by_key(|s| attributes(&s.attributes)["sluice.attempt"].clone());
    assert_eq!(attempts.len(), 2, "{:?}", names(&spans));
    let (first, second) = (attributes(&attempts[0].attributes), attributes(&attempts[1].attributes));
    assert!(attempts.iter().all(|a| a.parent_span_id == request.span_id));
    assert_eq!(first.get("sluice.backend").map(String::as_str), Some("acme/bad/up-model"));
    assert_eq!(first.get("error.type").map(String::as_str), Some("status_5xx"));
    assert_eq!(first.get("http.response.status_code").map(String::as_str), Some("503"));
    assert_eq!(attempts[0].status.as_ref().map(|s| s.code), Some(2), "the failed attempt's status is Error");
    assert_eq!(second.get("sluice.backend").map(String::as_str), Some("acme/good/up-model"));
    assert!(!second.contains_key("error.type"));
    // Each upstream saw its own attempt's span as the parent.
    assert_eq!(upstream_parent(&setup.bad, 0), (trace_id.clone(), hex(&attempts[0].span_id)));
    assert_eq!(upstream_parent(&setup.good, 1), (trace_id, hex(&attempts[1].span_id)));

    // The same requests in the metrics: GenAI histograms by operation, provider, models and
    // stream (time to first token for the stream only), attempts by outcome, cost.
    let metrics = metrics(&setup.gateway).await;
    let call = |model: &str, stream: bool| {
        format!(
            "project=\"acme\",endpoint=\"chat\",gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
gen_ai_request_model=\"{model}\",gen_ai_response_model=\"up-model\",stream=\"{stream}\""
        )
    };
    for line in [
        format!("gen_ai_server_time_to_first_token_seconds_count{{{}}} 1", call("m-stream", true)),
        format!("gen_ai_server_request_duration_seconds_count{{{}}} 1", call("m-failover", false)),
        format!("gen_ai_client_token_usage_sum{{{},gen_ai_token_type=\"input\"}} 11.0", call("m-stream", true)),
        format!("gen_ai_client_token_usage_sum{{{},gen_ai_token_type=\"output\"}} 2.0", call("m-failover", false)),
        "sluice_upstream_attempts_total{provider=\"acme/bad\",model=\"up-model\",outcome=\"status_5xx\"} 1".into(),
        "sluice_upstream_attempts_total{provider=\"acme/good\",model=\"up-model\",outcome=\"success\"} 2".into(),
        "sluice_upstream_attempt_duration_seconds_count{provider=\"acme/bad\",model=\"up-model\",outcome=\"failure\"} 1"
            .into(),
        "sluice_time_to_first_token_seconds_count{project=\"acme\",endpoint=\"chat\",model=\"m-failover\"} 0".into(),
        "sluice_cost_usd_total{project=\"acme\",endpoint=\"chat\",model=\"m-stream\"} 0.000017".into(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    assert!(
        !metrics.contains(&format!("gen_ai_server_time_to_first_token_seconds_count{{{}}}", call("m-failover", false)))
    );

    // The resource, and nothing secret anywhere in what was exported.
    let resources = setup.receiver.resources.lock().unwrap().clone();
    assert!(resources.iter().all(|r| r.get("service.name").map(String::as_str) == Some("gateway-under-test")));
    assert!(resources.iter().all(|r| r.get("deployment.environment.name").map(String::as_str) == Some("test")));
    let raw = setup.receiver.raw.lock().unwrap().concat();
    for secret in ["PROMPT-MARKER", "COMPLETION-", KEY, UPSTREAM_SECRET, "weather"] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret:?} was exported");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_is_a_span_too() {
    let setup = start().await;
    let response = client()
        .post(setup.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth("sl_acme_not_a_key_000000000000")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .json(&json!({"model": "m-stream", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    let spans = setup.receiver.trace("0af7651916cd43dd8448eb211c80319c", 2).await;
    let request = named(&spans, "POST");
    let attrs = attributes(&request.attributes);
    assert_eq!(attrs.get("error.type").map(String::as_str), Some("invalid_api_key"), "{attrs:#?}");
    assert_eq!(attrs.get("http.response.status_code").map(String::as_str), Some("401"));
    let auth = named(&spans, "sluice.auth");
    assert_eq!(auth.parent_span_id, request.span_id);
    assert_eq!(attributes(&auth.attributes).get("error.type").map(String::as_str), Some("invalid_api_key"));
    assert!(setup.good.lock().unwrap().is_empty() && setup.bad.lock().unwrap().is_empty());
    let metrics = metrics(&setup.gateway).await;
    let line = "sluice_rejections_total{project=\"\",endpoint=\"\",reason=\"invalid_api_key\"} 1";
    assert!(metrics.contains(line), "{line} missing from\n{metrics}");
}

async fn metrics(gateway: &Gateway) -> String {
    client().get(gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_go_over_grpc_too() {
    let setup = start_with("grpc").await;
    let response = client()
        .post(setup.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
        .json(&json!({"model": "m-stream", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let spans = setup.receiver.trace("11111111111111111111111111111111", 5).await;
    let request = named(&spans, "chat m-stream");
    assert_eq!(hex(&request.parent_span_id), "2222222222222222");
    let attrs = attributes(&request.attributes);
    assert_eq!(attrs.get("gen_ai.usage.input_tokens").map(String::as_str), Some("9"), "{attrs:#?}");
    assert_eq!(named(&spans, "chat up-model").parent_span_id, request.span_id);
}

#[test]
fn tracing_is_off_without_an_endpoint() {
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests("http://127.0.0.1:9", "http://127.0.0.1:9"));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    assert!(!gateway.log_text().contains("exporting traces"), "{}", gateway.log_text());
}

/// The JSON of a content attribute of `span`.
fn content(span: &Span, key: &str) -> serde_json::Value {
    let attrs = attributes(&span.attributes);
    let text = attrs.get(key).unwrap_or_else(|| panic!("{key} missing from {attrs:#?}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is not JSON: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_that_opts_in_gets_prompts_and_completions_in_its_spans() {
    let setup = start_recording("http/protobuf", true).await;
    let chat = |trace: &str, body: serde_json::Value| {
        client()
            .post(setup.gateway.url("/acme/chat/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("traceparent", format!("00-{trace}-{CLIENT_SPAN}-01"))
            .json(&body)
            .send()
    };

    // Streamed: the answer is assembled from its events.
    let streamed = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
    let body = json!({"model": "m-stream", "stream": true,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]});
    let response = chat(streamed, body).await.expect("send");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("stream").contains("[DONE]"));
    let spans = setup.receiver.trace(streamed, 5).await;
    let request = named(&spans, "chat m-stream");
    assert_eq!(
        content(request, "gen_ai.input.messages"),
        json!([{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}])
    );
    assert_eq!(
        content(request, "gen_ai.output.messages"),
        json!([{"role": "assistant", "parts": [{"type": "text", "content": "COMPLETION-MARKER"}],
            "finish_reason": "stop"}])
    );
    assert!(!attributes(&request.attributes).contains_key("sluice.content.truncated"));
    // Only the request span holds content.
    for span in spans.iter().filter(|s| s.span_id != request.span_id) {
        assert!(!attributes(&span.attributes).contains_key("gen_ai.input.messages"), "{}", span.name);
    }

    // Read whole, with a prompt past the limit: cut there.
    let whole = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2";
    let long_prompt = format!("{PROMPT} {}", "z".repeat(CONTENT_LIMIT));
    let body = json!({"model": "m-stream", "messages": [{"role": "user", "content": long_prompt},
        {"role": "user", "content": "dropped"}]});
    assert_eq!(chat(whole, body).await.expect("send").status(), 200);
    let spans = setup.receiver.trace(whole, 5).await;
    let request = named(&spans, "chat m-stream");
    let input = content(request, "gen_ai.input.messages");
    assert_eq!(input.as_array().map(Vec::len), Some(1), "messages after the limit are dropped");
    let kept = input[0]["parts"][0]["content"].as_str().expect("text");
    assert_eq!(kept.len(), CONTENT_LIMIT);
    assert!(long_prompt.starts_with(kept));
    assert_eq!(content(request, "gen_ai.output.messages")[0]["parts"][0]["content"], "COMPLETION-MARKER");
    assert_eq!(attributes(&request.attributes).get("sluice.content.truncated").map(String::as_str), Some("true"));

    // A streamed answer past the limit: cut there too.
    let long_answer = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa3";
    let body = json!({"model": "m-stream", "stream": true, "messages": [{"role": "user", "content": "LONG please"}]});
    let response = chat(long_answer, body).await.expect("send");
    assert!(response.text().await.expect("stream").contains("[DONE]"));
    let spans = setup.receiver.trace(long_answer, 5).await;
    let request = named(&spans, "chat m-stream");
    let output = content(request, "gen_ai.output.messages");
    let text = output[0]["parts"][0]["content"].as_str().expect("text");
    assert_eq!(text.len(), CONTENT_LIMIT);
    assert!(text.starts_with("COMPLETION-yyy"));
    assert_eq!(attributes(&request.attributes).get("sluice.content.truncated").map(String::as_str), Some("true"));

    // Keys and upstream credentials, never.
    let raw = setup.receiver.raw.lock().unwrap().concat();
    for secret in [KEY, UPSTREAM_SECRET, "Bearer"] {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret:?} was exported");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_exemplars_carry_the_trace_ids_of_sampled_requests() {
    let setup = start().await;
    let trace = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb1";
    let response = client()
        .post(setup.gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{trace}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "m-stream", "stream": true, "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("send");
    assert!(response.text().await.expect("stream").contains("[DONE]"));
    let spans = setup.receiver.trace(trace, 5).await;
    assert_eq!(hex(&named(&spans, "chat m-stream").trace_id), trace);

    // OpenMetrics, asked for as Prometheus asks: exemplars on the latency histograms.
    let response = client()
        .get(setup.gateway.admin_url("/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        .send()
        .await
        .expect("metrics");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let openmetrics = response.text().await.expect("text");
    let exemplar = format!("# {{trace_id=\"{trace}\"}}");
    for family in [
        "sluice_request_duration_seconds_bucket",
        "sluice_time_to_first_token_seconds_bucket",
        "gen_ai_server_request_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
    ] {
        assert!(
            openmetrics.lines().any(|l| l.starts_with(family) && l.contains(&exemplar)),
            "no exemplar of {trace} on {family}:\n{openmetrics}"
        );
    }
    // Every exemplar is a trace id (32 hex digits) and nothing else.
    for line in openmetrics.lines().filter(|l| !l.starts_with('#') && l.contains(" # {")) {
        let label = line.split(" # {").nth(1).and_then(|e| e.split('}').next()).expect("exemplar labels");
        let id = label.strip_prefix("trace_id=\"").and_then(|l| l.strip_suffix('"')).expect(line);
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    }
    // The Prometheus text format (no Accept, or plain text asked for): the same samples, no exemplars.
    for accept in [None, Some("text/plain;version=0.0.4")] {
        let mut request = client().get(setup.gateway.admin_url("/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("metrics");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        let text = response.text().await.expect("text");
        assert!(text.contains("sluice_request_duration_seconds_bucket"), "{text}");
        assert!(!text.contains("trace_id") && !text.contains("# EOF"), "{text}");
        promtool_parses(&text);
    }
}

/// Runs `promtool check metrics` on `text` when promtool is installed ($SLUICE_PROMTOOL): its
/// parser is the Prometheus text format's (it rejects OpenMetrics exemplars, so the OpenMetrics
/// answer is checked above line by line instead). Lint advice is not an error; a parse is.
fn promtool_parses(text: &str) {
    use std::io::Write;
    let Some(promtool) = std::env::var_os("SLUICE_PROMTOOL").filter(|p| !p.is_empty()) else { return };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains("error while linting") && !said.contains("parsing error"), "promtool: {said}");
}

/// A private CA, the receiver's serving certificate for 127.0.0.1 and a client certificate it
/// signed, and another CA (PEM).
struct Pki {
    ca: String,
    other_ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// The gateway's side of a [`Pki`], as files: the two CAs, the client certificate and its key.
struct PkiFiles {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca = || {
            let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA")
        };
        let leaf = |ca: &CertifiedIssuer<'_, KeyPair>, names: Vec<String>, usage| {
            let mut params = CertificateParams::new(names).expect("params");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("key");
            (params.signed_by(&key, ca).expect("signed").pem(), key.serialize_pem())
        };
        let (private, other) = (ca(), ca());
        let (server_cert, server_key) = leaf(&private, vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) =
            leaf(&private, vec!["sluice-gateway".into()], ExtendedKeyUsagePurpose::ClientAuth);
        Self { ca: private.pem(), other_ca: other.pem(), server_cert, server_key, client_cert, client_key }
    }

    /// Writes the gateway's side into a temporary folder.
    fn files(&self) -> PkiFiles {
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write");
            path
        };
        let (ca, other_ca) = (write("ca.pem", &self.ca), write("other-ca.pem", &self.other_ca));
        let (cert, key) = (write("client.pem", &self.client_cert), write("client-key.pem", &self.client_key));
        PkiFiles { _dir: dir, ca, other_ca, cert, key }
    }

    /// The client certificate, DER-encoded (as a server sees it).
    fn client_der(&self) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(self.client_cert.as_bytes()).expect("a PEM certificate").to_vec()
    }

    /// A line from the middle of the client's private key: must show up in no log.
    fn client_key_line(&self) -> &str {
        self.client_key.lines().nth(1).expect("a key line")
    }
}

/// A chat of `m-stream` continuing trace `trace` from the client's span.
fn traced_chat(gateway: &Gateway, trace: &str) -> impl Future<Output = reqwest::Result<reqwest::Response>> {
    client()
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{trace}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "m-stream", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
}

/// Waits for the gateway's warning that an export failed, then checks it kept serving and the
/// receiver recorded nothing.
async fn export_fails_and_serving_goes_on(setup: &Setup) {
    let warned = eventually(Duration::from_secs(15), || async {
        setup.gateway.log_text().contains("traces could not be exported")
    })
    .await;
    assert!(warned.is_some(), "{}", setup.gateway.log_text());
    assert!(setup.receiver.spans.lock().unwrap().is_empty());
    let again = traced_chat(&setup.gateway, "cccccccccccccccccccccccccccccc99").await.expect("send");
    assert_eq!(again.status(), 200, "still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_go_over_grpc_with_tls_and_a_client_certificate() {
    let pki = Pki::generate();
    let files = pki.files();

    // Trusting the receiver's CA, with a client certificate (the `_TRACES_` variables).
    let (collector, receiver) = Receiver::start_grpc_tls(Some(&pki)).await;
    assert!(collector.starts_with("https://"));
    let setup = start_exporting(collector.clone(), receiver, "grpc", false, |command| {
        command
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &files.ca)
            .env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &files.cert)
            .env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", &files.key);
    })
    .await;
    let trace = "cccccccccccccccccccccccccccccc01";
    assert_eq!(traced_chat(&setup.gateway, trace).await.expect("send").status(), 200);
    let spans = setup.receiver.trace(trace, 5).await;
    assert_eq!(hex(&named(&spans, "chat m-stream").parent_span_id), CLIENT_SPAN);
    let seen = setup.receiver.client_certificates.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|c| *c == pki.client_der()), "the receiver saw the client certificate");
    assert!(!setup.gateway.log_text().contains(pki.client_key_line()));

    // Trusting another CA: the gateway serves on and says why nothing is exported.
    let (collector, receiver) = Receiver::start_grpc_tls(Some(&pki)).await;
    let setup = start_exporting(collector, receiver, "grpc", false, |command| {
        command
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &files.other_ca)
            .env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &files.cert)
            .env("OTEL_EXPORTER_OTLP_CLIENT_KEY", &files.key);
    })
    .await;
    assert_eq!(traced_chat(&setup.gateway, trace).await.expect("send").status(), 200);
    export_fails_and_serving_goes_on(&setup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_go_over_https_with_the_ca_and_client_certificate_flags() {
    let pki = Pki::generate();
    let files = pki.files();
    let flags = |command: &mut std::process::Command, client_certificate: bool| {
        command.arg("--otlp-ca-file").arg(&files.ca);
        if client_certificate {
            command.arg("--otlp-client-certificate").arg(&files.cert).arg("--otlp-client-key").arg(&files.key);
        }
    };

    // OTLP/HTTP to an https:// receiver that requires a client certificate: the CA and the
    // client certificate by flag.
    let (collector, receiver) = Receiver::start_https(&pki).await;
    assert!(collector.starts_with("https://"));
    let setup = start_exporting(collector, receiver, "http/protobuf", false, |c| flags(c, true)).await;
    let trace = "dddddddddddddddddddddddddddddd01";
    assert_eq!(traced_chat(&setup.gateway, trace).await.expect("send").status(), 200);
    let spans = setup.receiver.trace(trace, 5).await;
    let request = named(&spans, "chat m-stream");
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    has_attributes(
        request,
        &[
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.request.model", "m-stream"),
            ("gen_ai.response.model", "up-model"),
            ("gen_ai.usage.input_tokens", "9"),
            ("sluice.key_id", "acme/full"),
        ],
    );
    for stage in ["sluice.auth", "sluice.limits", "sluice.route", "chat up-model"] {
        assert_eq!(named(&spans, stage).parent_span_id, request.span_id, "{stage}");
    }
    let seen = setup.receiver.client_certificates.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|c| *c == pki.client_der()), "the receiver saw the client certificate");
    let resources = setup.receiver.resources.lock().unwrap().clone();
    assert!(resources.iter().all(|r| r.get("service.name").map(String::as_str) == Some("gateway-under-test")));
    let logs = setup.gateway.log_text();
    assert!(logs.contains(r#""private_ca":true"#) && logs.contains(r#""client_certificate":true"#), "{logs}");
    assert!(!logs.contains(pki.client_key_line()));

    // The same CA without a client certificate: the receiver refuses the handshake, the
    // gateway says so and serves on.
    let (collector, receiver) = Receiver::start_https(&pki).await;
    let setup = start_exporting(collector, receiver, "http/protobuf", false, |c| flags(c, false)).await;
    assert_eq!(traced_chat(&setup.gateway, trace).await.expect("send").status(), 200);
    export_fails_and_serving_goes_on(&setup).await;
}

#[test]
fn tls_files_without_https_or_half_a_client_certificate_are_refused_at_start() {
    let pki = Pki::generate();
    let files = pki.files();
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests("http://127.0.0.1:9", "http://127.0.0.1:9"));
    let ca = files.ca.to_str().expect("a UTF-8 path");
    let cert = files.cert.to_str().expect("a UTF-8 path");
    for (flags, says) in [
        (
            vec!["--otlp-endpoint", "http://127.0.0.1:4318", "--otlp-ca-file", ca],
            "--otlp-endpoint http://127.0.0.1:4318: a CA or client certificate is given, so use https://",
        ),
        (
            vec!["--otlp-endpoint", "https://127.0.0.1:4318", "--otlp-client-certificate", cert],
            "--otlp-client-certificate and --otlp-client-key go together",
        ),
        (
            vec!["--otlp-endpoint", "https://127.0.0.1:4318", "--otlp-ca-file", "/nonexistent/ca.pem"],
            "--otlp-ca-file /nonexistent/ca.pem:",
        ),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-gateway"));
        command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"]).arg(dir.path());
        command.args(&flags).env_remove("SLUICE_CONFIG").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("runs");
        let started = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{flags:?}: the gateway started");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("its output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
