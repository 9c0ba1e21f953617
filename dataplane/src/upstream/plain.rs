//! Kept-alive HTTP/1.1 connections to one plain-`http` upstream (a self-hosted vLLM, the
//! simulator), without hyper-util's general pool: one pool per upstream address, so a request
//! takes a connection off a list instead of hashing a scheme and authority (byte by byte) three
//! times, and handles no protocol negotiation it cannot need. About 7,000 instructions per request
//! less (docs/performance.md). `https` upstreams keep hyper-util's client (TLS, HTTP/2 by ALPN).
//!
//! A connection has no task of its own: the request that holds it drives it, first while
//! waiting for the response's headers and then from its response body's `poll_frame`. The
//! upstream's bytes therefore wake the task that forwards them to the client, and nothing is
//! handed from one task to another on the way (a task per connection costs two to four wake-ups
//! of another task per request, each a trip through the scheduler and often a thread woken).
//!
//! A connection goes back to its pool when its response body has been read to the end, and only
//! then; a body dropped early (the client went away) takes its connection with it. An idle
//! connection is driven by nobody: the request that takes it next polls it first, and finds it
//! closed if the upstream closed it meanwhile; the sweep polls the idle ones too. A request that
//! a kept-alive connection could not carry (the upstream had closed it at that moment) is sent
//! once more on a new connection, as hyper-util's client does: it was never written.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::client::{BoxError, UpstreamError, error_chain};

/// Idle connections kept per upstream at most (hyper-util's client was given the same).
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than used: upstreams close theirs after
/// a while, and a request should not be the one that finds out. A sweep closes them a third of
/// it later at most, traffic or not.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The connections of one upstream address.
pub struct PlainPool {
    /// `http://host:port`, what the connector dials.
    address: Uri,
    /// The `Host` header of every request.
    host: HeaderValue,
    connector: HttpConnector,
    /// Oldest first: connections are taken and given back at the end.
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
}

struct Idle {
    link: Link,
    since: Instant,
}

/// One HTTP/1.1 connection: where requests go in, and the connection itself, which whoever
/// holds the link drives.
struct Link {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once it ended (closed or failed): it must not be polled again. Boxed: the link
    /// moves in and out of the pool and into the response body with every request, and the
    /// connection's state (its buffers and parser) is several hundred bytes.
    connection: Option<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl Link {
    /// Moves the connection on (writes what is queued, reads what arrived); false once it has
    /// ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(connection) = &mut self.connection else { return false };
        match Pin::new(&mut **connection).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(error) = ended {
                    tracing::debug!(error = %error_chain(&error), "upstream connection ended");
                }
                self.connection = None;
                false
            }
        }
    }

    /// Whether it can carry another request: still open, and idle.
    fn reusable(&self) -> bool {
        self.connection.is_some() && !self.sender.is_closed()
    }
}

impl std::fmt::Debug for PlainPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainPool").field("address", &self.address).finish_non_exhaustive()
    }
}

impl PlainPool {
    /// A pool for the `http` upstream at `base` (its scheme and authority; the path is the
    /// caller's), dialling through `connector` (its timeouts and socket options). Inside a
    /// runtime, a task sweeps its expired idle connections until the pool is dropped.
    pub fn new(base: &Uri, connector: HttpConnector) -> Result<Arc<Self>, String> {
        Self::with_idle_timeout(base, connector, IDLE_TIMEOUT)
    }

    fn with_idle_timeout(base: &Uri, connector: HttpConnector, idle_timeout: Duration) -> Result<Arc<Self>, String> {
        let authority = base.authority().ok_or_else(|| format!("baseUrl {base}: no host"))?;
        let address = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("baseUrl {base}: {e}"))?;
        let host = HeaderValue::from_str(&host_header(authority)).map_err(|e| format!("baseUrl {base}: {e}"))?;
        let pool = Arc::new(Self { address, host, connector, idle: Mutex::new(Vec::new()), idle_timeout });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = Arc::downgrade(&pool);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(idle_timeout / 3).await;
                    let Some(pool) = pool.upgrade() else { break };
                    pool.sweep();
                }
            });
        }
        Ok(pool)
    }

    /// Closes the idle connections that expired or that their upstream closed. Nobody drives
    /// an idle connection, so each is polled here once (nobody is to be woken: it stays idle).
    fn sweep(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.lock().retain_mut(|idle| {
            idle.since.elapsed() <= self.idle_timeout && idle.link.drive(&mut cx) && idle.link.reusable()
        });
    }

    /// Sends `request` (its URI in origin form, `/v1/chat/completions`) on a kept-alive
    /// connection, or a new one, driving the connection until the response's headers arrive.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        request.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut link, kept) = match self.take_idle().await {
                Some(link) => (link, true),
                None => (self.connect().await?, false),
            };
            let mut sent = pin!(link.sender.try_send_request(request));
            let answer = poll_fn(|cx| {
                // The connection first: it writes the request and reads the answer, which the
                // sent request's future then finds at once. It ending fails that future too.
                // Driven quietly first: what it registers on the way (the response body's
                // reader not there yet) must not wake this task, which reads the body next
                // anyway; a task woken from inside its own poll is polled again, and another
                // worker thread woken to take it (a system call each). Only when nothing came
                // is it driven with the task's context, to be woken when the socket has more.
                if !link.drive(&mut quiet()) {
                    return sent.as_mut().poll(cx);
                }
                if let Poll::Ready(answer) = sent.as_mut().poll(&mut quiet()) {
                    return Poll::Ready(answer);
                }
                if link.drive(cx) { sent.as_mut().poll(&mut quiet()) } else { sent.as_mut().poll(cx) }
            })
            .await;
            match answer {
                Ok(response) => {
                    let pool = Arc::downgrade(self);
                    return Ok(response.map(|inner| PooledBody { inner, link: Some(link), pool }));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: the kept-alive connection had closed. A new one.
                    Some(unsent) if kept => request = unsent,
                    _ => return Err(UpstreamError::Request(error_chain(&failed.into_error()))),
                },
            }
        }
    }

    /// The most recently used idle connection that can take a request now; closed and
    /// timed-out ones are dropped on the way.
    async fn take_idle(&self) -> Option<Link> {
        loop {
            let Idle { mut link, since } = self.lock().pop()?;
            if since.elapsed() > self.idle_timeout {
                continue;
            }
            // Driven once, the connection takes in the end of the last response and asks for
            // the next request, or finds that the upstream closed it. Not ready then, it would
            // wait for the upstream, which has nothing to say: it is closed instead.
            let ready = poll_fn(|cx| {
                let alive = link.drive(cx);
                Poll::Ready(alive && matches!(link.sender.poll_ready(&mut quiet()), Poll::Ready(Ok(()))))
            })
            .await;
            if ready && link.reusable() {
                return Some(link);
            }
        }
    }

    async fn connect(&self) -> Result<Link, UpstreamError> {
        let stream = self
            .connector
            .clone()
            .oneshot(self.address.clone())
            .await
            .map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
        let (sender, connection) =
            http1::handshake::<_, Full<Bytes>>(stream).await.map_err(|e| UpstreamError::Connect(error_chain(&e)))?;
        Ok(Link { sender, connection: Some(Box::new(connection)) })
    }

    fn put_back(&self, link: Link) {
        if !link.reusable() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            // The oldest goes: it is the likeliest to have been closed by the upstream.
            idle.remove(0);
        }
        idle.push(Idle { link, since: Instant::now() });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections idle in the pool now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().len()
    }
}

/// A context that wakes nobody, to poll what only a connection this task drives can complete
/// (the answer to a request sent on it, its response body): the connection, driven with the
/// task's own context, wakes the task when its socket or its body's reader needs it. Polled
/// with the task's context, they would wake it as well, from inside its own poll, and have it
/// polled once more for nothing (a self-wake-up per answer and per streamed event).
fn quiet() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// The `Host` header for `authority`: its host, and its port unless 80; never the user
/// information a URL may carry before the host.
fn host_header(authority: &Authority) -> String {
    match authority.port_u16() {
        Some(port) if port != 80 => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    }
}

/// A response body that drives its connection while it is read, and returns the connection to
/// the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    /// `None` once the connection cannot go back (it ended, or the body broke).
    link: Option<Link>,
    pool: Weak<PlainPool>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(link) = self.link.take()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.put_back(link);
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("returns_connection", &self.link.is_some()).finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.link {
            // The connection is driven only when the body has nothing yet: what it read in an
            // earlier drive (often the whole answer, with its headers) is in the body already.
            Some(link) => match Pin::new(&mut this.inner).poll_frame(&mut quiet()) {
                Poll::Pending if link.drive(cx) => Pin::new(&mut this.inner).poll_frame(&mut quiet()),
                // An ended connection has handed the body all it had (or its error), and
                // cannot go back: from now on the body is polled as any other.
                Poll::Pending => {
                    this.link = None;
                    Pin::new(&mut this.inner).poll_frame(cx)
                }
                ready => ready,
            },
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // A broken body leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.link = None,
            _ => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to its end without the last poll (a body of known length): the connection is
        // free. Otherwise it goes with the body, and the socket closes.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback listener that counts the connections it accepts and hands each to a task
    /// of its own running `serve`.
    async fn listen<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
        let address = listener.local_addr().expect("its address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (address, accepted)
    }

    /// Serves HTTP/1.1 on `stream`, answering each request with `respond`'s response.
    async fn serve_http<F, Fut, B>(stream: TcpStream, respond: F)
    where
        F: Fn(Request<Incoming>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let service = service_fn(move |request| {
            let answer = respond(request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    }

    /// An HTTP/1.1 server on loopback that answers every request with `answer` bytes and counts
    /// the connections it accepted.
    async fn server(answer: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        listen(move |stream| {
            serve_http(stream, move |request: Request<Incoming>| async move {
                let host = request.headers().get(HOST).cloned();
                let _ = request.into_body().collect().await;
                let mut response = Response::new(Full::new(Bytes::from(vec![b'x'; answer])));
                if let Some(host) = host {
                    response.headers_mut().insert("x-host", host);
                }
                response
            })
        })
        .await
    }

    /// A server that answers one request per connection as a kept-alive connection (no
    /// `Connection: close`) and then, `linger` later, closes it without a word: an upstream's
    /// idle timeout (met at the worst moment when `linger` is zero).
    async fn closing_server(linger: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        listen(move |mut stream| async move {
            // The request: headers and the two bytes of `{}`.
            let mut seen = Vec::new();
            let mut buffer = [0u8; 1024];
            while !seen.windows(6).any(|w| w == b"\r\n\r\n{}") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nxxxxxxxxxx").await;
            if !linger.is_zero() {
                tokio::time::sleep(linger).await;
            }
        })
        .await
    }

    fn pool(address: SocketAddr) -> Arc<PlainPool> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let base: Uri = format!("http://{address}/v1").parse().expect("a URI");
        PlainPool::new(&base, connector).expect("a pool")
    }

    fn request() -> Request<Full<Bytes>> {
        Request::post("/v1/chat/completions").body(Full::new(Bytes::from_static(b"{}"))).expect("a request")
    }

    async fn read(response: Response<PooledBody>) -> Bytes {
        response.into_body().collect().await.expect("the body").to_bytes()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_carries_the_next_request() {
        let (address, accepted) = server(100).await;
        let pool = pool(address);
        for _ in 0..5 {
            let response = pool.send(request()).await.expect("an answer");
            assert_eq!(response.headers()["x-host"], address.to_string().as_str(), "the Host header");
            assert_eq!(read(response).await.len(), 100);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "five requests in turn on one connection");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_get_connections_of_their_own_and_leave_them_idle() {
        let (address, accepted) = server(10).await;
        let pool = pool(address);
        let responses = futures::future::join_all((0..4).map(|_| pool.send(request()))).await;
        for response in responses {
            assert_eq!(read(response.expect("an answer")).await.len(), 10);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        assert_eq!(pool.idle_count(), 4);
        for _ in 0..4 {
            read(pool.send(request()).await.expect("an answer")).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "the idle ones were used again");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_takes_its_connection_along() {
        let (address, accepted) = server(1 << 20).await;
        let pool = pool(address);
        let mut body = pool.send(request()).await.expect("an answer").into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| d.len() < 1 << 20), "the body came in parts");
        drop(body);
        assert_eq!(pool.idle_count(), 0, "a half-read connection is not reused");
        assert_eq!(read(pool.send(request()).await.expect("an answer")).await.len(), 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        let (address, accepted) = closing_server(Duration::ZERO).await;
        let pool = pool(address);
        for _ in 0..3 {
            // At once: the close may or may not have reached the pool's connection (it is
            // then dropped as closed, or the request comes back unsent and goes out on a new
            // one); either way the request must succeed.
            assert_eq!(read(pool.send(request()).await.expect("an answer")).await.len(), 10);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed_without_traffic() {
        let (address, accepted) = server(10).await;
        let base: Uri = format!("http://{address}").parse().expect("a URI");
        let pool =
            PlainPool::with_idle_timeout(&base, HttpConnector::new(), Duration::from_millis(150)).expect("a pool");
        read(pool.send(request()).await.expect("an answer")).await;
        assert_eq!(pool.idle_count(), 1);
        // The sweep runs every 50 ms; after 150 ms and one sweep more, nothing is idle.
        for _ in 0..100 {
            if pool.idle_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.idle_count(), 0, "the expired connection was swept");
        read(pool.send(request()).await.expect("an answer")).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the next request dialled anew");
    }

    /// A server whose answer comes in `parts` chunks 20 ms apart (chunked, as a stream of
    /// events comes), on a kept-alive connection.
    async fn streaming_server(parts: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        listen(move |stream| {
            serve_http(stream, move |request: Request<Incoming>| async move {
                let _ = request.into_body().collect().await;
                let events = futures::stream::unfold(0, move |part| async move {
                    if part == parts {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let event = Frame::data(Bytes::from(format!("data: {part}\n\n")));
                    Some((Ok::<_, Infallible>(event), part + 1))
                });
                Response::new(http_body_util::StreamBody::new(events))
            })
        })
        .await
    }

    #[tokio::test]
    async fn a_streamed_answer_arrives_part_by_part_through_the_body_that_drives_it() {
        let (address, accepted) = streaming_server(5).await;
        let pool = pool(address);
        for _ in 0..2 {
            let mut body = pool.send(request()).await.expect("an answer").into_body();
            // Nothing else drives the connection: each part is read because the body's poll
            // moved the connection on (a connection left undriven would never answer).
            for part in 0..5 {
                let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                    .await
                    .expect("the next part within 5 s")
                    .expect("a frame")
                    .expect("data");
                assert_eq!(frame.data_ref().expect("data").as_ref(), format!("data: {part}\n\n").as_bytes());
            }
            assert!(body.frame().await.is_none(), "the end of the stream");
            drop(body);
            assert_eq!(pool.idle_count(), 1, "the connection went back once the stream ended");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "both streams on one connection");
    }

    #[tokio::test]
    async fn the_sweep_drops_an_idle_connection_its_upstream_closed() {
        let (address, accepted) = closing_server(Duration::from_millis(100)).await;
        let pool = pool(address);
        read(pool.send(request()).await.expect("an answer")).await;
        assert_eq!(pool.idle_count(), 1);
        // The upstream closes its side 100 ms later; nobody drives the idle connection, so
        // only a sweep (which polls it) can see that before a request would.
        for _ in 0..100 {
            pool.sweep();
            if pool.idle_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.idle_count(), 0, "the closed connection was swept");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_host_header_names_the_host_and_a_port_other_than_80_only() {
        let host = |text: &str| host_header(&text.parse::<Authority>().expect("an authority"));
        assert_eq!(host("vllm.models.svc:8000"), "vllm.models.svc:8000");
        assert_eq!(host("vllm.models.svc:80"), "vllm.models.svc");
        assert_eq!(host("vllm.models.svc"), "vllm.models.svc");
        assert_eq!(host("user:secret@10.0.0.7:8000"), "10.0.0.7:8000");
        assert_eq!(host("[::1]:8000"), "[::1]:8000");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = listener.local_addr().expect("its address");
        drop(listener);
        let error = pool(address).send(request()).await.expect_err("nothing listens");
        assert!(matches!(error, UpstreamError::Connect(_)), "{error:?}");
    }
}
