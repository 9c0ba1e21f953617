//! The objects the compiler reads: the five Sluice kinds and the Secrets and ConfigMaps they
//! reference.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;

use crate::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};

/// One object of the input.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A tenant.
    Project(Project),
    /// A set of exposed models.
    Endpoint(Endpoint),
    /// A credential.
    ApiKey(ApiKey),
    /// An upstream.
    Provider(Provider),
    /// A class of service.
    ServiceTier(ServiceTier),
    /// Credentials and key material (and upstream CA bundles and client certificates).
    Secret(SecretData),
    /// Upstream CA bundles.
    ConfigMap(ConfigMapData),
}

impl Object {
    /// Which object this is, for messages.
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Self::Project(o) => ObjectRef::namespaced("Project", o),
            Self::Endpoint(o) => ObjectRef::namespaced("Endpoint", o),
            Self::ApiKey(o) => ObjectRef::namespaced("ApiKey", o),
            Self::Provider(o) => ObjectRef::namespaced("Provider", o),
            Self::ServiceTier(o) => ObjectRef { kind: "ServiceTier", namespace: None, name: o.name_any() },
            Self::Secret(s) => ObjectRef { kind: "Secret", namespace: Some(s.namespace.clone()), name: s.name.clone() },
            Self::ConfigMap(c) => {
                ObjectRef { kind: "ConfigMap", namespace: Some(c.namespace.clone()), name: c.name.clone() }
            }
        }
    }
}

/// Names one object: `Endpoint team-a/chat`, `ServiceTier gold`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Kind.
    pub kind: &'static str,
    /// Namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    fn namespaced<K: ResourceExt>(kind: &'static str, object: &K) -> Self {
        Self { kind, namespace: Some(namespace_of(object)), name: object.name_any() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// The namespace of a namespaced object; `default` when unset, as `kubectl apply` would.
pub fn namespace_of<K: ResourceExt>(object: &K) -> String {
    object.namespace().unwrap_or_else(|| "default".to_owned())
}

/// A Secret reduced to what the compiler needs: decoded `data` (with `stringData` merged over it,
/// as the API server does).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretData {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Decoded values by key.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl From<&Secret> for SecretData {
    fn from(secret: &Secret) -> Self {
        let mut data: BTreeMap<String, Vec<u8>> =
            secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        for (k, v) in secret.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        Self { namespace: namespace_of(secret), name: secret.name_any(), data }
    }
}

/// A ConfigMap reduced to what the compiler needs: `data` and `binaryData` in one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapData {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Values by key.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl From<&ConfigMap> for ConfigMapData {
    fn from(config_map: &ConfigMap) -> Self {
        let mut data: BTreeMap<String, Vec<u8>> =
            config_map.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        for (k, v) in config_map.data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        Self { namespace: namespace_of(config_map), name: config_map.name_any(), data }
    }
}
