//! The live configuration as the request path reads it: every lookup precomputed when a
//! configuration is loaded, so a request does hash-map lookups and nothing else. Built whole
//! and swapped atomically; a request holds the snapshot it started with until it ends.

use std::collections::{HashMap, HashSet};

/// Maps read on every request: foldhash is several times faster than SipHash on short keys, and
/// their keys come from the configuration, not from clients.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// Sets read on every request.
pub type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use sluice_crds::api::{ApiKind, Capability, RoutingPolicy, Scope};
use sluice_crds::config::{
    BudgetConfig, GatewayConfig, JwksConfig, JwtConfig, PricingConfig, SigningSecretConfig, TierConfig,
};

use crate::auth::jwks::{JwksFetchers, KeySource};
use crate::auth::jwt::KeySet;
use crate::auth::subjects::Subjects;
use crate::backends::{BackendKey, BackendRegistry, BackendState};
use crate::guard::Guard;
use crate::limits::{KeyState, RetryBudget};
use crate::metrics::{Metrics, ModelMetrics};
use crate::protocol::defaults::RequestDefaults;
use crate::respond::LimitHeaders;
use crate::scrape::{PodTarget, Scrapes};
use crate::signing::SigningKeys;
use crate::upstream::client::{SharedUpstream, UpstreamPool};

/// One loaded configuration set.
#[derive(Debug)]
pub struct Snapshot {
    /// Increments with every successful load.
    pub generation: u64,
    /// When it was loaded.
    pub loaded_at: Timestamp,
    /// Projects by slug.
    pub projects: FastMap<String, Project>,
    keys: FastMap<[u8; 32], KeyRef>,
    /// What `/config` shows about each project (no secrets).
    pub summaries: Vec<ProjectSummary>,
    /// Whether any project signs its responses (when none does, no request looks).
    pub signs_responses: bool,
}

#[derive(Debug)]
struct KeyRef {
    project: Arc<str>,
    index: u32,
    hash_expires: Option<Timestamp>,
}

/// A project's summary for the admin API.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    /// URL segment.
    pub slug: String,
    /// Content hash of its configuration.
    pub config_hash: String,
    /// Endpoints.
    pub endpoints: usize,
    /// Keys.
    pub keys: usize,
}

/// A tier with its shared retry budget.
#[derive(Debug)]
pub struct Tier {
    /// ServiceTier name.
    pub name: String,
    /// Its numbers.
    pub config: TierConfig,
    /// Retries its requests may still make.
    pub retries: Arc<RetryBudget>,
    /// Its `x-ratelimit-*` headers, made once.
    pub limit_headers: LimitHeaders,
}

/// A project.
#[derive(Debug)]
pub struct Project {
    /// URL segment.
    pub slug: Arc<str>,
    /// The tenant's namespace (of the Project object): where its ApiKeys live.
    pub namespace: Arc<str>,
    /// Names of the ServiceTiers its configuration holds (those it uses).
    pub tiers: Vec<Arc<str>>,
    /// Tier of keys and endpoints that name none.
    pub default_tier: Arc<Tier>,
    /// Endpoints by slug.
    pub endpoints: FastMap<String, Endpoint>,
    /// Keys, addressed by [`Snapshot::key`].
    pub keys: Vec<Key>,
    /// `host[:port]` of each Provider's base URL, by Provider id, for traces (`server.address`;
    /// a pool's pods name theirs in their backend's label).
    pub servers: FastMap<String, String>,
    /// Response-signing secrets, the current one first (empty: responses are not signed).
    pub signing: Vec<SigningSecretConfig>,
    /// JWT bearer authentication, when the project accepts tokens.
    pub jwt: Option<ProjectJwt>,
    /// Whether the web console is served at `/<slug>/console/`.
    pub console: bool,
    /// Whether its sampled request spans record prompts and completions.
    pub record_content: bool,
}

/// A project's JWT settings, keys and subjects.
#[derive(Debug)]
pub struct ProjectJwt {
    /// What a token must satisfy and how its claims map.
    pub config: JwtConfig,
    /// The verification keys.
    pub keys: KeySource,
    /// Subjects' live counters (they outlive this snapshot).
    pub subjects: Arc<Subjects>,
    /// Tiers a tier claim may name (every ServiceTier the configuration holds).
    pub tiers: FastMap<String, Arc<Tier>>,
}

impl Project {
    /// The secrets that sign a response sent `now` (a previous one only until its expiry);
    /// `None` when the project's responses are not signed.
    pub fn signing_keys(&self, now: Timestamp) -> Option<SigningKeys> {
        if self.signing.is_empty() {
            return None;
        }
        SigningKeys::new(self.live_signing_secrets(now).map(|s| s.secret.expose().as_bytes()))
    }

    /// The signing secrets in use `now`: the current one, and a previous one until it expires.
    pub fn live_signing_secrets(&self, now: Timestamp) -> impl Iterator<Item = &SigningSecretConfig> {
        self.signing.iter().filter(move |s| s.expires_at.is_none_or(|until| until > now))
    }
}

/// An endpoint.
#[derive(Debug)]
pub struct Endpoint {
    /// URL segment.
    pub slug: Arc<str>,
    /// Its tier, if it names one.
    pub tier: Option<Arc<Tier>>,
    /// Which APIs it serves, indexed by [`ApiKind`] (see [`Endpoint::serves`]).
    apis: [bool; ApiKind::ALL.len()],
    /// Largest body.
    pub max_body_bytes: u64,
    /// Largest `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Backend choice within a priority.
    pub routing: RoutingPolicy,
    /// The model and parameters a request that sends none of its own gets.
    pub defaults: RequestDefaults,
    /// Content rules and PII redaction; `None` when the endpoint has neither.
    pub guard: Option<Guard>,
    /// Models in name order.
    pub models: Vec<Model>,
    names: FastMap<String, NameTarget>,
}

/// What a requested model name resolves to.
#[derive(Clone, Copy, Debug)]
pub enum NameTarget {
    /// A model's own name: its index in [`Endpoint::models`].
    Model(usize),
    /// An alias.
    Alias {
        /// The model's index.
        model: usize,
        /// Announce deprecation.
        deprecated: bool,
        /// Stops working at.
        sunset: Option<Timestamp>,
    },
}

/// An exposed model.
#[derive(Debug)]
pub struct Model {
    /// Name clients use.
    pub name: Arc<str>,
    /// `owned_by` in listings.
    pub owned_by: String,
    /// Context window.
    pub context_window: Option<u32>,
    /// Output limit.
    pub max_output_tokens: Option<u32>,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
    /// Backends sorted by priority (stable).
    pub backends: Vec<Backend>,
    /// Its aliases with their sunsets.
    pub aliases: Vec<(String, Option<Timestamp>)>,
    /// Metric handles.
    pub metrics: ModelMetrics,
    /// The `roundRobin` strategy's turn.
    pub turn: std::sync::atomic::AtomicUsize,
}

/// One backend of a model.
#[derive(Debug)]
pub struct Backend {
    /// Where to send.
    pub upstream: SharedUpstream,
    /// Model name upstream.
    pub model: String,
    /// Whether `model` must be rewritten (the client's name differs).
    pub rewrite_from: Option<String>,
    /// Share within its priority.
    pub weight: u32,
    /// Failover order.
    pub priority: u32,
    /// Prices of this backend's model.
    pub pricing: Option<PricingConfig>,
    /// Its live state (load, latency, health), shared with every snapshot and model that
    /// names the same provider and upstream model (and pod).
    pub state: Arc<BackendState>,
    /// `<provider>/<model>` for headers, logs and metrics; `<provider>/<model>@<host:port>`
    /// for a pool's pod.
    pub label: Arc<str>,
    /// `label` as a header value, made once.
    pub label_header: hyper::header::HeaderValue,
}

/// One API key.
#[derive(Debug)]
pub struct Key {
    /// `<namespace>/<name>` of the ApiKey.
    pub id: Arc<str>,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// Allowed endpoint slugs.
    pub endpoints: Option<FastSet<String>>,
    /// Allowed model names or aliases.
    pub models: Option<FastSet<String>>,
    /// Tier override.
    pub tier: Option<Arc<Tier>>,
    /// Stops working at.
    pub expires_at: Option<Timestamp>,
    /// Allowed networks.
    pub cidrs: Vec<ipnet::IpNet>,
    /// Spending limit.
    pub budget: Option<BudgetConfig>,
    /// Live counters (they outlive this snapshot).
    pub state: Arc<KeyState>,
}

/// A key found by its hash, with the project it opens.
pub struct FoundKey<'s> {
    /// The project.
    pub project: &'s Project,
    /// The key.
    pub key: &'s Key,
    /// When this particular key material stops working (rotation grace).
    pub hash_expires: Option<Timestamp>,
}

impl Snapshot {
    /// An empty snapshot (nothing loaded yet).
    pub fn empty() -> Self {
        Self {
            generation: 0,
            loaded_at: Timestamp::now(),
            projects: FastMap::default(),
            keys: FastMap::default(),
            summaries: Vec::new(),
            signs_responses: false,
        }
    }

    /// The project of a path (`/<project>/...`) when it signs its responses.
    pub fn signing_project(&self, path: &str) -> Option<&Project> {
        if !self.signs_responses {
            return None;
        }
        let slug = path.strip_prefix('/')?.split('/').next()?;
        self.projects.get(slug).filter(|p| !p.signing.is_empty())
    }

    /// The key whose material hashes to `hash`.
    pub fn key(&self, hash: &[u8; 32]) -> Option<FoundKey<'_>> {
        let found = self.keys.get(hash)?;
        let project = self.projects.get(&*found.project)?;
        Some(FoundKey { project, key: project.keys.get(found.index as usize)?, hash_expires: found.hash_expires })
    }

    /// Number of API keys loaded (a key in a rotation's grace period counts once).
    pub fn key_count(&self) -> usize {
        self.projects.values().map(|p| p.keys.len()).sum()
    }
}

impl Endpoint {
    /// Resolves a requested model name.
    pub fn resolve(&self, name: &str) -> Option<NameTarget> {
        self.names.get(name).copied()
    }

    /// Whether the endpoint serves `api`.
    pub fn serves(&self, api: ApiKind) -> bool {
        // `ApiKind::ALL` lists every kind in declaration order, so its discriminant indexes it.
        self.apis[api as usize]
    }
}

impl NameTarget {
    /// Index of the model.
    pub fn model(self) -> usize {
        match self {
            Self::Model(i) | Self::Alias { model: i, .. } => i,
        }
    }
}

/// State that outlives snapshots: key counters, retry budgets, backend state, connection pools,
/// simulators.
#[derive(Default)]
pub struct Registries {
    keys: Mutex<HashMap<String, Arc<KeyState>>>,
    subjects: Mutex<HashMap<String, Arc<Subjects>>>,
    retries: Mutex<HashMap<String, Arc<RetryBudget>>>,
    /// JWKS URLs' keys and refresh tasks.
    pub jwks: JwksFetchers,
    /// Backends' load, latency and health.
    pub backends: BackendRegistry,
    /// Upstream connections and simulators.
    pub upstreams: UpstreamPool,
    /// Pool pods' scraped signals and scrape tasks.
    pub scrapes: Scrapes,
}

/// Why a configuration could not become a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("project {project}: {message}")]
pub struct BuildError {
    /// Which project.
    pub project: String,
    /// What went wrong.
    pub message: String,
}

/// Builds a snapshot from validated configurations, reusing long-lived state from `registries`.
pub fn build(
    configs: &[GatewayConfig],
    generation: u64,
    registries: &Registries,
    metrics: &Metrics,
) -> Result<Snapshot, BuildError> {
    let mut projects = FastMap::default();
    let mut keys = FastMap::default();
    let mut summaries = Vec::new();
    let mut live_keys: HashMap<String, Arc<KeyState>> = HashMap::new();
    let mut live_retries: HashMap<String, Arc<RetryBudget>> = HashMap::new();
    let mut live_sims = Vec::new();
    let mut live_backends = HashSet::new();
    let mut live_pods: Vec<PodTarget> = Vec::new();
    let old_keys = registries.keys.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let old_retries = registries.retries.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let old_subjects = registries.subjects.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut live_subjects: HashMap<String, Arc<Subjects>> = HashMap::new();
    let mut live_jwks = Vec::new();

    for config in configs {
        let slug = config.project.slug.clone();
        let fail = |message: String| BuildError { project: slug.clone(), message };
        let tiers: HashMap<&str, Arc<Tier>> = config
            .tiers
            .iter()
            .map(|(name, tier)| {
                let retries = live_retries
                    .entry(name.clone())
                    .or_insert_with(|| old_retries.get(name).cloned().unwrap_or_default())
                    .clone();
                let limit_headers = LimitHeaders::new(tier.requests_per_minute, tier.tokens_per_minute);
                (name.as_str(), Arc::new(Tier { name: name.clone(), config: tier.clone(), retries, limit_headers }))
            })
            .collect();
        let tier = |name: &str| tiers.get(name).cloned().ok_or_else(|| fail(format!("no tier {name:?}")));

        // Each provider's upstreams: one, or one per pod of a pool (with the pod's URL).
        let mut upstreams: HashMap<&str, Vec<(Option<&str>, SharedUpstream)>> = HashMap::new();
        for (id, provider) in &config.providers {
            if provider.is_pool() {
                let mut pods = Vec::with_capacity(provider.pods.len());
                for pod in &provider.pods {
                    let pinned =
                        sluice_crds::config::ProviderConfig { base_url: Some(pod.clone()), ..provider.clone() };
                    let upstream = registries
                        .upstreams
                        .upstream(id, &pinned)
                        .map_err(|e| fail(format!("provider {id}: pod {pod}: {e}")))?;
                    pods.push((Some(pod.as_str()), Arc::new(upstream)));
                    live_pods.push(PodTarget {
                        provider: id.clone(),
                        pod: pod.clone(),
                        metrics: provider.pod_metrics.clone(),
                    });
                }
                upstreams.insert(id.as_str(), pods);
                continue;
            }
            let upstream =
                registries.upstreams.upstream(id, provider).map_err(|e| fail(format!("provider {id}: {e}")))?;
            if provider.provider_type == sluice_crds::api::ProviderType::Simulated {
                live_sims.push(id.clone());
            }
            upstreams.insert(id.as_str(), vec![(None, Arc::new(upstream))]);
        }

        let mut endpoints = FastMap::default();
        for (endpoint_slug, endpoint) in &config.endpoints {
            let mut models = Vec::new();
            let mut names = FastMap::default();
            for (index, (name, model)) in endpoint.models.iter().enumerate() {
                let mut backends = Vec::new();
                for backend in &model.backends {
                    let targets = upstreams
                        .get(backend.provider.as_str())
                        .ok_or_else(|| fail(format!("no provider {:?}", backend.provider)))?;
                    let pricing = config
                        .providers
                        .get(&backend.provider)
                        .and_then(|p| p.models.get(&backend.model))
                        .and_then(|m| m.pricing.clone());
                    // A pool expands into one backend per pod, each with its own state.
                    for (pod, upstream) in targets {
                        live_backends.insert(BackendKey {
                            provider: backend.provider.clone(),
                            model: backend.model.clone(),
                            pod: pod.map(str::to_owned),
                        });
                        let (state, label) = match pod {
                            None => (
                                registries.backends.state(&backend.provider, &backend.model, metrics),
                                format!("{}/{}", backend.provider, backend.model),
                            ),
                            Some(pod) => {
                                let signals = registries.scrapes.signals(&backend.provider, pod);
                                let state = registries.backends.pod_state(
                                    &backend.provider,
                                    &backend.model,
                                    pod,
                                    &signals,
                                    metrics,
                                );
                                (state, format!("{}/{}@{}", backend.provider, backend.model, pod_host(pod)))
                            }
                        };
                        backends.push(Backend {
                            upstream: upstream.clone(),
                            model: backend.model.clone(),
                            rewrite_from: (backend.model != *name).then(|| name.clone()),
                            weight: backend.weight,
                            priority: backend.priority,
                            pricing: pricing.clone(),
                            state,
                            label_header: hyper::header::HeaderValue::try_from(label.as_str())
                                .map_err(|_| fail(format!("backend {label} is not a valid header value")))?,
                            label: label.into(),
                        });
                    }
                }
                backends.sort_by_key(|b| b.priority);
                let mut model_metrics = metrics.model(&slug, endpoint_slug, name);
                let series = backends.iter().map(|b| (&*b.upstream.id, b.upstream.kind, b.model.as_str()));
                metrics.model_backends(&mut model_metrics, &slug, endpoint_slug, name, series);
                names.insert(name.clone(), NameTarget::Model(index));
                models.push(Model {
                    name: name.as_str().into(),
                    owned_by: model.owned_by.clone(),
                    context_window: model.context_window,
                    max_output_tokens: model.max_output_tokens,
                    capabilities: model.capabilities.clone(),
                    backends,
                    aliases: endpoint
                        .aliases
                        .iter()
                        .filter(|(_, a)| a.target == *name)
                        .map(|(alias, a)| (alias.clone(), a.sunset))
                        .collect(),
                    metrics: model_metrics,
                    turn: std::sync::atomic::AtomicUsize::new(0),
                });
            }
            for (alias, target) in &endpoint.aliases {
                let index = models
                    .iter()
                    .position(|m| *m.name == *target.target)
                    .ok_or_else(|| fail(format!("alias {alias:?} names no model")))?;
                names.insert(
                    alias.clone(),
                    NameTarget::Alias { model: index, deprecated: target.deprecated, sunset: target.sunset },
                );
            }
            // A configuration written before the translated protocols had kinds of their own
            // serves them with chatCompletions, as it did.
            let mut apis = [false; ApiKind::ALL.len()];
            for api in ApiKind::served(Some(&endpoint.apis)) {
                apis[api as usize] = true;
            }
            endpoints.insert(
                endpoint_slug.clone(),
                Endpoint {
                    slug: endpoint_slug.as_str().into(),
                    tier: endpoint.tier.as_deref().map(tier).transpose()?,
                    apis,
                    max_body_bytes: u64::from(endpoint.max_body_bytes),
                    max_tokens: endpoint.max_tokens.map(u64::from),
                    routing: endpoint.routing,
                    defaults: RequestDefaults::new(endpoint.default_model.as_deref(), &endpoint.default_parameters),
                    guard: Guard::new(endpoint, metrics, &slug, endpoint_slug)
                        .map_err(|e| fail(format!("endpoint {endpoint_slug}: {e}")))?,
                    models,
                    names,
                },
            );
        }

        let project_slug: Arc<str> = slug.as_str().into();
        keys.reserve(config.keys.iter().map(|k| k.hashes.len()).sum());
        let mut project_keys = Vec::with_capacity(config.keys.len());
        for (index, key) in config.keys.iter().enumerate() {
            let state_id = format!("{slug}\u{0}{}", key.id);
            let state = old_keys.get(&state_id).cloned().unwrap_or_default();
            live_keys.insert(state_id, state.clone());
            for hash in &key.hashes {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(&hash.sha256, &mut bytes)
                    .map_err(|_| fail(format!("key {}: bad hash", key.id)))?;
                let previous = keys.insert(
                    bytes,
                    KeyRef { project: project_slug.clone(), index: index as u32, hash_expires: hash.expires_at },
                );
                if previous.is_some() {
                    return Err(fail(format!("key {}: its key material also opens another key", key.id)));
                }
            }
            let mut cidrs = Vec::new();
            for cidr in key.allowed_cidrs.iter().flatten() {
                cidrs.push(cidr.parse().map_err(|_| fail(format!("key {}: bad CIDR {cidr:?}", key.id)))?);
            }
            project_keys.push(Key {
                id: key.id.as_str().into(),
                scopes: key.scopes.clone(),
                endpoints: key.endpoints.as_ref().map(|list| list.iter().cloned().collect()),
                models: key.models.as_ref().map(|list| list.iter().cloned().collect()),
                tier: key.tier.as_deref().map(tier).transpose()?,
                expires_at: key.expires_at,
                cidrs,
                budget: key.budget.clone(),
                state,
            });
        }

        summaries.push(ProjectSummary {
            slug: slug.clone(),
            config_hash: config.content_hash().map_err(|e| fail(e.to_string()))?,
            endpoints: endpoints.len(),
            keys: project_keys.len(),
        });
        let project = Project {
            slug: project_slug,
            namespace: config.project.namespace.as_str().into(),
            tiers: config.tiers.keys().map(|name| name.as_str().into()).collect(),
            default_tier: tier(&config.project.default_tier)?,
            endpoints,
            keys: project_keys,
            servers: config
                .providers
                .iter()
                .filter_map(|(id, provider)| Some((id.clone(), pod_host(provider.base_url.as_deref()?).to_owned())))
                .collect(),
            signing: config.project.signing.clone(),
            console: config.project.console,
            record_content: config.project.tracing.record_content,
            jwt: config.project.jwt.as_ref().map(|jwt| {
                let keys = match &jwt.jwks {
                    JwksConfig::Keys(keys) => KeySource::Fixed(Arc::new(KeySet::new(keys))),
                    JwksConfig::Url { url, refresh_seconds } => {
                        live_jwks.push((slug.clone(), url.clone(), *refresh_seconds));
                        KeySource::Fetched(registries.jwks.fetcher(&slug, url, *refresh_seconds))
                    }
                };
                let subjects = old_subjects.get(&slug).cloned().unwrap_or_default();
                live_subjects.insert(slug.clone(), subjects.clone());
                let tiers = if jwt.tier_claim.is_some() {
                    tiers.iter().map(|(name, tier)| ((*name).to_owned(), tier.clone())).collect()
                } else {
                    FastMap::default()
                };
                ProjectJwt { config: jwt.clone(), keys, subjects, tiers }
            }),
        };
        if projects.insert(slug.clone(), project).is_some() {
            return Err(fail("two configurations for this project".into()));
        }
    }

    *registries.keys.lock().unwrap_or_else(PoisonError::into_inner) = live_keys;
    *registries.retries.lock().unwrap_or_else(PoisonError::into_inner) = live_retries;
    *registries.subjects.lock().unwrap_or_else(PoisonError::into_inner) = live_subjects;
    registries.jwks.retain(&live_jwks);
    let live: Vec<&str> = live_sims.iter().map(String::as_str).collect();
    registries.upstreams.retain_simulators(&live);
    registries.upstreams.retain_clients(configs.iter().flat_map(|config| config.providers.values()));
    registries.backends.retain(&live_backends);
    registries.scrapes.sync(&live_pods, metrics);
    let signs_responses = projects.values().any(|p| !p.signing.is_empty());
    Ok(Snapshot { generation, loaded_at: Timestamp::now(), projects, keys, summaries, signs_responses })
}

/// A pod's host and port (its base URL's authority), to name it in `x-sluice-backend`.
pub fn pod_host(pod: &str) -> &str {
    let rest = pod.split_once("://").map_or(pod, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// The snapshot of `tests/fixtures/stages.yaml`, for the stages' unit tests.
#[cfg(test)]
pub fn test_snapshot() -> Snapshot {
    let manifests = include_str!("../tests/fixtures/stages.yaml");
    let loaded = sluice_crds::manifests::load_str(std::path::Path::new("stages.yaml"), manifests).expect("manifests");
    let configs = sluice_crds::compile::compile(&loaded.objects, &sluice_crds::compile::CompileOptions::default())
        .expect("compiles");
    build(&configs, 1, &Registries::default(), &Metrics::new()).expect("snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_config(addresses: &[&str]) -> Vec<GatewayConfig> {
        let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: basic}}\nspec: {{}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {{name: t, namespace: t}}\nspec: {{slug: t, defaultTier: basic}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: pool, namespace: t}}\n\
spec: {{type: openai, addresses: [{}], models: [{{name: m}}]}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: t}}\n\
spec: {{slug: chat, models: [{{name: chat, backends: [{{providerRef: {{name: pool}}, model: m}}]}}]}}\n",
            list.join(", ")
        );
        let loaded = sluice_crds::manifests::load_str(std::path::Path::new("pool.yaml"), &text).expect("manifests");
        sluice_crds::compile::compile(&loaded.objects, &sluice_crds::compile::CompileOptions::default())
            .expect("compiles")
    }

    fn backends(snapshot: &Snapshot) -> &[Backend] {
        &snapshot.projects["t"].endpoints["chat"].models[0].backends
    }

    #[test]
    fn a_pool_expands_into_one_backend_per_pod_and_forgets_pods_that_leave() {
        let (registries, metrics) = (Registries::default(), Metrics::new());
        let configs = pool_config(&["http://10.0.0.2:8000/v1", "http://10.0.0.1:8000/v1/"]);
        assert_eq!(configs[0].providers["t/pool"].pods, ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]);
        let first = build(&configs, 1, &registries, &metrics).expect("snapshot");
        let labels: Vec<&str> = backends(&first).iter().map(|b| &*b.label).collect();
        assert_eq!(labels, ["t/pool/m@10.0.0.1:8000", "t/pool/m@10.0.0.2:8000"]);
        let keys: Vec<BackendKey> = backends(&first).iter().map(|b| b.state.key().clone()).collect();
        assert_eq!(keys[0].pod.as_deref(), Some("http://10.0.0.1:8000/v1"));
        assert!(backends(&first).iter().all(|b| b.state.pod.is_some()));
        assert_eq!(registries.backends.views().len(), 2);

        // A reload keeping pod 2 keeps its state; pod 1 is forgotten.
        let second = build(&pool_config(&["http://10.0.0.2:8000/v1"]), 2, &registries, &metrics).expect("snapshot");
        assert_eq!(backends(&second).len(), 1);
        assert!(Arc::ptr_eq(&backends(&first)[1].state, &backends(&second)[0].state), "same pod, same state");
        let views = registries.backends.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].pod.as_deref(), Some("http://10.0.0.2:8000/v1"));
        // Named again, pod 1 starts afresh.
        let third = build(&configs, 3, &registries, &metrics).expect("snapshot");
        assert!(!Arc::ptr_eq(&backends(&first)[0].state, &backends(&third)[0].state));
    }

    #[test]
    fn a_config_from_before_the_protocol_kinds_still_serves_them_with_chat() {
        for (index, kind) in ApiKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index, "Endpoint::serves indexes by discriminant");
        }
        let mut configs = pool_config(&["http://10.0.0.1:8000/v1"]);
        configs[0].endpoints.get_mut("chat").expect("endpoint").apis = vec![ApiKind::ChatCompletions];
        let snapshot = build(&configs, 1, &Registries::default(), &Metrics::new()).expect("snapshot");
        let endpoint = &snapshot.projects["t"].endpoints["chat"];
        let served: Vec<ApiKind> = ApiKind::ALL.into_iter().filter(|kind| endpoint.serves(*kind)).collect();
        assert_eq!(served, [ApiKind::ChatCompletions, ApiKind::Messages, ApiKind::Responses, ApiKind::Gemini]);
        assert!(endpoint.defaults.is_empty());
    }

    #[test]
    fn pod_hosts_name_pods_in_headers() {
        assert_eq!(pod_host("http://10.0.0.1:8000/v1"), "10.0.0.1:8000");
        assert_eq!(pod_host("https://[fd00::1]:443"), "[fd00::1]:443");
        assert_eq!(pod_host("odd"), "odd");
    }
}
