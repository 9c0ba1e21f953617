//! Labels and annotations the operator writes and reads: the names other tools and the gateway
//! rely on, in one place.

use std::collections::BTreeMap;

/// The field manager of every server-side apply (and of the few creates and replaces).
pub const FIELD_MANAGER: &str = "sluice-operator";

/// `app.kubernetes.io/managed-by: sluice-operator` on everything the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of: sluice`.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/name` of the gateway pods.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/component`: `gateway`, `config`, `usage` or `api-key`.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The project slug on every data-plane object (and its config Secrets).
pub const PROJECT_LABEL: &str = "sluice.dev/project";

/// `<namespace>/<name>` of the Project that owns a data-plane object (which cannot carry an
/// ownerReference, being in another namespace).
pub const OWNER_ANNOTATION: &str = "sluice.dev/owner";
/// Content hash of the configuration in a config Secret (and its shards).
pub const CONFIG_HASH_ANNOTATION: &str = "sluice.dev/config-hash";
/// On an ApiKey: an RFC 3339 time; a time newer than the last rotation rotates the key.
pub const ROTATE_AT_ANNOTATION: &str = "sluice.dev/rotate-at";
/// On a generated key Secret: when its current key was issued.
pub const ISSUED_AT_ANNOTATION: &str = "sluice.dev/issued-at";
/// On a generated key Secret: the rotation request its current key answers.
pub const ROTATED_AT_ANNOTATION: &str = "sluice.dev/rotated-at";

/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGER: &str = "sluice-operator";

/// Finalizer on Projects: their data-plane objects live in another namespace, out of reach of
/// ownerReference garbage collection.
pub const PROJECT_FINALIZER: &str = "sluice.dev/data-plane-cleanup";

/// Finalizer on Providers: a Provider that Endpoints use is deleted only once none does.
pub const PROVIDER_FINALIZER: &str = "sluice.dev/provider-in-use";

/// Labels of every data-plane object of a project.
pub fn project_labels(slug: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
        (PART_OF_LABEL.to_owned(), "sluice".to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (PROJECT_LABEL.to_owned(), slug.to_owned()),
    ])
}

/// Label selector of everything the operator writes into the data-plane namespace.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER},{PROJECT_LABEL}")
}

/// Label selector of the usage ConfigMaps.
pub fn usage_selector() -> String {
    format!("{},{COMPONENT_LABEL}=usage", managed_selector())
}

/// Label selector of gateway pods.
pub fn gateway_pod_selector() -> String {
    format!("{}={},{PROJECT_LABEL}", NAME_LABEL, crate::data_plane::GATEWAY_NAME)
}
