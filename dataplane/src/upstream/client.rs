//! Calling one upstream: pooled connections with `TCP_NODELAY` for real providers (plain `http`
//! ones through [`PlainPool`], `https` ones through hyper-util's client), and the
//! simulator in-process for `simulated` ones, behind one interface; each provider type's URLs
//! and authentication headers. Built when a configuration is loaded, kept in the snapshot's
//! backends. A Provider's TLS settings (private CA, system roots, client certificate, server
//! name) give it a rustls configuration and a connection pool of its own; a failed handshake is
//! told apart from other connection failures so the client hears why.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{
    CaptureConnection, Connected, Connection, HttpConnector, capture_connection,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sluice_crds::api::ProviderType;
use sluice_crds::config::{ProviderConfig, SimulationConfig, UpstreamTls};
use tower::ServiceExt;

use super::plain::PlainPool;
use crate::route::Api;

/// Boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body from any upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

type HttpClient = Client<RecordingConnector, Full<Bytes>>;

/// Why an upstream call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made (refused, DNS, connect timeout).
    #[error("connect: {0}")]
    Connect(String),
    /// The request failed after connecting (reset, protocol error).
    #[error("request: {0}")]
    Request(String),
    /// The TLS handshake failed: the upstream's certificate was not trusted, or the upstream
    /// refused the gateway's (or its absence). Whether while connecting or at the first read
    /// (TLS 1.3 servers refuse a client certificate after the client thinks it is done).
    #[error("tls: {detail}")]
    Tls {
        /// Why, for the client: names no host, quotes no certificate.
        reason: &'static str,
        /// The whole error chain, for the log.
        detail: String,
    },
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
/// what the gateway sets itself. A `match`, which the compiler splits by length first: every
/// header of every request is checked here.
fn dropped_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "proxy-authorization"
            | "cookie"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "x-slo-ttft-ms"
            | "x-slo-tpot-ms"
            | "x-llm-d-slo-ttft-ms"
            | "x-llm-d-slo-tpot-ms"
    )
}

// One per upstream, built at load time: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Transport {
    /// An `https` upstream: hyper-util's client (TLS, HTTP/2 by ALPN), whole URLs.
    Http {
        client: HttpClient,
        base: String,
        uris: [Uri; Api::ALL.len()],
        messages: Uri,
    },
    /// A plain-`http` upstream: its own pool, and URIs in origin form (`/v1/chat/completions`).
    Plain {
        pool: Arc<PlainPool>,
        base_path: String,
        uris: [Uri; Api::ALL.len()],
        messages: Uri,
    },
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
    clients: Mutex<HashMap<PoolKey, HttpClient>>,
    /// Plain-`http` upstreams' connections, by settings and address.
    plain: Mutex<HashMap<PlainKey, Arc<PlainPool>>>,
    simulators: Mutex<HashMap<String, (SimulationConfig, axum::Router)>>,
}

/// What sets connection pools apart: upstreams with equal settings share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    connect_timeout_ms: u32,
    tls: Option<UpstreamTls>,
}

impl PoolKey {
    fn of(provider: &ProviderConfig) -> Self {
        Self { connect_timeout_ms: provider.connect_timeout_ms, tls: provider.tls.clone() }
    }
}

/// What sets plain-`http` pools apart: the settings, and the address the base URL names.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PlainKey(PoolKey, String);

impl PlainKey {
    fn of(provider: &ProviderConfig, base: &Uri) -> Self {
        Self(PoolKey::of(provider), base.authority().map(|a| a.as_str().to_owned()).unwrap_or_default())
    }
}

impl UpstreamPool {
    fn client(&self, key: PoolKey) -> Result<HttpClient, String> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut http = connector(&key);
        http.enforce_http(false);
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(key.tls.as_ref())?).https_or_http();
        let builder = match key.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
            None => builder,
            Some(name) => {
                let name = ServerName::try_from(name).map_err(|e| format!("tls.serverName: {e}"))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
        };
        let https = RecordingConnector(builder.enable_all_versions().wrap_connector(http));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The pool of the plain-`http` upstream at `base` of `provider`.
    fn plain(&self, provider: &ProviderConfig, base: &Uri) -> Result<Arc<PlainPool>, String> {
        let key = PlainKey::of(provider, base);
        let mut pools = self.plain.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&key) {
            return Ok(pool.clone());
        }
        let pool = PlainPool::new(base, connector(&key.0))?;
        pools.insert(key, pool.clone());
        Ok(pool)
    }

    /// Closes the connection pools no provider of `live` uses any more (a rotated client
    /// certificate, a removed Provider).
    pub fn retain_clients<'a>(&self, live: impl IntoIterator<Item = &'a ProviderConfig>) {
        let providers: Vec<&ProviderConfig> = live.into_iter().collect();
        let live: HashSet<PoolKey> = providers.iter().map(|provider| PoolKey::of(provider)).collect();
        self.clients.lock().unwrap_or_else(PoisonError::into_inner).retain(|key, _| live.contains(key));
        let addresses: HashSet<PlainKey> = providers
            .iter()
            .filter_map(|provider| {
                let base = provider.base_url.as_deref()?.parse::<Uri>().ok()?;
                Some(PlainKey::of(provider, &base))
            })
            .collect();
        self.plain.lock().unwrap_or_else(PoisonError::into_inner).retain(|key, _| addresses.contains(key));
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
                let parsed = base.parse::<Uri>().map_err(|e| format!("baseUrl {base:?}: {e}"))?;
                let plain = parsed.scheme_str() == Some("http");
                // Plain connections take the path alone (origin form); hyper-util's client
                // takes the whole URL.
                let base_path = if plain { parsed.path().trim_end_matches('/') } else { base };
                let uri = |suffix: &str| -> Result<Uri, String> {
                    format!("{base_path}{suffix}").parse::<Uri>().map_err(|e| format!("baseUrl {base:?}: {e}"))
                };
                let uris = [
                    uri(Api::ChatCompletions.suffix())?,
                    uri(Api::Completions.suffix())?,
                    uri(Api::Embeddings.suffix())?,
                    uri(Api::Rerank.suffix())?,
                    uri(Api::Images.suffix())?,
                ];
                let messages = uri("/messages")?;
                if plain {
                    let pool = self.plain(provider, &parsed)?;
                    Transport::Plain { pool, base_path: base_path.to_owned(), uris, messages }
                } else {
                    Transport::Http {
                        client: self.client(PoolKey::of(provider))?,
                        base: base.to_owned(),
                        uris,
                        messages,
                    }
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
            if dropped_header(name_str)
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
            Transport::Plain { pool, base_path, uris, messages } => {
                let uri = target_uri(target, base_path, uris, messages)?;
                let request =
                    builder.uri(uri).body(Full::new(body)).map_err(|e| UpstreamError::Request(e.to_string()))?;
                let response = pool.send(request).await?;
                Ok(response.map(http_body_util::BodyExt::boxed_unsync))
            }
            Transport::Http { client, base, uris, messages } => {
                let uri = target_uri(target, base, uris, messages)?;
                let mut request =
                    builder.uri(uri).body(Full::new(body)).map_err(|e| UpstreamError::Request(e.to_string()))?;
                // Which connection a request went out on, to read its TLS failure should hyper
                // report only that it closed.
                let captured = capture_connection(&mut request);
                let response = client.request(request).await.map_err(|e| upstream_error(&e, &captured))?;
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

/// Where `target` is, given an upstream's base (its whole URL, or its path for a plain one) and
/// the URIs made of it in advance.
fn target_uri(
    target: Target<'_>,
    base: &str,
    uris: &[Uri; Api::ALL.len()],
    messages: &Uri,
) -> Result<Uri, UpstreamError> {
    Ok(match target {
        Target::Api(api) => uris[api.index()].clone(),
        Target::Messages => messages.clone(),
        Target::Gemini { model, stream } => {
            let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            format!("{base}/models/{model}:{method}")
                .parse::<Uri>()
                .map_err(|e| UpstreamError::Request(format!("model {model:?}: {e}")))?
        }
    })
}

/// The TCP side of an upstream's connections: no Nagle delay, its connect timeout, keepalive
/// probes.
fn connector(key: &PoolKey) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(u64::from(key.connect_timeout_ms))));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

/// The rustls configuration of an upstream: the public (webpki) roots, plus the operating
/// system's and the Provider's CA bundle when it asks, and its client certificate.
fn tls_config(tls: Option<&UpstreamTls>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(tls) = tls {
        if tls.system_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(error = %error, "reading the system trust store (tls.systemRoots)");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!("tls.systemRoots: the system trust store has no certificate");
            }
        }
        for certificate in tls.ca_bundle.iter().flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes())) {
            let certificate = certificate.map_err(|e| format!("tls.caBundle: {e}"))?;
            roots.add(certificate).map_err(|e| format!("tls.caBundle: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certified = match tls.and_then(|tls| tls.client_certificate.as_ref()) {
        None => None,
        Some(client) => {
            let chain = CertificateDer::pem_slice_iter(client.certificate_chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.clientCertificate: {e}"))?;
            // Nothing of the key's parse error is shown: it could quote the key.
            let key = PrivateKeyDer::from_pem_slice(client.private_key.expose().as_bytes())
                .map_err(|_| "tls.clientCertificate: the private key is not PEM".to_owned())?;
            // Checks that the key is the certificate's.
            let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
                .map_err(|e| format!("tls.clientCertificate: {e}"))?;
            Some(Arc::new(certified))
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientCertificateResolver(certified)));
    Ok(config)
}

/// Sorts a failed call: a TLS failure (in the error, or recorded by the connection it went out
/// on), a connection failure, or a failure after connecting.
fn upstream_error(error: &hyper_util::client::legacy::Error, captured: &CaptureConnection) -> UpstreamError {
    let detail = error_chain(error);
    if let Some(tls) = tls_error(error) {
        return UpstreamError::Tls { reason: tls_reason(tls), detail };
    }
    if let Some((reason, cause)) = recorded_tls_failure(captured) {
        return UpstreamError::Tls { reason, detail: format!("{detail}: {cause}") };
    }
    if error.is_connect() { UpstreamError::Connect(detail) } else { UpstreamError::Request(detail) }
}

/// What the connection a request went out on recorded of its TLS failure, if anything.
fn recorded_tls_failure(captured: &CaptureConnection) -> Option<(&'static str, String)> {
    let mut extras = hyper::http::Extensions::new();
    captured.connection_metadata().as_ref()?.get_extras(&mut extras);
    extras.get::<TlsFailure>()?.get()
}

/// The TLS failure a connection ended with, for the requests on it. A TLS 1.3 server refuses a
/// client certificate (or its absence) only after the client has finished its handshake: the
/// connection fails on its first read (with the server's alert) and hyper tells the request no
/// more than that the connection closed. Often not even the alert arrives: the server closes at
/// once, and the client's request meets a reset or a broken pipe. So the connection also notes
/// whether the upstream asked for a client certificate (and whether the gateway had one to
/// send), and whether it ever read anything: asked, then closed before any read, is a refused
/// handshake too.
#[derive(Clone, Default)]
struct TlsFailure(Arc<ConnectionTls>);

#[derive(Default)]
struct ConnectionTls {
    /// The first rustls error seen: why for the client, the error for the log.
    error: Mutex<Option<(&'static str, String)>>,
    /// What the upstream asked for in the handshake.
    asked: CertificateAsked,
    /// A read completed (data or end of stream): the handshake was accepted.
    read_any: std::sync::atomic::AtomicBool,
}

/// Whether an upstream asked for a client certificate during a handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum CertificateAsked {
    #[default]
    No,
    /// Asked, and the gateway has none.
    Missing,
    /// Asked, and the gateway sent its own.
    Sent,
}

impl CertificateAsked {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Missing,
            2 => Self::Sent,
            _ => Self::No,
        }
    }
}

impl TlsFailure {
    fn new(asked: CertificateAsked) -> Self {
        Self(Arc::new(ConnectionTls { asked, ..ConnectionTls::default() }))
    }

    /// Why the connection failed, if it was TLS: `(reason, detail)`.
    fn get(&self) -> Option<(&'static str, String)> {
        use rustls::AlertDescription as Alert;
        let recorded = self.0.error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if recorded.is_some() || self.0.read_any.load(Ordering::Relaxed) {
            return recorded;
        }
        let (alert, detail) = match self.0.asked {
            CertificateAsked::No => return None,
            CertificateAsked::Missing => (
                Alert::CertificateRequired,
                "the upstream asked for a client certificate, none is configured (tls.clientCertificate), and \
                 it closed the connection before answering",
            ),
            CertificateAsked::Sent => (
                Alert::BadCertificate,
                "the gateway sent its client certificate (tls.clientCertificate) and the upstream closed the \
                 connection before answering",
            ),
        };
        Some((tls_reason(&rustls::Error::AlertReceived(alert)), detail.to_owned()))
    }

    /// Keeps the first TLS error among the connection's I/O results.
    fn record<T>(&self, result: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Err(error)) = result
            && let Some(tls) = tls_error(error)
        {
            let mut slot = self.0.error.lock().unwrap_or_else(PoisonError::into_inner);
            slot.get_or_insert_with(|| (tls_reason(tls), tls.to_string()));
        }
    }

    fn record_read(&self, result: &Poll<std::io::Result<()>>) {
        match result {
            Poll::Ready(Ok(())) => {
                if !self.0.read_any.load(Ordering::Relaxed) {
                    self.0.read_any.store(true, Ordering::Relaxed);
                }
            }
            other => self.record(other),
        }
    }
}

tokio::task_local! {
    /// Set while a connection's handshake runs: a [`CertificateAsked`], noted by
    /// [`ClientCertificateResolver`].
    static CERTIFICATE_ASKED: Arc<std::sync::atomic::AtomicU8>;
}

/// An upstream's client certificate, if it has one (as rustls's own resolvers), noting on the
/// connection being set up that the upstream asked for one.
#[derive(Debug)]
struct ClientCertificateResolver(Option<Arc<rustls::sign::CertifiedKey>>);

impl rustls::client::ResolvesClientCert for ClientCertificateResolver {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let asked = if self.0.is_some() { CertificateAsked::Sent } else { CertificateAsked::Missing };
        // Outside a connector's handshake (nowhere, today) there is nothing to note.
        let _ = CERTIFICATE_ASKED.try_with(|noted| noted.store(asked as u8, Ordering::Relaxed));
        self.0.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// The HTTPS connector, with connections that record their TLS failure ([`TlsFailure`]) and
/// hand it to the requests on them as connection metadata.
#[derive(Clone)]
struct RecordingConnector(HttpsConnector<HttpConnector>);

type UpstreamStream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

impl tower::Service<Uri> for RecordingConnector {
    type Response = Recording<UpstreamStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let asked = Arc::new(std::sync::atomic::AtomicU8::new(CertificateAsked::No as u8));
        let connecting = CERTIFICATE_ASKED.scope(asked.clone(), self.0.call(uri));
        Box::pin(async move {
            let inner = connecting.await?;
            let asked = CertificateAsked::from_u8(asked.load(Ordering::Relaxed));
            Ok(Recording { inner, failure: TlsFailure::new(asked) })
        })
    }
}

/// A connection that records the TLS error it fails with.
struct Recording<T> {
    inner: T,
    failure: TlsFailure,
}

impl<T: Connection> Connection for Recording<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.failure.clone())
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Recording<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.failure.record_read(&result);
        result
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Recording<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.failure.record(&result);
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.failure.record(&result);
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.failure.record(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.failure.record(&result);
        result
    }
}

/// The rustls error in a chain. tokio-rustls reports it inside an `io::Error` (inside another,
/// from hyper-rustls), and `io::Error::source` skips the error it wraps: look inside each.
fn tls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let wrapped = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
    if let Some(found) = wrapped.and_then(|inner| tls_error(inner)) {
        return Some(found);
    }
    error.source().and_then(tls_error)
}

/// What a client is told about a failed handshake.
fn tls_reason(error: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match error {
        Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "its certificate could not be verified (not signed by a trusted certificate authority)"
        }
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "its certificate could not be verified (not valid for the upstream's name)"
        }
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "its certificate could not be verified (expired)"
        }
        Error::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "its certificate could not be verified (not valid yet)"
        }
        Error::InvalidCertificate(_) => "its certificate could not be verified",
        Error::AlertReceived(Alert::CertificateRequired) => {
            "the TLS handshake failed: the upstream requires a client certificate"
        }
        Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::AccessDenied,
        ) => "the TLS handshake failed: the upstream refused the gateway's client certificate",
        _ => "the TLS handshake failed",
    }
}

fn box_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> BoxError {
    Box::new(error)
}

/// An error and its causes on one line (hyper's top-level messages say little).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hop_by_hop_headers_and_slo_hints_stay_behind() {
        let dropped = [
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
        for name in dropped {
            assert!(dropped_header(name), "{name} must not go upstream");
        }
        let kept =
            ["content-type", "accept", "user-agent", "traceparent", "x-request-id", "openai-organization", "t", "tee"];
        for name in kept {
            assert!(!dropped_header(name), "{name} goes upstream");
        }
    }

    #[test]
    fn a_tls_error_is_found_inside_nested_io_errors() {
        // As hyper-rustls reports a failed handshake: tokio-rustls's io::Error in another one.
        let rustls_error = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let outer = std::io::Error::other(inner);
        let found = tls_error(&outer).expect("found");
        assert_eq!(
            tls_reason(found),
            "its certificate could not be verified (not signed by a trusted certificate authority)"
        );
        assert!(tls_error(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).is_none());
    }

    #[test]
    fn refused_client_certificates_are_told_apart() {
        let alert = |a| rustls::Error::AlertReceived(a);
        assert_eq!(
            tls_reason(&alert(rustls::AlertDescription::CertificateRequired)),
            "the TLS handshake failed: the upstream requires a client certificate"
        );
        assert_eq!(
            tls_reason(&alert(rustls::AlertDescription::UnknownCA)),
            "the TLS handshake failed: the upstream refused the gateway's client certificate"
        );
        assert_eq!(tls_reason(&alert(rustls::AlertDescription::ProtocolVersion)), "the TLS handshake failed");
    }

    #[test]
    fn a_connection_closed_after_a_certificate_request_is_a_refused_handshake() {
        let closed = || Poll::<std::io::Result<()>>::Ready(Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)));
        let missing = TlsFailure::new(CertificateAsked::Missing);
        missing.record(&closed());
        let (reason, detail) = missing.get().expect("a TLS failure");
        assert_eq!(reason, "the TLS handshake failed: the upstream requires a client certificate");
        assert!(detail.contains("none is configured"), "{detail}");
        let sent = TlsFailure::new(CertificateAsked::Sent);
        assert_eq!(
            sent.get().map(|(reason, _)| reason),
            Some("the TLS handshake failed: the upstream refused the gateway's client certificate")
        );
        // Once anything was read, the handshake was accepted: a later close is no TLS failure.
        let answered = TlsFailure::new(CertificateAsked::Missing);
        answered.record_read(&Poll::Ready(Ok(())));
        answered.record(&closed());
        assert!(answered.get().is_none());
        assert!(TlsFailure::new(CertificateAsked::No).get().is_none());
        // The server's alert, when it arrives, says it best.
        let alerted = TlsFailure::new(CertificateAsked::Sent);
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired);
        alerted.record_read(&Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, alert))));
        assert_eq!(alerted.get().map(|(_, detail)| detail), Some("received fatal alert: CertificateExpired".into()));
    }

    #[test]
    fn plain_upstreams_share_a_pool_per_address_until_no_provider_names_it() {
        let provider = |base: &str| -> ProviderConfig {
            serde_json::from_value(serde_json::json!({
                "type": "openai", "baseUrl": base, "connectTimeoutMs": 100, "models": {}
            }))
            .expect("provider")
        };
        let (a, a_again, b, https) = (
            provider("http://vllm-a.models:8000/v1"),
            provider("http://vllm-a.models:8000/other/v1"),
            provider("http://vllm-b.models:8000/v1"),
            provider("https://llm.internal/v1"),
        );
        let pool = UpstreamPool::default();
        for provider in [&a, &a_again, &b, &https] {
            pool.upstream("ns/p", provider).expect("upstream");
        }
        assert_eq!(pool.plain.lock().expect("lock").len(), 2, "one pool per address, whatever the path");
        assert_eq!(pool.clients.lock().expect("lock").len(), 1, "https through hyper-util's client");
        pool.retain_clients([&a_again, &https]);
        let plain = pool.plain.lock().expect("lock");
        assert_eq!(plain.len(), 1);
        assert!(plain.keys().all(|key| key.1 == "vllm-a.models:8000"), "the pool still named is kept");
    }

    #[test]
    fn providers_with_other_tls_settings_get_other_pools() {
        let provider = |tls: Option<UpstreamTls>| -> ProviderConfig {
            let mut provider: ProviderConfig = serde_json::from_value(serde_json::json!({
                "type": "openai", "baseUrl": "https://llm.internal/v1", "connectTimeoutMs": 100, "models": {}
            }))
            .expect("provider");
            provider.tls = tls;
            provider
        };
        let roots = UpstreamTls { ca_bundle: None, system_roots: false, client_certificate: None, server_name: None };
        let named = UpstreamTls { server_name: Some("llm.internal".into()), ..roots.clone() };
        let pool = UpstreamPool::default();
        for tls in [None, Some(roots.clone()), Some(named.clone()), Some(named)] {
            pool.upstream("ns/p", &provider(tls)).expect("upstream");
        }
        assert_eq!(pool.clients.lock().expect("lock").len(), 3);
        pool.retain_clients([&provider(Some(roots))]);
        assert_eq!(pool.clients.lock().expect("lock").len(), 1);
    }
}
