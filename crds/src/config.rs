//! `GatewayConfig`: the compiled configuration of one project's data plane.
//!
//! This is the contract between the operator (or the standalone compiler) and the gateway. It is
//! versioned by `apiVersion`, strict (unknown fields are errors) and self-contained: every name it
//! mentions is defined in it, so the gateway needs nothing else to serve the project. It holds
//! upstream credentials, so it is stored in a Secret and never logged ([`Credential`] redacts
//! itself in `Debug`).

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{ApiKind, BudgetPeriod, Capability, ProviderType, RoutingPolicy, Scope};

/// `apiVersion` of the configuration format this crate reads and writes.
pub const CONFIG_API_VERSION: &str = "sluice.dev/v1alpha1";
/// `kind` of a compiled configuration document.
pub const CONFIG_KIND: &str = "GatewayConfig";

/// Everything one project's gateway needs to serve it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Always [`CONFIG_API_VERSION`].
    pub api_version: String,
    /// Always [`CONFIG_KIND`].
    pub kind: String,
    /// The project served.
    pub project: ProjectConfig,
    /// Service tiers, by ServiceTier name; only those this project uses.
    pub tiers: BTreeMap<String, TierConfig>,
    /// Upstreams, by `<namespace>/<name>` of their Provider; only those this project uses.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Endpoints, by slug.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// API keys, sorted by id.
    pub keys: Vec<KeyConfig>,
}

/// The project itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    /// URL segment.
    pub slug: String,
    /// Namespace of the Project object (the tenant's namespace).
    pub namespace: String,
    /// Name of the Project object.
    pub name: String,
    /// Tier of keys and endpoints that name none.
    pub default_tier: String,
}

/// A service tier's numbers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierConfig {
    /// Requests per minute per key; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute per key; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight per key; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Longest wait for the first byte from the upstream.
    pub first_token_ms: u32,
    /// Longest a request may take in all.
    pub total_ms: u32,
    /// Longest silence inside a stream.
    pub idle_stream_ms: u32,
    /// Admission priority; negative is sheddable.
    pub priority: i32,
    /// Default TTFT target when a request sends no hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_ttft_ms: Option<u32>,
    /// Default TPOT target when a request sends no hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_tpot_ms: Option<u32>,
    /// Factor on token prices.
    pub price_multiplier: f64,
    /// Retry budget: retries as a percentage of requests.
    pub retry_percent: u32,
    /// Retry budget: retries always allowed per second.
    pub min_retries_per_second: u32,
}

/// An upstream API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    /// Wire format.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL up to the version segment; `None` only for `simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The upstream API key, injected in the header the wire format uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    /// Extra static headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Connect timeout.
    pub connect_timeout_ms: u32,
    /// Models offered, by upstream name.
    pub models: BTreeMap<String, ProviderModelConfig>,
    /// Simulator knobs for `simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<SimulationConfig>,
    /// A self-hosted pool's pods: base URLs up to the version segment
    /// (`http://10.0.3.7:8000/v1`), sorted and without duplicates. The gateway routes to each
    /// as a backend of its own. Filled by the compiler from `spec.addresses`, and by the
    /// operator from the ready endpoints of `service`'s EndpointSlices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    /// The Service whose ready endpoints the operator writes into `pods`. A Provider with a
    /// `service` is a pool even while `pods` is empty (no ready endpoint yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceConfig>,
    /// Scraping the pods' vLLM metrics; only for a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metrics: Option<PodMetricsConfig>,
}

impl ProviderConfig {
    /// Whether requests go to `pods` one by one rather than to `base_url`.
    pub fn is_pool(&self) -> bool {
        self.service.is_some() || !self.pods.is_empty()
    }
}

/// The Service of a self-hosted pool, for the operator to resolve into pod addresses: each
/// ready endpoint address `ip` becomes `<scheme>://<ip>:<port><path>` (IPv6 in brackets).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceConfig {
    /// Namespace of the Service (the Provider's).
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// The pods' API port.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: String,
    /// API path up to the version segment (`/v1`), or empty.
    pub path: String,
}

impl ServiceConfig {
    /// The base URL of the pod at `ip` (the contract the operator follows when filling `pods`).
    pub fn pod_url(&self, ip: &str) -> String {
        let host = if ip.contains(':') && !ip.starts_with('[') { format!("[{ip}]") } else { ip.to_owned() };
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }
}

/// Scraping a pool's pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodMetricsConfig {
    /// Path of the Prometheus text on each pod's host and port.
    pub path: String,
    /// Between two scrapes, ms.
    pub interval_ms: u32,
}

/// A secret value (an upstream API key). Serialises as the plain string, since the configuration
/// is itself stored as a Secret, but never shows in `Debug` output or logs.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for putting into an upstream request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// One upstream model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderModelConfig {
    /// Context window in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Largest output per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// List prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingConfig>,
    /// What it can do.
    pub capabilities: Vec<Capability>,
}

/// Prices in US dollars per million tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingConfig {
    /// Prompt tokens.
    pub input_per_million: f64,
    /// Prompt tokens served from cache.
    pub cached_input_per_million: f64,
    /// Output tokens.
    pub output_per_million: f64,
}

/// Simulator knobs; `None` takes the simulator's default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulationConfig {
    /// Fixed part of TTFT, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_overhead_ms: Option<f64>,
    /// TTFT per uncached prompt token, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_per_token_ms: Option<f64>,
    /// Time between output tokens, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_token_ms: Option<f64>,
    /// Concurrent sequences before queueing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_num_seqs: Option<u32>,
    /// Output tokens when the request sets no `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u32>,
    /// Embedding length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dimension: Option<u32>,
    /// Seed for jitter and text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One endpoint of the project.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointConfig {
    /// `<namespace>/<name>` of the Endpoint object, for logs and status.
    pub id: String,
    /// Tier for keys that name none; `None` falls back to the project's default tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Backend choice within a priority.
    pub routing: RoutingPolicy,
    /// Largest request body.
    pub max_body_bytes: u32,
    /// Largest `max_tokens` a request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// APIs served.
    pub apis: Vec<ApiKind>,
    /// Exposed models, by name.
    pub models: BTreeMap<String, ModelConfig>,
    /// Aliases, by alias name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, AliasConfig>,
}

/// An exposed model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelConfig {
    /// `owned_by` in model listings.
    pub owned_by: String,
    /// Smallest context window among the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Smallest output limit among the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Capabilities every backend has.
    pub capabilities: Vec<Capability>,
    /// Backends in declaration order; the gateway groups them by priority.
    pub backends: Vec<BackendConfig>,
}

/// One backend of an exposed model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    /// Key into [`GatewayConfig::providers`].
    pub provider: String,
    /// Model name at the upstream.
    pub model: String,
    /// Share within the priority.
    pub weight: u32,
    /// Failover order, 0 first.
    pub priority: u32,
}

/// An alias of an exposed model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AliasConfig {
    /// The exposed model it resolves to.
    pub target: String,
    /// Responses carry a `Deprecation` header.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    /// After this instant the alias answers `404 model_not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset: Option<Timestamp>,
}

/// One API key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyConfig {
    /// `<namespace>/<name>` of the ApiKey object: what logs, metrics and errors name instead of
    /// the key itself.
    pub id: String,
    /// Hashes of the key material that open this key: the current one, and during a rotation's
    /// grace period the previous one with its expiry.
    pub hashes: Vec<KeyHash>,
    /// Permissions.
    pub scopes: Vec<Scope>,
    /// Endpoint slugs allowed; `None` is all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// Model names or aliases allowed; `None` is all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Tier override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The key stops working at this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Source networks allowed; `None` is any. Already validated CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Spending limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
}

/// The SHA-256 of some key material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyHash {
    /// Lowercase hex SHA-256 of the key as the client sends it.
    pub sha256: String,
    /// When this material stops working (the end of a rotation's grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// A spending limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConfig {
    /// US dollars per period.
    pub limit_usd: f64,
    /// When spending resets.
    pub period: BudgetPeriod,
}

/// Lowercase hex SHA-256 of key material, as stored in [`KeyHash::sha256`].
pub fn hash_key(material: &[u8]) -> String {
    hex::encode(Sha256::digest(material))
}

impl GatewayConfig {
    /// The canonical bytes of this configuration (JSON, fields in a fixed order, maps sorted).
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// `sha256:<hex>` of the canonical bytes: equal configurations have equal hashes.
    pub fn content_hash(&self) -> Result<String, serde_json::Error> {
        Ok(crate::config_secret::content_hash(&self.to_canonical_json()?))
    }

    /// Checks what the type system cannot: the version, and that every name the configuration
    /// uses is defined in it. Run on every load, because the file may not come from this compiler.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.api_version != CONFIG_API_VERSION || self.kind != CONFIG_KIND {
            problems.push(format!(
                "apiVersion/kind is {}/{}, this gateway reads {CONFIG_API_VERSION}/{CONFIG_KIND}",
                self.api_version, self.kind
            ));
        }
        let tier_known = |tier: &str| self.tiers.contains_key(tier);
        if !tier_known(&self.project.default_tier) {
            problems.push(format!("project.defaultTier: no tier {:?}", self.project.default_tier));
        }
        for (slug, endpoint) in &self.endpoints {
            if let Some(tier) = endpoint.tier.as_deref().filter(|t| !tier_known(t)) {
                problems.push(format!("endpoints.{slug}.tier: no tier {tier:?}"));
            }
            for (name, model) in &endpoint.models {
                if model.backends.is_empty() {
                    problems.push(format!("endpoints.{slug}.models.{name}: no backends"));
                }
                for (i, backend) in model.backends.iter().enumerate() {
                    match self.providers.get(&backend.provider) {
                        None => problems.push(format!(
                            "endpoints.{slug}.models.{name}.backends[{i}].provider: no provider {:?}",
                            backend.provider
                        )),
                        Some(provider) if !provider.models.contains_key(&backend.model) => problems.push(format!(
                            "endpoints.{slug}.models.{name}.backends[{i}].model: provider {:?} has no model {:?}",
                            backend.provider, backend.model
                        )),
                        Some(_) => {}
                    }
                }
            }
            for (alias, target) in &endpoint.aliases {
                if !endpoint.models.contains_key(&target.target) {
                    problems.push(format!("endpoints.{slug}.aliases.{alias}: no model {:?}", target.target));
                }
                if endpoint.models.contains_key(alias) {
                    problems.push(format!("endpoints.{slug}.aliases.{alias}: also the name of a model"));
                }
            }
        }
        for (id, provider) in &self.providers {
            let pool = provider.is_pool();
            if pool && provider.base_url.is_some() {
                problems.push(format!("providers.{id}.baseUrl: a pool (pods, service) has no baseUrl"));
            } else if !pool && provider.base_url.is_none() && provider.provider_type != ProviderType::Simulated {
                problems.push(format!("providers.{id}.baseUrl: required for type {}", provider.provider_type.as_str()));
            }
            if pool && provider.provider_type == ProviderType::Simulated {
                problems.push(format!("providers.{id}.pods: type simulated has no pods"));
            }
            for pod in provider.pods.iter().filter(|p| !(p.starts_with("http://") || p.starts_with("https://"))) {
                problems.push(format!("providers.{id}.pods: {pod:?} is not an http(s) URL"));
            }
            if provider.pod_metrics.is_some() && !pool {
                problems.push(format!("providers.{id}.podMetrics: only for a pool"));
            }
        }
        let mut seen_hashes = std::collections::HashSet::new();
        for key in &self.keys {
            if let Some(tier) = key.tier.as_deref().filter(|t| !tier_known(t)) {
                problems.push(format!("keys.{}.tier: no tier {tier:?}", key.id));
            }
            for hash in &key.hashes {
                if hash.sha256.len() != 64 || !hash.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push(format!("keys.{}.hashes: not a hex SHA-256", key.id));
                } else if !seen_hashes.insert(hash.sha256.as_str()) {
                    problems.push(format!("keys.{}.hashes: the same key material opens another key", key.id));
                }
            }
            for cidr in key.allowed_cidrs.iter().flatten() {
                if cidr.parse::<ipnet::IpNet>().is_err() {
                    problems.push(format!("keys.{}.allowedCidrs: {cidr:?} is not a CIDR", key.id));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}
