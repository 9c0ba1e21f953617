//! Who is calling and what they may do. Every access rule of the gateway lives here, each
//! checked as soon as what it needs is known, so nothing is read for a caller who may not send
//! it: [`identify`] decides everything the request head can tell (the key, its project and
//! expiry, the endpoint, the source address), and the [`Caller`] it returns carries the two
//! checks that wait for more: the scope once the route is known ([`Caller::check_scope`]), and
//! the model allow-list once the body names the model ([`Caller::check_model`]). A
//! project-level API (`/<project>/v1/...`) names no endpoint: [`identify_key`] checks the rest,
//! and its [`KeyCaller`] the scope.
//!
//! A project with JWT settings also takes bearer tokens from its identity provider ([`jwt`]):
//! a verified token becomes a [`Key`] of its own for the request, named `jwt:<subject>`, whose
//! counters are its subject's ([`subjects`]), so limits, budget and usage are kept per subject.

pub mod jwks;
pub mod jwt;
pub mod subjects;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use hyper::{HeaderMap, Request};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use sluice_crds::api::Scope;

use crate::error::ApiError;
use crate::route::Target;
use crate::snapshot::{Endpoint, Key, Model, Project, ProjectJwt, Snapshot, Tier};

/// Where the key of a request authenticated by a JWT lives while the request does (an API key
/// lives in the snapshot). Made empty by the server for every request.
#[derive(Debug, Default)]
pub struct TokenSlot(OnceLock<Key>);

/// A caller the request head lets in: the key, the project it opens, the endpoint in the path,
/// and the tier the request runs under.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'s> {
    /// The key's project (the path's).
    pub project: &'s Project,
    /// The path's endpoint.
    pub endpoint: &'s Endpoint,
    /// The key.
    pub key: &'s Key,
    /// The key's tier, else the endpoint's, else the project's default.
    pub tier: &'s Arc<Tier>,
    /// The client's address (behind trusted proxies, the one they name).
    pub client: IpAddr,
}

/// Why [`identify`] turned a request away.
#[derive(Debug)]
pub struct Refused<'s> {
    /// The refusal.
    pub error: ApiError,
    /// The project and endpoint, when the path named ones the key opens (for metric labels:
    /// a refusal before that is not attributed to anyone).
    pub at: Option<(&'s Project, &'s Endpoint)>,
}

impl From<ApiError> for Refused<'_> {
    fn from(error: ApiError) -> Self {
        Self { error, at: None }
    }
}

/// What a request needs from the key's scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Calling a model.
    Inference(&'static str),
    /// Listing models.
    ListModels,
    /// Reading the project's usage (`/v1/usage`).
    UsageRead,
    /// Managing the project's keys or reading its security settings (the API's path).
    Management(&'static str),
}

/// A caller of a project-level API: the key and the project it opens (no endpoint is named).
#[derive(Clone, Copy, Debug)]
pub struct KeyCaller<'s> {
    /// The key's project (the path's).
    pub project: &'s Project,
    /// The key.
    pub key: &'s Key,
}

impl KeyCaller<'_> {
    /// Checks the key's scopes allow what the route asks for.
    pub fn check_scope(&self, need: Need) -> Result<(), ApiError> {
        check_scope(self.key, need)
    }

    /// Whether the key opens endpoint `slug` (its allow-list names it, or it has none).
    pub fn opens(&self, endpoint: &str) -> bool {
        check_endpoint(self.key, endpoint).is_ok()
    }

    /// Whether the key may use `model`, by its name or an alias (what `/v1/models` lists).
    pub fn lists(&self, model: &Model) -> bool {
        lists(self.key, model)
    }

    /// The tier the key runs under where no endpoint names one: its own, else the project's
    /// default; and whether it is the key's own.
    pub fn tier(&self) -> (&Arc<Tier>, bool) {
        match &self.key.tier {
            Some(tier) => (tier, true),
            None => (&self.project.default_tier, false),
        }
    }
}

/// Finds the key the client presented and decides everything the request head can: the key is
/// valid now, opens the path's project and endpoint, and may be used from `ip`. `query_key` is
/// the `?key=` parameter, which the server took out of the URI before anything could record it.
/// Another
/// project's key gets the same answer as an unknown path, so tenants learn nothing about each
/// other.
#[allow(clippy::too_many_arguments)] // each is one thing the check needs; a struct would only rename them
pub fn identify<'s, B>(
    snapshot: &'s Snapshot,
    token: &'s TokenSlot,
    request: &Request<B>,
    query_key: Option<&[u8]>,
    target: &Target<'_>,
    ip: IpAddr,
    now: Timestamp,
    unknown_path: impl Fn() -> ApiError,
) -> Result<Caller<'s>, Refused<'s>> {
    let KeyCaller { project, key } = find_key(snapshot, token, request, query_key, target.project, now, &unknown_path)?;
    let endpoint = project.endpoints.get(target.endpoint).ok_or_else(&unknown_path)?;
    let refused = |error| Refused { error, at: Some((project, endpoint)) };
    check_source(key, ip).map_err(refused)?;
    check_endpoint(key, &endpoint.slug).map_err(refused)?;
    let tier = key.tier.as_ref().or(endpoint.tier.as_ref()).unwrap_or(&project.default_tier);
    Ok(Caller { project, endpoint, key, tier, client: ip })
}

/// Finds the key the client presented for a project-level API (`/<project>/v1/...`): valid
/// now, opening the path's project, used from an allowed address. Another project's key gets
/// the same answer as an unknown path.
#[allow(clippy::too_many_arguments)] // each is one thing the check needs; a struct would only rename them
pub fn identify_key<'s, B>(
    snapshot: &'s Snapshot,
    token: &'s TokenSlot,
    request: &Request<B>,
    query_key: Option<&[u8]>,
    project: &str,
    ip: IpAddr,
    now: Timestamp,
    unknown_path: impl Fn() -> ApiError,
) -> Result<KeyCaller<'s>, ApiError> {
    let caller = find_key(snapshot, token, request, query_key, project, now, &unknown_path)?;
    check_source(caller.key, ip)?;
    Ok(caller)
}

/// The key presented, if it exists, opens `project` and has not expired; or, on a project
/// that takes JWTs, the verified token's key.
fn find_key<'s, B>(
    snapshot: &'s Snapshot,
    token: &'s TokenSlot,
    request: &Request<B>,
    query_key: Option<&[u8]>,
    project: &str,
    now: Timestamp,
    unknown_path: &impl Fn() -> ApiError,
) -> Result<KeyCaller<'s>, ApiError> {
    let credential = presented_credential(request.headers(), query_key);
    let credential = credential.filter(|c| !c.is_empty()).ok_or(ApiError::MissingKey)?;
    if jwt::looks_like_jwt(credential)
        && let Some(found) = snapshot.projects.get(project)
        && let Some(settings) = &found.jwt
    {
        let key = token_key(settings, found, credential, now).map_err(ApiError::TokenInvalid)?;
        let key = match token.0.set(key) {
            Ok(()) => token.0.get(),
            // A request is identified once; a second token would be a server bug, refused.
            Err(_) => None,
        };
        let key = key.ok_or(ApiError::InvalidKey)?;
        return Ok(KeyCaller { project: found, key });
    }
    let hash: [u8; 32] = Sha256::digest(credential).into();
    let found = snapshot.key(&hash).ok_or(ApiError::InvalidKey)?;
    if *found.project.slug != *project {
        return Err(unknown_path());
    }
    let expired = |at: Option<Timestamp>| at.is_some_and(|t| t <= now);
    if expired(found.key.expires_at) || expired(found.hash_expires) {
        return Err(ApiError::KeyExpired);
    }
    Ok(KeyCaller { project: found.project, key: found.key })
}

/// The key of a verified token: its subject's counters, its scopes, its tier (when the claim
/// names a tier the configuration holds) and the project's per-subject budget.
fn token_key(settings: &ProjectJwt, project: &Project, token: &[u8], now: Timestamp) -> Result<Key, jwt::TokenError> {
    let keys = settings.keys.current();
    let verified = jwt::verify(token, &settings.config, &keys, now.as_second()).inspect_err(|error| {
        // A set not fetched yet is being fetched already: only a loaded set's miss asks again.
        if matches!(error, jwt::TokenError::KeyUnknown(_)) && !keys.is_empty() {
            settings.keys.kid_missed();
        }
    })?;
    let subject = settings.subjects.get(&verified.subject);
    let tier = verified.tier.as_deref().and_then(|name| settings.tiers.get(name)).cloned();
    tracing::trace!(project = %project.slug, subject = %subject.id, "token verified");
    Ok(Key {
        id: subject.id,
        scopes: verified.scopes,
        endpoints: None,
        models: None,
        tier,
        expires_at: Timestamp::from_second(verified.expires_at).ok(),
        cidrs: Vec::new(),
        budget: settings.config.budget.clone(),
        state: subject.state,
    })
}

impl Caller<'_> {
    /// Checks the key's scopes allow what the route asks for.
    pub fn check_scope(&self, need: Need) -> Result<(), ApiError> {
        check_scope(self.key, need)
    }

    /// Checks the key may use a model requested as `requested` (a name or alias) that
    /// resolved to `model`.
    pub fn check_model(&self, requested: &str, model: &str) -> Result<(), ApiError> {
        if self.may_use(requested, model) { Ok(()) } else { Err(ApiError::ModelNotAllowed(requested.to_owned())) }
    }

    /// Whether the key may use `model` requested as `requested`: either spelling on the
    /// allow-list opens it.
    pub fn may_use(&self, requested: &str, model: &str) -> bool {
        model_allowed(self.key, requested, model)
    }

    /// Whether `/v1/models` shows `model` to this key: it may use it by its name or an alias.
    pub fn lists(&self, model: &Model) -> bool {
        lists(self.key, model)
    }
}

/// The credential a client presented: `Authorization: Bearer`, `x-api-key` (Anthropic style),
/// `x-goog-api-key` or `?key=` (Gemini style, taken from the URI as `query_key`), in that order.
pub fn presented_credential<'r>(headers: &'r HeaderMap, query_key: Option<&'r [u8]>) -> Option<&'r [u8]> {
    if let Some(value) = headers.get(hyper::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(bytes[7..].trim_ascii());
        }
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(value) = headers.get(name) {
            return Some(value.as_bytes().trim_ascii());
        }
    }
    query_key
}

/// Checks the client's address against the key's allowed networks.
fn check_source(key: &Key, ip: IpAddr) -> Result<(), ApiError> {
    if key.cidrs.is_empty() {
        return Ok(());
    }
    // An IPv4 client seen through an IPv6 socket is still an IPv4 client.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if key.cidrs.iter().any(|net| net.contains(&ip)) { Ok(()) } else { Err(ApiError::IpNotAllowed(ip)) }
}

/// Checks the key's endpoint allow-list.
fn check_endpoint(key: &Key, endpoint: &str) -> Result<(), ApiError> {
    match &key.endpoints {
        Some(allowed) if !allowed.contains(endpoint) => Err(ApiError::EndpointNotAllowed(endpoint.to_owned())),
        _ => Ok(()),
    }
}

fn check_scope(key: &Key, need: Need) -> Result<(), ApiError> {
    let has = |scope| key.scopes.contains(&scope);
    match need {
        Need::Inference(api) if !has(Scope::Inference) => {
            Err(ApiError::ScopeInsufficient { needed: Scope::Inference.as_str(), api })
        }
        Need::ListModels if !has(Scope::Inference) && !has(Scope::ModelsRead) => {
            Err(ApiError::ScopeInsufficient { needed: Scope::ModelsRead.as_str(), api: "/v1/models" })
        }
        // Who manages a project's keys may see what they spend.
        Need::UsageRead if !has(Scope::UsageRead) && !has(Scope::Management) => {
            Err(ApiError::ScopeInsufficient { needed: Scope::UsageRead.as_str(), api: "/v1/usage" })
        }
        Need::Management(api) if !has(Scope::Management) => {
            Err(ApiError::ScopeInsufficient { needed: Scope::Management.as_str(), api })
        }
        _ => Ok(()),
    }
}

fn lists(key: &Key, model: &Model) -> bool {
    model_allowed(key, &model.name, &model.name)
        || model.aliases.iter().any(|(alias, _)| model_allowed(key, alias, &model.name))
}

fn model_allowed(key: &Key, requested: &str, model: &str) -> bool {
    key.models.as_ref().is_none_or(|allowed| allowed.contains(requested) || allowed.contains(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::KeyState;
    use crate::snapshot::FastSet;
    use hyper::header::HeaderValue;

    fn key(scopes: &[Scope]) -> Key {
        Key {
            id: "ns/key".into(),
            scopes: scopes.to_vec(),
            endpoints: None,
            models: None,
            tier: None,
            expires_at: None,
            cidrs: vec![],
            budget: None,
            state: Arc::new(KeyState::new()),
        }
    }

    fn set(names: &[&str]) -> Option<FastSet<String>> {
        Some(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn credentials_come_from_any_supported_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_credential(&headers, Some(b"abc")), Some(&b"abc"[..]));
        headers.insert("x-goog-api-key", HeaderValue::from_static("goog"));
        assert_eq!(presented_credential(&headers, None), Some(&b"goog"[..]));
        headers.insert("x-api-key", HeaderValue::from_static("anthropic"));
        assert_eq!(presented_credential(&headers, None), Some(&b"anthropic"[..]));
        headers.insert("authorization", HeaderValue::from_static("BEARER  sl_x "));
        assert_eq!(presented_credential(&headers, None), Some(&b"sl_x"[..]));
        headers.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_credential(&headers, None), Some(&b"anthropic"[..]), "Basic is not a key");
    }

    #[test]
    fn source_addresses_are_checked_as_ipv4_when_mapped() {
        let mut key = key(&[Scope::Inference]);
        assert!(check_source(&key, "203.0.113.9".parse().expect("ip")).is_ok(), "no networks: anywhere");
        key.cidrs = vec!["10.0.0.0/8".parse().expect("net")];
        assert!(check_source(&key, "10.1.2.3".parse().expect("ip")).is_ok());
        assert!(check_source(&key, "::ffff:10.1.2.3".parse().expect("ip")).is_ok());
        match check_source(&key, "::ffff:192.0.2.1".parse().expect("ip")) {
            Err(ApiError::IpNotAllowed(ip)) => assert_eq!(ip.to_string(), "192.0.2.1"),
            other => panic!("expected ip_not_allowed, got {other:?}"),
        }
    }

    #[test]
    fn endpoint_allow_lists_name_slugs() {
        let mut key = key(&[Scope::Inference]);
        assert!(check_endpoint(&key, "chat").is_ok());
        key.endpoints = set(&["chat"]);
        assert!(check_endpoint(&key, "chat").is_ok());
        assert!(matches!(check_endpoint(&key, "embed"), Err(ApiError::EndpointNotAllowed(e)) if e == "embed"));
    }

    #[test]
    fn models_read_lists_but_does_not_call() {
        let reader = key(&[Scope::ModelsRead]);
        assert!(check_scope(&reader, Need::ListModels).is_ok());
        match check_scope(&reader, Need::Inference("/v1/embeddings")) {
            Err(ApiError::ScopeInsufficient { needed, api }) => {
                assert_eq!((needed, api), ("inference", "/v1/embeddings"))
            }
            other => panic!("expected scope_insufficient, got {other:?}"),
        }
        let caller = key(&[Scope::Inference]);
        assert!(check_scope(&caller, Need::ListModels).is_ok(), "inference also lists");
        assert!(matches!(check_scope(&key(&[]), Need::ListModels), Err(ApiError::ScopeInsufficient { .. })));
    }

    #[test]
    fn only_usage_read_reads_the_projects_usage() {
        assert!(check_scope(&key(&[Scope::UsageRead]), Need::UsageRead).is_ok());
        assert!(check_scope(&key(&[Scope::Management]), Need::UsageRead).is_ok(), "a key manager sees spend");
        assert!(check_scope(&key(&[Scope::Management]), Need::Management("/v1/keys")).is_ok());
        assert!(check_scope(&key(&[Scope::Inference, Scope::UsageRead]), Need::Management("/v1/keys")).is_err());
        assert!(check_scope(&key(&[Scope::Management]), Need::Inference("/v1/chat/completions")).is_err());
        match check_scope(&key(&[Scope::Inference, Scope::ModelsRead]), Need::UsageRead) {
            Err(ApiError::ScopeInsufficient { needed, api }) => assert_eq!((needed, api), ("usage.read", "/v1/usage")),
            other => panic!("expected scope_insufficient, got {other:?}"),
        }
        assert!(check_scope(&key(&[Scope::UsageRead]), Need::Inference("/v1/chat/completions")).is_err());
    }

    #[test]
    fn either_spelling_of_a_model_opens_it() {
        let mut key = key(&[Scope::Inference]);
        assert!(model_allowed(&key, "anything", "anything"), "no allow-list: every model");
        key.models = set(&["m-old"]);
        assert!(model_allowed(&key, "m-old", "m-ok"), "the alias is listed");
        assert!(!model_allowed(&key, "m-ok", "m-ok"), "the model itself is not");
        key.models = set(&["m-ok"]);
        assert!(model_allowed(&key, "m-old", "m-ok"), "the model opens its aliases");
    }
}
