//! `Project`: a tenant, its URL segment and its data plane.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Condition, status::conditions_schema};

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
