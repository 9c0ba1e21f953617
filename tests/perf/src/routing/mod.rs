//! `sluice-bench routing`: how well each routing strategy serves SLO hints on a simulated
//! heterogeneous fleet. One `sluice-sim fleet` ([`fleet`]) stays up for the whole run; for each
//! offered load (a share of the fleet's capacity) one trace is built ([`trace`]) and replayed
//! through a fresh `sluice-gateway` per strategy ([`replay`]), the fleet reset and its
//! warm-cache backend warmed before each replay, so every strategy meets the same requests at
//! the same times and the same faults. [`analysis`] turns outcomes into attainment, latency
//! percentiles, errors, prediction error and goodput; [`report`] writes JSON, markdown and SVG.

pub mod analysis;
pub mod fleet;
pub mod replay;
pub mod report;
pub mod trace;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use self::analysis::{Goodput, RunSummary};
use self::fleet::BackendProfile;
use self::trace::{SharedTexts, TraceSpec};
use crate::procs::{Proc, free_port, http_get_status};
use crate::results::{Machine, TargetCheck};
use crate::systems::Target;

/// The strategies compared, in table order: the SLO-aware router, least request, round robin,
/// and the llm-d-like queue/prefix scorer without prediction.
pub const STRATEGIES: [&str; 4] = ["sloAware", "leastRequest", "roundRobin", "queueScore"];

/// What to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Offered loads as shares of the fleet's capacity.
    pub loads: Vec<f64>,
    /// Routing policies.
    pub strategies: Vec<String>,
    /// Seconds of each replay that are not recorded.
    pub warmup_secs: f64,
    /// Seconds recorded.
    pub duration_secs: f64,
    /// Gamma shape of the arrival gaps (1 = Poisson).
    pub burstiness: f64,
    /// Seed of the trace.
    pub seed: u64,
    /// A smoke run.
    pub quick: bool,
}

impl Options {
    /// The defaults: six loads from a quarter of the capacity to 95%, 14 s recorded each.
    pub fn new(quick: bool) -> Self {
        Self {
            loads: if quick { vec![0.5, 0.8, 0.95] } else { vec![0.25, 0.4, 0.5, 0.65, 0.8, 0.95] },
            strategies: STRATEGIES.iter().map(|s| (*s).to_owned()).collect(),
            warmup_secs: if quick { 2.0 } else { 4.0 },
            duration_secs: if quick { 8.0 } else { 14.0 },
            burstiness: 1.0,
            seed: 42,
            quick,
        }
    }
}

/// Everything a routing run measured (`results.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingResults {
    /// When it started (UTC).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// The command line.
    pub command: String,
    /// What was asked.
    pub options: Option<Options>,
    /// The machine.
    pub machine: Machine,
    /// The simulated fleet.
    pub fleet: Vec<BackendProfile>,
    /// Mean prompt and output tokens of the trace.
    pub mean_prompt_tokens: f64,
    /// Mean output tokens.
    pub mean_output_tokens: f64,
    /// The fleet's capacity for this trace, requests per second.
    pub capacity_rps: f64,
    /// Every replay.
    pub runs: Vec<RunSummary>,
    /// Goodput per strategy.
    pub goodput: std::collections::BTreeMap<String, Goodput>,
    /// The targets and what was measured.
    pub targets: Vec<TargetCheck>,
    /// Anything that went wrong.
    pub notes: Vec<String>,
}

/// Paths a run needs.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `sluice-gateway` and `sluice-sim`.
    pub bin_dir: PathBuf,
    /// `target/bench`.
    pub out_dir: PathBuf,
}

fn say(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// Runs the benchmark; returns the folder of the results (with every request's outcome in
/// `outcomes-<load>-<strategy>.json`).
pub fn run(options: Options, paths: &Paths, command: String) -> anyhow::Result<PathBuf> {
    for tool in ["sluice-gateway", "sluice-sim"] {
        if !paths.bin_dir.join(tool).exists() {
            bail!(
                "{} is missing: cargo build --release -p sluice-gateway -p sluice-sim",
                paths.bin_dir.join(tool).display()
            );
        }
    }
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let run_dir = paths.out_dir.join(format!("routing-{stamp}"));
    let work_dir = run_dir.join("work");
    std::fs::create_dir_all(&work_dir)?;
    let profiles = fleet::backends();
    let texts = SharedTexts::new(options.seed);
    // The capacity is worked out on a long sample of the same workload.
    let sample = trace::build(&TraceSpec { rate: 20.0, burstiness: 1.0, secs: 300.0, seed: options.seed }, &texts);
    let (prompt, output) = trace::mean_tokens(&sample);
    let capacity = fleet::capacity(&profiles, prompt, output);
    let mut results = RoutingResults {
        started_at: jiff::Timestamp::now().to_string(),
        command,
        options: Some(options.clone()),
        machine: crate::machine::describe(),
        fleet: profiles.clone(),
        mean_prompt_tokens: prompt,
        mean_output_tokens: output,
        capacity_rps: capacity,
        ..RoutingResults::default()
    };
    say(format!(
        "sluice-bench routing: {} CPUs, load average {:.2}; fleet capacity {capacity:.1} req/s (mean prompt {prompt:.0}, output {output:.0} tokens); results in {}",
        results.machine.cpus,
        results.machine.load_at_start[0],
        run_dir.display()
    ));
    let sim = paths.bin_dir.join("sluice-sim");
    let mut sim_command = Command::new(&sim);
    sim_command.env_remove("SLUICE_SIM_LOG");
    let (sim_proc, addrs) = crate::simulator::start_fleet(&sim, &work_dir, sim_command, &fleet::fleet_yaml(&profiles))?;
    say(format!("fleet: {}", addrs.iter().map(|(name, addr)| format!("{name} {addr}")).collect::<Vec<_>>().join(", ")));
    let outcome = run_loads(&options, paths, &run_dir, &addrs, &texts, capacity, &mut results);
    sim_proc.stop(Duration::from_secs(3));
    if let Err(e) = &outcome {
        results.notes.push(format!("the run stopped early: {e:#}"));
    }
    results.finished_at = jiff::Timestamp::now().to_string();
    results.machine.load_at_end = crate::bench::load_avg();
    report::finish(&mut results);
    report::write(&results, &run_dir)?;
    let _ = std::fs::remove_dir_all(&work_dir);
    let latest = paths.out_dir.join("routing-latest");
    let _ = std::fs::remove_file(&latest);
    if let Some(name) = run_dir.file_name() {
        let _ = std::os::unix::fs::symlink(name, &latest);
    }
    outcome?;
    Ok(run_dir)
}

fn run_loads(
    options: &Options,
    paths: &Paths,
    run_dir: &Path,
    addrs: &[(String, SocketAddr)],
    texts: &SharedTexts,
    capacity: f64,
    results: &mut RoutingResults,
) -> anyhow::Result<()> {
    let secs = options.warmup_secs + options.duration_secs;
    let timeline = fleet::fault_timeline(options.warmup_secs, options.duration_secs);
    let mut faults = Vec::new();
    for switch in timeline {
        let addr = addrs.iter().find(|(n, _)| *n == switch.backend).map(|(_, a)| *a);
        faults.push((addr.with_context(|| format!("no backend {}", switch.backend))?, switch));
    }
    let key = crate::project::key(0);
    for &load in &options.loads {
        let rate = load * capacity;
        let spec = TraceSpec { rate, burstiness: options.burstiness, secs, seed: options.seed };
        let trace = trace::build(&spec, texts);
        say(format!("\n== load {:.0}% of capacity: {rate:.1} req/s, {} requests ==", load * 100.0, trace.len()));
        for strategy in &options.strategies {
            reset_fleet(addrs, texts)?;
            let load_avg = crate::bench::load_avg()[0];
            let dir = run_dir.join("work").join(format!("gateway-{strategy}"));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("project.yaml"), fleet::manifests(addrs, strategy, &key))?;
            let (gateway, addr) = start_gateway(&paths.bin_dir, &dir)?;
            let target = replay::Target {
                url: format!("http://{addr}/{}/{}/v1/chat/completions", fleet::PROJECT, fleet::ENDPOINT),
                key: key.clone(),
                warmup_secs: options.warmup_secs,
                timeout: Duration::from_secs(60),
            };
            let outcomes = replay::run(&target, &trace, &faults);
            gateway.stop(Duration::from_secs(3));
            let outcomes = outcomes?;
            let name = format!("outcomes-{:.0}-{strategy}.json", load * 100.0);
            std::fs::write(run_dir.join(name), serde_json::to_vec(&outcomes)?)?;
            let mut summary = analysis::summarize_run(strategy, load, rate, &outcomes);
            summary.load_avg = load_avg;
            say(report::run_line(&summary));
            results.runs.push(summary);
        }
    }
    reset_fleet(addrs, texts)
}

/// Resets every backend (profile faults, empty prefix cache) and warms `warm-cache` with every
/// shared prefix of the trace.
fn reset_fleet(addrs: &[(String, SocketAddr)], texts: &SharedTexts) -> anyhow::Result<()> {
    for (name, addr) in addrs {
        let target = sim_target(*addr, "/_sim/reset", String::new());
        let (status, body) = crate::systems::http_request(&target)?;
        if status != 200 {
            bail!("resetting {name}: {status} {body}");
        }
    }
    let Some((_, warm)) = addrs.iter().find(|(n, _)| n == "warm-cache") else { return Ok(()) };
    let system = texts.system_prompts.iter().map(|p| serde_json::json!([{"role": "system", "content": p}]));
    let prefixes = texts.prefixes.iter().map(|p| serde_json::json!([{"role": "user", "content": p}]));
    for messages in system.chain(prefixes) {
        let body = serde_json::json!({"model": fleet::MODEL, "messages": messages, "max_tokens": 1}).to_string();
        let (status, text) = crate::systems::http_request(&sim_target(*warm, "/v1/chat/completions", body))?;
        if status != 200 {
            bail!("warming warm-cache: {status} {text}");
        }
    }
    Ok(())
}

fn sim_target(addr: SocketAddr, path: &str, body: String) -> Target {
    Target {
        addr,
        path: path.to_owned(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        keys: vec![],
        body,
        stream: false,
    }
}

fn start_gateway(bin_dir: &Path, config: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let (port, admin_port) = (free_port()?, free_port()?);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse()?;
    let mut command = Command::new(bin_dir.join("sluice-gateway"));
    command.arg("--config").arg(config).args(["--listen", &addr.to_string(), "--admin-listen", &admin.to_string()]);
    command.args(["--log", "warn"]);
    let mut proc = Proc::spawn("sluice-gateway", command)?;
    proc.wait_ready(Duration::from_secs(60), || http_get_status(admin, "/readyz") == Some(200))?;
    Ok((proc, addr))
}
