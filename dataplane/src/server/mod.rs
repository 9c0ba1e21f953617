//! The listeners: the API (HTTP/1.1 and HTTP/2, `TCP_NODELAY`, limits on the request head and
//! on how long it may take to arrive) and the admin port, both with graceful shutdown, and the
//! limits on what a client sends ([`check_head`], [`read_body`]). Each API request is run
//! through the stages by [`handle`].

pub mod client;
mod handle;
pub mod proxy_protocol;

pub use handle::handle;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Gateway;
use crate::error::ApiError;
use crate::respond::body::ResponseBody;
use crate::server::client::TrustedProxies;
use crate::server::proxy_protocol::ProxyProtocol;

/// Limits on a listener's connections and on what a client may send before the gateway reads
/// the body.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Longest wait for the request head (also how long a kept-alive connection may idle).
    pub header_read_timeout: Duration,
    /// Most connections open at once; at the limit the listener stops accepting.
    pub max_connections: usize,
    /// The connections open now.
    pub open: Gauge,
}

/// A connection's place under [`ConnectionLimits::max_connections`], given back when the
/// connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: &Gauge) -> Self {
        open.inc();
        Self { _permit: permit, open: open.clone() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Who may connect through a proxy, and how a listener learns a client's address from it.
#[derive(Clone, Debug, Default)]
pub struct Proxies {
    /// PROXY protocol headers on this listener.
    pub protocol: ProxyProtocol,
    /// Peers whose PROXY headers (and forwarding headers) are believed.
    pub trusted: Arc<TrustedProxies>,
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves, then lets
/// in-flight requests finish for up to `grace`. The handler is given the client's address:
/// the TCP peer's, or the one a trusted peer's PROXY header names.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    proxies: Proxies,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut full = false;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && !full {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait in the listen queue until one closes"
            );
        }
        full = slots.available_permits() == 0;
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = Slot::new(permit, &limits.open);
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = move |remote: SocketAddr| service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request, remote).await) }
                });
                let proxied = proxies.protocol != ProxyProtocol::Off && proxies.trusted.contains(remote.ip());
                if !proxied {
                    if proxies.protocol == ProxyProtocol::Required {
                        tracing::warn!(%remote, "connection refused: not from a trusted proxy, and this listener requires the PROXY protocol");
                        continue;
                    }
                    let connection = builder.serve_connection(TokioIo::new(stream), service(remote)).into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, %remote, "connection ended with an error");
                        }
                        drop(slot);
                    });
                    continue;
                }
                // The header is read on the connection's own task: a slow proxy holds up no one.
                let (builder, watcher, mode) = (builder.clone(), graceful.watcher(), proxies.protocol);
                let header_read_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    let mut stream = stream;
                    let (read, client) = match proxy_protocol::read_header(&mut stream, mode, header_read_timeout).await {
                        Ok(read) => read,
                        Err(error) => {
                            tracing::warn!(%error, proxy = %remote, "connection closed: bad PROXY protocol header");
                            return;
                        }
                    };
                    let client = client.unwrap_or(remote);
                    let io = TokioIo::new(proxy_protocol::Prefixed::new(read, stream));
                    let connection = watcher.watch(builder.serve_connection(io, service(client)).into_owned());
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, %client, proxy = %remote, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    // The API and the admin listener both end here: the address says which one.
    let address = listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(listener = %address, "all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(listener = %address, grace_seconds = grace.as_secs(),
            "grace period over; closing remaining connections"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// The API handler bound to a gateway.
pub fn api_handler(
    gateway: Arc<Gateway>,
) -> impl Fn(Request<Incoming>, SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |request, remote| Box::pin(handle(gateway.clone(), request, remote))
}

/// hyper bounds the request head only while it arrives incomplete; this bounds it however it
/// was read.
pub fn check_head<B>(request: &Request<B>, limit: usize) -> Result<(), ApiError> {
    let head_bytes = request.uri().path().len()
        + request.uri().query().map_or(0, str::len)
        + request.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    if head_bytes > limit { Err(ApiError::HeadersTooLarge { limit }) } else { Ok(()) }
}

/// Takes Gemini's `?key=` parameter out of the request's URI, so that nothing that records the
/// URI later can record the key, and returns it (percent-decoded). The first `key` counts.
pub fn take_query_key<B>(request: &mut Request<B>) -> Option<Vec<u8>> {
    let query = request.uri().query()?;
    if !query.split('&').any(|pair| pair.starts_with("key=")) {
        return None;
    }
    let mut key = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("key=") {
            Some(value) => {
                key.get_or_insert_with(|| percent_decode(value));
                false
            }
            None => true,
        })
        .collect();
    let path = request.uri().path();
    let path_and_query = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    // A URI that no longer parses (it did a moment ago) keeps no query at all.
    *request.uri_mut() = hyper::Uri::from_parts(parts).unwrap_or_else(|_| hyper::Uri::from_static("/"));
    key
}

/// `%XX` escapes and `+` (a space, in a query) decoded; anything malformed kept as it is.
fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// Reads a request body of at most `limit` bytes; a declared length above it is refused
/// before anything is read.
pub async fn read_body(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let collected = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::BodyTooLarge { limit }
            } else {
                ApiError::InvalidJson(format!("the request body could not be read: {e}"))
            }
        })?;
    Ok(collected.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_key_leaves_the_uri() {
        let mut request = Request::builder()
            .uri("/p/e/v1beta/models/m:streamGenerateContent?alt=sse&key=sl%5Fx+1&key=other")
            .body(())
            .expect("request");
        assert_eq!(take_query_key(&mut request), Some(b"sl_x 1".to_vec()));
        assert_eq!(request.uri().to_string(), "/p/e/v1beta/models/m:streamGenerateContent?alt=sse");
        let mut only = Request::builder().uri("/p/e/v1beta/models?key=abc").body(()).expect("request");
        assert_eq!(take_query_key(&mut only), Some(b"abc".to_vec()));
        assert_eq!(only.uri().to_string(), "/p/e/v1beta/models");
        let mut none = Request::builder().uri("/p/e/v1/models?monkey=1").body(()).expect("request");
        assert_eq!(take_query_key(&mut none), None);
        assert_eq!(none.uri().to_string(), "/p/e/v1/models?monkey=1");
        assert_eq!(percent_decode("a%2"), b"a%2".to_vec());
    }
}
