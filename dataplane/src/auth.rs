//! Authentication and authorization: find the key by the hash of what the client sent, then
//! check project, expiry, source address, scope, endpoint and model.

use std::net::IpAddr;

use hyper::HeaderMap;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use sluice_crds::api::Scope;

use crate::error::ApiError;
use crate::snapshot::{FoundKey, Key, Snapshot};

/// The credential a client presented: `Authorization: Bearer`, `x-api-key` (Anthropic style),
/// `x-goog-api-key` or `?key=` (Gemini style), in that order.
pub fn presented_credential<'r>(headers: &'r HeaderMap, query: Option<&'r str>) -> Option<&'r [u8]> {
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
    query?.split('&').find_map(|pair| pair.strip_prefix("key=")).map(str::as_bytes)
}

/// Finds the key the client presented and checks it is valid now for this project.
/// Another project's key gets the same answer as an unknown path, so tenants learn nothing
/// about each other.
pub fn authenticate<'s>(
    snapshot: &'s Snapshot,
    credential: Option<&[u8]>,
    project_slug: &str,
    now: Timestamp,
    unknown_path: impl FnOnce() -> ApiError,
) -> Result<FoundKey<'s>, ApiError> {
    let credential = credential.filter(|c| !c.is_empty()).ok_or(ApiError::MissingKey)?;
    let hash: [u8; 32] = Sha256::digest(credential).into();
    let found = snapshot.key(&hash).ok_or(ApiError::InvalidKey)?;
    if *found.project.slug != *project_slug {
        return Err(unknown_path());
    }
    let expired = |at: Option<Timestamp>| at.is_some_and(|t| t <= now);
    if expired(found.key.expires_at) || expired(found.hash_expires) {
        return Err(ApiError::KeyExpired);
    }
    Ok(found)
}

/// Checks the client's address against the key's allowed networks.
pub fn check_source(key: &Key, ip: IpAddr) -> Result<(), ApiError> {
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

/// What a request needs from the key's scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Calling a model.
    Inference(&'static str),
    /// Listing models.
    ListModels,
}

/// Checks the key's scopes.
pub fn check_scope(key: &Key, need: Need) -> Result<(), ApiError> {
    let has = |scope| key.scopes.contains(&scope);
    match need {
        Need::Inference(api) if !has(Scope::Inference) => {
            Err(ApiError::ScopeInsufficient { needed: Scope::Inference.as_str(), api })
        }
        Need::ListModels if !has(Scope::Inference) && !has(Scope::ModelsRead) => {
            Err(ApiError::ScopeInsufficient { needed: Scope::ModelsRead.as_str(), api: "/v1/models" })
        }
        _ => Ok(()),
    }
}

/// Checks the key's endpoint allow-list.
pub fn check_endpoint(key: &Key, endpoint: &str) -> Result<(), ApiError> {
    match &key.endpoints {
        Some(allowed) if !allowed.contains(endpoint) => Err(ApiError::EndpointNotAllowed(endpoint.to_owned())),
        _ => Ok(()),
    }
}

/// Whether the key may use a model requested as `requested` (a name or alias) resolving to
/// `model`: either spelling on the allow-list opens it.
pub fn model_allowed(key: &Key, requested: &str, model: &str) -> bool {
    key.models.as_ref().is_none_or(|allowed| allowed.contains(requested) || allowed.contains(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn credentials_come_from_any_supported_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_credential(&headers, Some("a=1&key=abc")), Some(&b"abc"[..]));
        headers.insert("x-goog-api-key", HeaderValue::from_static("goog"));
        assert_eq!(presented_credential(&headers, None), Some(&b"goog"[..]));
        headers.insert("x-api-key", HeaderValue::from_static("anthropic"));
        assert_eq!(presented_credential(&headers, None), Some(&b"anthropic"[..]));
        headers.insert("authorization", HeaderValue::from_static("BEARER  sl_x "));
        assert_eq!(presented_credential(&headers, None), Some(&b"sl_x"[..]));
        headers.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_credential(&headers, None), Some(&b"anthropic"[..]), "Basic is not a key");
    }
}
