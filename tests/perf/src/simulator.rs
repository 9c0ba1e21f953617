//! The simulated LLM backend every system calls: one `sluice-sim fleet` process with three
//! backends. Jitter is off, the batch never fills and the load never slows it down, so every
//! difference between two systems is the system's, not the simulator's.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::Proc;
use crate::project::Backends;

/// The fleet file: `instant` (0 ms), `slow` (60 ms, no streaming pace) and `paced` (60 ms to the
/// first token, then 10 ms a token).
pub const FLEET: &str = r#"# sluice-bench's simulator: deterministic, never saturated by batch size.
backends:
  - name: instant
    profile: {prefillOverheadMs: 0, prefillPerTokenMs: 0, interTokenMs: 0, jitter: 0, outputTokens: 16,
              maxNumSeqs: 100000, loadSlowdown: 1.0, prefixCacheBlocks: 0, embeddingDimensions: 384}
  - name: slow
    profile: {prefillOverheadMs: 60, prefillPerTokenMs: 0, interTokenMs: 0, jitter: 0, outputTokens: 16,
              maxNumSeqs: 100000, loadSlowdown: 1.0, prefixCacheBlocks: 0, embeddingDimensions: 384}
  - name: paced
    profile: {prefillOverheadMs: 60, prefillPerTokenMs: 0, interTokenMs: 10, jitter: 0, outputTokens: 20,
              maxNumSeqs: 100000, loadSlowdown: 1.0, prefixCacheBlocks: 0, embeddingDimensions: 384}
"#;

/// Time between tokens of the `paced` backend.
pub const PACED_INTER_TOKEN_MS: f64 = 10.0;
/// Time to the first token of the `paced` and `slow` backends.
pub const PREFILL_MS: f64 = 60.0;

/// Starts the fleet and returns it with its backends' addresses.
pub fn start(sim: &Path, work_dir: &Path, command: std::process::Command) -> anyhow::Result<(Proc, Backends)> {
    let (proc, addrs) = start_fleet(sim, work_dir, command, FLEET)?;
    let addr = |name: &str| -> anyhow::Result<SocketAddr> {
        addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a).with_context(|| format!("fleet has no backend {name}"))
    };
    let backends = Backends { instant: addr("instant")?, slow: addr("slow")?, paced: addr("paced")? };
    Ok((proc, backends))
}

/// Starts `sluice-sim fleet` on the fleet file `yaml` (written into `work_dir`) and returns it
/// with each backend's name and address, in the file's order.
pub fn start_fleet(
    sim: &Path,
    work_dir: &Path,
    mut command: std::process::Command,
    yaml: &str,
) -> anyhow::Result<(Proc, Vec<(String, SocketAddr)>)> {
    let fleet = work_dir.join("fleet.yaml");
    let ready = work_dir.join("fleet-ready.json");
    std::fs::write(&fleet, yaml)?;
    let _ = std::fs::remove_file(&ready);
    command.args(["--log", "warn", "fleet", "--config"]).arg(&fleet).arg("--ready-file").arg(&ready);
    let mut proc = Proc::spawn(&format!("{}", sim.display()), command)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        proc.check_alive()?;
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break text;
        }
        if Instant::now() > deadline {
            bail!("sluice-sim fleet not ready after 30 s:\n{}", proc.log());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let mut addrs = Vec::new();
    for backend in doc["backends"].as_array().with_context(|| format!("fleet ready file without backends: {text}"))? {
        let name = backend["name"].as_str().context("backend name")?.to_owned();
        let addr: SocketAddr = backend["addr"].as_str().context("backend addr")?.parse()?;
        addrs.push((name, addr));
    }
    Ok((proc, addrs))
}
