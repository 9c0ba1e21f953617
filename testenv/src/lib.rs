//! A real Kubernetes control plane for Sluice's cluster tests.
//!
//! [`TestEnv`] starts etcd, kube-apiserver and (optionally) kube-controller-manager, built from
//! Go modules by `tests/k8s/build.sh`, on random loopback ports with a fresh PKI and an admin
//! token; writes a kubeconfig; waits for `/readyz`; installs CRDs and waits until they are
//! Established. Only a real apiserver judges structural schemas, CEL rules, server-side apply
//! and RBAC, so nothing here is mocked.
//!
//! Starting a control plane takes seconds, so tests in one binary share one
//! ([`TestEnv::shared`]) and isolate themselves by namespace ([`TestEnv::namespace`]):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let env = sluice_testenv::TestEnv::shared();
//! let client = env.client()?;
//! let namespace = env.namespace("my-test").await?;
//! sluice_testenv::apply_yaml(&client, &namespace, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n").await?;
//! # Ok(()) }
//! ```
//!
//! No process outlives the test binary, even when it panics or is killed: see [`supervise`].
//!
//! Beside the control plane, [`monitoring`] reads the chart's alerts and dashboard for the
//! gateway's and the operator's monitoring tests.

mod binaries;
mod manifests;
pub mod monitoring;
mod pki;
mod rollouts;
pub mod supervise;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use binaries::{BINARIES, bin_dir, helm, kubectl};
pub use manifests::{FIELD_MANAGER, api_status, apply_yaml, install_crds, parse_yaml_documents, yaml_files};
use pki::Pki;
pub use rollouts::Rollouts;
use supervise::Supervised;

/// Label put on every namespace made by [`TestEnv::namespace`].
pub const NAMESPACE_LABEL: &str = "sluice.dev/testenv";

/// How long kube-apiserver may take to answer `/readyz` (cold page cache, busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How many times a start is retried when a random port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// Sluice's generated CRDs, `charts/sluice/crds/` in the workspace.
pub fn sluice_crd_dir() -> PathBuf {
    workspace_root().join("charts/sluice/crds")
}

/// The root of the Sluice workspace (for fixtures such as `examples/`).
pub fn workspace_root() -> PathBuf {
    // testenv/ sits directly in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_owned)
}

/// Installs the workspace's one rustls crypto provider (aws-lc-rs) for this process, once.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all this asks for.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// What to start; see [`TestEnv::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TestEnvBuilder {
    crd_dirs: Vec<PathBuf>,
    sluice_crds: bool,
    controller_manager: bool,
}

impl TestEnvBuilder {
    /// Installs the CRDs in the YAML files of `dir` (after the apiserver is ready).
    pub fn crds_from(mut self, dir: impl Into<PathBuf>) -> Self {
        self.crd_dirs.push(dir.into());
        self
    }

    /// Installs Sluice's CRDs from `charts/sluice/crds/`. A missing folder installs nothing (with
    /// a note on stderr): the harness's own tests need no Sluice CRD, and `tests/sluice_crds.rs`
    /// fails loudly if any is missing.
    pub fn sluice_crds(mut self) -> Self {
        self.sluice_crds = true;
        self
    }

    /// Also runs kube-controller-manager with the garbage collector (ownerReferences) and the
    /// namespace controller (namespace deletion), the two that the operator's behaviour rests on,
    /// and ClusterRole aggregation (the chart's tenant roles join `edit` and `view`).
    pub fn with_controller_manager(mut self) -> Self {
        self.controller_manager = true;
        self
    }

    /// Starts the control plane and waits until it serves.
    pub async fn start(self) -> anyhow::Result<TestEnv> {
        install_crypto_provider();
        let bin_dir = bin_dir()?;
        let mut attempt = 1;
        loop {
            match TestEnv::start_once(&self, &bin_dir).await {
                Ok(env) => return Ok(env),
                Err(StartError::PortTaken(err)) if attempt < PORT_ATTEMPTS => {
                    eprintln!("sluice-testenv: a port was taken ({err:#}); retrying with new ports");
                    attempt += 1;
                }
                Err(StartError::PortTaken(err) | StartError::Other(err)) => return Err(err),
            }
        }
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for StartError {
    fn from(err: E) -> Self {
        Self::Other(err.into())
    }
}

/// A running control plane: etcd, kube-apiserver and maybe kube-controller-manager, each under a
/// lifeline supervisor. Dropping it stops them and removes its temporary directory.
pub struct TestEnv {
    dir: PathBuf,
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    server_url: String,
    token: String,
    config: Config,
    /// Started in this order (etcd first), stopped in reverse.
    processes: Vec<Supervised>,
    janitor: Option<Supervised>,
    crds: Vec<String>,
    namespaces: AtomicU64,
    /// `SLUICE_TESTENV_KEEP` was set: leave `dir` (logs, etcd data) for a post-mortem.
    keep: bool,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("server_url", &self.server_url)
            .field("kubeconfig", &self.kubeconfig)
            .field("crds", &self.crds)
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// Nothing installed and no controller manager; add what the test needs.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// A control plane of its own with Sluice's CRDs and the controller manager. Prefer
    /// [`TestEnv::shared`] unless the test must own the whole cluster.
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().sluice_crds().with_controller_manager().start().await
    }

    /// The test binary's one control plane (Sluice's CRDs, controller manager), started by the
    /// first caller and shared by all tests of the binary; isolate with [`TestEnv::namespace`].
    /// Its processes stop when the test process exits (see [`supervise`]).
    ///
    /// Blocks while starting. Panics, failing every test that asks, if it could not start.
    pub fn shared() -> &'static TestEnv {
        static SHARED: OnceLock<Result<TestEnv, String>> = OnceLock::new();
        let started = SHARED.get_or_init(|| {
            // Its own thread and runtime: the caller may be inside a runtime, where block_on panics.
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(TestEnv::start())
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread starting the control plane panicked")))
            .map_err(|err| format!("{err:?}"))
        });
        match started {
            Ok(env) => env,
            Err(err) => panic!("sluice-testenv: the shared control plane did not start: {err}"),
        }
    }

    async fn start_once(options: &TestEnvBuilder, bin_dir: &Path) -> Result<Self, StartError> {
        let started = Instant::now();
        let dir = temp_dir()?;
        let keep = std::env::var_os("SLUICE_TESTENV_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        let pki = Pki::generate()?;
        let token = random_hex(32);
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        let ca = write("ca.crt", &pki.ca_cert)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let sa_key = write("service-account.key", &pki.service_account_key)?;
        let sa_public_key = write("service-account.pub", &pki.service_account_public_key)?;
        let tokens = write("tokens.csv", &format!("{token},admin,admin,system:masters\n"))?;

        let [etcd_port, etcd_peer_port, apiserver_port] = free_ports()?;
        let server_url = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = write("kubeconfig", &kubeconfig_yaml(&server_url, &ca, &token)?)?;

        let mut env = TestEnv {
            dir: dir.clone(),
            bin_dir: bin_dir.to_owned(),
            kubeconfig,
            server_url: server_url.clone(),
            token,
            config: Config::new(server_url.parse()?),
            processes: Vec::new(),
            janitor: None,
            crds: Vec::new(),
            namespaces: AtomicU64::new(0),
            keep,
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        env.spawn(
            "etcd",
            &[
                "--name=sluice-testenv".to_owned(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=sluice-testenv={peer_url}"),
                // Test data need not survive a power cut; fsync would dominate start-up and writes.
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
        )?;
        env.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--client-ca-file={}", ca.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".to_owned(),
                format!("--service-account-issuer={server_url}"),
                format!("--service-account-key-file={}", sa_public_key.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-cluster-ip-range=10.96.0.0/24".to_owned(),
                // The `kubernetes` Service cannot point at a loopback address; nothing here needs it.
                "--endpoint-reconciler-type=none".to_owned(),
                // No service-account controller runs, so Pods would wait for a default ServiceAccount.
                "--disable-admission-plugins=ServiceAccount".to_owned(),
                "--allow-privileged=true".to_owned(),
                "--profiling=false".to_owned(),
            ],
        )?;
        let kubeconfig = Kubeconfig::read_from(&env.kubeconfig)?;
        env.config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = env.client()?;
        env.wait_ready(&client).await?;
        let ready = started.elapsed();

        if options.controller_manager {
            env.spawn(
                "kube-controller-manager",
                &[
                    format!("--kubeconfig={}", env.kubeconfig.display()),
                    "--controllers=garbagecollector,namespace,clusterrole-aggregation".to_owned(),
                    "--leader-elect=false".to_owned(),
                    "--use-service-account-credentials=false".to_owned(),
                    // Serves no HTTPS of its own (and so takes no port).
                    "--secure-port=0".to_owned(),
                ],
            )?;
        }
        // A controller manager that rejected its flags or kubeconfig has exited by now.
        env.check_running()?;
        if !keep {
            let pids: Vec<u32> = env.processes.iter().map(Supervised::pid).collect();
            env.janitor = Some(Supervised::janitor(&dir, &pids)?);
        }
        let sluice = sluice_crd_dir();
        if options.sluice_crds && !sluice.is_dir() {
            eprintln!("sluice-testenv: {} does not exist; no Sluice CRDs installed", sluice.display());
        }
        let sluice = (options.sluice_crds && sluice.is_dir()).then_some(sluice);
        for crd_dir in options.crd_dirs.iter().chain(&sluice) {
            let names = install_crds(&client, crd_dir).await?;
            env.crds.extend(names);
        }
        eprintln!(
            "sluice-testenv: control plane at {} ready in {:.1}s ({:.1}s with CRDs and controllers){}",
            env.server_url,
            ready.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            if keep { format!("; keeping {}", dir.display()) } else { String::new() },
        );
        Ok(env)
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(name);
        let log = self.dir.join(format!("{name}.log"));
        let process = Supervised::spawn(name, &binary, args, &log)?;
        self.processes.push(process);
        Ok(())
    }

    /// Fails if a process has exited, quoting the end of its log.
    fn check_running(&mut self) -> Result<(), StartError> {
        for process in &mut self.processes {
            if let Some(status) = process.exited() {
                let log = process.log_tail(40);
                let err = anyhow::anyhow!("{} exited during start ({status}); its log ends:\n{log}", process.name);
                return Err(if log.contains("address already in use") {
                    StartError::PortTaken(err)
                } else {
                    StartError::Other(err)
                });
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, client: &Client) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            self.check_running()?;
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
                Ok(Ok(body)) => last = body,
                Ok(Err(err)) => last = err.to_string(),
                Err(_) => last = "no answer within 5 s".to_owned(),
            }
            if Instant::now() > deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "kube-apiserver at {} not ready after {READY_TIMEOUT:?} (last answer: {last}); its log ends:\n{}",
                    self.server_url,
                    supervise::log_tail(&self.dir.join("kube-apiserver.log"), 40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new client for the admin user. Call it inside the Tokio runtime that will use it: a
    /// kube client's connection pool belongs to the runtime it was made in.
    pub fn client(&self) -> anyhow::Result<Client> {
        install_crypto_provider();
        Ok(Client::try_from(self.config.clone())?)
    }

    /// A client that acts as `user` in `groups` (admin impersonation), for tests of what RBAC
    /// allows: the apiserver authorizes its requests as that user's, not the admin's.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<Client> {
        install_crypto_provider();
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Ok(Client::try_from(config)?)
    }

    /// The client configuration (admin token, the test CA) behind [`TestEnv::client`].
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Creates a namespace named `<prefix>-<n>`, unique in this control plane, labelled
    /// [`NAMESPACE_LABEL`], and returns its name. Namespaces are not deleted: the control plane
    /// goes away with the test binary.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let suffix = format!("-{n}");
        let prefix: String = prefix.chars().take(63 - suffix.len()).collect();
        let name = format!("{}{suffix}", prefix.trim_end_matches('-'));
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(NAMESPACE_LABEL.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client()?)
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// `kubectl --kubeconfig <this env's kubeconfig>`, ready for more arguments.
    pub fn kubectl(&self) -> anyhow::Result<std::process::Command> {
        let mut command = std::process::Command::new(kubectl()?);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(command)
    }

    /// `helm --kubeconfig <this env's kubeconfig>`, ready for more arguments.
    pub fn helm(&self) -> anyhow::Result<std::process::Command> {
        let mut command = std::process::Command::new(helm()?);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(command)
    }

    /// The kubeconfig file (admin token; for kubectl, helm or a spawned operator).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig file that acts as `user` in `groups` (admin impersonation, `as` and
    /// `as-groups`), for a spawned process that must have only that user's permissions.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let text = std::fs::read_to_string(&self.kubeconfig)?;
        let token_line = format!("      token: {}\n", serde_json::to_string(&self.token)?);
        ensure!(text.contains(&token_line), "the kubeconfig has no token line");
        let groups = serde_json::to_string(groups)?;
        let acting = format!("{token_line}      as: {}\n      as-groups: {groups}\n", serde_json::to_string(user)?);
        let path = self.dir.join(format!("kubeconfig-as-{}", random_hex(4)));
        std::fs::write(&path, text.replace(&token_line, &acting))?;
        Ok(path)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The admin bearer token (group `system:masters`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The directory with the control-plane binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The temporary directory with keys, logs (`<binary>.log`) and etcd's data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the CRDs installed at start.
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// Process ids of the supervised binaries, `(binary, supervisor pid)`.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        self.processes.iter().map(|p| (p.name, p.pid())).collect()
    }

    /// The last `lines` lines of one binary's log (`etcd`, `kube-apiserver`, ...).
    pub fn log_tail(&self, binary: &str, lines: usize) -> String {
        supervise::log_tail(&self.dir.join(format!("{binary}.log")), lines)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
        // Closing its lifeline makes the janitor remove the directory.
        if let Some(mut janitor) = self.janitor.take() {
            janitor.stop();
        } else if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn kubeconfig_yaml(server_url: &str, ca: &Path, token: &str) -> anyhow::Result<String> {
    // JSON strings are valid YAML scalars, and quote whatever the temp path holds.
    let quote = |s: &str| serde_json::to_string(s);
    let ca = ca.to_str().context("temporary directory path is not UTF-8")?;
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: sluice-testenv
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: admin
    user:
      token: {token}
contexts:
  - name: sluice-testenv
    context:
      cluster: sluice-testenv
      user: admin
      namespace: default
current-context: sluice-testenv
",
        server = quote(server_url)?,
        ca = quote(ca)?,
        token = quote(token)?,
    ))
}

fn temp_dir() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-testenv-{}-{n}-{}", std::process::id(), random_hex(4)));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `N` distinct free TCP ports on 127.0.0.1 (free now; another process may still take one
/// before our child binds it, which is why a start is retried).
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("finding a free port on 127.0.0.1")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// `bytes` random bytes from the crypto provider's CSPRNG, as lowercase hex.
fn random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    install_crypto_provider();
    let mut buf = vec![0u8; bytes];
    let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    if random.fill(&mut buf).is_err() {
        // Only used for names and a loopback-only test token: fall back to the clock.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        buf = nanos.to_le_bytes().iter().copied().cycle().take(bytes).collect();
    }
    buf.iter().fold(String::with_capacity(bytes * 2), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
