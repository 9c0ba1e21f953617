//! The run: start the simulator, then each system in turn; measure saturation throughput (wrk),
//! latency at fixed offered loads (the open-loop generator), streaming delays, and Sluice's
//! memory and configuration load time with many keys; write the results.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::loadgen::{MEASURE_END, MEASURE_START, OpenLoopResult, OpenLoopSpec};
use crate::procs::{self, CpuWindow, RssSampler};
use crate::results::{Measurement, MemoryResult, Results, SystemReport};
use crate::stats::{median, summarize};
use crate::systems::{self, Env, Running, SystemDef, Target, Workload};
use crate::wrk::{self, WrkRequest, WrkSettings};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Saturation throughput.
    Throughput,
    /// Latency at fixed offered loads.
    Latency,
    /// Streaming: time to first byte and per-event delay.
    Streaming,
    /// Sluice's memory and configuration load time with many keys.
    Memory,
    /// A CPU profile (perf, cpu-clock) of each system under saturating chat load.
    Profile,
}

/// Where the load generators and the systems run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Every process may run on every CPU (the scheduler decides).
    Shared,
    /// Load generators on the last CPU, simulator and system under test on the others.
    Split,
}

/// The whole plan of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Scenarios to run.
    pub scenarios: BTreeSet<Scenario>,
    /// Systems, in order (direct first: streaming delays are measured against it).
    pub systems: Vec<SystemDef>,
    /// Smoke-test durations.
    pub quick: bool,
    /// wrk warm-up before each measured run.
    pub wrk_warmup: Duration,
    /// wrk measured run.
    pub wrk_duration: Duration,
    /// wrk threads and connections.
    pub wrk_threads: u32,
    /// wrk connections.
    pub wrk_connections: u32,
    /// Open loop: seconds sent first and not recorded.
    pub warmup_secs: f64,
    /// Open loop: seconds recorded.
    pub duration_secs: f64,
    /// Offered loads of the latency scenario.
    pub rates: Vec<f64>,
    /// Offered loads of the streaming scenario (streams per second).
    pub stream_rates: Vec<f64>,
    /// Key counts of the memory scenario.
    pub memory_keys: Vec<usize>,
    /// Offered load of the memory scenario.
    pub memory_rate: f64,
    /// Process placement.
    pub placement: Placement,
    /// Times every load is repeated (the report shows the best of them: background load only
    /// ever slows a run down).
    pub rounds: u32,
    /// Keys in the main runs' project.
    pub keys: usize,
}

/// Paths a run needs.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `sluice-gateway`, `sluice-sim`, `sluice-bench-proxy`.
    pub bin_dir: PathBuf,
    /// `target/bench`.
    pub out_dir: PathBuf,
    /// Peers' installs.
    pub cache_dir: PathBuf,
    /// The workspace (for git).
    pub workspace: PathBuf,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_avg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [values.next().unwrap_or(0.0), values.next().unwrap_or(0.0), values.next().unwrap_or(0.0)]
}

/// CPU seconds used by this process's reaped children (wrk, the open-loop generator).
fn children_cpu_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rfind(')').map_or("", |i| &text[i + 1..]);
    let fields: Vec<u64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    let ticks = fields.get(13).copied().unwrap_or(0) + fields.get(14).copied().unwrap_or(0);
    let clk: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 / clk
}

/// A run in progress.
pub struct Runner {
    plan: Plan,
    env: Env,
    paths: Paths,
    /// Everything measured so far.
    pub results: Results,
    /// This run's folder.
    pub run_dir: PathBuf,
    loadgen_cpus: Option<String>,
    sim_pid: u32,
    /// Per stream rate: each event's median arrival when calling the simulator directly (ms).
    direct_event_medians: BTreeMap<u64, Vec<f64>>,
    saturation: BTreeMap<(String, Workload), f64>,
}

/// A started system of a group, with what it serves and what it has measured.
struct Member {
    running: Running,
    report: SystemReport,
    supported: Vec<Workload>,
    full: bool,
}

impl Member {
    fn record(&mut self, m: Measurement, results: &mut Results) {
        self.report.rss_peak_bytes = self.report.rss_peak_bytes.max(m.peak_rss_bytes);
        results.measurements.push(m);
    }
}

/// Processes sampled during an open-loop run: CPU by named group, memory of some roots.
struct Observed {
    cpu: Vec<(String, Vec<u32>)>,
    rss: Vec<u32>,
}

/// What was sampled over a measured window.
#[derive(Default)]
struct Window {
    cpu_secs: BTreeMap<String, f64>,
    wall_secs: f64,
    peak_rss: u64,
    load: [f64; 3],
}

impl Measurement {
    fn apply(&mut self, window: Window) {
        self.cpu_secs = window.cpu_secs;
        self.wall_secs = window.wall_secs;
        self.peak_rss_bytes = window.peak_rss;
        self.load_avg = window.load;
    }
}

fn say(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

fn fmt_load(load: [f64; 3]) -> String {
    format!("{:.2} {:.2} {:.2}", load[0], load[1], load[2])
}

impl Runner {
    /// Runs the plan; returns the folder of the results.
    pub fn run(plan: Plan, paths: Paths, command: String) -> anyhow::Result<PathBuf> {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let run_dir = paths.out_dir.join(&stamp);
        let work_dir = run_dir.join("work");
        std::fs::create_dir_all(&work_dir)?;
        for tool in ["sluice-gateway", "sluice-sim", "sluice-bench-proxy"] {
            if !paths.bin_dir.join(tool).exists() {
                bail!(
                    "{} is missing: build with `cargo build --release -p sluice-gateway -p sluice-sim -p sluice-bench`",
                    paths.bin_dir.join(tool).display()
                );
            }
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let (sut_cpus, loadgen_cpus) = match plan.placement {
            Placement::Split if cpus >= 2 => (Some(format!("0-{}", cpus - 2)), Some(format!("{}", cpus - 1))),
            _ => (None, None),
        };
        let mut results = Results {
            started_at: jiff::Timestamp::now().to_string(),
            command,
            quick: plan.quick,
            machine: crate::machine::describe(),
            git: crate::machine::git(&paths.workspace),
            placement: match (&sut_cpus, &loadgen_cpus) {
                (Some(s), Some(l)) => {
                    format!("split: load generators on CPU {l}; simulator and system under test on CPUs {s} (taskset)")
                }
                _ => format!(
                    "shared: load generator, simulator and system under test all share the machine's {cpus} CPUs (no pinning)"
                ),
            },
            ..Results::default()
        };
        results.settings = settings(&plan);
        say(format!(
            "sluice-bench: {} CPUs ({}), load average {}, results in {}",
            cpus,
            results.machine.cpu_model,
            fmt_load(results.machine.load_at_start),
            run_dir.display()
        ));
        say(format!("placement: {}", results.placement));

        let mut sim_command = match &sut_cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", c]).arg(paths.bin_dir.join("sluice-sim"));
                cmd
            }
            None => Command::new(paths.bin_dir.join("sluice-sim")),
        };
        sim_command.env_remove("SLUICE_SIM_LOG");
        let (sim, backends) = crate::simulator::start(&paths.bin_dir.join("sluice-sim"), &work_dir, sim_command)?;
        say(format!(
            "simulator: instant {} (0 ms), slow {} (60 ms), paced {} (60 ms + 10 ms/token)",
            backends.instant, backends.slow, backends.paced
        ));
        let env = Env {
            bin_dir: paths.bin_dir.clone(),
            work_dir: work_dir.clone(),
            cache_dir: paths.cache_dir.clone(),
            backends,
            cpus: sut_cpus,
            keys: plan.keys,
            sluice_args: Vec::new(),
        };
        let mut runner = Runner {
            sim_pid: sim.pid(),
            plan,
            env,
            paths,
            results,
            run_dir: run_dir.clone(),
            loadgen_cpus,
            direct_event_medians: BTreeMap::new(),
            saturation: BTreeMap::new(),
        };
        let outcome = runner.run_all();
        sim.stop(Duration::from_secs(3));
        runner.results.finished_at = jiff::Timestamp::now().to_string();
        runner.results.machine.load_at_end = load_avg();
        crate::report::finish(&mut runner.results);
        crate::report::write(&runner.results, &run_dir)?;
        let _ = std::fs::remove_dir_all(&work_dir);
        crate::report::link_latest(&runner.paths.out_dir, &run_dir);
        outcome?;
        Ok(run_dir)
    }

    fn run_all(&mut self) -> anyhow::Result<()> {
        if self.plan.scenarios.contains(&Scenario::Profile) {
            for def in self.plan.systems.clone() {
                if def.id != "direct"
                    && let Err(e) = self.profile(&def)
                {
                    say(format!("profile of {} failed: {e:#}", def.id));
                    self.results.notes.push(format!("profile of {} failed: {e:#}", def.id));
                }
            }
        }
        let load_scenarios = [Scenario::Throughput, Scenario::Latency, Scenario::Streaming]
            .iter()
            .any(|s| self.plan.scenarios.contains(s));
        if load_scenarios {
            // Sluice and its baselines run interleaved; each peer alone afterwards (LiteLLM idles
            // at close to 1 GB, which the others need not share).
            let (core, peers): (Vec<SystemDef>, Vec<SystemDef>) =
                self.plan.systems.clone().into_iter().partition(|s| !s.is_peer());
            self.run_group(&core);
            for peer in peers {
                self.run_group(std::slice::from_ref(&peer));
            }
        }
        if self.plan.scenarios.contains(&Scenario::Memory)
            && let Err(e) = self.run_memory()
        {
            say(format!("memory scenario failed: {e:#}"));
            self.results.notes.push(format!("memory scenario failed: {e:#}"));
        }
        Ok(())
    }

    /// Starts `def` and checks which workloads it serves; `None` (recorded as skipped) if it
    /// does not start.
    fn start_system(&mut self, def: &SystemDef) -> Option<Member> {
        say(format!("\n== {} ({}) ==", def.label, def.id));
        let mut report = SystemReport { id: def.id.clone(), label: def.label.clone(), ..SystemReport::default() };
        let running = match systems::start(def, &self.env) {
            Ok(running) => running,
            Err(e) => {
                let reason = format!("{e:#}");
                say(format!("   SKIPPED: {}", procs::last_lines(&reason, 6)));
                report.status = "skipped".into();
                report.reason = Some(procs::last_lines(&reason, 12));
                self.results.systems.push(report);
                return None;
            }
        };
        report.status = "ok".into();
        report.version = running.version.clone();
        report.config = running.config_note.clone();
        report.startup_secs = running.startup_secs;
        std::thread::sleep(Duration::from_secs(1));
        let tree: Vec<u32> = running.pids().iter().flat_map(|&p| procs::descendants(p)).collect();
        report.rss_idle_bytes = procs::rss_bytes(&tree);
        report.pss_idle_bytes = procs::pss_bytes(&tree);
        say(format!(
            "   {} ready in {:.1} s, idle RSS {:.1} MB",
            if running.version.is_empty() { "simulator" } else { running.version.as_str() },
            running.startup_secs,
            report.rss_idle_bytes as f64 / 1e6
        ));
        let mut supported = Vec::new();
        for workload in
            [Workload::Chat, Workload::Embeddings, Workload::ChatStream, Workload::Chat60, Workload::PacedStream]
        {
            match systems::smoke(&running.target(workload), workload) {
                Ok(()) => supported.push(workload),
                Err(mut reason) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let logs: String = running.procs.iter().map(procs::Proc::log).collect();
                    if let Some(line) = logs.lines().rev().find(|l| l.contains("rror")) {
                        reason.push_str(&format!("; its log: {}", line.trim().chars().take(200).collect::<String>()));
                    }
                    say(format!("   {} not served: {reason}", workload.id()));
                    report.unsupported.insert(workload.id().into(), reason);
                }
            }
        }
        // `sluice-warn` and `sluice-weighted` are Sluice again with less logging or another
        // routing policy: measured on chat throughput and latency, where the difference shows.
        let full = !matches!(def.id.as_str(), "sluice-warn" | "sluice-weighted");
        Some(Member { running, report, supported, full })
    }

    /// Measures a group of systems, interleaved: each load is offered to every member in turn
    /// (and the whole sequence repeated `rounds` times), so a change in the machine's background
    /// load affects them alike and the comparisons within the group stay fair.
    fn run_group(&mut self, defs: &[SystemDef]) {
        let mut members: Vec<Member> = defs.iter().filter_map(|def| self.start_system(def)).collect();
        if members.len() > 1 {
            say(format!(
                "\n== interleaved: {} ==",
                members.iter().map(|m| m.running.def.id.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        for round in 0..self.plan.rounds {
            if self.plan.rounds > 1 {
                say(format!("-- round {} of {}", round + 1, self.plan.rounds));
            }
            if self.plan.scenarios.contains(&Scenario::Throughput) {
                for workload in [Workload::Chat, Workload::Embeddings, Workload::ChatStream] {
                    for member in &mut members {
                        if member.supported.contains(&workload) && (member.full || workload == Workload::Chat) {
                            let mut m = self.throughput(&mut member.running, workload);
                            m.round = round;
                            member.record(m, &mut self.results);
                        }
                    }
                }
            }
            if self.plan.scenarios.contains(&Scenario::Latency) {
                for workload in [Workload::Chat, Workload::Embeddings, Workload::Chat60] {
                    for rate in self.plan.rates.clone() {
                        for member in &mut members {
                            if member.supported.contains(&workload) && (member.full || workload == Workload::Chat) {
                                let mut m = self.latency(&mut member.running, workload, rate);
                                m.round = round;
                                member.record(m, &mut self.results);
                            }
                        }
                    }
                }
            }
            if self.plan.scenarios.contains(&Scenario::Streaming) {
                for rate in self.plan.stream_rates.clone() {
                    for member in &mut members {
                        if member.full && member.supported.contains(&Workload::PacedStream) {
                            let mut m = self.streaming(&mut member.running, rate);
                            m.round = round;
                            member.record(m, &mut self.results);
                        }
                    }
                }
            }
        }
        for mut member in members {
            if let Err(e) = member.running.check_alive() {
                self.results.notes.push(format!("{} exited during its runs: {e:#}", member.running.def.id));
            }
            member.running.stop();
            self.results.systems.push(member.report);
        }
    }

    fn cpu_groups(&self, running: &Running) -> Vec<(String, Vec<u32>)> {
        vec![("system".into(), running.pids()), ("simulator".into(), vec![self.sim_pid])]
    }

    fn observed(&self, running: &Running) -> Observed {
        Observed { cpu: self.cpu_groups(running), rss: running.pids() }
    }

    fn wrk_settings(&self) -> WrkSettings {
        WrkSettings {
            threads: self.plan.wrk_threads,
            connections: self.plan.wrk_connections,
            cpus: self.loadgen_cpus.clone(),
        }
    }

    fn throughput(&mut self, running: &mut Running, workload: Workload) -> Measurement {
        let target = running.target(workload);
        let headers = target.headers_with_key();
        let url = target.url();
        let request = WrkRequest { url: &url, headers: &headers, body: &target.body };
        let mut m = Measurement {
            system: running.def.id.clone(),
            scenario: "throughput".into(),
            workload: workload.id().into(),
            ..Measurement::default()
        };
        let settings = self.wrk_settings();
        let work = self.env.work_dir.clone();
        let outcome = (|| -> anyhow::Result<()> {
            wrk::run(&settings, &request, self.plan.wrk_warmup, &work)?;
            m.load_avg = load_avg();
            let cpu = CpuWindow::start(self.cpu_groups(running));
            let rss = RssSampler::start(running.pids());
            let loadgen_before = children_cpu_secs();
            let result = wrk::run(&settings, &request, self.plan.wrk_duration, &work)?;
            let (mut used, wall) = cpu.finish();
            used.insert("loadgen".into(), children_cpu_secs() - loadgen_before);
            m.peak_rss_bytes = rss.finish();
            m.wall_secs = wall;
            if result.requests > 0 && !running.pids().is_empty() {
                m.system_cpu_us_per_request = Some(used["system"] / result.requests as f64 * 1e6);
            }
            m.cpu_secs = used;
            m.wrk = Some(result);
            Ok(())
        })();
        if let Err(e) = outcome {
            m.skipped = Some(format!("{e:#}"));
        }
        if let Some(w) = &m.wrk {
            let best = self.saturation.entry((m.system.clone(), workload)).or_insert(0.0);
            *best = best.max(w.rps);
            say(format!(
                "   throughput {:<12} {:>9.0} req/s  errors {:>6}  system CPU {:>6} us/req  peak RSS {:>6.1} MB  (load {})",
                workload.id(),
                w.rps,
                w.status_errors + w.socket_errors,
                m.system_cpu_us_per_request.map_or("-".into(), |v| format!("{v:.1}")),
                m.peak_rss_bytes as f64 / 1e6,
                fmt_load(m.load_avg)
            ));
        } else if let Some(reason) = &m.skipped {
            say(format!("   throughput {} failed: {reason}", workload.id()));
        }
        let _ = running.check_alive();
        m
    }

    /// What the open-loop generator should send to `target`.
    fn spec(
        &self,
        target: &Target,
        keys: Vec<String>,
        rate: f64,
        duration_secs: f64,
        keep_events: bool,
    ) -> OpenLoopSpec {
        OpenLoopSpec {
            url: target.url(),
            headers: target.headers.clone(),
            keys,
            body: target.body.clone(),
            rate,
            warmup_secs: self.plan.warmup_secs,
            duration_secs,
            stream: target.stream,
            max_in_flight: 8000,
            timeout_secs: 10.0,
            keep_events,
        }
    }

    /// Runs the open-loop generator in its own process, sampling the observed processes over
    /// exactly the recorded window.
    fn open_loop(&self, observed: &Observed, spec: &OpenLoopSpec) -> anyhow::Result<(OpenLoopResult, Window)> {
        let spec_path = self.env.work_dir.join("open-loop-spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(spec)?)?;
        let exe = crate::procs::own_exe()?;
        let mut command = match &self.loadgen_cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command.arg("open-loop").arg("--spec").arg(&spec_path).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let loadgen_before = children_cpu_secs();
        let mut child = command.spawn().context("starting the open-loop generator")?;
        let stdout = child.stdout.take().context("generator stdout")?;
        let (mut cpu, mut rss, mut window) = (None, None, Window::default());
        let mut last = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line == MEASURE_START {
                window.load = load_avg();
                cpu = Some(CpuWindow::start(observed.cpu.clone()));
                rss = Some(RssSampler::start(observed.rss.clone()));
            } else if line == MEASURE_END {
                if let Some(c) = cpu.take() {
                    (window.cpu_secs, window.wall_secs) = c.finish();
                }
                if let Some(r) = rss.take() {
                    window.peak_rss = r.finish();
                }
            } else {
                last = line;
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("open-loop generator failed ({status})");
        }
        window.cpu_secs.insert("loadgen".into(), children_cpu_secs() - loadgen_before);
        let result: OpenLoopResult = serde_json::from_str(&last).context("open-loop generator's result")?;
        Ok((result, window))
    }

    fn latency(&mut self, running: &mut Running, workload: Workload, rate: f64) -> Measurement {
        let mut m = Measurement {
            system: running.def.id.clone(),
            scenario: "latency".into(),
            workload: workload.id().into(),
            offered_rate: Some(rate),
            ..Measurement::default()
        };
        let capacity_workload = if workload == Workload::Chat60 { Workload::Chat } else { workload };
        if let Some(&sat) = self.saturation.get(&(m.system.clone(), capacity_workload))
            && rate > sat * 0.85
        {
            m.skipped = Some(format!("offered load above 85% of its saturation throughput ({sat:.0} req/s)"));
            say(format!(
                "   latency    {:<12} {:>6.0}/s  skipped: {}",
                workload.id(),
                rate,
                m.skipped.as_deref().unwrap_or("")
            ));
            return m;
        }
        let target = running.target(workload);
        let spec = self.spec(&target, target.keys.clone(), rate, self.plan.duration_secs, false);
        match self.open_loop(&self.observed(running), &spec) {
            Ok((result, w)) => {
                if !running.pids().is_empty() && result.ok > 0 {
                    m.system_cpu_us_per_request =
                        Some(w.cpu_secs.get("system").copied().unwrap_or(0.0) / result.ok as f64 * 1e6);
                }
                let load = w.load;
                m.apply(w);
                let l = result.latency.clone().unwrap_or_default();
                say(format!(
                    "   latency    {:<12} {:>6.0}/s  p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3} ms  errors {:>5}  lag p99 {:.3} ms  (load {})",
                    workload.id(),
                    rate,
                    l.p50,
                    l.p90,
                    l.p99,
                    result.errors.values().sum::<u64>(),
                    result.dispatch_lag.as_ref().map_or(0.0, |s| s.p99),
                    fmt_load(load)
                ));
                m.open_loop = Some(result);
            }
            Err(e) => {
                say(format!("   latency {} {rate}/s failed: {e:#}", workload.id()));
                m.skipped = Some(format!("{e:#}"));
            }
        }
        let _ = running.check_alive();
        m
    }

    /// Why `rate` is not offered to `system`: above 85% of the saturation throughput measured
    /// in this run (the 60 ms and paced workloads use their 0 ms counterparts), where an open
    /// loop only measures a queue growing for the length of the run.
    fn over_capacity(&self, system: &str, workload: Workload, rate: f64) -> Option<String> {
        let capacity = match workload {
            Workload::Chat60 => Workload::Chat,
            Workload::PacedStream => Workload::ChatStream,
            other => other,
        };
        let sat = *self.saturation.get(&(system.to_owned(), capacity))?;
        (rate > sat * 0.85)
            .then(|| format!("offered load above 85% of its saturation throughput ({sat:.0} req/s, {})", capacity.id()))
    }

    fn streaming(&mut self, running: &mut Running, rate: f64) -> Measurement {
        let workload = Workload::PacedStream;
        let mut m = Measurement {
            system: running.def.id.clone(),
            scenario: "streaming".into(),
            workload: workload.id().into(),
            offered_rate: Some(rate),
            ..Measurement::default()
        };
        if let Some(reason) = self.over_capacity(&m.system, workload, rate) {
            say(format!("   streaming  {rate:>4.0} streams/s  skipped: {reason}"));
            m.skipped = Some(reason);
            return m;
        }
        let target = running.target(workload);
        let spec = self.spec(&target, target.keys.clone(), rate, self.plan.duration_secs, true);
        match self.open_loop(&self.observed(running), &spec) {
            Ok((mut result, w)) => {
                let load = w.load;
                let events = std::mem::take(&mut result.stream_events_us);
                let key = rate.round() as u64;
                if running.def.id == "direct" {
                    self.direct_event_medians.insert(key, event_medians(&events));
                }
                if let Some(medians) = self.direct_event_medians.get(&key) {
                    m.event_delay = event_delays(&events, medians);
                }
                m.apply(w);
                let ttfb = result.ttfb.clone().unwrap_or_default();
                let delay = m.event_delay.clone().unwrap_or_default();
                say(format!(
                    "   streaming  {:>4.0} streams/s  TTFB p50 {:>7.2} p99 {:>7.2} ms  event delay p50 {:>6.3} p99 {:>6.3} ms  events/stream {:.0}  errors {}  (load {})",
                    rate,
                    ttfb.p50,
                    ttfb.p99,
                    delay.p50,
                    delay.p99,
                    result.events_per_stream.as_ref().map_or(0.0, |s| s.p50),
                    result.errors.values().sum::<u64>(),
                    fmt_load(load)
                ));
                m.open_loop = Some(result);
            }
            Err(e) => {
                say(format!("   streaming {rate}/s failed: {e:#}"));
                m.skipped = Some(format!("{e:#}"));
            }
        }
        let _ = running.check_alive();
        m
    }

    /// Records where `def` spends its CPU under saturating chat load (wrk), with
    /// `perf record -e cpu-clock -g` (hardware counters are not available on every machine), and
    /// writes `perf-<id>.txt`: the flat profile by symbol, then by shared object.
    fn profile(&mut self, def: &SystemDef) -> anyhow::Result<()> {
        say(format!("\n== profile: {} ==", def.label));
        let running = systems::start(def, &self.env)?;
        let target = running.target(Workload::Chat);
        let headers = target.headers_with_key();
        let url = target.url();
        let request = WrkRequest { url: &url, headers: &headers, body: &target.body };
        let settings = self.wrk_settings();
        let work = self.env.work_dir.clone();
        let outcome = (|| -> anyhow::Result<String> {
            wrk::run(&settings, &request, self.plan.wrk_warmup, &work)?;
            let data = self.run_dir.join(format!("perf-{}.data", def.id));
            let secs = self.plan.wrk_duration.as_secs().max(1);
            let pid = running.pids().first().copied().context("no process to profile")?;
            let mut perf = Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o"])
                .arg(&data)
                .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("running perf (apt-get install linux-perf)")?;
            let load = load_avg();
            let result = wrk::run(&settings, &request, self.plan.wrk_duration, &work)?;
            perf.wait()?;
            let report = |args: &[&str]| -> anyhow::Result<String> {
                let out = Command::new("perf")
                    .args(["report", "--stdio", "-g", "none"])
                    .args(args)
                    .arg("-i")
                    .arg(&data)
                    .stderr(Stdio::null())
                    .output()?;
                Ok(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| l.trim_end().trim_end_matches(['-', ' ']))
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n"))
            };
            Ok(format!(
                "# {} under wrk chat load: {:.0} req/s, load average {}\n# perf record -e cpu-clock -F 999 -g -p PID; perf.data beside this file\n\n## self time by symbol\n{}\n\n## self time by object\n{}\n\n## inclusive time (children) by symbol, above 4%\n{}\n",
                def.label,
                result.rps,
                fmt_load(load),
                report(&["--no-children", "--percent-limit", "0.6", "-F", "overhead,sym"])?,
                report(&["--no-children", "-F", "overhead,dso"])?,
                report(&["--children", "--percent-limit", "4", "--sort", "sym"])?,
            ))
        })();
        running.stop();
        let text = outcome?;
        std::fs::write(self.run_dir.join(format!("perf-{}.txt", def.id)), &text)?;
        for line in text.lines().filter(|l| l.contains('%')).take(25) {
            say(format!("   {line}"));
        }
        Ok(())
    }

    fn run_memory(&mut self) -> anyhow::Result<()> {
        say("\n== Sluice memory and configuration load time ==");
        for keys in self.plan.memory_keys.clone() {
            let dir = self.env.work_dir.join(format!("memory-{keys}"));
            let manifests = dir.join("manifests");
            let compiled = dir.join("compiled");
            crate::project::write_manifests(&manifests, &self.env.backends, keys, crate::project::Options::default())?;
            crate::project::write_compiled(&manifests, &compiled)?;
            let mut r = MemoryResult {
                keys,
                manifests_bytes: dir_bytes(&manifests),
                compiled_bytes: dir_bytes(&compiled),
                load_rate: self.plan.memory_rate,
                ..MemoryResult::default()
            };
            let started = Instant::now();
            let status = self
                .env
                .command(self.env.bin_dir.join("sluice-gateway"))
                .arg("--config")
                .arg(&manifests)
                .arg("--check")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            r.check_secs = started.elapsed().as_secs_f64();
            if !status.success() {
                bail!("sluice-gateway --check rejected the {keys}-key project");
            }

            let (proc, addr, _admin, ready) = systems::start_sluice_from(&self.env, &manifests, "info")?;
            r.ready_secs_manifests = ready.as_secs_f64();
            std::thread::sleep(Duration::from_secs(2));
            r.rss_idle_bytes = procs::rss_bytes(&[proc.pid()]);
            if Some(&keys) == self.plan.memory_keys.first() {
                r.connections = Some(self.connection_memory(proc.pid(), addr)?);
            }
            let all_keys: Vec<String> = (0..keys).map(crate::project::key).collect();
            let target = systems::sluice_target(addr, Workload::Chat, all_keys.clone());
            let duration = (keys as f64 / self.plan.memory_rate).clamp(self.plan.duration_secs, 12.0);
            let observed = Observed {
                cpu: vec![("system".to_owned(), vec![proc.pid()]), ("simulator".to_owned(), vec![self.sim_pid])],
                rss: vec![proc.pid()],
            };
            let spec = self.spec(&target, all_keys, self.plan.memory_rate, duration, false);
            let (result, w) = self.open_loop(&observed, &spec)?;
            let load = w.load;
            r.rss_load_peak_bytes = w.peak_rss;
            r.rss_after_load_bytes = procs::rss_bytes(&[proc.pid()]);
            r.load_ok = result.ok;
            r.load_errors = result.errors.values().sum();
            r.load_avg = load;
            proc.stop(Duration::from_secs(5));

            let (proc, _, _, ready) = systems::start_sluice_from(&self.env, &compiled, "info")?;
            r.ready_secs_compiled = ready.as_secs_f64();
            std::thread::sleep(Duration::from_secs(1));
            r.rss_idle_compiled_bytes = procs::rss_bytes(&[proc.pid()]);
            proc.stop(Duration::from_secs(5));
            say(format!(
                "   {:>6} keys: manifests {:>6.1} MB, --check {:.2} s, ready {:.2} s (manifests) / {:.2} s (compiled), RSS idle {:.1} MB, under load peak {:.1} MB ({} ok, {} errors)  (load {})",
                keys,
                r.manifests_bytes as f64 / 1e6,
                r.check_secs,
                r.ready_secs_manifests,
                r.ready_secs_compiled,
                r.rss_idle_bytes as f64 / 1e6,
                r.rss_load_peak_bytes as f64 / 1e6,
                r.load_ok,
                r.load_errors,
                fmt_load(load)
            ));
            self.results.memory.push(r);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }
}

impl Runner {
    /// Memory per idle connection and per stream in flight, 1,000 of each: streams of 600
    /// tokens 10 ms apart on the paced backend (6 s), held open while memory is read.
    fn connection_memory(
        &self,
        pid: u32,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<crate::connections::ConnectionMemory> {
        let prefix = format!("/{}/{}/v1", crate::project::PROJECT, crate::project::ENDPOINT);
        let body = format!(
            r#"{{"model":"{}","messages":[{{"role":"user","content":"Say hello."}}],"max_tokens":600,"ignore_eos":true,"stream":true}}"#,
            crate::project::MODEL_STREAM
        );
        let paths = (format!("{prefix}/models"), format!("{prefix}/chat/completions"));
        let measured =
            crate::connections::measure(pid, addr, &crate::project::key(0), (&paths.0, &paths.1, &body), 1000)?;
        say(format!(
            "   connections: {:.1} KB per idle kept-alive connection, {:.1} KB per stream in flight (its connection included), {} of each",
            measured.bytes_per_idle_connection / 1024.0,
            measured.bytes_per_stream / 1024.0,
            measured.streams
        ));
        Ok(measured)
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Each event index's median arrival (ms) over the streams.
pub fn event_medians(streams: &[Vec<u32>]) -> Vec<f64> {
    let longest = streams.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .filter_map(|j| {
            let at: Vec<f64> = streams.iter().filter_map(|s| s.get(j)).map(|&us| f64::from(us) / 1000.0).collect();
            median(&at)
        })
        .collect()
}

/// Every event's arrival minus the baseline's median arrival of the same event, summarised.
pub fn event_delays(streams: &[Vec<u32>], medians: &[f64]) -> Option<crate::stats::Summary> {
    let mut delays: Vec<f64> =
        streams.iter().flat_map(|s| s.iter().zip(medians).map(|(&us, m)| f64::from(us) / 1000.0 - m)).collect();
    summarize(&mut delays)
}

fn settings(plan: &Plan) -> BTreeMap<String, serde_json::Value> {
    let mut s = BTreeMap::new();
    s.insert("wrkThreads".into(), plan.wrk_threads.into());
    s.insert("wrkConnections".into(), plan.wrk_connections.into());
    s.insert("wrkWarmupSecs".into(), plan.wrk_warmup.as_secs_f64().into());
    s.insert("wrkDurationSecs".into(), plan.wrk_duration.as_secs_f64().into());
    s.insert("openLoopWarmupSecs".into(), plan.warmup_secs.into());
    s.insert("openLoopDurationSecs".into(), plan.duration_secs.into());
    s.insert("rates".into(), serde_json::json!(plan.rates));
    s.insert("streamRates".into(), serde_json::json!(plan.stream_rates));
    s.insert("memoryKeys".into(), serde_json::json!(plan.memory_keys));
    s.insert("memoryRate".into(), plan.memory_rate.into());
    s.insert("keys".into(), plan.keys.into());
    s.insert("rounds".into(), plan.rounds.into());
    s.insert("simulator".into(), crate::simulator::FLEET.into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_delay_is_measured_against_the_baseline_median_of_each_event() {
        let direct = vec![vec![60_000, 70_000, 80_000], vec![60_200, 70_200, 80_200], vec![59_800, 69_800, 79_800]];
        let medians = event_medians(&direct);
        assert_eq!(medians, vec![60.0, 70.0, 80.0]);
        let proxied = vec![vec![60_500, 70_500, 80_500, 80_600]];
        let delays = event_delays(&proxied, &medians).expect("delays");
        assert_eq!(delays.count, 3);
        assert!((delays.p50 - 0.5).abs() < 1e-9);
        assert!((delays.max - 0.5).abs() < 1e-9);
    }
}
