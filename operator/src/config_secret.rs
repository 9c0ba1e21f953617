//! Writing the config Secret contract (`sluice_crds::config_secret`): a project's compiled
//! `GatewayConfig` as Secrets in the data-plane namespace, labelled and annotated as the
//! operator's. The layout, names and hash belong to the contract; only the wrapping is here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use sluice_crds::config::GatewayConfig;
pub use sluice_crds::config_secret::{
    PART_FIELD, SHARD_BYTES, SHARDS_FIELD, SecretData, part_file_name, primary_name, shard_count, shard_name,
};
use sluice_crds::config_secret::{Split, split};

use crate::labels::{CONFIG_HASH_ANNOTATION, OWNER_ANNOTATION, project_labels};

/// A project's configuration ready to write.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSecrets {
    /// `sha256:<hex>` of the canonical JSON.
    pub hash: String,
    /// Size of the canonical JSON in bytes.
    pub size: usize,
    /// Shard Secrets in order; empty when the primary holds the whole configuration.
    pub shards: Vec<Secret>,
    /// The primary Secret, written last.
    pub primary: Secret,
}

impl ConfigSecrets {
    /// Names of every Secret of the set, primary first: what the gateway's Role may read.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(&self.primary).chain(&self.shards).filter_map(|s| s.metadata.name.clone()).collect()
    }
}

/// Where a project's configuration Secrets go and whose they are.
#[derive(Clone, Copy, Debug)]
pub struct ConfigTarget<'a> {
    /// Project slug.
    pub slug: &'a str,
    /// The data-plane namespace.
    pub namespace: &'a str,
    /// `<namespace>/<name>` of the Project.
    pub owner: &'a str,
}

/// Builds the Secrets for `config`.
pub fn build(target: ConfigTarget<'_>, config: &GatewayConfig) -> Result<ConfigSecrets, serde_json::Error> {
    Ok(build_from_bytes(target, &config.to_canonical_json()?, SHARD_BYTES))
}

/// Builds the Secrets for canonical bytes, sharding at `shard_bytes` (a parameter for tests).
pub fn build_from_bytes(target: ConfigTarget<'_>, bytes: &[u8], shard_bytes: usize) -> ConfigSecrets {
    let Split { hash, size, primary, shards } = split(bytes, shard_bytes);
    let secret = |name: String, data: SecretData| Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(target.namespace.to_owned()),
            labels: Some(project_labels(target.slug, "config")),
            annotations: Some(BTreeMap::from([
                (CONFIG_HASH_ANNOTATION.to_owned(), hash.clone()),
                (OWNER_ANNOTATION.to_owned(), target.owner.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    let shards =
        shards.into_iter().enumerate().map(|(index, data)| secret(shard_name(target.slug, index), data)).collect();
    let primary = secret(primary_name(target.slug), primary);
    ConfigSecrets { hash, size, shards, primary }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use sluice_crds::config_secret::{CONFIG_FIELD, HASH_FIELD, assemble};

    use super::*;

    const TARGET: ConfigTarget<'static> = ConfigTarget { slug: "team-a", namespace: "dp", owner: "team-a/team-a" };

    fn data(secret: &Secret) -> &BTreeMap<String, ByteString> {
        secret.data.as_ref().expect("data")
    }

    #[test]
    fn a_small_config_stays_in_the_primary() {
        let set = build_from_bytes(TARGET, b"{\"a\":1}", 16);
        assert!(set.shards.is_empty());
        assert_eq!(set.primary.metadata.name.as_deref(), Some("sluice-config-team-a"));
        assert_eq!(data(&set.primary)[CONFIG_FIELD].0, b"{\"a\":1}");
        assert_eq!(data(&set.primary)[HASH_FIELD].0, set.hash.as_bytes());
        assert!(!data(&set.primary).contains_key(SHARDS_FIELD));
        let labels = set.primary.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["sluice.dev/project"], "team-a");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "sluice-operator");
        assert_eq!(set.primary.metadata.annotations.as_ref().expect("annotations")[CONFIG_HASH_ANNOTATION], set.hash);
        assert_eq!(assemble(data(&set.primary), |_| None).expect("assembles"), b"{\"a\":1}");
    }

    #[test]
    fn a_large_config_is_sharded_in_order_and_reassembles() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let set = build_from_bytes(TARGET, &bytes, 30);
        assert_eq!(set.shards.len(), 4);
        assert_eq!(data(&set.primary)[SHARDS_FIELD].0, b"4");
        assert!(!data(&set.primary).contains_key(CONFIG_FIELD));
        let names: Vec<_> = set.names();
        assert_eq!(names[0], "sluice-config-team-a");
        assert_eq!(names[4], "sluice-config-team-a-shard-3");
        for shard in &set.shards {
            assert!(data(shard)[PART_FIELD].0.len() <= 30);
            assert_eq!(shard.metadata.annotations.as_ref().expect("annotations")[CONFIG_HASH_ANNOTATION], set.hash);
        }
        let assembled = assemble(data(&set.primary), |i| set.shards.get(i).map(data)).expect("assembles");
        assert_eq!(assembled, bytes);
    }

    #[test]
    fn the_hash_is_the_configs_content_hash() {
        let config: GatewayConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "GatewayConfig",
            "project": {"slug": "p", "namespace": "p", "name": "p", "defaultTier": "t"},
            "tiers": {}, "providers": {}, "endpoints": {}, "keys": []
        }))
        .expect("a config");
        let set = build(TARGET, &config).expect("serializes");
        assert_eq!(set.hash, config.content_hash().expect("hash"));
    }
}
