//! `Project`: a tenant, its URL segment and its data plane.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Budget, Condition, Scope, status::conditions_schema};

/// A tenant. Its Endpoints and ApiKeys live in the same namespace (one Project per namespace) and
/// are served at `/<slug>/...` by a data plane of its own.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Project",
    plural = "projects",
    namespaced,
    shortname = "slproj",
    category = "sluice",
    status = "ProjectStatus",
    derive = "PartialEq",
    doc = "A tenant: its URL segment, default tier and data plane. One per namespace.",
    printcolumn(name = "Slug", type_ = "string", json_path = ".spec.slug"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.defaultTier"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectSpec {
    /// The first URL segment: `/<slug>/<endpoint>/v1`. A DNS label. Immutable: clients have it in
    /// their configuration.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("slug is immutable"))]
    pub slug: String,
    /// Name shown to humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// ServiceTier for keys and endpoints that name none.
    #[schemars(length(min = 1, max = 253))]
    pub default_tier: String,
    /// The project's gateway pods.
    #[serde(default)]
    pub data_plane: DataPlaneSpec,
    /// Sign every response of the project's keys (`X-Sluice-Timestamp`, `X-Sluice-Signature`,
    /// and a closing SSE comment on streams) with an HMAC-SHA256 secret that keys with the
    /// `management` scope read at `/<slug>/v1/security/signing-secret`. Absent: not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningSpec>,
    /// Accept JWT bearer tokens from an identity provider beside the project's API keys. Each
    /// token's subject is tracked like a key of its own (`jwt:<subject>`): rate limits, budget
    /// and usage. Absent: API keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Box<JwtSpec>>,
    /// The web console at `/<slug>/console/` (models and prices, usage, keys, backend health, a
    /// playground; sign-in with one of the project's API keys, which see there only what their
    /// scopes open). Absent: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleSpec>,
    /// What the project's request spans may hold beyond timings and counts, when the gateway
    /// exports traces. Absent: no prompt or completion text is ever recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<ProjectTracingSpec>,
}

/// The project's web console.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleSpec {
    /// Serve the console. Default true: it shows a key only what the same key reads from the
    /// project's JSON APIs, so it opens nothing new; `false` answers 404 at `/<slug>/console/`.
    #[serde(default = "default_console_enabled")]
    pub enabled: bool,
}

fn default_console_enabled() -> bool {
    true
}

/// Traces of a project's requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectTracingSpec {
    /// Record the chat messages sent and the text answered (streamed answers too) on each
    /// sampled request span, as the OpenTelemetry GenAI attributes `gen_ai.input.messages` and
    /// `gen_ai.output.messages`: at most 16 KiB of text each, cut there (and
    /// `sluice.content.truncated` set). Prompts and answers may hold personal data: whoever
    /// reads the traces reads them. Keys and credentials are never recorded. Default false.
    #[serde(default)]
    pub record_content: bool,
}

/// JWT bearer authentication: whose tokens are accepted, with which keys and algorithms, and
/// how their claims map to scopes, tier and budget subject.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    /// The `iss` a token must carry, exactly.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// Accepted audiences: a token's `aud` (a string or a list) must name at least one.
    #[schemars(length(min = 1, max = 16))]
    pub audiences: Vec<String>,
    /// Where the issuer's public keys (a JSON Web Key Set) are.
    pub jwks: JwksSpec,
    /// Signature algorithms accepted. A token must use one of them that also fits its key's
    /// type (an RSA key never checks an ECDSA or HMAC signature). HMAC (`HS*`) and `none` are
    /// never accepted. Default: RS256 and ES256.
    #[serde(default = "default_jwt_algorithms")]
    #[schemars(length(min = 1, max = 9))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Seconds of clock difference tolerated on `exp`, `nbf` and `iat`. Default 60.
    #[serde(default = "default_clock_skew_seconds")]
    #[schemars(range(max = 600))]
    pub clock_skew_seconds: u32,
    /// The claim holding the token's scopes: a space-separated string or a list of strings.
    /// Values naming Sluice scopes (`inference`, `models.read`, `usage.read`, `management`)
    /// grant them; other values are ignored. Default `scope`.
    #[serde(default = "default_scopes_claim")]
    #[schemars(length(min = 1, max = 256))]
    pub scopes_claim: String,
    /// Scopes of a token without the scopes claim. Default `[inference]`.
    #[serde(default = "default_jwt_scopes")]
    pub default_scopes: Vec<Scope>,
    /// The claim naming the ServiceTier a token runs under. A value naming no ServiceTier (or a
    /// token without the claim) runs under the endpoint's tier, else the project's default.
    /// Absent: tokens never choose their tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub tier_claim: Option<String>,
    /// The claim naming who the token is for (a string): limits, budget and usage are kept per
    /// value, as `jwt:<value>`. Default `sub`.
    #[serde(default = "default_subject_claim")]
    #[schemars(length(min = 1, max = 256))]
    pub subject_claim: String,
    /// A spending limit for each subject. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// A JSON Web Key Set: from a Secret, or fetched from a URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.url)").message("set exactly one of secretRef and url"))]
pub struct JwksSpec {
    /// A Secret in the Project's namespace holding the JWKS document. Rotate by rewriting it:
    /// the configuration is recompiled and reloaded without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<JwksSecretRef>,
    /// An `https://` URL the gateway fetches the JWKS from (`http://` only to a loopback
    /// address). Fetched at start, every `refreshSeconds`, and when a token names a key id not
    /// in the set (at most once every 30 s); the last good set is kept when a fetch fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// Seconds between fetches of `url`. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub refresh_seconds: Option<u32>,
}

/// A key of a Secret holding a JWKS document.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwksSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The data key holding the document. Default `jwks.json`.
    #[serde(default = "default_jwks_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A JWT signature algorithm the gateway checks (asymmetric only: no `HS*`, no `none`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// Every accepted algorithm.
    pub const ALL: [Self; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The name a JOSE header's `alg` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The algorithm a JOSE `alg` names, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Data key of a JWKS Secret unless `key` says otherwise.
pub const DEFAULT_JWKS_KEY: &str = "jwks.json";
/// Seconds between fetches of a JWKS URL unless `refreshSeconds` says otherwise.
pub const DEFAULT_JWKS_REFRESH_SECONDS: u32 = 300;

fn default_jwt_algorithms() -> Vec<JwtAlgorithm> {
    vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256]
}

fn default_clock_skew_seconds() -> u32 {
    60
}

fn default_scopes_claim() -> String {
    "scope".to_owned()
}

fn default_jwt_scopes() -> Vec<Scope> {
    vec![Scope::Inference]
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_jwks_key() -> String {
    DEFAULT_JWKS_KEY.to_owned()
}

/// Response signing: where the secret is, and how often the operator rotates one it generates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningSpec {
    /// A Secret in the Project's namespace holding the secret in `secret` (at least 32
    /// characters) and, during a rotation, the previous one in `previousSecret` with the instant
    /// it stops signing in `previousSecretExpiresAt` (RFC 3339): both sign until then. Absent:
    /// the operator generates `sluice-signing-<project name>` and rotates it (required without
    /// the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Days between rotations of a generated secret; 0 never rotates. Default 30. Ignored with
    /// `secretName` (you rotate your own Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3650))]
    pub rotation_days: Option<u32>,
    /// Hours the previous generated secret keeps signing after a rotation, so clients can fetch
    /// the new one. Default 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 8760))]
    pub grace_hours: Option<u32>,
}

/// Days between rotations of a generated signing secret unless `rotationDays` says otherwise.
pub const DEFAULT_SIGNING_ROTATION_DAYS: u32 = 30;
/// Hours the previous generated signing secret keeps signing unless `graceHours` says otherwise.
pub const DEFAULT_SIGNING_GRACE_HOURS: u32 = 24;

/// Settings of a project's data plane. Fields left out take the platform's defaults (the
/// chart's `gateway.pod` values); a field set here replaces the default, labels and annotations
/// are added to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataPlaneSpec {
    /// Gateway pods. 0 stops serving the project without deleting it. Ignored while
    /// `autoscaling` is set (the HorizontalPodAutoscaler owns the count).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: u32,
    /// Scale the gateway pods with load: the operator creates a HorizontalPodAutoscaler and stops
    /// setting `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// CPU and memory of each gateway pod. Absent: the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Nodes the gateway pods may run on, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the gateway pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod affinity of the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// Extra labels on the gateway pods (the operator's own labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Extra annotations on the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// How a project's gateway scales.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("maxReplicas must be at least minReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetCpuUtilizationPercent) || has(self.targetInFlightPerPod)").message("set targetCpuUtilizationPercent, targetInFlightPerPod or both"))]
pub struct AutoscalingSpec {
    /// Fewest gateway pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: u32,
    /// Most gateway pods.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: u32,
    /// Average CPU use of the pods, in percent of their CPU request, to scale at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percent: Option<u32>,
    /// Average requests in flight per pod to scale at. Needs the metric
    /// `sluice_requests_in_flight` per pod in the custom metrics API (a Prometheus adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_in_flight_per_pod: Option<u32>,
}

fn default_replicas() -> u32 {
    2
}

impl Default for DataPlaneSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            autoscaling: None,
            resources: None,
            node_selector: None,
            tolerations: None,
            affinity: None,
            priority_class_name: None,
            pod_labels: None,
            pod_annotations: None,
        }
    }
}

/// Observed state of a Project.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// Ready, ReferencesResolved and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Endpoints served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<u32>,
    /// API keys accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u32>,
    /// Content hash of the compiled gateway configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Gateway pods ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}
