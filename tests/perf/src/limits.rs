//! `sluice-bench limits`: what admission control costs, in-process and through Redis.
//!
//! (a) A micro-benchmark of the gateway's own [`Limiter`]: `admit` then settle, one key under a
//! tier with every limit set and a budget, in this process; in-process counters, then shared
//! through a `redis-server` started here (sequentially: the cost of one admission, mostly the
//! loopback round trip with Redis; and 64 at a time: what one core's worth of admissions costs
//! when Redis calls are pipelined on the multiplexed connections).
//! (b) wrk saturation of non-streaming chat through the bare proxy, Sluice with the benchmark
//! tier (every limit checked in-process) and Sluice with `--redis-url` to that server, the three
//! interleaved in rounds so each round's ratios compare runs made minutes apart at most.
//! Results: `<out>/limits-<time>/results.json`, and a table on stdout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use sluice_crds::api::BudgetPeriod;
use sluice_crds::config::{BudgetConfig, TierConfig};
use sluice_gateway::limits::shared::{RedisOptions, SharedLimits};
use sluice_gateway::limits::{Ask, KeyState, Limiter, ProjectCeiling, Used};
use sluice_gateway::metrics::LimiterMetrics;

use crate::bench::load_avg;
use crate::procs::{Proc, accepts, cpu_secs, free_port};
use crate::systems::{self, Env, Kind, SystemDef, Workload};
use crate::wrk::{self, WrkRequest, WrkSettings};

/// How long and how often to measure.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Interleaved rounds of the three systems.
    pub rounds: u32,
    /// wrk warm-up per run.
    pub warmup: Duration,
    /// wrk measured run.
    pub duration: Duration,
    /// wrk connections.
    pub connections: u32,
    /// Admissions per micro-benchmark.
    pub micro_ops: u32,
}

/// One micro-benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct Micro {
    /// `local` or `redis`.
    pub mode: String,
    /// Admissions in flight at once.
    pub concurrency: u32,
    /// Admitted and settled.
    pub ops: u32,
    /// Wall nanoseconds per admission and settle.
    pub ns_per_op: f64,
}

/// One system's wrk run in one round.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Round number from 1.
    pub round: u32,
    /// `bare`, `sluice-local`, `sluice-redis`.
    pub system: String,
    /// Responses per second.
    pub rps: f64,
    /// Answers with status >= 400 and socket errors.
    pub errors: u64,
    /// CPU microseconds per request of the system (the proxy or the gateway).
    pub cpu_us_per_request: f64,
    /// CPU microseconds per request of redis-server (Redis runs only).
    pub redis_cpu_us_per_request: Option<f64>,
    /// `sluice_limits_fallback_admissions_total` after the run (Redis runs: must stay 0).
    pub fallback_admissions: Option<f64>,
    /// Load average when the measured run started.
    pub load_avg: [f64; 3],
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct LimitsResults {
    /// The command line.
    pub command: String,
    /// Options.
    pub options: Options,
    /// When the run started.
    pub started_at: String,
    /// Load average at the start and the end.
    pub load_avg: [[f64; 3]; 2],
    /// CPUs online.
    pub cpus: usize,
    /// The micro-benchmarks.
    pub micro: Vec<Micro>,
    /// The wrk runs.
    pub runs: Vec<Run>,
    /// Per round: Sluice's throughput over the bare proxy's, in-process limits and with Redis.
    pub ratios: Vec<(u32, f64, f64)>,
}

/// Runs everything; returns the run folder and the figures as markdown.
pub fn run(options: Options, bin_dir: &Path, out_dir: &Path, command: String) -> anyhow::Result<(PathBuf, String)> {
    let started = jiff::Timestamp::now();
    let run_dir = out_dir.join(format!("limits-{}", started.strftime("%Y%m%dT%H%M%SZ")));
    std::fs::create_dir_all(&run_dir)?;
    let load_start = load_avg();
    eprintln!("load average at start: {load_start:?}");

    let redis = start_redis(&run_dir)?;
    let redis_url = format!("redis://{}", redis.1);
    let micro = micro(&options, &redis_url);
    let micro = match micro {
        Ok(micro) => micro,
        Err(error) => {
            redis.0.stop(Duration::from_secs(2));
            return Err(error);
        }
    };
    for m in &micro {
        eprintln!("limiter {} x{}: {:.0} ns per admit+settle", m.mode, m.concurrency, m.ns_per_op);
    }
    let throughput = throughput(&options, bin_dir, &run_dir, &redis_url, redis.0.pid());
    redis.0.stop(Duration::from_secs(2));
    let runs = throughput?;
    let ratios = (1..=options.rounds)
        .filter_map(|round| {
            let rps = |system: &str| runs.iter().find(|r| r.round == round && r.system == system).map(|r| r.rps);
            let bare = rps("bare").filter(|b| *b > 0.0)?;
            Some((round, rps("sluice-local")? / bare, rps("sluice-redis")? / bare))
        })
        .collect();
    let results = LimitsResults {
        command,
        options,
        started_at: started.to_string(),
        load_avg: [load_start, load_avg()],
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        micro,
        runs,
        ratios,
    };
    std::fs::write(run_dir.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    let latest = out_dir.join("limits-latest.json");
    std::fs::write(&latest, serde_json::to_string_pretty(&results)?)?;
    Ok((run_dir, markdown(&results)))
}

/// The figures as a markdown table.
pub fn markdown(results: &LimitsResults) -> String {
    let mut out = String::from("## Limiter micro-benchmark (in-process `Limiter::admit` + settle)\n\n");
    out.push_str("| mode | in flight | ops | ns per admit+settle |\n|---|---|---|---|\n");
    for m in &results.micro {
        out.push_str(&format!("| {} | {} | {} | {:.0} |\n", m.mode, m.concurrency, m.ops, m.ns_per_op));
    }
    out.push_str("\n## Throughput, chat, wrk\n\n");
    out.push_str(
        "| round | system | req/s | errors | CPU µs/req | redis CPU µs/req | fallback admissions | load |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in &results.runs {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.1} | {} | {} | {:.2} |\n",
            r.round,
            r.system,
            r.rps,
            r.errors,
            r.cpu_us_per_request,
            r.redis_cpu_us_per_request.map_or("-".into(), |v| format!("{v:.1}")),
            r.fallback_admissions.map_or("-".into(), |v| format!("{v:.0}")),
            r.load_avg[0]
        ));
    }
    out.push_str("\n| round | sluice-local / bare | sluice-redis / bare |\n|---|---|---|\n");
    for (round, local, redis) in &results.ratios {
        out.push_str(&format!("| {round} | {:.1}% | {:.1}% |\n", local * 100.0, redis * 100.0));
    }
    out.push_str(&format!(
        "\nload average: {:?} at start, {:?} at end; {} CPUs\n",
        results.load_avg[0], results.load_avg[1], results.cpus
    ));
    out
}

/// `SLUICE_REDIS_SERVER` (from `tests/setup/redis.sh`), else `redis-server` on PATH.
fn redis_binary() -> String {
    std::env::var("SLUICE_REDIS_SERVER").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "redis-server".into())
}

fn start_redis(dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut command = std::process::Command::new(redis_binary());
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    let mut proc = Proc::spawn("redis-server", command)
        .context("starting redis-server: source tests/setup/redis.sh or put redis-server on PATH")?;
    proc.wait_ready(Duration::from_secs(10), || accepts(addr))?;
    Ok((proc, addr))
}

fn bench_tier() -> TierConfig {
    TierConfig {
        requests_per_minute: Some(100_000_000),
        tokens_per_minute: Some(100_000_000_000),
        max_concurrent: Some(1_000_000),
        first_token_ms: 30_000,
        total_ms: 300_000,
        idle_stream_ms: 30_000,
        priority: 0,
        slo_ttft_ms: None,
        slo_tpot_ms: None,
        price_multiplier: 1.0,
        retry_percent: 20,
        min_retries_per_second: 1,
    }
}

/// `ops` admissions and settles of one key, `concurrency` at a time; nanoseconds per op.
async fn admissions(limiter: Arc<Limiter>, ops: u32, concurrency: u32) -> anyhow::Result<f64> {
    let state = Arc::new(KeyState::new());
    let tier = Arc::new(bench_tier());
    let budget = BudgetConfig { limit_usd: 1e9, period: BudgetPeriod::Monthly };
    let per_task = ops / concurrency.max(1);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (limiter, state, tier, budget) = (limiter.clone(), state.clone(), tier.clone(), budget.clone());
        tasks.spawn(async move {
            for _ in 0..per_task {
                let ask = Ask {
                    project: "bench",
                    key_id: "bench/k0",
                    state: &state,
                    tier: &tier,
                    budget: Some(&budget),
                    estimated_tokens: 40,
                    now: Instant::now(),
                    wall: jiff::Timestamp::now(),
                };
                let admission = limiter.admit(ask).await.map_err(|refusal| anyhow!("refused: {}", refusal.error))?;
                let used = Used { prompt_tokens: 20, completion_tokens: 16, cost_usd: 0.000_001 };
                state.settle(&admission, &tier, used, Instant::now(), jiff::Timestamp::now());
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(per_task * concurrency.max(1)))
}

fn micro(options: &Options, redis_url: &str) -> anyhow::Result<Vec<Micro>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async {
        let mut out = Vec::new();
        let local = Arc::new(Limiter::local(ProjectCeiling::default()));
        // A warm-up, then the measured runs.
        admissions(local.clone(), 10_000, 1).await?;
        for concurrency in [1, 64] {
            let ns = admissions(local.clone(), options.micro_ops, concurrency).await?;
            out.push(Micro { mode: "local".into(), concurrency, ops: options.micro_ops, ns_per_op: ns });
        }
        let metrics = LimiterMetrics::default();
        let shared = SharedLimits::new(
            RedisOptions {
                url: redis_url.to_owned(),
                timeout: Duration::from_millis(200),
                probe_interval: Duration::from_millis(500),
                key_prefix: format!("bench{}", std::process::id()),
                connections: 2,
                replicas: 1,
                instance: "bench".into(),
            },
            metrics.clone(),
        )
        .map_err(|e| anyhow!(e))?;
        let redis = Arc::new(Limiter::shared(ProjectCeiling::default(), shared));
        // Redis ops are ~100x dearer: a tenth as many.
        let ops = (options.micro_ops / 10).max(640);
        admissions(redis.clone(), 1_000, 1).await?;
        for concurrency in [1, 64] {
            let ns = admissions(redis.clone(), ops, concurrency).await?;
            out.push(Micro { mode: "redis".into(), concurrency, ops, ns_per_op: ns });
        }
        if metrics.fallback_admissions.get() > 0 {
            bail!(
                "{} admissions fell back to in-process limits: Redis did not answer in time",
                metrics.fallback_admissions.get()
            );
        }
        Ok(out)
    })
}

/// The body of `GET path` at `addr` (HTTP/1.0, for the admin port's metrics).
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

fn throughput(
    options: &Options,
    bin_dir: &Path,
    run_dir: &Path,
    redis_url: &str,
    redis_pid: u32,
) -> anyhow::Result<Vec<Run>> {
    let work_dir = run_dir.join("work");
    std::fs::create_dir_all(&work_dir)?;
    let mut sim_command = std::process::Command::new(bin_dir.join("sluice-sim"));
    sim_command.env_remove("SLUICE_SIM_LOG");
    let (sim, backends) = crate::simulator::start(&bin_dir.join("sluice-sim"), &work_dir, sim_command)?;
    let env = Env {
        bin_dir: bin_dir.to_owned(),
        work_dir: work_dir.clone(),
        cache_dir: work_dir.clone(),
        backends,
        cpus: None,
        keys: 10,
        sluice_args: Vec::new(),
    };
    let redis_env = Env {
        sluice_args: ["--redis-url", redis_url, "--pod-name", "bench"].map(str::to_owned).to_vec(),
        ..env.clone()
    };
    let sluice = |id: &str, label: &str| SystemDef {
        id: id.into(),
        label: label.into(),
        kind: Kind::Sluice { log: "info".into(), binary: None, routing: None, feature: None },
    };
    let systems = [
        (SystemDef { id: "bare".into(), label: "bare hyper proxy".into(), kind: Kind::Bare }, &env),
        (sluice("sluice-local", "Sluice, limits in-process"), &env),
        (sluice("sluice-redis", "Sluice, limits through Redis"), &redis_env),
    ];
    let settings = WrkSettings { threads: 2, connections: options.connections, cpus: None };
    let mut runs = Vec::new();
    let outcome = (|| -> anyhow::Result<()> {
        for round in 1..=options.rounds {
            for (def, env) in &systems {
                let mut running = systems::start(def, env)?;
                let target = running.target(Workload::Chat);
                let (url, headers) = (target.url(), target.headers_with_key());
                let request = WrkRequest { url: &url, headers: &headers, body: &target.body };
                let measured = (|| -> anyhow::Result<Run> {
                    wrk::run(&settings, &request, options.warmup, &work_dir)?;
                    let load = load_avg();
                    let pids = running.pids();
                    let (cpu, redis_cpu) = (cpu_secs(&pids), cpu_secs(&[redis_pid]));
                    let result = wrk::run(&settings, &request, options.duration, &work_dir)?;
                    let requests = result.requests.max(1) as f64;
                    let per_request = |secs: f64| secs / requests * 1e6;
                    let is_redis = def.id == "sluice-redis";
                    let fallback = running
                        .admin()
                        .and_then(|admin| http_get(admin, "/metrics"))
                        .and_then(|text| metric(&text, "sluice_limits_fallback_admissions_total"));
                    running.check_alive()?;
                    Ok(Run {
                        round,
                        system: def.id.clone(),
                        rps: result.rps,
                        errors: result.status_errors + result.socket_errors,
                        cpu_us_per_request: per_request(cpu_secs(&pids) - cpu),
                        redis_cpu_us_per_request: is_redis.then(|| per_request(cpu_secs(&[redis_pid]) - redis_cpu)),
                        fallback_admissions: fallback.filter(|_| def.id != "bare"),
                        load_avg: load,
                    })
                })();
                running.stop();
                let run = measured?;
                eprintln!(
                    "round {round} {}: {:.0} req/s, {} errors, {:.1} µs CPU/req",
                    run.system, run.rps, run.errors, run.cpu_us_per_request
                );
                runs.push(run);
            }
        }
        Ok(())
    })();
    sim.stop(Duration::from_secs(3));
    outcome.map(|()| runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_exact_name() {
        let text = "sluice_limits_fallback_admissions_total 3\nsluice_limits_fallback_admissions_total_x 9\n";
        assert_eq!(metric(text, "sluice_limits_fallback_admissions_total"), Some(3.0));
        assert_eq!(metric(text, "sluice_limits_redis_up"), None);
    }
}
