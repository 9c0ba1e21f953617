//! The config Secret contract between the operator and the gateway: one project's compiled
//! `GatewayConfig` as a primary Secret, sharded over several Secrets when it outgrows one.
//!
//! Primary `sluice-config-<slug>`: `hash` (the content hash) and either `config.json` (the
//! canonical JSON, at most [`SHARD_BYTES`]) or `shards` (the decimal count N >= 2). Shard i is
//! `sluice-config-<slug>-shard-<i>` with its bytes under `part`. A reader concatenates the parts
//! in order and accepts the result only if its SHA-256 matches `hash`, so a half-written set is
//! retried, never served. Writers write shards first and the primary last.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use sluice_crds::config::GatewayConfig;

use crate::labels::{CONFIG_HASH_ANNOTATION, OWNER_ANNOTATION, project_labels};

/// Largest `config.json` or `part` value: 900 KiB, leaving room under the apiserver's 1 MiB
/// Secret limit for metadata.
pub const SHARD_BYTES: usize = 900 * 1024;
/// Data key of the unsharded configuration in the primary Secret.
pub const CONFIG_FIELD: &str = "config.json";
/// Data key of the content hash (`sha256:<hex>`) in the primary Secret.
pub const HASH_FIELD: &str = "hash";
/// Data key of the shard count in the primary Secret of a sharded configuration.
pub const SHARDS_FIELD: &str = "shards";
/// Data key of a shard's bytes.
pub const PART_FIELD: &str = "part";
/// File name of shard `i` in the mounted fallback directory.
pub fn part_file_name(index: usize) -> String {
    format!("{CONFIG_FIELD}.part-{index}")
}

/// Name of a project's primary config Secret.
pub fn primary_name(slug: &str) -> String {
    format!("sluice-config-{slug}")
}

/// Name of shard `index` of a project's config.
pub fn shard_name(slug: &str, index: usize) -> String {
    format!("sluice-config-{slug}-shard-{index}")
}

/// `sha256:<hex>` of the bytes: equals [`GatewayConfig::content_hash`] for canonical bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

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
    let hash = content_hash(bytes);
    let secret = |name: String, data: BTreeMap<String, ByteString>| Secret {
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
    let mut primary_data = BTreeMap::from([(HASH_FIELD.to_owned(), ByteString(hash.clone().into_bytes()))]);
    let mut shards = Vec::new();
    if bytes.len() <= shard_bytes {
        primary_data.insert(CONFIG_FIELD.to_owned(), ByteString(bytes.to_vec()));
    } else {
        for (index, chunk) in bytes.chunks(shard_bytes.max(1)).enumerate() {
            let data = BTreeMap::from([(PART_FIELD.to_owned(), ByteString(chunk.to_vec()))]);
            shards.push(secret(shard_name(target.slug, index), data));
        }
        primary_data.insert(SHARDS_FIELD.to_owned(), ByteString(shards.len().to_string().into_bytes()));
    }
    ConfigSecrets {
        hash: hash.clone(),
        size: bytes.len(),
        shards,
        primary: secret(primary_name(target.slug), primary_data),
    }
}

/// Why a set of config Secrets does not (yet) hold a whole configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssembleError {
    /// The primary lacks a field.
    #[error("the primary config Secret has no {0:?}")]
    Missing(&'static str),
    /// `shards` is not a count of at least 2.
    #[error("the primary config Secret's shards value {0:?} is not a count of at least 2")]
    BadCount(String),
    /// A shard is absent or has no `part`.
    #[error("shard {0} is missing")]
    MissingShard(usize),
    /// The parts do not hash to `hash`: a write is in progress.
    #[error("the configuration hashes to {actual}, the primary says {expected}")]
    HashMismatch {
        /// `hash` from the primary.
        expected: String,
        /// Hash of what was assembled.
        actual: String,
    },
}

/// Reassembles a configuration the way the gateway does: `shard` gives shard i's data.
pub fn assemble<'a>(
    primary: &'a BTreeMap<String, ByteString>,
    shard: impl Fn(usize) -> Option<&'a BTreeMap<String, ByteString>>,
) -> Result<Vec<u8>, AssembleError> {
    let expected = primary.get(HASH_FIELD).ok_or(AssembleError::Missing(HASH_FIELD))?;
    let expected = String::from_utf8_lossy(&expected.0).into_owned();
    let bytes = match (primary.get(CONFIG_FIELD), primary.get(SHARDS_FIELD)) {
        (Some(config), _) => config.0.clone(),
        (None, Some(count)) => {
            let text = String::from_utf8_lossy(&count.0).into_owned();
            let count = text.trim().parse::<usize>().ok().filter(|n| *n >= 2).ok_or(AssembleError::BadCount(text))?;
            let mut bytes = Vec::new();
            for index in 0..count {
                let part =
                    shard(index).and_then(|data| data.get(PART_FIELD)).ok_or(AssembleError::MissingShard(index))?;
                bytes.extend_from_slice(&part.0);
            }
            bytes
        }
        (None, None) => return Err(AssembleError::Missing(CONFIG_FIELD)),
    };
    let actual = content_hash(&bytes);
    if actual != expected {
        return Err(AssembleError::HashMismatch { expected, actual });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
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
    fn a_half_written_set_is_rejected() {
        let old = build_from_bytes(TARGET, &[1u8; 90], 30);
        let new = build_from_bytes(TARGET, &[2u8; 90], 30);
        // New primary, but one shard still from the old set.
        let mixed = |i: usize| if i == 1 { old.shards.get(i).map(data) } else { new.shards.get(i).map(data) };
        assert!(matches!(assemble(data(&new.primary), mixed), Err(AssembleError::HashMismatch { .. })));
        assert_eq!(
            assemble(data(&new.primary), |i| new.shards.get(i + 1).map(data)),
            Err(AssembleError::MissingShard(2))
        );
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
