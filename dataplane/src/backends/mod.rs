//! Live state of every backend (a provider's upstream model, or one pod's of a self-hosted
//! pool), kept across configuration reloads: requests and tokens in flight, the [`latency`] model, the error rate and the
//! [`health`] that ejects and probes back. The [`BackendRegistry`] lives on the gateway; a
//! snapshot's backends hold the state of their key, looked up once when the snapshot is built.
//!
//! On the request path everything is atomics: routing reads eligibility and load, an
//! [`Attempt`] counts itself in flight (with its per-token SLO hint, see [`TpotHints`], and
//! as waiting for a first byte until [`Attempt::answered`]) and reports its [`Verdict`] when it
//! ends (or, dropped because the client went away, reports nothing and still leaves). Routing
//! also reads the recent error rate ([`BackendState::error_rate`]), how long requests have
//! waited there with no answer to anyone ([`BackendState::silent_ms`]: a hung backend) and the
//! last hints requests brought ([`RecentHints`]). Only a failure, or a
//! success after failures, takes the backend's small health lock, never across an await.
//!
//! A pool's pods are backends of their own, keyed by provider, model and pod: each has its own
//! load, latency model, health and affinity identity (so a prefix sticks to one pod's KV cache),
//! and the pod's scraped [`PodSignals`] (shared by the pod's models). A reload that keeps a pod
//! keeps its state; a pod that leaves the configuration is forgotten with it.

pub mod health;
pub mod latency;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use self::health::{Health, Transition, Verdict};
use self::latency::{LOAD_BUCKET_NAMES, LatencyModel};
use crate::metrics::{BackendMetrics, Metrics, SloKind};
use crate::scrape::{PodSignals, PodSignalsView};

/// What identifies a backend across reloads: its Provider (`<namespace>/<name>`), the model
/// name upstream and, for a pool, the pod's base URL.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackendKey {
    /// The Provider.
    pub provider: String,
    /// The model upstream.
    pub model: String,
    /// The pod, for a pool.
    pub pod: Option<String>,
}

/// Whether routing may send a request to a backend now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Eligibility {
    /// Healthy.
    #[default]
    Eligible,
    /// Its ejection is over and this request claimed its half-open probe.
    Probe,
    /// Ejected (or another request is probing it).
    Ejected,
}

/// One backend's live state.
#[derive(Debug)]
pub struct BackendState {
    key: BackendKey,
    epoch: Instant,
    /// `epoch` on the wall clock, to show times.
    epoch_wall: Timestamp,
    /// Its identity for prefix affinity's rendezvous hashing (a hash of the key).
    pub affinity_id: u64,
    in_flight: AtomicU32,
    in_flight_tokens: AtomicU64,
    /// The per-token hints of the requests in flight.
    pub tpot_hints: TpotHints,
    /// What it has been seen to take.
    pub latency: LatencyModel,
    /// The error-rate window ([`health::window_add`]).
    window: AtomicU64,
    /// Ejected until (ms since `epoch`); 0 when healthy. Mirrors `health` for lock-free reads;
    /// a probe claims the backend by moving it forward.
    ejected_until: AtomicU64,
    /// When it last answered anyone (ms since `epoch`): a busy backend answers, a hung one not.
    last_answer: AtomicU64,
    /// Requests in flight still waiting for its first byte.
    awaiting: AtomicU32,
    /// When the present wait for a first byte began (ms since `epoch`): when `awaiting` last
    /// rose from zero, unless the wait before ended in a first-token timeout with no answer
    /// since (within [`STALL_MEMORY_MS`]): then the silence goes on.
    awaiting_since: AtomicU64,
    /// When an attempt last gave up waiting for its first byte (ms since `epoch`; 0: never).
    timed_out_at: AtomicU64,
    /// The last SLO hints a request brought here (see [`RecentHints`]).
    pub recent_hints: RecentHints,
    /// Whether `health` has anything to forget on a success.
    troubled: AtomicBool,
    health: Mutex<Health>,
    metrics: BackendMetrics,
    /// A pool pod's scraped load.
    pub pod: Option<Arc<PodSignals>>,
}

/// How long a first-token timeout keeps a backend's silence going when nothing answered since.
pub const STALL_MEMORY_MS: u64 = 30_000;
/// How long a due half-open probe waits for a request without tight hints before any request
/// may claim it.
pub const PROBE_GRACE_MS: u64 = 5_000;

impl BackendState {
    fn new(
        key: BackendKey,
        (epoch, epoch_wall): (Instant, Timestamp),
        metrics: BackendMetrics,
        pod: Option<Arc<PodSignals>>,
    ) -> Self {
        use std::hash::BuildHasher;
        Self {
            affinity_id: foldhash::fast::FixedState::with_seed(0xbac4).hash_one(&key),
            key,
            epoch,
            epoch_wall,
            in_flight: AtomicU32::new(0),
            in_flight_tokens: AtomicU64::new(0),
            tpot_hints: TpotHints::default(),
            latency: LatencyModel::default(),
            window: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            last_answer: AtomicU64::new(0),
            awaiting: AtomicU32::new(0),
            awaiting_since: AtomicU64::new(0),
            timed_out_at: AtomicU64::new(0),
            recent_hints: RecentHints::default(),
            troubled: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            metrics,
            pod,
        }
    }

    /// A state of its own, outside any registry (tests).
    pub fn detached(provider: &str, model: &str) -> Arc<Self> {
        let key = BackendKey { provider: provider.into(), model: model.into(), pod: None };
        Arc::new(Self::new(key, (Instant::now(), Timestamp::now()), BackendMetrics::default(), None))
    }

    /// A pool pod's state of its own, outside any registry (tests).
    pub fn detached_pod(provider: &str, model: &str, pod: &str, signals: Arc<PodSignals>) -> Arc<Self> {
        let key = BackendKey { provider: provider.into(), model: model.into(), pod: Some(pod.into()) };
        Arc::new(Self::new(key, (Instant::now(), Timestamp::now()), BackendMetrics::default(), Some(signals)))
    }

    /// Its key.
    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    /// Milliseconds on the registry's clock.
    pub fn now_ms(&self) -> u64 {
        // Never 0: 0 means "not ejected".
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Notes that it answered a request (a response head or a first event arrived).
    pub fn answered(&self) {
        self.last_answer.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether it answered any request after `since_ms`.
    pub fn answered_since(&self, since_ms: u64) -> bool {
        self.last_answer.load(Ordering::Relaxed) > since_ms
    }

    /// How long it has kept requests waiting for a first byte without answering anyone, ms: the
    /// time since the later of its last answer and the moment requests started waiting; 0 when
    /// none waits. A busy backend answers someone every so often, a hung one does not.
    pub fn silent_ms(&self, now_ms: u64) -> u64 {
        if self.awaiting.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let since = self.last_answer.load(Ordering::Relaxed).max(self.awaiting_since.load(Ordering::Relaxed));
        now_ms.saturating_sub(since)
    }

    /// Its error rate over the current error-rate window (failures, cut streams included, per
    /// answer), once the window holds [`ERROR_RATE_MIN_ANSWERS`] answers.
    pub fn error_rate(&self, now_ms: u64) -> Option<f32> {
        let (requests, failures) = health::window_counts(self.window.load(Ordering::Relaxed), now_ms);
        (requests >= ERROR_RATE_MIN_ANSWERS).then(|| failures as f32 / requests as f32)
    }

    /// Requests in flight to it.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its metric handles.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    /// Ends the current ejection now, as if its time were up (tests).
    #[cfg(test)]
    pub fn end_ejection(&self) {
        self.ejected_until.store(1, Ordering::Release);
    }

    /// Whether a request may go to it now; may claim its half-open probe (then this request
    /// must try it first, and the claim lapses after [`health::PROBE_HOLD_MS`] if it does not).
    /// A probe may wait a whole first-token timeout on a backend that is still broken, so it is
    /// left to a request that can afford it (`may_probe`: one without tight hints) for
    /// [`PROBE_GRACE_MS`] after it is due; after that any request claims it.
    /// A pool pod whose metrics cannot be reached ([`PodSignals::unreachable`]) is left out as
    /// if ejected, until a scrape connects again.
    pub fn eligibility(&self, may_probe: bool) -> Eligibility {
        if self.pod.as_ref().is_some_and(|p| p.unreachable()) {
            return Eligibility::Ejected;
        }
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return Eligibility::Eligible;
        }
        let now = self.now_ms();
        if now < until || (!may_probe && now < until + PROBE_GRACE_MS) {
            return Eligibility::Ejected;
        }
        let hold = now + health::PROBE_HOLD_MS;
        match self.ejected_until.compare_exchange(until, hold, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.metrics.probes_started.inc();
                Eligibility::Probe
            }
            Err(_) => Eligibility::Ejected,
        }
    }

    /// Counts a request in flight to it until the returned attempt is dropped. `tokens` is its
    /// estimated prompt plus output.
    pub fn start(self: &Arc<Self>, tokens: u64, probe: bool) -> Attempt {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight_tokens.fetch_add(tokens, Ordering::Relaxed);
        if self.awaiting.fetch_add(1, Ordering::Relaxed) == 0 {
            let now = self.now_ms();
            let timed_out = self.timed_out_at.load(Ordering::Relaxed);
            // Requests that gave up on a silent backend do not end its silence: only an answer
            // does (or STALL_MEMORY_MS passing), so a hung backend stays stalled after its
            // first-token timeouts instead of looking idle and fresh again.
            let silent_still =
                timed_out > self.last_answer.load(Ordering::Relaxed) && now.saturating_sub(timed_out) < STALL_MEMORY_MS;
            if !silent_still {
                self.awaiting_since.store(now, Ordering::Relaxed);
            }
        }
        Attempt {
            state: self.clone(),
            started: Instant::now(),
            bucket: latency::load_bucket(before + 1),
            tokens,
            probe,
            reported: false,
            expected: Expected::default(),
            tpot_bin: None,
            awaiting: true,
            first_token_seen: false,
        }
    }

    fn record(&self, verdict: Verdict, probe: bool) {
        let now = self.now_ms();
        let counted = verdict != Verdict::Neutral;
        let mut tripped = false;
        if counted {
            let failed = verdict != Verdict::Success;
            let previous = self
                .window
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| Some(health::window_add(w, now, failed)))
                .unwrap_or_else(|w| w);
            tripped =
                failed && health::window_tripped(health::window_counts(health::window_add(previous, now, true), now));
        }
        // The common case, a success of a healthy backend, takes no lock.
        if !probe
            && (verdict == Verdict::Neutral || verdict == Verdict::Success)
            && !self.troubled.load(Ordering::Acquire)
        {
            return;
        }
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let transition = health.record(verdict, probe, tripped, now);
        self.troubled.store(health.consecutive_failures > 0 || health.is_ejected(), Ordering::Release);
        match transition {
            Transition::None => {}
            Transition::Ejected { reason, until_ms } => {
                self.ejected_until.store(until_ms, Ordering::Release);
                self.metrics.ejections(reason).inc();
                self.metrics.ejected.set(1);
                if probe {
                    self.metrics.probes_failed.inc();
                }
                tracing::warn!(backend = %self.key.provider, model = %self.key.model, pod = self.key.pod.as_deref(),
                    reason = reason.as_str(), seconds = (until_ms - now) / 1000, "backend ejected");
            }
            Transition::Restored { probe } => {
                self.ejected_until.store(0, Ordering::Release);
                self.metrics.ejected.set(0);
                if probe {
                    self.metrics.probes_succeeded.inc();
                }
                tracing::info!(backend = %self.key.provider, model = %self.key.model, pod = self.key.pod.as_deref(),
                    probe, "backend restored");
            }
            Transition::ProbeReleased => self.ejected_until.store(health.ejected_until_ms, Ordering::Release),
        }
    }

    /// What `/config` shows.
    pub fn view(&self) -> BackendView {
        let now = self.now_ms();
        let health = self.health.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let until = self.ejected_until.load(Ordering::Acquire);
        let (requests, failures) = health::window_counts(self.window.load(Ordering::Relaxed), now);
        let (ttft, tpot) = self.latency.overall();
        let by_load = LOAD_BUCKET_NAMES
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let (ttft, tpot) = (self.latency.ttft[i].get(), self.latency.tpot[i].get());
                (ttft.is_some() || tpot.is_some()).then(|| LoadBucketView {
                    in_flight: name,
                    ttft_ms: ttft.map(|e| e.mean),
                    tpot_ms: tpot.map(|e| e.mean),
                    samples: ttft.map_or(0, |e| e.samples),
                })
            })
            .collect();
        let state = match until {
            _ if self.pod.as_ref().is_some_and(|p| p.unreachable()) => "unreachable",
            0 => "healthy",
            u if now < u => "ejected",
            _ => "probe_due",
        };
        BackendView {
            provider: self.key.provider.clone(),
            model: self.key.model.clone(),
            pod: self.key.pod.clone(),
            pod_load: self.pod.as_ref().map(|p| p.view()),
            ttft_ms_per_prompt_token: self.latency.prefill_slope().map(|(slope, _)| slope),
            in_flight: self.in_flight(),
            in_flight_tokens: self.in_flight_tokens.load(Ordering::Relaxed),
            ttft_ms: ttft,
            tpot_ms: tpot,
            response_ms_per_token: self.latency.response_per_token.get().map(|e| e.mean),
            by_load,
            window_requests: requests,
            window_error_rate: (requests > 0).then(|| f64::from(failures) / f64::from(requests)),
            consecutive_failures: health.consecutive_failures,
            tightest_tpot_hint_ms: self.tpot_hints.tightest(),
            health: state,
            ejections: health.ejections,
            ejected_until: (until > now)
                .then(|| self.epoch_wall.checked_add(Duration::from_millis(until)).ok())
                .flatten(),
        }
    }
}

/// One request's attempt on a backend: in flight until dropped. Report how it went with
/// [`Attempt::report`]; dropped unreported (the client went away mid-attempt), it only leaves.
#[derive(Debug)]
pub struct Attempt {
    state: Arc<BackendState>,
    started: Instant,
    bucket: usize,
    tokens: u64,
    probe: bool,
    reported: bool,
    expected: Expected,
    tpot_bin: Option<usize>,
    /// Still waiting for the backend's first byte.
    awaiting: bool,
    /// Its stream's first token is measured already ([`Attempt::first_token`]).
    first_token_seen: bool,
}

/// What the router expected of an attempt, to be compared with what it got.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Expected {
    /// Estimated prompt tokens (the prefill model learns against them).
    pub prompt_tokens: u64,
    /// Predicted time to first token, ms.
    pub ttft_ms: Option<f32>,
    /// The request's TTFT hint, ms.
    pub ttft_hint_ms: Option<u32>,
    /// The request's TPOT hint, ms.
    pub tpot_hint_ms: Option<u32>,
}

/// How an attempt ended, with what it measured.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// No answer: a verdict only.
    Missed(Verdict),
    /// A non-streaming answer: its head arrived at `head`, carrying `tokens` output tokens
    /// (`None`: not a success worth measuring, e.g. a 400).
    Whole {
        /// When its head arrived.
        head: Instant,
        /// Output tokens, for a 2xx.
        tokens: Option<u64>,
    },
    /// A stream whose first event arrived at `first`, ended at `end` with `tokens` output
    /// tokens, judged `verdict`.
    Stream {
        /// When its first event arrived.
        first: Instant,
        /// When it ended.
        end: Instant,
        /// Output tokens seen.
        tokens: u64,
        /// How it ended.
        verdict: Verdict,
    },
}

impl Attempt {
    /// When it was sent.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Notes what the router expected of it; a TPOT hint counts among the backend's running
    /// hints until the attempt leaves, and the hints become the backend's recent ones.
    pub fn expect(&mut self, expected: Expected) {
        if self.tpot_bin.is_none()
            && let Some(ms) = expected.tpot_hint_ms
        {
            self.tpot_bin = Some(self.state.tpot_hints.enter(ms));
        }
        if expected.ttft_hint_ms.is_some() || expected.tpot_hint_ms.is_some() {
            self.state.recent_hints.note(expected.ttft_hint_ms, expected.tpot_hint_ms, self.state.now_ms());
        }
        self.expected = expected;
    }

    /// Notes that the backend answered this attempt (a response head or a first event arrived):
    /// it no longer waits, and the backend is not hung.
    pub fn answered(&mut self) {
        self.stop_awaiting();
        self.state.answered();
    }

    /// Notes that its stream's first event arrived at `first`: the latency model learns this
    /// time to first token now rather than when the stream ends, so a cold backend is measured
    /// by its first few streams' first tokens (not their last ones) and a slowdown shows a
    /// stream's length sooner.
    pub fn first_token(&mut self, first: Instant) {
        if !std::mem::replace(&mut self.first_token_seen, true) {
            let ttft = first.saturating_duration_since(self.started);
            self.state.latency.observe_first_token(self.bucket, ttft, self.expected.prompt_tokens);
        }
    }

    fn stop_awaiting(&mut self) {
        if std::mem::replace(&mut self.awaiting, false) {
            self.state.awaiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Reports how it went and leaves.
    pub fn report(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    /// Reports how it went, once; later calls and the drop do nothing.
    pub fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let latency = &self.state.latency;
        let verdict = match outcome {
            Outcome::Missed(verdict) => {
                if verdict == Verdict::Timeout && self.awaiting {
                    self.state.timed_out_at.fetch_max(self.state.now_ms(), Ordering::Relaxed);
                }
                verdict
            }
            Outcome::Whole { head, tokens } => {
                if let Some(tokens) = tokens {
                    let elapsed = head.saturating_duration_since(self.started);
                    latency.observe_whole(self.bucket, elapsed, tokens, self.expected.prompt_tokens);
                }
                Verdict::Success
            }
            Outcome::Stream { first, end, tokens, verdict } => {
                let ttft = first.saturating_duration_since(self.started);
                let decode = (verdict == Verdict::Success).then(|| (end.saturating_duration_since(first), tokens));
                if !std::mem::replace(&mut self.first_token_seen, true) {
                    latency.observe_first_token(self.bucket, ttft, self.expected.prompt_tokens);
                }
                if let Some((decode, tokens)) = decode {
                    latency.observe_decode(self.bucket, decode, tokens);
                }
                self.judge(ttft, decode);
                verdict
            }
        };
        self.state.record(verdict, self.probe);
        self.leave();
    }

    /// Counts the prediction's error and whether the hints were met.
    fn judge(&self, ttft: Duration, decode: Option<(Duration, u64)>) {
        let metrics = &self.state.metrics;
        let ttft_ms = ttft.as_secs_f32() * 1000.0;
        if let Some(predicted) = self.expected.ttft_ms {
            metrics.ttft_prediction_error.observe(f64::from((ttft_ms - predicted).abs()) / 1000.0);
        }
        if let Some(hint) = self.expected.ttft_hint_ms {
            metrics.slo(SloKind::Ttft, ttft_ms <= hint as f32).inc();
        }
        if let (Some(hint), Some((decode, tokens))) = (self.expected.tpot_hint_ms, decode)
            && tokens > 1
        {
            let tpot_ms = decode.as_secs_f32() * 1000.0 / (tokens - 1) as f32;
            metrics.slo(SloKind::Tpot, tpot_ms <= hint as f32).inc();
        }
    }

    fn leave(&mut self) {
        self.stop_awaiting();
        if let Some(bin) = self.tpot_bin {
            self.state.tpot_hints.leave(bin);
        }
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.state.in_flight_tokens.fetch_sub(self.tokens, Ordering::Relaxed);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !std::mem::replace(&mut self.reported, true) {
            if self.probe {
                self.state.record(Verdict::Neutral, true);
            }
            self.leave();
        }
    }
}

/// Per-token SLO hints of the requests in flight on a backend, counted by bin, so the router
/// can see the tightest one in a few loads without a lock: a new request must not slow the
/// backend past what an interactive request already running there hoped for. A hint counts as
/// the bin's lower bound (rounded down: never looser than the request asked).
#[derive(Debug, Default)]
pub struct TpotHints {
    bins: [AtomicU32; TPOT_HINT_BINS.len()],
}

/// Lower bounds of the per-token hint bins, ms.
pub const TPOT_HINT_BINS: [u32; 14] = [1, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500];

impl TpotHints {
    /// The bin of a hint.
    pub fn bin(ms: u32) -> usize {
        TPOT_HINT_BINS.iter().rposition(|&low| low <= ms).unwrap_or(0)
    }

    /// Counts a request with hint `ms` in; returns its bin for [`TpotHints::leave`].
    pub fn enter(&self, ms: u32) -> usize {
        let bin = Self::bin(ms);
        self.bins[bin].fetch_add(1, Ordering::Relaxed);
        bin
    }

    /// Counts a request out of `bin`.
    pub fn leave(&self, bin: usize) {
        self.bins[bin].fetch_sub(1, Ordering::Relaxed);
    }

    /// The tightest hint in flight (its bin's lower bound), ms.
    pub fn tightest(&self) -> Option<u32> {
        self.bins.iter().position(|n| n.load(Ordering::Relaxed) > 0).map(|bin| TPOT_HINT_BINS[bin])
    }
}

/// Answers the error-rate window needs before routing weighs its error rate.
pub const ERROR_RATE_MIN_ANSWERS: u32 = 5;
/// How long a backend's recent hints stand for the hints its model is asked for, ms.
pub const RECENT_HINTS_MS: u64 = 30_000;

/// The SLO hints the last hinted request on a backend brought, and when: the router reads the
/// tightest over a model's backends as the hints it is being asked for, to keep the backends
/// that can meet them free of requests without hints. Three relaxed atomics, no lock; a reader
/// may see a hint with the time of the next, which moves nothing that matters.
#[derive(Debug, Default)]
pub struct RecentHints {
    ttft_ms: AtomicU32,
    tpot_ms: AtomicU32,
    at_ms: AtomicU64,
}

impl RecentHints {
    /// A request with these hints started at `now_ms`.
    pub fn note(&self, ttft_ms: Option<u32>, tpot_ms: Option<u32>, now_ms: u64) {
        self.ttft_ms.store(ttft_ms.unwrap_or(0), Ordering::Relaxed);
        self.tpot_ms.store(tpot_ms.unwrap_or(0), Ordering::Relaxed);
        self.at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// (TTFT, TPOT) hints seen within [`RECENT_HINTS_MS`] of `now_ms`, ms.
    pub fn get(&self, now_ms: u64) -> (Option<u32>, Option<u32>) {
        let at = self.at_ms.load(Ordering::Relaxed);
        if at == 0 || now_ms.saturating_sub(at) > RECENT_HINTS_MS {
            return (None, None);
        }
        let some = |v: u32| (v > 0).then_some(v);
        (some(self.ttft_ms.load(Ordering::Relaxed)), some(self.tpot_ms.load(Ordering::Relaxed)))
    }
}

/// Every backend's state, by key, kept across snapshots.
pub struct BackendRegistry {
    epoch: (Instant, Timestamp),
    states: Mutex<HashMap<BackendKey, Arc<BackendState>>>,
}

impl Default for BackendRegistry {
    fn default() -> Self {
        Self { epoch: (Instant::now(), Timestamp::now()), states: Mutex::default() }
    }
}

impl BackendRegistry {
    /// The state of `provider`'s `model`, made on first use.
    pub fn state(&self, provider: &str, model: &str, metrics: &Metrics) -> Arc<BackendState> {
        let key = BackendKey { provider: provider.into(), model: model.into(), pod: None };
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states
            .entry(key)
            .or_insert_with_key(|key| {
                Arc::new(BackendState::new(key.clone(), self.epoch, metrics.backend(provider, model, None), None))
            })
            .clone()
    }

    /// The state of `model` on pool `provider`'s `pod`, made on first use with the pod's
    /// scraped `signals`.
    pub fn pod_state(
        &self,
        provider: &str,
        model: &str,
        pod: &str,
        signals: &Arc<PodSignals>,
        metrics: &Metrics,
    ) -> Arc<BackendState> {
        let key = BackendKey { provider: provider.into(), model: model.into(), pod: Some(pod.into()) };
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states.entry(key).or_insert_with_key(|key| {
            let handles = metrics.backend(provider, model, Some(pod));
            Arc::new(BackendState::new(key.clone(), self.epoch, handles, Some(signals.clone())))
        });
        // A pod forgotten by the scrapes and named again gets new signals: follow them.
        if !state.pod.as_ref().is_some_and(|p| Arc::ptr_eq(p, signals)) {
            let handles = metrics.backend(provider, model, Some(pod));
            *state = Arc::new(BackendState::new(state.key.clone(), self.epoch, handles, Some(signals.clone())));
        }
        state.clone()
    }

    /// Forgets backends no configuration names any more.
    pub fn retain(&self, live: &std::collections::HashSet<BackendKey>) {
        self.states.lock().unwrap_or_else(PoisonError::into_inner).retain(|key, _| live.contains(key));
    }

    /// Every backend's state for `/config`, in key order.
    pub fn views(&self) -> Vec<BackendView> {
        let mut states: Vec<Arc<BackendState>> =
            self.states.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        states.sort_by(|a, b| a.key.cmp(&b.key));
        states.iter().map(|s| s.view()).collect()
    }
}

/// A backend as `/config` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendView {
    /// The Provider.
    pub provider: String,
    /// The model upstream.
    pub model: String,
    /// The pod, for a pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's scraped load, for a pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_load: Option<PodSignalsView>,
    /// Learned time to first token per prompt token, ms.
    pub ttft_ms_per_prompt_token: Option<f32>,
    /// Requests in flight.
    pub in_flight: u32,
    /// Estimated tokens (prompt and output) in flight.
    pub in_flight_tokens: u64,
    /// Mean time to first token of streams, ms.
    pub ttft_ms: Option<f32>,
    /// Mean time per output token of streams, ms.
    pub tpot_ms: Option<f32>,
    /// Mean time per output token of whole answers (to their head), ms.
    pub response_ms_per_token: Option<f32>,
    /// TTFT and TPOT by requests in flight at dispatch.
    pub by_load: Vec<LoadBucketView>,
    /// Answers in the current error-rate window.
    pub window_requests: u32,
    /// Their error rate.
    pub window_error_rate: Option<f64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The tightest per-token SLO hint among the requests in flight (rounded down), ms.
    pub tightest_tpot_hint_ms: Option<u32>,
    /// `healthy`, `ejected`, `probe_due`, or `unreachable` (a pool pod whose metrics cannot
    /// be reached).
    pub health: &'static str,
    /// Ejections in a row.
    pub ejections: u32,
    /// End of the current ejection.
    pub ejected_until: Option<Timestamp>,
}

/// One load bucket of a backend's latency model.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBucketView {
    /// Requests in flight at dispatch.
    pub in_flight: &'static str,
    /// Mean TTFT, ms.
    pub ttft_ms: Option<f32>,
    /// Mean TPOT, ms.
    pub tpot_ms: Option<f32>,
    /// TTFT samples.
    pub samples: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_dropped_mid_flight_leaves() {
        let state = BackendState::detached("ns/p", "m");
        let attempt = state.start(100, false);
        assert_eq!((state.in_flight(), state.in_flight_tokens.load(Ordering::Relaxed)), (1, 100));
        drop(attempt);
        assert_eq!((state.in_flight(), state.in_flight_tokens.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(state.view().consecutive_failures, 0, "a client going away is not the backend's fault");
    }

    #[test]
    fn a_timeout_ejects_and_the_probe_brings_it_back() {
        let state = BackendState::detached("ns/p", "m");
        state.start(1, false).report(Outcome::Missed(Verdict::Timeout));
        assert_eq!(state.eligibility(true), Eligibility::Ejected);
        assert_eq!(state.view().health, "ejected");
        // Time is up: one request claims the probe, the next waits for it.
        state.ejected_until.store(1, Ordering::Release);
        assert_eq!(state.eligibility(true), Eligibility::Probe);
        assert_eq!(state.eligibility(true), Eligibility::Ejected);
        let now = Instant::now();
        state.start(1, true).report(Outcome::Whole { head: now, tokens: Some(3) });
        assert_eq!(state.eligibility(true), Eligibility::Eligible);
        assert_eq!(state.view().health, "healthy");
    }

    #[test]
    fn a_due_probe_waits_for_a_request_that_can_afford_it() {
        let state = BackendState::detached("ns/p", "m");
        state.start(1, false).report(Outcome::Missed(Verdict::Timeout));
        // Just due: a tight request passes it by, a loose one claims it.
        let due = state.now_ms();
        state.ejected_until.store(due, Ordering::Release);
        assert_eq!(state.eligibility(false), Eligibility::Ejected);
        assert_eq!(state.eligibility(true), Eligibility::Probe);
        // Due for longer than the grace: any request claims it. (A state whose clock started
        // a minute ago, so that "longer than the grace" is in its past.)
        let key = BackendKey { provider: "ns/p".into(), model: "m".into(), pod: None };
        let epoch = Instant::now().checked_sub(Duration::from_secs(60)).expect("a minute ago");
        let state = Arc::new(BackendState::new(key, (epoch, Timestamp::now()), BackendMetrics::default(), None));
        state.start(1, false).report(Outcome::Missed(Verdict::Timeout));
        let overdue = state.now_ms() - PROBE_GRACE_MS - 1;
        state.ejected_until.store(overdue, Ordering::Release);
        assert_eq!(state.eligibility(false), Eligibility::Probe);
    }

    #[test]
    fn a_silence_that_ended_in_timeouts_goes_on_until_an_answer() {
        let state = BackendState::detached("ns/p", "m");
        let hung = state.start(1, false);
        std::thread::sleep(Duration::from_millis(30));
        let waited = state.silent_ms(state.now_ms());
        // Whole milliseconds on both ends: 30 ms of sleep reads as 29 at least.
        assert!(waited >= 29, "{waited}");
        hung.report(Outcome::Missed(Verdict::Timeout));
        assert_eq!(state.silent_ms(state.now_ms()), 0, "nobody waits");
        // The next request does not start the silence afresh: the backend never answered.
        let mut next = state.start(1, false);
        assert!(state.silent_ms(state.now_ms()) >= waited, "the silence goes on");
        next.answered();
        drop(next);
        // After an answer, a new wait starts from zero.
        let _fresh = state.start(1, false);
        assert!(state.silent_ms(state.now_ms()) < 30);
    }

    #[test]
    fn a_probe_dropped_unreported_frees_the_backend_for_another() {
        let state = BackendState::detached("ns/p", "m");
        state.start(1, false).report(Outcome::Missed(Verdict::Timeout));
        state.ejected_until.store(1, Ordering::Release);
        assert_eq!(state.eligibility(true), Eligibility::Probe);
        drop(state.start(1, true));
        assert_eq!(state.eligibility(true), Eligibility::Probe, "the next request may probe");
    }

    #[test]
    fn a_backend_that_answers_anyone_is_busy_not_hung() {
        let state = BackendState::detached("ns/p", "m");
        let sent = state.now_ms();
        assert!(!state.answered_since(sent));
        std::thread::sleep(Duration::from_millis(2));
        state.answered();
        assert!(state.answered_since(sent));
        assert!(!state.answered_since(state.now_ms()));
    }

    #[test]
    fn a_streams_first_token_is_learned_when_it_arrives_and_once() {
        let state = BackendState::detached("ns/p", "m");
        let mut attempt = state.start(1, false);
        let first = attempt.started() + Duration::from_millis(40);
        attempt.first_token(first);
        let learned = state.latency.ttft[0].get().expect("learned before the stream ends");
        assert_eq!((learned.mean, learned.samples), (40.0, 1));
        attempt.first_token(first + Duration::from_millis(500));
        attempt.report(Outcome::Stream {
            first,
            end: first + Duration::from_millis(90),
            tokens: 10,
            verdict: Verdict::Success,
        });
        let after = state.latency.ttft[0].get().expect("learned");
        assert_eq!((after.mean, after.samples), (40.0, 1), "the end of the stream does not count it again");
        assert_eq!(state.latency.tpot[0].get().map(|e| e.mean), Some(10.0), "the decode is learned at the end");
    }

    #[test]
    fn running_tpot_hints_are_seen_until_their_attempts_leave() {
        let state = BackendState::detached("ns/p", "m");
        assert_eq!(state.tpot_hints.tightest(), None);
        let mut batch = state.start(1, false);
        batch.expect(Expected { tpot_hint_ms: Some(400), ..Expected::default() });
        let mut interactive = state.start(1, false);
        interactive.expect(Expected { tpot_hint_ms: Some(27), ..Expected::default() });
        assert_eq!(state.tpot_hints.tightest(), Some(20), "rounded down to its bin");
        drop(interactive);
        assert_eq!(state.tpot_hints.tightest(), Some(300));
        batch.report(Outcome::Missed(Verdict::Failure));
        assert_eq!(state.tpot_hints.tightest(), None);
        assert_eq!(TpotHints::bin(0), 0);
        assert_eq!(TpotHints::bin(10_000), TPOT_HINT_BINS.len() - 1);
    }

    #[test]
    fn streams_feed_the_latency_model() {
        let state = BackendState::detached("ns/p", "m");
        let attempt = state.start(1, false);
        let started = attempt.started();
        let outcome = Outcome::Stream {
            first: started + Duration::from_millis(80),
            end: started + Duration::from_millis(170),
            tokens: 10,
            verdict: Verdict::Success,
        };
        attempt.report(outcome);
        let view = state.view();
        assert_eq!((view.ttft_ms, view.tpot_ms), (Some(80.0), Some(10.0)));
        assert_eq!(view.by_load.len(), 1);
        assert_eq!(view.window_requests, 1);
    }
}
