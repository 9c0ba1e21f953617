//! `GET /v1/models` and `GET /v1/models/{id}`: the models this key may use on this endpoint,
//! with their aliases and prices under the caller's tier, answered from the snapshot.

use jiff::Timestamp;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::resolve;
use crate::route::Route;
use crate::snapshot::{Model, Snapshot};

/// The JSON answer to a models `route`. An existing model the key may not use is not found,
/// as if it did not exist.
pub fn answer(snapshot: &Snapshot, caller: &Caller<'_>, route: Route<'_>, now: Timestamp) -> Result<String, ApiError> {
    let created = snapshot.loaded_at.as_second();
    let describe = |model: &Model| {
        let aliases: Vec<&str> = model
            .aliases
            .iter()
            .filter(|(_, sunset)| sunset.is_none_or(|s| s > now))
            .map(|(name, _)| name.as_str())
            .collect();
        let pricing = model.backends.first().and_then(|b| b.pricing.as_ref()).map(|p| {
            let m = caller.tier.config.price_multiplier;
            serde_json::json!({
                "currency": "USD",
                "input_per_million": p.input_per_million * m,
                "cached_input_per_million": p.cached_input_per_million * m,
                "output_per_million": p.output_per_million * m,
            })
        });
        serde_json::json!({
            "id": &*model.name,
            "object": "model",
            "created": created,
            "owned_by": model.owned_by,
            "context_window": model.context_window,
            "max_output_tokens": model.max_output_tokens,
            "pricing": pricing,
            "capabilities": model.capabilities,
            "aliases": aliases,
        })
    };
    let body = match route {
        Route::GetModel(id) => {
            let model = resolve::lookup(caller.endpoint, id, now)?.model;
            if !caller.may_use(id, &model.name) {
                return Err(ApiError::ModelNotFound(id.to_owned()));
            }
            describe(model)
        }
        _ => {
            let data: Vec<serde_json::Value> =
                caller.endpoint.models.iter().filter(|m| caller.lists(m)).map(describe).collect();
            serde_json::json!({"object": "list", "data": data})
        }
    };
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::test_snapshot;

    #[test]
    fn a_key_sees_only_the_models_it_may_use() {
        let snapshot = test_snapshot();
        let project = &snapshot.projects["acme"];
        let key = project.keys.iter().find(|k| &*k.id == "acme/reader").expect("key");
        let caller = Caller {
            project,
            endpoint: &project.endpoints["chat"],
            key,
            tier: &project.default_tier,
            client: std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().expect("time");
        let list: serde_json::Value =
            serde_json::from_str(&answer(&snapshot, &caller, Route::ListModels, now).expect("list")).expect("json");
        let ids: Vec<&str> = list["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
        assert_eq!(ids, ["m"], "listed through its alias; the others are not");
        assert_eq!(
            list["data"][0]["aliases"],
            serde_json::json!(["m-latest", "m-old"]),
            "retired aliases are not shown"
        );
        assert!(answer(&snapshot, &caller, Route::GetModel("m-latest"), now).is_ok());
        assert!(matches!(
            answer(&snapshot, &caller, Route::GetModel("hidden"), now),
            Err(ApiError::ModelNotFound(id)) if id == "hidden"
        ));
        assert!(matches!(
            answer(&snapshot, &caller, Route::GetModel("m-gone"), now),
            Err(ApiError::ModelRetired { .. })
        ));
    }
}
