//! Where configurations come from: a folder or file of manifests (compiled here), compiled
//! GatewayConfig documents (also as the operator's sharded Secret, mounted or read through the
//! API), or the quickstart embedded in the binary.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::config::GatewayConfig;
use sluice_crds::manifests::{Manifests, load_str};

/// The quickstart folder, compiled into the binary so the first command needs no files.
pub const QUICKSTART: &[(&str, &str)] = &[
    ("examples/quickstart/00-tier.yaml", include_str!("../../examples/quickstart/00-tier.yaml")),
    ("examples/quickstart/10-project.yaml", include_str!("../../examples/quickstart/10-project.yaml")),
    ("examples/quickstart/20-providers.yaml", include_str!("../../examples/quickstart/20-providers.yaml")),
    ("examples/quickstart/30-endpoint.yaml", include_str!("../../examples/quickstart/30-endpoint.yaml")),
    ("examples/quickstart/40-apikey.yaml", include_str!("../../examples/quickstart/40-apikey.yaml")),
];

/// Data key of the whole configuration in the operator's Secret (and its mounted file).
pub const CONFIG_KEY: &str = "config.json";
/// Data key of the configuration's content hash.
pub const HASH_KEY: &str = "hash";
/// Data key of the shard count when the configuration is split over several Secrets.
pub const SHARDS_KEY: &str = "shards";
/// Data key of one shard's bytes in a shard Secret.
pub const PART_KEY: &str = "part";

/// Compiles the embedded quickstart.
pub fn quickstart(options: &CompileOptions) -> Result<Vec<GatewayConfig>, String> {
    let mut all = Manifests::default();
    for (name, text) in QUICKSTART {
        let manifests = load_str(Path::new(name), text).map_err(|e| e.to_string())?;
        all.objects.extend(manifests.objects);
    }
    compile(&all.objects, options).map_err(|e| e.to_string())
}

/// A fingerprint of what `load_path` would read, to skip reloads when nothing changed.
pub fn fingerprint(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update([0]);
        match std::fs::read(&file) {
            Ok(bytes) => hasher.update(&bytes),
            Err(e) => hasher.update(e.to_string().as_bytes()),
        }
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Reads configurations from a folder or file: the operator's mounted Secret (`config.json`, or
/// `config.json.part-<i>` shards with `hash`), or manifests and GatewayConfig documents.
pub fn load_path(path: &Path, options: &CompileOptions) -> Result<Vec<GatewayConfig>, String> {
    if path.is_dir()
        && let Some(config) = read_sharded_dir(path)?
    {
        return Ok(vec![config]);
    }
    let loaded = sluice_crds::load_and_compile(path, options).map_err(|e| e.to_string())?;
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "skipped a document");
    }
    if loaded.configs.is_empty() {
        return Err(format!("{} holds no Project and no GatewayConfig", path.display()));
    }
    Ok(loaded.configs)
}

/// Parses a configuration whose bytes must hash to `expected` (`sha256:<hex>`).
pub fn parse_verified(bytes: &[u8], expected: Option<&str>) -> Result<GatewayConfig, String> {
    if let Some(expected) = expected {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if actual != expected.trim() {
            return Err(format!("configuration hash is {actual}, expected {}: shards out of step", expected.trim()));
        }
    }
    let config: GatewayConfig = serde_json::from_slice(bytes).map_err(|e| format!("GatewayConfig: {e}"))?;
    config.validate().map_err(|problems| problems.join("; "))?;
    Ok(config)
}

/// The operator's Secret as mounted: shards `config.json.part-<i>` and `hash`. `None` when the
/// folder holds no shards.
fn read_sharded_dir(dir: &Path) -> Result<Option<GatewayConfig>, String> {
    let mut parts: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix("config.json.part-")?.parse().ok()?;
            Some((index, entry.path()))
        })
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    parts.sort();
    let mut bytes = Vec::new();
    for (expected, (index, path)) in parts.iter().enumerate() {
        if *index != expected {
            return Err(format!("{}: shard {expected} is missing", dir.display()));
        }
        bytes.extend(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let hash = std::fs::read_to_string(dir.join(HASH_KEY)).map_err(|e| format!("{}/{HASH_KEY}: {e}", dir.display()))?;
    parse_verified(&bytes, Some(&hash)).map(Some)
}

/// Every configuration's content hash, to tell whether a load changes anything.
pub fn hashes(configs: &[GatewayConfig]) -> Vec<String> {
    configs.iter().map(|c| c.content_hash().unwrap_or_default()).collect()
}
