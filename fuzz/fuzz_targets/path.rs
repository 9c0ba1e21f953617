//! The request's URL: `route::parse_path`, `route::parse_project_path` and `Wire::of_path` on
//! any text, and, where the text is a URI hyper accepts, `server::take_query_key` on it.
//!
//! Beyond not panicking: a split path renders back to exactly the path it came from (so the
//! project and endpoint are what the client sent, not a neighbour's), no path is both a model
//! route and a project-level one, the wire format of a path that routes is the one its route
//! speaks, and taking `?key=` leaves the path as it was and no key behind.

#![no_main]

use hyper::{Method, Request};
use libfuzzer_sys::{Corpus, fuzz_target};
use sluice_gateway::route::{self, GeminiMethod, ProjectRoute, Route, Target, Wire};
use sluice_gateway::server::take_query_key;

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(path) = std::str::from_utf8(data) else { return Corpus::Reject };
    check_path(path);
    if let Ok(request) = Request::builder().uri(path).body(()) {
        let path = request.uri().path().to_owned();
        check_path(&path);
        check_query_key(request);
    }
    Corpus::Keep
});

fn check_path(path: &str) {
    let target = route::parse_path(path);
    let project_target = route::parse_project_path(path);
    assert!(target.is_none() || project_target.is_none(), "{path:?} is both a model route and a project route");
    let wire = Wire::of_path(path);
    if let Some(target) = target {
        for slug in [target.project, target.endpoint] {
            assert!(!slug.is_empty() && !slug.contains('/'), "{path:?} split into a bad slug {slug:?}");
        }
        let rendered = render(&target);
        assert!(rendered.iter().any(|r| r == path), "{path:?} parsed as {target:?}, which is {rendered:?}");
        assert_eq!(wire, wire_of(target.route), "{path:?} routes to {:?}", target.route);
        for method in [Method::GET, Method::POST] {
            let _ = target.route.check_method(&method);
        }
    }
    if let Some(project) = project_target {
        assert!(!project.project.is_empty() && !project.project.contains('/'), "{path:?}: {project:?}");
        let route = match project.route {
            ProjectRoute::Key(name) => format!("/v1/keys/{name}"),
            ProjectRoute::RotateKey(name) => format!("/v1/keys/{name}/rotate"),
            other => other.display().to_owned(),
        };
        assert_eq!(format!("/{}{route}", project.project), path);
        assert_eq!(wire, Wire::OpenAi, "{path:?} is a project-level API");
    }
}

/// Every path that splits into `target`.
fn render(target: &Target<'_>) -> Vec<String> {
    let base = format!("/{}/{}", target.project, target.endpoint);
    let v1 = |rest: &str| vec![format!("{base}/v1/{rest}")];
    match target.route {
        Route::Api(api) => vec![format!("{base}{}", api.display())],
        Route::Messages => v1("messages"),
        Route::CountTokens => v1("messages/count_tokens"),
        Route::ListModels => v1("models"),
        Route::GetModel(id) => v1(&format!("models/{id}")),
        Route::Responses => v1("responses"),
        Route::Gemini { model, method } => {
            let method = match method {
                GeminiMethod::Generate => "generateContent",
                GeminiMethod::StreamGenerate => "streamGenerateContent",
                GeminiMethod::CountTokens => "countTokens",
                GeminiMethod::EmbedContent => "embedContent",
                GeminiMethod::BatchEmbedContents => "batchEmbedContents",
            };
            ["v1beta", "v1"].iter().map(|version| format!("{base}/{version}/models/{model}:{method}")).collect()
        }
        Route::GeminiListModels => vec![format!("{base}/v1beta/models")],
        Route::GeminiGetModel(model) => vec![format!("{base}/v1beta/models/{model}")],
    }
}

/// The wire format a route's clients speak.
fn wire_of(route: Route<'_>) -> Wire {
    match route {
        Route::Api(_) | Route::ListModels | Route::GetModel(_) => Wire::OpenAi,
        Route::Messages | Route::CountTokens => Wire::Anthropic,
        Route::Responses => Wire::Responses,
        Route::Gemini { .. } | Route::GeminiListModels | Route::GeminiGetModel(_) => Wire::Gemini,
    }
}

fn check_query_key(mut request: Request<()>) {
    let before = request.uri().clone();
    let had_key = before.query().is_some_and(|q| q.split('&').any(|pair| pair.starts_with("key=")));
    let key = take_query_key(&mut request);
    let after = request.uri();
    assert_eq!(key.is_some(), had_key, "{before} -> {after}");
    assert_eq!(after.path(), before.path(), "{before} -> {after}");
    let kept = |query: Option<&str>| -> Vec<String> {
        query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.starts_with("key=")).map(str::to_owned).collect()
    };
    if had_key {
        assert_eq!(kept(after.query()), kept(before.query()), "{before} -> {after}");
        assert!(take_query_key(&mut request).is_none(), "{before}: a key is left in {}", request.uri());
    } else {
        assert_eq!(after, &before);
    }
}
