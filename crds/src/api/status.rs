//! Status conventions shared by every kind: `conditions` and `observedGeneration`.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Schema of `status.conditions`: a list keyed by `type`, so server-side apply merges one
/// condition at a time instead of replacing the list.
pub(super) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("description".into(), "Ready, ReferencesResolved and Degraded conditions.".into());
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}
