//! Saturation throughput with wrk (Debian's package): a closed loop of N connections, each
//! sending its next request as soon as the previous answer ends. Its latency figures suffer from
//! coordinated omission, so only the rate and errors are used; latency comes from the open-loop
//! generator.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One request shape to repeat.
#[derive(Clone, Debug)]
pub struct WrkRequest<'a> {
    /// Full URL.
    pub url: &'a str,
    /// Headers (an authorization among them, if any).
    pub headers: &'a [(String, String)],
    /// POST body.
    pub body: &'a str,
}

/// How to run wrk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WrkSettings {
    /// Threads.
    pub threads: u32,
    /// Connections, shared by the threads.
    pub connections: u32,
    /// CPU list for `taskset -c`, if pinned.
    pub cpus: Option<String>,
}

/// What wrk reported for one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WrkResult {
    /// Responses received.
    pub requests: u64,
    /// Wall seconds of the run.
    pub secs: f64,
    /// Responses per second.
    pub rps: f64,
    /// Answers with status >= 400.
    pub status_errors: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Mean latency (closed loop: for reference only), ms.
    pub mean_ms: f64,
    /// Median latency (closed loop), ms.
    pub p50_ms: f64,
    /// 99th percentile latency (closed loop), ms.
    pub p99_ms: f64,
}

/// A Lua long string holding `text` verbatim: `[==[...]==]` with enough `=` to be unambiguous.
pub fn lua_long_string(text: &str) -> String {
    let mut level = 0;
    while text.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    // A newline right after the opening bracket is dropped by Lua, so add one of our own.
    format!("[{eq}[\n{text}]{eq}]")
}

/// The wrk script for `request`: method, body and headers, and a `done` hook that prints one
/// JSON line (wrk's own summary has no machine-readable form).
pub fn script(request: &WrkRequest<'_>) -> String {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = {}\n", lua_long_string(request.body)));
    for (name, value) in request.headers {
        // The spaces matter: `t[[[...` would read as a call of `t` with a long string.
        lua.push_str(&format!("wrk.headers[ {} ] = {}\n", lua_long_string(name), lua_long_string(value)));
    }
    lua.push_str(
        r#"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"status\":%d,\"socket\":%d,\"mean_us\":%f,\"p50_us\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
"#,
    );
    lua
}

#[derive(Deserialize)]
struct WrkLine {
    requests: u64,
    duration_us: u64,
    status: u64,
    socket: u64,
    mean_us: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Parses the `WRKJSON` line of wrk's output.
pub fn parse_output(stdout: &str) -> anyhow::Result<WrkResult> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .with_context(|| format!("no WRKJSON line in wrk's output:\n{stdout}"))?;
    let w: WrkLine = serde_json::from_str(line).with_context(|| format!("wrk's summary line: {line}"))?;
    let secs = w.duration_us as f64 / 1e6;
    Ok(WrkResult {
        requests: w.requests,
        secs,
        rps: if secs > 0.0 { w.requests as f64 / secs } else { 0.0 },
        status_errors: w.status,
        socket_errors: w.socket,
        mean_ms: w.mean_us / 1000.0,
        p50_ms: w.p50_us as f64 / 1000.0,
        p99_ms: w.p99_us as f64 / 1000.0,
    })
}

/// Runs wrk for `duration` and returns its figures. `work_dir` holds the script.
/// Stops a run before its first measurement when `wrk` cannot be started, rather than failing
/// every cell one by one.
pub fn check_installed() -> anyhow::Result<()> {
    match Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "wrk is not installed, and the throughput and limits benchmarks drive their load with it: \
             `apt-get install wrk` (Debian, Ubuntu), `dnf install wrk`, or `brew install wrk`"
        ),
        Err(err) => Err(anyhow::Error::new(err).context("starting wrk")),
    }
}

pub fn run(
    settings: &WrkSettings,
    request: &WrkRequest<'_>,
    duration: Duration,
    work_dir: &Path,
) -> anyhow::Result<WrkResult> {
    let script_path = work_dir.join("wrk-request.lua");
    std::fs::write(&script_path, script(request))?;
    let mut command = match &settings.cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    command
        .arg(format!("-t{}", settings.threads))
        .arg(format!("-c{}", settings.connections))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "10s", "-s"])
        .arg(&script_path)
        .arg(request.url)
        .stdin(Stdio::null());
    let output = command.output().context("running wrk (apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed ({}): {}{}", output.status, stdout, String::from_utf8_lossy(&output.stderr));
    }
    parse_output(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_survive_closing_brackets() {
        assert_eq!(lua_long_string("abc"), "[[\nabc]]");
        assert_eq!(lua_long_string("a]]b"), "[=[\na]]b]=]");
        assert_eq!(lua_long_string("a]]b]=]c"), "[==[\na]]b]=]c]==]");
    }

    #[test]
    fn headers_are_indexed_not_called() {
        let headers = vec![("Authorization".to_owned(), "Bearer k".to_owned())];
        let lua = script(&WrkRequest { url: "http://x/", headers: &headers, body: "{}" });
        assert!(lua.contains("wrk.headers[ [[\nAuthorization]] ] = [[\nBearer k]]"), "{lua}");
    }

    #[test]
    fn summary_line_is_parsed() {
        let out = "Running 1s test\nWRKJSON {\"requests\":1000,\"duration_us\":2000000,\"status\":3,\"socket\":1,\"mean_us\":250.5,\"p50_us\":200,\"p99_us\":900}\n";
        let r = parse_output(out).expect("parses");
        assert_eq!(r.requests, 1000);
        assert!((r.rps - 500.0).abs() < 1e-9);
        assert_eq!(r.status_errors, 3);
        assert!((r.p99_ms - 0.9).abs() < 1e-9);
    }
}
