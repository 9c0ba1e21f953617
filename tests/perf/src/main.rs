//! `sluice-bench`: parses the command line, builds the binaries it measures, and runs the plan.
#![allow(clippy::print_stdout)] // A benchmark program prints its figures (and the generator its result).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sluice_bench::bench::{Paths, Placement, Plan, Runner, Scenario};
use sluice_bench::systems::{Kind, SystemDef};

/// Sluice's benchmarks: throughput, latency, streaming and memory against direct calls, a bare
/// proxy and peer gateways, in one run. Results go to target/bench/<time>/ (results.json,
/// report.md, p99.svg) and target/bench/latest.
#[derive(Parser)]
#[command(
    name = "sluice-bench",
    after_help = "Examples:\n  cargo run --release -p sluice-bench -- all          # everything, ~15 min\n  cargo run --release -p sluice-bench -- --quick all  # smoke run, ~3 min\n  cargo run --release -p sluice-bench -- latency --systems sluice\n  cargo run --release -p sluice-bench -- memory\n  cargo run --release -p sluice-bench -- peers --agentgateway-src ../agentgateway\n  cargo run --release -p sluice-bench -- routing    # routing strategies, ~10 min"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,

    /// Short runs and fewer loads: checks that everything works, figures not comparable.
    #[arg(long, global = true)]
    quick: bool,

    /// Systems, comma-separated: direct, bare, sluice, sluice-warn, sluice-weighted (routing
    /// `weighted`), litellm, portkey, crabllm, agentgateway
    /// (direct is always added: latency and streaming are measured against it).
    #[arg(long, global = true, value_delimiter = ',')]
    systems: Vec<String>,

    /// Where processes run: `shared` (no pinning) or `split` (load generators on the last CPU,
    /// simulator and system under test on the others).
    #[arg(long, global = true, value_enum, default_value = "shared")]
    placement: PlacementArg,

    /// Offered loads of the latency scenario, requests per second.
    #[arg(long, global = true, value_delimiter = ',')]
    rates: Vec<f64>,

    /// wrk connections.
    #[arg(long, global = true, default_value_t = 64)]
    connections: u32,

    /// Repeat every load this many times, interleaving the systems; tables show the best run
    /// of each (background load only ever makes a run worse).
    #[arg(long, global = true, default_value_t = 1)]
    rounds: u32,

    /// Do not build sluice-gateway and sluice-sim first.
    #[arg(long, global = true)]
    no_build: bool,

    /// Folder of sluice-gateway, sluice-sim and sluice-bench-proxy (default: this binary's).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,

    /// Also measure the sluice-gateway in this folder (another build, e.g. of the last release or
    /// of main before a change) as system `sluice-ref`, interleaved with this build's.
    #[arg(long, global = true)]
    reference_bin: Option<PathBuf>,

    /// Results folder (default: target/bench).
    #[arg(long, global = true)]
    out: Option<PathBuf>,

    /// Where peers are installed (default: $SLUICE_CACHE/bench, SLUICE_CACHE defaulting to
    /// ~/.cache/sluice).
    #[arg(long, global = true)]
    cache: Option<PathBuf>,

    /// A checkout of agentgateway's source (`git clone https://github.com/agentgateway/agentgateway`):
    /// built once with cargo into the cache, keyed by its commit, and measured as `agentgateway`.
    /// Without it, the latest build in the cache is used, or agentgateway is skipped.
    #[arg(long, global = true)]
    agentgateway_src: Option<PathBuf>,
}

#[derive(Subcommand, Clone)]
enum Cmd {
    /// Every scenario, every system (the published figures).
    All,
    /// Saturation throughput (wrk) of chat, embeddings and streamed chat.
    Throughput,
    /// p50/p90/p99 at fixed offered loads (open loop), 0 ms and 60 ms simulator.
    Latency,
    /// Streaming: time to first byte and per-event forwarding delay.
    Streaming,
    /// Sluice's memory and configuration load time with 10, 10,000 and 50,000 keys.
    Memory,
    /// Throughput, latency and streaming of the peer gateways beside Sluice and the baselines.
    Peers,
    /// Where Sluice (or --systems) spends CPU under saturating chat load: perf-<id>.txt.
    Profile,
    /// Routing strategies on a simulated heterogeneous fleet: SLO attainment, TTFT/TPOT, goodput,
    /// errors and predicted-TTFT error at several loads (target/bench/routing-<time>/).
    Routing {
        /// Offered loads as shares of the fleet's capacity (default 0.25,0.4,0.5,0.65,0.8,0.95;
        /// quick: 0.5,0.8,0.95).
        #[arg(long, value_delimiter = ',')]
        loads: Vec<f64>,
        /// Routing policies (default sloAware,leastRequest,roundRobin,queueScore).
        #[arg(long, value_delimiter = ',')]
        strategies: Vec<String>,
        /// Seconds recorded per replay (default 14; quick: 8).
        #[arg(long)]
        duration: Option<f64>,
        /// Seconds replayed before recording (default 4; quick: 2).
        #[arg(long)]
        warmup: Option<f64>,
        /// Gamma shape of the arrival gaps: 1 is Poisson, below 1 burstier.
        #[arg(long, default_value_t = 1.0)]
        burstiness: f64,
        /// Seed of the trace.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Only write report.md and the SVGs again from this run folder's results.json.
        #[arg(long)]
        render: Option<PathBuf>,
    },
    /// The limiter's cost: `Limiter::admit`+settle in-process and through Redis (ns/op), and
    /// chat throughput of Sluice with limits in-process and through Redis as a share of the bare
    /// proxy's, interleaved in --rounds (target/bench/limits-<time>/). Needs redis-server
    /// (`source tests/setup/redis.sh`, or on PATH).
    Limits {
        /// Admissions per in-process micro-benchmark (a tenth of them through Redis).
        #[arg(long, default_value_t = 200_000)]
        micro_ops: u32,
    },
    /// Writes report.md and the SVGs again from a run folder's results.json.
    Render {
        /// The run folder (target/bench/<time>).
        dir: PathBuf,
    },
    /// The open-loop generator (run by sluice-bench itself, one process per measurement).
    #[command(hide = true)]
    OpenLoop {
        /// JSON spec file.
        #[arg(long)]
        spec: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PlacementArg {
    Shared,
    Split,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Cmd::All);
    if let Cmd::OpenLoop { spec } = &command {
        let spec = serde_json::from_slice(&std::fs::read(spec)?)?;
        let result = sluice_bench::loadgen::run(&spec)?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    if let Cmd::Render { dir } = &command {
        let mut results: sluice_bench::results::Results =
            serde_json::from_slice(&std::fs::read(dir.join("results.json"))?)?;
        sluice_bench::report::finish(&mut results);
        sluice_bench::report::write(&results, dir)?;
        println!("{}", sluice_bench::report::markdown(&results));
        return Ok(());
    }
    if let Cmd::Routing { render: Some(dir), .. } = &command {
        let mut results: sluice_bench::routing::RoutingResults =
            serde_json::from_slice(&std::fs::read(dir.join("results.json"))?)?;
        sluice_bench::routing::report::finish(&mut results);
        sluice_bench::routing::report::write(&results, dir)?;
        println!("{}", sluice_bench::routing::report::markdown(&results));
        return Ok(());
    }
    if cfg!(debug_assertions) {
        bail!("sluice-bench measures nothing useful in a debug build: cargo run --release -p sluice-bench -- ...");
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("binary folder")?.to_owned(),
    };
    // Before building: a missing wrk stops the run at once, not after minutes of compiling.
    if uses_wrk(&command) {
        sluice_bench::wrk::check_installed()?;
    }
    if !cli.no_build {
        build(&workspace)?;
    }
    let out_dir = cli.out.clone().unwrap_or_else(|| bin_dir.parent().unwrap_or(&bin_dir).join("bench"));
    let cache_dir = cli.cache.clone().unwrap_or_else(|| {
        let base = std::env::var_os("SLUICE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/sluice")
        });
        base.join("bench")
    });
    if let Cmd::Routing { loads, strategies, duration, warmup, burstiness, seed, .. } = &command {
        let mut options = sluice_bench::routing::Options::new(cli.quick);
        if !loads.is_empty() {
            options.loads.clone_from(loads);
        }
        if !strategies.is_empty() {
            options.strategies.clone_from(strategies);
        }
        options.duration_secs = duration.unwrap_or(options.duration_secs);
        options.warmup_secs = warmup.unwrap_or(options.warmup_secs);
        options.burstiness = *burstiness;
        options.seed = *seed;
        sluice_bench::procs::stop_children_on_signal();
        let line = std::env::args().collect::<Vec<_>>().join(" ");
        let paths = sluice_bench::routing::Paths { bin_dir, out_dir };
        let run_dir = sluice_bench::routing::run(options, &paths, line)?;
        println!("{}", std::fs::read_to_string(run_dir.join("report.md"))?);
        println!("results: {}", run_dir.display());
        return Ok(());
    }
    if let Cmd::Limits { micro_ops } = &command {
        sluice_bench::procs::stop_children_on_signal();
        let options = sluice_bench::limits::Options {
            rounds: cli.rounds.max(1),
            warmup: Duration::from_secs(if cli.quick { 1 } else { 2 }),
            duration: Duration::from_secs(if cli.quick { 3 } else { 6 }),
            connections: cli.connections,
            micro_ops: if cli.quick { (*micro_ops / 4).max(1000) } else { *micro_ops },
        };
        let line = std::env::args().collect::<Vec<_>>().join(" ");
        let (run_dir, figures) = sluice_bench::limits::run(options, &bin_dir, &out_dir, line)?;
        println!("{figures}");
        println!("results: {}", run_dir.display());
        return Ok(());
    }
    let plan = plan(&cli, &command)?;
    sluice_bench::procs::stop_children_on_signal();
    let line = std::env::args().collect::<Vec<_>>().join(" ");
    let run_dir = Runner::run(plan, Paths { bin_dir, out_dir, cache_dir, workspace }, line)?;
    println!("{}", std::fs::read_to_string(run_dir.join("report.md"))?);
    println!("results: {}", run_dir.display());
    Ok(())
}

/// Whether `command` measures with wrk (throughput, profiles, peers, limits, everything).
fn uses_wrk(command: &Cmd) -> bool {
    matches!(command, Cmd::All | Cmd::Throughput | Cmd::Profile | Cmd::Peers | Cmd::Limits { .. })
}

/// Builds the binaries measured, so the one command needs nothing before it.
fn build(workspace: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Not sluice-bench itself: relinking the running binary would leave it without a path.
    eprintln!("building sluice-gateway, sluice-sim and sluice-bench-proxy (release)...");
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "sluice-gateway",
            "-p",
            "sluice-sim",
            "-p",
            "sluice-bench",
            "--bin",
            "sluice-gateway",
            "--bin",
            "sluice-sim",
            "--bin",
            "sluice-bench-proxy",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

fn plan(cli: &Cli, command: &Cmd) -> anyhow::Result<Plan> {
    use Scenario::*;
    let (scenarios, default_systems): (BTreeSet<Scenario>, &[&str]) = match command {
        Cmd::All => (
            [Throughput, Latency, Streaming, Memory].into(),
            &[
                "direct",
                "bare",
                "sluice",
                "sluice-warn",
                "sluice-weighted",
                "litellm",
                "portkey",
                "crabllm",
                "agentgateway",
            ],
        ),
        Cmd::Throughput => ([Throughput].into(), &["direct", "bare", "sluice", "sluice-warn", "sluice-weighted"]),
        Cmd::Latency => ([Latency].into(), &["direct", "bare", "sluice", "sluice-warn"]),
        Cmd::Streaming => ([Streaming].into(), &["direct", "bare", "sluice"]),
        Cmd::Memory => ([Memory].into(), &[]),
        Cmd::Profile => ([Profile].into(), &["sluice"]),
        Cmd::Peers => (
            [Throughput, Latency, Streaming].into(),
            &["direct", "bare", "sluice", "litellm", "portkey", "crabllm", "agentgateway"],
        ),
        Cmd::OpenLoop { .. } | Cmd::Render { .. } | Cmd::Routing { .. } | Cmd::Limits { .. } => {
            unreachable!("handled before planning")
        }
    };
    let mut wanted: Vec<String> = if cli.systems.is_empty() {
        default_systems.iter().map(|s| (*s).to_owned()).collect()
    } else {
        cli.systems.clone()
    };
    if !wanted.is_empty() && !wanted.iter().any(|s| s == "direct") {
        wanted.insert(0, "direct".into());
    }
    let all = SystemDef::all();
    for id in &wanted {
        if !all.iter().any(|s| &s.id == id) {
            bail!("unknown system {id:?}; known: {}", all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "));
        }
    }
    let mut systems: Vec<SystemDef> = all.into_iter().filter(|s| wanted.contains(&s.id)).collect();
    if let Some(dir) = &cli.agentgateway_src {
        // A wrong folder stops the run now, not when agentgateway's turn comes.
        let source = sluice_bench::agentgateway::Source::inspect(dir).map_err(anyhow::Error::msg)?;
        if !systems.iter().any(|s| matches!(s.kind, Kind::Agentgateway { .. })) {
            bail!("--agentgateway-src is given but agentgateway is not among the systems measured (--systems)");
        }
        eprintln!("agentgateway: {} at {} (cache folder {})", source.describe, dir.display(), source.key);
    }
    for system in &mut systems {
        if let Kind::Agentgateway { source } = &mut system.kind {
            source.clone_from(&cli.agentgateway_src);
        }
    }
    if let Some(dir) = &cli.reference_bin {
        let binary = dir.join("sluice-gateway");
        if !binary.is_file() {
            bail!("--reference-bin: {} does not exist", binary.display());
        }
        // Right after this build's Sluice, so rounds interleave the two.
        let at = systems.iter().position(|s| s.id == "sluice").map_or(systems.len(), |i| i + 1);
        systems.insert(at, SystemDef::reference(dir));
    }
    let quick = cli.quick;
    let rates = if !cli.rates.is_empty() {
        cli.rates.clone()
    } else if quick {
        vec![1000.0, 5000.0]
    } else {
        vec![1000.0, 5000.0, 10000.0]
    };
    Ok(Plan {
        scenarios,
        systems,
        quick,
        wrk_warmup: Duration::from_secs(if quick { 1 } else { 2 }),
        wrk_duration: Duration::from_secs(if quick { 2 } else { 6 }),
        wrk_threads: 2,
        wrk_connections: cli.connections,
        warmup_secs: if quick { 0.5 } else { 1.0 },
        duration_secs: if quick { 1.5 } else { 5.0 },
        rates,
        stream_rates: if quick { vec![100.0] } else { vec![100.0, 500.0] },
        memory_keys: if quick { vec![10, 10_000] } else { vec![10, 10_000, 50_000] },
        memory_rate: 5000.0,
        placement: match cli.placement {
            PlacementArg::Shared => Placement::Shared,
            PlacementArg::Split => Placement::Split,
        },
        keys: 10,
        rounds: cli.rounds.max(1),
    })
}
