//! The compiler: a set of Sluice objects in, one [`GatewayConfig`] per Project out.
//!
//! Pure and deterministic: the same objects (in any order) give byte-identical configurations.
//! Every problem is reported at once, each naming the object and the field, so one run of the
//! compiler (or one reconcile) tells the user everything to fix.
//!
//! [`compile_project`] is strict: any problem, no configuration. [`compile_partially`] is what
//! the operator serves from: it leaves out the Endpoints and ApiKeys with problems and serves the
//! rest, in the same one pass over the objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    ApiKey, ApiKeySpec, ApiKind, Capability, DEFAULT_JWKS_REFRESH_SECONDS, DNS_LABEL_PATTERN, Endpoint, HashedKey,
    ModelPricing, PodScheme, Project, Provider, ProviderRef, ProviderTls, ProviderType, RESERVED_ENDPOINT_SLUGS,
    ServiceTier, default_secret_key,
};
use crate::config::{
    AliasConfig, BackendConfig, BudgetConfig, CONFIG_API_VERSION, CONFIG_KIND, ClientCertificate, ContentRulesConfig,
    Credential, EndpointConfig, GatewayConfig, JwksConfig, JwtConfig, KeyConfig, KeyHash, ModelConfig,
    PodMetricsConfig, PricingConfig, ProjectConfig, ProviderConfig, ProviderModelConfig, RedactionConfig,
    ServiceConfig, SigningSecretConfig, SimulationConfig, TierConfig, TracingConfig, UpstreamTls,
    default_parameter_problems, hash_key,
};
use crate::objects::{ConfigMapData, Object, ObjectRef, SecretData, namespace_of};
use crate::upstream_tls::{self, ClientCertificateError};

/// Namespace of the platform's shared Providers unless told otherwise.
pub const DEFAULT_SHARED_NAMESPACE: &str = "sluice-system";

/// Secret data keys of a key Secret: the current key (unless `secretRef.key` names another), and
/// during a rotation the previous key with the instant it stops working.
pub const PREVIOUS_KEY_FIELD: &str = "previousKey";
/// See [`PREVIOUS_KEY_FIELD`].
pub const PREVIOUS_KEY_EXPIRES_FIELD: &str = "previousKeyExpiresAt";

/// Shortest key material accepted (bring-your-own keys included).
pub const MIN_KEY_LENGTH: usize = 16;

/// How the compiler treats context it cannot see in the objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Namespace of platform-wide Providers, searched after the referring object's own.
    pub shared_namespace: String,
    /// Where an ApiKey without `secretRef` gets its key material.
    pub generated_keys: GeneratedKeys,
    /// Whether a Provider may name a Service (whose pods the operator resolves).
    pub services: ServiceEndpoints,
    /// Leave out keys and key hashes that expired before this instant. `None` keeps them all (the
    /// gateway checks expiry on every request anyway).
    pub now: Option<Timestamp>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            shared_namespace: DEFAULT_SHARED_NAMESPACE.to_owned(),
            generated_keys: GeneratedKeys::Unavailable,
            services: ServiceEndpoints::Unavailable,
            now: None,
        }
    }
}

/// Where ApiKeys without `secretRef` find their key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedKeys {
    /// No operator generates keys (standalone): such an ApiKey is an error.
    Unavailable,
    /// The operator generates keys into the Secret named by [`generated_key_secret_name`]; until
    /// that Secret exists the key is left out of the configuration.
    Operator,
}

/// Who turns a Provider's `spec.service` into pod addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceEndpoints {
    /// Nobody (standalone): a Provider naming a Service is an error.
    Unavailable,
    /// The operator: the compiled Provider carries the Service and no pods, and the operator
    /// writes the ready addresses of the Service's EndpointSlices into `pods`
    /// ([`crate::config::ServiceConfig::pod_url`]).
    Operator,
}

/// The Secret (in the ApiKey's namespace) that holds an operator-generated key.
pub fn generated_key_secret_name(apikey_name: &str) -> String {
    const PREFIX: &str = "sluice-key-";
    const MAX: usize = 253;
    if PREFIX.len() + apikey_name.len() <= MAX {
        format!("{PREFIX}{apikey_name}")
    } else {
        // Object names may be 253 characters; keep the result a valid name and still unique.
        let hash = hash_key(apikey_name.as_bytes());
        let keep = MAX - PREFIX.len() - 17;
        format!("{PREFIX}{}-{}", &apikey_name[..keep], &hash[..16])
    }
}

/// One problem in the input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CompileError {
    /// The object at fault.
    pub object: ObjectRef,
    /// JSON path of the field at fault (`spec.models[0].backends[1].providerRef`).
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// Every problem found, sorted by object and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem{} in the configuration:", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

/// Compiles every Project in `objects`. Objects that belong to no Project (an Endpoint in a
/// namespace without one) are errors too.
pub fn compile(objects: &[Object], options: &CompileOptions) -> Result<Vec<GatewayConfig>, CompileErrors> {
    let index = Index::new(objects);
    let mut errors = index.duplicates.clone();
    let mut configs = Vec::new();

    let mut slugs: BTreeMap<&str, ObjectRef> = BTreeMap::new();
    for (namespace, projects) in &index.projects {
        if let [first, rest @ ..] = projects.as_slice() {
            for extra in rest {
                errors.push(CompileError {
                    object: ObjectRef { kind: "Project", namespace: Some(namespace.clone()), name: extra.name_any() },
                    field: "metadata.namespace".into(),
                    message: format!(
                        "namespace {namespace} already has Project {}; one Project per namespace",
                        first.name_any()
                    ),
                });
            }
            let me = ObjectRef { kind: "Project", namespace: Some(namespace.clone()), name: first.name_any() };
            if let Some(owner) = slugs.get(first.spec.slug.as_str()) {
                errors.push(CompileError {
                    object: me,
                    field: "spec.slug".into(),
                    message: format!("{:?} is already used by {owner}", first.spec.slug),
                });
                continue;
            }
            slugs.insert(&first.spec.slug, me);
            match compile_with_index(first, &index, options) {
                Ok(config) => configs.push(config),
                Err(mut found) => errors.append(&mut found),
            }
        }
    }
    for (namespace, endpoints) in &index.endpoints {
        if !index.projects.contains_key(namespace) {
            for endpoint in endpoints {
                errors.push(orphan(ObjectRef {
                    kind: "Endpoint",
                    namespace: Some(namespace.clone()),
                    name: endpoint.name_any(),
                }));
            }
        }
    }
    for (namespace, keys) in &index.apikeys {
        if !index.projects.contains_key(namespace) {
            for key in keys {
                errors.push(orphan(ObjectRef {
                    kind: "ApiKey",
                    namespace: Some(namespace.clone()),
                    name: key.name_any(),
                }));
            }
        }
    }
    // Providers no project uses still deserve their errors.
    for provider in index.providers.values() {
        let mut scratch = Vec::new();
        provider_config(provider, &index, options, &mut scratch);
        errors.extend(scratch);
    }

    configs.sort_by(|a, b| a.project.slug.cmp(&b.project.slug));
    finish(errors).map(|()| configs)
}

/// Compiles one Project from the objects around it (its namespace's Endpoints and ApiKeys, the
/// Providers, ServiceTiers and Secrets they reference). Problems in objects this Project does not
/// use are not reported, so one tenant's mistakes never block another's configuration.
pub fn compile_project(
    project: &Project,
    objects: &[Object],
    options: &CompileOptions,
) -> Result<GatewayConfig, CompileErrors> {
    let index = Index::new(objects);
    compile_with_index(project, &index, options).map_err(|errors| CompileErrors(sorted(errors)))
}

fn orphan(object: ObjectRef) -> CompileError {
    let namespace = object.namespace.clone().unwrap_or_default();
    CompileError {
        object,
        field: "metadata.namespace".into(),
        message: format!(
            "no Project in namespace {namespace}; Endpoints and ApiKeys belong to the Project of their namespace"
        ),
    }
}

fn sorted(mut errors: Vec<CompileError>) -> Vec<CompileError> {
    errors.sort();
    errors.dedup();
    errors
}

fn finish(errors: Vec<CompileError>) -> Result<(), CompileErrors> {
    if errors.is_empty() { Ok(()) } else { Err(CompileErrors(sorted(errors))) }
}

/// The input, grouped for lookups.
struct Index<'a> {
    projects: BTreeMap<String, Vec<&'a Project>>,
    endpoints: BTreeMap<String, Vec<&'a Endpoint>>,
    apikeys: BTreeMap<String, Vec<&'a ApiKey>>,
    providers: BTreeMap<(String, String), &'a Provider>,
    tiers: BTreeMap<String, &'a ServiceTier>,
    secrets: HashMap<(String, String), &'a SecretData>,
    config_maps: HashMap<(String, String), &'a ConfigMapData>,
    duplicates: Vec<CompileError>,
}

impl<'a> Index<'a> {
    fn new(objects: &'a [Object]) -> Self {
        let mut index = Index {
            projects: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            apikeys: BTreeMap::new(),
            providers: BTreeMap::new(),
            tiers: BTreeMap::new(),
            secrets: HashMap::new(),
            config_maps: HashMap::new(),
            duplicates: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for object in objects {
            let id = object.object_ref();
            if !seen.insert(id.clone()) {
                index.duplicates.push(CompileError {
                    object: id,
                    field: "metadata.name".into(),
                    message: "defined more than once".into(),
                });
                continue;
            }
            match object {
                Object::Project(p) => index.projects.entry(namespace_of(p)).or_default().push(p),
                Object::Endpoint(e) => index.endpoints.entry(namespace_of(e)).or_default().push(e),
                Object::ApiKey(k) => index.apikeys.entry(namespace_of(k)).or_default().push(k),
                Object::Provider(p) => {
                    index.providers.insert((namespace_of(p), p.name_any()), p);
                }
                Object::ServiceTier(t) => {
                    index.tiers.insert(t.name_any(), t);
                }
                Object::Secret(s) => {
                    index.secrets.insert((s.namespace.clone(), s.name.clone()), s);
                }
                Object::ConfigMap(c) => {
                    index.config_maps.insert((c.namespace.clone(), c.name.clone()), c);
                }
            }
        }
        // Deterministic order whatever the input order.
        for list in index.projects.values_mut() {
            list.sort_by_key(|p| p.name_any());
        }
        for list in index.endpoints.values_mut() {
            list.sort_by_key(|e| e.name_any());
        }
        for list in index.apikeys.values_mut() {
            list.sort_by_key(|k| k.name_any());
        }
        index
    }

    fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Result<&'a [u8], String> {
        let secret = self
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| format!("no Secret {name:?} in namespace {namespace}"))?;
        secret.data.get(key).map(Vec::as_slice).ok_or_else(|| format!("Secret {namespace}/{name} has no key {key:?}"))
    }

    fn config_map_value(&self, namespace: &str, name: &str, key: &str) -> Result<&'a [u8], String> {
        let config_map = self
            .config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| format!("no ConfigMap {name:?} in namespace {namespace}"))?;
        config_map
            .data
            .get(key)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("ConfigMap {namespace}/{name} has no key {key:?}"))
    }
}

/// Collects problems for one object.
struct Problems<'e> {
    object: ObjectRef,
    errors: &'e mut Vec<CompileError>,
}

impl Problems<'_> {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CompileError { object: self.object.clone(), field: field.into(), message: message.into() });
    }
}

/// Whether `value` is a DNS label (a slug, an object name of at most 63 characters).
pub fn is_dns_label(value: &str) -> bool {
    // Same rule as DNS_LABEL_PATTERN, without a regex engine on this path.
    debug_assert_eq!(DNS_LABEL_PATTERN, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn compile_with_index(
    project: &Project,
    index: &Index<'_>,
    options: &CompileOptions,
) -> Result<GatewayConfig, Vec<CompileError>> {
    let mut pass = Pass::new(project, index, options);
    // Strict: a missing Provider is an error of the Endpoint (a broken one is reported on the
    // Provider itself).
    let missing = pass.dropped.drain(..).filter(|d| !d.provider_exists).map(|d| d.problem);
    pass.errors.extend(missing);
    if !pass.errors.is_empty() {
        return Err(pass.errors);
    }
    let nothing_left_out = BTreeSet::new();
    Ok(pass.into_config(index, &nothing_left_out))
}

/// What a partial compile gives: the configuration of everything that compiles, what was wrong
/// with the rest, and what was left out for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartialCompile {
    /// `None` when the Project itself has problems.
    pub config: Option<GatewayConfig>,
    /// Problems by object, each `field: message`, sorted.
    pub problems: BTreeMap<ObjectRef, Vec<String>>,
    /// Endpoints and ApiKeys left out of the configuration.
    pub left_out: BTreeSet<ObjectRef>,
}

/// Compiles `project` as [`compile_project`] does, but leaves out each Endpoint and ApiKey with
/// problems (and each ApiKey whose scope then names an Endpoint or model no longer served) and
/// serves the rest. A backend whose Provider is missing or has problems is left out of its model
/// alone: the model is served by its other backends, the Endpoint by its other models, and only
/// an Endpoint left with no model at all is left out; each dropped backend is a problem of its
/// Endpoint. Only problems in the
/// Project itself give no configuration. One pass: every object is checked once; only a key's
/// scope is checked a second time, against the Endpoints served.
pub fn compile_partially(project: &Project, objects: &[Object], options: &CompileOptions) -> PartialCompile {
    let index = Index::new(objects);
    let mut pass = Pass::new(project, &index, options);

    let mut faulty: BTreeSet<ObjectRef> = pass.errors.iter().map(|e| e.object.clone()).collect();
    // An Endpoint whose Providers are all gone has no model left to serve.
    let emptied = pass.endpoints.iter().filter(|e| {
        e.config.as_ref().is_some_and(|c| c.models.is_empty())
            && pass.dropped.iter().any(|d| d.problem.object == e.object)
    });
    faulty.extend(emptied.map(|e| e.object.clone()));
    let fatal = faulty.iter().any(|o| !matches!(o.kind, "Endpoint" | "ApiKey" | "Provider"));
    let mut left_out = BTreeSet::new();
    if !fatal {
        left_out.extend(faulty.into_iter().filter(|o| matches!(o.kind, "Endpoint" | "ApiKey")));
        // A key limited to Endpoints or models left out is left out too.
        let served: BTreeMap<String, EndpointConfig> = pass
            .endpoints
            .iter()
            .filter(|e| !left_out.contains(&e.object))
            .filter_map(|e| Some((e.endpoint.spec.slug.clone(), e.config.clone()?)))
            .collect();
        let mut scope_errors = Vec::new();
        for key in pass.keys.iter().filter(|k| !left_out.contains(&k.object)) {
            let mut problems = Problems { object: key.object.clone(), errors: &mut scope_errors };
            check_key_scope(key.apikey, &served, &mut problems);
        }
        left_out.extend(scope_errors.iter().map(|e| e.object.clone()));
        pass.errors.append(&mut scope_errors);
    }

    let mut problems: BTreeMap<ObjectRef, Vec<String>> = BTreeMap::new();
    for error in pass.errors.iter().chain(pass.dropped.iter().map(|d| &d.problem)) {
        problems.entry(error.object.clone()).or_default().push(format!("{}: {}", error.field, error.message));
    }
    for list in problems.values_mut() {
        list.sort();
        list.dedup();
    }
    let config = (!fatal).then(|| pass.into_config(&index, &left_out));
    PartialCompile { config, problems, left_out }
}

/// One pass over a Project and the objects around it: what each object compiles to, and every
/// problem. The strict and the partial compile both read it.
struct Pass<'a> {
    project: &'a Project,
    namespace: String,
    errors: Vec<CompileError>,
    /// Endpoints of the namespace by name; `config` is `None` for one whose slug another took.
    endpoints: Vec<EndpointPass<'a>>,
    /// ApiKeys of the namespace by name; `config` is `None` for one with problems, an expired
    /// one, and one whose generated key is not there yet.
    keys: Vec<KeyPass<'a>>,
    /// Providers the Endpoints name, by id; the config is `None` when the Provider has problems.
    providers: BTreeMap<String, (&'a Provider, Option<ProviderConfig>)>,
    /// Backends left out of their model because their Provider is missing or has problems.
    dropped: Vec<DroppedBackend>,
    /// The response-signing secrets, current first.
    signing: Vec<SigningSecretConfig>,
    /// JWT bearer authentication.
    jwt: Option<JwtConfig>,
}

/// A backend whose Provider is missing or has problems: the partial compile serves its model
/// with the other backends (and its Endpoint with the other models), and reports it.
struct DroppedBackend {
    problem: CompileError,
    /// The Provider exists (its own problems are reported on it).
    provider_exists: bool,
}

/// The Providers an Endpoint pass resolves, each compiled once.
struct ProviderPass<'p, 'a> {
    known: &'p mut BTreeMap<String, (&'a Provider, Option<ProviderConfig>)>,
    /// The problems of the Providers themselves.
    errors: &'p mut Vec<CompileError>,
    options: &'p CompileOptions,
}

impl<'a> ProviderPass<'_, 'a> {
    /// Whether Provider `id` compiles.
    fn usable(&mut self, id: &str, provider: &'a Provider, index: &Index<'_>) -> bool {
        if !self.known.contains_key(id) {
            let config = provider_config(provider, index, self.options, self.errors);
            self.known.insert(id.to_owned(), (provider, config));
        }
        self.known.get(id).is_some_and(|(_, config)| config.is_some())
    }
}

struct EndpointPass<'a> {
    endpoint: &'a Endpoint,
    object: ObjectRef,
    config: Option<EndpointConfig>,
    /// The Providers its backends use, by id.
    providers: BTreeMap<String, &'a Provider>,
}

struct KeyPass<'a> {
    apikey: &'a ApiKey,
    object: ObjectRef,
    config: Option<KeyConfig>,
}

impl<'a> Pass<'a> {
    fn new(project: &'a Project, index: &Index<'a>, options: &CompileOptions) -> Self {
        let namespace = namespace_of(project);
        let mut errors = Vec::new();
        let signing;
        let jwt;
        {
            let mut problems = Problems {
                object: ObjectRef { kind: "Project", namespace: Some(namespace.clone()), name: project.name_any() },
                errors: &mut errors,
            };
            if !is_dns_label(&project.spec.slug) {
                problems.add(
                    "spec.slug",
                    format!(
                        "{:?} is not a DNS label (lowercase letters, digits and '-', at most 63)",
                        project.spec.slug
                    ),
                );
            }
            check_tier(&project.spec.default_tier, "spec.defaultTier", index, &mut problems);
            signing = signing_config(project, index, options, &mut problems);
            jwt = jwt_config(project, index, &mut problems);
        }

        let mut endpoints = Vec::new();
        let mut endpoint_owner: BTreeMap<String, String> = BTreeMap::new();
        let mut providers = BTreeMap::new();
        let mut provider_errors = Vec::new();
        let mut dropped = Vec::new();
        for endpoint in index.endpoints.get(&namespace).into_iter().flatten().copied() {
            let object = ObjectRef { kind: "Endpoint", namespace: Some(namespace.clone()), name: endpoint.name_any() };
            let mut problems = Problems { object: object.clone(), errors: &mut errors };
            let slug = &endpoint.spec.slug;
            let mut used = BTreeMap::new();
            let config = if let Some(owner) = endpoint_owner.get(slug) {
                problems.add("spec.slug", format!("{slug:?} is already used by Endpoint {namespace}/{owner}"));
                None
            } else {
                endpoint_owner.insert(slug.clone(), endpoint.name_any());
                let mut resolver = ProviderPass { known: &mut providers, errors: &mut provider_errors, options };
                let mut context = EndpointContext {
                    index,
                    options,
                    providers: &mut resolver,
                    used: &mut used,
                    dropped: &mut dropped,
                };
                endpoint_config(endpoint, &mut context, &mut problems)
            };
            endpoints.push(EndpointPass { endpoint, object, config, providers: used });
        }
        errors.append(&mut provider_errors);
        let scope: BTreeMap<String, EndpointConfig> =
            endpoints.iter().filter_map(|e| Some((e.endpoint.spec.slug.clone(), e.config.clone()?))).collect();

        let mut keys = Vec::new();
        let mut hash_owner: HashMap<String, String> = HashMap::new();
        for apikey in index.apikeys.get(&namespace).into_iter().flatten().copied() {
            let object = ObjectRef { kind: "ApiKey", namespace: Some(namespace.clone()), name: apikey.name_any() };
            let mut problems = Problems { object: object.clone(), errors: &mut errors };
            let config = key_config(apikey, &scope, index, options, &mut problems);
            for hash in config.iter().flat_map(|key| &key.hashes) {
                if let Some(other) = hash_owner.insert(hash.sha256.clone(), object_id(apikey))
                    && other != object_id(apikey)
                {
                    problems.add("spec.secretRef", format!("the same key material is already used by ApiKey {other}"));
                }
            }
            keys.push(KeyPass { apikey, object, config });
        }

        Pass { project, namespace, errors, endpoints, keys, providers, dropped, signing, jwt }
    }

    /// The configuration of everything but `left_out`.
    fn into_config(self, index: &Index<'_>, left_out: &BTreeSet<ObjectRef>) -> GatewayConfig {
        let project = self.project;
        let served_endpoints: Vec<EndpointPass<'_>> =
            self.endpoints.into_iter().filter(|e| !left_out.contains(&e.object)).collect();
        let served_keys: Vec<KeyPass<'_>> = self.keys.into_iter().filter(|k| !left_out.contains(&k.object)).collect();

        // Every tier a served object names (and that exists: one that does not is a problem);
        // every tier when tokens may name theirs in a claim.
        let claimed_tiers = self.jwt.as_ref().is_some_and(|jwt| jwt.tier_claim.is_some());
        let tiers = std::iter::once(&project.spec.default_tier)
            .chain(served_endpoints.iter().filter_map(|e| e.endpoint.spec.tier.as_ref()))
            .chain(served_keys.iter().filter_map(|k| k.apikey.spec.tier.as_ref()))
            .chain(index.tiers.keys().filter(|_| claimed_tiers))
            .filter_map(|name| index.tiers.get(name).map(|tier| (name.clone(), tier_config(tier))))
            .collect();
        let mut providers = self.providers;
        let providers = served_endpoints
            .iter()
            .flat_map(|e| e.providers.keys())
            .filter_map(|id| Some((id.clone(), providers.remove(id)?.1?)))
            .collect();
        let endpoints: BTreeMap<String, EndpointConfig> =
            served_endpoints.into_iter().filter_map(|e| Some((e.endpoint.spec.slug.clone(), e.config?))).collect();
        let mut keys: Vec<KeyConfig> = served_keys.into_iter().filter_map(|k| k.config).collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        GatewayConfig {
            api_version: CONFIG_API_VERSION.to_owned(),
            kind: CONFIG_KIND.to_owned(),
            project: ProjectConfig {
                slug: project.spec.slug.clone(),
                namespace: self.namespace,
                name: project.name_any(),
                default_tier: project.spec.default_tier.clone(),
                signing: self.signing,
                jwt: self.jwt,
                console: project.spec.console.as_ref().is_none_or(|console| console.enabled),
                tracing: TracingConfig {
                    record_content: project.spec.tracing.as_ref().is_some_and(|t| t.record_content),
                },
            },
            tiers,
            providers,
            endpoints,
            keys,
        }
    }
}

/// Secret data keys of a response-signing Secret: the current secret, and during a rotation the
/// previous one with the instant it stops signing.
pub const SIGNING_SECRET_FIELD: &str = "secret";
/// See [`SIGNING_SECRET_FIELD`].
pub const PREVIOUS_SIGNING_SECRET_FIELD: &str = "previousSecret";
/// See [`SIGNING_SECRET_FIELD`].
pub const PREVIOUS_SIGNING_EXPIRES_FIELD: &str = "previousSecretExpiresAt";
/// Shortest signing secret accepted: 32 characters (a 128-bit secret in hex, with room).
pub const MIN_SIGNING_SECRET_LENGTH: usize = 32;

/// The Secret (in the Project's namespace) that holds an operator-generated signing secret.
pub fn generated_signing_secret_name(project_name: &str) -> String {
    const PREFIX: &str = "sluice-signing-";
    const MAX: usize = 253;
    if PREFIX.len() + project_name.len() <= MAX {
        format!("{PREFIX}{project_name}")
    } else {
        let hash = hash_key(project_name.as_bytes());
        format!("{PREFIX}{}-{}", &project_name[..MAX - PREFIX.len() - 17], &hash[..16])
    }
}

/// The Project's response-signing secrets from the Secret `spec.signing` names (or the
/// operator generated).
fn signing_config(
    project: &Project,
    index: &Index<'_>,
    options: &CompileOptions,
    problems: &mut Problems<'_>,
) -> Vec<SigningSecretConfig> {
    let Some(spec) = &project.spec.signing else { return Vec::new() };
    let namespace = namespace_of(project);
    let field = "spec.signing.secretName";
    let name = &match (&spec.secret_name, options.generated_keys) {
        (Some(name), _) => name.clone(),
        (None, GeneratedKeys::Unavailable) => {
            problems.add(field, "required here: without the operator nothing generates signing secrets");
            return Vec::new();
        }
        (None, GeneratedKeys::Operator) => {
            let name = generated_signing_secret_name(&project.name_any());
            if !index.secrets.contains_key(&(namespace.clone(), name.clone())) {
                // Not generated yet (the Project controller writes it first): unsigned until it is.
                return Vec::new();
            }
            name
        }
    };
    let secret = |key: &str| -> Result<String, String> {
        let bytes = index.secret_value(&namespace, name, key)?;
        let text = std::str::from_utf8(bytes)
            .ok()
            .map(str::trim)
            .filter(|t| t.len() >= MIN_SIGNING_SECRET_LENGTH && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                format!(
                    "Secret {namespace}/{name} key {key:?} must hold at least {MIN_SIGNING_SECRET_LENGTH} printable \
                     characters without spaces (e.g. `openssl rand -hex 32`)"
                )
            })?;
        Ok(text.to_owned())
    };
    let mut signing = Vec::new();
    match secret(SIGNING_SECRET_FIELD) {
        Ok(current) => signing.push(SigningSecretConfig { secret: Credential::new(current), expires_at: None }),
        Err(message) => problems.add(field, message),
    }
    if index.secret_value(&namespace, name, PREVIOUS_SIGNING_SECRET_FIELD).is_ok() {
        let expiry = index
            .secret_value(&namespace, name, PREVIOUS_SIGNING_EXPIRES_FIELD)
            .ok()
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .and_then(|text| text.trim().parse::<Timestamp>().ok());
        match (secret(PREVIOUS_SIGNING_SECRET_FIELD), expiry) {
            (Ok(previous), Some(until)) => {
                if options.now.is_none_or(|now| until > now) {
                    signing.push(SigningSecretConfig { secret: Credential::new(previous), expires_at: Some(until) });
                }
            }
            (Err(message), _) => problems.add(field, message),
            (Ok(_), None) => problems.add(
                field,
                format!(
                    "Secret {namespace}/{name} has {PREVIOUS_SIGNING_SECRET_FIELD:?} without a valid RFC 3339 \
                     {PREVIOUS_SIGNING_EXPIRES_FIELD:?}"
                ),
            ),
        }
    }
    signing
}

/// The Project's JWT settings, with the keys of a JWKS Secret read and checked now (a changed
/// Secret recompiles the configuration: that is how its keys rotate).
fn jwt_config(project: &Project, index: &Index<'_>, problems: &mut Problems<'_>) -> Option<JwtConfig> {
    let spec = project.spec.jwt.as_ref()?;
    let namespace = namespace_of(project);
    let before = problems.errors.len();
    if spec.issuer.trim().is_empty() {
        problems.add("spec.jwt.issuer", "must not be empty");
    }
    if spec.audiences.is_empty() || spec.audiences.iter().any(|a| a.trim().is_empty()) {
        problems.add("spec.jwt.audiences", "name at least one audience, none empty");
    }
    if spec.algorithms.is_empty() {
        problems.add("spec.jwt.algorithms", "name at least one algorithm");
    }
    if spec.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
        problems.add("spec.jwt.clockSkewSeconds", format!("at most {MAX_CLOCK_SKEW_SECONDS}"));
    }
    let jwks = match (&spec.jwks.secret_ref, &spec.jwks.url) {
        (Some(reference), None) => {
            let field = "spec.jwt.jwks.secretRef";
            let keys = index
                .secret_value(&namespace, &reference.name, &reference.key)
                .and_then(crate::jwks::parse)
                .map_err(|message| problems.add(field, message))
                .ok()?;
            let usable = keys.keys.iter().any(|key| spec.algorithms.iter().any(|alg| key.fits(*alg)));
            if !usable {
                problems.add(field, "no key of the JWKS fits any of spec.jwt.algorithms");
            }
            JwksConfig::Keys(keys.keys)
        }
        (None, Some(url)) => {
            if let Err(message) = check_jwks_url(url) {
                problems.add("spec.jwt.jwks.url", message);
            }
            let refresh_seconds = spec.jwks.refresh_seconds.unwrap_or(DEFAULT_JWKS_REFRESH_SECONDS).max(1);
            JwksConfig::Url { url: url.clone(), refresh_seconds }
        }
        _ => {
            problems.add("spec.jwt.jwks", "set exactly one of secretRef and url");
            return None;
        }
    };
    if problems.errors.len() > before {
        return None;
    }
    let mut default_scopes = spec.default_scopes.clone();
    default_scopes.sort();
    default_scopes.dedup();
    Some(JwtConfig {
        issuer: spec.issuer.clone(),
        audiences: spec.audiences.clone(),
        algorithms: spec.algorithms.clone(),
        clock_skew_seconds: spec.clock_skew_seconds,
        scopes_claim: spec.scopes_claim.clone(),
        default_scopes,
        tier_claim: spec.tier_claim.clone(),
        subject_claim: spec.subject_claim.clone(),
        budget: spec.budget.as_ref().map(|b| BudgetConfig { limit_usd: b.limit_usd, period: b.period }),
        jwks,
    })
}

/// Most clock skew a Project may tolerate on JWT times, in seconds.
pub const MAX_CLOCK_SKEW_SECONDS: u32 = 600;

/// A JWKS URL is `https://`, or `http://` to a loopback address (a sidecar, a test).
fn check_jwks_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} is not an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { Ok(()) } else { Err(format!("{url:?}: plain http is accepted only to a loopback address")) }
}

/// `<namespace>/<name>` of an ApiKey, as configurations name keys.
fn object_id<K: ResourceExt>(object: &K) -> String {
    format!("{}/{}", namespace_of(object), object.name_any())
}

fn check_tier(name: &str, field: &str, index: &Index<'_>, problems: &mut Problems<'_>) {
    if !index.tiers.contains_key(name) {
        problems.add(field, format!("no ServiceTier {name:?}"));
    }
}

fn tier_config(tier: &ServiceTier) -> TierConfig {
    let spec = &tier.spec;
    TierConfig {
        requests_per_minute: spec.limits.requests_per_minute,
        tokens_per_minute: spec.limits.tokens_per_minute,
        max_concurrent: spec.limits.max_concurrent,
        first_token_ms: spec.timeouts.first_token_ms,
        total_ms: spec.timeouts.total_ms,
        idle_stream_ms: spec.timeouts.idle_stream_ms,
        priority: spec.priority,
        slo_ttft_ms: spec.slo.as_ref().and_then(|s| s.ttft_ms),
        slo_tpot_ms: spec.slo.as_ref().and_then(|s| s.tpot_ms),
        price_multiplier: spec.pricing.multiplier,
        retry_percent: spec.retry_budget.percent,
        min_retries_per_second: spec.retry_budget.min_retries_per_second,
    }
}

/// Finds the Provider a backend names: its explicit namespace, else the referrer's namespace,
/// else the shared namespace.
fn resolve_provider<'a>(
    reference: &ProviderRef,
    own_namespace: &str,
    index: &Index<'a>,
    options: &CompileOptions,
) -> Result<&'a Provider, String> {
    let candidates: Vec<&str> = match reference.namespace.as_deref() {
        Some(ns) if ns == own_namespace || ns == options.shared_namespace => vec![ns],
        Some(ns) => {
            return Err(format!(
                "namespace {ns} is neither this object's namespace ({own_namespace}) nor the shared namespace ({})",
                options.shared_namespace
            ));
        }
        None => vec![own_namespace, options.shared_namespace.as_str()],
    };
    candidates
        .iter()
        .find_map(|ns| index.providers.get(&((*ns).to_owned(), reference.name.clone())).copied())
        .ok_or_else(|| format!("no Provider {:?} in namespace {}", reference.name, candidates.join(" or ")))
}

/// What compiling one Endpoint reads and records beside its own problems.
struct EndpointContext<'c, 'p, 'a> {
    index: &'c Index<'a>,
    options: &'c CompileOptions,
    providers: &'c mut ProviderPass<'p, 'a>,
    /// The Providers its served backends use, by id.
    used: &'c mut BTreeMap<String, &'a Provider>,
    /// Backends left out for their Provider.
    dropped: &'c mut Vec<DroppedBackend>,
}

fn endpoint_config(
    endpoint: &Endpoint,
    context: &mut EndpointContext<'_, '_, '_>,
    problems: &mut Problems<'_>,
) -> Option<EndpointConfig> {
    let (index, options) = (context.index, context.options);
    let namespace = namespace_of(endpoint);
    let spec = &endpoint.spec;
    if !is_dns_label(&spec.slug) {
        problems.add(
            "spec.slug",
            format!("{:?} is not a DNS label (lowercase letters, digits and '-', at most 63)", spec.slug),
        );
    } else if RESERVED_ENDPOINT_SLUGS.contains(&spec.slug.as_str()) {
        let what = if spec.slug == "console" { "the web console" } else { "project-level APIs" };
        problems.add("spec.slug", format!("{:?} is reserved for {what}", spec.slug));
    }
    if let Some(tier) = &spec.tier {
        check_tier(tier, "spec.tier", index, problems);
    }

    // Every name (model or alias) a client may send, with where it was declared.
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut models = BTreeMap::new();
    let mut aliases = BTreeMap::new();
    for (m, model) in spec.models.iter().enumerate() {
        let field = format!("spec.models[{m}]");
        if let Some(first) = names.get(model.name.as_str()) {
            problems.add(format!("{field}.name"), format!("{:?} is already the name of {first}", model.name));
        } else {
            names.insert(&model.name, format!("{field} (a model)"));
        }
        for (a, alias) in model.aliases.iter().enumerate() {
            let alias_field = format!("{field}.aliases[{a}].name");
            if let Some(first) = names.get(alias.name.as_str()) {
                problems.add(alias_field, format!("{:?} is already the name of {first}", alias.name));
                continue;
            }
            names.insert(&alias.name, format!("{field}.aliases[{a}] (an alias)"));
            aliases.insert(
                alias.name.clone(),
                AliasConfig {
                    target: model.name.clone(),
                    deprecated: alias.deprecated || alias.sunset.is_some(),
                    sunset: alias.sunset.as_ref().map(|t| t.0),
                },
            );
        }

        let mut backends = Vec::new();
        let mut capabilities: Option<BTreeSet<Capability>> = None;
        let mut context_window: Option<u32> = None;
        let mut max_output: Option<u32> = None;
        let mut owned_by = model.owned_by.clone();
        let mut unavailable = 0;
        for (b, backend) in model.backends.iter().enumerate() {
            let backend_field = format!("{field}.backends[{b}]");
            let mut drop_backend = |message: String, provider_exists: bool| {
                let problem = CompileError {
                    object: problems.object.clone(),
                    field: format!("{backend_field}.providerRef"),
                    message,
                };
                context.dropped.push(DroppedBackend { problem, provider_exists });
            };
            let provider = match resolve_provider(&backend.provider_ref, &namespace, index, options) {
                Ok(p) => p,
                Err(message) => {
                    drop_backend(message, false);
                    unavailable += 1;
                    continue;
                }
            };
            let provider_id = format!("{}/{}", namespace_of(provider), provider.name_any());
            if !context.providers.usable(&provider_id, provider, index) {
                drop_backend(format!("Provider {provider_id} is not usable (see its status)"), true);
                unavailable += 1;
                continue;
            }
            let Some(offered) = provider.spec.models.iter().find(|pm| pm.name == backend.model) else {
                let offers: Vec<&str> = provider.spec.models.iter().map(|pm| pm.name.as_str()).collect();
                problems.add(
                    format!("{backend_field}.model"),
                    format!(
                        "Provider {provider_id} offers no model {:?} (it offers: {})",
                        backend.model,
                        offers.join(", ")
                    ),
                );
                continue;
            };
            owned_by.get_or_insert_with(|| provider.name_any());
            let offered_caps: BTreeSet<Capability> = offered.capabilities.iter().copied().collect();
            capabilities = Some(match capabilities {
                None => offered_caps,
                Some(caps) => caps.intersection(&offered_caps).copied().collect(),
            });
            context_window = min_some(context_window, offered.context_window);
            max_output = min_some(max_output, offered.max_output_tokens);
            context.used.insert(provider_id.clone(), provider);
            backends.push(BackendConfig {
                provider: provider_id,
                model: backend.model.clone(),
                weight: backend.weight,
                priority: backend.priority,
            });
        }
        // Served with the backends left when only Providers are missing; a backend with a
        // problem of its own keeps the whole model out.
        if backends.len() + unavailable == model.backends.len() && !backends.is_empty() {
            models.insert(
                model.name.clone(),
                ModelConfig {
                    owned_by: owned_by.unwrap_or_default(),
                    context_window,
                    max_output_tokens: max_output,
                    capabilities: capabilities.unwrap_or_default().into_iter().collect(),
                    backends,
                },
            );
        }
    }

    // Aliases of a model left out name nothing.
    aliases.retain(|_, alias: &mut AliasConfig| models.contains_key(&alias.target));
    let apis = ApiKind::served(spec.apis.as_deref());
    if let Some(default) = &spec.default_model
        && !names.contains_key(default.as_str())
    {
        let known: Vec<&str> = names.keys().copied().collect();
        problems.add(
            "spec.defaultModel",
            format!("{default:?} is not a model or alias of this Endpoint (it has: {})", known.join(", ")),
        );
    }
    let default_parameters = spec.default_parameters.clone().unwrap_or_default();
    for (field, problem) in default_parameter_problems(&default_parameters) {
        let at = field.map_or_else(String::new, |f| format!(".{f}"));
        problems.add(format!("spec.defaultParameters{at}"), problem);
    }
    if let Some(cap) = spec.limits.max_tokens {
        for name in ["max_tokens", "max_completion_tokens"] {
            if let Some(asked) = default_parameters.get(name).and_then(serde_json::Value::as_u64)
                && asked > u64::from(cap)
            {
                problems.add(
                    format!("spec.defaultParameters.{name}"),
                    format!(
                        "{asked} is above spec.limits.maxTokens ({cap}): every request relying on it would be refused"
                    ),
                );
            }
        }
    }
    if let Some(rules) = &spec.content_rules {
        for (field, problem) in rules.problems() {
            let at = if field.is_empty() { field } else { format!(".{field}") };
            problems.add(format!("spec.contentRules{at}"), problem);
        }
    }
    Some(EndpointConfig {
        redaction: spec.redaction.as_ref().map(RedactionConfig::from_spec),
        content_rules: spec.content_rules.as_ref().map(ContentRulesConfig::from_spec),
        id: format!("{namespace}/{}", endpoint.name_any()),
        tier: spec.tier.clone(),
        routing: spec.routing.policy,
        max_body_bytes: spec.limits.max_body_bytes,
        max_tokens: spec.limits.max_tokens,
        apis: apis.into_iter().collect(),
        // A model left out (its Providers are gone) is no default: such requests are refused
        // for naming no model, and the Endpoint reports the backends left out.
        default_model: spec.default_model.clone().filter(|m| models.contains_key(m) || aliases.contains_key(m)),
        default_parameters,
        models,
        aliases,
    })
}

fn min_some(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Header names the gateway sets itself; a Provider may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
];

fn provider_config(
    provider: &Provider,
    index: &Index<'_>,
    options: &CompileOptions,
    errors: &mut Vec<CompileError>,
) -> Option<ProviderConfig> {
    let namespace = namespace_of(provider);
    let mut problems = Problems {
        object: ObjectRef { kind: "Provider", namespace: Some(namespace.clone()), name: provider.name_any() },
        errors,
    };
    let spec = &provider.spec;
    let before = problems.errors.len();

    let base_url = spec.base_url.as_ref().map(|url| url.trim_end_matches('/').to_owned());
    let pool = spec.service.is_some() || !spec.addresses.is_empty();
    let places = [base_url.is_some(), spec.service.is_some(), !spec.addresses.is_empty()];
    if places.iter().filter(|set| **set).count() > 1 {
        problems.add("spec", "set at most one of spec.baseUrl, spec.service and spec.addresses");
    }
    match (&base_url, spec.provider_type) {
        (None, ProviderType::Simulated) => {}
        (None, _) if pool => {}
        (None, other) => problems.add(
            "spec.baseUrl",
            format!("required for type {} (or a pool: spec.service or spec.addresses)", other.as_str()),
        ),
        (Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.add("spec.baseUrl", format!("{url:?} is not an http(s) URL"));
            }
        }
    }
    if pool && spec.provider_type == ProviderType::Simulated {
        problems.add("spec", "type simulated runs inside the gateway: it has no pods (spec.service, spec.addresses)");
    }
    if spec.metrics.is_some() && !pool {
        problems.add("spec.metrics", "only for a pool (spec.service or spec.addresses)");
    }
    let mut pods = Vec::new();
    for (i, address) in spec.addresses.iter().enumerate() {
        let url = address.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.add(format!("spec.addresses[{i}]"), format!("{address:?} is not an http(s) URL"));
        } else if pods.contains(&url) {
            problems.add(format!("spec.addresses[{i}]"), format!("{address:?} is listed twice"));
        } else {
            pods.push(url);
        }
    }
    pods.sort();
    let service = spec.service.as_ref().map(|s| ServiceConfig {
        namespace: namespace.clone(),
        name: s.name.clone(),
        port: s.port,
        scheme: s.scheme.as_str().to_owned(),
        path: s.path.trim_end_matches('/').to_owned(),
    });
    if service.is_some() && options.services == ServiceEndpoints::Unavailable {
        problems.add(
            "spec.service",
            "a Service's pods are resolved by the operator from its EndpointSlices, and there is no cluster here \
             (standalone mode): list the pods' base URLs in spec.addresses instead",
        );
    }
    if spec.simulation.is_some() && spec.provider_type != ProviderType::Simulated {
        problems.add("spec.simulation", format!("only for type simulated, not {}", spec.provider_type.as_str()));
    }
    let credential = spec.credentials.as_ref().and_then(|creds| {
        let selector = &creds.secret_key_ref;
        match index.secret_value(&namespace, &selector.name, &selector.key) {
            Err(message) => {
                problems.add("spec.credentials.secretKeyRef", message);
                None
            }
            Ok(bytes) => match std::str::from_utf8(bytes).map(str::trim) {
                Ok(value) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) => {
                    Some(Credential::new(value))
                }
                _ => {
                    problems.add(
                        "spec.credentials.secretKeyRef",
                        format!(
                            "Secret {namespace}/{} key {:?} is empty or holds characters a header cannot carry",
                            selector.name, selector.key
                        ),
                    );
                    None
                }
            },
        }
    });
    let tls = spec.tls.as_ref().and_then(|tls| {
        if spec.provider_type == ProviderType::Simulated {
            problems.add("spec.tls", "type simulated runs inside the gateway: it has no TLS");
            return None;
        }
        let https = base_url.iter().chain(&pods).any(|url| url.starts_with("https://"))
            || spec.service.as_ref().is_some_and(|s| s.scheme == PodScheme::Https);
        if !https {
            problems.add(
                "spec.tls",
                "the upstream is called over plain http: TLS settings need an https URL \
                 (spec.baseUrl, spec.addresses or spec.service.scheme)",
            );
        }
        upstream_tls_config(tls, &namespace, index, &mut problems)
    });
    for (name, value) in &spec.headers {
        let lower = name.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            problems.add(format!("spec.headers.{name}"), "not a valid header name");
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            problems
                .add(format!("spec.headers.{name}"), "set by the gateway itself; credentials go in spec.credentials");
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            problems.add(format!("spec.headers.{name}"), "value contains a line break");
        }
    }
    let mut models = BTreeMap::new();
    for (i, model) in spec.models.iter().enumerate() {
        if models.contains_key(&model.name) {
            problems.add(format!("spec.models[{i}].name"), format!("{:?} is listed twice", model.name));
            continue;
        }
        models.insert(
            model.name.clone(),
            ProviderModelConfig {
                context_window: model.context_window,
                max_output_tokens: model.max_output_tokens,
                pricing: model.pricing.as_ref().map(pricing_config),
                capabilities: model.capabilities.iter().copied().collect::<BTreeSet<_>>().into_iter().collect(),
            },
        );
    }
    if problems.errors.len() > before {
        return None;
    }
    Some(ProviderConfig {
        provider_type: spec.provider_type,
        base_url,
        credential,
        headers: spec.headers.clone(),
        connect_timeout_ms: spec.connect_timeout_ms,
        tls,
        models,
        simulation: spec.simulation.as_ref().map(|s| SimulationConfig {
            prefill_overhead_ms: s.prefill_overhead_ms,
            prefill_per_token_ms: s.prefill_per_token_ms,
            inter_token_ms: s.inter_token_ms,
            max_num_seqs: s.max_num_seqs,
            output_tokens: s.output_tokens,
            embedding_dimension: s.embedding_dimension,
            seed: s.seed,
        }),
        pods,
        service,
        pod_metrics: spec
            .metrics
            .as_ref()
            .map(|m| PodMetricsConfig { path: m.path.clone(), interval_ms: m.interval_ms }),
    })
}

/// The Secret keys of a client certificate (a `kubernetes.io/tls` Secret).
const TLS_CERT_KEY: &str = "tls.crt";
/// See [`TLS_CERT_KEY`].
const TLS_KEY_KEY: &str = "tls.key";

/// A Provider's `spec.tls` with its CA bundle and client certificate read and checked; `None`
/// (with problems) when any part is missing or not valid PEM.
fn upstream_tls_config(
    tls: &ProviderTls,
    namespace: &str,
    index: &Index<'_>,
    problems: &mut Problems<'_>,
) -> Option<UpstreamTls> {
    let before = problems.errors.len();
    let ca_bundle = tls.ca_bundle.as_ref().and_then(|source| {
        let (field, kind, selector, value) = match (&source.secret_key_ref, &source.config_map_key_ref) {
            (Some(selector), None) => (
                "spec.tls.caBundle.secretKeyRef",
                "Secret",
                selector,
                index.secret_value(namespace, &selector.name, &selector.key),
            ),
            (None, Some(selector)) => (
                "spec.tls.caBundle.configMapKeyRef",
                "ConfigMap",
                selector,
                index.config_map_value(namespace, &selector.name, &selector.key),
            ),
            _ => {
                problems.add("spec.tls.caBundle", "set exactly one of secretKeyRef and configMapKeyRef");
                return None;
            }
        };
        let checked = value.and_then(|bytes| {
            upstream_tls::check_ca_bundle(bytes)
                .map_err(|message| format!("{kind} {namespace}/{} key {:?} {message}", selector.name, selector.key))
        });
        checked.map_err(|message| problems.add(field, message)).ok()
    });
    let client_certificate = tls.client_certificate.as_ref().and_then(|reference| {
        let field = "spec.tls.clientCertificate.secretName";
        let name = &reference.secret_name;
        let read = |key: &str| {
            index.secret_value(namespace, name, key).map_err(|message| {
                if message.starts_with("no Secret") {
                    message
                } else {
                    format!("{message} (a kubernetes.io/tls Secret holds {TLS_CERT_KEY} and {TLS_KEY_KEY})")
                }
            })
        };
        let (chain, key) = match (read(TLS_CERT_KEY), read(TLS_KEY_KEY)) {
            (Ok(chain), Ok(key)) => (chain, key),
            (Err(message), _) | (_, Err(message)) => {
                problems.add(field, message);
                return None;
            }
        };
        match upstream_tls::check_client_certificate(chain, key) {
            Ok((certificate_chain, private_key)) => {
                Some(ClientCertificate { certificate_chain, private_key: Credential::new(private_key) })
            }
            Err(ClientCertificateError::Chain(message)) => {
                problems.add(field, format!("Secret {namespace}/{name} key {TLS_CERT_KEY:?} {message}"));
                None
            }
            Err(ClientCertificateError::Key) => {
                problems.add(
                    field,
                    format!(
                        "Secret {namespace}/{name} key {TLS_KEY_KEY:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"
                    ),
                );
                None
            }
        }
    });
    if let Some(name) = &tls.server_name
        && let Err(message) = upstream_tls::check_server_name(name)
    {
        problems.add("spec.tls.serverName", message);
    }
    if problems.errors.len() > before {
        return None;
    }
    Some(UpstreamTls {
        ca_bundle,
        system_roots: tls.system_roots,
        client_certificate,
        server_name: tls.server_name.clone(),
    })
}

fn pricing_config(pricing: &ModelPricing) -> PricingConfig {
    PricingConfig {
        input_per_million: pricing.input_per_million,
        cached_input_per_million: pricing.cached_input_per_million.unwrap_or(pricing.input_per_million),
        output_per_million: pricing.output_per_million,
    }
}

fn key_config(
    apikey: &ApiKey,
    endpoints: &BTreeMap<String, EndpointConfig>,
    index: &Index<'_>,
    options: &CompileOptions,
    problems: &mut Problems<'_>,
) -> Option<KeyConfig> {
    let namespace = namespace_of(apikey);
    let spec = &apikey.spec;
    let before = problems.errors.len();
    let expires_at = spec.expires_at.as_ref().map(|t| t.0);

    if let Some(tier) = &spec.tier {
        check_tier(tier, "spec.tier", index, problems);
    }
    check_key_scope(apikey, endpoints, problems);
    let mut cidrs = None;
    if let Some(list) = &spec.allowed_cidrs {
        let mut parsed = Vec::new();
        for (i, cidr) in list.iter().enumerate() {
            match cidr.parse::<ipnet::IpNet>() {
                Ok(net) => parsed.push(net.trunc().to_string()),
                Err(_) => match cidr.parse::<std::net::IpAddr>() {
                    Ok(ip) => parsed.push(ipnet::IpNet::from(ip).to_string()),
                    Err(_) => problems.add(
                        format!("spec.allowedCidrs[{i}]"),
                        format!("{cidr:?} is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32)"),
                    ),
                },
            }
        }
        cidrs = Some(parsed);
    }

    // Key material: the current key and, during a rotation, the previous one.
    let hashes = match &spec.key_hash {
        Some(hashed) => hashed_key(hashed, spec, options, problems),
        None => key_from_secret(apikey, index, options, problems)?,
    };

    if problems.errors.len() > before {
        return None;
    }
    if let (Some(now), Some(expiry)) = (options.now, expires_at)
        && expiry <= now
    {
        return None;
    }
    let mut scopes: Vec<_> = spec.scopes.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    scopes.dedup();
    Some(KeyConfig {
        id: format!("{namespace}/{}", apikey.name_any()),
        hashes,
        scopes,
        endpoints: spec.endpoints.clone(),
        models: spec.models.clone(),
        tier: spec.tier.clone(),
        expires_at,
        allowed_cidrs: cidrs,
        budget: spec.budget.as_ref().map(|b| BudgetConfig { limit_usd: b.limit_usd, period: b.period }),
    })
}

/// The hashes of a key held in a Secret (its own, or the one the operator generated): the
/// current key and, during a rotation, the previous one. `None` while a generated key is yet to
/// be written.
fn key_from_secret(
    apikey: &ApiKey,
    index: &Index<'_>,
    options: &CompileOptions,
    problems: &mut Problems<'_>,
) -> Option<Vec<KeyHash>> {
    let namespace = namespace_of(apikey);
    let spec = &apikey.spec;
    let (secret_name, data_key, field) = match &spec.secret_ref {
        Some(reference) => (reference.name.clone(), reference.key.clone(), "spec.secretRef"),
        None => match options.generated_keys {
            GeneratedKeys::Unavailable => {
                problems.add(
                    "spec.secretRef",
                    "required here: without the operator nothing generates keys; put the key in a Secret and reference it",
                );
                return None;
            }
            GeneratedKeys::Operator => {
                let name = generated_key_secret_name(&apikey.name_any());
                if !index.secrets.contains_key(&(namespace.clone(), name.clone())) {
                    // Not generated yet: the key cannot work until it is.
                    return None;
                }
                (name, default_secret_key(), "status.secretName")
            }
        },
    };
    let mut hashes = Vec::new();
    match index.secret_value(&namespace, &secret_name, &data_key) {
        Err(message) => problems.add(field, message),
        Ok(bytes) => match key_material(bytes) {
            Ok(material) => hashes.push(KeyHash { sha256: hash_key(material), expires_at: None }),
            Err(message) => {
                problems.add(field, format!("Secret {namespace}/{secret_name} key {data_key:?}: {message}"))
            }
        },
    }
    if let Ok(previous) = index.secret_value(&namespace, &secret_name, PREVIOUS_KEY_FIELD) {
        let expiry = index
            .secret_value(&namespace, &secret_name, PREVIOUS_KEY_EXPIRES_FIELD)
            .ok()
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .and_then(|text| text.trim().parse::<Timestamp>().ok());
        match (key_material(previous), expiry) {
            (Ok(material), Some(until)) => {
                if options.now.is_none_or(|now| until > now) {
                    hashes.push(KeyHash { sha256: hash_key(material), expires_at: Some(until) });
                }
            }
            (Err(message), _) => problems.add(field, format!("Secret {namespace}/{secret_name} key {PREVIOUS_KEY_FIELD:?}: {message}")),
            (Ok(_), None) => problems.add(
                field,
                format!("Secret {namespace}/{secret_name} has {PREVIOUS_KEY_FIELD:?} without a valid RFC 3339 {PREVIOUS_KEY_EXPIRES_FIELD:?}"),
            ),
        }
    }

    Some(hashes)
}

/// The hashes of a minted key (`spec.keyHash`): the current one and, until its expiry, the one
/// it replaced.
fn hashed_key(
    hashed: &HashedKey,
    spec: &ApiKeySpec,
    options: &CompileOptions,
    problems: &mut Problems<'_>,
) -> Vec<KeyHash> {
    let is_hash = |text: &str| text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if spec.secret_ref.is_some() {
        problems.add("spec.keyHash", "excludes spec.secretRef: a key is either in a Secret or stored as its hash");
    }
    if spec.rotation.is_some() {
        problems
            .add("spec.rotation", "rotates generated keys only: a spec.keyHash key is rotated by writing its new hash");
    }
    let mut hashes = Vec::new();
    if is_hash(&hashed.sha256) {
        hashes.push(KeyHash { sha256: hashed.sha256.clone(), expires_at: None });
    } else {
        problems.add("spec.keyHash.sha256", "must be 64 lowercase hex characters (the SHA-256 of the key)");
    }
    if let Some(previous) = &hashed.previous {
        let until = previous.expires_at.0;
        if !is_hash(&previous.sha256) {
            problems
                .add("spec.keyHash.previous.sha256", "must be 64 lowercase hex characters (the SHA-256 of the key)");
        } else if options.now.is_none_or(|now| until > now) {
            hashes.push(KeyHash { sha256: previous.sha256.clone(), expires_at: Some(until) });
        }
    }
    hashes
}

/// Checks that the Endpoints (by slug) and models an ApiKey is limited to are among `endpoints`.
fn check_key_scope(apikey: &ApiKey, endpoints: &BTreeMap<String, EndpointConfig>, problems: &mut Problems<'_>) {
    let namespace = namespace_of(apikey);
    let spec = &apikey.spec;
    if let Some(allowed) = &spec.endpoints {
        for (i, slug) in allowed.iter().enumerate() {
            if !endpoints.contains_key(slug) {
                problems.add(
                    format!("spec.endpoints[{i}]"),
                    format!("no Endpoint with slug {slug:?} in namespace {namespace}"),
                );
            }
        }
    }
    if let Some(models) = &spec.models {
        let reachable = |name: &str| {
            endpoints.iter().any(|(slug, endpoint)| {
                spec.endpoints.as_ref().is_none_or(|allowed| allowed.contains(slug))
                    && (endpoint.models.contains_key(name) || endpoint.aliases.contains_key(name))
            })
        };
        for (i, name) in models.iter().enumerate() {
            if !reachable(name) {
                problems.add(
                    format!("spec.models[{i}]"),
                    format!("no model or alias {name:?} in the endpoints this key may call"),
                );
            }
        }
    }
}

/// Checks key material as clients will send it in a header; surrounding whitespace (a trailing
/// newline from `echo`) is ignored.
fn key_material(raw: &[u8]) -> Result<&[u8], String> {
    let trimmed = raw.trim_ascii();
    if trimmed.len() < MIN_KEY_LENGTH {
        return Err(format!("shorter than {MIN_KEY_LENGTH} characters"));
    }
    if !trimmed.iter().all(u8::is_ascii_graphic) {
        return Err("holds characters other than printable ASCII".into());
    }
    Ok(trimmed)
}
