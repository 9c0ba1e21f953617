//! The config Secret contract between the planes: how one project's compiled `GatewayConfig` is
//! laid out in Secrets. The operator writes with [`split`]; the gateway reads with [`assemble`]
//! (through the API) or [`assemble_dir`] (the Secret mounted as files). Nothing else spells a
//! name, a data key or the hash.
//!
//! Primary `sluice-config-<slug>`: `hash` (the content hash) and either `config.json` (the
//! canonical JSON, at most [`SHARD_BYTES`]) or `shards` (the decimal count N >= 2). Shard i is
//! `sluice-config-<slug>-shard-<i>` with its bytes under `part`, mounted as `config.json.part-<i>`.
//! A reader concatenates the parts in order and accepts the result only if its SHA-256 matches
//! `hash`, so a half-written set is retried, never served. Writers write shards first and the
//! primary last.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};

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

/// The data of one Secret.
pub type SecretData = BTreeMap<String, ByteString>;

/// Name of a project's primary config Secret.
pub fn primary_name(slug: &str) -> String {
    format!("sluice-config-{slug}")
}

/// Name of shard `index` of a project's config.
pub fn shard_name(slug: &str, index: usize) -> String {
    shard_of_primary(&primary_name(slug), index)
}

/// Name of shard `index` beside the primary Secret `primary` (what a reader that knows only the
/// primary's name asks for).
pub fn shard_of_primary(primary: &str, index: usize) -> String {
    format!("{primary}-shard-{index}")
}

/// File name of shard `index` in the mounted directory.
pub fn part_file_name(index: usize) -> String {
    format!("{CONFIG_FIELD}.part-{index}")
}

/// `sha256:<hex>` of the bytes: equals [`crate::config::GatewayConfig::content_hash`] for
/// canonical bytes.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A configuration laid out as Secret data, ready for the writer to wrap in Secrets.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// `sha256:<hex>` of the bytes.
    pub hash: String,
    /// Size of the bytes.
    pub size: usize,
    /// The primary Secret's data.
    pub primary: SecretData,
    /// Each shard Secret's data, in order; empty when the primary holds the whole configuration.
    pub shards: Vec<SecretData>,
}

/// Lays out canonical configuration bytes, sharding at `shard_bytes` ([`SHARD_BYTES`] outside
/// tests).
pub fn split(bytes: &[u8], shard_bytes: usize) -> Split {
    let hash = content_hash(bytes);
    let mut primary = SecretData::from([(HASH_FIELD.to_owned(), ByteString(hash.clone().into_bytes()))]);
    let mut shards = Vec::new();
    if bytes.len() <= shard_bytes {
        primary.insert(CONFIG_FIELD.to_owned(), ByteString(bytes.to_vec()));
    } else {
        shards = bytes
            .chunks(shard_bytes.max(1))
            .map(|chunk| SecretData::from([(PART_FIELD.to_owned(), ByteString(chunk.to_vec()))]))
            .collect();
        primary.insert(SHARDS_FIELD.to_owned(), ByteString(shards.len().to_string().into_bytes()));
    }
    Split { hash, size: bytes.len(), primary, shards }
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
    #[error("configuration hash is {actual}, expected {expected}: shards out of step")]
    HashMismatch {
        /// `hash` from the primary.
        expected: String,
        /// Hash of what was assembled.
        actual: String,
    },
}

/// How many shards the primary names: `None` when it holds the whole configuration.
pub fn shard_count(primary: &SecretData) -> Result<Option<usize>, AssembleError> {
    if primary.contains_key(CONFIG_FIELD) {
        return Ok(None);
    }
    let count = primary.get(SHARDS_FIELD).ok_or(AssembleError::Missing(CONFIG_FIELD))?;
    let text = String::from_utf8_lossy(&count.0).into_owned();
    text.trim().parse::<usize>().ok().filter(|n| *n >= 2).map(Some).ok_or(AssembleError::BadCount(text))
}

/// Reassembles a configuration: `shard` gives shard i's data. The bytes are returned only if
/// they hash to the primary's `hash`.
pub fn assemble<'a>(
    primary: &'a SecretData,
    shard: impl Fn(usize) -> Option<&'a SecretData>,
) -> Result<Vec<u8>, AssembleError> {
    let expected = primary.get(HASH_FIELD).ok_or(AssembleError::Missing(HASH_FIELD))?;
    let expected = String::from_utf8_lossy(&expected.0).trim().to_owned();
    let bytes = match shard_count(primary)? {
        None => primary.get(CONFIG_FIELD).map(|config| config.0.clone()).unwrap_or_default(),
        Some(count) => {
            let mut bytes = Vec::new();
            for index in 0..count {
                let part =
                    shard(index).and_then(|data| data.get(PART_FIELD)).ok_or(AssembleError::MissingShard(index))?;
                bytes.extend_from_slice(&part.0);
            }
            bytes
        }
    };
    let actual = content_hash(&bytes);
    if actual != expected {
        return Err(AssembleError::HashMismatch { expected, actual });
    }
    Ok(bytes)
}

/// A sharded configuration as the gateway's pod sees it: the primary Secret mounted as files
/// (`hash`, `shards`) beside each shard's `part` as `config.json.part-<i>`. `Ok(None)` when the
/// directory holds no shards (a whole `config.json` is read like any other document).
pub fn assemble_dir(dir: &Path) -> Result<Option<Vec<u8>>, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let mut parts: BTreeMap<usize, ByteString> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.filter_map(Result::ok) {
        let name = entry.file_name();
        let index = name.to_str().and_then(|n| n.strip_prefix(CONFIG_FIELD)?.strip_prefix(".part-")?.parse().ok());
        if let Some(index) = index {
            parts.insert(index, ByteString(std::fs::read(entry.path()).map_err(|e| io(&entry.path(), e))?));
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let mut primary = SecretData::new();
    for field in [HASH_FIELD, SHARDS_FIELD] {
        let path = dir.join(field);
        match std::fs::read(&path) {
            Ok(bytes) => {
                primary.insert(field.to_owned(), ByteString(bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
    }
    // A projection without the primary's `shards` key still names its shards by their files.
    let last = parts.keys().max().copied().unwrap_or(0);
    primary.entry(SHARDS_FIELD.to_owned()).or_insert_with(|| ByteString((last + 1).to_string().into_bytes()));
    let shards: Vec<SecretData> = (0..=last)
        .map(|index| {
            parts.remove(&index).map(|part| SecretData::from([(PART_FIELD.to_owned(), part)])).unwrap_or_default()
        })
        .collect();
    assemble(&primary, |index| shards.get(index).filter(|data| !data.is_empty()))
        .map(Some)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_config_stays_in_the_primary() {
        let split = split(b"{\"a\":1}", 16);
        assert!(split.shards.is_empty());
        assert_eq!(split.primary[CONFIG_FIELD].0, b"{\"a\":1}");
        assert_eq!(split.primary[HASH_FIELD].0, split.hash.as_bytes());
        assert!(!split.primary.contains_key(SHARDS_FIELD));
        assert_eq!(shard_count(&split.primary), Ok(None));
        assert_eq!(assemble(&split.primary, |_| None).expect("assembles"), b"{\"a\":1}");
    }

    #[test]
    fn a_large_config_is_sharded_in_order_and_reassembles() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let split = split(&bytes, 30);
        assert_eq!(split.shards.len(), 4);
        assert_eq!(split.primary[SHARDS_FIELD].0, b"4");
        assert_eq!(shard_count(&split.primary), Ok(Some(4)));
        assert!(!split.primary.contains_key(CONFIG_FIELD));
        assert!(split.shards.iter().all(|shard| shard[PART_FIELD].0.len() <= 30));
        assert_eq!(assemble(&split.primary, |i| split.shards.get(i)).expect("assembles"), bytes);
    }

    #[test]
    fn a_half_written_set_is_rejected() {
        let old = split(&[1u8; 90], 30);
        let new = split(&[2u8; 90], 30);
        // New primary, but one shard still from the old set.
        let mixed = |i: usize| if i == 1 { old.shards.get(i) } else { new.shards.get(i) };
        let error = assemble(&new.primary, mixed).expect_err("mixed shards");
        assert!(matches!(error, AssembleError::HashMismatch { .. }));
        assert!(error.to_string().contains("shards out of step"), "{error}");
        assert_eq!(assemble(&new.primary, |i| new.shards.get(i + 1)), Err(AssembleError::MissingShard(2)));
    }

    #[test]
    fn a_primary_without_content_or_count_says_what_is_missing() {
        let hash_only = SecretData::from([(HASH_FIELD.to_owned(), ByteString(b"sha256:00".to_vec()))]);
        assert_eq!(assemble(&hash_only, |_| None), Err(AssembleError::Missing(CONFIG_FIELD)));
        let mut one = hash_only.clone();
        one.insert(SHARDS_FIELD.to_owned(), ByteString(b"1".to_vec()));
        assert_eq!(assemble(&one, |_| None), Err(AssembleError::BadCount("1".to_owned())));
        assert_eq!(assemble(&SecretData::new(), |_| None), Err(AssembleError::Missing(HASH_FIELD)));
    }

    #[test]
    fn names_follow_the_slug() {
        assert_eq!(primary_name("team-a"), "sluice-config-team-a");
        assert_eq!(shard_name("team-a", 3), "sluice-config-team-a-shard-3");
        assert_eq!(shard_of_primary(&primary_name("team-a"), 3), shard_name("team-a", 3));
        assert_eq!(part_file_name(2), "config.json.part-2");
    }

    fn mount(split: &Split, with_count: bool, skip: Option<usize>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(HASH_FIELD), &split.primary[HASH_FIELD].0).expect("write");
        if with_count {
            std::fs::write(dir.path().join(SHARDS_FIELD), &split.primary[SHARDS_FIELD].0).expect("write");
        }
        for (index, shard) in split.shards.iter().enumerate().filter(|(i, _)| Some(*i) != skip) {
            std::fs::write(dir.path().join(part_file_name(index)), &shard[PART_FIELD].0).expect("write");
        }
        dir
    }

    #[test]
    fn a_mounted_set_reassembles_and_a_missing_shard_is_named() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let split = split(&bytes, 30);
        for with_count in [true, false] {
            let dir = mount(&split, with_count, None);
            assert_eq!(assemble_dir(dir.path()).expect("reads"), Some(bytes.clone()));
            let gap = mount(&split, with_count, Some(1));
            let error = assemble_dir(gap.path()).expect_err("a gap");
            assert!(error.ends_with("shard 1 is missing"), "{error}");
        }
        // The last shard is missing: only the primary's count can tell.
        let short = mount(&split, true, Some(3));
        assert!(assemble_dir(short.path()).expect_err("short").ends_with("shard 3 is missing"));
        assert_eq!(assemble_dir(tempfile::tempdir().expect("tempdir").path()), Ok(None));
    }
}
