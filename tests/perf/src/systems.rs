//! The systems under test, each started against the same simulator backends: the simulator
//! itself (direct), the bare hyper proxy, Sluice, and the peer gateways (LiteLLM, Portkey,
//! crabllm, installed from their registries, and agentgateway, built from its source), all in a
//! cache outside the repository. A peer that cannot be installed or started is skipped with the
//! reason.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::agentgateway;
use crate::procs::{Proc, free_port, http_get_status};
use crate::project::{self, Backends, MODEL_CHAT, MODEL_CHAT_60, MODEL_EMBED, MODEL_STREAM, SIM_CREDENTIAL};

/// LiteLLM's version, pinned: 1.82.7 and 1.82.8 on PyPI were a supply-chain compromise, so the
/// suite never resolves a range.
pub const LITELLM_VERSION: &str = "1.82.6";
/// Portkey's gateway on npm.
pub const PORTKEY_VERSION: &str = "1.15.2";
/// crabllm on crates.io.
pub const CRABLLM_VERSION: &str = "0.0.25";

/// One request shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Non-streaming chat, 0 ms backend, 16 output tokens.
    Chat,
    /// Embeddings of one sentence, 0 ms backend, 384 dimensions.
    Embeddings,
    /// Streaming chat, 0 ms backend: 16 token events as fast as they go.
    ChatStream,
    /// Non-streaming chat, 60 ms backend.
    Chat60,
    /// Streaming chat, 60 ms to the first token then one every 10 ms (20 tokens).
    PacedStream,
}

impl Workload {
    /// Short name.
    pub fn id(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::ChatStream => "chat-stream",
            Self::Chat60 => "chat-60ms",
            Self::PacedStream => "paced-stream",
        }
    }

    fn model(self) -> &'static str {
        match self {
            Self::Chat | Self::ChatStream => MODEL_CHAT,
            Self::Embeddings => MODEL_EMBED,
            Self::Chat60 => MODEL_CHAT_60,
            Self::PacedStream => MODEL_STREAM,
        }
    }

    /// Path under `/v1/`.
    pub fn api(self) -> &'static str {
        match self {
            Self::Embeddings => "embeddings",
            _ => "chat/completions",
        }
    }

    /// Whether the answer is a stream of server-sent events.
    pub fn stream(self) -> bool {
        matches!(self, Self::ChatStream | Self::PacedStream)
    }

    /// The simulator backend that serves it.
    pub fn backend(self, backends: &Backends) -> SocketAddr {
        match self {
            Self::Chat | Self::Embeddings | Self::ChatStream => backends.instant,
            Self::Chat60 => backends.slow,
            Self::PacedStream => backends.paced,
        }
    }

    /// The request body. Streams ask for usage themselves, so every system sends and returns the
    /// same sequence of events.
    pub fn body(self) -> String {
        let model = self.model();
        match self {
            Self::Embeddings => {
                format!(r#"{{"model":"{model}","input":"The quick brown fox jumps over the lazy dog."}}"#)
            }
            _ => {
                let stream =
                    if self.stream() { r#","stream":true,"stream_options":{"include_usage":true}"# } else { "" };
                let max_tokens = if self == Self::PacedStream { 20 } else { 16 };
                format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello to the benchmark in a few words."}}],"max_tokens":{max_tokens}{stream}}}"#
                )
            }
        }
    }
}

/// Where and how to send one workload to one system.
#[derive(Clone, Debug)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
    /// Headers other than the key's.
    pub headers: Vec<(String, String)>,
    /// Keys sent as `authorization: Bearer` (round-robin by the open-loop generator; wrk sends
    /// the first).
    pub keys: Vec<String>,
    /// Body.
    pub body: String,
    /// Stream of events.
    pub stream: bool,
}

impl Target {
    /// Full URL.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Headers with the first key as `authorization`.
    pub fn headers_with_key(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        if let Some(key) = self.keys.first() {
            headers.push(("Authorization".into(), format!("Bearer {key}")));
        }
        headers
    }
}

/// What a system is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The simulator itself, no proxy.
    Direct,
    /// `sluice-bench-proxy`.
    Bare,
    /// `sluice-gateway` with this `--log` filter.
    Sluice {
        /// The `--log` value.
        log: String,
        /// Another build's `sluice-gateway` (a reference to compare with); absent: this one's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
        /// The Endpoint's `routing.policy`; absent: the default (`sloAware`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routing: Option<String>,
        /// A part that is off by default, on (to measure what it costs); absent: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature: Option<Feature>,
    },
    /// LiteLLM proxy (PyPI).
    Litellm,
    /// Portkey gateway (npm).
    Portkey,
    /// crabllm (crates.io).
    Crabllm,
    /// agentgateway, built with cargo from a checkout of its source ([`crate::agentgateway`]).
    Agentgateway {
        /// The checkout (`--agentgateway-src`); absent: the latest build in the cache.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<PathBuf>,
    },
}

/// A part of Sluice that is off by default, turned on to measure its cost per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// Every response signed (the Project's `spec.signing`).
    Signing,
    /// The audit log, to a file, with signed checkpoints (`--audit-log`, `--audit-key-file`).
    Audit,
    /// Every kind of PII redacted from prompts and restored in answers (the Endpoint's
    /// `spec.redaction`).
    Redaction,
    /// OTLP/HTTP traces of this share of requests, in per mille, exported to a sink that keeps
    /// nothing (`sluice-bench-proxy --sink`).
    Traces {
        /// Requests traced per thousand.
        per_mille: u32,
    },
}

/// A system to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SystemDef {
    /// Short id (`direct`, `bare`, `sluice`, `sluice-warn`, `litellm`, `portkey`, `crabllm`,
    /// `agentgateway`).
    pub id: String,
    /// Label for tables.
    pub label: String,
    /// What it is.
    pub kind: Kind,
}

impl SystemDef {
    /// Every system the suite knows, in the order they run.
    pub fn all() -> Vec<Self> {
        let def = |id: &str, label: &str, kind| Self { id: id.into(), label: label.into(), kind };
        vec![
            def("direct", "direct to simulator", Kind::Direct),
            def("bare", "bare hyper proxy", Kind::Bare),
            def("sluice", "Sluice (log info)", Self::sluice("info", None, None)),
            def("sluice-warn", "Sluice (log warn)", Self::sluice("warn", None, None)),
            def("sluice-weighted", "Sluice (log info, routing weighted)", Self::sluice("info", Some("weighted"), None)),
            def(
                "sluice-signed",
                "Sluice (log info, responses signed)",
                Self::sluice("info", None, Some(Feature::Signing)),
            ),
            def("sluice-audited", "Sluice (log info, audit log on)", Self::sluice("info", None, Some(Feature::Audit))),
            def(
                "sluice-redacting",
                "Sluice (log info, PII redaction and restore on)",
                Self::sluice("info", None, Some(Feature::Redaction)),
            ),
            def(
                "sluice-traces-1pct",
                "Sluice (log info, 1% of requests traced)",
                Self::sluice("info", None, Some(Feature::Traces { per_mille: 10 })),
            ),
            def(
                "sluice-traces-100pct",
                "Sluice (log info, every request traced)",
                Self::sluice("info", None, Some(Feature::Traces { per_mille: 1000 })),
            ),
            def("litellm", "LiteLLM proxy", Kind::Litellm),
            def("portkey", "Portkey gateway", Kind::Portkey),
            def("crabllm", "crabllm", Kind::Crabllm),
            def("agentgateway", "agentgateway", Kind::Agentgateway { source: None }),
        ]
    }

    /// This build's gateway with `log`, an Endpoint `routing` policy and an optional `feature` on.
    fn sluice(log: &str, routing: Option<&str>, feature: Option<Feature>) -> Kind {
        Kind::Sluice { log: log.into(), binary: None, routing: routing.map(Into::into), feature }
    }

    /// Sluice as built elsewhere (`sluice-ref`), measured beside this build in the same run.
    pub fn reference(bin_dir: &Path) -> Self {
        Self {
            id: "sluice-ref".into(),
            label: "Sluice reference build (log info)".into(),
            kind: Kind::Sluice {
                log: "info".into(),
                binary: Some(bin_dir.join("sluice-gateway")),
                routing: None,
                feature: None,
            },
        }
    }

    /// Whether it is a peer gateway (installed from a registry or built from source).
    pub fn is_peer(&self) -> bool {
        matches!(self.kind, Kind::Litellm | Kind::Portkey | Kind::Crabllm | Kind::Agentgateway { .. })
    }
}

/// What starting systems needs.
#[derive(Clone, Debug)]
pub struct Env {
    /// Where `sluice-gateway`, `sluice-sim` and `sluice-bench-proxy` are.
    pub bin_dir: PathBuf,
    /// Scratch space of this run.
    pub work_dir: PathBuf,
    /// Where peers are installed.
    pub cache_dir: PathBuf,
    /// The simulator.
    pub backends: Backends,
    /// `taskset -c` CPU list for systems under test, if pinned.
    pub cpus: Option<String>,
    /// Keys in the Sluice project of the main runs.
    pub keys: usize,
    /// More `sluice-gateway` flags (`sluice-bench limits`: `--redis-url ...`).
    pub sluice_args: Vec<String>,
}

impl Env {
    /// A command, under `taskset` when pinned.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// How to address a running system.
#[derive(Clone, Debug)]
enum Api {
    Direct,
    Bare(Vec<(SocketAddr, SocketAddr)>),
    Sluice { addr: SocketAddr, admin: SocketAddr, keys: Vec<String> },
    Litellm(SocketAddr),
    Portkey(SocketAddr),
    Crabllm(SocketAddr),
    Agentgateway(SocketAddr),
}

/// A started system.
pub struct Running {
    /// Which.
    pub def: SystemDef,
    /// Its processes (none for direct).
    pub procs: Vec<Proc>,
    /// From start to ready.
    pub startup_secs: f64,
    /// Version and build.
    pub version: String,
    /// Exactly how it was configured.
    pub config_note: String,
    api: Api,
    backends: Backends,
}

const LITELLM_MASTER_KEY: &str = "sk-bench-litellm-master-key";
const CRABLLM_KEY: &str = "sk-bench-crabllm-key";

impl Running {
    /// Where to send `workload`.
    pub fn target(&self, workload: Workload) -> Target {
        let backend = workload.backend(&self.backends);
        let json = ("Content-Type".to_owned(), "application/json".to_owned());
        let v1 = format!("/v1/{}", workload.api());
        let (addr, path, mut headers, keys) = match &self.api {
            Api::Direct => (backend, v1, vec![], vec![SIM_CREDENTIAL.to_owned()]),
            Api::Bare(map) => {
                let addr = map.iter().find(|(b, _)| *b == backend).map_or(backend, |(_, p)| *p);
                (addr, v1, vec![], vec![SIM_CREDENTIAL.to_owned()])
            }
            Api::Sluice { addr, keys, .. } => (
                *addr,
                format!("/{}/{}/v1/{}", project::PROJECT, project::ENDPOINT, workload.api()),
                vec![],
                keys.clone(),
            ),
            Api::Litellm(addr) => (*addr, v1, vec![], vec![LITELLM_MASTER_KEY.to_owned()]),
            Api::Portkey(addr) => (
                *addr,
                v1,
                vec![
                    ("x-portkey-provider".to_owned(), "openai".to_owned()),
                    ("x-portkey-custom-host".to_owned(), format!("http://{backend}/v1")),
                ],
                vec![SIM_CREDENTIAL.to_owned()],
            ),
            Api::Crabllm(addr) => (*addr, v1, vec![], vec![CRABLLM_KEY.to_owned()]),
            Api::Agentgateway(addr) => (*addr, v1, vec![], vec![agentgateway::KEY.to_owned()]),
        };
        headers.insert(0, json);
        Target { addr, path, headers, keys, body: workload.body(), stream: workload.stream() }
    }

    /// Root processes to measure.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// Sluice's admin address.
    pub fn admin(&self) -> Option<SocketAddr> {
        match &self.api {
            Api::Sluice { admin, .. } => Some(*admin),
            _ => None,
        }
    }

    /// Fails with the log of a process that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }

    /// Stops its processes.
    pub fn stop(self) {
        for proc in self.procs {
            proc.stop(Duration::from_secs(5));
        }
    }
}

/// Starts `def` against the simulator. Peers are installed first if needed.
pub fn start(def: &SystemDef, env: &Env) -> anyhow::Result<Running> {
    let started = Instant::now();
    let running = |procs, api, version: String, config_note: String| Running {
        def: def.clone(),
        procs,
        startup_secs: started.elapsed().as_secs_f64(),
        version,
        config_note,
        api,
        backends: env.backends,
    };
    match &def.kind {
        Kind::Direct => Ok(running(vec![], Api::Direct, String::new(), "no proxy".into())),
        Kind::Bare => {
            let b = env.backends;
            let mut command = env.command(env.bin_dir.join("sluice-bench-proxy"));
            for backend in [b.instant, b.slow, b.paced] {
                command.arg("--map").arg(format!("127.0.0.1:0=http://{backend}"));
            }
            let mut proc = Proc::spawn("sluice-bench-proxy", command)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let line = loop {
                proc.check_alive()?;
                if let Some(line) = proc.log().lines().find(|l| l.contains("\"ready\"")).map(str::to_owned) {
                    break line;
                }
                if Instant::now() > deadline {
                    bail!("sluice-bench-proxy printed no ready line:\n{}", proc.log());
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let ready: serde_json::Value = serde_json::from_str(&line)?;
            let mut map = Vec::new();
            for (listener, backend) in ready["listeners"]
                .as_array()
                .context("ready line without listeners")?
                .iter()
                .zip([b.instant, b.slow, b.paced])
            {
                let addr: SocketAddr = listener["addr"].as_str().context("listener addr")?.parse()?;
                map.push((backend, addr));
            }
            Ok(running(
                vec![proc],
                Api::Bare(map),
                format!("sluice-bench-proxy {}", env!("CARGO_PKG_VERSION")),
                "hyper 1 http1 server + hyper-util legacy client, TCP_NODELAY, tokio multi-thread (default workers), no logs".into(),
            ))
        }
        Kind::Sluice { log, binary, routing, feature } => {
            let binary = binary.clone().unwrap_or_else(|| env.bin_dir.join("sluice-gateway"));
            let dir = env.work_dir.join(format!("sluice-{}", def.id));
            start_sluice(env, &binary, log, routing.as_deref(), *feature, env.keys, &dir)
                .map(|(procs, api, note)| running(procs, api, gateway_version(&binary), note))
        }
        Kind::Litellm => start_litellm(env).map(|(procs, api, note)| running(procs, api, LITELLM_VERSION.into(), note)),
        Kind::Portkey => start_portkey(env).map(|(procs, api, note)| running(procs, api, PORTKEY_VERSION.into(), note)),
        Kind::Crabllm => start_crabllm(env).map(|(procs, api, note)| running(procs, api, CRABLLM_VERSION.into(), note)),
        Kind::Agentgateway { source } => start_agentgateway(env, source.as_deref())
            .map(|(procs, api, note, version)| running(procs, api, version, note)),
    }
}

fn gateway_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

type Started = (Vec<Proc>, Api, String);

/// Starts `binary` (a sluice-gateway) on the benchmark project with `keys` keys, the
/// Endpoint's `routing` policy and `feature` on, from manifests written under `dir`.
fn start_sluice(
    env: &Env,
    binary: &Path,
    log: &str,
    routing: Option<&str>,
    feature: Option<Feature>,
    keys: usize,
    dir: &Path,
) -> anyhow::Result<Started> {
    let signing = feature == Some(Feature::Signing);
    let redaction = feature == Some(Feature::Redaction);
    project::write_manifests(dir, &env.backends, keys, project::Options { routing, signing, redaction })?;
    let (port, admin_port) = (free_port()?, free_port()?);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse()?;
    let mut procs = Vec::new();
    let mut command = env.command(binary);
    command.arg("--config").arg(dir).args(["--listen", &addr.to_string(), "--admin-listen", &admin.to_string()]);
    command.args(["--log", log]).args(&env.sluice_args);
    let mut feature_note = String::new();
    if let Some(Feature::Traces { per_mille }) = feature {
        let (sink, sink_addr) = start_sink(env)?;
        procs.push(sink);
        let ratio = f64::from(per_mille) / 1000.0;
        command.args(["--otlp-endpoint", &format!("http://{sink_addr}"), "--otlp-protocol", "http/protobuf"]);
        command.args(["--traces-sampler", "traceidratio", "--traces-sampler-arg", &ratio.to_string()]);
        feature_note = format!("; traces of {ratio} of requests over OTLP/HTTP to a sink that keeps nothing");
    }
    if signing {
        feature_note.push_str("; every response signed (HMAC-SHA256)");
    }
    if redaction {
        feature_note.push_str("; every PII kind redacted from prompts and restored in answers");
    }
    if feature == Some(Feature::Audit) {
        // Beside the manifests folder, not in it: the log is what is measured, not the watch.
        let (log, key) = (dir.with_extension("audit.log"), dir.with_extension("audit.key"));
        let _ = std::fs::remove_file(&log);
        std::fs::write(&key, "bench-audit-key-0123456789abcdef")?;
        command.arg("--audit-log").arg(&log).arg("--audit-key-file").arg(&key);
        feature_note.push_str("; audit log to a file, signed checkpoints");
    }
    let mut proc = Proc::spawn("sluice-gateway", command)?;
    proc.wait_ready(Duration::from_secs(120), || http_get_status(admin, "/readyz") == Some(200))?;
    procs.insert(0, proc);
    let policy = routing.unwrap_or("sloAware (default)");
    let note = format!(
        "sluice-gateway --config <manifests: 1 tier (limits far above the load), 1 project, 1 endpoint (routing {policy}), \
         3 openai Providers at the simulator, {keys} ApiKeys> --log {log}; auth, limits, routing, usage and metrics on\
         {feature_note}"
    );
    let keys = (0..keys.min(10)).map(project::key).collect();
    Ok((procs, Api::Sluice { addr, admin, keys }, note))
}

/// Starts `sluice-bench-proxy --sink`: an OTLP/HTTP receiver that keeps nothing.
fn start_sink(env: &Env) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut command = env.command(env.bin_dir.join("sluice-bench-proxy"));
    command.args(["--sink", "127.0.0.1:0"]);
    let mut proc = Proc::spawn("otlp-sink", command)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        proc.check_alive()?;
        if let Some(line) = proc.log().lines().find(|l| l.contains("\"ready\"")) {
            let ready: serde_json::Value = serde_json::from_str(line)?;
            let addr = ready["sinks"][0].as_str().context("ready line without a sink")?.parse()?;
            return Ok((proc, addr));
        }
        if Instant::now() > deadline {
            bail!("sluice-bench-proxy --sink printed no ready line:\n{}", proc.log());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts Sluice for the memory scenario: `source` is a folder of manifests or of a compiled
/// GatewayConfig. Returns the process, its API address and the time from start to `/readyz`.
pub fn start_sluice_from(
    env: &Env,
    source: &Path,
    log: &str,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr, Duration)> {
    let (port, admin_port) = (free_port()?, free_port()?);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse()?;
    let mut command = env.command(env.bin_dir.join("sluice-gateway"));
    command.arg("--config").arg(source).args(["--listen", &addr.to_string(), "--admin-listen", &admin.to_string()]);
    command.args(["--log", log]);
    let mut proc = Proc::spawn("sluice-gateway", command)?;
    let ready = proc.wait_ready(Duration::from_secs(300), || http_get_status(admin, "/readyz") == Some(200))?;
    Ok((proc, addr, admin, ready))
}

/// The Sluice target for `workload` at `addr`, rotating over `keys`.
pub fn sluice_target(addr: SocketAddr, workload: Workload, keys: Vec<String>) -> Target {
    Target {
        addr,
        path: format!("/{}/{}/v1/{}", project::PROJECT, project::ENDPOINT, workload.api()),
        headers: vec![("Content-Type".into(), "application/json".into())],
        keys,
        body: workload.body(),
        stream: workload.stream(),
    }
}

/// Runs an install `command` with its output in `log`; the last lines of it on failure.
pub(crate) fn run_install(what: &str, mut command: Command, log: &Path) -> Result<(), String> {
    eprintln!("    installing {what} (once, into the cache; log {})", log.display());
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Err(format!("installing {what} failed ({status}): {}", crate::procs::last_lines(&text, 5)))
    }
}

/// Installs the peer `kind` into the cache if it is not there; returns why not on failure.
pub fn ensure_peer(kind: &Kind, cache: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    match kind {
        Kind::Litellm => {
            let venv = cache.join(format!("litellm-{LITELLM_VERSION}"));
            let exe = venv.join("bin/litellm");
            if !exe.exists() {
                let mut venv_cmd = Command::new("python3");
                venv_cmd.args(["-m", "venv"]).arg(&venv);
                run_install("a Python venv", venv_cmd, &cache.join("litellm-venv.log"))?;
                let mut pip = Command::new(venv.join("bin/pip"));
                pip.args(["install", "--only-binary", ":all:", &format!("litellm[proxy]=={LITELLM_VERSION}")]);
                run_install(&format!("litellm[proxy]=={LITELLM_VERSION} (PyPI)"), pip, &cache.join("litellm-pip.log"))?;
            }
            Ok(exe)
        }
        Kind::Portkey => {
            let dir = cache.join(format!("portkey-{PORTKEY_VERSION}"));
            let script = dir.join("node_modules/@portkey-ai/gateway/build/start-server.js");
            if !script.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let mut npm = Command::new("npm");
                npm.current_dir(&dir).args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    &format!("@portkey-ai/gateway@{PORTKEY_VERSION}"),
                ]);
                run_install(
                    &format!("@portkey-ai/gateway@{PORTKEY_VERSION} (npm)"),
                    npm,
                    &cache.join("portkey-npm.log"),
                )?;
            }
            Ok(script)
        }
        Kind::Crabllm => {
            let root = cache.join(format!("crabllm-{CRABLLM_VERSION}"));
            let exe = root.join("bin/crabllm");
            if !exe.exists() {
                let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                cargo.args(["install", "crabllm", "--version", CRABLLM_VERSION, "--locked", "--root"]).arg(&root);
                // Its own target dir: never the workspace's, whose lock the suite's build may hold.
                cargo.env_remove("CARGO_TARGET_DIR");
                run_install(
                    &format!("crabllm {CRABLLM_VERSION} (crates.io)"),
                    cargo,
                    &cache.join("crabllm-cargo.log"),
                )?;
            }
            Ok(exe)
        }
        Kind::Agentgateway { source } => agentgateway::ensure(source.as_deref(), cache),
        _ => Err("not a peer".into()),
    }
}

fn start_litellm(env: &Env) -> anyhow::Result<Started> {
    let exe = ensure_peer(&Kind::Litellm, &env.cache_dir).map_err(anyhow::Error::msg)?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let b = env.backends;
    let mut config = String::from("model_list:\n");
    for (model, backend) in
        [(MODEL_CHAT, b.instant), (MODEL_EMBED, b.instant), (MODEL_CHAT_60, b.slow), (MODEL_STREAM, b.paced)]
    {
        config.push_str(&format!(
            "  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n      api_base: http://{backend}/v1\n      api_key: {SIM_CREDENTIAL}\n"
        ));
    }
    config.push_str(&format!(
        "general_settings:\n  master_key: {LITELLM_MASTER_KEY}\nlitellm_settings:\n  set_verbose: false\n  json_logs: true\n  request_timeout: 600\n"
    ));
    let dir = env.work_dir.join("litellm");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, &config)?;
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let mut command = env.command(&exe);
    command
        .arg("--config")
        .arg(&path)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", &workers.to_string()])
        .args(["--telemetry", "False"])
        .current_dir(&dir)
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_MODE", "PRODUCTION")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
    let mut proc = Proc::spawn("litellm", command)?;
    proc.wait_ready(Duration::from_secs(180), || http_get_status(addr, "/health/liveliness") == Some(200))?;
    let note = format!(
        "litellm --config config.yaml --num_workers {workers} --telemetry False; LITELLM_LOG=ERROR, LITELLM_MODE=PRODUCTION, \
         LITELLM_LOCAL_MODEL_COST_MAP=True; master_key (auth on), set_verbose false, json_logs; 4 openai/* models with api_base at \
         the simulator; no database (as its docs allow without virtual keys)"
    );
    Ok((vec![proc], Api::Litellm(addr), note))
}

fn start_portkey(env: &Env) -> anyhow::Result<Started> {
    let script = ensure_peer(&Kind::Portkey, &env.cache_dir).map_err(anyhow::Error::msg)?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut command = env.command("node");
    command.arg(&script).arg(format!("--port={port}")).arg("--headless").env("NODE_ENV", "production");
    let mut proc = Proc::spawn("portkey", command)?;
    proc.wait_ready(Duration::from_secs(60), || http_get_status(addr, "/") == Some(200))?;
    let note = "node build/start-server.js --port=P --headless, NODE_ENV=production (one Node process, as shipped); \
                routed per request by x-portkey-provider: openai and x-portkey-custom-host: http://<simulator>/v1; no auth \
                of its own (the open-source gateway has none)"
        .to_owned();
    Ok((vec![proc], Api::Portkey(addr), note))
}

fn start_crabllm(env: &Env) -> anyhow::Result<Started> {
    let exe = ensure_peer(&Kind::Crabllm, &env.cache_dir).map_err(anyhow::Error::msg)?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let b = env.backends;
    let config = format!(
        r#"listen = "{addr}"
openapi = false

[[keys]]
name = "bench"
key = "{CRABLLM_KEY}"
models = ["*"]

[providers.sim-instant]
kind = "openai"
api_key = "{SIM_CREDENTIAL}"
base_url = "http://{instant}/v1"
models = ["{MODEL_CHAT}", "{MODEL_EMBED}"]
max_retries = 0

[providers.sim-60ms]
kind = "openai"
api_key = "{SIM_CREDENTIAL}"
base_url = "http://{slow}/v1"
models = ["{MODEL_CHAT_60}"]
max_retries = 0

[providers.sim-paced]
kind = "openai"
api_key = "{SIM_CREDENTIAL}"
base_url = "http://{paced}/v1"
models = ["{MODEL_STREAM}"]
max_retries = 0

[extensions]
rate_limit = {{ requests_per_minute = 100000000 }}
usage = {{}}
"#,
        instant = b.instant,
        slow = b.slow,
        paced = b.paced
    );
    let dir = env.work_dir.join("crabllm");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("crabllm.toml");
    std::fs::write(&path, &config)?;
    let mut command = env.command(&exe);
    command.arg("serve").arg("--config").arg(&path).current_dir(&dir);
    let mut proc = Proc::spawn("crabllm", command)?;
    proc.wait_ready(Duration::from_secs(60), || http_get_status(addr, "/health") == Some(200))?;
    let note = "crabllm serve --config crabllm.toml: one key (auth on), 3 openai providers at the simulator (max_retries 0), \
                extensions rate_limit (100M rpm, never refuses) and usage, Prometheus metrics (always on), openapi off, \
                default logging"
        .to_owned();
    Ok((vec![proc], Api::Crabllm(addr), note))
}

fn start_agentgateway(env: &Env, source: Option<&Path>) -> anyhow::Result<(Vec<Proc>, Api, String, String)> {
    let exe = agentgateway::ensure(source, &env.cache_dir).map_err(anyhow::Error::msg)?;
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let listen = agentgateway::Listen {
        port: free_port()?,
        admin: loopback(free_port()?),
        stats: loopback(free_port()?),
        readiness: loopback(free_port()?),
    };
    let dir = env.work_dir.join("agentgateway");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&agentgateway::config(&listen, &env.backends))?)?;
    let mut command = env.command(&exe);
    command.arg("-f").arg(&path).current_dir(&dir);
    let mut proc = Proc::spawn("agentgateway", command)?;
    proc.wait_ready(Duration::from_secs(60), || http_get_status(listen.readiness, "/healthz/ready") == Some(200))?;
    let note = "agentgateway -f config.json, as its examples show: one gateway; llm with an apiKey policy (mode strict, one key \
                as a bearer token: auth on), 3 openAI providers with baseUrl at the simulator, 4 models on them; default \
                logging (info, text, one access-log line per request to stdout), default worker threads (one per CPU); \
                release build without the web UI feature"
        .to_owned();
    let version = agentgateway::version(&exe);
    Ok((vec![proc], Api::Agentgateway(loopback(listen.port)), note, version))
}

/// One blocking HTTP/1.1 request (`Connection: close`): status and body, for smoke checks.
pub fn http_request(target: &Target) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&target.addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", target.path, target.addr);
    for (name, value) in target.headers_with_key() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", target.body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(target.body.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Checks that `target` answers as the workload should; the reason if not.
pub fn smoke(target: &Target, workload: Workload) -> Result<(), String> {
    let (status, body) = http_request(target).map_err(|e| format!("request failed: {e}"))?;
    let expected = match workload {
        Workload::Embeddings => "\"embedding\"",
        w if w.stream() => "[DONE]",
        _ => "chat.completion",
    };
    if status != 200 || !body.contains(expected) {
        let mut excerpt: String = body.chars().take(300).collect();
        excerpt = excerpt.replace(['\r', '\n'], " ");
        return Err(format!("status {status}, body: {excerpt}"));
    }
    Ok(())
}
