//! The checked-in CRDs are what the types generate, and every schema is structural.

use std::path::PathBuf;

use serde_json::Value;

fn chart_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/sluice/crds")
}

#[test]
fn checked_in_crds_match_the_types() {
    for (file, crd) in sluice_crds::crd_manifests::all() {
        let generated = sluice_crds::crd_manifests::to_yaml(&crd).expect("serialise CRD");
        let on_disk = std::fs::read_to_string(chart_crds().join(file)).unwrap_or_default();
        assert!(
            generated == on_disk,
            "charts/sluice/crds/{file} is stale: run `cargo run -p sluice-crds --bin crdgen` and commit the result"
        );
    }
    let files = std::fs::read_dir(chart_crds()).expect("crds folder").count();
    assert_eq!(files, sluice_crds::crd_manifests::all().len(), "a stray file in charts/sluice/crds");
}

/// Kubernetes' structural schema rules: every node says its type (except int-or-string and
/// preserve-unknown-fields nodes), no `$ref`, no `anyOf`/`oneOf`/`allOf`/`not` outside what
/// int-or-string permits, and `properties` and `additionalProperties` never together.
fn assert_structural(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !node.contains_key("type") && !int_or_string && !preserve {
        problems.push(format!("{path}: no type"));
    }
    if node.contains_key("$ref") {
        problems.push(format!("{path}: $ref"));
    }
    for junction in ["anyOf", "oneOf", "allOf", "not"] {
        if node.contains_key(junction) && !int_or_string {
            problems.push(format!("{path}: {junction}"));
        }
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        problems.push(format!("{path}: properties with additionalProperties"));
    }
    for (name, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        assert_structural(child, &format!("{path}.{name}"), problems);
    }
    if let Some(items) = node.get("items") {
        assert_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(additional @ Value::Object(_)) = node.get("additionalProperties") {
        assert_structural(additional, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn every_schema_is_structural() {
    for (file, crd) in sluice_crds::crd_manifests::all() {
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()))
            .expect("schema to JSON");
        let mut problems = Vec::new();
        assert_structural(&schema, "", &mut problems);
        assert!(problems.is_empty(), "{file} is not structural: {problems:#?}");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{file}: status subresource");
        let status = &schema["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map", "{file}: conditions keyed by type");
        assert!(status.get("observedGeneration").is_some(), "{file}: observedGeneration");
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()), "{file}: short name");
        assert!(version.additional_printer_columns.as_ref().is_some_and(|c| c.len() >= 2), "{file}: printer columns");
    }
}

#[test]
fn every_field_is_documented() {
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        for (name, child) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let here = format!("{path}.{name}");
            if child.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                missing.push(here.clone());
            }
            walk(child, &here, missing);
            if let Some(items) = child.get("items") {
                walk(items, &format!("{here}[]"), missing);
            }
        }
    }
    for (file, crd) in sluice_crds::crd_manifests::all() {
        let schema =
            serde_json::to_value(crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()))
                .expect("schema to JSON");
        let mut missing = Vec::new();
        walk(&schema["properties"]["spec"], "spec", &mut missing);
        walk(&schema["properties"]["status"], "status", &mut missing);
        assert!(
            missing.is_empty(),
            "{file}: fields without a description (kubectl explain shows nothing): {missing:#?}"
        );
    }
}

#[test]
fn slugs_are_immutable_by_cel() {
    for (file, path) in [("projects.sluice.dev.yaml", "slug"), ("endpoints.sluice.dev.yaml", "slug")] {
        let crd = sluice_crds::crd_manifests::all().into_iter().find(|(f, _)| *f == file).expect("crd").1;
        let schema =
            serde_json::to_value(crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()))
                .expect("schema to JSON");
        let rules = &schema["properties"]["spec"]["properties"][path]["x-kubernetes-validations"];
        assert!(
            rules.as_array().into_iter().flatten().any(|r| r["rule"] == "self == oldSelf"),
            "{file}: spec.{path} has no immutability rule"
        );
    }
}
