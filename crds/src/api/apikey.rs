//! `ApiKey`: a credential for a project's endpoints, with scopes, allow-lists, expiry and budget.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, status::conditions_schema};

/// An API key for the endpoints of the Project in this namespace. The operator generates the key
/// (`sl_<project>_<random>`) into a Secret readable by the tenant, unless `secretRef` brings key
/// material of your own or `keyHash` holds only the hash of a key minted by the management API
/// or `kubectl sluice`; only its SHA-256 reaches the gateway.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    namespaced,
    shortname = "slkey",
    category = "sluice",
    status = "ApiKeyStatus",
    derive = "PartialEq",
    doc = "An API key for a project's endpoints: scopes, endpoint and model allow-lists, expiry, source IPs, budget, rotation.",
    printcolumn(name = "Prefix", type_ = "string", json_path = ".status.keyPrefix"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySpec {
    /// One line for humans: who holds this key and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// What the key may do. `inference` calls model APIs and lists models; `models.read` only
    /// lists models; `usage.read` reads the project's usage (`GET /<project>/v1/usage`). Any
    /// key may read its own (`GET /<project>/v1/keys/self`).
    #[serde(default = "default_scopes")]
    #[schemars(length(min = 1, max = 8))]
    pub scopes: Vec<Scope>,
    /// Endpoint slugs the key may call. Absent: every endpoint of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub endpoints: Option<Vec<String>>,
    /// Model names (or aliases) the key may use. Absent: every model of the allowed endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub models: Option<Vec<String>>,
    /// ServiceTier for this key, overriding the Endpoint's and the Project's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tier: Option<String>,
    /// When the key stops working (RFC 3339). Absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Source addresses allowed to use the key, as CIDRs (`10.0.0.0/8`, `2001:db8::/32`). Absent:
    /// any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Spending limit; requests past it get `402`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Key material of your own (for GitOps with sealed or external secrets) instead of a
    /// generated key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeySecretRef>,
    /// A key stored only as its SHA-256, as the management API (`POST /<project>/v1/keys`) and
    /// `kubectl sluice keys create` write it: they show the key once and no Secret ever holds
    /// it. Excludes `secretRef` and `rotation`: such a key is rotated by writing a new hash,
    /// with `previous` working until its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<HashedKey>,
    /// Rotation: change `requestedAt` to issue a new key; the old one keeps working for
    /// `gracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotation>,
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Inference]
}

/// A permission of an API key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum Scope {
    /// Call the model APIs (chat, completions, embeddings, rerank) and list models.
    #[serde(rename = "inference")]
    Inference,
    /// List models only.
    #[serde(rename = "models.read")]
    ModelsRead,
    /// Read the usage of every key of the project, by endpoint and model (`/v1/usage`).
    #[serde(rename = "usage.read")]
    UsageRead,
    /// Manage the project's keys (`/v1/keys`, which also reads every key's usage, as
    /// `usage.read` does) and read its security settings, such as the response-signing secret
    /// (`/v1/security/signing-secret`). Grants no inference.
    #[serde(rename = "management")]
    Management,
}

impl Scope {
    /// The name used in manifests and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inference => "inference",
            Self::ModelsRead => "models.read",
            Self::UsageRead => "usage.read",
            Self::Management => "management",
        }
    }
}

/// A spending limit in US dollars over a period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// Most the key may spend per period, in US dollars, at the tier's prices.
    #[schemars(range(min = 0.0, max = 1_000_000_000.0))]
    pub limit_usd: f64,
    /// The period after which spending starts again from zero (UTC calendar periods).
    #[serde(default)]
    pub period: BudgetPeriod,
}

/// Budget period.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BudgetPeriod {
    /// Resets at 00:00 UTC.
    Daily,
    /// Resets on the 1st of each month at 00:00 UTC.
    #[default]
    Monthly,
    /// Never resets.
    Total,
}

impl BudgetPeriod {
    /// The id of the period `now` is in (UTC), as usage reports write it: `daily:YYYY-MM-DD`,
    /// `monthly:YYYY-MM` or `total`. The gateway writes it and the operator reads it.
    pub fn period_id(self, now: jiff::Timestamp) -> String {
        let date = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        match self {
            Self::Daily => format!("daily:{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
            Self::Monthly => format!("monthly:{:04}-{:02}", date.year(), date.month()),
            Self::Total => "total".to_owned(),
        }
    }
}

/// Key material from a Secret in the ApiKey's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret holding the API key.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The Secret key that holds API key material, unless `secretRef.key` says otherwise.
pub fn default_secret_key() -> String {
    "key".to_owned()
}

/// The hash of a minted key: what `spec.keyHash` holds instead of key material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashedKey {
    /// Lowercase hex SHA-256 of the key as clients send it.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// The key's first characters (`sl_demo_AbC1`), to tell keys apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
    /// When the key was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// The key this one replaced, still working until its `expiresAt` (a rotation's grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousHashedKey>,
}

/// The replaced key of a rotated `spec.keyHash`, during its grace period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviousHashedKey {
    /// Lowercase hex SHA-256 of the previous key.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// The previous key's first characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
    /// When the previous key stops working.
    pub expires_at: Time,
}

/// A rotation request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRotation {
    /// When rotation was requested; setting a newer time issues a new key.
    pub requested_at: Time,
    /// How long the previous key keeps working after a rotation, in seconds (default 24 h).
    #[serde(default = "default_grace_period_seconds")]
    #[schemars(range(min = 0, max = 2_592_000))]
    pub grace_period_seconds: u32,
}

fn default_grace_period_seconds() -> u32 {
    86_400
}

/// Observed state of an ApiKey. Never holds key material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// Ready, ReferencesResolved and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The key's first characters (`sl_demo_AbC1`), to tell keys apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// The Secret in this namespace that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the current key was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// When the current key replaced the previous one (answering a rotation request); absent
    /// for a first key. Never before `issuedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Time>,
    /// When the previous key stops working, during a rotation's grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key_expires_at: Option<Time>,
    /// Spending in the current budget period, in US dollars, as the data plane reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period_spend_usd: Option<f64>,
}
