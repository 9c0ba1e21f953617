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

use crate::api::{
    ApiKind, BudgetPeriod, Capability, ContentRuleMode, ContentRulesSpec, JwtAlgorithm, ProviderType, RedactionKind,
    RedactionSpec, RoutingPolicy, Scope, content_rule_problems,
};
pub use crate::jwks::Jwk;

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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
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
    /// Secrets that sign the project's responses, the current one first; empty: unsigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing: Vec<SigningSecretConfig>,
    /// JWT bearer authentication beside the API keys; `None`: API keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Whether the web console is served at `/<slug>/console/` (on unless the Project turns it
    /// off; left out of the configuration when on, so older configurations read the same).
    #[serde(default = "console_default", skip_serializing_if = "is_console_default")]
    pub console: bool,
    /// What the project's request spans may hold (see `ProjectTracingSpec`).
    #[serde(default, skip_serializing_if = "TracingConfig::is_default")]
    pub tracing: TracingConfig,
}

/// The console is on unless a Project says otherwise (see `ConsoleSpec`).
fn console_default() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_console_default(on: &bool) -> bool {
    *on
}

/// Traces of a project's requests (see `ProjectTracingSpec` for what each field means).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingConfig {
    /// Prompts and completions on sampled request spans.
    #[serde(default)]
    pub record_content: bool,
}

impl TracingConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// JWT bearer authentication of a project (see `JwtSpec` for what each field means).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms (never HMAC or `none`).
    pub algorithms: Vec<JwtAlgorithm>,
    /// Tolerated clock difference on `exp`, `nbf` and `iat`.
    pub clock_skew_seconds: u32,
    /// The claim holding scopes.
    pub scopes_claim: String,
    /// Scopes of a token without that claim.
    pub default_scopes: Vec<Scope>,
    /// The claim naming a tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_claim: Option<String>,
    /// The claim naming the subject limits, budget and usage are kept for.
    pub subject_claim: String,
    /// Each subject's spending limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// The issuer's public keys.
    pub jwks: JwksConfig,
}

/// Where a project's JWT verification keys come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum JwksConfig {
    /// The keys themselves (read from a Secret when the configuration was compiled).
    Keys(Vec<Jwk>),
    /// A URL the gateway fetches them from.
    #[serde(rename_all = "camelCase")]
    Url {
        /// `https://...` (or `http://` to a loopback address).
        url: String,
        /// Seconds between fetches.
        refresh_seconds: u32,
    },
}

/// One response-signing secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningSecretConfig {
    /// The HMAC key (its UTF-8 bytes).
    pub secret: Credential,
    /// When it stops signing (a previous secret in its grace period); `None`: the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
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
    /// Trust and client certificate for `https` upstreams, beyond the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
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

/// How the gateway sets up TLS with an upstream. Without it: the public (webpki) roots, no client
/// certificate, the URL's host as the name. Everything here is already validated PEM. Upstreams
/// with equal settings (and connect timeouts) share one connection pool, so a reload that keeps
/// them keeps the pool warm.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM certificates trusted besides the public roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Also trust the operating system's store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system_roots: bool,
    /// Presented to the upstream (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// The name the upstream's certificate must be valid for, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl UpstreamTls {
    /// Checks the PEM material and the name again (the file may not come from this compiler).
    fn check(&self, path: &str, problems: &mut Vec<String>) {
        use crate::upstream_tls::{
            ClientCertificateError, check_ca_bundle, check_client_certificate, check_server_name,
        };
        if let Some(Err(message)) = self.ca_bundle.as_ref().map(|pem| check_ca_bundle(pem.as_bytes())) {
            problems.push(format!("{path}.caBundle: {message}"));
        }
        if let Some(client) = &self.client_certificate {
            match check_client_certificate(client.certificate_chain.as_bytes(), client.private_key.expose().as_bytes())
            {
                Ok(_) => {}
                Err(ClientCertificateError::Chain(message)) => {
                    problems.push(format!("{path}.clientCertificate.certificateChain: {message}"));
                }
                Err(ClientCertificateError::Key) => {
                    problems.push(format!("{path}.clientCertificate.privateKey: not a PEM private key"));
                }
            }
        }
        if let Some(Err(message)) = self.server_name.as_deref().map(check_server_name) {
            problems.push(format!("{path}.serverName: {message}"));
        }
    }
}

/// A client certificate and its private key, PEM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCertificate {
    /// The certificate chain, leaf first.
    pub certificate_chain: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1); redacted in `Debug`.
    pub private_key: Credential,
}

/// A secret value (an upstream API key, a client certificate's private key). Serialises as the
/// plain string, since the configuration is itself stored as a Secret, but never shows in `Debug`
/// output or logs.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Hash)]
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
    /// The model (a key of `models` or `aliases`) a request that names none gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Parameters a chat request gets for each field it does not send itself
    /// ([`default_parameter_problems`] says which are accepted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_parameters: BTreeMap<String, serde_json::Value>,
    /// PII redaction in prompts; `None` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<RedactionConfig>,
    /// Content rules on prompts; `None` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_rules: Option<ContentRulesConfig>,
}

/// An endpoint's PII redaction, with every default resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedactionConfig {
    /// The kinds redacted, sorted, without duplicates, never empty.
    pub kinds: Vec<RedactionKind>,
    /// Originals are put back into the answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

impl RedactionConfig {
    /// The configuration of `spec.redaction`: absent `kinds` is every kind.
    pub fn from_spec(spec: &RedactionSpec) -> Self {
        let mut kinds = spec.kinds.clone().unwrap_or_else(|| RedactionKind::ALL.to_vec());
        kinds.sort_unstable();
        kinds.dedup();
        Self { kinds, restore: spec.restore }
    }
}

/// An endpoint's content rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentRulesConfig {
    /// Refuse, or only count.
    pub mode: ContentRuleMode,
    /// Phrases, matched literally and case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// Regular expressions ([`crate::api::compile_pattern`] compiles them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// The gateway's prompt-injection heuristics apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_injection: bool,
}

impl ContentRulesConfig {
    /// The configuration of `spec.contentRules`.
    pub fn from_spec(spec: &ContentRulesSpec) -> Self {
        Self {
            mode: spec.mode,
            blocked: spec.blocked.clone(),
            patterns: spec.patterns.clone(),
            prompt_injection: spec.prompt_injection,
        }
    }
}

/// Most fields `defaultParameters` may set.
pub const MAX_DEFAULT_PARAMETERS: usize = 32;
/// Largest `defaultParameters`, as compact JSON.
pub const MAX_DEFAULT_PARAMETERS_BYTES: usize = 4096;
/// Request fields that are no parameter: the model has `defaultModel`, the rest is the request.
const NOT_DEFAULTABLE: &[&str] = &["model", "messages", "prompt", "input", "stream", "stream_options"];

/// What is wrong with an endpoint's default parameters, each as (the field's name, or `None` for
/// the whole object; the problem). A default is a top-level field of a chat completions request
/// (snake_case, as OpenAI names them) whose value is a number, string, boolean or a list of
/// those; at most [`MAX_DEFAULT_PARAMETERS`] of them in [`MAX_DEFAULT_PARAMETERS_BYTES`].
pub fn default_parameter_problems(parameters: &BTreeMap<String, serde_json::Value>) -> Vec<(Option<&str>, String)> {
    use serde_json::Value;
    let mut problems = Vec::new();
    if parameters.len() > MAX_DEFAULT_PARAMETERS {
        problems.push((None, format!("{} fields; at most {MAX_DEFAULT_PARAMETERS}", parameters.len())));
    }
    let size = serde_json::to_vec(parameters).map_or(usize::MAX, |json| json.len());
    if size > MAX_DEFAULT_PARAMETERS_BYTES {
        problems.push((None, format!("{size} bytes of JSON; at most {MAX_DEFAULT_PARAMETERS_BYTES}")));
    }
    let scalar = |value: &Value| matches!(value, Value::Bool(_) | Value::Number(_) | Value::String(_));
    for (name, value) in parameters {
        let bytes = name.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes.len() <= 64
            && !bytes[0].is_ascii_digit()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !well_formed {
            problems
                .push((Some(name.as_str()), "not a request field name (letters, digits and '_', at most 64)".into()));
        } else if name == "model" {
            problems.push((Some(name.as_str()), "the model a request gets is spec.defaultModel".into()));
        } else if NOT_DEFAULTABLE.contains(&name.as_str()) {
            problems.push((Some(name.as_str()), "part of the request itself, not a parameter".into()));
        }
        let fits = match value {
            Value::Array(items) => items.iter().all(scalar),
            other => scalar(other),
        };
        if !fits {
            problems.push((Some(name.as_str()), "must be a number, string, boolean or a list of those".into()));
        }
    }
    if parameters.contains_key("max_tokens") && parameters.contains_key("max_completion_tokens") {
        problems.push((Some("max_completion_tokens"), "set max_tokens or max_completion_tokens, not both".into()));
    }
    problems
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

    /// A copy with every secret value (upstream API keys, client certificates' private keys)
    /// replaced by `<redacted>`, for showing.
    pub fn redacted(&self) -> Self {
        let redacted = || Credential::new("<redacted>");
        let mut copy = self.clone();
        for signing in &mut copy.project.signing {
            signing.secret = redacted();
        }
        for provider in copy.providers.values_mut() {
            if let Some(credential) = provider.credential.as_mut() {
                *credential = redacted();
            }
            if let Some(client) = provider.tls.as_mut().and_then(|tls| tls.client_certificate.as_mut()) {
                client.private_key = redacted();
            }
        }
        copy
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
            if let Some(model) = endpoint.default_model.as_deref()
                && !endpoint.models.contains_key(model)
                && !endpoint.aliases.contains_key(model)
            {
                problems.push(format!("endpoints.{slug}.defaultModel: no model or alias {model:?}"));
            }
            for (field, problem) in default_parameter_problems(&endpoint.default_parameters) {
                let at = field.map_or_else(String::new, |f| format!(".{f}"));
                problems.push(format!("endpoints.{slug}.defaultParameters{at}: {problem}"));
            }
            if endpoint.redaction.as_ref().is_some_and(|r| r.kinds.is_empty()) {
                problems.push(format!("endpoints.{slug}.redaction.kinds: empty"));
            }
            if let Some(rules) = &endpoint.content_rules {
                for (field, problem) in content_rule_problems(&rules.blocked, &rules.patterns, rules.prompt_injection) {
                    let at = if field.is_empty() { field } else { format!(".{field}") };
                    problems.push(format!("endpoints.{slug}.contentRules{at}: {problem}"));
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
            if let Some(tls) = &provider.tls {
                tls.check(&format!("providers.{id}.tls"), &mut problems);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: serde_json::Value) -> Vec<String> {
        let parameters: BTreeMap<String, serde_json::Value> = serde_json::from_value(json).expect("an object");
        default_parameter_problems(&parameters)
            .into_iter()
            .map(|(field, problem)| format!("{}: {problem}", field.unwrap_or("*")))
            .collect()
    }

    #[test]
    fn default_parameters_are_scalars_or_lists_of_scalars_of_request_fields() {
        let ok =
            serde_json::json!({"temperature": 0.2, "max_tokens": 512, "stop": ["\n\n"], "user": "x", "logprobs": true});
        assert_eq!(problems(ok), Vec::<String>::new());
        assert_eq!(
            problems(serde_json::json!({"model": "m", "messages": [], "response_format": {"type": "json_object"},
                "stop": [["x"]], "bad-name": 1, "seed": null})),
            [
                "bad-name: not a request field name (letters, digits and '_', at most 64)",
                "messages: part of the request itself, not a parameter",
                "model: the model a request gets is spec.defaultModel",
                "response_format: must be a number, string, boolean or a list of those",
                "seed: must be a number, string, boolean or a list of those",
                "stop: must be a number, string, boolean or a list of those",
            ]
        );
        assert_eq!(
            problems(serde_json::json!({"max_tokens": 1, "max_completion_tokens": 2})),
            ["max_completion_tokens: set max_tokens or max_completion_tokens, not both"]
        );
        let long = serde_json::json!({"user": "x".repeat(5000)});
        assert_eq!(problems(long), ["*: 5011 bytes of JSON; at most 4096"]);
        let many: BTreeMap<String, serde_json::Value> = (0..33).map(|i| (format!("p{i}"), 1.into())).collect();
        assert_eq!(default_parameter_problems(&many).len(), 1);
    }
}
