//! Finds the kube-apiserver, kube-controller-manager and etcd that `tests/k8s/build.sh` built,
//! and the kubectl and helm that `tests/k8s/kubectl-helm.sh` fetched.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The binaries a control plane needs, all in one directory.
pub const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

const HOW_TO_GET_THEM: &str = "run `tests/run-all`, or `source tests/setup/kube.sh` before \
    `cargo test` (it builds kube-apiserver, kube-controller-manager and etcd from Go modules \
    and fetches kubectl and helm into ${SLUICE_CACHE:-~/.cache/sluice}/, once, and exports \
    SLUICE_KUBE_BIN_DIR, SLUICE_KUBECTL and SLUICE_HELM)";

/// The directory holding [`BINARIES`]: `$SLUICE_KUBE_BIN_DIR` when set, else the newest complete
/// build in the cache. Fails (never skips) when there is none, saying how to build them.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    locate(std::env::var_os("SLUICE_KUBE_BIN_DIR"), &cache_root().join("kube"))
}

fn locate(from_env: Option<std::ffi::OsString>, cache: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = from_env {
        let dir = PathBuf::from(dir);
        check(&dir).with_context(|| format!("SLUICE_KUBE_BIN_DIR={}", dir.display()))?;
        return Ok(dir);
    }
    let Some(dir) = newest_complete(cache) else {
        bail!(
            "no Kubernetes control-plane binaries: SLUICE_KUBE_BIN_DIR is unset and {} holds no \
             build; {HOW_TO_GET_THEM}",
            cache.display()
        );
    };
    check(&dir)?;
    eprintln!("sluice-testenv: SLUICE_KUBE_BIN_DIR is unset, using the newest cached build {}", dir.display());
    Ok(dir)
}

/// The kubectl binary: `$SLUICE_KUBECTL`, else the newest one in the cache.
pub fn kubectl() -> anyhow::Result<PathBuf> {
    tool("SLUICE_KUBECTL", "kubectl")
}

/// The helm binary: `$SLUICE_HELM`, else the newest one in the cache.
pub fn helm() -> anyhow::Result<PathBuf> {
    tool("SLUICE_HELM", "helm")
}

fn tool(variable: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{variable}={} is not a file; {HOW_TO_GET_THEM}", path.display());
        }
        return Ok(path);
    }
    let cache = cache_root().join("kubectl-helm");
    newest_complete(&cache).map(|bin| bin.join(name)).filter(|path| path.is_file()).with_context(|| {
        format!("no {name}: {variable} is unset and {} holds none; {HOW_TO_GET_THEM}", cache.display())
    })
}

/// The `bin/` of the newest `<cache>/*/` with a `complete` marker (written last by the scripts,
/// so a half-finished build or download is never picked).
fn newest_complete(cache: &Path) -> Option<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(cache).ok()?.flatten() {
        if let Ok(modified) = entry.path().join("complete").metadata().and_then(|m| m.modified()) {
            found.push((modified, entry.path().join("bin")));
        }
    }
    found.into_iter().max().map(|(_, bin)| bin)
}

fn cache_root() -> PathBuf {
    match (std::env::var_os("SLUICE_CACHE"), std::env::var_os("HOME")) {
        (Some(cache), _) if !cache.is_empty() => PathBuf::from(cache),
        (_, Some(home)) => Path::new(&home).join(".cache/sluice"),
        _ => PathBuf::from(".cache/sluice"),
    }
}

fn check(dir: &Path) -> anyhow::Result<()> {
    for binary in BINARIES {
        if !dir.join(binary).is_file() {
            bail!("{} is missing; {HOW_TO_GET_THEM}", dir.join(binary).display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bin_dir_fails_and_says_how_to_build() {
        let err = locate(Some("/nonexistent/sluice".into()), Path::new("/nonexistent")).expect_err("no binaries");
        let message = format!("{err:#}");
        assert!(message.contains("SLUICE_KUBE_BIN_DIR=/nonexistent/sluice"), "{message}");
        assert!(message.contains("tests/run-all"), "{message}");
    }

    #[test]
    fn no_env_and_an_empty_cache_fails_and_says_how_to_build() {
        let err = locate(None, Path::new("/nonexistent/cache/kube")).expect_err("no binaries");
        let message = format!("{err:#}");
        assert!(message.contains("SLUICE_KUBE_BIN_DIR is unset"), "{message}");
        assert!(message.contains("tests/setup/kube.sh"), "{message}");
    }
}
