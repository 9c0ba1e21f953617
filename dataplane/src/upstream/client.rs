//! Calling one upstream: pooled HTTP(S) clients with `TCP_NODELAY` for real providers, and the
//! simulator in-process for `simulated` ones, behind one interface; each provider type's URLs
//! and authentication headers. Built when a configuration is loaded, kept in the snapshot's
//! backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_crds::api::ProviderType;
use sluice_crds::config::{ProviderConfig, SimulationConfig};
use tower::ServiceExt;

use crate::route::Api;

/// Boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body from any upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made (refused, DNS, TLS, connect timeout).
    #[error("connect: {0}")]
    Connect(String),
    /// The request failed after connecting (reset, protocol error).
    #[error("request: {0}")]
    Request(String),
}

/// Where a request goes at its upstream: an OpenAI-compatible API, Anthropic's Messages API,
/// or a Gemini model's `generateContent` (streamed or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `<baseUrl>/chat/completions` and the other OpenAI paths.
    Api(Api),
    /// `<baseUrl>/messages`.
    Messages,
    /// `<baseUrl>/models/<model>:generateContent`, or `:streamGenerateContent?alt=sse`.
    Gemini {
        /// The upstream model.
        model: &'a str,
        /// Whether streamed.
        stream: bool,
    },
}

/// How the body of a request relates to the client's: its own bytes (forwarded, at most the
/// model rewritten) or the gateway's translation of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// The client's body: its headers go along (Anthropic's version and beta flags included).
    Forwarded,
    /// A translation: the answer must come back uncompressed to be translated back, and an
    /// Anthropic upstream gets the version the translation is written for.
    Translated,
}

/// Request headers that never go upstream: the client's credentials, hop-by-hop headers, and
/// what the gateway sets itself.
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "x-slo-ttft-ms",
    "x-slo-tpot-ms",
    "x-llm-d-slo-ttft-ms",
    "x-llm-d-slo-tpot-ms",
];

// One per upstream, built at load time: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Http { client: HttpClient, base: String, uris: [Uri; 4], messages: Uri },
    Simulated(axum::Router),
}

/// One upstream, ready to call.
pub struct Upstream {
    /// `<namespace>/<name>` of its Provider.
    pub id: Arc<str>,
    /// Wire format.
    pub kind: ProviderType,
    transport: Transport,
    auth: Option<(HeaderName, HeaderValue)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `maxOutputTokens` of its models, by upstream name (Anthropic requires `max_tokens`).
    max_output_tokens: HashMap<String, u32>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("id", &self.id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// Long-lived pieces that upstreams share across reloads: connection pools (so a reload keeps
/// connections warm) and simulators (so their caches and load survive).
#[derive(Default)]
pub struct UpstreamPool {
    clients: Mutex<HashMap<u32, HttpClient>>,
    simulators: Mutex<HashMap<String, (SimulationConfig, axum::Router)>>,
}

impl UpstreamPool {
    fn client(&self, connect_timeout_ms: u32) -> Result<HttpClient, String> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&connect_timeout_ms) {
            return Ok(client.clone());
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(u64::from(connect_timeout_ms))));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| format!("TLS setup: {e}"))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        clients.insert(connect_timeout_ms, client.clone());
        Ok(client)
    }

    fn simulator(&self, id: &str, config: &SimulationConfig) -> Result<axum::Router, String> {
        let mut sims = self.simulators.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((existing, router)) = sims.get(id)
            && existing == config
        {
            return Ok(router.clone());
        }
        let mut profile = sluice_sim::Profile::default();
        if let Some(v) = config.prefill_overhead_ms {
            profile.prefill_overhead_ms = v;
        }
        if let Some(v) = config.prefill_per_token_ms {
            profile.prefill_per_token_ms = v;
        }
        if let Some(v) = config.inter_token_ms {
            profile.inter_token_ms = v;
        }
        if let Some(v) = config.max_num_seqs {
            profile.max_num_seqs = v;
        }
        if let Some(v) = config.output_tokens {
            profile.output_tokens = v;
        }
        if let Some(v) = config.embedding_dimension {
            profile.embedding_dimensions = v;
        }
        if let Some(v) = config.seed {
            profile.seed = v;
        }
        let sim = sluice_sim::Simulator::new(profile).map_err(|e| format!("simulator: {e}"))?;
        let router = sim.router();
        sims.insert(id.to_owned(), (config.clone(), router.clone()));
        Ok(router)
    }

    /// Forgets pieces no live upstream uses any more.
    pub fn retain_simulators(&self, live: &[&str]) {
        self.simulators.lock().unwrap_or_else(PoisonError::into_inner).retain(|id, _| live.contains(&id.as_str()));
    }

    /// Builds the upstream for a provider of the configuration.
    pub fn upstream(&self, id: &str, provider: &ProviderConfig) -> Result<Upstream, String> {
        let transport = match provider.provider_type {
            ProviderType::Simulated => {
                Transport::Simulated(self.simulator(id, &provider.simulation.clone().unwrap_or_default())?)
            }
            ProviderType::Openai | ProviderType::Anthropic | ProviderType::Gemini => {
                let base = provider.base_url.as_deref().ok_or("baseUrl missing")?;
                let uri = |suffix: &str| -> Result<Uri, String> {
                    format!("{base}{suffix}").parse::<Uri>().map_err(|e| format!("baseUrl {base:?}: {e}"))
                };
                Transport::Http {
                    client: self.client(provider.connect_timeout_ms)?,
                    base: base.to_owned(),
                    uris: [
                        uri(Api::ChatCompletions.suffix())?,
                        uri(Api::Completions.suffix())?,
                        uri(Api::Embeddings.suffix())?,
                        uri(Api::Rerank.suffix())?,
                    ],
                    messages: uri("/messages")?,
                }
            }
        };
        let auth = match &provider.credential {
            None => None,
            Some(credential) => {
                let (name, value) = match provider.provider_type {
                    ProviderType::Anthropic => (HeaderName::from_static("x-api-key"), credential.expose().to_owned()),
                    ProviderType::Gemini => (HeaderName::from_static("x-goog-api-key"), credential.expose().to_owned()),
                    _ => (header::AUTHORIZATION, format!("Bearer {}", credential.expose())),
                };
                let mut value = HeaderValue::try_from(value).map_err(|_| "credential is not a valid header value")?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &provider.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name:?}: {e}"))?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|e| format!("header {name}: {e}"))?;
            headers.push((name, value));
        }
        let max_output_tokens =
            provider.models.iter().filter_map(|(name, model)| Some((name.clone(), model.max_output_tokens?))).collect();
        Ok(Upstream { id: id.into(), kind: provider.provider_type, transport, auth, headers, max_output_tokens })
    }
}

static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

impl Upstream {
    /// The `maxOutputTokens` its Provider gives `model`.
    pub fn max_output_tokens(&self, model: &str) -> Option<u32> {
        self.max_output_tokens.get(model).copied()
    }

    /// Sends `body` to `target`, with the client's headers minus credentials and hop-by-hop
    /// ones, plus this upstream's credential and static headers (and, for Anthropic, an
    /// `anthropic-version`). Resolves when response headers arrive.
    pub async fn send(
        &self,
        target: Target<'_>,
        client_headers: &HeaderMap,
        body: Bytes,
        origin: Body,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut builder = Request::builder().method(Method::POST);
        let headers = builder.headers_mut().ok_or_else(|| UpstreamError::Request("request builder".into()))?;
        let translated = origin == Body::Translated;
        for (name, value) in client_headers {
            let name_str = name.as_str();
            if DROPPED_HEADERS.contains(&name_str)
                || (translated && matches!(name_str, "accept-encoding" | "anthropic-version" | "anthropic-beta"))
            {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        if self.kind == ProviderType::Anthropic && !headers.contains_key(&ANTHROPIC_VERSION) {
            headers.insert(
                ANTHROPIC_VERSION.clone(),
                HeaderValue::from_static(crate::protocol::anthropic::outbound::API_VERSION),
            );
        }
        if translated {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        match &self.transport {
            Transport::Http { client, base, uris, messages } => {
                let uri = match target {
                    Target::Api(api) => uris[api.index()].clone(),
                    Target::Messages => messages.clone(),
                    Target::Gemini { model, stream } => {
                        let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
                        format!("{base}/models/{model}:{method}")
                            .parse::<Uri>()
                            .map_err(|e| UpstreamError::Request(format!("model {model:?}: {e}")))?
                    }
                };
                let request =
                    builder.uri(uri).body(Full::new(body)).map_err(|e| UpstreamError::Request(e.to_string()))?;
                let response = client.request(request).await.map_err(|e| {
                    if e.is_connect() {
                        UpstreamError::Connect(error_chain(&e))
                    } else {
                        UpstreamError::Request(error_chain(&e))
                    }
                })?;
                Ok(response.map(|b| b.map_err(box_error).boxed_unsync()))
            }
            Transport::Simulated(router) => {
                let path = match target {
                    Target::Api(api) => format!("/v1{}", api.suffix()),
                    Target::Messages => "/v1/messages".to_owned(),
                    Target::Gemini { model, stream: false } => format!("/v1beta/models/{model}:generateContent"),
                    Target::Gemini { model, stream: true } => {
                        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
                    }
                };
                let request = builder
                    .uri(path)
                    .body(axum::body::Body::from(body))
                    .map_err(|e| UpstreamError::Request(e.to_string()))?;
                let response =
                    router.clone().oneshot(request).await.map_err(|e| UpstreamError::Request(e.to_string()))?;
                Ok(response.map(|b| b.map_err(box_error).boxed_unsync()))
            }
        }
    }
}

fn box_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> BoxError {
    Box::new(error)
}

/// An error and its causes on one line (hyper's top-level messages say little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Upstream handle shared by the backends that use it.
pub type SharedUpstream = Arc<Upstream>;
