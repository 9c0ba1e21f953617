//! What an operator instance is told at start: which namespaces it watches, where data planes go,
//! how they are published. The binary fills it from flags and environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use serde::Deserialize;
use sluice_crds::compile::DEFAULT_SHARED_NAMESPACE;

/// Namespace of the data planes unless told otherwise.
pub const DEFAULT_DATAPLANE_NAMESPACE: &str = "sluice-dataplanes";
/// How often, at most, the reported spend alone changes one ApiKey's status, unless told otherwise.
pub const DEFAULT_SPEND_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// The gateway image of this operator's release.
pub fn default_gateway_image() -> String {
    format!("ghcr.io/sluice-dev/sluice-gateway:{}", env!("CARGO_PKG_VERSION"))
}

/// Everything the controllers need to know about their surroundings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tenant namespaces to watch for Projects, Endpoints, ApiKeys, Providers and Secrets.
    pub namespaces: WatchedNamespaces,
    /// Namespace of platform-wide Providers (always watched).
    pub shared_namespace: String,
    /// Namespace where every project's data plane runs.
    pub dataplane_namespace: String,
    /// The gateway pods.
    pub gateway: GatewaySettings,
    /// How `/<project>/` is published.
    pub route: RouteSettings,
    /// A NetworkPolicy per gateway; `None`: none.
    pub network_policy: Option<NetworkPolicySettings>,
    /// Base URL clients use (`https://llm.example.com`), for `Endpoint.status.url`. `None`: from
    /// the route's host, else the in-cluster Service.
    pub public_url: Option<String>,
    /// Lease-based leader election; `None` runs the controllers at once (one replica only).
    pub leader_election: Option<LeaderElectionSettings>,
    /// Address of `/metrics`, `/healthz` and `/readyz`; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Who this instance is, in Events and the Lease (usually the pod name).
    pub identity: String,
    /// Least time between two status writes of one ApiKey that change only its reported spend:
    /// busy keys' spend changes with every usage report, and each write is an etcd revision.
    pub spend_status_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: WatchedNamespaces::All,
            shared_namespace: DEFAULT_SHARED_NAMESPACE.to_owned(),
            dataplane_namespace: DEFAULT_DATAPLANE_NAMESPACE.to_owned(),
            gateway: GatewaySettings::default(),
            route: RouteSettings::default(),
            network_policy: None,
            public_url: None,
            leader_election: None,
            metrics_listen: None,
            identity: "sluice-operator".to_owned(),
            spend_status_interval: DEFAULT_SPEND_STATUS_INTERVAL,
        }
    }
}

/// Which tenant namespaces the operator serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchedNamespaces {
    /// Every namespace (needs cluster-wide read access).
    All,
    /// Only these (read access in each is enough).
    Only(Vec<String>),
}

impl WatchedNamespaces {
    /// From a comma-separated list; empty means all.
    pub fn from_list(list: &[String]) -> Self {
        let names: Vec<String> = list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() { Self::All } else { Self::Only(names) }
    }

    /// The namespaces to watch, with `extra` added; `None` is all namespaces.
    pub fn with(&self, extra: &str) -> Option<Vec<String>> {
        match self {
            Self::All => None,
            Self::Only(names) => {
                let mut names = names.clone();
                if !names.iter().any(|n| n == extra) {
                    names.push(extra.to_owned());
                }
                Some(names)
            }
        }
    }

    /// Whether objects in `namespace` are served.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n == namespace),
        }
    }
}

/// The gateway Deployment of each project.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewaySettings {
    /// Container image.
    pub image: String,
    /// `imagePullPolicy`; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// The platform's defaults for gateway pods.
    pub pod: PodDefaults,
    /// Limits shared through Redis by every project's gateways; `None`: each replica limits on
    /// its own.
    pub redis: Option<RedisSettings>,
    /// `SLUICE_TRUSTED_PROXIES` of every gateway (comma-separated CIDRs); `None`: none trusted.
    pub trusted_proxies: Option<String>,
    /// `SLUICE_PROXY_PROTOCOL` of every gateway (`optional` or `required`); `None`: off.
    pub proxy_protocol: Option<String>,
    /// Where every gateway sends its traces; `None`: no traces (the gateway makes no span).
    pub tracing: Option<TracingSettings>,
    /// Whether gateways may write their project's ApiKeys (the key-management API): a Role in
    /// the tenant's namespace grants it.
    pub key_management: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            image: default_gateway_image(),
            image_pull_policy: None,
            pod: PodDefaults::default(),
            redis: None,
            trusted_proxies: None,
            proxy_protocol: None,
            tracing: None,
            key_management: true,
        }
    }
}

/// The gateways' OTLP trace export, passed to each gateway container as the `OTEL_*` variables
/// the gateway (like every OpenTelemetry SDK) reads. The headers, which may hold a collector's
/// token, come from a Secret in the data-plane namespace that the operator never reads.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    /// The collector, e.g. `http://otel-collector.observability:4318`.
    pub endpoint: String,
    /// gRPC or HTTP/protobuf.
    pub protocol: OtlpProtocol,
    /// The Secret key holding `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,...`).
    pub headers: Option<SecretKeyRef>,
    /// Which requests are traced.
    pub sampler: TraceSampler,
    /// The share of requests traced by the ratio samplers (0 to 1); `None`: the gateway's default.
    pub sampler_arg: Option<f64>,
    /// `service.name`; `None`: the gateway's default (`sluice-gateway`).
    pub service_name: Option<String>,
    /// The platform's resource attributes; each gateway adds its pod, namespace, Deployment and
    /// project after them.
    pub resource_attributes: Vec<(String, String)>,
    /// TLS to the collector beyond the public roots: a Secret in the data-plane namespace
    /// mounted into the pods; `None`: the public roots (for an `https://` endpoint).
    pub tls: Option<OtlpTls>,
}

/// The Secret that holds the collector's CA (`ca.crt`) and, for mutual TLS, the gateways'
/// client certificate and key (`tls.crt`, `tls.key`, as a `kubernetes.io/tls` Secret names them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpTls {
    /// Name of the Secret.
    pub secret: String,
    /// Whether the gateways present `tls.crt` and `tls.key` to the collector.
    pub client_certificate: bool,
}

impl TracingSettings {
    /// Export to `endpoint` over HTTP/protobuf, tracing what the client asked for, or everything.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: None,
            sampler: TraceSampler::ParentBasedAlwaysOn,
            sampler_arg: None,
            service_name: None,
            resource_attributes: Vec::new(),
            tls: None,
        }
    }
}

/// The OTLP transport, as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc` (a collector's port 4317).
    Grpc,
    /// `http/protobuf` (a collector's port 4318).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The variable's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// A sampler, as `OTEL_TRACES_SAMPLER` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`.
    TraceIdRatio,
    /// `parentbased_always_on`.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`.
    ParentBasedTraceIdRatio,
}

impl TraceSampler {
    /// The variable's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlwaysOn => "always_on",
            Self::AlwaysOff => "always_off",
            Self::TraceIdRatio => "traceidratio",
            Self::ParentBasedAlwaysOn => "parentbased_always_on",
            Self::ParentBasedAlwaysOff => "parentbased_always_off",
            Self::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }
}

/// A key of a Secret in the data-plane namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub secret: String,
    /// Its key.
    pub key: String,
}

impl SecretKeyRef {
    /// `NAME` (the key is `default_key`) or `NAME:KEY`.
    pub fn parse(s: &str, default_key: &str) -> Result<Self, String> {
        let (secret, key) = s.split_once(':').unwrap_or((s, default_key));
        if secret.is_empty() || key.is_empty() {
            return Err(format!("expected SECRET or SECRET:KEY, got {s:?}"));
        }
        Ok(Self { secret: secret.to_owned(), key: key.to_owned() })
    }
}

/// `key=value,...` (values percent-encoded where they hold a comma, as `OTEL_RESOURCE_ATTRIBUTES`
/// wants them), each key non-empty.
pub fn parse_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
            _ => Err(format!("resource attribute {pair:?} is not key=value")),
        })
        .collect()
}

/// Where gateways find Redis for shared limits: a Secret in the data-plane namespace holds the
/// URL (with its password), passed to the pods as `SLUICE_REDIS_URL` without the operator ever
/// reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// Name of the Secret.
    pub secret: String,
    /// Its key holding the URL.
    pub key: String,
}

impl FromStr for RedisSettings {
    type Err = String;

    /// `NAME` or `NAME:KEY` (the key defaults to `url`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let SecretKeyRef { secret, key } = SecretKeyRef::parse(s, "url")?;
        Ok(Self { secret, key })
    }
}

/// The platform's defaults for every project's gateway pods (the chart's `gateway.pod` values,
/// read from `--gateway-pod-defaults FILE`, YAML or JSON). A Project's `spec.dataPlane` replaces
/// each field it sets; labels and annotations are added together.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDefaults {
    /// CPU and memory (else 100m / 64Mi requested, 256Mi limit).
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    /// Nodes the pods may run on.
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default)]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod affinity.
    #[serde(default)]
    pub affinity: Option<Affinity>,
    /// PriorityClass.
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// Secrets (in the data-plane namespace) to pull the gateway image with.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Labels on every gateway pod.
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations on every gateway pod.
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Spread each project's pods across nodes and zones (`ScheduleAnyway`).
    #[serde(default = "yes")]
    pub topology_spread: bool,
    /// Seconds a stopping pod gets before it is killed; 45 when absent (the gateway's 5 s drain
    /// and 30 s grace for in-flight streams, and a margin).
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
}

fn yes() -> bool {
    true
}

impl Default for PodDefaults {
    fn default() -> Self {
        Self {
            resources: None,
            node_selector: None,
            tolerations: None,
            affinity: None,
            priority_class_name: None,
            image_pull_secrets: Vec::new(),
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            topology_spread: true,
            termination_grace_period_seconds: None,
        }
    }
}

impl PodDefaults {
    /// Reads the defaults from a YAML or JSON file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Who may reach the gateway pods when the platform asks for NetworkPolicies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicySettings {
    /// Namespaces whose pods may reach the API port (the ingress controller's, the Gateway's).
    pub ingress_namespaces: Vec<String>,
    /// Namespaces whose pods may reach the admin port (Prometheus).
    pub monitoring_namespaces: Vec<String>,
    /// The operator's own namespace, which may reach the admin port too.
    pub operator_namespace: Option<String>,
}

/// How a project's path is published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RouteKind {
    /// A `networking.k8s.io/v1` Ingress per project.
    #[default]
    Ingress,
    /// A Gateway API `HTTPRoute` per project, attached to `--gateway-parent`.
    HttpRoute,
    /// No route: publish the Services yourself.
    None,
}

/// The Gateway an HTTPRoute attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
    /// Listener name, if one.
    pub section_name: Option<String>,
}

impl FromStr for ParentRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let non_empty = |p: &&str| !p.is_empty();
        match parts.as_slice() {
            [namespace, name] if [namespace, name].iter().all(|p| non_empty(p)) => {
                Ok(Self { namespace: (*namespace).to_owned(), name: (*name).to_owned(), section_name: None })
            }
            [namespace, name, section] if [namespace, name, section].iter().all(|p| non_empty(p)) => Ok(Self {
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
                section_name: Some((*section).to_owned()),
            }),
            _ => Err(format!("gateway parent {s:?} is not NAMESPACE/NAME or NAMESPACE/NAME/SECTION")),
        }
    }
}

/// Route settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteSettings {
    /// Ingress, HTTPRoute or nothing.
    pub kind: RouteKind,
    /// `spec.ingressClassName` of Ingresses.
    pub ingress_class: Option<String>,
    /// Parent Gateway of HTTPRoutes (required for `HttpRoute`).
    pub gateway_parent: Option<ParentRef>,
    /// The external host name; `None` matches any host.
    pub host: Option<String>,
}

/// Lease-based leader election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and others retry).
    pub retry_period: Duration,
}

impl LeaderElectionSettings {
    /// The usual timings (15 s lease, renewed every 2 s) for a Lease in `namespace`.
    pub fn new(namespace: impl Into<String>, lease_name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let parent: ParentRef = "infra/public/https".parse().expect("parent");
        assert_eq!(parent.section_name.as_deref(), Some("https"));
        assert!("public".parse::<ParentRef>().is_err());
        assert_eq!(WatchedNamespaces::from_list(&[]), WatchedNamespaces::All);
        let some = WatchedNamespaces::from_list(&["a, b".to_owned()]);
        assert_eq!(some.with("sluice-system"), Some(vec!["a".to_owned(), "b".to_owned(), "sluice-system".to_owned()]));
        assert!(some.contains("b") && !some.contains("c"));
        let redis: RedisSettings = "limits-redis".parse().expect("a name");
        assert_eq!((redis.secret.as_str(), redis.key.as_str()), ("limits-redis", "url"));
        let redis: RedisSettings = "limits-redis:REDIS_URL".parse().expect("name and key");
        assert_eq!(redis.key, "REDIS_URL");
        assert!(":url".parse::<RedisSettings>().is_err());
        let headers = SecretKeyRef::parse("otlp-auth", "headers").expect("a name");
        assert_eq!((headers.secret.as_str(), headers.key.as_str()), ("otlp-auth", "headers"));
        assert!(SecretKeyRef::parse("otlp-auth:", "headers").is_err());
        let attributes = parse_attributes("deployment.environment.name=prod, team = ml ,").expect("pairs");
        assert_eq!(
            attributes,
            [("deployment.environment.name".to_owned(), "prod".to_owned()), ("team".to_owned(), "ml".to_owned())]
        );
        assert!(parse_attributes("=x").is_err());
        assert!(parse_attributes("novalue").is_err());
    }
}
