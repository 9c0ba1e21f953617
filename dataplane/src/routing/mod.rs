//! Backend choice: the order in which a request tries a model's backends. Ejected backends are
//! left out, unless none of the model's would be left (then all are tried, as if none were
//! ejected: at least one backend always stays eligible); a backend whose ejection is over goes
//! first as its half-open probe. Priorities fail over in order; within a priority the Endpoint's
//! strategy orders the backends:
//!
//! - `sloAware` ([`slo_rank`]): each backend's TTFT and TPOT for this request are [`predict`]ed
//!   at its load + 1; those predicted to meet the hints with headroom (the TPOT hint being the
//!   tighter of the request's and the tightest already running there, so a batch request does
//!   not slow an interactive one past its hint) come first: healthy before degraded (a recent
//!   error rate of [`DEGRADED_ERROR_RATE`] or more, cut streams included, or stalled), then by
//!   prefix [`affinity`] (bounded load), then price, then load relative to the backend's
//!   capacity (the requests it runs before they queue, learned from where its first tokens
//!   start to queue, [`predict::capacity`], or a pod's scraped batch). Then the others by
//!   smallest predicted miss, those that only miss the first token (a one-off wait) before
//!   those whose decode misses the per-token hint (every token late), a recent error rate
//!   weighing as extra miss. An unmeasured backend is tried optimistically by a few requests at
//!   a time. When none is predicted to meet the hints, a sheddable tier's request is refused
//!   ([`Shed`]). A share of [`EXPLORE_SHARE`] of requests goes first to a backend not predicted
//!   to meet them, so a recovering backend is measured again.
//!
//!   **Packing.** A request without hints meets every backend, and "least loaded" would send it
//!   to the fast, small backend that tight hints need. So a request looser than the model's
//!   recent tightest hints (the last hints seen on each backend, tightest over the model, for
//!   30 s) goes first to backends with room (relative load at most 1), and among them to those
//!   whose decode cannot meet the tight per-token hint anyway, keeping the fast backends'
//!   headroom for the requests that need it; only when those are full does it take a fast
//!   backend's slot.
//!
//!   **Stalls.** A backend that keeps requests waiting past their predicted first token while
//!   answering no one ([`predict::overdue`]) is predicted slower by that silence and counted
//!   degraded, long before the first-token timeout ejects it.
//! - `weighted` draws by weight; `leastRequest` takes the less busy of two weighted draws;
//!   `roundRobin` takes each in turn; `priorityFailover` keeps the listed order; `queueScore`
//!   scores as llm-d's default scorer does, without prediction.
//!
//! A self-hosted pool's pods are backends of their own (see [`crate::backends`]), so all of the
//! above holds per pod: prefix affinity picks a pod (whose KV cache holds the prefix) within the
//! load bound, a pod's scraped queue raises its predicted TTFT, and ejection leaves out one pod.
//!
//! The first priority group decides (hints met, missed, shed); later groups are failover only.
//! Everything is decided on the request's stack: candidates live in a fixed array for models of
//! up to [`INLINE`] backends, no lock is taken, and the live state is read with relaxed atomic
//! loads. [`rank`] is pure over plain candidates and unit-tested; [`plan`] reads them from the
//! live state.

pub mod affinity;
pub mod predict;

use std::cmp::Ordering;
use std::time::Duration;

use rand::Rng;
use sluice_crds::api::RoutingPolicy;
use sluice_crds::config::PricingConfig;

use crate::backends::{BackendState, Eligibility, Expected};
use crate::metrics::DecisionReason;
use crate::snapshot::Model;

pub use self::predict::{Predicted, predict};

/// Models with up to this many backends are planned without a heap allocation.
pub const INLINE: usize = 8;
/// Share of `sloAware` requests sent first to a backend not predicted to meet their hints that
/// has answered no one for [`EXPLORE_IDLE_MS`].
pub const EXPLORE_SHARE: f64 = 0.03;
/// A backend that answered someone this recently is being measured: exploring it would only
/// spend a request on a predicted miss.
pub const EXPLORE_IDLE_MS: u64 = 1_000;
/// How long a request looser than the model's tightest recent hints may be predicted to wait
/// for its first token at a backend those hints do not need before it takes a needed one's
/// slot, ms (see the module's comment on packing).
pub const LOOSE_WAIT_MS: f32 = 2_000.0;
/// Requests in flight an unmeasured backend takes optimistically.
const COLD_TRIALS: u32 = 2;
/// Output tokens assumed for pricing when a request sets no `max_tokens`.
const DEFAULT_OUTPUT_TOKENS: u64 = 256;
/// Longest `Retry-After` of a shed request, s.
const MAX_RETRY_AFTER_S: f32 = 30.0;
/// A recent error rate (failures and cut streams per answer) from which a backend is degraded:
/// ranked after every healthy one that meets the hints.
pub const DEGRADED_ERROR_RATE: f32 = 0.1;
/// How much a predicted miss grows per unit of recent error rate (a 30% error rate weighs as a
/// 60% excess over the hint): a failed request misses whatever its latency.
const ERROR_MISS_WEIGHT: f32 = 2.0;

/// What the router knows about a request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RouteRequest {
    /// Time-to-first-token hint, ms.
    pub ttft_hint_ms: Option<u32>,
    /// Time-per-output-token hint, ms.
    pub tpot_hint_ms: Option<u32>,
    /// The prompt prefix's affinity hash.
    pub prefix: Option<u64>,
    /// Its tier's priority is negative.
    pub sheddable: bool,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// `max_tokens`, if set.
    pub max_tokens: Option<u64>,
}

/// A sheddable request no backend is predicted to serve within its hints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shed {
    /// When to try again (the best backend's predicted time to first token, at least 1 s).
    pub retry_after: Duration,
}

/// One step of a plan: a backend to try.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Step {
    /// Index into the model's backends.
    pub index: usize,
    /// Whether this is the backend's half-open probe.
    pub probe: bool,
    /// The time to first token predicted for the request there when the plan was made, ms
    /// (only when the policy predicts: see [`Plan::predicted`]).
    pub ttft_ms: Option<f32>,
}

/// The order in which to try a model's backends.
#[derive(Debug)]
pub struct Plan {
    steps: Inline<Step>,
    /// Why the first backend was chosen.
    pub reason: DecisionReason,
    /// Whether the policy predicted each backend's latency (`sloAware`), so that a step's
    /// `ttft_ms` is what [`expected`] would say at once.
    pub predicted: bool,
}

impl Plan {
    /// The backends to try, in order.
    pub fn steps(&self) -> &[Step] {
        self.steps.as_slice()
    }
}

/// How well a candidate fits a request's hints.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Fit {
    /// Predicted to meet them (or there are none).
    #[default]
    Meets,
    /// Unmeasured, with room for an optimistic trial.
    Cold,
    /// Unmeasured and already trying requests: after those predicted to meet.
    Unknown,
    /// Predicted to miss: whether the TPOT hint is missed (every token late, not just a wait
    /// for the first), and by how much (relative excess summed over TTFT and TPOT, plus the
    /// error-rate penalty).
    Misses {
        /// The per-token hint is missed.
        tpot: bool,
        /// Relative excess.
        by: f32,
    },
}

impl Fit {
    fn class(self) -> u8 {
        match self {
            Self::Meets | Self::Cold => 0,
            Self::Unknown => 1,
            Self::Misses { .. } => 2,
        }
    }
}

/// A backend as the router sees it for one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    /// Index into the model's backends.
    pub index: usize,
    /// Its failover priority.
    pub priority: u32,
    /// Its weight.
    pub weight: u32,
    /// This request claimed its half-open probe.
    pub probe: bool,
    /// Requests in flight.
    pub load: u32,
    /// Predicted time to first token at load + 1.
    pub ttft: Option<Predicted>,
    /// Predicted time per output token at load + 1.
    pub tpot: Option<Predicted>,
    /// Whether it has been measured (see [`predict`]); unmeasured ones are cold.
    pub measured: bool,
    /// The tightest TPOT hint running on it, ms.
    pub tightest_tpot_ms: Option<u32>,
    /// Predicted time per output token at its present load (without this request): a running
    /// hint it misses already is not one this request could break.
    pub tpot_now: Option<Predicted>,
    /// This request's price there (relative).
    pub price: f64,
    /// Requests it runs at once before they queue ([`predict::capacity`], or a pod's scraped
    /// batch when requests wait there); `None`: unknown (load is then compared raw).
    pub capacity: Option<u32>,
    /// Recent error rate (failures and cut streams per answer), 0 until measured.
    pub error_rate: f32,
    /// Keeps requests waiting past their predicted first token without answering anyone.
    pub stalled: bool,
    /// Answered no one for [`EXPLORE_IDLE_MS`]: unmeasured lately, worth exploring.
    pub idle: bool,
    /// The last TTFT hint a request brought there lately, ms.
    pub recent_ttft_hint_ms: Option<u32>,
    /// The last TPOT hint a request brought there lately, ms.
    pub recent_tpot_hint_ms: Option<u32>,
    /// Its rendezvous identity.
    pub affinity_id: u64,
    /// A weighted random key (larger first): the last tie-break.
    pub draw: f64,
    fit: Fit,
    owner: bool,
    /// Predicted to meet the model's recent tightest hints: kept for them.
    reserved: bool,
}

impl Candidate {
    /// Its load with this request, relative to its capacity (above 1: this request queues).
    fn relative_load(&self) -> f32 {
        (self.load as f32 + 1.0) / self.capacity.unwrap_or(1).max(1) as f32
    }

    /// A recent error rate or a stall ranks it after the healthy ones.
    fn degraded(&self) -> bool {
        self.stalled || self.error_rate >= DEGRADED_ERROR_RATE
    }

    /// Whether a looser request may go there while packing: a backend kept for the tight hints
    /// while this request would not queue there; any other while its first token is predicted
    /// within [`LOOSE_WAIT_MS`] (a short queue there costs the loose request little and keeps
    /// the fast backends for the requests that need them).
    fn room_for_loose(&self) -> bool {
        match self.ttft {
            Some(first) if !self.reserved => first.mean <= LOOSE_WAIT_MS,
            _ => self.relative_load() <= 1.0,
        }
    }
}

/// Random draws one ranking needs, drawn up front so [`rank`] stays pure.
#[derive(Clone, Copy, Debug, Default)]
pub struct Draws {
    /// Uniform in [0, 1): below [`EXPLORE_SHARE`], explore.
    pub explore: f64,
    /// Uniform in [0, 1): which backend to explore.
    pub pick: f64,
    /// Round-robin position.
    pub turn: usize,
}

/// What ranking the first group decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ranked {
    /// Try in this order; the first was chosen for this reason.
    Route(DecisionReason),
    /// Refuse the request.
    Shed(Shed),
}

/// Orders `candidates` (sorted by priority) for `request` under `policy`: each priority group in
/// turn; the first group's verdict is returned.
pub fn rank(candidates: &mut [Candidate], policy: RoutingPolicy, request: &RouteRequest, draws: Draws) -> Ranked {
    let mut verdict = None;
    let mut start = 0;
    while start < candidates.len() {
        let priority = candidates[start].priority;
        let end =
            candidates[start..].iter().position(|c| c.priority != priority).map_or(candidates.len(), |n| start + n);
        let group = &mut candidates[start..end];
        let ranked = match policy {
            RoutingPolicy::SloAware => slo_rank(group, request, draws),
            RoutingPolicy::Weighted => by_draw(group),
            RoutingPolicy::LeastRequest => {
                by_draw(group);
                if group.len() >= 2 && group[1].load < group[0].load {
                    group.swap(0, 1);
                }
                Ranked::Route(DecisionReason::Policy)
            }
            RoutingPolicy::RoundRobin => {
                // Weight 0 last; the rest in configuration order, rotated by the turn.
                group.sort_unstable_by_key(|c| (c.weight == 0, c.index));
                let turning = group.iter().filter(|c| c.weight > 0).count();
                if turning > 0 {
                    group[..turning].rotate_left(draws.turn % turning);
                }
                Ranked::Route(DecisionReason::Policy)
            }
            RoutingPolicy::PriorityFailover => {
                group.sort_unstable_by_key(|c| c.index);
                Ranked::Route(DecisionReason::Policy)
            }
            RoutingPolicy::QueueScore => queue_score(group, request),
        };
        // A claimed probe goes first in its group, so that it is tried.
        let ranked = match group.iter().position(|c| c.probe) {
            Some(probe) => {
                group[..=probe].rotate_right(1);
                Ranked::Route(DecisionReason::Probe)
            }
            None => ranked,
        };
        verdict.get_or_insert(ranked);
        start = end;
    }
    verdict.unwrap_or(Ranked::Route(DecisionReason::Policy))
}

/// Weighted random order (Efraimidis-Spirakis keys, drawn by the caller).
fn by_draw(group: &mut [Candidate]) -> Ranked {
    group.sort_unstable_by(|a, b| b.draw.total_cmp(&a.draw));
    Ranked::Route(DecisionReason::Policy)
}

/// The SLO-aware order of one priority group (see the module's comment).
fn slo_rank(group: &mut [Candidate], request: &RouteRequest, draws: Draws) -> Ranked {
    // The hints this model is asked for lately (the tightest recent ones over its backends): a
    // request looser than them keeps off the backends that can meet them while others have room.
    let tightest = |a: Option<u32>, b: Option<u32>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let (ref_ttft, ref_tpot) = group.iter().fold((None, None), |(ttft, tpot), c| {
        (tightest(ttft, c.recent_ttft_hint_ms), tightest(tpot, c.recent_tpot_hint_ms))
    });
    let looser = |own: Option<u32>, reference: Option<u32>| match (own, reference) {
        (Some(own), Some(reference)) => own > reference,
        _ => true,
    };
    let packs = (ref_ttft.is_some() || ref_tpot.is_some())
        && looser(request.ttft_hint_ms, ref_ttft)
        && looser(request.tpot_hint_ms, ref_tpot);
    for c in group.iter_mut() {
        c.fit = fit(c, request);
        c.reserved = packs && c.measured && can_meet(c, ref_ttft, ref_tpot);
    }
    mark_owner(group, request.prefix, true, |c| c.fit.class() == 0);
    group.sort_unstable_by(|a, b| {
        let class = a.fit.class().cmp(&b.fit.class());
        let within = match (a.fit, b.fit) {
            (Fit::Misses { tpot: x, by: dx }, Fit::Misses { tpot: y, by: dy }) => x.cmp(&y).then(dx.total_cmp(&dy)),
            (Fit::Unknown, Fit::Unknown) => Ordering::Equal,
            _ => a
                .degraded()
                .cmp(&b.degraded())
                .then_with(|| {
                    // Packing: room first, then the backends not needed for the tightest hints.
                    if packs {
                        b.room_for_loose().cmp(&a.room_for_loose()).then(a.reserved.cmp(&b.reserved))
                    } else {
                        Ordering::Equal
                    }
                })
                .then(b.owner.cmp(&a.owner))
                .then(a.price.total_cmp(&b.price)),
        };
        class
            .then(within)
            .then(a.relative_load().total_cmp(&b.relative_load()))
            .then(a.load.cmp(&b.load))
            .then(b.draw.total_cmp(&a.draw))
    });
    let Some(first) = group.first().copied() else { return Ranked::Route(DecisionReason::Policy) };
    // Explore a backend not predicted to meet the hints that nothing measures lately; a stalled
    // one (it may hold the request for a whole first-token timeout) only with a loose request.
    let loose = packs || (request.ttft_hint_ms.is_none() && request.tpot_hint_ms.is_none());
    let explorable = |c: &Candidate| c.fit != Fit::Meets && c.idle && (loose || !c.stalled);
    let unsure = group.iter().skip(1).filter(|c| explorable(c)).count();
    if unsure > 0 && draws.explore < EXPLORE_SHARE {
        let nth = ((draws.pick * unsure as f64) as usize).min(unsure - 1);
        if let Some(at) = group.iter().enumerate().skip(1).filter(|(_, c)| explorable(c)).nth(nth).map(|(i, _)| i) {
            group[..=at].rotate_right(1);
            return Ranked::Route(DecisionReason::Explore);
        }
    }
    match first.fit {
        Fit::Meets if first.owner => Ranked::Route(DecisionReason::Affinity),
        Fit::Meets => Ranked::Route(DecisionReason::SloMet),
        Fit::Cold | Fit::Unknown => Ranked::Route(DecisionReason::Cold),
        Fit::Misses { .. } if request.sheddable && !group.iter().any(|c| c.probe) => {
            let ttft_ms = first.ttft.map_or(1_000.0, |p| p.mean);
            let seconds = (ttft_ms / 1000.0).ceil().clamp(1.0, MAX_RETRY_AFTER_S);
            Ranked::Shed(Shed { retry_after: Duration::from_secs(seconds as u64) })
        }
        Fit::Misses { .. } => Ranked::Route(DecisionReason::SmallestMiss),
    }
}

/// How `c` fits the request's hints.
fn fit(c: &Candidate, request: &RouteRequest) -> Fit {
    if !c.measured {
        return if c.load < COLD_TRIALS { Fit::Cold } else { Fit::Unknown };
    }
    // The tightest running hint is protected only while the backend meets it.
    let running = c.tightest_tpot_ms.filter(|&ms| c.tpot_now.is_none_or(|now| now.mean <= ms as f32));
    let tpot_hint = match (request.tpot_hint_ms, running) {
        (Some(own), Some(running)) => Some(own.min(running)),
        (own, running) => own.or(running),
    };
    let excess = |predicted: Option<Predicted>, hint: Option<u32>| match (predicted, hint) {
        (Some(p), Some(hint)) => ((p.high - hint as f32) / hint as f32).max(0.0),
        _ => 0.0,
    };
    let (ttft, tpot) = (excess(c.ttft, request.ttft_hint_ms), excess(c.tpot, tpot_hint));
    if ttft + tpot > 0.0 {
        Fit::Misses { tpot: tpot > 0.0, by: ttft + tpot + ERROR_MISS_WEIGHT * c.error_rate }
    } else {
        Fit::Meets
    }
}

/// Whether `c` is one of the backends the model's tightest recent hints need: its decode meets
/// the per-token hint (a queue before the first token comes and goes with load, a slow decode
/// does not), or with only a first-token hint, its first token meets it.
fn can_meet(c: &Candidate, ttft_hint: Option<u32>, tpot_hint: Option<u32>) -> bool {
    let within = |p: Option<Predicted>, hint: u32| p.is_some_and(|p| p.high <= hint as f32);
    match (tpot_hint, ttft_hint) {
        (Some(tpot), _) => within(c.tpot, tpot),
        (None, Some(ttft)) => within(c.ttft, ttft),
        (None, None) => false,
    }
}

/// Marks the backend that owns the request's prefix among those `eligible`: the highest
/// rendezvous score, among those whose load stays within the bound ([`affinity::load_cap`])
/// when `bounded`.
fn mark_owner(group: &mut [Candidate], prefix: Option<u64>, bounded: bool, eligible: impl Fn(&Candidate) -> bool) {
    let Some(prefix) = prefix else { return };
    let total: u32 = group.iter().map(|c| c.load).sum();
    let cap = if bounded { affinity::load_cap(total, group.len()) } else { u32::MAX };
    let owner = group
        .iter()
        .enumerate()
        .filter(|(_, c)| eligible(c) && c.load < cap)
        .max_by_key(|(_, c)| affinity::score(prefix, c.affinity_id))
        .map(|(i, _)| i);
    if let Some(owner) = owner {
        group[owner].owner = true;
    }
}

/// llm-d's default scorer without KV-cache use: 2 x queue score (the fewest in flight scores 1,
/// the most 0) + 3 x prefix score (1 on the backend owning the prefix); highest first.
fn queue_score(group: &mut [Candidate], request: &RouteRequest) -> Ranked {
    // llm-d bounds nothing here: the queue score is what weighs load.
    mark_owner(group, request.prefix, false, |_| true);
    let (low, high) = group.iter().fold((u32::MAX, 0), |(lo, hi), c| (lo.min(c.load), hi.max(c.load)));
    let score = |c: &Candidate| {
        let queue = if high > low { f64::from(high - c.load) / f64::from(high - low) } else { 1.0 };
        2.0 * queue + 3.0 * f64::from(u8::from(c.owner))
    };
    group.sort_unstable_by(|a, b| score(b).total_cmp(&score(a)).then(b.draw.total_cmp(&a.draw)));
    let owner = group.first().is_some_and(|c| c.owner);
    Ranked::Route(if owner { DecisionReason::Affinity } else { DecisionReason::Policy })
}

/// Weighted random key: `u^(1/w)`, larger first; weight 0 below every other.
fn draw_key(weight: u32, rng: &mut impl Rng) -> f64 {
    let u = rng.random::<f64>();
    if weight == 0 { -u } else { u.powf(1.0 / f64::from(weight)) }
}

/// This request's relative price on a backend.
fn price(pricing: Option<&PricingConfig>, request: &RouteRequest) -> f64 {
    pricing.map_or(0.0, |p| {
        request.prompt_tokens as f64 * p.input_per_million
            + request.max_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS) as f64 * p.output_per_million
    })
}

/// The predicted TTFT and TPOT of `request` on `state`, one more request there (see
/// [`predict::predict_request`]: its load, a pool pod's scraped queue, the prompt's size).
/// A silent backend past its first token is predicted slower by its silence
/// ([`predict::overdue`]).
pub fn predict_next(state: &BackendState, request: &RouteRequest) -> (Option<Predicted>, Option<Predicted>) {
    let seen = observe(state, request, state.now_ms());
    (seen.ttft, seen.tpot)
}

/// What the router reads of one backend for one request.
#[derive(Clone, Copy, Debug, Default)]
struct Observed {
    ttft: Option<Predicted>,
    tpot: Option<Predicted>,
    tpot_now: Option<Predicted>,
    capacity: Option<u32>,
    stalled: bool,
}

fn observe(state: &BackendState, request: &RouteRequest, now_ms: u64) -> Observed {
    let model = &state.latency;
    let pod = state.pod.as_ref().and_then(|p| p.fresh());
    let signals = predict::Signals {
        in_flight: state.in_flight(),
        pod,
        prompt_tokens: request.prompt_tokens,
        prefill: model.prefill_slope(),
    };
    let ttft_buckets = model.ttft.each_ref().map(|e| e.get());
    let tpot_buckets = model.tpot.each_ref().map(|e| e.get());
    let (mut ttft, tpot) = predict::predict_request(&ttft_buckets, &tpot_buckets, &signals);
    let batch = signals.in_flight.max(pod.map_or(0, |p| p.running));
    let tpot_now = if batch > 0 { predict::predict(&tpot_buckets, batch) } else { None };
    let late = ttft.and_then(|first| predict::overdue(first, state.silent_ms(now_ms) as f32));
    if late.is_some() {
        ttft = late;
    }
    // A pod with requests waiting shows its batch: what it runs is what it takes.
    let scraped = pod.filter(|p| p.waiting > 0).map(|p| p.running.max(1));
    let capacity = match (predict::capacity(&ttft_buckets), scraped) {
        (Some(learned), Some(running)) => Some(learned.min(running)),
        (learned, running) => learned.or(running),
    };
    Observed { ttft, tpot, tpot_now, capacity, stalled: late.is_some() }
}

/// What the router expects of an attempt on `state`, for its report and the response header.
pub fn expected(state: &BackendState, request: &RouteRequest) -> Expected {
    expected_with(predict_next(state, request).0.map(|p| p.mean), request)
}

/// [`expected`] of a plan's first step, from the prediction the plan made a moment ago (the
/// backend's state is read once per request, not twice); a later step predicts afresh, after
/// the attempts before it changed what the backends know.
pub fn expected_of(plan: &Plan, attempt: usize, state: &BackendState, request: &RouteRequest) -> Expected {
    match plan.steps().get(attempt) {
        Some(step) if attempt == 0 && plan.predicted => expected_with(step.ttft_ms, request),
        _ => expected(state, request),
    }
}

fn expected_with(ttft_ms: Option<f32>, request: &RouteRequest) -> Expected {
    Expected {
        prompt_tokens: request.prompt_tokens,
        ttft_ms,
        ttft_hint_ms: request.ttft_hint_ms,
        tpot_hint_ms: request.tpot_hint_ms,
    }
}

/// Plans the order in which to try `model`'s backends for `request` under `policy`, from their
/// live state, or sheds the request.
pub fn plan(model: &Model, policy: RoutingPolicy, request: &RouteRequest, rng: &mut impl Rng) -> Result<Plan, Shed> {
    let backends = &model.backends;
    let predicting = policy == RoutingPolicy::SloAware;
    // One clock read for every backend (they share the registry's epoch).
    let now_ms = if predicting { backends.first().map_or(0, |b| b.state.now_ms()) } else { 0 };
    let mut candidates: Inline<Candidate> = Inline::with_capacity(backends.len());
    let mut any_eligible = false;
    // A probe may cost a whole first-token timeout: requests without hints take it first.
    let may_probe = !predicting || (request.ttft_hint_ms.is_none() && request.tpot_hint_ms.is_none());
    // Each backend's eligibility is read once: reading may claim its probe.
    let mut eligibility: Inline<Eligibility> = Inline::with_capacity(backends.len());
    for b in backends {
        let e = b.state.eligibility(may_probe);
        any_eligible |= e != Eligibility::Ejected;
        eligibility.push(e);
    }
    for (index, (b, &e)) in backends.iter().zip(eligibility.as_slice()).enumerate() {
        if any_eligible && e == Eligibility::Ejected {
            continue;
        }
        let seen = if predicting { observe(&b.state, request, now_ms) } else { Observed::default() };
        let (recent_ttft_hint_ms, recent_tpot_hint_ms) =
            if predicting { b.state.recent_hints.get(now_ms) } else { (None, None) };
        let (ttft, tpot) = (seen.ttft, seen.tpot);
        candidates.push(Candidate {
            index,
            priority: b.priority,
            weight: b.weight,
            probe: e == Eligibility::Probe,
            load: b.state.in_flight(),
            ttft,
            tpot,
            measured: ttft.is_some(),
            tightest_tpot_ms: if predicting { b.state.tpot_hints.tightest() } else { None },
            tpot_now: seen.tpot_now,
            price: if predicting { price(b.pricing.as_ref(), request) } else { 0.0 },
            capacity: seen.capacity,
            error_rate: if predicting { b.state.error_rate(now_ms).unwrap_or(0.0) } else { 0.0 },
            stalled: seen.stalled,
            idle: predicting && !b.state.answered_since(now_ms.saturating_sub(EXPLORE_IDLE_MS)),
            recent_ttft_hint_ms,
            recent_tpot_hint_ms,
            affinity_id: b.state.affinity_id,
            draw: draw_key(b.weight, rng),
            ..Candidate::default()
        });
    }
    let draws = Draws {
        explore: if predicting { rng.random() } else { 1.0 },
        pick: if predicting { rng.random() } else { 0.0 },
        turn: if policy == RoutingPolicy::RoundRobin {
            model.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        },
    };
    let reason = match rank(candidates.as_mut_slice(), policy, request, draws) {
        Ranked::Route(reason) => reason,
        Ranked::Shed(shed) => return Err(shed),
    };
    let mut steps = Inline::with_capacity(candidates.as_slice().len());
    for c in candidates.as_slice() {
        steps.push(Step { index: c.index, probe: c.probe, ttft_ms: c.ttft.map(|p| p.mean) });
    }
    if let Some(first) = steps.as_slice().first() {
        backends[first.index].state.metrics().decision(policy, reason).inc();
    }
    Ok(Plan { steps, reason, predicted: predicting })
}

/// A list kept on the stack up to [`INLINE`] items, on the heap beyond.
#[derive(Debug)]
enum Inline<T: Copy + Default> {
    Stack([T; INLINE], usize),
    Heap(Vec<T>),
}

impl<T: Copy + Default> Inline<T> {
    fn with_capacity(n: usize) -> Self {
        if n <= INLINE { Self::Stack([T::default(); INLINE], 0) } else { Self::Heap(Vec::with_capacity(n)) }
    }

    fn push(&mut self, item: T) {
        match self {
            Self::Stack(items, len) if *len < INLINE => {
                items[*len] = item;
                *len += 1;
            }
            Self::Stack(items, len) => {
                let mut heap = items[..*len].to_vec();
                heap.push(item);
                *self = Self::Heap(heap);
            }
            Self::Heap(items) => items.push(item),
        }
    }

    fn as_slice(&self) -> &[T] {
        match self {
            Self::Stack(items, len) => &items[..*len],
            Self::Heap(items) => items,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Self::Stack(items, len) => &mut items[..*len],
            Self::Heap(items) => items,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use sluice_crds::config::ProviderConfig;

    use super::*;
    use crate::backends::Outcome;
    use crate::backends::health::Verdict;
    use crate::backends::{Attempt, BackendState};
    use crate::snapshot::Backend;
    use crate::upstream::client::UpstreamPool;

    fn model(backends: &[(u32, u32)]) -> Model {
        let pool = UpstreamPool::default();
        let provider: ProviderConfig = serde_json::from_value(serde_json::json!({
            "type": "simulated", "connectTimeoutMs": 100, "models": {}
        }))
        .expect("provider");
        let upstream = Arc::new(pool.upstream("ns/sim", &provider).expect("upstream"));
        Model {
            name: "m".into(),
            owned_by: "o".into(),
            context_window: None,
            max_output_tokens: None,
            capabilities: vec![],
            aliases: vec![],
            metrics: crate::metrics::Metrics::new().model("p", "e", "m"),
            turn: std::sync::atomic::AtomicUsize::new(0),
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, &(weight, priority))| Backend {
                    upstream: upstream.clone(),
                    model: format!("b{i}"),
                    rewrite_from: None,
                    weight,
                    priority,
                    pricing: None,
                    state: BackendState::detached("ns/sim", &format!("b{i}")),
                    label: format!("b{i}").into(),
                    label_header: hyper::header::HeaderValue::from_static("b"),
                })
                .collect(),
        }
    }

    /// A pool of `n` pods, each measured at 50 ms TTFT and 10 ms TPOT, with its signals.
    fn pool(n: usize) -> (Model, Vec<Arc<crate::scrape::PodSignals>>) {
        let mut m = model(&vec![(1, 0); n]);
        let mut signals = Vec::new();
        for (i, backend) in m.backends.iter_mut().enumerate() {
            let pod_signals = Arc::new(crate::scrape::PodSignals::default());
            backend.state =
                BackendState::detached_pod("ns/pool", "m", &format!("http://10.0.0.{i}:8000/v1"), pod_signals.clone());
            for _ in 0..8 {
                let attempt = backend.state.start(1, false);
                let started = attempt.started();
                attempt.report(Outcome::Stream {
                    first: started + Duration::from_millis(50),
                    end: started + Duration::from_millis(140),
                    tokens: 10,
                    verdict: Verdict::Success,
                });
            }
            signals.push(pod_signals);
        }
        (m, signals)
    }

    #[test]
    fn the_first_attempt_expects_what_the_plan_predicted_and_later_ones_predict_afresh() {
        let (m, _) = pool(2);
        let request = RouteRequest { ttft_hint_ms: Some(500), ..RouteRequest::default() };
        let mut rng = StdRng::seed_from_u64(3);
        let planned = plan(&m, RoutingPolicy::SloAware, &request, &mut rng).expect("plan");
        assert!(planned.predicted);
        let [first, second] = [planned.steps()[0], planned.steps()[1]];
        let state = |step: Step| &m.backends[step.index].state;
        let fresh = expected(state(first), &request);
        assert!(fresh.ttft_ms.is_some(), "measured pods have a prediction");
        assert_eq!(expected_of(&planned, 0, state(first), &request), fresh);
        // Load on the second pod after planning: its attempt sees it.
        let _held: Vec<Attempt> = (0..6).map(|_| state(second).start(1, false)).collect();
        let later = expected_of(&planned, 1, state(second), &request);
        assert_eq!(later, expected(state(second), &request));
        assert!(later.ttft_ms > second.ttft_ms, "{later:?} against the plan's {:?}", second.ttft_ms);
        // A policy that predicts nothing leaves every attempt to predict for itself.
        let weighted = plan(&m, RoutingPolicy::Weighted, &request, &mut rng).expect("plan");
        assert!(!weighted.predicted && weighted.steps()[0].ttft_ms.is_none());
        let step = weighted.steps()[0];
        assert_eq!(expected_of(&weighted, 0, state(step), &request), expected(state(step), &request));
    }

    #[test]
    fn a_prefix_sticks_to_one_pod_until_it_reaches_the_load_bound() {
        let (m, _) = pool(3);
        let request = RouteRequest { prefix: Some(0xfeed), ..RouteRequest::default() };
        let mut rng = StdRng::seed_from_u64(5);
        let first = |rng: &mut StdRng| plan(&m, RoutingPolicy::SloAware, &request, rng).expect("plan").steps()[0].index;
        let owner = first(&mut rng);
        for _ in 0..50 {
            assert_eq!(first(&mut rng), owner, "the same prefix, the same pod");
        }
        assert_ne!(m.backends[0].state.affinity_id, m.backends[1].state.affinity_id, "pods hash apart");
        // The owner at 3 in flight, the others at 1: the bound is ceil(1.25 x 6 / 3) = 3, so the
        // owner is full and the prefix goes to the next pod in its order.
        let _held: Vec<Attempt> = m
            .backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| (0..if i == owner { 3 } else { 1 }).map(|_| b.state.start(1, false)))
            .collect();
        let spilled = plan(&m, RoutingPolicy::SloAware, &request, &mut rng).expect("plan");
        assert_ne!(spilled.steps()[0].index, owner);
        assert_eq!(spilled.reason, DecisionReason::Affinity, "still by affinity, to the next pod");
        assert_eq!(affinity::load_cap(5, 3), 3);
    }

    #[test]
    fn a_pod_with_a_scraped_queue_loses_tight_requests() {
        let (m, signals) = pool(2);
        let tight = RouteRequest { ttft_hint_ms: Some(200), ..RouteRequest::default() };
        let mut rng = StdRng::seed_from_u64(9);
        let firsts = |rng: &mut StdRng| {
            let mut counts = [0u32; 2];
            for _ in 0..400 {
                counts[plan(&m, RoutingPolicy::SloAware, &tight, rng).expect("plan").steps()[0].index] += 1;
            }
            counts
        };
        let even = firsts(&mut rng);
        assert!(even[0] > 100 && even[1] > 100, "idle pods share: {even:?}");
        // Pod 1 reports 12 waiting behind 4 running (another client's load): 17 in line, 50 ms
        // x (1 + 0.5 x 16) = 450 ms predicted, over the 200 ms hint.
        signals[1].record(crate::scrape::PodLoad { waiting: 12, running: 4, kv_cache_usage: Some(0.5) });
        let (ttft, _) = predict_next(&m.backends[1].state, &tight);
        assert_eq!(ttft.map(|p| p.mean), Some(450.0));
        let queued = firsts(&mut rng);
        assert!(queued[1] < 40, "only exploration reaches the queued pod: {queued:?}");
    }

    #[test]
    fn a_pod_whose_metrics_cannot_be_reached_is_left_out_until_they_can() {
        let (m, signals) = pool(2);
        let mut rng = StdRng::seed_from_u64(3);
        let request = RouteRequest::default();
        let tried = |rng: &mut StdRng| indices(planned(&m, RoutingPolicy::SloAware, rng));
        signals[0].fail("connection refused".into(), true);
        assert_eq!(tried(&mut rng).len(), 2, "one refusal: still tried");
        signals[0].fail("connection refused".into(), true);
        for _ in 0..20 {
            assert_eq!(tried(&mut rng), [1], "unreachable: left out");
        }
        assert_eq!(m.backends[0].state.view().health, "unreachable");
        // Both unreachable: both are tried (one backend always stays eligible).
        signals[1].fail("connection refused".into(), true);
        signals[1].fail("connection refused".into(), true);
        assert_eq!(tried(&mut rng).len(), 2);
        // A scrape that connects brings the pod back.
        signals[0].record(crate::scrape::PodLoad::default());
        assert_eq!(plan(&m, RoutingPolicy::SloAware, &request, &mut rng).expect("plan").steps()[0].index, 0);
    }

    #[test]
    fn priorities_fail_over_in_order() {
        let m = model(&[(1, 0), (1, 0), (5, 1), (1, 2)]);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let order = indices(planned(&m, RoutingPolicy::Weighted, &mut rng));
            assert_eq!(order.len(), 4);
            assert!(order[..2].contains(&0) && order[..2].contains(&1));
            assert_eq!(&order[2..], &[2, 3]);
        }
    }

    #[test]
    fn weights_share_first_choices_in_proportion() {
        let m = model(&[(3, 0), (1, 0), (0, 0)]);
        let mut rng = StdRng::seed_from_u64(1);
        let mut first = [0u32; 3];
        for _ in 0..40_000 {
            let order = indices(planned(&m, RoutingPolicy::Weighted, &mut rng));
            first[order[0]] += 1;
            assert_eq!(order[2], 2, "weight 0 only as a last resort");
        }
        let share = f64::from(first[0]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "3:1 weights gave {share}");
        assert_eq!(first[2], 0);
    }

    #[test]
    fn least_request_prefers_the_idle_backend() {
        let m = model(&[(1, 0), (1, 0)]);
        let _busy: Vec<_> = (0..10).map(|_| m.backends[0].state.start(1, false)).collect();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            assert_eq!(planned(&m, RoutingPolicy::LeastRequest, &mut rng)[0], (1, false));
        }
    }

    fn planned(m: &Model, policy: RoutingPolicy, rng: &mut StdRng) -> Vec<(usize, bool)> {
        let plan = plan(m, policy, &RouteRequest::default(), rng).expect("no shedding without hints");
        plan.steps().iter().map(|s| (s.index, s.probe)).collect()
    }

    fn indices(order: Vec<(usize, bool)>) -> Vec<usize> {
        order.into_iter().map(|(i, _)| i).collect()
    }

    fn eject(backend: &Backend) {
        backend.state.start(1, false).report(Outcome::Missed(Verdict::Timeout));
    }

    #[test]
    fn ejected_backends_are_left_out_and_priorities_move_up() {
        let m = model(&[(1, 0), (1, 0), (1, 1)]);
        eject(&m.backends[0]);
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let order = indices(planned(&m, RoutingPolicy::Weighted, &mut rng));
            assert_eq!(order, [1, 2]);
        }
        eject(&m.backends[1]);
        assert_eq!(indices(planned(&m, RoutingPolicy::Weighted, &mut rng)), [2], "the next priority steps in");
    }

    #[test]
    fn the_last_eligible_backend_is_never_ejected() {
        let m = model(&[(1, 0), (1, 0)]);
        eject(&m.backends[0]);
        eject(&m.backends[1]);
        let mut rng = StdRng::seed_from_u64(9);
        let mut order = indices(planned(&m, RoutingPolicy::Weighted, &mut rng));
        order.sort_unstable();
        assert_eq!(order, [0, 1], "with every backend ejected, all are tried");
        let single = model(&[(1, 0)]);
        eject(&single.backends[0]);
        assert_eq!(planned(&single, RoutingPolicy::Weighted, &mut rng), [(0, false)]);
    }

    #[test]
    fn a_backend_whose_ejection_is_over_is_probed_first_by_one_request() {
        let m = model(&[(1, 0), (1, 0), (1, 0)]);
        eject(&m.backends[2]);
        m.backends[2].state.end_ejection();
        let mut rng = StdRng::seed_from_u64(11);
        let probing = planned(&m, RoutingPolicy::Weighted, &mut rng);
        assert_eq!(probing[0], (2, true));
        assert_eq!(probing.len(), 3);
        for _ in 0..20 {
            let order = indices(planned(&m, RoutingPolicy::Weighted, &mut rng));
            assert!(!order.contains(&2), "one probe at a time: {order:?}");
        }
    }

    fn measured(index: usize, load: u32, ttft_ms: f32, tpot_ms: f32) -> Candidate {
        let at = |ms: f32| Some(Predicted { mean: ms, high: ms });
        Candidate {
            index,
            weight: 1,
            load,
            ttft: at(ttft_ms),
            tpot: at(tpot_ms),
            measured: true,
            affinity_id: (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            draw: 0.5,
            ..Candidate::default()
        }
    }

    fn hints(ttft: u32, tpot: u32) -> RouteRequest {
        RouteRequest { ttft_hint_ms: Some(ttft), tpot_hint_ms: Some(tpot), ..RouteRequest::default() }
    }

    const NO_EXPLORE: Draws = Draws { explore: 1.0, pick: 0.0, turn: 0 };

    fn first(mut candidates: Vec<Candidate>, request: &RouteRequest) -> (usize, Ranked) {
        let ranked = rank(&mut candidates, RoutingPolicy::SloAware, request, NO_EXPLORE);
        (candidates[0].index, ranked)
    }

    #[test]
    fn the_backend_predicted_to_meet_the_hints_is_chosen() {
        let slow = measured(0, 0, 900.0, 20.0);
        let fast = measured(1, 3, 80.0, 20.0);
        assert_eq!(first(vec![slow, fast], &hints(300, 50)), (1, Ranked::Route(DecisionReason::SloMet)));
        // The same two without hints: both meet, the idle one is taken.
        assert_eq!(first(vec![slow, fast], &RouteRequest::default()).0, 0);
    }

    #[test]
    fn headroom_counts_the_deviation_and_the_tightest_running_tpot_hint() {
        let mut jittery = measured(0, 0, 250.0, 20.0);
        jittery.ttft = Some(Predicted { mean: 250.0, high: 350.0 });
        let steady = measured(1, 5, 280.0, 20.0);
        assert_eq!(first(vec![jittery, steady], &hints(300, 50)).0, 1, "mean fits, mean + deviation does not");
        // A batch request with no TPOT hint must not land where an interactive one runs at 20 ms
        // a token when it would slow that backend to 25.
        let mut busy = measured(0, 0, 100.0, 25.0);
        busy.tightest_tpot_ms = Some(20);
        let other = measured(1, 4, 100.0, 40.0);
        let batch = RouteRequest { ttft_hint_ms: Some(1_000), ..RouteRequest::default() };
        assert_eq!(first(vec![busy, other], &batch).0, 1);
        busy.tightest_tpot_ms = Some(30);
        assert_eq!(first(vec![busy, other], &batch).0, 0);
        // A running hint the backend misses already (35 ms a token now against 20) is not
        // protected: a slow backend an interactive request strayed onto still takes batch work.
        let mut slow = measured(0, 3, 100.0, 36.0);
        slow.tightest_tpot_ms = Some(20);
        slow.tpot_now = Some(Predicted { mean: 35.0, high: 37.0 });
        assert_eq!(first(vec![slow, other], &batch).0, 0);
        slow.tpot_now = Some(Predicted { mean: 19.0, high: 20.0 });
        assert_eq!(first(vec![slow, other], &batch).0, 1, "met now: protected");
    }

    #[test]
    fn ties_go_to_the_cheaper_then_the_less_loaded_then_the_draw() {
        let mut dear = measured(0, 0, 50.0, 10.0);
        dear.price = 10.0;
        let cheap_busy = Candidate { price: 1.0, ..measured(1, 6, 50.0, 10.0) };
        let cheap_idle = Candidate { price: 1.0, ..measured(2, 2, 50.0, 10.0) };
        assert_eq!(first(vec![dear, cheap_busy, cheap_idle], &hints(300, 50)).0, 2);
        let a = Candidate { draw: 0.2, ..measured(0, 1, 50.0, 10.0) };
        let b = Candidate { draw: 0.7, ..measured(1, 1, 50.0, 10.0) };
        assert_eq!(first(vec![a, b], &hints(300, 50)).0, 1);
        // Price only ranks among those that meet the hints.
        let cheap_slow = Candidate { price: 0.0, ..measured(3, 0, 500.0, 10.0) };
        assert_eq!(first(vec![cheap_slow, dear], &hints(300, 50)).0, 0);
    }

    #[test]
    fn affinity_comes_before_price_within_its_load_bound() {
        let request = RouteRequest { prefix: Some(42), ..hints(300, 50) };
        let group: Vec<Candidate> =
            (0..3).map(|i| Candidate { price: i as f64, ..measured(i, 1, 50.0, 10.0) }).collect();
        let owner = group.iter().max_by_key(|c| affinity::score(42, c.affinity_id)).map(|c| c.index).unwrap_or(9);
        assert_eq!(first(group.clone(), &request), (owner, Ranked::Route(DecisionReason::Affinity)));
        // Loaded past 1.25 x the mean, the owner passes the prefix on to the next in its order.
        let mut loaded = group.clone();
        loaded[owner].load = 6;
        let (chosen, ranked) = first(loaded, &request);
        assert_ne!(chosen, owner);
        assert_eq!(ranked, Ranked::Route(DecisionReason::Affinity));
        // The bound: with 8 in flight over 3 (9 with this one), at most ceil(1.25 x 3) = 4.
        let mut at_cap = group;
        at_cap[owner].load = 3;
        at_cap[(owner + 1) % 3].load = 3;
        at_cap[(owner + 2) % 3].load = 2;
        assert_eq!(first(at_cap, &request).0, owner, "3 + 1 is within the bound of 4");
    }

    /// Measured with a capacity and the model's recent hints seen there.
    fn sized(index: usize, load: u32, ttft_ms: f32, tpot_ms: f32, capacity: u32) -> Candidate {
        Candidate {
            capacity: Some(capacity),
            recent_ttft_hint_ms: Some(400),
            recent_tpot_hint_ms: Some(30),
            ..measured(index, load, ttft_ms, tpot_ms)
        }
    }

    #[test]
    fn requests_without_hints_keep_off_the_backends_tight_hints_need() {
        // The benchmark's fleet in small: a fast backend of 4 that meets 400 ms / 30 ms, a slow
        // one of 63 whose 35 ms a token never does.
        let fast = sized(0, 0, 60.0, 8.0, 4);
        let slow = sized(1, 20, 450.0, 35.0, 63);
        let batch = RouteRequest::default();
        assert_eq!(first(vec![fast, slow], &batch), (1, Ranked::Route(DecisionReason::SloMet)));
        // A loose hint packs the same way; one as tight as the recent ones does not.
        let loose = hints(5_000, 200);
        assert_eq!(first(vec![fast, slow], &loose).0, 1);
        assert_eq!(first(vec![fast, slow], &hints(400, 30)).0, 0);
        // Past its batch, the slow backend still takes loose requests while their predicted
        // first token stays within LOOSE_WAIT_MS; beyond that it gives way.
        let queued = sized(1, 70, 1_500.0, 35.0, 63);
        assert_eq!(first(vec![fast, queued], &batch).0, 1, "a 1.5 s wait keeps the fast backend free");
        let full = sized(1, 90, 2_500.0, 35.0, 63);
        assert_eq!(first(vec![fast, full], &batch).0, 0, "a 2.5 s wait is worse than the fast backend's headroom");
        // With no hinted traffic lately there is nothing to keep: the lower relative load.
        let quiet = |c: Candidate| Candidate { recent_ttft_hint_ms: None, recent_tpot_hint_ms: None, ..c };
        assert_eq!(first(vec![quiet(fast), quiet(slow)], &batch).0, 0, "1/4 against 21/63");
        // A busy fast backend is still kept: its queue passes, its decode speed stays.
        let busy_fast = sized(0, 2, 500.0, 8.0, 4);
        let mostly_full = sized(1, 60, 450.0, 35.0, 63);
        assert_eq!(first(vec![busy_fast, mostly_full], &batch).0, 1, "61/63 has room, 3/4 is kept");
        // A backend whose decode is too slow for the tight hints is not kept.
        let slowish = sized(0, 0, 60.0, 32.0, 4);
        assert_eq!(first(vec![slowish, mostly_full], &batch).0, 0, "1/4 against 61/63, neither kept");
    }

    #[test]
    fn load_counts_against_what_each_backend_runs_at_once() {
        // Both meet the hints; 3 in flight of 4 is fuller than 10 of 63.
        let small = sized(0, 3, 100.0, 10.0, 4);
        let large = sized(1, 10, 100.0, 10.0, 63);
        assert_eq!(first(vec![small, large], &hints(400, 30)).0, 1);
        // Without a capacity, raw load decides as before.
        let raw = |c: Candidate| Candidate { capacity: None, ..c };
        assert_eq!(first(vec![raw(small), raw(large)], &hints(400, 30)).0, 0);
    }

    #[test]
    fn when_nothing_meets_a_late_first_token_beats_slow_tokens() {
        // A queue before the first token is missed once; a slow decode misses every token.
        let slow_decode = measured(0, 0, 300.0, 36.0);
        let queued = measured(1, 9, 700.0, 20.0);
        let (chosen, ranked) = first(vec![slow_decode, queued], &hints(400, 30));
        assert_eq!((chosen, ranked), (1, Ranked::Route(DecisionReason::SmallestMiss)), "75% late once, not 20% always");
        // Among TTFT misses, the smaller.
        let longer = measured(2, 12, 900.0, 20.0);
        let mut group = vec![longer, slow_decode, queued];
        rank(&mut group, RoutingPolicy::SloAware, &hints(400, 30), NO_EXPLORE);
        assert_eq!(group.iter().map(|c| c.index).collect::<Vec<_>>(), [1, 2, 0]);
    }

    #[test]
    fn a_recent_error_rate_ranks_a_backend_after_healthy_ones() {
        let flaky = Candidate { error_rate: 0.3, ..measured(0, 0, 50.0, 10.0) };
        let busy = measured(1, 5, 80.0, 12.0);
        assert_eq!(first(vec![flaky, busy], &hints(400, 30)).0, 1, "an idle backend failing 30% comes second");
        assert_eq!(first(vec![flaky, busy], &RouteRequest::default()).0, 1, "without hints too");
        let occasional = Candidate { error_rate: 0.05, ..flaky };
        assert_eq!(first(vec![occasional, busy], &hints(400, 30)).0, 0, "below the threshold load decides");
        // Both predicted to miss: the error rate weighs as extra excess.
        let late_flaky = Candidate { error_rate: 0.3, ..measured(0, 0, 480.0, 10.0) };
        let later = measured(1, 0, 560.0, 10.0);
        assert_eq!(first(vec![late_flaky, later], &hints(400, 30)).0, 1, "20% + 2 x 30% against 40%");
        assert_eq!(first(vec![Candidate { error_rate: 0.0, ..late_flaky }, later], &hints(400, 30)).0, 0);
    }

    #[test]
    fn a_stalled_backend_is_ranked_after_the_healthy_ones() {
        let stalled = Candidate { stalled: true, ..measured(0, 0, 50.0, 10.0) };
        let busy = measured(1, 6, 90.0, 12.0);
        assert_eq!(first(vec![stalled, busy], &RouteRequest::default()).0, 1);
    }

    /// A backend measured at 50 ms to the first token and 10 ms a token.
    fn measured_state() -> Arc<BackendState> {
        let state = BackendState::detached("ns/p", "m");
        for _ in 0..8 {
            let attempt = state.start(1, false);
            let started = attempt.started();
            attempt.report(Outcome::Stream {
                first: started + Duration::from_millis(50),
                end: started + Duration::from_millis(140),
                tokens: 10,
                verdict: Verdict::Success,
            });
        }
        state
    }

    #[test]
    fn requests_waiting_past_their_first_token_mark_a_backend_stalled() {
        let state = measured_state();
        let request = RouteRequest::default();
        let now = state.now_ms();
        let idle = observe(&state, &request, now);
        assert!(!idle.stalled);
        assert_eq!(idle.ttft.map(|p| p.mean), Some(50.0));
        assert_eq!(idle.capacity, Some(2), "only load 1 seen: trusted one further");
        // Two requests sent, no first byte: fine at first, overdue two seconds later.
        let mut hung = state.start(1, false);
        let _also = state.start(1, false);
        assert!(!observe(&state, &request, now + 100).stalled);
        let later = observe(&state, &request, now + 2_000);
        assert!(later.stalled);
        assert!(later.ttft.is_some_and(|p| p.mean >= 2_000.0), "{:?}", later.ttft);
        // Any answer says the backend is busy, not hung.
        hung.answered();
        assert!(!observe(&state, &request, state.now_ms() + 100).stalled);
    }

    #[test]
    fn the_error_rate_and_recent_hints_are_read_from_the_live_state() {
        let state = measured_state();
        let now = state.now_ms();
        assert_eq!(state.error_rate(now), Some(0.0));
        for _ in 0..2 {
            state.start(1, false).report(Outcome::Missed(Verdict::Failure));
        }
        let rate = state.error_rate(state.now_ms()).unwrap_or_default();
        assert!((rate - 0.2).abs() < 1e-6, "2 failures in 10 answers: {rate}");
        assert_eq!(state.recent_hints.get(now), (None, None));
        let mut attempt = state.start(1, false);
        attempt.expect(Expected { ttft_hint_ms: Some(400), tpot_hint_ms: Some(30), ..Expected::default() });
        let at = state.now_ms();
        assert_eq!(state.recent_hints.get(at), (Some(400), Some(30)));
        assert_eq!(state.recent_hints.get(at + crate::backends::RECENT_HINTS_MS + 1), (None, None), "they expire");
    }

    #[test]
    fn exploration_stays_a_small_share_and_only_goes_to_unsure_backends() {
        let mut rng = StdRng::seed_from_u64(17);
        let (mut explored, n) = (0, 20_000);
        for _ in 0..n {
            let idle = Candidate { idle: true, ..measured(1, 0, 900.0, 10.0) };
            let mut group = vec![measured(0, 0, 50.0, 10.0), idle, measured(2, 0, 60.0, 10.0)];
            let draws = Draws { explore: rng.random(), pick: rng.random(), turn: 0 };
            if rank(&mut group, RoutingPolicy::SloAware, &hints(300, 50), draws)
                == Ranked::Route(DecisionReason::Explore)
            {
                explored += 1;
                assert_eq!(group[0].index, 1, "the backend that meets the hints needs no exploring");
            }
        }
        let share = f64::from(explored) / f64::from(n);
        assert!(share > 0.015 && share < 0.05, "explored {share}");
        // A backend answering others is measured already: no request is spent exploring it.
        let mut busy = vec![measured(0, 0, 50.0, 10.0), measured(1, 0, 900.0, 10.0)];
        let always = Draws { explore: 0.0, pick: 0.0, turn: 0 };
        assert_eq!(
            rank(&mut busy, RoutingPolicy::SloAware, &hints(300, 50), always),
            Ranked::Route(DecisionReason::SloMet)
        );
        assert_eq!(busy[0].index, 0);
        // Nothing to explore when every backend meets the hints.
        let mut all_good = vec![measured(0, 0, 50.0, 10.0), measured(1, 0, 60.0, 10.0)];
        let draws = Draws { explore: 0.0, pick: 0.0, turn: 0 };
        assert_eq!(
            rank(&mut all_good, RoutingPolicy::SloAware, &hints(300, 50), draws),
            Ranked::Route(DecisionReason::SloMet)
        );
    }

    #[test]
    fn a_sheddable_request_is_shed_only_when_no_backend_can_meet_its_hints() {
        let slow = vec![measured(0, 0, 2_400.0, 10.0), measured(1, 2, 900.0, 10.0)];
        let sheddable = RouteRequest { sheddable: true, ..hints(300, 50) };
        let shed = Ranked::Shed(Shed { retry_after: Duration::from_secs(1) });
        assert_eq!(first(slow.clone(), &sheddable), (1, shed), "retry after the best backend's TTFT");
        assert_eq!(first(slow.clone(), &hints(300, 50)), (1, Ranked::Route(DecisionReason::SmallestMiss)));
        assert_eq!(
            first(slow.clone(), &RouteRequest { sheddable: true, ..RouteRequest::default() }).1,
            Ranked::Route(DecisionReason::SloMet),
            "no hints, nothing to miss"
        );
        // A cold backend might meet them: tried, not shed.
        let cold = Candidate { measured: false, ttft: None, tpot: None, ..measured(2, 0, 0.0, 0.0) };
        let mut with_cold = slow.clone();
        with_cold.push(cold);
        assert_eq!(first(with_cold, &sheddable), (2, Ranked::Route(DecisionReason::Cold)));
        // Nor is a request whose probe was claimed.
        let mut probing = slow;
        probing[0].probe = true;
        assert_eq!(first(probing, &sheddable), (0, Ranked::Route(DecisionReason::Probe)));
    }

    #[test]
    fn priorities_stay_failover_tiers_under_every_strategy() {
        for policy in [
            RoutingPolicy::SloAware,
            RoutingPolicy::RoundRobin,
            RoutingPolicy::QueueScore,
            RoutingPolicy::PriorityFailover,
        ] {
            let mut group = vec![measured(0, 9, 900.0, 10.0), Candidate { priority: 1, ..measured(1, 0, 10.0, 1.0) }];
            rank(&mut group, policy, &hints(300, 50), NO_EXPLORE);
            assert_eq!(group[0].index, 0, "{policy:?}");
        }
    }

    #[test]
    fn round_robin_turns_and_priority_failover_keeps_the_listed_order() {
        let group = || {
            vec![
                measured(0, 0, 0.0, 0.0),
                measured(1, 0, 0.0, 0.0),
                Candidate { weight: 0, ..measured(2, 0, 0.0, 0.0) },
            ]
        };
        let firsts: Vec<usize> = (0..4)
            .map(|turn| {
                let mut g = group();
                rank(&mut g, RoutingPolicy::RoundRobin, &RouteRequest::default(), Draws { turn, ..NO_EXPLORE });
                assert_eq!(g[2].index, 2, "weight 0 last");
                g[0].index
            })
            .collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
        let mut g = group();
        g.reverse();
        rank(&mut g, RoutingPolicy::PriorityFailover, &RouteRequest::default(), NO_EXPLORE);
        assert_eq!(g.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn queue_score_weighs_queue_two_and_prefix_three() {
        let request = RouteRequest { prefix: Some(7), ..RouteRequest::default() };
        let group: Vec<Candidate> = (0..2).map(|i| measured(i, 0, 0.0, 0.0)).collect();
        let owner = group.iter().max_by_key(|c| affinity::score(7, c.affinity_id)).map(|c| c.index).unwrap_or(9);
        let mut g = group.clone();
        g[owner].load = 4; // queue score 0 + prefix 3 beats queue 2 + prefix 0
        assert_eq!(
            rank(&mut g, RoutingPolicy::QueueScore, &request, NO_EXPLORE),
            Ranked::Route(DecisionReason::Affinity)
        );
        assert_eq!(g[0].index, owner);
        let mut g = group;
        g[owner].load = 4;
        rank(&mut g, RoutingPolicy::QueueScore, &RouteRequest::default(), NO_EXPLORE);
        assert_ne!(g[0].index, owner, "without a prefix, the shorter queue");
    }

    #[test]
    fn plans_of_small_models_stay_on_the_stack() {
        let m = model(&[(1, 0); INLINE]);
        let mut rng = StdRng::seed_from_u64(1);
        let plan = plan(&m, RoutingPolicy::SloAware, &RouteRequest::default(), &mut rng).expect("plan");
        assert!(matches!(plan.steps, Inline::Stack(..)));
        assert_eq!(plan.steps().len(), INLINE);
        assert_eq!(plan.reason, DecisionReason::Cold, "nothing measured yet");
        let big = model(&[(1, 0); INLINE + 1]);
        assert_eq!(
            super::plan(&big, RoutingPolicy::Weighted, &RouteRequest::default(), &mut rng).expect("plan").steps().len(),
            INLINE + 1
        );
    }
}
