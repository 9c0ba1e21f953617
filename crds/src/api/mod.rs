//! The `sluice.dev/v1alpha1` API: the five custom resource kinds users declare.
//!
//! Doc comments on these types become the schema descriptions that `kubectl explain` shows, so
//! they are written for users, not for Rust readers.

// Clippy reads kube's repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod apikey;
mod content_policy;
mod endpoint;
mod project;
mod provider;
mod reference_types;
mod service_tier;
mod status;

pub use apikey::{
    ApiKey, ApiKeySpec, ApiKeyStatus, Budget, BudgetPeriod, HashedKey, KeyRotation, KeySecretRef, PreviousHashedKey,
    Scope, default_secret_key,
};
pub use content_policy::{
    ContentRuleMode, ContentRulesSpec, PATTERN_SIZE_LIMIT, RedactionKind, RedactionSpec, compile_pattern,
    content_rule_problems,
};
pub use endpoint::{
    ApiKind, Backend, Endpoint, EndpointLimits, EndpointSpec, EndpointStatus, ExposedModel, ModelAlias, RoutingPolicy,
    RoutingSpec,
};
pub use project::{
    AutoscalingSpec, ConsoleSpec, DEFAULT_JWKS_KEY, DEFAULT_JWKS_REFRESH_SECONDS, DEFAULT_SIGNING_GRACE_HOURS,
    DEFAULT_SIGNING_ROTATION_DAYS, DataPlaneSpec, JwksSecretRef, JwksSpec, JwtAlgorithm, JwtSpec, Project, ProjectSpec,
    ProjectStatus, ProjectTracingSpec, SigningSpec,
};
pub use provider::{
    BundleKeySelector, CaBundleSource, Capability, ClientCertificateRef, ModelPricing, PodMetrics, PodScheme, Provider,
    ProviderCredentials, ProviderModel, ProviderService, ProviderSpec, ProviderStatus, ProviderTls, ProviderType,
    SimulationSpec, default_ca_key,
};
pub use reference_types::{ProviderRef, SecretKeySelector};
pub use service_tier::{
    RetryBudget, ServiceTier, ServiceTierSpec, ServiceTierStatus, SloTargets, TierLimits, TierPricing, TierTimeouts,
};
pub use status::Condition;

/// The API group of every Sluice kind.
pub const GROUP: &str = "sluice.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";

/// A DNS label (RFC 1123): what Kubernetes accepts as a namespace name, and what Sluice accepts as
/// a URL segment.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Names of models as clients send them (`gpt-4o-mini`, `Qwen/Qwen2.5-7B-Instruct`, `glm-4.5`).
pub const MODEL_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$";

/// Endpoint slugs that would shadow project-level APIs (`/<project>/v1/...`) or the web console
/// (`/<project>/console/`).
pub const RESERVED_ENDPOINT_SLUGS: &[&str] = &["v1", "v1beta", "console"];
