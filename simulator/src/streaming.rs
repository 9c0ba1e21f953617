//! Response bodies that unfold in time: streams whose events follow the latency model (one
//! frame per token, flushed as it is produced), and plain bodies that misbehave on purpose.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame};
use tokio::time::{Instant, Sleep};

use crate::engine::{Admission, Simulator};
use crate::error::{Error, Result};
use crate::faults::Fault;

/// Turns the steps of a generation into the bytes of one wire format.
pub(crate) trait Renderer: Send + Unpin + 'static {
    /// Events sent when the first token is ready, before it (e.g. `message_start`).
    fn head(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// The events of token step `step` (one token of each choice that has one). Writing nothing
    /// is allowed (the time still passes).
    fn step(&mut self, step: usize, out: &mut Vec<u8>) -> Result<()>;
    /// Events after the last token (finish reason, usage, end marker).
    fn tail(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// An event that is not valid JSON (the `malformed` fault).
    fn malformed(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: {\"choices\": [{\"delta\": {\"content\": \n\n");
    }
}

/// How long a `reset` waits before it cuts the connection: the bytes sent before it are
/// flushed, so the client sees them and then the cut.
const RESET_PAUSE: Duration = Duration::from_millis(5);

/// How a generation unfolds (streamed or not).
#[derive(Debug, Clone)]
pub(crate) struct StreamPlan {
    /// Token steps (the longest choice).
    pub steps: usize,
    /// Tokens generated over all choices (for metrics).
    pub generated: usize,
    /// `finished_reason` for metrics.
    pub finish_reason: &'static str,
    /// A reset, malformed or drip fault.
    pub fault: Option<Fault>,
}

impl StreamPlan {
    /// A request that is only prefilled (embeddings, rerank).
    pub(crate) fn prefill_only(fault: Option<Fault>) -> Self {
        Self { steps: 0, generated: 0, finish_reason: "stop", fault }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prefill,
    Head,
    Step(usize),
    Done,
}

/// An event stream driven by the latency model: the head and first token at the time to first
/// token, each further token one inter-token gap later (on an absolute schedule, so timer
/// granularity does not accumulate), then the tail at once. No timer is armed for zero delays.
pub(crate) struct TimedStream<R> {
    sim: Simulator,
    admission: Admission,
    renderer: R,
    plan: StreamPlan,
    phase: Phase,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    last_token: Instant,
    reset_pending: bool,
}

impl<R: Renderer> TimedStream<R> {
    /// The body of a streamed response.
    pub(crate) fn body(sim: Simulator, admission: Admission, renderer: R, plan: StreamPlan) -> Body {
        let start = admission.admitted;
        Body::new(Self {
            sim,
            admission,
            renderer,
            plan,
            phase: Phase::Prefill,
            deadline: start,
            timer: None,
            armed: false,
            last_token: start,
            reset_pending: false,
        })
    }

    fn wait(&mut self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        self.deadline += delay;
        if self.deadline <= Instant::now() {
            return;
        }
        let deadline = self.deadline;
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
    }

    /// Waits `delay` from now, whatever the schedule says.
    fn pause(&mut self, delay: Duration) {
        self.deadline = Instant::now();
        self.wait(delay);
    }

    fn record_token(&mut self, step: usize) {
        let now = Instant::now();
        let metrics = self.sim.metrics();
        if step == 0 {
            metrics.ttft.observe((now - self.admission.arrived).as_secs_f64());
        } else {
            let gap = (now - self.last_token).as_secs_f64();
            metrics.inter_token_latency.observe(gap);
            metrics.time_per_output_token.observe(gap);
        }
        self.last_token = now;
    }

    fn next_gap(&mut self) -> Duration {
        match self.plan.fault {
            Some(Fault::Drip(interval)) => interval,
            _ => self.sim.token_delay(&mut self.admission),
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>) -> Result<()> {
        match self.phase {
            Phase::Prefill => {
                let prefill = self.sim.prefill_delay(&mut self.admission);
                self.wait(prefill);
                self.phase = Phase::Head;
                Ok(())
            }
            Phase::Head => {
                self.phase = Phase::Step(0);
                self.renderer.head(out)
            }
            Phase::Step(step) => {
                if let Some(Fault::Reset { after_tokens }) = self.plan.fault
                    && step >= after_tokens
                {
                    if !self.reset_pending {
                        // Pause first: the server flushes what was sent before the cut.
                        self.reset_pending = true;
                        self.pause(RESET_PAUSE);
                        return Ok(());
                    }
                    self.phase = Phase::Done;
                    return Err(Error::InjectedReset);
                }
                if step >= self.plan.steps {
                    self.phase = Phase::Done;
                    let reason = self.plan.finish_reason;
                    self.sim.finish(&mut self.admission, self.plan.generated, reason);
                    return self.renderer.tail(out);
                }
                self.record_token(step);
                self.phase = Phase::Step(step + 1);
                if step + 1 < self.plan.steps {
                    let gap = self.next_gap();
                    self.wait(gap);
                }
                if self.plan.fault == Some(Fault::Malformed) && step == self.plan.steps / 2 {
                    self.renderer.malformed(out);
                    Ok(())
                } else {
                    self.renderer.step(step, out)
                }
            }
            Phase::Done => Ok(()),
        }
    }
}

impl<R: Renderer> HttpBody for TimedStream<R> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            if this.armed {
                if let Some(timer) = this.timer.as_mut() {
                    ready!(timer.as_mut().poll(cx));
                }
                this.armed = false;
            }
            if this.phase == Phase::Done {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            if let Err(error) = this.emit(&mut out) {
                this.phase = Phase::Done;
                return Poll::Ready(Some(Err(error)));
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// The body of a non-streamed response, with the `malformed`, `reset` or `drip` fault applied.
pub(crate) fn plain_body(bytes: Vec<u8>, fault: Option<Fault>) -> Body {
    let bytes = Bytes::from(bytes);
    let half = bytes.len() / 2;
    match fault {
        Some(Fault::Malformed) => Body::from(bytes.slice(..half)),
        Some(Fault::Reset { .. }) => Body::new(Trickle::new(bytes, half, Duration::ZERO, true)),
        Some(Fault::Drip(interval)) => Body::new(Trickle::new(bytes, 16, interval, false)),
        _ => Body::from(bytes),
    }
}

/// Sends a body in pieces of `chunk` bytes, `interval` apart; with `abort`, fails after the
/// first piece instead of sending the rest.
struct Trickle {
    data: Bytes,
    chunk: usize,
    interval: Duration,
    abort: bool,
    timer: Option<Pin<Box<Sleep>>>,
    sent_any: bool,
}

impl Trickle {
    fn new(data: Bytes, chunk: usize, interval: Duration, abort: bool) -> Self {
        Self { data, chunk: chunk.max(1), interval, abort, timer: None, sent_any: false }
    }
}

impl HttpBody for Trickle {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let Some(timer) = this.timer.as_mut() {
            ready!(timer.as_mut().poll(cx));
            this.timer = None;
        }
        if this.sent_any && this.abort {
            if this.data.is_empty() {
                return Poll::Ready(Some(Err(Error::InjectedReset)));
            }
            // Pause (the piece sent is flushed), then cut.
            this.data.clear();
            let mut timer = Box::pin(tokio::time::sleep(RESET_PAUSE));
            if timer.as_mut().poll(cx).is_pending() {
                this.timer = Some(timer);
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err(Error::InjectedReset)));
        }
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        let piece = this.data.split_to(this.chunk.min(this.data.len()));
        this.sent_any = true;
        if !this.interval.is_zero() && !this.data.is_empty() {
            this.timer = Some(Box::pin(tokio::time::sleep(this.interval)));
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }
}
