//! Which model a request names: a model's own name or one of its aliases on the endpoint, an
//! alias deprecated (answered with headers that say so) or retired (refused), and whether that
//! model may take this call: the key's allow-list, the API's capability, the endpoint's
//! `max_tokens` cap.

use jiff::Timestamp;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::protocol::openai::RequestFields;
use crate::route::Api;
use crate::snapshot::{Endpoint, Model, NameTarget};

/// A model name resolved on an endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Resolved<'s> {
    /// The model.
    pub model: &'s Model,
    /// Set when the name was a deprecated alias.
    pub deprecation: Option<Deprecation<'s>>,
}

/// A deprecated alias: when it stops working and what to use instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deprecation<'s> {
    /// When the alias is retired, if it is scheduled to be.
    pub sunset: Option<Timestamp>,
    /// The model's own name.
    pub replacement: &'s str,
}

/// Finds `name` on `endpoint`: unknown names and aliases past their sunset are refused.
pub fn lookup<'s>(endpoint: &'s Endpoint, name: &str, now: Timestamp) -> Result<Resolved<'s>, ApiError> {
    let target = endpoint.resolve(name).ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))?;
    let model = &endpoint.models[target.model()];
    let mut deprecation = None;
    if let NameTarget::Alias { deprecated, sunset, .. } = target {
        if let Some(sunset) = sunset.filter(|s| *s <= now) {
            return Err(ApiError::ModelRetired {
                alias: name.to_owned(),
                sunset: sunset.strftime("%Y-%m-%d").to_string(),
                replacement: model.name.to_string(),
            });
        }
        if deprecated {
            deprecation = Some(Deprecation { sunset, replacement: &model.name });
        }
    }
    Ok(Resolved { model, deprecation })
}

/// Resolves the model a call to `api` names, and checks the caller may use it and it can take
/// the call.
pub fn resolve<'s>(
    caller: &Caller<'s>,
    api: Api,
    fields: &RequestFields<'_>,
    now: Timestamp,
) -> Result<Resolved<'s>, ApiError> {
    let resolved = lookup(caller.endpoint, &fields.model, now)?;
    let model = resolved.model;
    caller.check_model(&fields.model, &model.name)?;
    if !model.capabilities.contains(&api.capability()) {
        return Err(ApiError::ModelUnsupported { model: model.name.to_string(), api: api.display() });
    }
    if let (Some(cap), Some(asked)) = (caller.endpoint.max_tokens, fields.max_tokens)
        && asked > cap
    {
        return Err(ApiError::InvalidParam {
            param: "max_tokens",
            code: "max_tokens_exceeded",
            message: format!("max_tokens is {asked}, above this endpoint's limit of {cap}"),
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::read_fields;
    use crate::snapshot::{Snapshot, test_snapshot};

    fn caller<'s>(snapshot: &'s Snapshot, key: &str) -> Caller<'s> {
        let project = &snapshot.projects["acme"];
        let key = project.keys.iter().find(|k| &*k.id == key).expect("key");
        Caller {
            project,
            endpoint: &project.endpoints["chat"],
            key,
            tier: &project.default_tier,
            client: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn names_and_aliases_resolve_to_the_model() {
        let snapshot = test_snapshot();
        let endpoint = &snapshot.projects["acme"].endpoints["chat"];
        let own = lookup(endpoint, "m", now()).expect("own name");
        assert_eq!((&*own.model.name, own.deprecation), ("m", None));
        let alias = lookup(endpoint, "m-latest", now()).expect("alias");
        assert_eq!((&*alias.model.name, alias.deprecation), ("m", None), "an alias is not deprecated by itself");
        assert!(matches!(lookup(endpoint, "nope", now()), Err(ApiError::ModelNotFound(name)) if name == "nope"));
    }

    #[test]
    fn aliases_with_a_sunset_are_deprecated_then_retired() {
        let snapshot = test_snapshot();
        let endpoint = &snapshot.projects["acme"].endpoints["chat"];
        let old = lookup(endpoint, "m-old", now()).expect("not yet retired");
        let sunset: Timestamp = "2099-01-01T00:00:00Z".parse().expect("time");
        assert_eq!(old.deprecation, Some(Deprecation { sunset: Some(sunset), replacement: "m" }));
        match lookup(endpoint, "m-gone", now()) {
            Err(error @ ApiError::ModelRetired { .. }) => {
                assert_eq!(error.to_string(), "The model alias 'm-gone' was retired on 2020-01-01; use 'm' instead.")
            }
            other => panic!("expected a retired alias, got {other:?}"),
        }
    }

    #[test]
    fn calls_check_the_allow_list_then_the_capability_then_max_tokens() {
        let snapshot = test_snapshot();
        let caller = caller(&snapshot, "acme/caller");
        let resolve_body = |api, body: &str| {
            let fields = read_fields(body.as_bytes()).expect("fields");
            resolve(&caller, api, &fields, now()).map(|r| r.model.name.to_string())
        };
        assert_eq!(resolve_body(Api::ChatCompletions, r#"{"model":"m-old"}"#).expect("allowed alias"), "m");
        assert!(matches!(
            resolve_body(Api::ChatCompletions, r#"{"model":"m"}"#),
            Err(ApiError::ModelNotAllowed(name)) if name == "m"
        ));
        assert!(matches!(
            resolve_body(Api::ChatCompletions, r#"{"model":"e"}"#),
            Err(ApiError::ModelUnsupported { api: "/v1/chat/completions", .. })
        ));
        assert!(matches!(
            resolve_body(Api::ChatCompletions, r#"{"model":"m-old","max_tokens":101}"#),
            Err(ApiError::InvalidParam { code: "max_tokens_exceeded", .. })
        ));
        assert!(resolve_body(Api::ChatCompletions, r#"{"model":"m-old","max_tokens":100}"#).is_ok());
    }
}
