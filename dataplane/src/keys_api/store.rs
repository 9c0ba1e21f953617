//! Where the key API keeps `ApiKey` objects: the apiserver (the gateway's ServiceAccount may
//! read and write ApiKeys in its tenant's namespace, nothing else), or, standalone, the config
//! folder, one JSON manifest per key written here (`key.<namespace>.<name>.json`), which the
//! folder watch reloads like any edit. Keys from other files are listed and read, but changed
//! only where they are written.

use std::path::{Path, PathBuf};

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use sluice_crds::api::ApiKey;
use sluice_crds::manifests::load_path;
use sluice_crds::objects::Object;

use crate::error::ApiError;

/// First line of a key manifest this API wrote (JSON has no comments: a field of its own).
const WRITTEN_BY: &str = "sluice-gateway key API";

/// Where keys are kept.
#[derive(Clone)]
pub enum KeyStore {
    /// ApiKey objects through the apiserver.
    Cluster(Client),
    /// Manifests in the config folder.
    Folder(PathBuf),
    /// Nowhere: why not.
    Unavailable(String),
}

impl KeyStore {
    /// Every ApiKey in `namespace`.
    pub async fn list(&self, namespace: &str) -> Result<Vec<ApiKey>, ApiError> {
        match self {
            Self::Cluster(client) => {
                let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
                Ok(api.list(&ListParams::default()).await.map_err(failed)?.items)
            }
            Self::Folder(dir) => folder_keys(dir, namespace),
            Self::Unavailable(why) => Err(ApiError::KeyManagementUnavailable(why.clone())),
        }
    }

    /// ApiKey `name` in `namespace`.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<ApiKey, ApiError> {
        match self {
            Self::Cluster(client) => {
                let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
                api.get_opt(name).await.map_err(failed)?.ok_or_else(|| ApiError::KeyNotFound(name.to_owned()))
            }
            Self::Folder(dir) => folder_key(dir, namespace, name),
            Self::Unavailable(why) => Err(ApiError::KeyManagementUnavailable(why.clone())),
        }
    }

    /// Creates `apikey`; a name in use is refused.
    pub async fn create(&self, apikey: ApiKey) -> Result<ApiKey, ApiError> {
        let (namespace, name) = (apikey.namespace().unwrap_or_default(), apikey.name_any());
        match self {
            Self::Cluster(client) => {
                let api: Api<ApiKey> = Api::namespaced(client.clone(), &namespace);
                api.create(&PostParams::default(), &apikey).await.map_err(|e| match e {
                    kube::Error::Api(status) if status.code == 409 => ApiError::KeyExists(name.clone()),
                    other => failed(other),
                })
            }
            Self::Folder(dir) => {
                if folder_keys(dir, &namespace)?.iter().any(|key| key.name_any() == name) {
                    return Err(ApiError::KeyExists(name));
                }
                write(&dir.join(file_name(&namespace, &name)), &apikey)?;
                Ok(apikey)
            }
            Self::Unavailable(why) => Err(ApiError::KeyManagementUnavailable(why.clone())),
        }
    }

    /// Replaces an ApiKey read from this store with `apikey`; refused when it changed meanwhile.
    pub async fn replace(&self, apikey: ApiKey) -> Result<ApiKey, ApiError> {
        let (namespace, name) = (apikey.namespace().unwrap_or_default(), apikey.name_any());
        match self {
            Self::Cluster(client) => {
                let api: Api<ApiKey> = Api::namespaced(client.clone(), &namespace);
                api.replace(&name, &PostParams::default(), &apikey).await.map_err(|e| match e {
                    kube::Error::Api(status) if status.code == 409 => ApiError::KeyConflict(format!(
                        "Key '{name}' changed while this request ran; read it again and retry."
                    )),
                    kube::Error::Api(status) if status.code == 404 => ApiError::KeyNotFound(name.clone()),
                    other => failed(other),
                })
            }
            Self::Folder(dir) => {
                let path = written_here(dir, &namespace, &name)?;
                write(&path, &apikey)?;
                Ok(apikey)
            }
            Self::Unavailable(why) => Err(ApiError::KeyManagementUnavailable(why.clone())),
        }
    }

    /// Deletes ApiKey `name` in `namespace`.
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        match self {
            Self::Cluster(client) => {
                let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
                api.delete(name, &DeleteParams::default()).await.map(drop).map_err(|e| match e {
                    kube::Error::Api(status) if status.code == 404 => ApiError::KeyNotFound(name.to_owned()),
                    other => failed(other),
                })
            }
            Self::Folder(dir) => {
                let path = written_here(dir, namespace, name)?;
                std::fs::remove_file(&path)
                    .map_err(|e| ApiError::KeyStoreFailed(format!("{}: {e}", path.display())))?;
                tracing::info!(file = %path.display(), "key manifest removed");
                Ok(())
            }
            Self::Unavailable(why) => Err(ApiError::KeyManagementUnavailable(why.clone())),
        }
    }
}

fn failed(error: kube::Error) -> ApiError {
    tracing::warn!(%error, "the apiserver refused a key API call");
    match error {
        kube::Error::Api(status) if status.code == 403 => ApiError::KeyManagementUnavailable(
            "the gateway's ServiceAccount may not write ApiKeys here (the operator grants it in the tenant's namespace)"
                .to_owned(),
        ),
        kube::Error::Api(status) => ApiError::KeyStoreFailed(status.message),
        other => ApiError::KeyStoreFailed(other.to_string()),
    }
}

/// The manifest this API writes for a key.
fn file_name(namespace: &str, name: &str) -> String {
    format!("key.{namespace}.{name}.json")
}

/// The ApiKeys of `namespace` in the folder.
fn folder_keys(dir: &Path, namespace: &str) -> Result<Vec<ApiKey>, ApiError> {
    let manifests = load_path(dir).map_err(|e| ApiError::KeyStoreFailed(e.to_string()))?;
    Ok(manifests
        .objects
        .into_iter()
        .filter_map(|object| match object {
            Object::ApiKey(key) if key.namespace().as_deref() == Some(namespace) => Some(key),
            _ => None,
        })
        .collect())
}

fn folder_key(dir: &Path, namespace: &str, name: &str) -> Result<ApiKey, ApiError> {
    folder_keys(dir, namespace)?
        .into_iter()
        .find(|key| key.name_any() == name)
        .ok_or_else(|| ApiError::KeyNotFound(name.to_owned()))
}

/// The manifest of key `name` if this API wrote it; a key from another file is the user's.
fn written_here(dir: &Path, namespace: &str, name: &str) -> Result<PathBuf, ApiError> {
    folder_key(dir, namespace, name)?;
    let path = dir.join(file_name(namespace, name));
    let ours = std::fs::read_to_string(&path).is_ok_and(|text| text.contains(WRITTEN_BY));
    if ours {
        Ok(path)
    } else {
        Err(ApiError::KeyConflict(format!(
            "Key '{name}' is defined in a manifest of the config folder that this API did not write; change it there."
        )))
    }
}

/// Writes `apikey` to `path` whole or not at all (a temporary file renamed over it), marked as
/// written here. The folder watch picks it up.
fn write(path: &Path, apikey: &ApiKey) -> Result<(), ApiError> {
    let mut value = serde_json::to_value(apikey).map_err(|e| ApiError::KeyStoreFailed(e.to_string()))?;
    value["metadata"]["annotations"]["sluice.dev/written-by"] = WRITTEN_BY.into();
    if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
    }
    let text = serde_json::to_string_pretty(&value).map_err(|e| ApiError::KeyStoreFailed(e.to_string()))?;
    let temporary = path.with_extension("json.tmp");
    let fail = |e: std::io::Error| ApiError::KeyStoreFailed(format!("{}: {e}", path.display()));
    std::fs::write(&temporary, text).map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)?;
    tracing::info!(file = %path.display(), "key manifest written");
    Ok(())
}
