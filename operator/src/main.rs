//! The `sluice-operator` binary: flags (each also an environment variable) to settings, then
//! [`sluice_operator::run`].

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use sluice_operator::Settings;
use sluice_operator::metrics::Metrics;
use sluice_operator::settings::{
    DEFAULT_DATAPLANE_NAMESPACE, GatewaySettings, LeaderElectionSettings, NetworkPolicySettings, OtlpProtocol, OtlpTls,
    ParentRef, PodDefaults, RedisSettings, RouteKind, RouteSettings, SecretKeyRef, TraceSampler, TracingSettings,
    WatchedNamespaces, default_gateway_image,
};

/// Reconciles Sluice's Projects, Endpoints, ApiKeys, Providers and ServiceTiers into one gateway
/// per project in the data-plane namespace: config Secrets, RBAC, Deployment, Service and route.
#[derive(Debug, Parser)]
#[command(name = "sluice-operator", version, about, long_about = None)]
struct Cli {
    /// Kubeconfig file(s) to use: several separated as in KUBECONFIG (`a:b`), merged as kubectl
    /// merges them (the first file to set a value wins; missing files are skipped). Absent: the
    /// in-cluster service account, else ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<OsString>,

    /// Kubeconfig context to use (with --kubeconfig or the default file).
    #[arg(long, env = "SLUICE_KUBE_CONTEXT")]
    context: Option<String>,

    /// Tenant namespaces to watch, comma-separated. Empty: all namespaces.
    #[arg(long, env = "SLUICE_WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    watch_namespaces: Vec<String>,

    /// Namespace of the platform's shared Providers (and their credential Secrets).
    #[arg(long, env = "SLUICE_SHARED_NAMESPACE", default_value = sluice_crds::compile::DEFAULT_SHARED_NAMESPACE)]
    shared_namespace: String,

    /// Namespace where each project's gateway, config Secrets and route are created.
    #[arg(long, env = "SLUICE_DATAPLANE_NAMESPACE", default_value = DEFAULT_DATAPLANE_NAMESPACE)]
    dataplane_namespace: String,

    /// Gateway container image. Default: the gateway of this operator's release.
    #[arg(long, env = "SLUICE_GATEWAY_IMAGE", default_value_t = default_gateway_image())]
    gateway_image: String,

    /// imagePullPolicy of gateway containers (Always, IfNotPresent, Never). Absent: Kubernetes' default.
    #[arg(long, env = "SLUICE_GATEWAY_IMAGE_PULL_POLICY")]
    gateway_image_pull_policy: Option<String>,

    /// Proxies in front of every gateway (CIDRs or addresses, comma-separated): the gateways read
    /// the client's address from their forwarding headers (and PROXY protocol headers). Set it
    /// to the pod network when the operator's Ingress or HTTPRoute publishes the gateways.
    #[arg(long, env = "SLUICE_GATEWAY_TRUSTED_PROXIES", value_name = "CIDR,...")]
    gateway_trusted_proxies: Option<String>,

    /// PROXY protocol on the gateways' API port: off, optional or required (needs
    /// --gateway-trusted-proxies).
    #[arg(long, env = "SLUICE_GATEWAY_PROXY_PROTOCOL", value_parser = ["off", "optional", "required"])]
    gateway_proxy_protocol: Option<String>,

    /// Let each project's gateways write its ApiKeys, for the key-management API
    /// (`/<project>/v1/keys`, used by keys with the `management` scope): a Role in the tenant's
    /// namespace allows ApiKeys there and nothing else. `false`: the API answers 501.
    #[arg(long, env = "SLUICE_GATEWAY_KEY_MANAGEMENT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    gateway_key_management: bool,

    /// How `/<project>/` is published: an Ingress, a Gateway API HTTPRoute, or nothing.
    #[arg(long, env = "SLUICE_ROUTE_KIND", value_enum, default_value_t = RouteKindArg::Ingress)]
    route_kind: RouteKindArg,

    /// `ingressClassName` of the Ingresses. Absent: the cluster's default class.
    #[arg(long, env = "SLUICE_INGRESS_CLASS")]
    ingress_class: Option<String>,

    /// Gateway that HTTPRoutes attach to: NAMESPACE/NAME or NAMESPACE/NAME/LISTENER. Required with
    /// --route-kind httproute.
    #[arg(long, env = "SLUICE_GATEWAY_PARENT")]
    gateway_parent: Option<ParentRef>,

    /// External host name of the routes (`llm.example.com`). Absent: any host.
    #[arg(long, env = "SLUICE_HOST")]
    host: Option<String>,

    /// Base URL clients use, for Endpoint status.url. Absent: https://<host>, else the in-cluster
    /// Service URL.
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    public_url: Option<String>,

    /// Elect a leader with a Lease, so that several replicas are safe (only the leader reconciles).
    #[arg(long, env = "SLUICE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "SLUICE_LEADER_ELECTION_LEASE", default_value = "sluice-operator")]
    leader_election_lease: String,

    /// Namespace of the leader Lease. Absent: POD_NAMESPACE, else the shared namespace.
    #[arg(long, env = "SLUICE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Seconds a Lease holds without renewal.
    #[arg(long, env = "SLUICE_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    leader_election_lease_seconds: u64,

    /// This replica's identity in the Lease and in Events. Absent: POD_NAME, else the host name.
    #[arg(long, env = "SLUICE_IDENTITY")]
    identity: Option<String>,

    /// Least seconds between two status writes of one ApiKey that change only its reported spend
    /// (status.currentPeriodSpendUsd).
    #[arg(long, env = "SLUICE_SPEND_STATUS_INTERVAL_SECONDS", default_value_t = 30)]
    spend_status_interval_seconds: u64,

    /// Defaults for every gateway pod, a YAML or JSON file: resources, nodeSelector, tolerations,
    /// affinity, priorityClassName, imagePullSecrets, podLabels, podAnnotations, topologySpread
    /// (default true), terminationGracePeriodSeconds. A Project's spec.dataPlane overrides them.
    #[arg(long, env = "SLUICE_GATEWAY_POD_DEFAULTS")]
    gateway_pod_defaults: Option<PathBuf>,

    /// Share every gateway's limits through Redis: the Secret (in the data-plane namespace)
    /// whose key holds the Redis URL, `NAME` or `NAME:KEY` (key `url` by default). The pods get it
    /// as SLUICE_REDIS_URL; the operator never reads it. Absent: each replica limits on its own.
    #[arg(long, env = "SLUICE_GATEWAY_REDIS_SECRET")]
    gateway_redis_secret: Option<RedisSettings>,

    /// Send every gateway's traces to this OTLP endpoint (`http://otel-collector.observability:4318`),
    /// passed to the pods as OTEL_EXPORTER_OTLP_ENDPOINT. Absent: no traces, and the other
    /// --gateway-otlp-* and --gateway-traces-* flags are ignored.
    #[arg(long, env = "SLUICE_GATEWAY_OTLP_ENDPOINT")]
    gateway_otlp_endpoint: Option<String>,

    /// The gateways' OTLP transport: grpc (port 4317) or http/protobuf (port 4318).
    #[arg(long, env = "SLUICE_GATEWAY_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocolArg::HttpProtobuf)]
    gateway_otlp_protocol: OtlpProtocolArg,

    /// A Secret (in the data-plane namespace) whose key holds the OTLP headers (`key=value,...`,
    /// e.g. a collector's token), `NAME` or `NAME:KEY` (key `headers` by default). The pods get
    /// it as OTEL_EXPORTER_OTLP_HEADERS; the operator never reads it.
    #[arg(long, env = "SLUICE_GATEWAY_OTLP_HEADERS_SECRET")]
    gateway_otlp_headers_secret: Option<String>,

    /// A Secret (in the data-plane namespace) with the collector's CA in `ca.crt`, mounted into
    /// the gateway pods and trusted alone for an `https://` endpoint (OTEL_EXPORTER_OTLP_CERTIFICATE);
    /// the operator never reads it. Absent: the public roots.
    #[arg(long, env = "SLUICE_GATEWAY_OTLP_TLS_SECRET", value_name = "NAME")]
    gateway_otlp_tls_secret: Option<String>,

    /// Mutual TLS: the gateways also present `tls.crt` and `tls.key` of --gateway-otlp-tls-secret.
    #[arg(long, env = "SLUICE_GATEWAY_OTLP_CLIENT_CERTIFICATE", requires = "gateway_otlp_tls_secret")]
    gateway_otlp_client_certificate: bool,

    /// Which requests the gateways trace (OTEL_TRACES_SAMPLER).
    #[arg(long, env = "SLUICE_GATEWAY_TRACES_SAMPLER", value_enum, default_value_t = SamplerArg::ParentbasedAlwaysOn)]
    gateway_traces_sampler: SamplerArg,

    /// The share of requests traced by the ratio samplers, 0 to 1 (OTEL_TRACES_SAMPLER_ARG).
    /// Absent: the gateway's default (1).
    #[arg(long, env = "SLUICE_GATEWAY_TRACES_SAMPLER_ARG", value_parser = parse_ratio)]
    gateway_traces_sampler_arg: Option<f64>,

    /// `service.name` of the gateways' traces (OTEL_SERVICE_NAME). Absent: sluice-gateway.
    #[arg(long, env = "SLUICE_GATEWAY_OTEL_SERVICE_NAME")]
    gateway_otel_service_name: Option<String>,

    /// More resource attributes of the gateways' traces, `key=value,...`; each pod adds
    /// k8s.namespace.name, k8s.deployment.name, k8s.pod.name and sluice.project.
    #[arg(long, env = "SLUICE_GATEWAY_OTEL_RESOURCE_ATTRIBUTES", value_parser = parse_attributes, default_value = "")]
    gateway_otel_resource_attributes: Attributes,

    /// Write a NetworkPolicy per gateway: the API port open to the ingress namespaces only, the
    /// admin port to the monitoring namespaces and the operator's own.
    #[arg(long, env = "SLUICE_NETWORK_POLICY", default_value_t = false, action = clap::ArgAction::Set)]
    network_policy: bool,

    /// Namespaces whose pods may reach the gateways' API port (the ingress controller's),
    /// comma-separated. With --network-policy.
    #[arg(long, env = "SLUICE_NETWORK_POLICY_INGRESS_NAMESPACES", value_delimiter = ',', default_value = "")]
    network_policy_ingress_namespaces: Vec<String>,

    /// Namespaces whose pods may reach the gateways' admin port (Prometheus), comma-separated.
    /// With --network-policy.
    #[arg(long, env = "SLUICE_NETWORK_POLICY_MONITORING_NAMESPACES", value_delimiter = ',', default_value = "")]
    network_policy_monitoring_namespaces: Vec<String>,

    /// Address of /metrics, /healthz and /readyz. `off` serves none.
    #[arg(long, env = "SLUICE_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: String,

    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter in RUST_LOG syntax (`info`, `sluice_operator=debug,kube=warn`).
    #[arg(long, env = "SLUICE_LOG", default_value = "info")]
    log: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RouteKindArg {
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// gateway.networking.k8s.io/v1 HTTPRoute.
    Httproute,
    /// No route.
    None,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OtlpProtocolArg {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SamplerArg {
    /// Every request.
    #[value(name = "always_on")]
    AlwaysOn,
    /// None.
    #[value(name = "always_off")]
    AlwaysOff,
    /// The share given by --gateway-traces-sampler-arg.
    #[value(name = "traceidratio")]
    Traceidratio,
    /// The client's decision, else every request.
    #[value(name = "parentbased_always_on")]
    ParentbasedAlwaysOn,
    /// The client's decision, else none.
    #[value(name = "parentbased_always_off")]
    ParentbasedAlwaysOff,
    /// The client's decision, else the share given by --gateway-traces-sampler-arg.
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceidratio,
}

/// Parsed `key=value,...` resource attributes (a type of its own: clap takes a `Vec` field for a
/// repeated flag).
#[derive(Clone, Debug)]
struct Attributes(Vec<(String, String)>);

fn parse_attributes(text: &str) -> Result<Attributes, String> {
    sluice_operator::settings::parse_attributes(text).map(Attributes)
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a ratio between 0 and 1")),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?;
    // Colour only on a terminal: escape codes in a log file or a collector are noise.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // The workspace's one TLS crypto provider; Err only means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = match &cli.kubeconfig {
        Some(paths) => {
            let kubeconfig = read_kubeconfig(paths)?;
            let options = kube::config::KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if cli.context.is_some() => {
            let options = kube::config::KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
            kube::Config::from_kubeconfig(&options).await?
        }
        None => kube::Config::infer().await?,
    };
    let metrics = Arc::new(Metrics::new());
    let client = metrics.api_calls.client(config)?;
    let identity = cli
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| "sluice-operator".to_owned());
    let metrics_listen = match cli.metrics_listen.as_str() {
        "off" | "" => None,
        address => Some(address.parse::<SocketAddr>().with_context(|| format!("--metrics-listen {address:?}"))?),
    };
    let leader_election = cli.leader_election.then(|| {
        let namespace = cli
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| cli.shared_namespace.clone());
        LeaderElectionSettings {
            lease_duration: Duration::from_secs(cli.leader_election_lease_seconds.max(2)),
            ..LeaderElectionSettings::new(namespace, &cli.leader_election_lease)
        }
    });
    let tracing = gateway_tracing(&cli)?;
    let settings = Settings {
        namespaces: WatchedNamespaces::from_list(&cli.watch_namespaces),
        shared_namespace: cli.shared_namespace,
        dataplane_namespace: cli.dataplane_namespace,
        gateway: GatewaySettings {
            image: cli.gateway_image,
            image_pull_policy: cli.gateway_image_pull_policy,
            redis: cli.gateway_redis_secret,
            trusted_proxies: cli.gateway_trusted_proxies.filter(|list| !list.trim().is_empty()),
            proxy_protocol: cli.gateway_proxy_protocol.filter(|mode| mode != "off"),
            tracing,
            key_management: cli.gateway_key_management,
            pod: match &cli.gateway_pod_defaults {
                Some(path) => PodDefaults::read(path).map_err(anyhow::Error::msg).context("--gateway-pod-defaults")?,
                None => PodDefaults::default(),
            },
        },
        network_policy: cli.network_policy.then(|| NetworkPolicySettings {
            ingress_namespaces: cli.network_policy_ingress_namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
            monitoring_namespaces: cli
                .network_policy_monitoring_namespaces
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect(),
            operator_namespace: std::env::var("POD_NAMESPACE").ok(),
        }),
        route: RouteSettings {
            kind: match cli.route_kind {
                RouteKindArg::Ingress => RouteKind::Ingress,
                RouteKindArg::Httproute => RouteKind::HttpRoute,
                RouteKindArg::None => RouteKind::None,
            },
            ingress_class: cli.ingress_class,
            gateway_parent: cli.gateway_parent,
            host: cli.host,
        },
        public_url: cli.public_url,
        leader_election,
        metrics_listen,
        identity,
        spend_status_interval: Duration::from_secs(cli.spend_status_interval_seconds),
    };
    tracing::info!(?settings, "starting");
    sluice_operator::run_with_metrics(client, settings, metrics, shutdown_signal()).await?;
    Ok(())
}

/// The gateways' trace export from the `--gateway-otlp-*`, `--gateway-traces-*` and
/// `--gateway-otel-*` flags; `None` without an endpoint.
fn gateway_tracing(cli: &Cli) -> anyhow::Result<Option<TracingSettings>> {
    let Some(endpoint) = cli.gateway_otlp_endpoint.clone().filter(|e| !e.is_empty()) else { return Ok(None) };
    let headers = match cli.gateway_otlp_headers_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => Some(
            SecretKeyRef::parse(secret, "headers")
                .map_err(anyhow::Error::msg)
                .context("--gateway-otlp-headers-secret")?,
        ),
        None => None,
    };
    Ok(Some(TracingSettings {
        endpoint,
        protocol: match cli.gateway_otlp_protocol {
            OtlpProtocolArg::Grpc => OtlpProtocol::Grpc,
            OtlpProtocolArg::HttpProtobuf => OtlpProtocol::HttpProtobuf,
        },
        headers,
        sampler: match cli.gateway_traces_sampler {
            SamplerArg::AlwaysOn => TraceSampler::AlwaysOn,
            SamplerArg::AlwaysOff => TraceSampler::AlwaysOff,
            SamplerArg::Traceidratio => TraceSampler::TraceIdRatio,
            SamplerArg::ParentbasedAlwaysOn => TraceSampler::ParentBasedAlwaysOn,
            SamplerArg::ParentbasedAlwaysOff => TraceSampler::ParentBasedAlwaysOff,
            SamplerArg::ParentbasedTraceidratio => TraceSampler::ParentBasedTraceIdRatio,
        },
        sampler_arg: cli.gateway_traces_sampler_arg,
        service_name: cli.gateway_otel_service_name.clone().filter(|s| !s.is_empty()),
        resource_attributes: cli.gateway_otel_resource_attributes.0.clone(),
        tls: cli
            .gateway_otlp_tls_secret
            .clone()
            .filter(|s| !s.is_empty())
            .map(|secret| OtlpTls { secret, client_certificate: cli.gateway_otlp_client_certificate }),
    }))
}

/// The kubeconfig files of a KUBECONFIG-style list, merged in order (the first to set a value
/// wins, as kubectl does); files that do not exist are skipped, unless none does.
fn read_kubeconfig(paths: &OsStr) -> anyhow::Result<kube::config::Kubeconfig> {
    let mut merged: Option<kube::config::Kubeconfig> = None;
    let mut missing = Vec::new();
    for path in std::env::split_paths(paths).filter(|p| !p.as_os_str().is_empty()) {
        if !path.exists() {
            missing.push(path.display().to_string());
            continue;
        }
        let next = kube::config::Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
        merged = Some(match merged {
            None => next,
            Some(first) => first.merge(next).with_context(|| format!("merging {}", path.display()))?,
        });
    }
    merged.with_context(|| format!("no kubeconfig file found: {}", missing.join(", ")))
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster: {{server: https://{cluster}.example:6443}}\n\
             users:\n- name: {cluster}-user\n  user: {{token: t}}\ncontexts:\n- name: {cluster}\n  context: {{cluster: {cluster}, user: {cluster}-user}}\n\
             current-context: {cluster}\n"
        )
    }

    #[test]
    fn tracing_flags_make_the_gateways_trace_export() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("sluice-operator").chain(args.iter().copied()));
        let untraced = parse(&["--gateway-traces-sampler", "always_on"]).expect("flags");
        assert_eq!(gateway_tracing(&untraced).expect("settings"), None, "no endpoint, no traces");

        let cli = parse(&[
            "--gateway-otlp-endpoint=http://otel-collector:4317",
            "--gateway-otlp-protocol=grpc",
            "--gateway-otlp-headers-secret=otlp-auth",
            "--gateway-traces-sampler=parentbased_traceidratio",
            "--gateway-traces-sampler-arg=0.01",
            "--gateway-otel-resource-attributes=deployment.environment.name=prod,team=ml",
        ])
        .expect("flags");
        let tracing = gateway_tracing(&cli).expect("settings").expect("tracing");
        assert_eq!(tracing.endpoint, "http://otel-collector:4317");
        assert_eq!(tracing.protocol, OtlpProtocol::Grpc);
        assert_eq!(tracing.headers, Some(SecretKeyRef { secret: "otlp-auth".into(), key: "headers".into() }));
        assert_eq!((tracing.sampler, tracing.sampler_arg), (TraceSampler::ParentBasedTraceIdRatio, Some(0.01)));
        assert_eq!(tracing.resource_attributes.len(), 2);
        assert_eq!(tracing.service_name, None, "the gateway's default");

        for bad in [
            &["--gateway-traces-sampler-arg=2"][..],
            &["--gateway-otlp-protocol=http/json"],
            &["--gateway-otel-resource-attributes=novalue"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} refused");
        }
    }

    #[test]
    fn a_kubeconfig_list_is_merged_as_kubectl_merges_it() {
        let dir = std::env::temp_dir().join(format!("sluice-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, kubeconfig("alpha")).expect("a");
        std::fs::write(&b, kubeconfig("beta")).expect("b");
        let list = std::env::join_paths([a.clone(), dir.join("missing"), b]).expect("a list");
        let merged = read_kubeconfig(&list).expect("merged");
        let contexts: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(contexts, ["alpha", "beta"], "both files, a missing one skipped");
        assert_eq!(merged.current_context.as_deref(), Some("alpha"), "the first file's value wins");
        let none = std::env::join_paths([dir.join("missing")]).expect("a list");
        assert!(read_kubeconfig(&none).expect_err("nothing to read").to_string().contains("no kubeconfig file found"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
