//! Who refers to what, kept from the watches: which Projects a change to an Endpoint, ApiKey,
//! Provider, ServiceTier, Secret or ConfigMap concerns, which ApiKeys and Providers a Secret (or
//! ConfigMap) holds material for, and which Projects claim a namespace or a slug.
//!
//! The informers of Projects, Endpoints, ApiKeys and Providers feed it every object they apply
//! or delete ([`crate::cache::Informer::on_change`]) before any controller hears of the change,
//! and the controllers' watch mappers read it instead of scanning the caches. A plain struct:
//! tested by feeding objects in and asserting on what comes out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider};
use sluice_crds::compile::generated_signing_secret_name;

use crate::labels::OWNER_ANNOTATION;

/// A Project as others see it: where it is, what it claims, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectClaim {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The slug it claims.
    pub slug: String,
    /// Its ServiceTier.
    pub default_tier: String,
    /// When it was created.
    pub created: Option<Timestamp>,
    /// Its UID (the tie-break between Projects created in the same second).
    pub uid: Option<String>,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// The Secret holding its response-signing secret (`spec.signing.secretName`).
    pub signing_secret: Option<String>,
    /// The Secret holding its JWT keys (`spec.jwt.jwks.secretRef`).
    pub jwks_secret: Option<String>,
}

/// The Secret a Project's JWT keys are in, when they are in one.
pub fn jwks_secret_name(project: &Project) -> Option<&str> {
    let jwt = project.spec.jwt.as_ref()?;
    jwt.jwks.secret_ref.as_ref().map(|reference| reference.name.as_str())
}

impl ProjectClaim {
    /// The claim of `project`.
    pub fn of(project: &Project) -> Self {
        Self {
            namespace: project.namespace().unwrap_or_default(),
            name: project.name_any(),
            slug: project.spec.slug.clone(),
            default_tier: project.spec.default_tier.clone(),
            created: project.creation_timestamp().map(|t| t.0),
            uid: project.uid(),
            deleting: project.meta().deletion_timestamp.is_some(),
            signing_secret: project
                .spec
                .signing
                .as_ref()
                .map(|s| s.secret_name.clone().unwrap_or_else(|| generated_signing_secret_name(&project.name_any()))),
            jwks_secret: jwks_secret_name(project).map(str::to_owned),
        }
    }

    /// The order of seniority in a namespace: creation time, then UID, then name; the smallest
    /// is the Project that serves the namespace.
    pub fn seniority(&self) -> (Option<Timestamp>, Option<&str>, &str) {
        (self.created, self.uid.as_deref(), &self.name)
    }

    /// The Project, for a controller's queue.
    pub fn object_ref(&self) -> ObjectRef<Project> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

/// What an Endpoint or ApiKey names, kept so that a change or a deletion undoes its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names {
    tier: Option<String>,
    /// Providers named without a namespace or in the shared one.
    shared_providers: BTreeSet<String>,
    /// The Secret of an ApiKey's `secretRef`.
    secret: Option<String>,
}

/// `(namespace, name)`.
type Key = (String, String);

/// The Secrets and ConfigMaps (in its namespace) a Provider reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ProviderReads {
    secrets: Vec<String>,
    config_maps: Vec<String>,
}

/// The index. See the module documentation.
#[derive(Debug, Default)]
pub struct WatchIndex {
    shared_namespace: String,
    /// Projects by namespace, then name.
    projects: BTreeMap<String, BTreeMap<String, ProjectClaim>>,
    /// Projects by the slug they claim.
    slugs: HashMap<String, BTreeSet<Key>>,
    endpoints: HashMap<Key, Names>,
    apikeys: HashMap<Key, Names>,
    /// The Secrets and ConfigMaps each Provider reads (credentials, CA bundle, client
    /// certificate), if any.
    providers: HashMap<Key, ProviderReads>,
    /// Namespaces whose objects name each ServiceTier, with how many objects do.
    tier_users: HashMap<String, BTreeMap<String, usize>>,
    /// Namespaces whose Endpoints name each shared Provider, with how many Endpoints do.
    shared_provider_users: HashMap<String, BTreeMap<String, usize>>,
    /// Providers by the Secrets they read.
    provider_secret_users: HashMap<Key, BTreeSet<String>>,
    /// Providers by the ConfigMaps they read.
    provider_config_map_users: HashMap<Key, BTreeSet<String>>,
    /// ApiKeys by the Secret their `secretRef` names.
    key_secret_users: HashMap<Key, BTreeSet<String>>,
}

/// A kind the index keeps.
pub trait Indexed {
    /// Records `self` (replacing what was recorded of it before).
    fn apply_to(&self, index: &mut WatchIndex);
    /// Forgets `self`.
    fn delete_from(&self, index: &mut WatchIndex);
}

impl WatchIndex {
    /// An empty index; `shared_namespace` holds the platform's Providers.
    pub fn new(shared_namespace: impl Into<String>) -> Self {
        Self { shared_namespace: shared_namespace.into(), ..Self::default() }
    }

    /// Records an object that was created or changed.
    pub fn apply<K: Indexed>(&mut self, object: &K) {
        object.apply_to(self);
    }

    /// Forgets an object that was deleted.
    pub fn delete<K: Indexed>(&mut self, object: &K) {
        object.delete_from(self);
    }

    /// Every Project of `namespace`, by name.
    pub fn claims_in(&self, namespace: &str) -> Vec<&ProjectClaim> {
        self.projects.get(namespace).into_iter().flat_map(BTreeMap::values).collect()
    }

    /// Every Project that claims `slug`, in any namespace.
    pub fn claims_of_slug(&self, slug: &str) -> Vec<&ProjectClaim> {
        self.slugs
            .get(slug)
            .into_iter()
            .flatten()
            .filter_map(|(namespace, name)| self.projects.get(namespace)?.get(name))
            .collect()
    }

    /// The Projects that claim `slug` and serve their namespace: a Project refused in its own
    /// namespace (a younger one beside its elder) claims no slug, so it cannot hold one from
    /// another tenant. It is reconciled again when its elder goes ([`Self::contenders`]).
    pub fn serving_claims_of_slug(&self, slug: &str) -> Vec<&ProjectClaim> {
        let serves =
            |claim: &&ProjectClaim| self.project_in(&claim.namespace).is_some_and(|senior| senior.name == claim.name);
        self.claims_of_slug(slug).into_iter().filter(serves).collect()
    }

    /// The Project that serves `namespace`: the most senior one not being deleted (the Project
    /// controller's rule; the others are refused).
    pub fn project_in(&self, namespace: &str) -> Option<&ProjectClaim> {
        self.projects.get(namespace)?.values().filter(|claim| !claim.deleting).min_by_key(|claim| claim.seniority())
    }

    /// The Projects of `namespace` (all of them, so a second one learns it conflicts).
    pub fn projects_in(&self, namespace: &str) -> Vec<ObjectRef<Project>> {
        self.claims_in(namespace).into_iter().map(ProjectClaim::object_ref).collect()
    }

    /// Every Project that contends with a Project of `namespace` claiming `slug`: the others of
    /// that namespace and of that slug. Each is reconciled again when one of them changes or
    /// goes, so the rules of who serves are applied at once, not at the next resync.
    pub fn contenders(&self, namespace: &str, slug: &str) -> Vec<ObjectRef<Project>> {
        let mut refs: Vec<ObjectRef<Project>> =
            self.claims_in(namespace).into_iter().map(ProjectClaim::object_ref).collect();
        for claim in self.claims_of_slug(slug) {
            let reference = claim.object_ref();
            if !refs.contains(&reference) {
                refs.push(reference);
            }
        }
        refs
    }

    /// Projects whose configuration may use Provider `namespace/name`: those of its namespace,
    /// and for a shared Provider those whose Endpoints name it.
    pub fn projects_using_provider(&self, namespace: &str, name: &str) -> Vec<ObjectRef<Project>> {
        if namespace != self.shared_namespace {
            return self.projects_in(namespace);
        }
        let users = self.shared_provider_users.get(name).into_iter().flat_map(BTreeMap::keys);
        users.flat_map(|ns| self.projects_in(ns)).collect()
    }

    /// Projects whose configuration may use ServiceTier `tier`.
    pub fn projects_using_tier(&self, tier: &str) -> Vec<ObjectRef<Project>> {
        let users = self.tier_users.get(tier).into_iter().flat_map(BTreeMap::keys);
        users.flat_map(|ns| self.projects_in(ns)).collect()
    }

    /// Projects whose configuration may read `secret`: key Secrets (generated or brought),
    /// Providers' credentials, CA bundles and client certificates, and signing secrets.
    pub fn projects_using_secret(&self, secret: &Secret) -> Vec<ObjectRef<Project>> {
        let Some(namespace) = secret.namespace() else { return Vec::new() };
        let key = (namespace.clone(), secret.name_any());
        let providers = self.provider_secret_users.get(&key).into_iter().flatten();
        let mut projects: Vec<ObjectRef<Project>> =
            providers.flat_map(|provider| self.projects_using_provider(&namespace, provider)).collect();
        let key_secret = secret.owner_references().iter().any(|o| o.kind == "ApiKey")
            || self.key_secret_users.get(&key).is_some_and(|users| !users.is_empty());
        if key_secret {
            projects.extend(self.projects_in(&namespace));
        }
        let signing = self
            .claims_in(&namespace)
            .into_iter()
            .filter(|c| c.signing_secret.as_deref() == Some(&key.1) || c.jwks_secret.as_deref() == Some(&key.1));
        projects.extend(signing.map(ProjectClaim::object_ref));
        projects.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        projects.dedup();
        projects
    }

    /// ApiKeys that hold their key in `secret`: the owner of a generated Secret, and those that
    /// name it in `secretRef`.
    pub fn keys_using_secret(&self, secret: &Secret) -> Vec<ObjectRef<ApiKey>> {
        let Some(namespace) = secret.namespace() else { return Vec::new() };
        let owners = secret.owner_references().iter().filter(|o| o.kind == "ApiKey").map(|o| o.name.clone());
        let users = self.key_secret_users.get(&(namespace.clone(), secret.name_any())).into_iter().flatten().cloned();
        let names: BTreeSet<String> = owners.chain(users).collect();
        names.iter().map(|name| ObjectRef::new(name).within(&namespace)).collect()
    }

    /// Providers that read `secret` (credentials, CA bundle, client certificate).
    pub fn providers_using_secret(&self, secret: &Secret) -> Vec<ObjectRef<Provider>> {
        let Some(namespace) = secret.namespace() else { return Vec::new() };
        let users = self.provider_secret_users.get(&(namespace.clone(), secret.name_any())).into_iter().flatten();
        users.map(|name| ObjectRef::new(name).within(&namespace)).collect()
    }

    /// Providers whose CA bundle is in `config_map`.
    pub fn providers_using_config_map(&self, config_map: &ConfigMap) -> Vec<ObjectRef<Provider>> {
        let Some(namespace) = config_map.namespace() else { return Vec::new() };
        let key = (namespace.clone(), config_map.name_any());
        let users = self.provider_config_map_users.get(&key).into_iter().flatten();
        users.map(|name| ObjectRef::new(name).within(&namespace)).collect()
    }

    /// Projects whose configuration may read `config_map` (a Provider's CA bundle).
    pub fn projects_using_config_map(&self, config_map: &ConfigMap) -> Vec<ObjectRef<Project>> {
        let Some(namespace) = config_map.namespace() else { return Vec::new() };
        let key = (namespace.clone(), config_map.name_any());
        let providers = self.provider_config_map_users.get(&key).into_iter().flatten();
        providers.flat_map(|provider| self.projects_using_provider(&namespace, provider)).collect()
    }

    fn forget_project(&mut self, namespace: &str, name: &str) {
        let Some(claims) = self.projects.get_mut(namespace) else { return };
        let Some(old) = claims.remove(name) else { return };
        if claims.is_empty() {
            self.projects.remove(namespace);
        }
        remove_from(&mut self.slugs, &old.slug, &(old.namespace.clone(), old.name.clone()));
        uncount(&mut self.tier_users, &old.default_tier, namespace);
    }

    fn set_names(&mut self, kind: NamedKind, key: Key, names: Option<Names>) {
        let table = match kind {
            NamedKind::Endpoint => &mut self.endpoints,
            NamedKind::ApiKey => &mut self.apikeys,
        };
        let old = match &names {
            Some(names) if *names != Names::default() => table.insert(key.clone(), names.clone()),
            _ => table.remove(&key),
        };
        let (namespace, name) = &key;
        if let Some(old) = old {
            if let Some(tier) = &old.tier {
                uncount(&mut self.tier_users, tier, namespace);
            }
            for provider in &old.shared_providers {
                uncount(&mut self.shared_provider_users, provider, namespace);
            }
            if let Some(secret) = &old.secret {
                remove_from(&mut self.key_secret_users, &(namespace.clone(), secret.clone()), name);
            }
        }
        if let Some(new) = names {
            if let Some(tier) = &new.tier {
                count(&mut self.tier_users, tier, namespace);
            }
            for provider in &new.shared_providers {
                count(&mut self.shared_provider_users, provider, namespace);
            }
            if let Some(secret) = new.secret {
                self.key_secret_users.entry((namespace.clone(), secret)).or_default().insert(name.clone());
            }
        }
    }

    fn set_provider_reads(&mut self, key: Key, reads: ProviderReads) {
        let old = if reads == ProviderReads::default() {
            self.providers.remove(&key)
        } else {
            self.providers.insert(key.clone(), reads.clone())
        };
        let (namespace, name) = key;
        for secret in old.iter().flat_map(|o| &o.secrets) {
            remove_from(&mut self.provider_secret_users, &(namespace.clone(), secret.clone()), &name);
        }
        for config_map in old.iter().flat_map(|o| &o.config_maps) {
            remove_from(&mut self.provider_config_map_users, &(namespace.clone(), config_map.clone()), &name);
        }
        for secret in reads.secrets {
            self.provider_secret_users.entry((namespace.clone(), secret)).or_default().insert(name.clone());
        }
        for config_map in reads.config_maps {
            self.provider_config_map_users.entry((namespace.clone(), config_map)).or_default().insert(name.clone());
        }
    }
}

#[derive(Clone, Copy)]
enum NamedKind {
    Endpoint,
    ApiKey,
}

fn key_of<K: Resource>(object: &K) -> Key {
    (object.meta().namespace.clone().unwrap_or_default(), object.meta().name.clone().unwrap_or_default())
}

fn count(map: &mut HashMap<String, BTreeMap<String, usize>>, key: &str, namespace: &str) {
    *map.entry(key.to_owned()).or_default().entry(namespace.to_owned()).or_default() += 1;
}

fn uncount(map: &mut HashMap<String, BTreeMap<String, usize>>, key: &str, namespace: &str) {
    let Some(namespaces) = map.get_mut(key) else { return };
    if let Some(n) = namespaces.get_mut(namespace) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            namespaces.remove(namespace);
        }
    }
    if namespaces.is_empty() {
        map.remove(key);
    }
}

fn remove_from<K: std::hash::Hash + Eq, V: Ord>(map: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Indexed for Project {
    fn apply_to(&self, index: &mut WatchIndex) {
        let claim = ProjectClaim::of(self);
        index.forget_project(&claim.namespace, &claim.name);
        index.slugs.entry(claim.slug.clone()).or_default().insert((claim.namespace.clone(), claim.name.clone()));
        count(&mut index.tier_users, &claim.default_tier, &claim.namespace);
        index.projects.entry(claim.namespace.clone()).or_default().insert(claim.name.clone(), claim);
    }

    fn delete_from(&self, index: &mut WatchIndex) {
        let (namespace, name) = key_of(self);
        index.forget_project(&namespace, &name);
    }
}

impl Indexed for Endpoint {
    fn apply_to(&self, index: &mut WatchIndex) {
        let shared = index.shared_namespace.as_str();
        let shared_providers = self
            .spec
            .models
            .iter()
            .flat_map(|m| &m.backends)
            .filter(|b| b.provider_ref.namespace.as_deref().is_none_or(|ns| ns == shared))
            .map(|b| b.provider_ref.name.clone())
            .collect();
        let names = Names { tier: self.spec.tier.clone(), shared_providers, secret: None };
        index.set_names(NamedKind::Endpoint, key_of(self), Some(names));
    }

    fn delete_from(&self, index: &mut WatchIndex) {
        index.set_names(NamedKind::Endpoint, key_of(self), None);
    }
}

impl Indexed for ApiKey {
    fn apply_to(&self, index: &mut WatchIndex) {
        let names = Names {
            tier: self.spec.tier.clone(),
            shared_providers: BTreeSet::new(),
            secret: self.spec.secret_ref.as_ref().map(|r| r.name.clone()),
        };
        index.set_names(NamedKind::ApiKey, key_of(self), Some(names));
    }

    fn delete_from(&self, index: &mut WatchIndex) {
        index.set_names(NamedKind::ApiKey, key_of(self), None);
    }
}

impl Indexed for Provider {
    fn apply_to(&self, index: &mut WatchIndex) {
        let reads = ProviderReads {
            secrets: self.spec.secret_names().into_iter().map(str::to_owned).collect(),
            config_maps: self.spec.config_map_names().into_iter().map(str::to_owned).collect(),
        };
        index.set_provider_reads(key_of(self), reads);
    }

    fn delete_from(&self, index: &mut WatchIndex) {
        index.set_provider_reads(key_of(self), ProviderReads::default());
    }
}

/// The Project that owns a data-plane object, from its owner annotation.
pub fn owner_of<K: Resource>(object: &K) -> Option<ObjectRef<Project>> {
    let owner = object.meta().annotations.as_ref()?.get(OWNER_ANNOTATION)?;
    let (namespace, name) = owner.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::api::ObjectMeta;

    use super::*;

    const SHARED: &str = "sluice-system";

    fn from_json<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
        serde_json::from_value(value).expect("a valid object")
    }

    fn project(namespace: &str, name: &str, slug: &str, tier: &str) -> Project {
        from_json(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"slug": slug, "defaultTier": tier},
        }))
    }

    /// An Endpoint with one backend per `(provider, namespace)`.
    fn endpoint(namespace: &str, name: &str, tier: Option<&str>, providers: &[(&str, Option<&str>)]) -> Endpoint {
        let backends: Vec<serde_json::Value> = providers
            .iter()
            .map(|(provider, ns)| match ns {
                Some(ns) => serde_json::json!({"providerRef": {"name": provider, "namespace": ns}, "model": "m"}),
                None => serde_json::json!({"providerRef": {"name": provider}, "model": "m"}),
            })
            .collect();
        let mut spec = serde_json::json!({"slug": name, "models": [{"name": "m", "backends": backends}]});
        if let Some(tier) = tier {
            spec["tier"] = tier.into();
        }
        from_json(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Endpoint",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }))
    }

    fn apikey(namespace: &str, name: &str, tier: Option<&str>, secret: Option<&str>) -> ApiKey {
        let mut spec = serde_json::json!({});
        if let Some(tier) = tier {
            spec["tier"] = tier.into();
        }
        if let Some(secret) = secret {
            spec["secretRef"] = serde_json::json!({"name": secret});
        }
        from_json(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }))
    }

    fn provider(namespace: &str, name: &str, credentials: Option<&str>) -> Provider {
        let mut spec =
            serde_json::json!({"type": "openai", "baseUrl": "https://x.example/v1", "models": [{"name": "m"}]});
        if let Some(secret) = credentials {
            spec["credentials"] = serde_json::json!({"secretKeyRef": {"name": secret, "key": "k"}});
        }
        from_json(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        }))
    }

    fn secret(namespace: &str, name: &str, owner: Option<&str>) -> Secret {
        let owner_references = owner.map(|owner| {
            vec![OwnerReference {
                api_version: "sluice.dev/v1alpha1".into(),
                kind: "ApiKey".into(),
                name: owner.into(),
                uid: "u".into(),
                ..OwnerReference::default()
            }]
        });
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                owner_references,
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn names<K: Resource>(refs: Vec<ObjectRef<K>>) -> Vec<String> {
        let mut names: Vec<String> =
            refs.iter().map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name)).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Two tenants with one Project each, and a third namespace with two Projects.
    fn tenants() -> WatchIndex {
        let mut index = WatchIndex::new(SHARED);
        index.apply(&project("team-a", "team-a", "team-a", "std"));
        index.apply(&project("team-b", "team-b", "team-b", "gold"));
        index.apply(&project("team-c", "zed", "team-c", "std"));
        index.apply(&project("team-c", "alpha", "team-c2", "std"));
        index.apply(&project("team-c", "alpha", "team-c2", "std"));
        index
    }

    #[test]
    fn projects_of_a_namespace_and_of_a_slug() {
        let mut index = tenants();
        assert_eq!(names(index.projects_in("team-c")), ["team-c/alpha", "team-c/zed"]);
        assert_eq!(index.project_in("team-c").map(|c| c.name.as_str()), Some("alpha"), "same age: first by name");
        let mut younger = project("team-c", "alpha", "team-c2", "std");
        younger.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().expect("time")));
        index.apply(&younger);
        let mut elder = project("team-c", "zed", "team-c", "std");
        elder.metadata.creation_timestamp = Some(Time("2025-01-01T00:00:00Z".parse().expect("time")));
        index.apply(&elder);
        assert_eq!(index.project_in("team-c").map(|c| c.name.as_str()), Some("zed"), "the oldest serves");
        elder.metadata.deletion_timestamp = elder.metadata.creation_timestamp.clone();
        index.apply(&elder);
        assert_eq!(index.project_in("team-c").map(|c| c.name.as_str()), Some("alpha"), "a deleted one serves nothing");
        index.apply(&project("team-c", "zed", "team-c", "std"));
        index.apply(&project("team-c", "alpha", "team-c2", "std"));
        assert!(index.projects_in("nobody").is_empty());

        // A Project in another namespace that claims team-a's slug.
        let mut squatter = project("team-b", "squat", "team-a", "std");
        squatter.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().expect("time")));
        index.apply(&squatter);
        let claims: Vec<String> =
            index.claims_of_slug("team-a").iter().map(|c| format!("{}/{}", c.namespace, c.name)).collect();
        assert_eq!(claims, ["team-a/team-a", "team-b/squat"]);
        let squat = index.claims_of_slug("team-a").into_iter().find(|c| c.name == "squat").expect("claim");
        assert_eq!(squat.created, Some("2026-01-01T00:00:00Z".parse().expect("time")));
        assert_eq!(index.serving_claims_of_slug("team-a").len(), 1, "team-b/team-b is older: squat serves nothing");
        index.delete(&project("team-b", "team-b", "team-b", "gold"));
        assert_eq!(index.serving_claims_of_slug("team-a").len(), 2, "alone in team-b, its claim counts");
        index.apply(&project("team-b", "team-b", "team-b", "gold"));

        // A slug change moves the claim; a deletion forgets it.
        index.apply(&project("team-b", "squat", "other", "std"));
        assert_eq!(index.claims_of_slug("team-a").len(), 1);
        assert_eq!(index.claims_of_slug("other").len(), 1);
        index.delete(&project("team-b", "squat", "other", "std"));
        assert!(index.claims_of_slug("other").is_empty());
        assert_eq!(names(index.projects_in("team-b")), ["team-b/team-b"]);
    }

    #[test]
    fn a_tenant_provider_concerns_its_namespace_and_a_shared_one_its_users() {
        let mut index = tenants();
        index.apply(&endpoint("team-a", "chat", None, &[("openai", None)]));
        index.apply(&endpoint("team-b", "chat", None, &[("openai", Some(SHARED))]));
        index.apply(&endpoint("team-c", "chat", None, &[("openai", Some("team-c"))]));
        assert_eq!(names(index.projects_using_provider(SHARED, "openai")), ["team-a/team-a", "team-b/team-b"]);
        assert_eq!(names(index.projects_using_provider("team-c", "anything")), ["team-c/alpha", "team-c/zed"]);
        assert!(index.projects_using_provider(SHARED, "anthropic").is_empty());

        // team-a's Endpoint moves to another Provider; then team-b's goes away.
        index.apply(&endpoint("team-a", "chat", None, &[("anthropic", None)]));
        assert_eq!(names(index.projects_using_provider(SHARED, "openai")), ["team-b/team-b"]);
        assert_eq!(names(index.projects_using_provider(SHARED, "anthropic")), ["team-a/team-a"]);
        index.delete(&endpoint("team-b", "chat", None, &[("openai", Some(SHARED))]));
        assert!(index.projects_using_provider(SHARED, "openai").is_empty());
    }

    #[test]
    fn a_tier_concerns_every_namespace_that_names_it() {
        let mut index = tenants();
        assert_eq!(names(index.projects_using_tier("gold")), ["team-b/team-b"]);
        index.apply(&endpoint("team-a", "chat", Some("gold"), &[]));
        index.apply(&apikey("team-c", "k", Some("gold"), None));
        index.apply(&apikey("team-c", "k2", Some("gold"), None));
        assert_eq!(
            names(index.projects_using_tier("gold")),
            ["team-a/team-a", "team-b/team-b", "team-c/alpha", "team-c/zed"]
        );
        // One of two users in team-c leaves: team-c still uses it; then none does.
        index.delete(&apikey("team-c", "k", Some("gold"), None));
        assert!(names(index.projects_using_tier("gold")).contains(&"team-c/zed".to_owned()));
        index.apply(&apikey("team-c", "k2", None, None));
        index.apply(&endpoint("team-a", "chat", None, &[]));
        assert_eq!(names(index.projects_using_tier("gold")), ["team-b/team-b"]);
        // A Project's own tier counts too, and follows its changes.
        index.apply(&project("team-b", "team-b", "team-b", "std"));
        assert!(index.projects_using_tier("gold").is_empty());
        assert_eq!(index.projects_using_tier("std").len(), 4);
    }

    #[test]
    fn a_secret_concerns_the_keys_and_providers_that_hold_material_in_it() {
        let mut index = tenants();
        index.apply(&apikey("team-a", "brought", None, Some("my-key")));
        index.apply(&apikey("team-a", "also", None, Some("my-key")));
        index.apply(&provider("team-b", "upstream", Some("creds")));
        index.apply(&provider(SHARED, "openai", Some("creds")));
        index.apply(&endpoint("team-a", "chat", None, &[("openai", None)]));

        let brought = secret("team-a", "my-key", None);
        assert_eq!(names(index.keys_using_secret(&brought)), ["team-a/also", "team-a/brought"]);
        assert_eq!(names(index.projects_using_secret(&brought)), ["team-a/team-a"]);

        let generated = secret("team-c", "sluice-key-k", Some("k"));
        assert_eq!(names(index.keys_using_secret(&generated)), ["team-c/k"]);
        assert_eq!(names(index.projects_using_secret(&generated)), ["team-c/alpha", "team-c/zed"]);

        let tenant_creds = secret("team-b", "creds", None);
        assert_eq!(names(index.providers_using_secret(&tenant_creds)), ["team-b/upstream"]);
        assert_eq!(names(index.projects_using_secret(&tenant_creds)), ["team-b/team-b"]);
        let shared_creds = secret(SHARED, "creds", None);
        assert_eq!(names(index.providers_using_secret(&shared_creds)), ["sluice-system/openai"]);
        assert_eq!(names(index.projects_using_secret(&shared_creds)), ["team-a/team-a"]);

        // Unrelated Secrets concern nobody; references that change or go are forgotten.
        assert!(index.projects_using_secret(&secret("team-a", "unrelated", None)).is_empty());
        index.apply(&apikey("team-a", "brought", None, None));
        index.delete(&apikey("team-a", "also", None, Some("my-key")));
        assert!(index.keys_using_secret(&brought).is_empty());
        assert!(index.projects_using_secret(&brought).is_empty());
        index.apply(&provider("team-b", "upstream", None));
        assert!(index.providers_using_secret(&tenant_creds).is_empty());
        index.delete(&provider(SHARED, "openai", Some("creds")));
        assert!(index.projects_using_secret(&shared_creds).is_empty());
    }

    #[test]
    fn a_providers_ca_bundle_and_client_certificate_concern_it_and_its_projects() {
        let mut index = tenants();
        let with_tls = |tls: serde_json::Value| -> Provider {
            let mut provider = provider("team-b", "vllm", Some("creds"));
            provider.spec.tls = Some(serde_json::from_value(tls).expect("tls"));
            provider
        };
        index.apply(&with_tls(serde_json::json!({
            "caBundle": {"configMapKeyRef": {"name": "llm-ca"}},
            "clientCertificate": {"secretName": "gateway-client"},
        })));
        let config_map = |name: &str| ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("team-b".into()), ..ObjectMeta::default() },
            ..ConfigMap::default()
        };
        assert_eq!(names(index.providers_using_config_map(&config_map("llm-ca"))), ["team-b/vllm"]);
        assert_eq!(names(index.projects_using_config_map(&config_map("llm-ca"))), ["team-b/team-b"]);
        let client = secret("team-b", "gateway-client", None);
        assert_eq!(names(index.providers_using_secret(&client)), ["team-b/vllm"]);
        assert_eq!(names(index.projects_using_secret(&client)), ["team-b/team-b"]);
        assert_eq!(names(index.providers_using_secret(&secret("team-b", "creds", None))), ["team-b/vllm"]);

        // The bundle moves to a Secret: the ConfigMap concerns nobody any more.
        index.apply(&with_tls(serde_json::json!({"caBundle": {"secretKeyRef": {"name": "llm-ca"}}})));
        assert!(index.projects_using_config_map(&config_map("llm-ca")).is_empty());
        assert!(index.providers_using_secret(&client).is_empty());
        assert_eq!(names(index.providers_using_secret(&secret("team-b", "llm-ca", None))), ["team-b/vllm"]);
        index.delete(&with_tls(serde_json::json!({})));
        assert!(index.providers_using_secret(&secret("team-b", "llm-ca", None)).is_empty());
    }

    #[test]
    fn data_plane_objects_name_their_owner() {
        let mut deployment = Deployment::default();
        assert_eq!(owner_of(&deployment), None);
        deployment.metadata.annotations = Some([(OWNER_ANNOTATION.to_owned(), "team-a/p".to_owned())].into());
        assert_eq!(owner_of(&deployment), Some(ObjectRef::new("p").within("team-a")));
        deployment.metadata.annotations = Some([(OWNER_ANNOTATION.to_owned(), "no-slash".to_owned())].into());
        assert_eq!(owner_of(&deployment), None);
    }
}
