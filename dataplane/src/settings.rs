//! Command-line flags (each also from an environment variable) and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::server::client::TrustedProxies;
use crate::server::proxy_protocol::ProxyProtocol;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// A Redis URL, which may hold a password: shown as `<redacted>` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl std::str::FromStr for RedisUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The OTLP transport for traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (a collector's port 4317).
    #[value(name = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (a collector's port 4318, path `/v1/traces`).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Which requests are traced, as `OTEL_TRACES_SAMPLER` names the samplers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceSampler {
    /// Every request.
    #[value(name = "always_on")]
    AlwaysOn,
    /// None.
    #[value(name = "always_off")]
    AlwaysOff,
    /// The share of requests given by the sampler argument.
    #[value(name = "traceidratio")]
    TraceIdRatio,
    /// The client's decision when its `traceparent` has one, else every request.
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// The client's decision when its `traceparent` has one, else none.
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// The client's decision when its `traceparent` has one, else the sampler argument's share.
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// OTLP headers (`key=value,...`), which may hold a collector's token: `<redacted>` in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpHeaders(pub String);

impl std::str::FromStr for OtlpHeaders {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `sluice-gateway`: the Sluice data plane.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "sluice-gateway",
    version,
    about = "Sluice data plane: an OpenAI-compatible LLM gateway serving /<project>/<endpoint>/v1/...",
    long_about = "Sluice data plane: an OpenAI-compatible LLM gateway serving /<project>/<endpoint>/v1/... \
with API keys, scopes, tier limits, failover, streaming and hot reload.\n\n\
With no --config and no --config-secret it serves the embedded quickstart (examples/quickstart: \
project demo, endpoint assistant, simulated backends) at http://127.0.0.1:8080/demo/assistant/v1 \
with the local-only key sl_demo_quickstartkey.",
    after_help = "Examples:\n  \
sluice-gateway                                   # the embedded quickstart\n  \
sluice-gateway --config examples/quickstart      # a folder of manifests, reloaded on change\n  \
sluice-gateway --config manifests/ --check       # validate and exit\n  \
sluice-gateway --config-secret sluice-dataplanes/sluice-config-team-a --kubeconfig ~/.kube/config\n  \
sluice-gateway --audit-log /var/log/sluice/audit.log --audit-key-file /etc/sluice/audit.key\n\n\
Audit log tools: sluice-gateway audit --help"
)]
pub struct Settings {
    /// A folder or file of manifests (Sluice objects and the Secrets they reference, as
    /// `kubectl apply -f` takes them) or of compiled GatewayConfig documents. Watched: changes
    /// apply within a second; a broken change is rejected and the last good configuration keeps
    /// serving.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Watch this config Secret (`NAMESPACE/NAME`, written by sluice-operator) through the
    /// Kubernetes API. With --config as well, the folder is the fallback used until the API
    /// answers.
    #[arg(long, env = "SLUICE_CONFIG_SECRET", value_name = "NAMESPACE/NAME")]
    pub config_secret: Option<String>,

    /// Kubeconfig for --config-secret outside a cluster (in a pod, the service account is used).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Report each key's usage to this ConfigMap (`NAMESPACE/NAME`, made by sluice-operator), and
    /// read other replicas' reports so budgets hold across them. Uses the same Kubernetes
    /// credentials as --config-secret.
    #[arg(long, env = "SLUICE_USAGE_CONFIGMAP", value_name = "NAMESPACE/NAME")]
    pub usage_configmap: Option<String>,

    /// Seconds between usage reports (written only when usage changed).
    #[arg(long, env = "SLUICE_USAGE_REPORT_SECONDS", default_value_t = 15)]
    pub usage_report_seconds: u64,

    /// This replica's name in usage reports (the operator sets it from the pod's name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Address for the API.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address for health (/healthz, /readyz), metrics (/metrics) and the loaded configuration
    /// (/config). Keep it private.
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (`info`, `debug`, `sluice_gateway=debug,info`...). Access logs are `sluice::access`.
    #[arg(long, env = "SLUICE_LOG", default_value = "info")]
    pub log: String,

    /// Namespace of platform-wide Providers when compiling manifests.
    #[arg(long, env = "SLUICE_SHARED_NAMESPACE", default_value = "sluice-system")]
    pub shared_namespace: String,

    /// Seconds between content-hash checks of --config (a safety net behind the file watch).
    #[arg(long, env = "SLUICE_POLL_SECONDS", default_value_t = 5)]
    pub poll_seconds: u64,

    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Seconds a client may take to send the request head; a kept-alive HTTP/1 connection that
    /// stays idle this long between requests is closed too.
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,

    /// Most client connections the API listener holds open at once (about 19 KB of memory each
    /// when idle). At the limit the gateway stops accepting: new connections wait in the
    /// kernel's listen queue until one closes, and a warning is logged.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Seconds to keep serving after SIGTERM or Ctrl-C with `/readyz` failing, before the
    /// listener closes: load balancers (a Kubernetes Service's endpoints) stop sending new
    /// requests in that time, so none is refused by a closed port.
    #[arg(long, env = "SLUICE_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,

    /// Seconds to let in-flight requests and streams finish once the listener has closed.
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Share rate limits, concurrency, the project ceiling and budget spend with every replica
    /// through this Redis (or Valkey) server: `redis://[:PASSWORD@]HOST:PORT[/DB]`. Without it,
    /// limits are per replica. Never logged (it may hold a password); pass it from a Secret.
    #[arg(long, env = "SLUICE_REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<RedisUrl>,

    /// Longest wait for one Redis call, in milliseconds; a slower answer counts as a failure.
    #[arg(long, env = "SLUICE_REDIS_TIMEOUT_MS", default_value_t = 50)]
    pub redis_timeout_ms: u64,

    /// Milliseconds between probes of an unavailable Redis (and writes of spend kept meanwhile).
    #[arg(long, env = "SLUICE_REDIS_PROBE_MS", default_value_t = 500)]
    pub redis_probe_ms: u64,

    /// Prefix of every Redis key the gateway writes.
    #[arg(long, env = "SLUICE_REDIS_KEY_PREFIX", default_value = "sluice")]
    pub redis_key_prefix: String,

    /// Multiplexed Redis connections, used in turn.
    #[arg(long, env = "SLUICE_REDIS_CONNECTIONS", default_value_t = 2)]
    pub redis_connections: usize,

    /// Replicas sharing the limits: while Redis is unavailable each enforces 1/N of every limit
    /// (the operator sets it to the Deployment's replica count).
    #[arg(long, env = "SLUICE_REPLICAS_HINT", default_value_t = 1)]
    pub replicas_hint: u32,

    /// A ceiling on requests per minute over all keys of a project (each project served).
    #[arg(long, env = "SLUICE_PROJECT_REQUESTS_PER_MINUTE", value_name = "N")]
    pub project_requests_per_minute: Option<u32>,

    /// A ceiling on tokens per minute over all keys of a project (each project served).
    #[arg(long, env = "SLUICE_PROJECT_TOKENS_PER_MINUTE", value_name = "N")]
    pub project_tokens_per_minute: Option<u64>,

    /// Proxies in front of the gateway (CIDRs or addresses, comma-separated, IPv4 and IPv6):
    /// from these peers the client's address is read from `Forwarded` or `X-Forwarded-For`,
    /// right to left, skipping every trusted hop (and from the PROXY protocol header, with
    /// --proxy-protocol). Key IP allow-lists, the access log and the audit log use that address.
    /// Empty (the default): the TCP peer is the client and those headers are ignored.
    #[arg(long, env = "SLUICE_TRUSTED_PROXIES", value_name = "CIDR,...", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// PROXY protocol (v1 and v2) on the API listener, for TCP load balancers that write the
    /// client's address before the first byte: `optional` reads it when a trusted proxy sends
    /// one, `required` closes every connection that is not from a trusted proxy with one.
    /// Needs --trusted-proxies (the load balancer's addresses; `0.0.0.0/0,::/0` when nothing but
    /// the load balancer can reach the port).
    #[arg(long, env = "SLUICE_PROXY_PROTOCOL", value_enum, default_value = "off")]
    pub proxy_protocol: ProxyProtocol,

    /// Send traces (a span per request, with its stages and upstream attempts) to this OTLP
    /// endpoint, e.g. `http://otel-collector:4317` (gRPC) or `http://otel-collector:4318`
    /// (HTTP, to which `/v1/traces` is added). Without it no span is made.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// The OTLP transport.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value = "http/protobuf")]
    pub otlp_protocol: OtlpProtocol,

    /// Headers sent with every export (`key=value,...`, values percent-encoded), e.g. a
    /// collector's token. Never logged.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", value_name = "KEY=VALUE,...", hide_env_values = true)]
    pub otlp_headers: Option<OtlpHeaders>,

    /// PEM file of the CA(s) that sign the OTLP endpoint's certificate (an `https://`
    /// endpoint), trusted in place of the public roots. `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`
    /// wins over it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE", value_name = "PEM")]
    pub otlp_ca_file: Option<PathBuf>,

    /// PEM file of the client certificate the gateway presents to the OTLP endpoint (mutual
    /// TLS), with `--otlp-client-key`. `OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE` wins.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", value_name = "PEM")]
    pub otlp_client_certificate: Option<PathBuf>,

    /// PEM file of the client certificate's private key. `OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY`
    /// wins.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CLIENT_KEY", value_name = "PEM")]
    pub otlp_client_key: Option<PathBuf>,

    /// The traces-only variant of `--otlp-ca-file`, as the SDKs read it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", value_name = "PEM", hide = true)]
    pub otlp_traces_ca_file: Option<PathBuf>,

    /// The traces-only variant of `--otlp-client-certificate`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", value_name = "PEM", hide = true)]
    pub otlp_traces_client_certificate: Option<PathBuf>,

    /// The traces-only variant of `--otlp-client-key`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", value_name = "PEM", hide = true)]
    pub otlp_traces_client_key: Option<PathBuf>,

    /// Which requests are traced.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value = "parentbased_always_on")]
    pub traces_sampler: TraceSampler,

    /// The share of requests traced (0 to 1) by the `traceidratio` samplers.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_name = "RATIO", default_value_t = 1.0)]
    pub traces_sampler_arg: f64,

    /// `service.name` of the traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "sluice-gateway")]
    pub otel_service_name: String,

    /// More resource attributes of the traces (`key=value,...`, e.g.
    /// `deployment.environment.name=prod,k8s.pod.name=$(POD_NAME)`).
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", value_name = "KEY=VALUE,...")]
    pub otel_resource_attributes: Option<String>,

    /// Write a tamper-evident audit record of every API request (metadata only: never prompt or
    /// completion text, never a key) to this file, appended to and continued across restarts;
    /// or `stdout` to write them among the log lines (each audit line starts
    /// `{"sluice_audit":1,`). Off without it. Check it with `sluice-gateway audit verify`.
    #[arg(long, env = "SLUICE_AUDIT_LOG", value_name = "PATH|stdout")]
    pub audit_log: Option<PathBuf>,

    /// Sign the audit log's checkpoints with the HMAC-SHA256 key in this file (at least 16
    /// bytes, surrounding whitespace ignored; e.g. `openssl rand -hex 32`). Never logged.
    /// Without it checkpoints are unsigned, and say so.
    #[arg(long, env = "SLUICE_AUDIT_KEY_FILE", value_name = "PATH", requires = "audit_log")]
    pub audit_key_file: Option<PathBuf>,

    /// A checkpoint in the audit log after this many records...
    #[arg(long, env = "SLUICE_AUDIT_CHECKPOINT_RECORDS", value_name = "N", default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_checkpoint_records: u64,

    /// ...and this many seconds after the last one when records were written since.
    #[arg(long, env = "SLUICE_AUDIT_CHECKPOINT_SECONDS", value_name = "N", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_checkpoint_seconds: u64,

    /// Validate the configuration, print a summary and exit (status 1 on errors).
    #[arg(long)]
    pub check: bool,

    /// Print the compiled GatewayConfig (credentials redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `sluice-gateway audit ...`: tools for the audit log. Parsed apart from [`Settings`] (when
/// `audit` is the first argument), so the gateway itself keeps taking its flags with no
/// subcommand.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "sluice-gateway audit",
    bin_name = "sluice-gateway audit",
    version,
    about = "Tools for the Sluice audit log (--audit-log)"
)]
pub struct AuditCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: AuditAction,
}

/// The `audit` subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum AuditAction {
    /// Check that audit log files are untouched.
    ///
    /// Every line must chain to the one before it and every checkpoint's signature hold. Exits 0
    /// with a summary, 1 naming the first bad line (file, line number, seq) and what is wrong, 2
    /// if a file or key cannot be read.
    #[command(after_help = "Examples:\n  \
sluice-gateway audit verify --key-file audit.key audit.log              # one file\n  \
sluice-gateway audit verify --key-file audit.key audit.log.2 audit.log.1 audit.log   # rotated, oldest first\n  \
sluice-gateway audit verify --continued audit.log                       # its earlier files are gone\n  \
sluice-gateway audit verify --require-final --key-file audit.key audit.log.1        # an archived, closed log")]
    Verify(VerifyArgs),
}

/// `sluice-gateway audit verify`.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// The checkpoint key (as given to the gateway's --audit-key-file). Repeat it for keys used
    /// in turn (each checkpoint names its key's fingerprint). Without it, signatures are not
    /// checked and the summary says so.
    #[arg(long = "key-file", env = "SLUICE_AUDIT_KEY_FILE", value_name = "PATH", value_delimiter = ',')]
    pub key_files: Vec<PathBuf>,

    /// The first file continues earlier files that are not given (rotated away): accept that it
    /// does not begin with a chain's first line.
    #[arg(long)]
    pub continued: bool,

    /// Fail when a chain is not closed by a final checkpoint (the gateway crashed or is still
    /// running, or the end was cut): for archived logs.
    #[arg(long)]
    pub require_final: bool,

    /// The log's files, oldest first (rotated segments, then the current file).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

impl Settings {
    /// Settings for tests: the given config, random loopback ports.
    pub fn for_test(config: PathBuf) -> Self {
        Self::parse_from([
            "sluice-gateway",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--config",
            &config.to_string_lossy(),
        ])
    }
}
