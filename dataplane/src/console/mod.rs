//! The web console of a project at `/<project>/console/`, and the two JSON APIs it adds to the
//! project-level ones, which work without it: [`catalog`] (`/v1/catalog`: endpoints, models and
//! prices) and [`health`] (`/v1/health`: the backends' live state).
//!
//! The console is three static files compiled into the binary (`dataplane/console/`): a page, one
//! JavaScript module and a style sheet. It signs in with an API key the browser keeps in session
//! storage and sends as a Bearer header to the same JSON APIs any client calls, so it shows a key
//! nothing the key could not read without it. Its page names the module and style sheet by
//! content hash, so they are cached for good and a new binary's files are fetched at once; the
//! page itself is revalidated with its `ETag`. Every file goes out under a Content-Security-Policy
//! that allows only these files and same-origin requests.
//!
//! Only a path no endpoint route matched reaches here (`console` is a reserved Endpoint slug), so
//! the model API's request path does not pay for the console.

pub mod catalog;
pub mod health;

use std::sync::LazyLock;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::respond::body::ResponseBody;
use crate::route::ConsoleTarget;
use crate::snapshot::Snapshot;

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");

/// What every console file is served under: its own files only, requests to its own origin only,
/// no frames, no inline script or style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file as served: its name below `/console/`, type, bytes and `ETag`.
struct Asset {
    name: String,
    content_type: &'static str,
    body: String,
    etag: String,
    /// Named by its content hash: cached for good.
    immutable: bool,
}

/// The three files, hashed once: the page names the other two by their hashes.
struct Assets {
    page: Asset,
    script: Asset,
    style: Asset,
}

fn hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

fn asset(name: String, content_type: &'static str, body: String, immutable: bool) -> Asset {
    let etag = format!("\"{}\"", hash(&body));
    Asset { name, content_type, body, etag, immutable }
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let script = asset(format!("app.{}.js", hash(SCRIPT)), "text/javascript; charset=utf-8", SCRIPT.to_owned(), true);
    let style = asset(format!("style.{}.css", hash(STYLE)), "text/css; charset=utf-8", STYLE.to_owned(), true);
    let page = PAGE.replace("{{script}}", &script.name).replace("{{style}}", &style.name);
    let page = asset(String::new(), "text/html; charset=utf-8", page, false);
    Assets { page, script, style }
});

/// The console's size as served (page, module and style sheet), in bytes, before compression.
pub fn bundle_bytes() -> usize {
    let assets = &*ASSETS;
    assets.page.body.len() + assets.script.body.len() + assets.style.body.len()
}

/// Serves a console file of a project whose console is on; 404 (as for any unknown path) for a
/// project that has none, or a file that is not the console's.
pub fn serve(
    snapshot: &Snapshot,
    target: ConsoleTarget<'_>,
    method: &Method,
    headers: &HeaderMap,
    unknown_path: impl Fn() -> ApiError,
) -> Result<Response<ResponseBody>, ApiError> {
    if !snapshot.projects.get(target.project).is_some_and(|project| project.console) {
        return Err(unknown_path());
    }
    if *method != Method::GET && *method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed(method.to_string()));
    }
    let Some(file) = target.file else {
        // `/<project>/console` without its slash: relative links need the slash.
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("console/"));
        return Ok(response);
    };
    let assets = &*ASSETS;
    let asset = [&assets.page, &assets.script, &assets.style]
        .into_iter()
        .find(|asset| asset.name == file)
        .ok_or_else(unknown_path)?;
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == asset.etag));
    let mut response = if fresh {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else if *method == Method::HEAD {
        Response::new(ResponseBody::empty())
    } else {
        Response::new(ResponseBody::full(asset.body.clone()))
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    out.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        out.insert(header::ETAG, etag);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_the_module_and_style_sheet_by_their_hashes() {
        let assets = &*ASSETS;
        assert!(assets.script.name.starts_with("app.") && assets.script.name.ends_with(".js"));
        assert!(assets.page.body.contains(&format!("src=\"{}\"", assets.script.name)), "{}", assets.page.body);
        assert!(assets.page.body.contains(&format!("href=\"{}\"", assets.style.name)));
        assert!(!assets.page.body.contains("{{"), "every placeholder is filled");
        assert!(!assets.page.body.contains("<script>"), "no inline script: the policy would block it");
        assert!(bundle_bytes() < 100_000, "the console stays small: {} bytes", bundle_bytes());
    }
}
