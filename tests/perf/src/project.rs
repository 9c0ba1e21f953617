//! The Sluice project the benchmark serves: the quickstart's shape (one tier, one project, one
//! endpoint, keys) with `openai`-type Providers pointing at the external simulator, so the gateway
//! and the direct runs hit the same backends. The tier's limits are set far above any load the
//! machine can offer, so the limiter runs on every request without ever refusing one.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

/// Project slug: URLs are `/bench/api/v1/...`.
pub const PROJECT: &str = "bench";
/// Endpoint slug.
pub const ENDPOINT: &str = "api";
/// Model served by the 0 ms backend (chat).
pub const MODEL_CHAT: &str = "bench-chat";
/// Model served by the 0 ms backend (embeddings).
pub const MODEL_EMBED: &str = "bench-embed";
/// Model served by the 60 ms backend.
pub const MODEL_CHAT_60: &str = "bench-chat-60";
/// Model served by the paced streaming backend.
pub const MODEL_STREAM: &str = "bench-stream";
/// The upstream credential every system sends to the simulator (which does not check it).
pub const SIM_CREDENTIAL: &str = "sk-bench-simulator";

/// Where the simulator's three backends listen.
#[derive(Clone, Copy, Debug)]
pub struct Backends {
    /// Every latency 0.
    pub instant: SocketAddr,
    /// 60 ms to the whole answer.
    pub slow: SocketAddr,
    /// 60 ms to the first token, then one token every 10 ms.
    pub paced: SocketAddr,
}

/// The `i`th key of the benchmark (deterministic, 41 characters like a real one).
pub fn key(i: usize) -> String {
    // A cheap deterministic scramble so keys do not share long prefixes beyond the project's.
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    format!("sl_bench_{i:07}{x:016x}{:09}", i % 1_000_000_000)
}

/// How the benchmark project differs from its defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// The Endpoint's `routing.policy` (`weighted`, ...); none: the default (`sloAware`).
    pub routing: Option<&'a str>,
    /// Every response signed (`spec.signing`, with a Secret of its own).
    pub signing: bool,
    /// Every PII kind redacted from prompts and restored in answers (`spec.redaction`).
    pub redaction: bool,
}

/// The signing secret of the benchmark project when it signs.
pub const SIGNING_SECRET: &str = "bench-signing-secret-0123456789abcdef0123456789";

/// The manifests of the benchmark project with `keys` API keys, as one YAML stream.
pub fn manifests(backends: &Backends, keys: usize, options: Options<'_>) -> String {
    let Options { routing, signing, redaction } = options;
    let signing_spec = if signing { "\n  signing:\n    secretName: bench-signing" } else { "" };
    let mut yaml = String::new();
    yaml.push_str(&format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata:
  name: bench
spec:
  description: Limits far above what one machine can offer, so the limiter runs but never refuses.
  limits:
    requestsPerMinute: 100000000
    tokensPerMinute: 100000000000
    maxConcurrent: 1000000
  timeouts:
    firstTokenMs: 30000
    totalMs: 300000
    idleStreamMs: 30000
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata:
  name: {PROJECT}
  namespace: {PROJECT}
spec:
  slug: {PROJECT}
  defaultTier: bench{signing_spec}
---
apiVersion: v1
kind: Secret
metadata:
  name: bench-signing
  namespace: {PROJECT}
stringData:
  secret: {SIGNING_SECRET}
---
apiVersion: v1
kind: Secret
metadata:
  name: simulator-credentials
  namespace: {PROJECT}
type: Opaque
stringData:
  apiKey: {SIM_CREDENTIAL}
"#
    ));
    let providers = [
        ("sim-instant", backends.instant, vec![(MODEL_CHAT, "[chat, completions]"), (MODEL_EMBED, "[embeddings]")]),
        ("sim-60ms", backends.slow, vec![(MODEL_CHAT_60, "[chat, completions]")]),
        ("sim-paced", backends.paced, vec![(MODEL_STREAM, "[chat, completions]")]),
    ];
    for (name, addr, models) in &providers {
        let _ = write!(
            yaml,
            r#"---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata:
  name: {name}
  namespace: {PROJECT}
spec:
  type: openai
  baseUrl: http://{addr}/v1
  credentials:
    secretKeyRef:
      name: simulator-credentials
      key: apiKey
  models:
"#
        );
        for (model, capabilities) in models {
            let _ = write!(
                yaml,
                r#"    - name: {model}
      contextWindow: 32768
      pricing:
        inputPerMillion: 0.10
        outputPerMillion: 0.40
      capabilities: {capabilities}
"#
            );
        }
    }
    let _ = write!(
        yaml,
        r#"---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata:
  name: {ENDPOINT}
  namespace: {PROJECT}
spec:
  slug: {ENDPOINT}
"#
    );
    if let Some(policy) = routing {
        let _ = writeln!(yaml, "  routing:\n    policy: {policy}");
    }
    if redaction {
        yaml.push_str(
            "  redaction:\n    kinds: [email, phone, cardNumber, iban, apiKey, bearerToken, privateKey]\n    restore: true\n",
        );
    }
    yaml.push_str("  models:\n");
    for (model, provider) in [
        (MODEL_CHAT, "sim-instant"),
        (MODEL_EMBED, "sim-instant"),
        (MODEL_CHAT_60, "sim-60ms"),
        (MODEL_STREAM, "sim-paced"),
    ] {
        let _ = write!(
            yaml,
            r#"    - name: {model}
      backends:
        - providerRef:
            name: {provider}
          model: {model}
"#
        );
    }
    let _ = write!(
        yaml,
        r#"---
apiVersion: v1
kind: Secret
metadata:
  name: bench-keys
  namespace: {PROJECT}
type: Opaque
stringData:
"#
    );
    for i in 0..keys {
        let _ = writeln!(yaml, "  k{i:07}: {}", key(i));
    }
    for i in 0..keys {
        let _ = write!(
            yaml,
            r#"---
apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata:
  name: key-{i:07}
  namespace: {PROJECT}
spec:
  scopes: [inference]
  secretRef:
    name: bench-keys
    key: k{i:07}
"#
        );
    }
    yaml
}

/// Writes the manifests into `dir/project.yaml`.
pub fn write_manifests(dir: &Path, backends: &Backends, keys: usize, options: Options<'_>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("project.yaml"), manifests(backends, keys, options))
        .with_context(|| format!("{}", dir.display()))
}

/// Compiles the manifests in `manifests_dir` as the gateway would and writes the resulting
/// GatewayConfig document as `dir/config.json` (the operator's format, credentials included).
pub fn write_compiled(manifests_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    let options = sluice_crds::compile::CompileOptions::default();
    let loaded = sluice_crds::load_and_compile(manifests_dir, &options)
        .map_err(|e| anyhow::anyhow!("compiling the benchmark project: {e}"))?;
    let config = loaded.configs.first().context("the benchmark manifests compiled to no project")?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec(config)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_long_enough() {
        let keys: std::collections::BTreeSet<String> = (0..10_000).map(key).collect();
        assert_eq!(keys.len(), 10_000);
        assert!(keys.iter().all(|k| k.len() >= sluice_crds::compile::MIN_KEY_LENGTH && k.starts_with("sl_bench_")));
    }

    #[test]
    fn the_project_compiles_with_every_key() -> anyhow::Result<()> {
        let addr: SocketAddr = "127.0.0.1:9".parse()?;
        let dir = std::env::temp_dir().join(format!("sluice-bench-test-{}", std::process::id()));
        let options = Options { routing: Some("weighted"), signing: true, redaction: true };
        write_manifests(&dir, &Backends { instant: addr, slow: addr, paced: addr }, 25, options)?;
        let loaded = sluice_crds::load_and_compile(&dir, &sluice_crds::compile::CompileOptions::default());
        let _ = std::fs::remove_dir_all(&dir);
        let loaded = loaded.map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = &loaded.configs[0];
        assert_eq!(config.project.slug, PROJECT);
        assert_eq!(config.keys.len(), 25);
        assert_eq!(config.endpoints[ENDPOINT].models.len(), 4);
        assert_eq!(config.endpoints[ENDPOINT].routing, sluice_crds::api::RoutingPolicy::Weighted);
        assert_eq!(config.project.signing.len(), 1, "signing on");
        assert_eq!(config.project.signing[0].secret.expose(), SIGNING_SECRET);
        assert!(config.endpoints[ENDPOINT].redaction.is_some(), "redaction on");
        Ok(())
    }
}
