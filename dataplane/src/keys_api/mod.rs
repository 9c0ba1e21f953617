//! The key-management API, for keys with the `management` scope: `GET|POST /<project>/v1/keys`
//! lists and creates keys, `GET|PATCH|DELETE /<project>/v1/keys/{name}` reads, updates and
//! revokes one, `POST /<project>/v1/keys/{name}/rotate` replaces a key, the old one working
//! through a grace period.
//!
//! Keys are `ApiKey` objects, so `kubectl`, GitOps and this API see one truth ([`store`]: the
//! apiserver in a cluster, the config folder standalone). A key minted here is stored only as
//! its hash (`spec.keyHash`); its plaintext is in the creating (or rotating) answer and nowhere
//! else. Request and answer fields are the CRD's (`allowedCidrs`, `expiresAt`, `budget.limitUsd`),
//! so a manifest and an API call read alike. A key may grant only scopes the caller holds.

pub mod store;

use std::collections::BTreeSet;

use hyper::{Response, StatusCode};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde_json::{Map, Value, json};
use sluice_crds::api::{ApiKey, ApiKeySpec, Scope};
use sluice_crds::keys;

use crate::Gateway;
use crate::accounting::RequestId;
use crate::auth::{KeyCaller, Need};
use crate::error::ApiError;
use crate::respond::{self, body::ResponseBody};
use crate::route::ProjectRoute;
use crate::snapshot::Project;

pub use store::KeyStore;

/// Largest request body of the key APIs.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Spec fields a request may set: the CRD's, less the key material's.
const WRITABLE: [&str; 8] =
    ["description", "scopes", "endpoints", "models", "tier", "expiresAt", "allowedCidrs", "budget"];
/// A rotation's grace period unless the request gives one, s (the CRD's default).
const DEFAULT_GRACE_SECONDS: i64 = 86_400;
/// Longest grace period, s (the CRD's bound).
const MAX_GRACE_SECONDS: i64 = 2_592_000;
/// Annotation naming the key that created or last changed an object over this API.
const CHANGED_BY_ANNOTATION: &str = "sluice.dev/changed-by";

/// Answers a key API call of `caller` with the request's `body`.
pub async fn answer(
    gateway: &Gateway,
    caller: KeyCaller<'_>,
    route: ProjectRoute<'_>,
    method: &hyper::Method,
    body: &[u8],
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, ApiError> {
    caller.check_scope(Need::Management(route.display()))?;
    let store = gateway.key_store();
    let namespace = &*caller.project.namespace;
    let now = Timestamp::now();
    let (status, value, action, name) = match (route, method.as_str()) {
        (ProjectRoute::Keys, "GET") => {
            let mut keys = store.list(namespace).await?;
            keys.sort_by_key(ResourceExt::name_any);
            let data: Vec<Value> = keys.iter().map(view).collect();
            (StatusCode::OK, json!({"object": "list", "data": data}), "list", String::new())
        }
        (ProjectRoute::Keys, _) => {
            let mut fields = object(body)?;
            let name = match fields.remove("name") {
                None | Some(Value::Null) => generated_name(),
                Some(Value::String(name)) if sluice_crds::compile::is_dns_label(&name) => name,
                Some(_) => {
                    return Err(invalid("name", "'name' must be a DNS label: lowercase letters, digits and '-'."));
                }
            };
            // Every field at its CRD default (scopes: inference), then the request's.
            let defaults: ApiKeySpec =
                serde_json::from_value(json!({})).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            let spec = merged_spec(&defaults, fields, caller, now)?;
            let (key, hashed) = keys::mint(&caller.project.slug, now, None, &mut rand::rng());
            let apikey = ApiKey {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_owned()),
                    annotations: Some([(CHANGED_BY_ANNOTATION.to_owned(), caller.key.id.to_string())].into()),
                    ..ObjectMeta::default()
                },
                spec: ApiKeySpec { key_hash: Some(hashed), ..spec },
                status: None,
            };
            let created = store.create(apikey).await?;
            let mut value = view(&created);
            value["key"] = json!(key);
            (StatusCode::CREATED, value, "create", name)
        }
        (ProjectRoute::Key(name), "GET") => {
            (StatusCode::OK, view(&store.get(namespace, name).await?), "get", name.to_owned())
        }
        (ProjectRoute::Key(name), "PATCH") => {
            let fields = object(body)?;
            if fields.contains_key("name") {
                return Err(invalid("name", "A key's name cannot change: create a new key and revoke this one."));
            }
            let mut apikey = store.get(namespace, name).await?;
            apikey.spec = merged_spec(&apikey.spec, fields, caller, now)?;
            changed_by(&mut apikey, caller);
            let updated = store.replace(apikey).await?;
            (StatusCode::OK, view(&updated), "update", name.to_owned())
        }
        (ProjectRoute::Key(name), _) => {
            store.delete(namespace, name).await?;
            (StatusCode::OK, json!({"object": "api_key", "name": name, "deleted": true}), "revoke", name.to_owned())
        }
        (ProjectRoute::RotateKey(name), _) => {
            let grace = grace_period(body)?;
            let mut apikey = store.get(namespace, name).await?;
            let Some(current) = apikey.spec.key_hash.clone() else {
                return Err(ApiError::KeyNotRotatable(rotation_hint(&apikey)));
            };
            let until = now.checked_add(SignedDuration::from_secs(grace)).unwrap_or(now);
            let (key, hashed) = keys::mint(&caller.project.slug, now, Some((&current, until)), &mut rand::rng());
            apikey.spec.key_hash = Some(hashed);
            changed_by(&mut apikey, caller);
            let rotated = store.replace(apikey).await?;
            let mut value = view(&rotated);
            value["key"] = json!(key);
            (StatusCode::OK, value, "rotate", name.to_owned())
        }
        _ => return Err(ApiError::MethodNotAllowed(method.to_string())),
    };
    gateway.metrics.count_unrouted(&caller.project.slug, "", status.as_u16());
    tracing::info!(target: "sluice::access", request_id = %request_id, project = %caller.project.slug,
        key = %caller.key.id, api = route.display(), action, target = %name, status = status.as_u16(), "key management");
    let mut response = respond::json(value.to_string());
    *response.status_mut() = status;
    if action == "create" || action == "rotate" {
        // The answer holds a key: no cache between here and the client may keep it.
        response
            .headers_mut()
            .insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// What the API shows of a key: its spec less the key material, its prefix and state. Never
/// the key or its hash.
pub fn view(apikey: &ApiKey) -> Value {
    let mut value = serde_json::to_value(&apikey.spec).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for hidden in ["secretRef", "keyHash", "rotation"] {
            fields.remove(hidden);
        }
    }
    let status = apikey.status.as_ref();
    let hashed = apikey.spec.key_hash.as_ref();
    value["object"] = json!("api_key");
    value["name"] = json!(apikey.name_any());
    value["source"] = json!(match (&apikey.spec.secret_ref, hashed) {
        (Some(_), _) => "secret",
        (None, Some(_)) => "minted",
        (None, None) => "generated",
    });
    value["keyPrefix"] =
        json!(status.and_then(|s| s.key_prefix.clone()).or_else(|| hashed.and_then(|h| h.prefix.clone())));
    value["issuedAt"] =
        json!(hashed.and_then(|h| h.issued_at.clone()).or_else(|| status.and_then(|s| s.issued_at.clone())));
    value["previousKeyExpiresAt"] = json!(
        hashed
            .and_then(|h| h.previous.as_ref().map(|p| p.expires_at.clone()))
            .or_else(|| status.and_then(|s| s.previous_key_expires_at.clone()))
    );
    value["createdAt"] = json!(apikey.metadata.creation_timestamp);
    value["currentPeriodSpendUsd"] = json!(status.and_then(|s| s.current_period_spend_usd));
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")).map(|c| c.status == "True");
    value["ready"] = json!(ready);
    value
}

/// The body as a JSON object (an empty body is an empty object).
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::InvalidJson("expected a JSON object".into())),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// `base` with the request's `fields` applied as a JSON merge patch (`null` removes a field),
/// read back through the CRD's own type and checked against the project and the caller.
fn merged_spec(
    base: &ApiKeySpec,
    fields: Map<String, Value>,
    caller: KeyCaller<'_>,
    now: Timestamp,
) -> Result<ApiKeySpec, ApiError> {
    let mut merged = serde_json::to_value(base).unwrap_or_default();
    for (field, value) in fields {
        let Some(&known) = WRITABLE.iter().find(|w| **w == field) else {
            return Err(invalid_owned(
                "body",
                format!("Unknown or read-only field '{field}'. Writable fields: {}.", WRITABLE.join(", ")),
            ));
        };
        match value {
            Value::Null => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove(known);
                }
            }
            value => merged[known] = value,
        }
    }
    let spec: ApiKeySpec = serde_json::from_value(merged).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    check(&spec, caller, now)?;
    Ok(spec)
}

/// What the compiler would refuse, said before anything is written: a key that cannot work
/// must not reach the store (standalone, it would hold back every later change).
fn check(spec: &ApiKeySpec, caller: KeyCaller<'_>, now: Timestamp) -> Result<(), ApiError> {
    let project = caller.project;
    if spec.scopes.is_empty() {
        return Err(invalid("scopes", "'scopes' needs at least one scope."));
    }
    // Listing models is part of inference: a key that calls models may grant either.
    let holds = |scope: &Scope| {
        caller.key.scopes.contains(scope)
            || (*scope == Scope::ModelsRead && caller.key.scopes.contains(&Scope::Inference))
    };
    if let Some(scope) = spec.scopes.iter().find(|s| !holds(s)) {
        return Err(ApiError::ScopeNotGrantable(scope.as_str()));
    }
    if spec.description.as_ref().is_some_and(|d| d.chars().count() > 256) {
        return Err(invalid("description", "'description' is at most 256 characters."));
    }
    let slugs: BTreeSet<&str> = match &spec.endpoints {
        Some(list) => {
            if let Some(unknown) = list.iter().find(|slug| !project.endpoints.contains_key(slug.as_str())) {
                return Err(invalid_owned("endpoints", format!("This project has no endpoint '{unknown}'.")));
            }
            list.iter().map(String::as_str).collect()
        }
        None => project.endpoints.keys().map(String::as_str).collect(),
    };
    if let Some(models) = &spec.models
        && let Some(unknown) = models.iter().find(|m| !slugs.iter().any(|slug| serves(project, slug, m)))
    {
        return Err(invalid_owned("models", format!("No allowed endpoint serves a model or alias '{unknown}'.")));
    }
    if let Some(tier) = &spec.tier
        && !project.tiers.iter().any(|t| **t == **tier)
    {
        let known: Vec<&str> = project.tiers.iter().map(|t| &**t).collect();
        return Err(invalid_owned(
            "tier",
            format!("Unknown tier '{tier}'; this project's tiers: {}.", known.join(", ")),
        ));
    }
    if spec.expires_at.as_ref().is_some_and(|t| t.0 <= now) {
        return Err(invalid("expiresAt", "'expiresAt' must be in the future."));
    }
    if let Some(cidr) = spec
        .allowed_cidrs
        .iter()
        .flatten()
        .find(|c| c.parse::<ipnet::IpNet>().is_err() && c.parse::<std::net::IpAddr>().is_err())
    {
        return Err(invalid_owned(
            "allowedCidrs",
            format!("'{cidr}' is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32)."),
        ));
    }
    if spec.budget.as_ref().is_some_and(|b| !(0.0..=1e9).contains(&b.limit_usd)) {
        return Err(invalid("budget", "'budget.limitUsd' must be from 0 to 1000000000."));
    }
    Ok(())
}

/// Whether endpoint `slug` of `project` serves `model` by name or alias.
fn serves(project: &Project, slug: &str, model: &str) -> bool {
    project.endpoints.get(slug).is_some_and(|endpoint| endpoint.resolve(model).is_some())
}

/// The grace period a rotation request asks for (`gracePeriodSeconds`, the CRD's name).
fn grace_period(body: &[u8]) -> Result<i64, ApiError> {
    let mut fields = object(body)?;
    let grace = match fields.remove("gracePeriodSeconds") {
        None | Some(Value::Null) => DEFAULT_GRACE_SECONDS,
        Some(value) => value.as_i64().filter(|s| (0..=MAX_GRACE_SECONDS).contains(s)).ok_or_else(|| {
            invalid("gracePeriodSeconds", "'gracePeriodSeconds' must be a whole number from 0 to 2592000.")
        })?,
    };
    if let Some(field) = fields.keys().next() {
        return Err(invalid_owned(
            "body",
            format!("Unknown field '{field}'. A rotation takes only 'gracePeriodSeconds'."),
        ));
    }
    Ok(grace)
}

/// Why a key not minted here cannot be rotated here, and how it is rotated.
fn rotation_hint(apikey: &ApiKey) -> String {
    match &apikey.spec.secret_ref {
        Some(reference) => format!(
            "Key '{}' comes from Secret '{}': rotate it by changing that Secret.",
            apikey.name_any(),
            reference.name
        ),
        None => format!(
            "Key '{}' is generated by the operator into a Secret: rotate it with spec.rotation (kubectl), \
             or create a new key here and revoke this one.",
            apikey.name_any()
        ),
    }
}

fn changed_by(apikey: &mut ApiKey, caller: KeyCaller<'_>) {
    apikey.annotations_mut().insert(CHANGED_BY_ANNOTATION.to_owned(), caller.key.id.to_string());
    // The apiserver owns these; a replace sends the object as it was read otherwise.
    apikey.status = None;
    apikey.metadata.managed_fields = None;
}

/// A name for a key created without one: `key-` and 10 random lowercase characters.
fn generated_name() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..10).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    format!("key-{suffix}")
}

fn invalid(param: &'static str, message: &str) -> ApiError {
    invalid_owned(param, message.to_owned())
}

fn invalid_owned(param: &'static str, message: String) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_value", message }
}
