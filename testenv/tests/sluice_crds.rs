//! Sluice's CRDs (`charts/sluice/crds/`) judged by a real kube-apiserver: every CRD is accepted
//! and Established, every example manifest is accepted, and the apiserver itself rejects a changed
//! immutable slug (CEL), an out-of-range value and an unknown enum value, in its own words.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde_json::{Value, json};
use sluice_testenv::{TestEnv, api_status, apply_yaml, parse_yaml_documents, sluice_crd_dir, workspace_root};

/// (CRD name, kind, scope) of every Sluice API type.
const SLUICE_KINDS: [(&str, &str, &str); 5] = [
    ("apikeys.sluice.dev", "ApiKey", "Namespaced"),
    ("endpoints.sluice.dev", "Endpoint", "Namespaced"),
    ("projects.sluice.dev", "Project", "Namespaced"),
    ("providers.sluice.dev", "Provider", "Namespaced"),
    ("servicetiers.sluice.dev", "ServiceTier", "Cluster"),
];

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The first object of `kind` in an example file.
fn example(relative: &str, kind: &str) -> anyhow::Result<Value> {
    let path = workspace_root().join(relative);
    parse_yaml_documents(&read(&path)?)?
        .into_iter()
        .find(|doc| doc["kind"] == kind)
        .with_context(|| format!("no {kind} in {}", path.display()))
}

/// The OpenAPI schema of `kind`'s field at `path` (e.g. `["spec", "type"]`), from the chart's CRD.
fn schema_of(crd: &str, path: &[&str]) -> anyhow::Result<Value> {
    let file = sluice_crd_dir().join(format!("{crd}.yaml"));
    let doc = parse_yaml_documents(&read(&file)?)?.into_iter().next().context("an empty CRD file")?;
    let mut schema = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for field in path {
        schema = &schema["properties"][field];
    }
    anyhow::ensure!(!schema.is_null(), "{crd} has no field {}", path.join("."));
    Ok(schema.clone())
}

/// Applies `object` (JSON is YAML) and returns the apiserver's rejection message.
async fn rejection(client: &kube::Client, namespace: &str, object: &Value) -> anyhow::Result<String> {
    let err = match apply_yaml(client, namespace, &object.to_string()).await {
        Ok(_) => anyhow::bail!("the apiserver accepted an invalid object: {object}"),
        Err(err) => err,
    };
    let status = api_status(&err).with_context(|| format!("not a rejection by the apiserver: {err:#}"))?;
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    Ok(status.message.clone())
}

#[tokio::test]
async fn every_sluice_crd_is_accepted_and_established() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let installed: BTreeSet<&str> = env.crds().iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = SLUICE_KINDS.iter().map(|(name, ..)| *name).collect();
    assert_eq!(installed, expected, "the CRDs in charts/sluice/crds/");

    let crds: Api<CustomResourceDefinition> = Api::all(env.client()?);
    for (name, kind, scope) in SLUICE_KINDS {
        let crd = crds.get(name).await?;
        assert_eq!(crd.spec.group, "sluice.dev");
        assert_eq!((crd.spec.names.kind.as_str(), crd.spec.scope.as_str()), (kind, scope));
        let served: Vec<&str> = crd.spec.versions.iter().filter(|v| v.served).map(|v| v.name.as_str()).collect();
        assert_eq!(served, ["v1alpha1"], "{name}");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["NamesAccepted", "Established"] {
            let condition = conditions.iter().find(|c| c.type_ == wanted);
            assert_eq!(condition.map(|c| c.status.as_str()), Some("True"), "{name} {wanted}: {conditions:?}");
        }
        let problems: Vec<_> =
            conditions.iter().filter(|c| c.type_ == "NonStructuralSchema" && c.status == "True").collect();
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
    Ok(())
}

/// Applies every manifest of an examples folder into a fresh namespace (strict field validation,
/// so a field the schema lacks fails instead of being pruned) and returns the kinds applied.
async fn apply_examples(env: &TestEnv, folder: &str) -> anyhow::Result<BTreeSet<String>> {
    let client = env.client()?;
    let namespace = env.namespace(&format!("examples-{folder}")).await?;
    let mut kinds = BTreeSet::new();
    let dir = workspace_root().join("examples").join(folder);
    for file in sluice_testenv::yaml_files(&dir)? {
        let applied = apply_yaml(&client, &namespace, &read(&file)?)
            .await
            .with_context(|| format!("the apiserver rejected {}", file.display()))?;
        kinds.extend(applied.iter().filter_map(|o| o.types.as_ref()).map(|t| t.kind.clone()));
    }
    Ok(kinds)
}

#[tokio::test]
async fn every_kubernetes_example_is_accepted() -> anyhow::Result<()> {
    let kinds = apply_examples(TestEnv::shared(), "kubernetes").await?;
    for (_, kind, _) in SLUICE_KINDS {
        assert!(kinds.contains(kind), "examples/kubernetes/ has no {kind}: {kinds:?}");
    }
    Ok(())
}

#[tokio::test]
async fn every_quickstart_example_is_accepted() -> anyhow::Result<()> {
    let kinds = apply_examples(TestEnv::shared(), "quickstart").await?;
    for (_, kind, _) in SLUICE_KINDS {
        assert!(kinds.contains(kind), "examples/quickstart/ has no {kind}: {kinds:?}");
    }
    Ok(())
}

#[tokio::test]
async fn changing_an_immutable_slug_is_rejected_by_cel() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let client = env.client()?;
    for (file, kind) in
        [("examples/kubernetes/30-project.yaml", "Project"), ("examples/kubernetes/40-endpoints.yaml", "Endpoint")]
    {
        let namespace = env.namespace(&format!("slug-{}", kind.to_lowercase())).await?;
        let mut object = example(file, kind)?;
        apply_yaml(&client, &namespace, &object.to_string()).await?;
        object["spec"]["slug"] = json!("renamed");
        let message = rejection(&client, &namespace, &object).await?;
        assert!(message.contains(r#"spec.slug: Invalid value: "string": slug is immutable"#), "{kind}: {message}");
    }
    Ok(())
}

#[tokio::test]
async fn an_out_of_range_value_is_rejected() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let client = env.client()?;
    let namespace = env.namespace("out-of-range").await?;

    let maximum = schema_of("projects.sluice.dev", &["spec", "dataPlane", "replicas"])?["maximum"]
        .as_f64()
        .context("Project spec.dataPlane.replicas has a maximum")?;
    let mut project = example("examples/kubernetes/30-project.yaml", "Project")?;
    // Whole numbers: these are integer fields, and 101.0 would be a type error instead.
    let too_many = maximum as i64 + 1;
    project["spec"]["dataPlane"]["replicas"] = json!(too_many);
    let message = rejection(&client, &namespace, &project).await?;
    let field = "spec.dataPlane.replicas";
    let expected =
        format!("{field}: Invalid value: {too_many}: {field} in body should be less than or equal to {maximum}");
    assert!(message.contains(&expected), "expected {expected:?} in {message:?}");

    let minimum = schema_of("providers.sluice.dev", &["spec", "connectTimeoutMs"])?["minimum"]
        .as_f64()
        .context("Provider spec.connectTimeoutMs has a minimum")?;
    let mut provider = example("examples/kubernetes/20-providers.yaml", "Provider")?;
    let too_short = minimum as i64 - 1;
    provider["spec"]["connectTimeoutMs"] = json!(too_short);
    let message = rejection(&client, &namespace, &provider).await?;
    let field = "spec.connectTimeoutMs";
    let expected =
        format!("{field}: Invalid value: {too_short}: {field} in body should be greater than or equal to {minimum}");
    assert!(message.contains(&expected), "expected {expected:?} in {message:?}");
    Ok(())
}

#[tokio::test]
async fn an_unknown_enum_value_is_rejected() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let client = env.client()?;
    let namespace = env.namespace("unknown-enum").await?;
    // The apiserver lists the schema's enum values, quoted, in schema order.
    let supported = |schema: &Value| -> anyhow::Result<String> {
        let values = schema["enum"].as_array().filter(|v| !v.is_empty()).context("an enum in the schema")?;
        Ok(values.iter().map(Value::to_string).collect::<Vec<_>>().join(", "))
    };

    let mut provider = example("examples/kubernetes/20-providers.yaml", "Provider")?;
    provider["spec"]["type"] = json!("bedrock");
    let message = rejection(&client, &namespace, &provider).await?;
    let expected = format!(
        r#"spec.type: Unsupported value: "bedrock": supported values: {}"#,
        supported(&schema_of("providers.sluice.dev", &["spec", "type"])?)?
    );
    assert!(message.contains(&expected), "expected {expected:?} in {message:?}");

    let mut key = example("examples/kubernetes/50-apikeys.yaml", "ApiKey")?;
    key["spec"]["scopes"] = json!(["admin"]);
    let message = rejection(&client, &namespace, &key).await?;
    let expected = format!(
        r#"spec.scopes[0]: Unsupported value: "admin": supported values: {}"#,
        supported(&schema_of("apikeys.sluice.dev", &["spec", "scopes"])?["items"])?
    );
    assert!(message.contains(&expected), "expected {expected:?} in {message:?}");
    Ok(())
}
