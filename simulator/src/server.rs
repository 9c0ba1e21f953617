//! The HTTP surface: every route of one simulated backend in an axum `Router` (usable
//! in-process with `tower::ServiceExt::oneshot`), and serving it on a TCP listener, in plain
//! HTTP or over TLS.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::admin;
use crate::engine::Simulator;
use crate::error::{Error, Result};
use crate::protocol::{Dialect, anthropic, completions, embeddings, error_response, gemini, images, openai};
use crate::tls::TlsListener;

/// Largest request body accepted (long prompts are the point of prefix-cache tests).
pub(crate) const MAX_BODY_BYTES: usize = 64 << 20;

impl Simulator {
    /// Every route of this backend:
    ///
    /// - OpenAI: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
    ///   `POST /v1/rerank` (also `/rerank`, `/v2/rerank`), `POST /v1/images/generations`,
    ///   `GET /v1/models`, `GET /v1/models/{id}`
    /// - Anthropic: `POST /v1/messages`
    /// - Gemini: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`
    /// - `GET /metrics`, `GET /health`, and the admin API under `/_sim/`
    ///   (`GET|POST /_sim/faults`, `POST /_sim/reset`, `GET /_sim/profile`, `GET /_sim/state`,
    ///   `GET|DELETE /_sim/requests`)
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/v1/completions", post(completions::completions))
            .route("/v1/embeddings", post(embeddings::embeddings))
            .route("/v1/rerank", post(embeddings::rerank))
            .route("/v2/rerank", post(embeddings::rerank))
            .route("/rerank", post(embeddings::rerank))
            .route("/v1/images/generations", post(images::generations))
            .route("/v1/models", get(openai::list_models))
            .route("/v1/models/{*id}", get(openai::get_model))
            .route("/v1/messages", post(anthropic::messages))
            .route("/v1beta/models/{*action}", post(gemini::models_action))
            .route("/metrics", get(admin::metrics))
            .route("/health", get(admin::health))
            .route("/_sim/faults", get(admin::get_faults).post(admin::set_faults))
            .route("/_sim/reset", post(admin::reset))
            .route("/_sim/profile", get(admin::profile))
            .route("/_sim/state", get(admin::state))
            .route("/_sim/requests", get(admin::requests).delete(admin::clear_requests))
            .fallback(unknown_route)
            .layer(axum::middleware::from_fn_with_state(self.clone(), admin::record_requests))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    /// Serves this backend on `listener` until the server fails.
    pub async fn serve(self, listener: TcpListener) -> Result<()> {
        self.serve_with_shutdown(listener, std::future::pending()).await
    }

    /// Serves this backend on `listener` until `shutdown` completes, then lets in-flight
    /// requests finish.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let listener = listener.tap_io(|tcp| {
            // Streams are one small write per token: never let Nagle hold them back.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("cannot set TCP_NODELAY: {e}");
            }
        });
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await.map_err(Error::Serve)
    }

    /// Serves this backend over TLS with `config` ([`crate::tls::server_config`]) until
    /// `shutdown` completes, then lets in-flight requests finish.
    pub async fn serve_tls_with_shutdown(
        self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let listener = TlsListener::new(listener, config).map_err(Error::Serve)?;
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await.map_err(Error::Serve)
    }
}

async fn unknown_route(uri: Uri) -> Response {
    let dialect = if uri.path().starts_with("/v1beta/") { Dialect::Gemini } else { Dialect::OpenAi };
    error_response(
        dialect,
        StatusCode::NOT_FOUND,
        &format!("Unknown request URL: {}.", uri.path()),
        Some("unknown_url"),
    )
}
