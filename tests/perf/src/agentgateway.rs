//! The agentgateway peer: built with cargo from a checkout of its source (it publishes no crate
//! or package to install from a registry), once per commit, into the cache; and its
//! configuration, as its examples show for an OpenAI-compatible provider with an API-key policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::project::{Backends, MODEL_CHAT, MODEL_CHAT_60, MODEL_EMBED, MODEL_STREAM, SIM_CREDENTIAL};

/// The key clients send (`authorization: Bearer ...`), the only one its API-key policy accepts.
pub const KEY: &str = "sk-bench-agentgateway-key";

/// What a user does to get a build the bench can use.
pub const HOW_TO_BUILD: &str = "agentgateway is built from its source: `git clone https://github.com/agentgateway/agentgateway` \
     and pass `--agentgateway-src <that folder>`; the bench builds it once with cargo (30-60 min on 2 cores) into \
     the cache and reuses the binary (docs/performance.md, \"How to build the agentgateway peer\")";

/// A checkout of agentgateway's source, identified by its commit.
#[derive(Clone, Debug)]
pub struct Source {
    /// The checkout.
    pub dir: PathBuf,
    /// `git describe --tags --always` (`v1.4.1-206-g75b4e6ce6`).
    pub describe: String,
    /// The commit, 9 digits.
    pub short: String,
    /// Folder name in the cache: version, commit and, for a tree with local changes, a hash of
    /// them.
    pub key: String,
}

impl Source {
    /// Reads the commit, latest tag and local changes of the checkout at `dir`.
    pub fn inspect(dir: &Path) -> Result<Self, String> {
        if !dir.join("crates/agentgateway-app/Cargo.toml").is_file() {
            return Err(format!(
                "{} is not a checkout of agentgateway (no crates/agentgateway-app/Cargo.toml); {HOW_TO_BUILD}",
                dir.display()
            ));
        }
        let commit = git(dir, &["rev-parse", "HEAD"])
            .map_err(|e| format!("{}: the bench keys its build by the commit, and {e}", dir.display()))?;
        let describe = git(dir, &["describe", "--tags", "--always"]).unwrap_or_else(|_| commit.clone());
        let tag = git(dir, &["describe", "--tags", "--abbrev=0"]).ok();
        let changes = git(dir, &["diff", "HEAD"]).map_err(|e| format!("{}: {e}", dir.display()))?;
        let key = cache_key(tag.as_deref(), &commit, &changes);
        Ok(Self { dir: dir.to_owned(), short: commit.chars().take(9).collect(), key, describe })
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output =
        Command::new("git").arg("-C").arg(dir).args(args).output().map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        return Err(format!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The cache folder of a build: `agentgateway-<latest tag without v>-<commit, 9 digits>`, with
/// `-modified-<hash of the diff>` when the tree differs from the commit, so another change
/// never reuses a build.
pub fn cache_key(tag: Option<&str>, commit: &str, changes: &str) -> String {
    let version = tag.map_or("untagged", |t| t.trim_start_matches('v'));
    let short: String = commit.chars().take(9).collect();
    if changes.is_empty() {
        format!("agentgateway-{version}-{short}")
    } else {
        // FNV-1a: stable across builds and Rust releases, unlike std's hasher.
        let hash =
            changes.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("agentgateway-{version}-{short}-modified-{:08x}", hash >> 32)
    }
}

/// The binary for `source` (built first if the cache has none), or without a source the most
/// recent build in the cache; why not if there is none or the build fails.
pub fn ensure(source: Option<&Path>, cache: &Path) -> Result<PathBuf, String> {
    let Some(dir) = source else {
        return cached(cache).ok_or_else(|| format!("no agentgateway build in {}; {HOW_TO_BUILD}", cache.display()));
    };
    let source = Source::inspect(dir)?;
    let exe = cache.join(&source.key).join("bin/agentgateway");
    if !exe.is_file() {
        build(&source, cache, &exe)?;
    }
    Ok(exe)
}

/// The most recently built `agentgateway-*/bin/agentgateway` in `cache`.
fn cached(cache: &Path) -> Option<PathBuf> {
    std::fs::read_dir(cache)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("agentgateway-"))
        .map(|e| e.path().join("bin/agentgateway"))
        .filter_map(|exe| Some((exe.metadata().ok()?.modified().ok()?, exe)))
        .max()
        .map(|(_, exe)| exe)
}

/// `cargo build --release --locked -p agentgateway-app` in the checkout (its release profile:
/// fat LTO, one codegen unit; default features, which leave the web UI out), with its own
/// target folder in the cache; the binary is copied to `exe`.
fn build(source: &Source, cache: &Path, exe: &Path) -> Result<(), String> {
    // One target folder per commit: a changed tree rebuilds only what changed.
    let target = cache.join(format!("agentgateway-target-{}", source.short));
    let log = cache.join(format!("{}-cargo.log", source.key));
    // `cargo` from PATH, as its docs build it: rustup picks the toolchain its rust-toolchain.toml
    // pins unless RUSTUP_TOOLCHAIN is set (`cargo run` sets it to the one running the bench).
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(&source.dir)
        .args(["build", "--release", "--locked", "-p", "agentgateway-app"])
        .env("CARGO_TARGET_DIR", &target);
    let started = std::time::Instant::now();
    if let Err(failure) = crate::systems::run_install(
        &format!(
            "agentgateway {} with cargo from {} (release; 30-60 min on 2 cores)",
            source.describe,
            source.dir.display()
        ),
        cargo,
        &log,
    ) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(build_failure(&failure, &text, &log));
    }
    eprintln!("    built agentgateway in {:.0} s", started.elapsed().as_secs_f64());
    let built = target.join("release/agentgateway");
    let dir = exe.parent().ok_or("binary path without a folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Copied under another name first: an interrupted copy never looks like a build.
    let partial = dir.join("agentgateway.partial");
    std::fs::copy(&built, &partial).map_err(|e| format!("copying {}: {e}", built.display()))?;
    std::fs::rename(&partial, exe).map_err(|e| format!("{}: {e}", exe.display()))
}

/// Why a build failed: cargo's error lines (the last lines alone are often "build failed,
/// waiting for other jobs") and what to do about a missing toolchain or tool.
fn build_failure(failure: &str, log_text: &str, log: &Path) -> String {
    let errors: Vec<&str> = log_text.lines().filter(|l| l.trim_start().starts_with("error")).take(8).collect();
    let mut message = if errors.is_empty() {
        failure.to_owned()
    } else {
        format!("building agentgateway failed:\n{}", errors.join("\n"))
    };
    if log_text.contains("is not installed") && log_text.contains("toolchain") {
        message.push_str(
            "\n(its rust-toolchain.toml pins a toolchain rustup does not have: install it, or set RUSTUP_TOOLCHAIN=stable)",
        );
    }
    if log_text.contains("protoc") {
        message.push_str("\n(it needs protoc: `apt-get install protobuf-compiler`)");
    }
    message.push_str(&format!("\nfull log: {}", log.display()));
    message
}

/// The build's version: its cache folder (version, commit, local changes) and what the binary
/// reports (`--version`: the commit it was built from, `-dirty` with local changes, and rustc).
pub fn version(exe: &Path) -> String {
    let folder = exe.parent().and_then(Path::parent).and_then(Path::file_name).unwrap_or_default();
    let output = Command::new(exe).arg("--version").output();
    let info: Value = output.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
    let field = |name: &str| info[name].as_str().unwrap_or("?").to_owned();
    format!("{} (git {}, rustc {})", folder.to_string_lossy(), field("git_revision"), field("rust_version"))
}

/// Where agentgateway listens.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// The gateway (the LLM API).
    pub port: u16,
    /// Admin API.
    pub admin: SocketAddr,
    /// Prometheus metrics.
    pub stats: SocketAddr,
    /// `/healthz/ready`.
    pub readiness: SocketAddr,
}

/// Its configuration file (JSON, which its YAML reader takes as is), as its examples
/// (`examples/traffic-unified-gateway`, `examples/llm-basic`) show: one gateway, `llm` with an
/// API-key policy in strict mode and the key as a bearer token, three `openAI` providers whose
/// `baseUrl` is a simulator backend, and the four benchmark models on them. Logging and
/// everything else are left at their defaults.
pub fn config(listen: &Listen, backends: &Backends) -> Value {
    let provider = |name: &str, backend: SocketAddr| {
        json!({
            "name": name,
            "provider": "openAI",
            "params": { "apiKey": SIM_CREDENTIAL, "baseUrl": format!("http://{backend}/v1") },
        })
    };
    let model = |name: &str, provider: &str| json!({ "name": name, "provider": { "reference": provider } });
    json!({
        "config": {
            "adminAddr": listen.admin.to_string(),
            "statsAddr": listen.stats.to_string(),
            "readinessAddr": listen.readiness.to_string(),
        },
        "gateways": { "default": { "port": listen.port } },
        "llm": {
            "policies": {
                "apiKey": {
                    "keys": [{ "key": KEY, "metadata": { "name": "bench" } }],
                    "mode": "strict",
                    "location": { "header": { "name": "authorization", "prefix": "Bearer " } },
                },
            },
            "providers": [
                provider("sim-instant", backends.instant),
                provider("sim-60ms", backends.slow),
                provider("sim-paced", backends.paced),
            ],
            "models": [
                model(MODEL_CHAT, "sim-instant"),
                model(MODEL_EMBED, "sim-instant"),
                model(MODEL_CHAT_60, "sim-60ms"),
                model(MODEL_STREAM, "sim-paced"),
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_config_requires_the_key_and_sends_each_model_to_its_backend() {
        let backends = Backends { instant: addr(7001), slow: addr(7002), paced: addr(7003) };
        let listen = Listen { port: 4000, admin: addr(4001), stats: addr(4002), readiness: addr(4003) };
        let config = config(&listen, &backends);

        assert_eq!(config["gateways"]["default"]["port"], 4000);
        assert_eq!(config["config"]["readinessAddr"], "127.0.0.1:4003");
        let api_key = &config["llm"]["policies"]["apiKey"];
        assert_eq!(api_key["mode"], "strict", "its default mode, optional, lets requests without a key through");
        assert_eq!(api_key["keys"][0]["key"], KEY);

        let providers = config["llm"]["providers"].as_array().expect("providers");
        let base_url = |name: &str| {
            let p = providers.iter().find(|p| p["name"] == name).expect(name);
            assert_eq!(p["provider"], "openAI");
            assert_eq!(p["params"]["apiKey"], SIM_CREDENTIAL);
            p["params"]["baseUrl"].as_str().expect("baseUrl").to_owned()
        };
        let models = config["llm"]["models"].as_array().expect("models");
        let backend_of = |model: &str| {
            let m = models.iter().find(|m| m["name"] == model).expect(model);
            base_url(m["provider"]["reference"].as_str().expect("reference"))
        };
        assert_eq!(models.len(), 4);
        assert_eq!(backend_of(MODEL_CHAT), "http://127.0.0.1:7001/v1");
        assert_eq!(backend_of(MODEL_EMBED), "http://127.0.0.1:7001/v1");
        assert_eq!(backend_of(MODEL_CHAT_60), "http://127.0.0.1:7002/v1");
        assert_eq!(backend_of(MODEL_STREAM), "http://127.0.0.1:7003/v1");
    }

    #[test]
    fn the_cache_key_names_version_and_commit_and_tells_changed_trees_apart() {
        let commit = "75b4e6ce6e0e1ac7959d5548ebe8dbeaede4f180";
        assert_eq!(cache_key(Some("v1.4.1"), commit, ""), "agentgateway-1.4.1-75b4e6ce6");
        assert_eq!(cache_key(None, commit, ""), "agentgateway-untagged-75b4e6ce6");
        let a = cache_key(Some("v1.4.1"), commit, "diff --git a/Cargo.toml\n-x\n+y\n");
        let b = cache_key(Some("v1.4.1"), commit, "diff --git a/Cargo.toml\n-x\n+z\n");
        assert!(a.starts_with("agentgateway-1.4.1-75b4e6ce6-modified-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, cache_key(Some("v1.4.1"), commit, "diff --git a/Cargo.toml\n-x\n+y\n"));
    }

    #[test]
    fn a_failed_build_shows_cargos_errors_and_the_log() {
        let log = "   Compiling foo v1\nerror: failed to run custom build command for `protos`\n  Could not find `protoc`\nwarning: build failed, waiting for other jobs to finish...\n";
        let message = build_failure("installing failed", log, Path::new("/cache/x-cargo.log"));
        assert!(message.contains("error: failed to run custom build command for `protos`"), "{message}");
        assert!(message.contains("apt-get install protobuf-compiler"), "{message}");
        assert!(message.ends_with("full log: /cache/x-cargo.log"), "{message}");
    }
}
