//! Putting YAML manifests into the control plane: CRDs (waiting until served) and any other kind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::Status;
use kube::discovery::Scope;
use kube::runtime::wait::{await_condition, conditions};

/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "sluice-testenv";

/// Every document of a multi-document YAML text, empty documents left out.
pub fn parse_yaml_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// The `*.yaml` and `*.yml` files of `dir`, sorted by name.
pub fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Server-side applies every CustomResourceDefinition in the YAML files of `dir` and waits until
/// each is Established. Returns the CRDs' names. Any other kind in those files is an error.
pub async fn install_crds(client: &Client, dir: &Path) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for doc in parse_yaml_documents(&text).with_context(|| format!("in {}", file.display()))? {
            let crd: CustomResourceDefinition = serde_json::from_value(doc)
                .with_context(|| format!("{} holds something other than a CustomResourceDefinition", file.display()))?;
            let name = crd.metadata.name.clone().with_context(|| format!("a CRD in {} has no name", file.display()))?;
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
                .await
                .with_context(|| format!("the apiserver rejected CRD {name} from {}", file.display()))?;
            names.push(name);
        }
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(Duration::from_secs(30), established).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err).with_context(|| format!("waiting for CRD {name}")),
            Err(_) => {
                let conditions = api.get(name).await.ok().and_then(|crd| crd.status).and_then(|s| s.conditions);
                bail!("CRD {name} not Established after 30 s; conditions: {conditions:?}");
            }
        }
    }
    Ok(names)
}

/// Server-side applies every object in `yaml` (any kinds the apiserver serves, CRs included) and
/// returns what the apiserver stored. Namespaced objects go into `namespace`, whatever their
/// manifest says, so that tests stay isolated; cluster-scoped objects keep their names.
///
/// Field validation is strict, as with `kubectl apply`: a field the schema does not know is an
/// error, not silently pruned.
///
/// A rejection keeps the apiserver's answer: see [`api_status`].
pub async fn apply_yaml(client: &Client, namespace: &str, yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for doc in parse_yaml_documents(yaml)? {
        let mut object: DynamicObject = serde_json::from_value(doc).context("a manifest is not a Kubernetes object")?;
        let types = object.types.as_ref().context("a manifest has no apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(types).context("a manifest's apiVersion")?;
        let name =
            object.metadata.name.clone().with_context(|| format!("a {} manifest has no metadata.name", gvk.kind))?;
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("the apiserver does not serve {}/{} {}", gvk.group, gvk.version, gvk.kind))?;
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => {
                object.metadata.namespace = Some(namespace.to_owned());
                Api::namespaced_with(client.clone(), namespace, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let stored = api
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {} {name}", gvk.kind))?;
        applied.push(stored);
    }
    Ok(applied)
}

/// The apiserver's own answer (`Status`: code, reason, message) inside an error from this crate or
/// from kube, if the error came from the apiserver.
pub fn api_status(err: &anyhow::Error) -> Option<&Status> {
    match err.downcast_ref::<kube::Error>()? {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}
