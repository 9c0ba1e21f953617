//! A backend's profile: every knob of the simulation, with its default in one place
//! ([`Profile::default`]), loaded from YAML or JSON and validated.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, invalid};
use crate::faults::FaultConfig;

/// The model name listed by `/v1/models` when [`Profile::models`] is empty.
pub const DEFAULT_MODEL: &str = "sluice-sim";

/// Every knob of one simulated backend. YAML/JSON field names are camelCase; unknown fields are
/// rejected. The defaults model a 7-8B model on one modern GPU (TTFT about 50 ms, 10 ms per
/// output token at low load), which looks realistic in streaming demos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Profile {
    /// Model names this backend answers for; a request for another gets 404 `model_not_found`.
    /// Empty (default): any name is accepted and echoed back, and `/v1/models` lists
    /// `sluice-sim`.
    pub models: Vec<String>,
    /// If set, requests must carry this key (`Authorization: Bearer`, `x-api-key`,
    /// `x-goog-api-key` or `?key=`), else 401. Default: none, any or no key is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Fixed part of the time to first token, in ms. Default 40.
    pub prefill_overhead_ms: f64,
    /// Time to first token per uncached prompt token, in ms. Default 0.2.
    pub prefill_per_token_ms: f64,
    /// Time between output tokens, in ms. Default 10.
    pub inter_token_ms: f64,
    /// Sequences processed at once; more requests wait in a queue (FIFO). Default 256.
    pub max_num_seqs: u32,
    /// Latency multiplier when `maxNumSeqs` sequences run at once, interpolated linearly from 1.0
    /// with one sequence. 2.0 (default) = twice as slow at a full batch.
    pub load_slowdown: f64,
    /// Standard deviation of the latency noise, as a fraction of each delay (each delay is
    /// multiplied by `max(0, 1 + jitter * N(0,1))`). Default 0.1.
    pub jitter: f64,
    /// Seed of everything random: generated text, jitter, fault draws, embeddings. Default 0.
    pub seed: u64,
    /// Output tokens when the model stops by itself; `max_tokens` below this cuts the output
    /// (finish reason `length`). Default 64.
    pub output_tokens: u32,
    /// Spread of the natural output length, as a fraction of `outputTokens`: the length is
    /// `outputTokens * (1 + spread * u)` with `u` in [-1, 1] derived from the prompt and seed,
    /// so the same request always gets the same length. Default 0 (always `outputTokens`).
    pub output_tokens_spread: f64,
    /// Always generate exactly `max_tokens` tokens when the request sets it (vLLM's
    /// `ignore_eos`, also accepted per request). Default false.
    pub ignore_eos: bool,
    /// Tokens per prefix-cache block; only whole blocks are cached, as in vLLM. Default 16.
    pub prefix_cache_block_size: u32,
    /// Prefix-cache capacity in blocks (LRU), also the KV-cache size for
    /// `vllm:kv_cache_usage_perc`. 0 disables the cache. Default 32768 (about 520k tokens).
    pub prefix_cache_blocks: u32,
    /// Length of embedding vectors (a request's `dimensions` overrides it). Default 1536.
    pub embedding_dimensions: u32,
    /// Response ids and `created` derived from the seed and the prompt instead of a clock and a
    /// counter, so identical requests give identical bytes. Default false.
    pub deterministic_ids: bool,
    /// Answer text requests with their own last user message (chat, Messages, Gemini) or
    /// prompt (completions) instead of generated text, token by token, so a test can follow a
    /// prompt through a gateway and back, split over stream events as real answers are.
    /// `max_tokens` and stop sequences still cut it; tools and JSON mode are unchanged; a request
    /// with no user text gets generated text. Default false.
    pub echo: bool,
    /// Keep the last N inference request bodies received, for `GET /_sim/requests` (what a
    /// gateway really sent upstream); 0 keeps none and costs nothing. At most
    /// [`MAX_RECORDED_REQUESTS`]. Default 0.
    pub record_requests: u32,
    /// Faults injected at start; `POST /_sim/faults` replaces them at run time. Default: none.
    pub faults: FaultConfig,
}

/// Most request bodies `recordRequests` may keep.
pub const MAX_RECORDED_REQUESTS: u32 = 10_000;

impl Default for Profile {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            api_key: None,
            prefill_overhead_ms: 40.0,
            prefill_per_token_ms: 0.2,
            inter_token_ms: 10.0,
            max_num_seqs: 256,
            load_slowdown: 2.0,
            jitter: 0.1,
            seed: 0,
            output_tokens: 64,
            output_tokens_spread: 0.0,
            ignore_eos: false,
            prefix_cache_block_size: 16,
            prefix_cache_blocks: 32_768,
            embedding_dimensions: 1536,
            deterministic_ids: false,
            echo: false,
            record_requests: 0,
            faults: FaultConfig::default(),
        }
    }
}

impl Profile {
    /// A profile with no latency at all, for throughput benchmarks of a gateway: no timer is
    /// ever armed.
    pub fn instant() -> Self {
        Self {
            prefill_overhead_ms: 0.0,
            prefill_per_token_ms: 0.0,
            inter_token_ms: 0.0,
            jitter: 0.0,
            ..Self::default()
        }
    }

    /// Parses a profile from YAML (JSON is YAML too) and validates it; `what` names the source in
    /// errors.
    pub fn from_yaml(text: &str, what: &str) -> Result<Self> {
        let profile: Self =
            serde_saphyr::from_str(text).map_err(|e| Error::Parse { what: what.to_owned(), message: e.to_string() })?;
        profile.validate()?;
        Ok(profile)
    }

    /// Reads, parses and validates a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Checks every knob; the message names the field.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("prefillOverheadMs", self.prefill_overhead_ms),
            ("prefillPerTokenMs", self.prefill_per_token_ms),
            ("interTokenMs", self.inter_token_ms),
        ] {
            if !(value.is_finite() && (0.0..=3_600_000.0).contains(&value)) {
                return Err(invalid("profile", format!("{name} {value} is not 0-3600000")));
            }
        }
        let checks = [
            (self.max_num_seqs >= 1, "maxNumSeqs must be at least 1"),
            (self.load_slowdown.is_finite() && self.load_slowdown > 0.0, "loadSlowdown must be a number above 0"),
            ((0.0..=1.0).contains(&self.jitter), "jitter must be 0-1"),
            (self.output_tokens >= 1, "outputTokens must be at least 1"),
            ((0.0..1.0).contains(&self.output_tokens_spread), "outputTokensSpread must be in [0, 1)"),
            (self.prefix_cache_block_size >= 1, "prefixCacheBlockSize must be at least 1"),
            ((1..=65_536).contains(&self.embedding_dimensions), "embeddingDimensions must be 1-65536"),
            (self.models.iter().all(|m| !m.is_empty()), "models must not contain an empty name"),
            (self.record_requests <= MAX_RECORDED_REQUESTS, "recordRequests must be at most 10000"),
        ];
        if let Some((_, message)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(invalid("profile", *message));
        }
        self.faults.validate()
    }

    /// The models listed by `/v1/models`.
    pub fn listed_models(&self) -> Vec<&str> {
        if self.models.is_empty() { vec![DEFAULT_MODEL] } else { self.models.iter().map(String::as_str).collect() }
    }

    /// Whether a request for `model` is served.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(Profile::from_yaml("{}", "test").ok(), Some(Profile::default()));
        Profile::default().validate().expect("defaults are valid");
        Profile::instant().validate().expect("instant is valid");
    }

    #[test]
    fn camel_case_fields_and_nested_faults() {
        let yaml = "interTokenMs: 25\nmaxNumSeqs: 8\nmodels: [a, b]\nfaults:\n  errors:\n    - {status: 503, rate: 0.5}\n  hangMs: 100\n";
        let profile = Profile::from_yaml(yaml, "test").expect("parses");
        assert_eq!(profile.inter_token_ms, 25.0);
        assert_eq!(profile.max_num_seqs, 8);
        assert_eq!(profile.faults.errors[0].status, 503);
        assert_eq!(profile.faults.hang_ms, 100);
        assert!(profile.serves("a") && !profile.serves("c"));
        assert_eq!(profile.listed_models(), ["a", "b"]);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Profile::from_yaml("interTokenMS: 3\n", "test").expect_err("typo");
        assert!(err.to_string().contains("interTokenMS"), "{err}");
        let err = Profile::from_yaml("faults: {hangRates: 1}\n", "test").expect_err("typo");
        assert!(err.to_string().contains("hangRates"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let err = Profile::from_yaml("maxNumSeqs: 0\n", "test").expect_err("zero");
        assert!(err.to_string().contains("maxNumSeqs"), "{err}");
        let err = Profile::from_yaml("interTokenMs: -1\n", "test").expect_err("negative");
        assert!(err.to_string().contains("interTokenMs"), "{err}");
    }

    #[test]
    fn shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("profiles/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Profile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "expected the three documented profiles");
    }
}
