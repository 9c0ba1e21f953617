//! `ServiceTier`: the platform's class of service (rate limits, timeouts, prices, priority).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, status::conditions_schema};

/// A class of service that the platform offers to API keys: rate limits, timeouts, a price
/// multiplier, admission priority under overload and default latency targets. Cluster-scoped;
/// Projects, Endpoints and ApiKeys refer to it by name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ServiceTier",
    plural = "servicetiers",
    shortname = "sltier",
    category = "sluice",
    status = "ServiceTierStatus",
    derive = "PartialEq",
    doc = "A class of service: rate limits, timeouts, prices, priority and default latency targets for API keys.",
    printcolumn(name = "RPM", type_ = "integer", json_path = ".spec.limits.requestsPerMinute"),
    printcolumn(name = "TPM", type_ = "integer", json_path = ".spec.limits.tokensPerMinute"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceTierSpec {
    /// One line for humans about who this tier is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// Limits applied to each API key on this tier. Absent limits are unlimited.
    #[serde(default)]
    pub limits: TierLimits,
    /// Timeouts applied to each request on this tier.
    #[serde(default)]
    pub timeouts: TierTimeouts,
    /// Admission priority under overload, from -100 to 100; higher is admitted first. Negative
    /// values mark the traffic as sheddable: it is rejected first when no backend can serve it.
    #[serde(default)]
    #[schemars(range(min = -100, max = 100))]
    pub priority: i32,
    /// Default latency targets for requests that send no `X-SLO-*` hints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloTargets>,
    /// How token prices are turned into what a key is charged.
    #[serde(default)]
    pub pricing: TierPricing,
    /// How many retries and failovers the tier may add on top of its traffic.
    #[serde(default)]
    pub retry_budget: RetryBudget,
}

/// Per-key rate limits. Each limit is counted per API key over a sliding minute.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierLimits {
    /// Requests per minute. Absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt plus completion) per minute. Absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000_000u64))]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once. Absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_concurrent: Option<u32>,
}

/// Request timeouts, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierTimeouts {
    /// Longest wait for the upstream's first byte (time to first token); past it the gateway fails
    /// over to the next backend or answers 504.
    #[serde(default = "default_first_token_ms")]
    #[schemars(range(min = 100, max = 3_600_000))]
    pub first_token_ms: u32,
    /// Longest a whole request may take, streaming included.
    #[serde(default = "default_total_ms")]
    #[schemars(range(min = 100, max = 86_400_000))]
    pub total_ms: u32,
    /// Longest silence between two chunks of a stream before the gateway ends it.
    #[serde(default = "default_idle_stream_ms")]
    #[schemars(range(min = 100, max = 3_600_000))]
    pub idle_stream_ms: u32,
}

fn default_first_token_ms() -> u32 {
    60_000
}
fn default_total_ms() -> u32 {
    600_000
}
fn default_idle_stream_ms() -> u32 {
    60_000
}

impl Default for TierTimeouts {
    fn default() -> Self {
        Self {
            first_token_ms: default_first_token_ms(),
            total_ms: default_total_ms(),
            idle_stream_ms: default_idle_stream_ms(),
        }
    }
}

/// Latency targets, in milliseconds, used when a request sends no `X-SLO-TTFT-Ms` / `X-SLO-TPOT-Ms`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SloTargets {
    /// Target time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub ttft_ms: Option<u32>,
    /// Target time per output token after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60_000))]
    pub tpot_ms: Option<u32>,
}

/// Price adjustments for the tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierPricing {
    /// Factor applied to the Provider's token prices when charging a key's budget (1 = list price).
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub multiplier: f64,
}

fn default_multiplier() -> f64 {
    1.0
}

impl Default for TierPricing {
    fn default() -> Self {
        Self { multiplier: default_multiplier() }
    }
}

/// A retry budget in the style of Envoy and Finagle: retries may add at most `percent` of the
/// tier's requests, but never fewer than `minRetriesPerSecond`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries as a percentage of requests.
    #[serde(default = "default_retry_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: u32,
    /// Retries always allowed per second, whatever the percentage gives.
    #[serde(default = "default_min_retries_per_second")]
    #[schemars(range(min = 0, max = 10_000))]
    pub min_retries_per_second: u32,
}

fn default_retry_percent() -> u32 {
    20
}
fn default_min_retries_per_second() -> u32 {
    10
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { percent: default_retry_percent(), min_retries_per_second: default_min_retries_per_second() }
    }
}

/// Observed state of a ServiceTier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTierStatus {
    /// Ready, ReferencesResolved and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of Projects that use this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<u32>,
}
