//! `Endpoint`: a URL under a project that exposes models, each backed by one or more Providers.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::{Condition, ContentRulesSpec, ProviderRef, RedactionSpec, status::conditions_schema};

/// A set of models served at `/<project>/<endpoint>/v1/...`. Each exposed model has aliases and
/// an ordered list of backends (Provider models) with weights and failover priorities.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Endpoint",
    plural = "endpoints",
    namespaced,
    shortname = "slep",
    category = "sluice",
    status = "EndpointStatus",
    derive = "PartialEq",
    doc = "Models served at /<project>/<endpoint>/v1, each with aliases and weighted, prioritised backends.",
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".status.tier"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    /// The URL segment after the project: `/<project>/<slug>/v1`. A DNS label; `v1` and `v1beta`
    /// are reserved for project-level APIs and `console` for the web console. Immutable: clients
    /// have it in their configuration.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(min = 1, max = 63))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("slug is immutable"),
        validation = Rule::new("!(self in ['v1', 'v1beta', 'console'])").message("slugs v1, v1beta and console are reserved for project-level APIs and the console")
    )]
    pub slug: String,
    /// One line for humans about what this endpoint is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// ServiceTier for keys calling this endpoint, unless the key names its own. Absent: the
    /// Project's default tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tier: Option<String>,
    /// The models clients may ask for, by name or alias.
    #[schemars(length(min = 1, max = 256))]
    pub models: Vec<ExposedModel>,
    /// How a request picks among a model's backends.
    #[serde(default)]
    pub routing: RoutingSpec,
    /// Limits on requests to this endpoint.
    #[serde(default)]
    pub limits: EndpointLimits,
    /// APIs this endpoint serves. Absent: all of them. `GET /v1/models` is always served. A list
    /// that names none of `messages`, `responses` and `gemini` serves them with
    /// `chatCompletions`, as before they had values of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub apis: Option<Vec<ApiKind>>,
    /// The model a request that names none gets: a name or alias of `models`. Absent: a request
    /// without `model` is refused with `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"), length(min = 1, max = 256))]
    pub default_model: Option<String>,
    /// Parameters a chat request gets for each field it does not send itself, by OpenAI's
    /// names, like `{"temperature": 0.2, "max_tokens": 512}`. They fill in the chat completions
    /// request: the client's own, or the gateway's translation of a Messages, Responses or
    /// Gemini request. Values are numbers, strings, booleans or lists of them; at most 32
    /// fields and 4 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "default_parameters_schema")]
    pub default_parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// Personal data and secrets replaced by placeholders in prompts before they leave the
    /// gateway, optionally restored in the answer. Absent: prompts go as they came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<RedactionSpec>,
    /// Phrases, regular expressions and prompt-injection heuristics that refuse a request with
    /// `422` (or, in `dryRun` mode, only count it). Absent: no content rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_rules: Option<ContentRulesSpec>,
}

/// Schema of `spec.defaultParameters` (its description is the field's doc comment): an object of
/// any JSON values. The compiler checks that they are scalars or lists of scalars, which a
/// structural schema cannot say.
fn default_parameters_schema(_: &mut SchemaGenerator) -> Schema {
    let mut schema = Schema::default();
    schema.insert("type".into(), "object".into());
    schema.insert("nullable".into(), true.into());
    schema.insert("maxProperties".into(), 32.into());
    schema.insert("additionalProperties".into(), serde_json::json!({"x-kubernetes-preserve-unknown-fields": true}));
    schema
}

/// A model as clients see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExposedModel {
    /// The name clients send in the `model` field.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"), length(min = 1, max = 256))]
    pub name: String,
    /// `owned_by` in `GET /v1/models`. Absent: the Provider of the first backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub owned_by: Option<String>,
    /// Other names that resolve to this model, for renames and migrations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub aliases: Vec<ModelAlias>,
    /// Where requests for this model go. The lowest `priority` value is tried first; within a
    /// priority, backends share traffic by `weight`; the next priority takes over when every
    /// backend of the previous one failed before sending a byte.
    #[schemars(length(min = 1, max = 64))]
    pub backends: Vec<Backend>,
}

/// Another name for an exposed model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelAlias {
    /// The alias clients may send in the `model` field.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"), length(min = 1, max = 256))]
    pub name: String,
    /// Marks the alias as deprecated: responses carry a `Deprecation` header naming the model to
    /// move to. Implied by `sunset`.
    #[serde(default)]
    pub deprecated: bool,
    /// When the alias stops working (RFC 3339). Until then responses carry `Deprecation` and
    /// `Sunset` headers; afterwards requests get `404 model_not_found` naming the model to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// One upstream model serving an exposed model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// The Provider to call.
    pub provider_ref: ProviderRef,
    /// The model's name at that Provider (one of its `spec.models[].name`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"), length(min = 1, max = 256))]
    pub model: String,
    /// Share of traffic among backends of the same priority (default 1). 0 takes no traffic while
    /// another backend of the priority is healthy.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: u32,
    /// Failover order: 0 (the default) is tried first, then 1, and so on.
    #[serde(default)]
    #[schemars(range(min = 0, max = 9))]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

/// How requests choose a backend within a priority.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingSpec {
    /// `sloAware` (default): the backend predicted to meet the request's `X-SLO-TTFT-Ms` /
    /// `X-SLO-TPOT-Ms` hints (or the tier's), preferring the one holding the prompt's prefix, then
    /// the cheaper, then the less busy. `leastRequest`: of two backends drawn by weight, the one
    /// with fewer requests in flight. `weighted`: random choice by weight. `roundRobin`: each in
    /// turn. `priorityFailover`: the first listed, the others only when it fails. `queueScore`: a
    /// benchmark baseline scoring queue depth and prefix like llm-d's default scorer.
    #[serde(default)]
    pub policy: RoutingPolicy,
}

/// How a request chooses among a model's backends. Priorities always fail over in order: every
/// policy orders the backends within one priority, and the next priority is tried only when all
/// of them failed or were ejected. A backend whose ejection is over is probed first, whatever the
/// policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RoutingPolicy {
    /// Predicts each backend's time to first token and per output token for this request (from
    /// what it was seen to take at the load it would have), keeps those predicted to meet the
    /// request's SLO hints (and the tightest per-token hint already running there) with headroom,
    /// and among them prefers the one holding the prompt's prefix, then the cheaper, then the less
    /// busy. When none can meet the hints: the smallest predicted miss, or, for a tier with a
    /// negative priority, `429` with `Retry-After`. A small share of requests explores other
    /// backends to keep their measurements fresh.
    #[default]
    SloAware,
    /// Two random choices by weight, then the one with fewer requests in flight.
    LeastRequest,
    /// Random choice in proportion to weight.
    Weighted,
    /// Each backend in turn (weights only put weight-0 backends last).
    RoundRobin,
    /// The first backend listed takes every request; the others only when it fails.
    PriorityFailover,
    /// A benchmark baseline after llm-d's default scorer, with no latency prediction: score = 2 x
    /// (fewest requests in flight, normalised) + 3 x (holds the prompt's prefix), highest first.
    /// llm-d also weighs KV-cache use (2), which the gateway does not know per backend yet.
    QueueScore,
}

/// Request limits of an endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointLimits {
    /// Largest request body in bytes; larger requests get `413`.
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1024, max = 67_108_864))]
    pub max_body_bytes: u32,
    /// Largest `max_tokens` (or `max_completion_tokens`) a request may ask for; larger values get
    /// `400`. Absent: no cap beyond the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_tokens: Option<u32>,
}

fn default_max_body_bytes() -> u32 {
    10 * 1024 * 1024
}

impl Default for EndpointLimits {
    fn default() -> Self {
        Self { max_body_bytes: default_max_body_bytes(), max_tokens: None }
    }
}

/// An API an endpoint can serve.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ApiKind {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/rerank`
    Rerank,
    /// Anthropic's Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`.
    Messages,
    /// OpenAI's Responses API: `POST /v1/responses`.
    Responses,
    /// Gemini's API: `/v1beta/models/{model}:generateContent`, `:streamGenerateContent`,
    /// `:countTokens`, `:embedContent` and `:batchEmbedContents`.
    Gemini,
    /// `POST /v1/images/generations`
    Images,
}

impl ApiKind {
    /// Every API, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Rerank,
        Self::Messages,
        Self::Responses,
        Self::Gemini,
        Self::Images,
    ];

    /// The client protocols the gateway serves by translating them into chat completions. Before
    /// they had values of their own, an endpoint served them when it served `chatCompletions`.
    pub const TRANSLATED: [Self; 3] = [Self::Messages, Self::Responses, Self::Gemini];

    /// The APIs an endpoint whose `apis` is `listed` serves: all of them when it is absent;
    /// otherwise those listed, and, when the list names none of [`ApiKind::TRANSLATED`] (it was
    /// written before they had values), those too if it names `chatCompletions`. Applying it to
    /// its own result changes nothing.
    pub fn served(listed: Option<&[Self]>) -> BTreeSet<Self> {
        let Some(listed) = listed else { return Self::ALL.into_iter().collect() };
        let mut served: BTreeSet<Self> = listed.iter().copied().collect();
        let names_translated = Self::TRANSLATED.iter().any(|kind| served.contains(kind));
        if !names_translated && served.contains(&Self::ChatCompletions) {
            served.extend(Self::TRANSLATED);
        }
        served
    }
}

/// Observed state of an Endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// Ready, ReferencesResolved and Degraded conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Base URL for OpenAI SDKs: `<gateway>/<project>/<slug>/v1`; only while the Endpoint is
    /// in its project's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The ServiceTier its requests get: `spec.tier`, else its Project's `defaultTier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_completions_alone_still_serves_the_translated_protocols() {
        use ApiKind::*;
        let served = |listed: &[ApiKind]| ApiKind::served(Some(listed)).into_iter().collect::<Vec<_>>();
        assert_eq!(ApiKind::served(None).into_iter().collect::<Vec<_>>(), ApiKind::ALL);
        assert_eq!(served(&[ChatCompletions]), [ChatCompletions, Messages, Responses, Gemini]);
        assert_eq!(served(&[Embeddings]), [Embeddings]);
        assert_eq!(served(&[ChatCompletions, Messages]), [ChatCompletions, Messages], "naming one names them all");
        assert_eq!(served(&[Gemini, Embeddings]), [Embeddings, Gemini]);
        let once: Vec<ApiKind> = served(&[ChatCompletions, Images]);
        assert_eq!(served(&once), once, "idempotent");
    }

    #[test]
    fn new_values_have_their_documented_spellings() {
        let names: Vec<String> = ApiKind::ALL
            .iter()
            .map(|k| serde_json::to_value(k).ok().and_then(|v| Some(v.as_str()?.to_owned())).unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["chatCompletions", "completions", "embeddings", "rerank", "messages", "responses", "gemini", "images"]
        );
    }
}
