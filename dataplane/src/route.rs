//! What a request asks for, from its path and method alone: `/<project>/<endpoint>/v1/<api>`
//! (or Gemini's `/v1beta/models...`), which API that is, the method each route takes, and the
//! wire format the client speaks. Project-level APIs live at `/<project>/v1/...` (Endpoint
//! slugs `v1` and `v1beta` are reserved for them, so the two never meet).

use hyper::Method;
use sluice_crds::compile::is_dns_label;

use crate::error::ApiError;

/// The APIs the gateway forwards, with their path below the provider's base URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// `/chat/completions`
    ChatCompletions,
    /// `/completions`
    Completions,
    /// `/embeddings`
    Embeddings,
    /// `/rerank`
    Rerank,
    /// `/images/generations`
    Images,
}

impl Api {
    /// Every API, in a fixed order (an index into per-API tables).
    pub const ALL: [Self; 5] = [Self::ChatCompletions, Self::Completions, Self::Embeddings, Self::Rerank, Self::Images];

    /// Path below `.../v1`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Rerank => "/rerank",
            Self::Images => "/images/generations",
        }
    }

    /// Path as clients see it, for messages.
    pub fn display(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Rerank => "/v1/rerank",
            Self::Images => "/v1/images/generations",
        }
    }

    /// Position in [`Api::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The configuration's name for it.
    pub fn kind(self) -> sluice_crds::api::ApiKind {
        use sluice_crds::api::ApiKind;
        match self {
            Self::ChatCompletions => ApiKind::ChatCompletions,
            Self::Completions => ApiKind::Completions,
            Self::Embeddings => ApiKind::Embeddings,
            Self::Rerank => ApiKind::Rerank,
            Self::Images => ApiKind::Images,
        }
    }

    /// The model capability it needs.
    pub fn capability(self) -> sluice_crds::api::Capability {
        use sluice_crds::api::Capability;
        match self {
            Self::ChatCompletions => Capability::Chat,
            Self::Completions => Capability::Completions,
            Self::Embeddings => Capability::Embeddings,
            Self::Rerank => Capability::Rerank,
            Self::Images => Capability::Images,
        }
    }
}

/// What the path asks for below `/v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'p> {
    /// A model call, forwarded upstream.
    Api(Api),
    /// `POST /v1/messages`: Anthropic's Messages API, served as a chat completion.
    Messages,
    /// `POST /v1/messages/count_tokens`: answered by the gateway.
    CountTokens,
    /// `GET /v1/models`.
    ListModels,
    /// `GET /v1/models/{id}`.
    GetModel(&'p str),
    /// `POST /v1/responses`: OpenAI's Responses API, served as a chat completion.
    Responses,
    /// `POST /v1beta/models/{model}:{method}`: Gemini's API, served as a chat completion (or as
    /// embeddings, for `embedContent`; or answered by the gateway, for `countTokens`).
    Gemini {
        /// The model in the path (without `models/`).
        model: &'p str,
        /// What is asked of it.
        method: GeminiMethod,
    },
    /// `GET /v1beta/models`.
    GeminiListModels,
    /// `GET /v1beta/models/{model}`.
    GeminiGetModel(&'p str),
}

/// The methods of Gemini's `models/{model}` resource the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeminiMethod {
    /// `:generateContent`.
    Generate,
    /// `:streamGenerateContent` (with `?alt=sse`).
    StreamGenerate,
    /// `:countTokens`: answered by the gateway.
    CountTokens,
    /// `:embedContent`: one embedding.
    EmbedContent,
    /// `:batchEmbedContents`: several embeddings.
    BatchEmbedContents,
}

impl Route<'_> {
    /// The wire format its clients speak.
    pub fn wire(self) -> Wire {
        match self {
            Self::Api(_) | Self::ListModels | Self::GetModel(_) => Wire::OpenAi,
            Self::Messages | Self::CountTokens => Wire::Anthropic,
            Self::Responses => Wire::Responses,
            Self::Gemini { .. } | Self::GeminiListModels | Self::GeminiGetModel(_) => Wire::Gemini,
        }
    }

    /// Model calls are `POST`s; the model list is read with `GET`.
    pub fn check_method(self, method: &Method) -> Result<(), ApiError> {
        let expected = match self {
            Self::Api(_) | Self::Messages | Self::CountTokens | Self::Responses | Self::Gemini { .. } => Method::POST,
            Self::ListModels | Self::GetModel(_) | Self::GeminiListModels | Self::GeminiGetModel(_) => Method::GET,
        };
        if *method == expected { Ok(()) } else { Err(ApiError::MethodNotAllowed(method.to_string())) }
    }
}

/// The wire format a client speaks: OpenAI's chat completions everywhere but on Anthropic's
/// Messages paths, Gemini's `/v1beta` paths and OpenAI's Responses path. Known from the path
/// alone, so that a refusal before the key is checked is already written in the client's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's request, response and error shapes.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Gemini's API (Google's error shape).
    Gemini,
    /// OpenAI's Responses API (OpenAI's error shape).
    Responses,
}

impl Wire {
    /// The format of a request to `path`: its route's, when it has one (a project or model
    /// named `v1beta`, or a model id ending in `/v1/messages`, changes nothing); else a guess
    /// from how the path ends, so that even a 404 answers in the client's format.
    pub fn of_path(path: &str) -> Self {
        if let Some(target) = parse_path(path) {
            return target.route.wire();
        }
        if parse_project_path(path).is_some() {
            return Self::OpenAi;
        }
        if path.ends_with("/v1/messages") || path.ends_with("/v1/messages/count_tokens") {
            Self::Anthropic
        } else if path.ends_with("/v1/responses") {
            Self::Responses
        } else if path.contains("/v1beta/")
            || path.ends_with("/v1beta")
            || [":generateContent", ":streamGenerateContent", ":countTokens", ":embedContent", ":batchEmbedContents"]
                .iter()
                .any(|m| path.ends_with(m))
        {
            Self::Gemini
        } else {
            Self::OpenAi
        }
    }
}

/// A request's path, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'p> {
    /// Project slug.
    pub project: &'p str,
    /// Endpoint slug.
    pub endpoint: &'p str,
    /// What it asks the endpoint for.
    pub route: Route<'p>,
}

/// Splits `/<project>/<endpoint>/v1/<api>` (and `.../v1beta/models...`); `None` for any other
/// path.
pub fn parse_path(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix('/')?;
    let (project, rest) = rest.split_once('/')?;
    let (endpoint, rest) = rest.split_once('/')?;
    if let Some(gemini) = rest.strip_prefix("v1beta/") {
        let route = gemini_route(gemini)?;
        return (!project.is_empty() && !endpoint.is_empty()).then_some(Target { project, endpoint, route });
    }
    let api = rest.strip_prefix("v1/")?;
    let route = match api {
        "chat/completions" => Route::Api(Api::ChatCompletions),
        "completions" => Route::Api(Api::Completions),
        "embeddings" => Route::Api(Api::Embeddings),
        "rerank" => Route::Api(Api::Rerank),
        "images/generations" => Route::Api(Api::Images),
        "messages" => Route::Messages,
        "messages/count_tokens" => Route::CountTokens,
        "responses" => Route::Responses,
        "models" => Route::ListModels,
        // Google's SDKs call `/v1/models/{model}:generateContent` too (its stable version).
        other => match gemini_route(other) {
            Some(gemini @ Route::Gemini { .. }) => gemini,
            _ => Route::GetModel(other.strip_prefix("models/").filter(|id| !id.is_empty())?),
        },
    };
    (!project.is_empty() && !endpoint.is_empty()).then_some(Target { project, endpoint, route })
}

/// A project-level API: `/<project>/v1/<what>`, about the key or the project rather than a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectRoute<'p> {
    /// `GET /<project>/v1/keys/self`: the calling key, its limits and its usage.
    KeySelf,
    /// `GET /<project>/v1/usage`: the project's usage by key, endpoint and model.
    Usage,
    /// `GET /<project>/v1/security/signing-secret`: the secrets that sign its responses.
    SigningSecret,
    /// `GET|POST /<project>/v1/keys`: list or create keys.
    Keys,
    /// `GET|PATCH|DELETE /<project>/v1/keys/{name}`: one key.
    Key(&'p str),
    /// `POST /<project>/v1/keys/{name}/rotate`: a new key, the old one kept for a grace period.
    RotateKey(&'p str),
    /// `GET /<project>/v1/keys/self/daily`: the calling key's usage by day and model.
    KeySelfDaily,
    /// `GET /<project>/v1/usage/daily`: every key's usage by day, key and model.
    UsageDaily,
    /// `GET /<project>/v1/catalog`: the endpoints and models the key may use, with prices.
    Catalog,
    /// `GET /<project>/v1/health`: the live state of the backends behind those endpoints.
    Health,
}

impl ProjectRoute<'_> {
    /// Path as clients see it, for messages (a key's name left out: it is the caller's input).
    pub fn display(self) -> &'static str {
        match self {
            Self::KeySelf => "/v1/keys/self",
            Self::Usage => "/v1/usage",
            Self::SigningSecret => "/v1/security/signing-secret",
            Self::Keys => "/v1/keys",
            Self::Key(_) => "/v1/keys/{name}",
            Self::RotateKey(_) => "/v1/keys/{name}/rotate",
            Self::KeySelfDaily => "/v1/keys/self/daily",
            Self::UsageDaily => "/v1/usage/daily",
            Self::Catalog => "/v1/catalog",
            Self::Health => "/v1/health",
        }
    }

    /// Checks the method: the key APIs read and write, the rest are read with `GET`.
    pub fn check_method(self, method: &Method) -> Result<(), ApiError> {
        let allowed = match self {
            Self::KeySelf
            | Self::Usage
            | Self::SigningSecret
            | Self::KeySelfDaily
            | Self::UsageDaily
            | Self::Catalog
            | Self::Health => *method == Method::GET,
            Self::Keys => *method == Method::GET || *method == Method::POST,
            Self::Key(_) => *method == Method::GET || *method == Method::PATCH || *method == Method::DELETE,
            Self::RotateKey(_) => *method == Method::POST,
        };
        if allowed { Ok(()) } else { Err(ApiError::MethodNotAllowed(method.to_string())) }
    }
}

/// A project-level path, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectTarget<'p> {
    /// Project slug.
    pub project: &'p str,
    /// What it asks for.
    pub route: ProjectRoute<'p>,
}

/// Splits `/<project>/v1/keys/self[/daily]`, `/<project>/v1/usage[/daily]`,
/// `/<project>/v1/security/signing-secret`, `/<project>/v1/catalog`, `/<project>/v1/health` and
/// the key APIs (`/<project>/v1/keys[/{name}[/rotate]]`,
/// a name being a DNS label); `None` for any other path.
pub fn parse_project_path(path: &str) -> Option<ProjectTarget<'_>> {
    let rest = path.strip_prefix('/')?;
    let (project, rest) = rest.split_once('/')?;
    let route = match rest {
        "v1/keys/self" => ProjectRoute::KeySelf,
        "v1/usage" => ProjectRoute::Usage,
        "v1/security/signing-secret" => ProjectRoute::SigningSecret,
        "v1/keys" => ProjectRoute::Keys,
        "v1/keys/self/daily" => ProjectRoute::KeySelfDaily,
        "v1/usage/daily" => ProjectRoute::UsageDaily,
        "v1/catalog" => ProjectRoute::Catalog,
        "v1/health" => ProjectRoute::Health,
        _ => {
            let key = rest.strip_prefix("v1/keys/")?;
            match key.split_once('/') {
                None => ProjectRoute::Key(key),
                Some((name, "rotate")) => ProjectRoute::RotateKey(name),
                Some(_) => return None,
            }
        }
    };
    let name_ok = match route {
        ProjectRoute::Key(name) | ProjectRoute::RotateKey(name) => is_dns_label(name),
        _ => true,
    };
    (!project.is_empty() && name_ok).then_some(ProjectTarget { project, route })
}

/// A file of a project's web console: `/<project>/console/<file>` (`file` empty for the page
/// itself), or `/<project>/console`, which the console answers with a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleTarget<'p> {
    /// Project slug.
    pub project: &'p str,
    /// The file below `/console/`; `None` for `/<project>/console` without its slash.
    pub file: Option<&'p str>,
}

/// Splits `/<project>/console[/<file>]`; `None` for any other path. Only a path no endpoint
/// route matched gets here (`console` is a reserved Endpoint slug), so the API's request path
/// never pays for it.
pub fn parse_console_path(path: &str) -> Option<ConsoleTarget<'_>> {
    let rest = path.strip_prefix('/')?;
    let (project, rest) = rest.split_once('/')?;
    let file = match rest.strip_prefix("console")? {
        "" => None,
        below => Some(below.strip_prefix('/')?),
    };
    (!project.is_empty()).then_some(ConsoleTarget { project, file })
}

/// `models`, `models/{model}` or `models/{model}:{method}` below `/v1beta/`.
fn gemini_route(rest: &str) -> Option<Route<'_>> {
    if rest == "models" {
        return Some(Route::GeminiListModels);
    }
    let model = rest.strip_prefix("models/").filter(|m| !m.is_empty())?;
    let Some((model, method)) = model.rsplit_once(':') else { return Some(Route::GeminiGetModel(model)) };
    let method = match method {
        "generateContent" => GeminiMethod::Generate,
        "streamGenerateContent" => GeminiMethod::StreamGenerate,
        "countTokens" => GeminiMethod::CountTokens,
        "embedContent" => GeminiMethod::EmbedContent,
        "batchEmbedContents" => GeminiMethod::BatchEmbedContents,
        _ => return None,
    };
    (!model.is_empty()).then_some(Route::Gemini { model, method })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(path: &str) -> Option<(&str, &str, Route<'_>)> {
        parse_path(path).map(|t| (t.project, t.endpoint, t.route))
    }

    #[test]
    fn paths_split_into_project_endpoint_and_api() {
        assert_eq!(
            split("/demo/assistant/v1/chat/completions"),
            Some(("demo", "assistant", Route::Api(Api::ChatCompletions)))
        );
        assert_eq!(split("/demo/assistant/v1/models"), Some(("demo", "assistant", Route::ListModels)));
        assert_eq!(
            split("/demo/assistant/v1/models/Qwen/Qwen2.5-7B"),
            Some(("demo", "assistant", Route::GetModel("Qwen/Qwen2.5-7B")))
        );
        assert_eq!(split("/demo/assistant/v1/models/"), None);
        assert_eq!(split("/demo/assistant/v2/chat/completions"), None);
        assert_eq!(split("//assistant/v1/models"), None);
        assert_eq!(split("/demo/v1/models"), None);
        assert_eq!(split("/demo/assistant/v1/messages"), Some(("demo", "assistant", Route::Messages)));
        assert_eq!(split("/demo/assistant/v1/messages/count_tokens"), Some(("demo", "assistant", Route::CountTokens)));
        assert_eq!(split("/demo/assistant/v1/messages/other"), None);
    }

    #[test]
    fn messages_paths_speak_anthropic() {
        assert_eq!(Wire::of_path("/demo/assistant/v1/messages"), Wire::Anthropic);
        assert_eq!(Wire::of_path("/x/y/v1/messages/count_tokens"), Wire::Anthropic);
        assert_eq!(Wire::of_path("/demo/assistant/v1/chat/completions"), Wire::OpenAi);
        assert_eq!(Wire::of_path("/nowhere"), Wire::OpenAi);
        assert!(Route::Messages.check_method(&Method::POST).is_ok());
        assert!(Route::CountTokens.check_method(&Method::GET).is_err());
    }

    #[test]
    fn gemini_and_responses_paths_have_routes_and_wires() {
        let gemini = |model, method| Some(("p", "e", Route::Gemini { model, method }));
        assert_eq!(split("/p/e/v1beta/models/m-ok:generateContent"), gemini("m-ok", GeminiMethod::Generate));
        assert_eq!(split("/p/e/v1beta/models/a/b:streamGenerateContent"), gemini("a/b", GeminiMethod::StreamGenerate));
        assert_eq!(split("/p/e/v1beta/models/m:countTokens"), gemini("m", GeminiMethod::CountTokens));
        assert_eq!(split("/p/e/v1beta/models/m:embedContent"), gemini("m", GeminiMethod::EmbedContent));
        assert_eq!(split("/p/e/v1/models/m:batchEmbedContents"), gemini("m", GeminiMethod::BatchEmbedContents));
        assert_eq!(Wire::of_path("/p/e/v1/models/m:batchEmbedContents"), Wire::Gemini);
        assert_eq!(split("/p/e/v1beta/models/m:predict"), None);
        assert_eq!(split("/p/e/v1beta/models/:generateContent"), None);
        assert_eq!(split("/p/e/v1beta/models"), Some(("p", "e", Route::GeminiListModels)));
        assert_eq!(split("/p/e/v1beta/models/m"), Some(("p", "e", Route::GeminiGetModel("m"))));
        assert_eq!(split("/p/e/v1beta/other"), None);
        assert_eq!(split("/p/e/v1/responses"), Some(("p", "e", Route::Responses)));
        assert_eq!(split("/p/e/v1/models/m:generateContent"), gemini("m", GeminiMethod::Generate));
        assert_eq!(split("/p/e/v1/models/ft:m:org:1"), Some(("p", "e", Route::GetModel("ft:m:org:1"))));
        assert_eq!(Wire::of_path("/p/e/v1/models/m:countTokens"), Wire::Gemini);
        assert_eq!(Wire::of_path("/p/e/v1/models/ft:m:org:1"), Wire::OpenAi);
        assert_eq!(Wire::of_path("/p/e/v1beta/models/m:generateContent"), Wire::Gemini);
        assert_eq!(Wire::of_path("/p/e/v1/responses"), Wire::Responses);
        assert!(Route::Responses.check_method(&Method::POST).is_ok());
        assert!(Route::GeminiListModels.check_method(&Method::POST).is_err());
    }

    #[test]
    fn a_routed_path_speaks_its_routes_wire_whatever_its_names_contain() {
        // Found by the `path` fuzz target: the guess from the path's shape took a model id (or
        // a project) containing `v1beta` for Gemini, so refusals went out in Google's shape.
        let found = "/demo/assistanT/v1/models/text-emstant/v1beta/modhEmbedContetns?key=a%2demo/assiB";
        assert!(matches!(split(found), Some((_, _, Route::GetModel(_)))));
        assert_eq!(Wire::of_path(found), Wire::OpenAi);
        assert_eq!(Wire::of_path("/v1beta/assistant/v1/chat/completions"), Wire::OpenAi);
        assert_eq!(Wire::of_path("/v1beta/v1/usage"), Wire::OpenAi);
        assert_eq!(Wire::of_path("/p/e/v1/models/org/v1/messages"), Wire::OpenAi);
        assert_eq!(Wire::of_path("/v1beta/e/v1/messages"), Wire::Anthropic);
        // Unrouted paths are still guessed from their ends.
        assert_eq!(Wire::of_path("/p/e/v1beta/models/m:predict"), Wire::Gemini);
        assert_eq!(Wire::of_path("/p/e/v1/messages/other"), Wire::OpenAi);
        assert_eq!(Wire::of_path("/p/v1/messages"), Wire::Anthropic);
    }

    #[test]
    fn project_level_paths_are_their_own() {
        let project = |path| parse_project_path(path).map(|t| (t.project, t.route));
        assert_eq!(project("/demo/v1/keys/self"), Some(("demo", ProjectRoute::KeySelf)));
        assert_eq!(project("/demo/v1/usage"), Some(("demo", ProjectRoute::Usage)));
        assert_eq!(project("/demo/v1/security/signing-secret"), Some(("demo", ProjectRoute::SigningSecret)));
        assert_eq!(project("/demo/v1/keys"), Some(("demo", ProjectRoute::Keys)));
        assert_eq!(project("/demo/v1/keys/ci-bot"), Some(("demo", ProjectRoute::Key("ci-bot"))));
        assert_eq!(project("/demo/v1/keys/ci-bot/rotate"), Some(("demo", ProjectRoute::RotateKey("ci-bot"))));
        assert_eq!(project("/demo/v1/keys/Bad_Name"), None, "a key's name is a DNS label");
        assert_eq!(project("/demo/v1/keys/ci-bot/delete"), None);
        assert_eq!(project("/demo/v1/keys/"), None);
        assert!(ProjectRoute::Key("a").check_method(&Method::DELETE).is_ok());
        assert!(ProjectRoute::Keys.check_method(&Method::DELETE).is_err());
        assert!(ProjectRoute::Usage.check_method(&Method::POST).is_err());
        assert_eq!(project("/demo/v1/security/other"), None);
        assert_eq!(project("//v1/usage"), None);
        assert_eq!(project("/demo/v1/keys/other"), Some(("demo", ProjectRoute::Key("other"))), "a key named other");
        assert_eq!(project("/demo/chat/v1/usage"), None, "below an endpoint it is no project API");
        assert_eq!(split("/demo/v1/keys/self"), None, "and no endpoint route either");
        assert_eq!(split("/demo/v1/usage"), None);
        assert_eq!(Wire::of_path("/demo/v1/usage"), Wire::OpenAi);
        assert!(ProjectRoute::Usage.check_method(&Method::GET).is_ok());
        assert!(ProjectRoute::KeySelf.check_method(&Method::POST).is_err());
    }

    #[test]
    fn no_path_is_both_a_project_api_and_an_endpoint_route() {
        // The request path tries the endpoint routes first; this is why the order cannot matter.
        let paths = [
            "/demo/v1/keys/self",
            "/demo/v1/keys/v1/rotate",
            "/demo/v1/keys/v1beta",
            "/demo/v1/usage/daily",
            "/demo/v1/v1/models",
            "/demo/v1/v1/keys",
            "/demo/v1/v1beta/models",
            "/demo/v1/v1/chat/completions",
            "/demo/v1beta/v1/keys",
            "/v1/v1/v1/health",
            "/demo/keys/v1/models/keys",
        ];
        for path in paths {
            let both = parse_path(path).is_some() && parse_project_path(path).is_some();
            assert!(!both, "{path} parses as both");
        }
        assert!(parse_path("/demo/v1/v1/models").is_some() && parse_project_path("/demo/v1/keys/x").is_some());
    }

    #[test]
    fn the_console_and_its_apis_have_paths_of_their_own() {
        let project = |path| parse_project_path(path).map(|t| (t.project, t.route));
        assert_eq!(project("/demo/v1/keys/self/daily"), Some(("demo", ProjectRoute::KeySelfDaily)));
        assert_eq!(project("/demo/v1/usage/daily"), Some(("demo", ProjectRoute::UsageDaily)));
        assert_eq!(project("/demo/v1/catalog"), Some(("demo", ProjectRoute::Catalog)));
        assert_eq!(project("/demo/v1/health"), Some(("demo", ProjectRoute::Health)));
        assert!(ProjectRoute::Health.check_method(&Method::POST).is_err());
        let console = |path| parse_console_path(path).map(|t| (t.project, t.file));
        assert_eq!(console("/demo/console/"), Some(("demo", Some(""))));
        assert_eq!(console("/demo/console/app.0123.js"), Some(("demo", Some("app.0123.js"))));
        assert_eq!(console("/demo/console"), Some(("demo", None)));
        assert_eq!(console("/demo/consoles/"), None);
        assert_eq!(console("//console/"), None);
        assert_eq!(split("/demo/console/app.js"), None, "no endpoint route takes it first");
    }

    #[test]
    fn every_api_has_its_path() {
        for api in Api::ALL {
            let path = format!("/p/e{}", api.display());
            assert_eq!(split(&path), Some(("p", "e", Route::Api(api))), "{path}");
            assert_eq!(Api::ALL[api.index()], api);
        }
    }

    #[test]
    fn model_calls_are_posts_and_listings_gets() {
        assert!(Route::Api(Api::Embeddings).check_method(&Method::POST).is_ok());
        assert!(Route::ListModels.check_method(&Method::GET).is_ok());
        assert!(Route::GetModel("m").check_method(&Method::GET).is_ok());
        match Route::Api(Api::ChatCompletions).check_method(&Method::GET) {
            Err(ApiError::MethodNotAllowed(method)) => assert_eq!(method, "GET"),
            other => panic!("expected 405, got {other:?}"),
        }
        assert!(matches!(Route::ListModels.check_method(&Method::DELETE), Err(ApiError::MethodNotAllowed(_))));
    }
}
