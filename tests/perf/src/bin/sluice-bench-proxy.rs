//! `sluice-bench-proxy`: the thinnest HTTP/1.1 pass-through proxy hyper allows, the ceiling for
//! any proxy on the machine. Each `--map LISTEN=UPSTREAM` listener forwards every request to its
//! upstream unchanged (only the URI's authority and `Host` change) over a pooled `TCP_NODELAY`
//! client, and streams the answer back frame by frame. No parsing, no auth, no metrics, no logs.
//! `--sink LISTEN` is a listener that reads every request and answers `200` with an empty body:
//! an OTLP/HTTP receiver that keeps nothing (an empty protobuf is a valid export response), so
//! the benchmark can measure what exporting traces costs the gateway.
#![allow(clippy::print_stdout)] // Its one line of output, the ready line, is read by sluice-bench.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::http::uri::{Authority, Scheme};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A minimal pass-through proxy for benchmarks.
#[derive(Parser)]
#[command(name = "sluice-bench-proxy")]
struct Args {
    /// `LISTEN=UPSTREAM`, e.g. `127.0.0.1:0=http://127.0.0.1:8000`; repeatable.
    #[arg(long = "map", value_name = "LISTEN=UPSTREAM", required_unless_present = "sinks")]
    maps: Vec<String>,
    /// A listener that answers every request `200` with an empty body; repeatable.
    #[arg(long = "sink", value_name = "LISTEN")]
    sinks: Vec<String>,
}

type Upstream = Arc<(Scheme, Authority)>;
type ProxyBody = Either<Incoming, Full<Bytes>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(usize::MAX).build(connector);
    let mut listeners = Vec::new();
    for map in &args.maps {
        let (listen, upstream) =
            map.split_once('=').with_context(|| format!("--map {map}: expected LISTEN=UPSTREAM"))?;
        let uri: Uri = upstream.parse().with_context(|| format!("--map {map}: upstream URL"))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri.authority().cloned().with_context(|| format!("--map {map}: upstream has no host"))?;
        let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        listeners.push(serde_json::json!({ "addr": listener.local_addr()?.to_string(), "upstream": upstream }));
        tokio::spawn(serve(listener, client.clone(), Arc::new((scheme, authority))));
    }
    let mut sinks = Vec::new();
    for listen in &args.sinks {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        sinks.push(listener.local_addr()?.to_string());
        tokio::spawn(sink(listener));
    }
    println!("{}", serde_json::json!({ "ready": true, "listeners": listeners, "sinks": sinks }));
    // SIGTERM's default action ends the process; there is nothing to flush.
    std::future::pending::<()>().await;
    Ok(())
}

async fn serve(listener: TcpListener, client: Client<HttpConnector, Incoming>, upstream: Upstream) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn sink(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                // Read the whole export, as a collector would, then acknowledge it.
                let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                let mut response = Response::new(Full::new(Bytes::new()));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/x-protobuf"),
                );
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Upstream,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(upstream.0.clone());
    parts.authority = Some(upstream.1.clone());
    let Ok(uri) = Uri::from_parts(parts) else { return Ok(bad_gateway()) };
    *request.uri_mut() = uri;
    request.headers_mut().remove(HOST);
    match client.request(request).await {
        Ok(response) => Ok(response.map(Either::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(b"bad gateway\n"))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
