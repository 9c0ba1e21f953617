//! The OpenTelemetry GenAI semantic conventions' names for what the gateway serves, shared by
//! traces and metrics so that a span and a series say `chat` and `openai` the same way.
//! Values outside the conventions' lists (rerank, images, a simulated backend) follow their
//! spelling rules.

use sluice_crds::api::ProviderType;

use crate::route::Api;

/// `gen_ai.operation.name` of a call to `api`.
pub fn operation(api: Api) -> &'static str {
    match api {
        Api::ChatCompletions => "chat",
        Api::Completions => "text_completion",
        Api::Embeddings => "embeddings",
        Api::Rerank => "rerank",
        Api::Images => "image_generation",
    }
}

/// `gen_ai.provider.name` of a backend of `kind` (`openai` for every OpenAI-compatible API,
/// as the conventions name the wire protocol's owner when the vendor is unknown).
pub fn provider(kind: ProviderType) -> &'static str {
    match kind {
        ProviderType::Openai => "openai",
        ProviderType::Anthropic => "anthropic",
        ProviderType::Gemini => "gcp.gemini",
        ProviderType::Simulated => "sluice.simulated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        assert_eq!(operation(Api::ChatCompletions), "chat");
        assert_eq!(operation(Api::Embeddings), "embeddings");
        assert_eq!(provider(ProviderType::Gemini), "gcp.gemini");
    }
}
