//! `Provider`: an upstream LLM API and the models it offers.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Condition, SecretKeySelector, status::conditions_schema};

/// An upstream LLM API: its wire format, address, credentials and the models it offers with their
/// limits, prices and capabilities. Platform-wide Providers live in the operator's namespace
/// (`sluice-system`); a tenant may also declare its own in its namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Provider",
    plural = "providers",
    namespaced,
    shortname = "slprov",
    category = "sluice",
    status = "ProviderStatus",
    derive = "PartialEq",
    doc = "An upstream LLM API (OpenAI-compatible, Anthropic, Gemini or simulated) and the models it offers.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.baseUrl"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.type == 'simulated' || has(self.baseUrl) || has(self.service) || has(self.addresses)").message("one of spec.baseUrl, spec.service or spec.addresses is required unless type is simulated"))]
#[x_kube(validation = Rule::new("(has(self.baseUrl) ? 1 : 0) + (has(self.service) ? 1 : 0) + (has(self.addresses) ? 1 : 0) <= 1").message("set at most one of spec.baseUrl, spec.service and spec.addresses"))]
#[x_kube(validation = Rule::new("!has(self.metrics) || has(self.service) || has(self.addresses)").message("spec.metrics is only for a pool (spec.service or spec.addresses)"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderSpec {
    /// Wire format of the upstream. `openai` covers every OpenAI-compatible API (OpenAI, DeepSeek,
    /// Qwen/DashScope, GLM/Zhipu, Kimi/Moonshot, MiniMax, vLLM, SGLang, Ollama...). `simulated`
    /// runs Sluice's built-in simulator inside the gateway (no network).
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL of the API, up to and including its version segment, e.g.
    /// `https://api.deepseek.com/v1`; requests go to `<baseUrl>/chat/completions` and so on.
    /// Required unless `type` is `simulated` or the Provider is a pool (`service`, `addresses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"), length(max = 2048))]
    pub base_url: Option<String>,
    /// A self-hosted pool behind a Kubernetes Service in the Provider's namespace (vLLM, SGLang):
    /// requests are routed to its ready pods one by one (their addresses come from the
    /// Service's EndpointSlices), so prefix affinity reaches each pod's KV cache. Needs the
    /// operator; in standalone mode list the pods in `addresses`. At most one of `baseUrl`,
    /// `service` and `addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ProviderService>,
    /// A self-hosted pool as a fixed list of pod base URLs (each up to its version segment, e.g.
    /// `http://10.0.3.7:8000/v1`): requests are routed to each pod as its own backend. For
    /// standalone mode or fixed addresses. At most one of `baseUrl`, `service` and `addresses`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = 256),
        inner(regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"), length(max = 2048))
    )]
    pub addresses: Vec<String>,
    /// Scrape each pod's vLLM metrics (`vllm:num_requests_waiting`, `vllm:num_requests_running`,
    /// `vllm:kv_cache_usage_perc`) as routing signals; only for a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<PodMetrics>,
    /// Where the upstream API key is. The gateway sends it in the header the wire format uses
    /// (`Authorization: Bearer` for `openai`, `x-api-key` for `anthropic`, `x-goog-api-key` for
    /// `gemini`); clients' own credentials never reach the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<ProviderCredentials>,
    /// Extra headers sent with every upstream request (for example `OpenAI-Organization`).
    /// Not for secrets: put those in `credentials`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// TLS to the upstream beyond the public certificate authorities: a private CA bundle, the
    /// operating system's trust store, a client certificate for mutual TLS, and the name the
    /// upstream's certificate is checked against. Only used for `https` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProviderTls>,
    /// Longest wait to open a connection to the upstream, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 10, max = 60_000))]
    pub connect_timeout_ms: u32,
    /// Models this upstream serves, by their upstream names.
    #[schemars(length(min = 1, max = 1024))]
    pub models: Vec<ProviderModel>,
    /// Behaviour of the built-in simulator; only for `type: simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<SimulationSpec>,
}

fn default_connect_timeout_ms() -> u32 {
    5_000
}

impl ProviderSpec {
    /// The Secrets (in the Provider's namespace) the compiler reads for it: the credentials, the
    /// CA bundle and the client certificate.
    pub fn secret_names(&self) -> Vec<&str> {
        let tls = self.tls.as_ref();
        let mut names: Vec<&str> = self.credentials.iter().map(|c| c.secret_key_ref.name.as_str()).collect();
        names.extend(tls.and_then(|t| t.ca_bundle.as_ref()?.secret_key_ref.as_ref()).map(|s| s.name.as_str()));
        names.extend(tls.and_then(|t| t.client_certificate.as_ref()).map(|c| c.secret_name.as_str()));
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The ConfigMaps (in the Provider's namespace) the compiler reads for it: the CA bundle.
    pub fn config_map_names(&self) -> Vec<&str> {
        let bundle = self.tls.as_ref().and_then(|t| t.ca_bundle.as_ref());
        bundle.and_then(|b| b.config_map_key_ref.as_ref()).map(|s| s.name.as_str()).into_iter().collect()
    }
}

/// The Kubernetes Service in front of a self-hosted pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderService {
    /// Name of the Service, in the Provider's namespace.
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 63))]
    pub name: String,
    /// The port the pods serve the API on (the EndpointSlice port with this number, or the
    /// target of the Service port with this number).
    #[schemars(range(min = 1, max = 65_535))]
    pub port: u16,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: PodScheme,
    /// Path of the API on each pod, up to its version segment.
    #[serde(default = "default_pod_path")]
    #[schemars(regex(pattern = r"^(/[^\s?#]*)?$"), length(max = 256))]
    pub path: String,
}

fn default_pod_path() -> String {
    "/v1".to_owned()
}

/// How a pool's pods are called.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodScheme {
    /// Plain HTTP (inside the cluster).
    #[default]
    Http,
    /// HTTPS.
    Https,
}

impl PodScheme {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Scraping a pool's pods for their vLLM metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodMetrics {
    /// Path of the Prometheus text on each pod (on the pod's host and port, not under the API
    /// path).
    #[serde(default = "default_metrics_path")]
    #[schemars(regex(pattern = r"^/[^\s?#]*$"), length(max = 256))]
    pub path: String,
    /// Time between two scrapes of a pod, in milliseconds.
    #[serde(default = "default_metrics_interval_ms")]
    #[schemars(range(min = 100, max = 60_000))]
    pub interval_ms: u32,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

fn default_metrics_interval_ms() -> u32 {
    1_000
}

/// Wire format of a Provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// Any OpenAI-compatible API.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API.
    Gemini,
    /// Sluice's built-in simulator, run inside the gateway.
    Simulated,
}

impl ProviderType {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Simulated => "simulated",
        }
    }
}

/// Upstream credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderCredentials {
    /// The Secret key (in the Provider's namespace) that holds the upstream API key.
    pub secret_key_ref: SecretKeySelector,
}

/// TLS settings for calling an upstream. The public certificate authorities (the Mozilla set the
/// gateway ships) are always trusted; `caBundle` and `systemRoots` add to them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderTls {
    /// PEM certificates of the certificate authorities that sign the upstream's certificate (a
    /// private CA of a self-hosted backend), from a Secret or a ConfigMap in the Provider's
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleSource>,
    /// Also trust the certificate authorities of the gateway's operating system trust store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system_roots: bool,
    /// A client certificate the gateway presents to the upstream (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateRef>,
    /// The name the upstream's certificate must be valid for (and the SNI sent), instead of the
    /// host of its URL: for a backend called by IP address whose certificate names a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

/// Where a CA bundle is: exactly one of `secretKeyRef` and `configMapKeyRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("set exactly one of secretKeyRef and configMapKeyRef"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaBundleSource {
    /// A key of a Secret in the Provider's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<BundleKeySelector>,
    /// A key of a ConfigMap in the Provider's namespace (`data` or `binaryData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<BundleKeySelector>,
}

/// One key of a Secret or ConfigMap in the Provider's namespace that holds PEM certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleKeySelector {
    /// Name of the Secret or ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key that holds the PEM certificates.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The key cert-manager and `kubectl create secret tls` use for a CA certificate.
pub fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// A client certificate for mutual TLS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCertificateRef {
    /// A Secret of type `kubernetes.io/tls` in the Provider's namespace: the PEM certificate
    /// chain in `tls.crt`, the PEM private key in `tls.key` (what `kubectl create secret tls`
    /// and cert-manager write).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// One model an upstream serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderModel {
    /// The model's name at the upstream, as its API expects it in the `model` field.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"), length(min = 1, max = 256))]
    pub name: String,
    /// Context window in tokens (prompt plus output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub context_window: Option<u32>,
    /// Largest number of output tokens per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_output_tokens: Option<u32>,
    /// List prices in US dollars per million tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<ModelPricing>,
    /// What the model can do. Requests for an API the model lacks are refused before they reach
    /// the upstream.
    #[serde(default = "default_capabilities")]
    #[schemars(length(min = 1, max = 16))]
    pub capabilities: Vec<Capability>,
}

fn default_capabilities() -> Vec<Capability> {
    vec![Capability::Chat]
}

/// Prices in US dollars per million tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelPricing {
    /// Price of a million prompt tokens.
    #[schemars(range(min = 0.0, max = 100_000.0))]
    pub input_per_million: f64,
    /// Price of a million prompt tokens served from the upstream's prompt cache. Absent: the
    /// input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100_000.0))]
    pub cached_input_per_million: Option<f64>,
    /// Price of a million output tokens.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100_000.0))]
    pub output_per_million: f64,
}

/// Something a model can do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Capability {
    /// Chat completions (`/v1/chat/completions`).
    Chat,
    /// Legacy text completions (`/v1/completions`).
    Completions,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
    /// Reranking (`/v1/rerank`).
    Rerank,
    /// Tool (function) calling.
    Tools,
    /// Image inputs.
    Vision,
    /// JSON mode and structured outputs.
    Json,
    /// Image generation (`/v1/images/generations`).
    Images,
}

/// Knobs of the built-in simulator (`type: simulated`). Every field has a default; see
/// `docs/simulator.md` for the latency model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulationSpec {
    /// Fixed part of the time to first token, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 600_000.0))]
    pub prefill_overhead_ms: Option<f64>,
    /// Time to first token added per uncached prompt token, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1_000.0))]
    pub prefill_per_token_ms: Option<f64>,
    /// Time between two output tokens, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 60_000.0))]
    pub inter_token_ms: Option<f64>,
    /// Sequences decoded at once; further requests queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_num_seqs: Option<u32>,
    /// Output tokens when a request sets no `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub output_tokens: Option<u32>,
    /// Length of embedding vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65_536))]
    pub embedding_dimension: Option<u32>,
    /// Seed for reproducible latency jitter and generated text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Observed state of a Provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    /// Ready, ReferencesResolved and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
