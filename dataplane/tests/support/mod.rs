//! Black-box harness: the real `sluice-gateway` binary on random loopback ports, simulated
//! upstreams (sluice-sim on real sockets), and a folder of manifests to configure them.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_sim::{Profile, Simulator};

/// A simulated upstream on a real loopback socket.
pub struct Sim {
    pub addr: SocketAddr,
    pub sim: Simulator,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    pub async fn start(profile: Profile) -> Self {
        let sim = Simulator::new(profile).expect("valid profile");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = sim.clone();
        let task = tokio::spawn(async move {
            let _ = serving.serve(listener).await;
        });
        Self { addr, sim, task }
    }

    /// An instant profile (no latency) with deterministic ids.
    pub fn fast() -> Profile {
        Profile { deterministic_ids: true, seed: 7, ..Profile::instant() }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A base URL nothing answers at.
pub fn dead_url() -> String {
    format!("http://{}/v1", dead_addr())
}

/// The acme fixture with `primary` as the primary upstream and `other` for every other one.
pub fn render_acme(primary: &str, other: &str) -> String {
    let mut text = include_str!("../fixtures/acme.yaml.tmpl").replace("{{PRIMARY}}", primary);
    for name in ["FLAKY", "LIMITED", "BROKEN", "HANGING", "DEAD"] {
        text = text.replace(&format!("{{{{{name}}}}}"), other);
    }
    text
}

/// The real gateway binary.
pub struct Gateway {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts `sluice-gateway --config <config>` (or the embedded quickstart with `None`).
    pub fn start(config: Option<&Path>, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"));
        command.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"]);
        command.args(["--poll-seconds", "1"]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.args(extra);
        Self::spawn(command)
    }

    pub fn spawn(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).env_remove("SLUICE_CONFIG");
        let mut child = command.spawn().expect("gateway starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("sluice-gateway listening") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let field = |name: &str| parsed["fields"][name].as_str().expect("address field").parse().expect("address");
        Self { api: field("api"), admin: field("admin"), child, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// The process id (a reload must not change it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM, as Kubernetes does to a pod it stops.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    /// How the process ended, once it has (`None` if it still runs after `limit`).
    pub fn exit_status(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The access log line of request `id` (its JSON), once written.
    #[allow(dead_code)] // Each test binary uses a different part.
    pub fn access_line(&self, id: &str) -> serde_json::Value {
        let needle = format!("\"request_id\":\"{id}\"");
        let logs = self.logs_with(&needle);
        logs.lines()
            .filter(|line| line.contains(&needle) && line.contains("sluice::access"))
            .find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .unwrap_or_else(|| panic!("no access log line for {id}:\n{logs}"))
    }

    /// The logs once they contain `needle` (the gateway writes its logs every 20 ms), or as they
    /// are after two seconds.
    pub fn logs_with(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if text.contains(needle) || start.elapsed() > Duration::from_secs(2) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder of manifests for one test.
pub struct Manifests {
    pub dir: tempfile::TempDir,
}

impl Manifests {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file atomically (write then rename), as config tools do.
    pub fn write(&self, name: &str, text: &str) {
        let tmp: PathBuf = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove");
    }
}

/// A key Secret plus an ApiKey referencing it.
pub fn apikey(namespace: &str, name: &str, key: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-key, namespace: {namespace}}}\nstringData: {{key: {key}}}\n---\n\
apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  secretRef: {{name: {name}-key}}\n{spec_extra}"
    )
}

/// The tool a `tests/setup/<script>` exports in `variable` (a path); fails with how to get it.
#[allow(dead_code)] // Each test binary uses a different part.
pub fn tool(variable: &str, script: &str) -> String {
    match std::env::var(variable) {
        Ok(path) if Path::new(&path).exists() => path,
        _ => panic!(
            "{variable} must name an installed tool: run the tests with `tests/run-all` (or `source tests/setup/{script}` first)"
        ),
    }
}

/// Where a browser test writes its screenshots: over `docs/<folder>/` with
/// `SLUICE_UPDATE_SCREENSHOTS=1`, else into the build's temporary folder (they show random
/// ports and times, so rewriting the documentation's copies on every run would only churn the
/// repository). The folder exists on return.
#[allow(dead_code)] // Each test binary uses a different part.
pub fn screenshot_dir(folder: &str) -> PathBuf {
    let dir = match std::env::var("SLUICE_UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs").join(folder),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{folder}-screenshots")),
    };
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    dir
}

/// `$SLUICE_PYTHON dataplane/tests/<script>`, a Playwright script, with `$SLUICE_CHROMIUM` set
/// for it to drive (tests/setup/python.sh and chromium.sh); fails saying how to get either.
#[allow(dead_code)] // Each test binary uses a different part.
pub fn playwright(script: &str) -> Command {
    let chromium = tool("SLUICE_CHROMIUM", "chromium.sh");
    let python = tool("SLUICE_PYTHON", "python.sh");
    let mut command = Command::new(python);
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script)).env("SLUICE_CHROMIUM", chromium);
    command
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// Polls `check` until it holds or `limit` passes; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// The black-box tenant: simulated upstreams for every failure mode, the `acme` and `other`
/// projects, and a gateway serving them.
pub struct Acme {
    pub primary: Sim,
    pub flaky: Sim,
    pub limited: Sim,
    pub broken: Sim,
    pub hanging: Sim,
    pub manifests: Manifests,
    pub gateway: Gateway,
}

pub const FULL_KEY: &str = "sl_acme_full_000000000001";

fn with_errors(status: u16) -> Profile {
    let mut profile = Sim::fast();
    profile.faults.errors = vec![sluice_sim::ErrorFault { status, rate: 1.0 }];
    profile
}

impl Acme {
    pub async fn start() -> Self {
        let primary = Sim::start(Profile { api_key: Some("upstream-secret-a".into()), ..Sim::fast() }).await;
        let flaky = Sim::start(with_errors(503)).await;
        let limited = Sim::start(with_errors(429)).await;
        let broken = Sim::start(with_errors(500)).await;
        let mut hang = Sim::fast();
        hang.faults.hang_rate = 1.0;
        hang.faults.hang_ms = 10_000;
        let hanging = Sim::start(hang).await;
        let manifests = Manifests::new();
        let text = include_str!("../fixtures/acme.yaml.tmpl")
            .replace("{{PRIMARY}}", &primary.base_url())
            .replace("{{FLAKY}}", &flaky.base_url())
            .replace("{{LIMITED}}", &limited.base_url())
            .replace("{{BROKEN}}", &broken.base_url())
            .replace("{{HANGING}}", &hanging.base_url())
            .replace("{{DEAD}}", &format!("http://{}/v1", dead_addr()));
        manifests.write("acme.yaml", &text);
        manifests.write("acme-keys.yaml", include_str!("../fixtures/acme-keys.yaml"));
        let gateway = Gateway::start(Some(manifests.path()), &[]);
        Self { primary, flaky, limited, broken, hanging, manifests, gateway }
    }

    /// POSTs a chat completion to `/acme/<endpoint>/v1/chat/completions`.
    pub async fn chat(&self, endpoint: &str, key: &str, body: serde_json::Value) -> reqwest::Response {
        client()
            .post(self.gateway.url(&format!("/acme/{endpoint}/v1/chat/completions")))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }
}

/// A small chat body for `model`.
pub fn chat_body(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8})
}

/// Tier `standard` (5 s to the first token, 20 s in all) and Project `acme` in namespace `acme`:
/// the start of the tenants the protocol, upstream-TLS and tracing tests build.
#[allow(dead_code)] // Each test binary uses a different part.
pub const ACME_PROJECT: &str = "apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {name: standard}
spec:
  timeouts: {firstTokenMs: 5000, totalMs: 20000, idleStreamMs: 5000}
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {name: acme, namespace: acme}
spec: {slug: acme, defaultTier: standard}
---
";

/// Tier `standard`, Project `acme` and Provider `primary` (type openai at the simulator `sim`,
/// model `up-model`, chat and tools, priced): the tenant the protocol tests add their own
/// Providers, Endpoints and keys to.
#[allow(dead_code)] // Each test binary uses a different part.
pub fn acme_tenant(sim: &str) -> String {
    let acme = ACME_PROJECT;
    format!(
        r#"{acme}apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: primary, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}/v1
  models:
    - name: up-model
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
---
"#
    )
}

/// One request as a [`recorder`] received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

/// What a [`recorder`] has received, in order.
pub type Recorded = Arc<Mutex<Vec<Received>>>;

/// A stand-in upstream on a loopback socket that records what it receives and answers every
/// request with `answer`; returns its base address (`http://127.0.0.1:<port>`).
pub async fn recorder(answer: serde_json::Value) -> (String, Recorded) {
    let seen: Recorded = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        let answer = answer.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let headers = parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let path = parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            record.lock().unwrap_or_else(|e| e.into_inner()).push(Received { path, headers, body });
            axum::Json(answer)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

/// A config folder holding a copy of the quickstart (examples/quickstart), for tests that need
/// the quickstart plus objects of their own (the key API writes its keys there).
pub fn quickstart_manifests() -> Manifests {
    let manifests = Manifests::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    for entry in std::fs::read_dir(&dir).expect("examples/quickstart") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            manifests.write(&name, &std::fs::read_to_string(&path).expect("read"));
        }
    }
    manifests
}
