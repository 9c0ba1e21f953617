//! The results of a run, as written to `results.json`: everything measured, the machine, the
//! load average at every measurement, and exactly how each system was configured.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::loadgen::OpenLoopResult;
use crate::stats::Summary;
use crate::wrk::WrkResult;

/// A whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    /// When it started (UTC).
    pub started_at: String,
    /// When it ended (UTC).
    pub finished_at: String,
    /// The command line.
    pub command: String,
    /// Smoke-test durations.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// The code measured.
    pub git: Git,
    /// Where processes ran.
    pub placement: String,
    /// Durations, rates, connections.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Each system: started or skipped, version, configuration.
    pub systems: Vec<SystemReport>,
    /// Every throughput, latency and streaming measurement.
    pub measurements: Vec<Measurement>,
    /// Memory and configuration load time by key count.
    pub memory: Vec<MemoryResult>,
    /// The targets, with what was measured (reported, never asserted).
    pub targets: Vec<TargetCheck>,
    /// Anything worth knowing when reading the figures.
    pub notes: Vec<String>,
}

/// The machine and its load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// 1, 5 and 15 minute load averages when the run started.
    pub load_at_start: [f64; 3],
    /// The same when it ended.
    pub load_at_end: [f64; 3],
    /// Tool versions (rustc, wrk, python, node).
    pub tools: BTreeMap<String, String>,
}

/// The commit measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Git {
    /// `HEAD`.
    pub commit: String,
    /// Files changed but not committed under `dataplane/` (the gateway measured includes them).
    pub uncommitted_gateway_changes: Vec<String>,
}

/// One system of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemReport {
    /// Short id.
    pub id: String,
    /// Table label.
    pub label: String,
    /// `ok` or `skipped`.
    pub status: String,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Version.
    pub version: String,
    /// Exactly how it ran.
    pub config: String,
    /// Seconds from start to ready.
    pub startup_secs: f64,
    /// Resident memory one second after it was ready (bytes, its whole process tree).
    pub rss_idle_bytes: u64,
    /// Proportional memory (PSS) at the same moment: shared pages counted once.
    pub pss_idle_bytes: u64,
    /// Highest resident memory seen during its runs.
    pub rss_peak_bytes: u64,
    /// Workloads it could not serve, with why.
    pub unsupported: BTreeMap<String, String>,
}

/// One measurement: a system, a workload, a load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Measurement {
    /// System id.
    pub system: String,
    /// `throughput`, `latency` or `streaming`.
    pub scenario: String,
    /// Workload id.
    pub workload: String,
    /// Requests per second offered (open loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_rate: Option<f64>,
    /// Which repetition (0-based) of the run's loads.
    pub round: u32,
    /// Load average when it started.
    pub load_avg: [f64; 3],
    /// Closed-loop result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrk: Option<WrkResult>,
    /// Open-loop result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoopResult>,
    /// CPU seconds in the measured window: `system` (under test), `simulator`, `loadgen`.
    pub cpu_secs: BTreeMap<String, f64>,
    /// Wall seconds of the window.
    pub wall_secs: f64,
    /// CPU microseconds per answered request of the system under test (its whole tree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_cpu_us_per_request: Option<f64>,
    /// Peak resident memory of the system under test during the window.
    pub peak_rss_bytes: u64,
    /// Streams: each event's arrival minus its median arrival when calling the simulator
    /// directly at the same rate (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_delay: Option<Summary>,
    /// Why it was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Measurement {
    /// Answered requests per second: wrk's rate, or the open loop's successes over its window.
    pub fn rps(&self) -> Option<f64> {
        if let Some(w) = &self.wrk {
            return Some(w.rps);
        }
        self.open_loop.as_ref().map(|o| o.ok as f64 / o.measured_secs.max(1e-9))
    }

    /// Failed requests in the window.
    pub fn errors(&self) -> u64 {
        if let Some(w) = &self.wrk {
            return w.status_errors + w.socket_errors;
        }
        self.open_loop.as_ref().map_or(0, |o| o.errors.values().sum())
    }
}

/// Memory and configuration loading with a number of keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryResult {
    /// API keys in the project.
    pub keys: usize,
    /// Size of the manifests (one Secret with every key, one ApiKey each).
    pub manifests_bytes: u64,
    /// Size of the compiled GatewayConfig JSON.
    pub compiled_bytes: u64,
    /// `sluice-gateway --config <manifests> --check`, wall seconds (process start included).
    pub check_secs: f64,
    /// From process start to `/readyz` 200, from manifests.
    pub ready_secs_manifests: f64,
    /// From process start to `/readyz` 200, from the compiled GatewayConfig.
    pub ready_secs_compiled: f64,
    /// Resident memory when idle (loaded from manifests).
    pub rss_idle_bytes: u64,
    /// Resident memory when idle (loaded from the compiled configuration).
    pub rss_idle_compiled_bytes: u64,
    /// Peak resident memory under load, every key used.
    pub rss_load_peak_bytes: u64,
    /// Resident memory right after the load.
    pub rss_after_load_bytes: u64,
    /// The load: requests per second (chat, 0 ms backend), keys round-robin.
    pub load_rate: f64,
    /// Requests answered and failed under that load.
    pub load_ok: u64,
    /// Failed.
    pub load_errors: u64,
    /// Load average when it started.
    pub load_avg: [f64; 3],
    /// Memory per idle connection and per stream in flight (the smallest project only).
    #[serde(default)]
    pub connections: Option<crate::connections::ConnectionMemory>,
}

/// One of the targets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetCheck {
    /// What.
    pub name: String,
    /// The target, in words.
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
}
