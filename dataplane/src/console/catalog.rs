//! `GET /<project>/v1/catalog` (any valid key of the project): the endpoints the key opens, with
//! their paths and APIs, and the models it may use there: aliases, capabilities, context window,
//! output limit and each backend's list prices, with the price multiplier of the tier the key runs
//! under on that endpoint. Base URLs are given as paths: the gateway does not know the host its
//! clients reach it by (the console puts its own origin in front).

use jiff::Timestamp;
use serde_json::{Value, json};
use sluice_crds::api::ApiKind;

use crate::auth::KeyCaller;
use crate::snapshot::{Endpoint, Model};

/// The catalog as `caller` sees it, endpoints and models in name order.
pub fn catalog_json(caller: &KeyCaller<'_>, now: Timestamp) -> Value {
    let project = caller.project;
    let mut endpoints: Vec<&Endpoint> = project.endpoints.values().filter(|e| caller.opens(&e.slug)).collect();
    endpoints.sort_by(|a, b| a.slug.cmp(&b.slug));
    let endpoints: Vec<Value> = endpoints
        .into_iter()
        .map(|endpoint| {
            let tier = caller.key.tier.as_ref().or(endpoint.tier.as_ref()).unwrap_or(&project.default_tier);
            let apis: Vec<ApiKind> = ApiKind::ALL.into_iter().filter(|kind| endpoint.serves(*kind)).collect();
            let models: Vec<Value> =
                endpoint.models.iter().filter(|m| caller.lists(m)).map(|m| model_json(m, now)).collect();
            json!({
                "slug": &*endpoint.slug,
                "path": format!("/{}/{}/v1", project.slug, endpoint.slug),
                "apis": apis,
                "tier": {
                    "name": tier.name,
                    "requests_per_minute": tier.config.requests_per_minute,
                    "tokens_per_minute": tier.config.tokens_per_minute,
                    "max_concurrent": tier.config.max_concurrent,
                    "price_multiplier": tier.config.price_multiplier,
                },
                "max_tokens": endpoint.max_tokens,
                "models": models,
            })
        })
        .collect();
    json!({
        "object": "catalog",
        "project": &*project.slug,
        "endpoints": endpoints,
    })
}

/// One model: its names, what it can do, and its backends' prices (USD per million tokens).
fn model_json(model: &Model, now: Timestamp) -> Value {
    let aliases: Vec<Value> = model
        .aliases
        .iter()
        .filter(|(_, sunset)| sunset.is_none_or(|at| at > now))
        .map(|(name, sunset)| json!({"name": name, "sunset": sunset.map(|at| at.to_string())}))
        .collect();
    let backends: Vec<Value> = model
        .backends
        .iter()
        .map(|backend| {
            json!({
                "backend": &*backend.label,
                "priority": backend.priority,
                "weight": backend.weight,
                "pricing": backend.pricing.as_ref().map(|p| json!({
                    "input_per_million": p.input_per_million,
                    "cached_input_per_million": p.cached_input_per_million,
                    "output_per_million": p.output_per_million,
                })),
            })
        })
        .collect();
    json!({
        "id": &*model.name,
        "owned_by": model.owned_by,
        "aliases": aliases,
        "capabilities": model.capabilities,
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "backends": backends,
    })
}
