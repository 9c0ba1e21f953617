//! The body of every response: whole, or an upstream stream forwarded event by event under the
//! tier's idle and total limits (translated to the client's events for a Messages, Gemini or
//! Responses request). A stream settles its account when it ends, however it ends, from the
//! upstream's own events.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::accounting::{Accounting, CutShort};
use crate::protocol::sse::SseTap;
use crate::signing::StreamSigner;
use crate::upstream::client::UpstreamBody;

use super::stream_error_event;

/// A translation of an OpenAI chat completion stream into the client's own events.
pub trait ClientStream: Send {
    /// Translates the next bytes (whole events, as the tap passes them on).
    fn feed(&mut self, bytes: &[u8]) -> Bytes;
    /// The upstream's stream ended: whatever ends the client's.
    fn finish(&mut self) -> Bytes;
    /// The stream was cut short: the client's error event (none if its answer had ended).
    fn cut(&mut self, cut: CutShort) -> Bytes;
}

/// The body of every response the gateway sends. Never fails: upstream errors inside a stream
/// become a final SSE error event.
pub enum ResponseBody {
    /// A complete body.
    Full(Option<Bytes>),
    /// An upstream stream, forwarded event by event.
    Stream(Box<StreamBody>),
}

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Self::Stream(stream) => stream.poll_next(cx).map(|next| next.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Stream(stream) => stream.ended && stream.signer.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

/// A streaming answer in flight.
pub struct StreamBody {
    upstream: UpstreamBody,
    tap: SseTap,
    pending: Option<Bytes>,
    idle_limit: Duration,
    /// Armed once per idle limit, not moved on every event: when it fires, it is moved to the
    /// limit after the last data, if any came since (moving a timer takes the timer wheel's
    /// lock, once an event before).
    idle: Pin<Box<Sleep>>,
    /// When the upstream last sent data.
    last_data: tokio::time::Instant,
    deadline: Pin<Box<Sleep>>,
    accounting: Accounting,
    ended: bool,
    /// For a request in another format: what turns the upstream's events into the client's.
    translator: Option<Box<dyn ClientStream>>,
    /// For a project that signs its responses: what signs every byte sent, and closes the
    /// stream with the signature.
    signer: Option<StreamSigner>,
}

impl StreamBody {
    /// Wraps an upstream stream whose first (already tapped) bytes are `first`.
    pub fn new(
        upstream: UpstreamBody,
        tap: SseTap,
        first: Bytes,
        idle_limit: Duration,
        deadline: Instant,
        accounting: Accounting,
    ) -> Self {
        Self {
            upstream,
            tap,
            pending: (!first.is_empty()).then_some(first),
            idle_limit,
            idle: Box::pin(tokio::time::sleep(idle_limit)),
            last_data: tokio::time::Instant::now(),
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            accounting,
            ended: false,
            translator: None,
            signer: None,
        }
    }

    /// Signs every byte the client gets and ends the stream with the signature comment.
    pub fn sign(&mut self, signer: StreamSigner) {
        self.signer = Some(signer);
    }

    /// The same stream, sent to the client in its own format (Messages, Gemini or Responses
    /// events). The tap (and so the account) still reads the upstream's own events.
    pub fn translated(mut self, mut translator: Box<dyn ClientStream>) -> Self {
        self.pending = self.pending.take().map(|first| translator.feed(&first)).filter(|b| !b.is_empty());
        self.translator = Some(translator);
        self
    }

    /// Bytes from the tap, as the client gets them.
    fn out(&mut self, bytes: Bytes) -> Bytes {
        match &mut self.translator {
            None => bytes,
            Some(translator) => translator.feed(&bytes),
        }
    }

    /// The event that ends a stream cut short.
    fn cut(&mut self, cut: CutShort) -> Bytes {
        match &mut self.translator {
            None => stream_error_event(cut),
            Some(translator) => translator.cut(cut),
        }
    }

    fn end(&mut self, cut_short: Option<CutShort>) {
        self.ended = true;
        self.accounting.finish_stream(&mut self.tap, cut_short);
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let next = self.poll_events(cx);
        let Some(signer) = &mut self.signer else { return next };
        match next {
            Poll::Ready(Some(bytes)) => {
                signer.update(&bytes);
                Poll::Ready(Some(bytes))
            }
            Poll::Ready(None) => Poll::Ready(self.signer.take().map(StreamSigner::trailer)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.pending.take() {
            return Poll::Ready(Some(first));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.end(Some(CutShort::TotalTimeout));
            return Poll::Ready(Some(self.cut(CutShort::TotalTimeout)));
        }
        loop {
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.last_data = tokio::time::Instant::now();
                    let out = self.tap.feed(data);
                    let out = self.out(out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(out));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(request_id = %self.accounting.request_id(), backend = %self.accounting.backend(),
                        error = %error, "upstream stream broke");
                    let rest = self.tap.finish();
                    let rest = self.out(rest);
                    self.end(Some(CutShort::UpstreamError));
                    let mut event = rest.to_vec();
                    event.extend_from_slice(&self.cut(CutShort::UpstreamError));
                    return Poll::Ready(Some(Bytes::from(event)));
                }
                Poll::Ready(None) => {
                    let rest = self.tap.finish();
                    let mut rest = self.out(rest);
                    if let Some(translator) = &mut self.translator {
                        rest = [rest, translator.finish()].concat().into();
                    }
                    self.end(None);
                    return Poll::Ready((!rest.is_empty()).then_some(rest));
                }
                Poll::Pending => {
                    while self.idle.as_mut().poll(cx).is_ready() {
                        let due = self.last_data + self.idle_limit;
                        if due <= tokio::time::Instant::now() {
                            self.end(Some(CutShort::IdleTimeout));
                            return Poll::Ready(Some(self.cut(CutShort::IdleTimeout)));
                        }
                        self.idle.as_mut().reset(due);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
