//! What machine and what code a run measured.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::results::{Git, Machine};

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

/// CPUs, model, memory, kernel, load and tool versions.
pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let mut tools = BTreeMap::new();
    tools.insert("rustc".into(), output("rustc", &["--version"]));
    // wrk has no --version; its usage line names the version.
    tools.insert("wrk".into(), output("wrk", &["-v"]));
    tools.insert("python3".into(), output("python3", &["--version"]));
    tools.insert("node".into(), output("node", &["--version"]));
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        memory_gib: mem_kb / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        load_at_start: crate::bench::load_avg(),
        load_at_end: [0.0; 3],
        tools,
    }
}

/// The commit, and uncommitted gateway changes (the binary measured includes them).
pub fn git(workspace: &Path) -> Git {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    Git {
        commit: run(&["rev-parse", "HEAD"]).trim().to_owned(),
        uncommitted_gateway_changes: run(&["status", "--porcelain", "--", "dataplane", "crds"])
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
    }
}
