//! Where configurations come from: a folder or file of manifests (compiled here), compiled
//! GatewayConfig documents (also as the operator's sharded Secret, mounted or read through the
//! API), or the quickstart embedded in the binary.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::config::GatewayConfig;
use sluice_crds::config_secret;
use sluice_crds::manifests::{Manifests, load_str};

/// The quickstart folder, compiled into the binary so the first command needs no files.
pub const QUICKSTART: &[(&str, &str)] = &[
    ("examples/quickstart/00-tier.yaml", include_str!("../../examples/quickstart/00-tier.yaml")),
    ("examples/quickstart/10-project.yaml", include_str!("../../examples/quickstart/10-project.yaml")),
    ("examples/quickstart/20-providers.yaml", include_str!("../../examples/quickstart/20-providers.yaml")),
    ("examples/quickstart/30-endpoint.yaml", include_str!("../../examples/quickstart/30-endpoint.yaml")),
    ("examples/quickstart/40-apikey.yaml", include_str!("../../examples/quickstart/40-apikey.yaml")),
];

/// Compiles the embedded quickstart.
pub fn quickstart(options: &CompileOptions) -> Result<Vec<GatewayConfig>, String> {
    let mut all = Manifests::default();
    for (name, text) in QUICKSTART {
        let manifests = load_str(Path::new(name), text).map_err(|e| e.to_string())?;
        all.objects.extend(manifests.objects);
    }
    compile(&all.objects, options).map_err(|e| e.to_string())
}

/// Whether `file` is one `load_path` reads from a folder: a manifest (`.yaml`, `.yml`, `.json`)
/// or a file of the operator's mounted config Secret (`hash`, `shards`, `config.json.part-<i>`).
/// Anything else in the folder (an audit log, an editor's swap file) neither triggers a reload
/// nor is read to decide one.
pub fn is_config_file(file: &Path) -> bool {
    let name = file.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    file.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        || name == config_secret::HASH_FIELD
        || name == config_secret::SHARDS_FIELD
        || name.strip_prefix(config_secret::CONFIG_FIELD).is_some_and(|rest| rest.starts_with(".part-"))
}

/// A fingerprint of what `load_path` would read, to skip reloads when nothing changed.
pub fn fingerprint(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|entries| {
                entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file() && is_config_file(p)).collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update([0]);
        // Streamed through the hasher: a poll reads every file, and reading a 50,000-key
        // configuration whole would allocate its 7-12 MB on every poll.
        if let Err(e) = std::fs::File::open(&file).and_then(|mut f| std::io::copy(&mut f, &mut hasher)) {
            hasher.update(e.to_string().as_bytes());
        }
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Reads configurations from a folder or file: the operator's mounted Secret (`config.json`, or
/// `config.json.part-<i>` shards with `hash`), or manifests and GatewayConfig documents.
pub fn load_path(path: &Path, options: &CompileOptions) -> Result<Vec<GatewayConfig>, String> {
    if path.is_dir()
        && let Some(bytes) = config_secret::assemble_dir(path)?
    {
        return Ok(vec![parse(&bytes)?]);
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

/// Parses assembled configuration bytes (already checked against the contract's hash).
pub fn parse(bytes: &[u8]) -> Result<GatewayConfig, String> {
    let config: GatewayConfig = serde_json::from_slice(bytes).map_err(|e| format!("GatewayConfig: {e}"))?;
    config.validate().map_err(|problems| problems.join("; "))?;
    Ok(config)
}

/// Every configuration's content hash, to tell whether a load changes anything.
pub fn hashes(configs: &[GatewayConfig]) -> Vec<String> {
    configs.iter().map(|c| c.content_hash().unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_manifests_and_the_config_secret_files_count() {
        for name in ["a.yaml", "b.yml", "c.json", "key.acme.k.json", "hash", "shards", "config.json.part-3"] {
            assert!(is_config_file(Path::new("/cfg").join(name).as_path()), "{name}");
        }
        for name in ["audit.log", ".a.yaml.swp", "notes.txt", "config.json.bak", "hash.old", "README"] {
            assert!(!is_config_file(Path::new("/cfg").join(name).as_path()), "{name}");
        }
    }

    #[test]
    fn the_fingerprint_ignores_files_the_loader_does_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), "kind: Project\n").expect("write");
        let before = fingerprint(dir.path());
        std::fs::write(dir.path().join("audit.log"), "a line\n").expect("write");
        assert_eq!(fingerprint(dir.path()), before, "a log beside the manifests changes nothing");
        std::fs::write(dir.path().join("b.yml"), "kind: Endpoint\n").expect("write");
        assert_ne!(fingerprint(dir.path()), before, "a new manifest does");
    }

    #[test]
    fn the_fingerprint_follows_the_end_of_a_large_file() {
        // Far larger than any read buffer: the hash must take the file to its last byte.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut content = vec![b'#'; 300_000];
        std::fs::write(dir.path().join("keys.yaml"), &content).expect("write");
        let before = fingerprint(dir.path());
        assert_eq!(fingerprint(dir.path()), before, "the same bytes, the same fingerprint");
        *content.last_mut().expect("not empty") = b'!';
        std::fs::write(dir.path().join("keys.yaml"), &content).expect("write");
        assert_ne!(fingerprint(dir.path()), before, "the last byte changed");
    }
}
