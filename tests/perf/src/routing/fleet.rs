//! The simulated heterogeneous fleet of the routing benchmark, its capacity, the faults it
//! suffers during a run, and the Sluice project that routes over it.
//!
//! Five `sluice-sim` backends serve one model: a fast one with little capacity, a slow one with
//! much, one that turns flaky midway, one that hangs for a while, and one whose prefix cache is
//! warmed with the trace's shared prefixes before each run (the others start cold). Faults are
//! switched at their time through the simulator's admin API (`POST /_sim/faults`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The model every backend serves and clients ask for.
pub const MODEL: &str = "chat";
/// Project and endpoint slugs: URLs are `/routing/api/v1/...`.
pub const PROJECT: &str = "routing";
/// Endpoint slug.
pub const ENDPOINT: &str = "api";
/// The tier's time to first token before the gateway tries another backend, ms.
pub const FIRST_TOKEN_TIMEOUT_MS: u64 = 5000;

/// One backend's latency profile (the simulator's fields of the same names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendProfile {
    /// Name in the fleet file and in `x-sluice-backend`.
    pub name: String,
    /// What it stands for.
    pub role: String,
    /// Fixed part of the time to first token, ms.
    pub prefill_overhead_ms: f64,
    /// Per uncached prompt token, ms.
    pub prefill_per_token_ms: f64,
    /// Per output token, ms.
    pub inter_token_ms: f64,
    /// Batch size; more requests wait.
    pub max_num_seqs: u32,
    /// Latency factor with the batch full.
    pub load_slowdown: f64,
    /// Prefix cache size in 16-token blocks.
    pub prefix_cache_blocks: u32,
}

/// The fleet.
pub fn backends() -> Vec<BackendProfile> {
    let b = |name: &str, role: &str, overhead, per_token, itl, seqs, slowdown, blocks| BackendProfile {
        name: name.into(),
        role: role.into(),
        prefill_overhead_ms: overhead,
        prefill_per_token_ms: per_token,
        inter_token_ms: itl,
        max_num_seqs: seqs,
        load_slowdown: slowdown,
        prefix_cache_blocks: blocks,
    };
    vec![
        b("fast-small", "fast, little capacity", 15.0, 0.04, 6.0, 4, 1.5, 2048),
        b("slow-large", "slow, much capacity", 150.0, 0.3, 35.0, 64, 2.0, 32768),
        b("flaky", "turns flaky midway", 40.0, 0.10, 10.0, 10, 2.0, 8192),
        b("stall", "hangs for a while", 40.0, 0.10, 10.0, 10, 2.0, 8192),
        b("warm-cache", "warm prefix cache, costly prefill", 50.0, 0.30, 12.0, 12, 2.0, 32768),
    ]
}

impl BackendProfile {
    /// Requests per second it completes with its batch full (each request's whole prompt
    /// uncached): `maxNumSeqs / (slowdown x (overhead + prompt x per-token + output x ITL))`.
    pub fn capacity(&self, prompt_tokens: f64, output_tokens: f64) -> f64 {
        let service_ms = self.load_slowdown
            * (self.prefill_overhead_ms
                + prompt_tokens * self.prefill_per_token_ms
                + output_tokens * self.inter_token_ms);
        f64::from(self.max_num_seqs) / (service_ms / 1000.0)
    }
}

/// The fleet's capacity, requests per second: the sum of its backends'.
pub fn capacity(fleet: &[BackendProfile], prompt_tokens: f64, output_tokens: f64) -> f64 {
    fleet.iter().map(|b| b.capacity(prompt_tokens, output_tokens)).sum()
}

/// The `sluice-sim fleet` file. Every backend generates until `max_tokens` (the trace sets it),
/// with 10% jitter and its own seed.
pub fn fleet_yaml(fleet: &[BackendProfile]) -> String {
    let mut yaml = String::from("# sluice-bench routing: a heterogeneous fleet serving one model.\nbackends:\n");
    for (i, b) in fleet.iter().enumerate() {
        let _ = writeln!(
            yaml,
            "  - name: {}\n    profile: {{models: [{MODEL}], prefillOverheadMs: {}, prefillPerTokenMs: {}, interTokenMs: {}, \
             maxNumSeqs: {}, loadSlowdown: {}, jitter: 0.1, seed: {}, outputTokens: 4096, prefixCacheBlocks: {}}}",
            b.name,
            b.prefill_overhead_ms,
            b.prefill_per_token_ms,
            b.inter_token_ms,
            b.max_num_seqs,
            b.load_slowdown,
            i + 1,
            b.prefix_cache_blocks
        );
    }
    yaml
}

/// A change of one backend's faults during a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultSwitch {
    /// Seconds after the trace starts.
    pub at: f64,
    /// The backend.
    pub backend: String,
    /// The `faults` object posted to its `/_sim/faults`.
    pub faults: serde_json::Value,
}

/// The faults of a run with `warmup` seconds before `measured` recorded seconds: `stall` hangs
/// every request it receives from 30% of the recorded part for up to 8 s (each hang lasts as
/// long as the window, longer than the tier's first-token timeout), and `flaky` answers 25% of
/// requests with 503, 5% with 500 and cuts 10% of streams after 4 tokens from halfway on.
pub fn fault_timeline(warmup: f64, measured: f64) -> Vec<FaultSwitch> {
    let hang_from = warmup + 0.3 * measured;
    let hang_secs = (0.4 * measured).min(8.0);
    vec![
        FaultSwitch {
            at: hang_from,
            backend: "stall".into(),
            faults: serde_json::json!({"hangRate": 1.0, "hangMs": (hang_secs * 1000.0).round() as u64}),
        },
        FaultSwitch { at: hang_from + hang_secs, backend: "stall".into(), faults: serde_json::json!({}) },
        FaultSwitch {
            at: warmup + 0.5 * measured,
            backend: "flaky".into(),
            faults: serde_json::json!({
                "errors": [{"status": 503, "rate": 0.25}, {"status": 500, "rate": 0.05}],
                "resetRate": 0.1,
                "resetAfterTokens": 4,
            }),
        },
    ]
}

/// The Sluice project over the fleet: one tier (limits far above the load, first-token timeout
/// [`FIRST_TOKEN_TIMEOUT_MS`]), one endpoint whose model has one backend per simulator, all at
/// priority 0, weight 1 and the same price, routed by `policy`; one key.
pub fn manifests(addrs: &[(String, std::net::SocketAddr)], policy: &str, key: &str) -> String {
    let mut yaml = format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata:
  name: routing
spec:
  limits:
    requestsPerMinute: 100000000
    tokensPerMinute: 100000000000
    maxConcurrent: 1000000
  timeouts:
    firstTokenMs: {FIRST_TOKEN_TIMEOUT_MS}
    totalMs: 120000
    idleStreamMs: 10000
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata:
  name: {PROJECT}
  namespace: {PROJECT}
spec:
  slug: {PROJECT}
  defaultTier: routing
---
apiVersion: v1
kind: Secret
metadata:
  name: simulator-credentials
  namespace: {PROJECT}
type: Opaque
stringData:
  apiKey: sk-routing-simulator
"#
    );
    for (name, addr) in addrs {
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
    - name: {MODEL}
      contextWindow: 32768
      pricing:
        inputPerMillion: 0.10
        outputPerMillion: 0.40
      capabilities: [chat, completions]
"#
        );
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
  routing:
    policy: {policy}
  models:
    - name: {MODEL}
      backends:
"#
    );
    for (name, _) in addrs {
        let _ = write!(yaml, "        - providerRef:\n            name: {name}\n          model: {MODEL}\n");
    }
    let _ = write!(
        yaml,
        r#"---
apiVersion: v1
kind: Secret
metadata:
  name: routing-keys
  namespace: {PROJECT}
type: Opaque
stringData:
  k0: {key}
---
apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata:
  name: key-0
  namespace: {PROJECT}
spec:
  scopes: [inference]
  secretRef:
    name: routing-keys
    key: k0
"#
    );
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_follows_the_batch_and_the_service_time() {
        let fleet = backends();
        let fast = &fleet[0];
        // 4 seqs / (1.5 x (15 + 1000 x 0.04 + 100 x 6) ms) = 4 / 0.9825 s.
        assert!((fast.capacity(1000.0, 100.0) - 4.0 / 0.9825).abs() < 1e-9);
        let total = capacity(&fleet, 900.0, 70.0);
        assert!(total > 25.0 && total < 60.0, "{total}");
        assert!(fleet[1].capacity(900.0, 70.0) > fast.capacity(900.0, 70.0), "slow-large has the most capacity");
    }

    #[test]
    fn the_fleet_file_is_one_backend_per_profile() {
        let yaml = fleet_yaml(&backends());
        assert_eq!(yaml.matches("- name: ").count(), 5);
        assert!(yaml.contains("name: warm-cache") && yaml.contains("maxNumSeqs: 64"));
    }

    #[test]
    fn faults_switch_inside_the_recorded_part() {
        let timeline = fault_timeline(4.0, 20.0);
        assert!(timeline.iter().all(|s| s.at >= 4.0 && s.at <= 24.0));
        assert_eq!(timeline[0].faults["hangMs"], 8000);
        assert_eq!(timeline[1].at, timeline[0].at + 8.0);
        assert_eq!(timeline[1].faults, serde_json::json!({}));
    }

    #[test]
    fn the_project_compiles_with_the_policy() -> anyhow::Result<()> {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse()?;
        let addrs: Vec<(String, std::net::SocketAddr)> = backends().iter().map(|b| (b.name.clone(), addr)).collect();
        let dir = std::env::temp_dir().join(format!("sluice-bench-routing-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("project.yaml"), manifests(&addrs, "queueScore", &crate::project::key(0)))?;
        let loaded = sluice_crds::load_and_compile(&dir, &sluice_crds::compile::CompileOptions::default());
        let _ = std::fs::remove_dir_all(&dir);
        let loaded = loaded.map_err(|e| anyhow::anyhow!("{e}"))?;
        let endpoint = &loaded.configs[0].endpoints[ENDPOINT];
        assert_eq!(endpoint.routing, sluice_crds::api::RoutingPolicy::QueueScore);
        assert_eq!(endpoint.models[MODEL].backends.len(), 5);
        Ok(())
    }
}
