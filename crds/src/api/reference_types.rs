//! References from one object to another (Providers, Secrets).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Points at a Provider by name. Without a namespace, the Provider is looked up in the object's
/// own namespace first, then in the platform's shared namespace (`sluice-system` by default).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    /// Name of the Provider.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Provider: the object's own namespace or the platform's shared namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Selects one key of a Secret in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}
