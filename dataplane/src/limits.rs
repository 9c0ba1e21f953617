//! Per-key admission: requests and tokens per minute, requests in flight, an optional
//! project-wide ceiling, and budgets.
//!
//! In-process counters by default (one replica): the arithmetic is pure ([`Bucket`],
//! [`budget_period`]) and unit-tested; [`KeyState`] holds the live counters, which outlive
//! configuration reloads so a reload never resets anyone's limits. With `--redis-url` the
//! [`Limiter`] asks [`shared`] instead, so every replica enforces one limit; the local counters
//! are then its fallback while Redis is unreachable. Without Redis no Redis code runs.

pub mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sluice_crds::api::BudgetPeriod;
use sluice_crds::config::{BudgetConfig, TierConfig};

use crate::error::ApiError;

/// A token bucket refilled continuously at `per_minute / 60` per second up to `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    level: f64,
    at: Instant,
    full: bool,
}

impl Bucket {
    /// A full bucket.
    pub fn new(now: Instant) -> Self {
        Self { level: 0.0, at: now, full: true }
    }

    fn refill(&mut self, now: Instant, capacity: f64) {
        if self.full {
            self.level = capacity;
            self.full = false;
        } else {
            let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
            self.level = (self.level + elapsed * capacity / 60.0).min(capacity);
        }
        self.at = now;
    }

    /// Takes `amount` if at least `min(amount, capacity)` is left; otherwise says how long to
    /// wait. Returns what is left.
    pub fn take(&mut self, now: Instant, capacity: f64, amount: f64) -> Result<f64, Duration> {
        self.refill(now, capacity);
        let needed = amount.min(capacity);
        if self.level + 1e-9 >= needed {
            self.level -= amount;
            Ok(self.level.max(0.0))
        } else {
            Err(Duration::from_secs_f64((needed - self.level) * 60.0 / capacity))
        }
    }

    /// Gives back (positive) or charges (negative) `amount` after the fact, when the real usage
    /// is known. The level may go below zero; later requests then wait.
    pub fn adjust(&mut self, now: Instant, capacity: f64, amount: f64) {
        self.refill(now, capacity);
        self.level = (self.level + amount).min(capacity);
    }

    /// How long until the bucket is full again.
    pub fn until_full(&self, capacity: f64) -> Duration {
        let missing = (capacity - self.level).max(0.0);
        Duration::from_secs_f64(missing * 60.0 / capacity.max(1.0))
    }
}

/// The current budget period's number: spending resets when it changes.
pub fn budget_period(period: BudgetPeriod, now: jiff::Timestamp) -> i64 {
    let date = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    match period {
        BudgetPeriod::Daily => now.as_second().div_euclid(86_400),
        BudgetPeriod::Monthly => i64::from(date.year()) * 12 + i64::from(date.month()),
        BudgetPeriod::Total => 0,
    }
}

/// A period's id as usage reports write it (see [`BudgetPeriod::period_id`]).
pub fn period_id(period: BudgetPeriod, now: jiff::Timestamp) -> String {
    period.period_id(now)
}

/// What one key used in its current period (its budget's period; monthly without a budget).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeriodTotals {
    /// The period's number ([`budget_period`]).
    pub period: i64,
    /// US dollars spent.
    pub spend_usd: f64,
    /// Requests settled.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Live counters of one API key.
#[derive(Debug)]
pub struct KeyState {
    requests: Mutex<Bucket>,
    tokens: Mutex<Bucket>,
    in_flight: AtomicU32,
    /// This process's usage in the current period.
    totals: Mutex<PeriodTotals>,
    /// Other replicas' reported spend in a period: `(period, usd)`.
    elsewhere: Mutex<(i64, f64)>,
}

/// What a response tells the client about its limits (`x-ratelimit-*` headers).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitReport {
    /// Requests per minute, remaining and time to full.
    pub requests: Option<(u64, u64, Duration)>,
    /// Tokens per minute, remaining and time to full.
    pub tokens: Option<(u64, u64, Duration)>,
}

/// An admitted request: holds its concurrency slot and its token estimate until released.
#[derive(Debug)]
pub struct Admission {
    /// Headers to send.
    pub report: LimitReport,
    /// Tokens charged up front.
    pub estimated_tokens: u64,
    holds_slot: bool,
    /// The capacity at which the key's in-process token bucket was charged (the tier's, or a
    /// replica's share of it on the fallback); corrected at that capacity on settling.
    local_tokens: Option<f64>,
    period_kind: BudgetPeriod,
    /// The project ceiling charged in-process, and its token capacity then.
    project: Option<(Arc<ProjectState>, Option<f64>)>,
    /// What Redis must hear when the request ends.
    shared: Option<shared::Ticket>,
}

/// A refused admission: the error, and the limits as they stood, for the response's headers.
#[derive(Debug)]
pub struct Refusal {
    /// 429 (which limit) or 402.
    pub error: ApiError,
    /// `x-ratelimit-*` numbers at the refusal (boxed: refusals are the rare path).
    pub report: Box<LimitReport>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self { error, report: Box::default() }
    }
}

/// The limit a 429 names in its message (`Rate limit reached for requests: ...`).
pub mod limit_name {
    /// Requests per minute of the key's tier.
    pub const REQUESTS: &str = "requests";
    /// Tokens per minute of the key's tier.
    pub const TOKENS: &str = "tokens";
    /// Requests in flight of the key's tier.
    pub const CONCURRENCY: &str = "concurrency";
    /// The project-wide ceiling (`--project-requests-per-minute`, `--project-tokens-per-minute`).
    pub const PROJECT: &str = "project";
}

impl KeyState {
    /// Fresh counters.
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            requests: Mutex::new(Bucket::new(now)),
            tokens: Mutex::new(Bucket::new(now)),
            in_flight: AtomicU32::new(0),
            totals: Mutex::new(PeriodTotals { period: i64::MIN, ..PeriodTotals::default() }),
            elsewhere: Mutex::new((i64::MIN, 0.0)),
        }
    }

    /// Admits a request under `tier` and `budget`, charging one request and `estimated_tokens`.
    pub fn admit(
        &self,
        tier: &TierConfig,
        budget: Option<&BudgetConfig>,
        estimated_tokens: u64,
        now: Instant,
        wall: jiff::Timestamp,
    ) -> Result<Admission, Refusal> {
        let period_kind = budget.map_or(BudgetPeriod::Monthly, |b| b.period);
        if let Some(budget) = budget {
            let period = budget_period(budget.period, wall);
            let local = self.totals(period).spend_usd;
            let elsewhere = *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner);
            let other = if elsewhere.0 == period { elsewhere.1 } else { 0.0 };
            if local + other >= budget.limit_usd {
                return Err(budget_exhausted(budget).into());
            }
        }
        let holds_slot = if let Some(max) = tier.max_concurrent {
            let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
            if before >= max {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                let error = ApiError::RateLimited {
                    what: limit_name::CONCURRENCY,
                    limit: u64::from(max),
                    retry_after: Duration::from_secs(1),
                };
                return Err(Refusal { error, report: Box::new(self.report(tier, now)) });
            }
            true
        } else {
            false
        };
        let release_slot = |held: bool| {
            if held {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        };
        let mut report = LimitReport::default();
        if let Some(rpm) = tier.requests_per_minute {
            let capacity = f64::from(rpm);
            let mut bucket = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            let taken = bucket.take(now, capacity, 1.0);
            report.requests = Some((u64::from(rpm), bucket.level.max(0.0) as u64, bucket.until_full(capacity)));
            if let Err(wait) = taken {
                drop(bucket);
                release_slot(holds_slot);
                let error =
                    ApiError::RateLimited { what: limit_name::REQUESTS, limit: u64::from(rpm), retry_after: wait };
                report.tokens = self.report(tier, now).tokens;
                return Err(Refusal { error, report: Box::new(report) });
            }
        }
        if let Some(tpm) = tier.tokens_per_minute {
            let capacity = tpm as f64;
            let mut bucket = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            let taken = bucket.take(now, capacity, estimated_tokens as f64);
            report.tokens = Some((tpm, bucket.level.max(0.0) as u64, bucket.until_full(capacity)));
            if let Err(wait) = taken {
                drop(bucket);
                if let Some(rpm) = tier.requests_per_minute {
                    // The request was refused: give its request back.
                    let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
                    requests.adjust(now, f64::from(rpm), 1.0);
                    report.requests =
                        Some((u64::from(rpm), requests.level.max(0.0) as u64, requests.until_full(f64::from(rpm))));
                }
                release_slot(holds_slot);
                let error = ApiError::RateLimited { what: limit_name::TOKENS, limit: tpm, retry_after: wait };
                return Err(Refusal { error, report: Box::new(report) });
            }
        }
        Ok(Admission {
            report,
            estimated_tokens,
            holds_slot,
            local_tokens: tier.tokens_per_minute.map(|tpm| tpm as f64),
            period_kind,
            project: None,
            shared: None,
        })
    }

    /// The limits as they stand, charging nothing (for a refusal's headers).
    fn report(&self, tier: &TierConfig, now: Instant) -> LimitReport {
        let peek = |bucket: &Mutex<Bucket>, capacity: f64| {
            let mut bucket = *bucket.lock().unwrap_or_else(PoisonError::into_inner);
            bucket.refill(now, capacity);
            (bucket.level.max(0.0) as u64, bucket.until_full(capacity))
        };
        LimitReport {
            requests: tier.requests_per_minute.map(|rpm| {
                let (left, reset) = peek(&self.requests, f64::from(rpm));
                (u64::from(rpm), left, reset)
            }),
            tokens: tier.tokens_per_minute.map(|tpm| {
                let (left, reset) = peek(&self.tokens, tpm as f64);
                (tpm, left, reset)
            }),
        }
    }

    /// Undoes an admission that a later check refused: its slot, request and tokens go back.
    fn cancel(&self, admission: &Admission, tier: &TierConfig, now: Instant) {
        if admission.holds_slot {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(rpm) = tier.requests_per_minute {
            self.requests.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, f64::from(rpm), 1.0);
        }
        if let Some(capacity) = admission.local_tokens {
            let amount = admission.estimated_tokens as f64;
            self.tokens.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, capacity, amount);
        }
    }

    /// Ends an admitted request: frees its slot, corrects the token estimate with the real
    /// count, and adds its usage and cost to the period's totals. Called exactly once per
    /// admission.
    /// (`_tier` is kept for callers: the admission remembers the capacities it charged at.)
    pub fn settle(&self, admission: &Admission, _tier: &TierConfig, used: Used, now: Instant, wall: jiff::Timestamp) {
        if admission.holds_slot {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        let correction = admission.estimated_tokens as f64 - (used.prompt_tokens + used.completion_tokens) as f64;
        if let Some(capacity) = admission.local_tokens
            && correction != 0.0
        {
            self.tokens.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, capacity, correction);
        }
        if let Some((project, Some(capacity))) = &admission.project
            && correction != 0.0
        {
            project.tokens.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, *capacity, correction);
        }
        if let Some(ticket) = &admission.shared {
            ticket.settle(correction, used.cost_usd, wall);
        }
        let period = budget_period(admission.period_kind, wall);
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        if totals.period != period {
            *totals = PeriodTotals { period, ..PeriodTotals::default() };
        }
        totals.requests += 1;
        totals.prompt_tokens += used.prompt_tokens;
        totals.completion_tokens += used.completion_tokens;
        totals.spend_usd += used.cost_usd;
    }

    /// This process's totals for `period` (zero when the stored ones are another period's).
    pub fn totals(&self, period: i64) -> PeriodTotals {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        if totals.period != period {
            *totals = PeriodTotals { period, ..PeriodTotals::default() };
        }
        *totals
    }

    /// Adds totals reported earlier by this same process (restarted under the same name).
    pub fn restore(&self, saved: PeriodTotals) {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        if totals.period != saved.period {
            *totals = PeriodTotals { period: saved.period, ..PeriodTotals::default() };
        }
        totals.spend_usd += saved.spend_usd;
        totals.requests += saved.requests;
        totals.prompt_tokens += saved.prompt_tokens;
        totals.completion_tokens += saved.completion_tokens;
    }

    /// What other replicas reported spending in `period` (usage reports), US dollars.
    pub fn spent_elsewhere(&self, period: i64) -> f64 {
        let elsewhere = *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner);
        if elsewhere.0 == period { elsewhere.1 } else { 0.0 }
    }

    /// Records what other replicas reported spending in `period`, so budgets hold across them.
    pub fn set_spent_elsewhere(&self, period: i64, usd: f64) {
        *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner) = (period, usd);
    }
}

/// What a finished request used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Used {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

impl Default for KeyState {
    fn default() -> Self {
        Self::new()
    }
}

fn period_name(period: BudgetPeriod) -> &'static str {
    match period {
        BudgetPeriod::Daily => "day",
        BudgetPeriod::Monthly => "month",
        BudgetPeriod::Total => "key's lifetime",
    }
}

fn budget_exhausted(budget: &BudgetConfig) -> ApiError {
    ApiError::BudgetExhausted { limit_usd: budget.limit_usd, period: period_name(budget.period) }
}

/// A ceiling on a whole project's traffic, over all its keys (gateway flags; one gateway
/// serves one project in a cluster, so the flags are the project's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectCeiling {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
}

impl ProjectCeiling {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }

    /// This replica's share when `replicas` split it (at least 1 each).
    pub fn divided(self, replicas: u32) -> Self {
        let n = replicas.max(1);
        Self {
            requests_per_minute: self.requests_per_minute.map(|v| (v / n).max(1)),
            tokens_per_minute: self.tokens_per_minute.map(|v| (v / u64::from(n)).max(1)),
        }
    }
}

/// A tier's rates and concurrency divided among `replicas` (at least 1 each): what one replica
/// enforces on its own while the shared counters are out of reach.
pub fn divided_tier(tier: &TierConfig, replicas: u32) -> TierConfig {
    let n = replicas.max(1);
    TierConfig {
        requests_per_minute: tier.requests_per_minute.map(|v| (v / n).max(1)),
        tokens_per_minute: tier.tokens_per_minute.map(|v| (v / u64::from(n)).max(1)),
        max_concurrent: tier.max_concurrent.map(|v| (v / n).max(1)),
        ..tier.clone()
    }
}

/// In-process counters of a project's ceiling.
#[derive(Debug)]
pub struct ProjectState {
    requests: Mutex<Bucket>,
    tokens: Mutex<Bucket>,
}

impl ProjectState {
    fn new() -> Self {
        let now = Instant::now();
        Self { requests: Mutex::new(Bucket::new(now)), tokens: Mutex::new(Bucket::new(now)) }
    }

    /// Charges one request and `tokens`, or refuses naming the project.
    fn take(&self, ceiling: ProjectCeiling, tokens: u64, now: Instant) -> Result<(), ApiError> {
        let refused = |limit: u64, retry_after| ApiError::RateLimited { what: limit_name::PROJECT, limit, retry_after };
        if let Some(rpm) = ceiling.requests_per_minute {
            let mut bucket = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            bucket.take(now, f64::from(rpm), 1.0).map_err(|wait| refused(u64::from(rpm), wait))?;
        }
        if let Some(tpm) = ceiling.tokens_per_minute {
            let taken = self.tokens.lock().unwrap_or_else(PoisonError::into_inner).take(now, tpm as f64, tokens as f64);
            if let Err(wait) = taken {
                if let Some(rpm) = ceiling.requests_per_minute {
                    self.requests.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, f64::from(rpm), 1.0);
                }
                return Err(refused(tpm, wait));
            }
        }
        Ok(())
    }
}

/// What one admission is about.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The project's slug.
    pub project: &'a str,
    /// The key's id (`<namespace>/<name>`).
    pub key_id: &'a str,
    /// The key's live counters.
    pub state: &'a Arc<KeyState>,
    /// The key's tier.
    pub tier: &'a TierConfig,
    /// The key's budget.
    pub budget: Option<&'a BudgetConfig>,
    /// Tokens to reserve: the prompt's estimate plus `max_tokens`.
    pub estimated_tokens: u64,
    /// Monotonic now.
    pub now: Instant,
    /// Wall-clock now (budget periods).
    pub wall: jiff::Timestamp,
}

/// The gateway's admission control: in-process counters, or Redis's shared ones when configured.
#[derive(Debug, Default)]
pub struct Limiter {
    ceiling: ProjectCeiling,
    /// Ceiling counters by project slug; touched only when a ceiling is set.
    projects: Mutex<HashMap<String, Arc<ProjectState>>>,
    shared: Option<Arc<shared::SharedLimits>>,
}

impl Limiter {
    /// In-process limits with `ceiling` on every project.
    pub fn local(ceiling: ProjectCeiling) -> Self {
        Self { ceiling, projects: Mutex::default(), shared: None }
    }

    /// Limits shared through Redis, with in-process ones as the fallback.
    pub fn shared(ceiling: ProjectCeiling, shared: Arc<shared::SharedLimits>) -> Self {
        Self { ceiling, projects: Mutex::default(), shared: Some(shared) }
    }

    /// The limiter the flags ask for: `--redis-url` shares the limits, the project ceiling
    /// flags add one; neither keeps everything in-process.
    pub fn from_settings(
        settings: &crate::settings::Settings,
        metrics: &crate::metrics::LimiterMetrics,
    ) -> Result<Self, String> {
        let ceiling = ProjectCeiling {
            requests_per_minute: settings.project_requests_per_minute,
            tokens_per_minute: settings.project_tokens_per_minute,
        };
        let Some(url) = &settings.redis_url else { return Ok(Self::local(ceiling)) };
        let options = shared::RedisOptions {
            url: url.0.clone(),
            timeout: Duration::from_millis(settings.redis_timeout_ms.max(1)),
            probe_interval: Duration::from_millis(settings.redis_probe_ms.max(10)),
            key_prefix: settings.redis_key_prefix.clone(),
            connections: settings.redis_connections.clamp(1, 64),
            replicas: settings.replicas_hint.max(1),
            instance: settings.pod_name.clone().unwrap_or_else(|| "gateway".to_owned()),
        };
        Ok(Self::shared(ceiling, shared::SharedLimits::new(options, metrics.clone())?))
    }

    /// The Redis side, when configured.
    pub fn redis(&self) -> Option<&Arc<shared::SharedLimits>> {
        self.shared.as_ref()
    }

    /// Admits a request or says which limit refuses it.
    pub async fn admit(&self, ask: Ask<'_>) -> Result<Admission, Refusal> {
        match &self.shared {
            None => self.admit_local(&ask, 1),
            Some(shared) => shared.admit(self, &ask, self.ceiling).await,
        }
    }

    /// In-process admission, each limit divided by `replicas`.
    fn admit_local(&self, ask: &Ask<'_>, replicas: u32) -> Result<Admission, Refusal> {
        let divided;
        let (tier, budget) = if replicas > 1 {
            divided = divided_tier(ask.tier, replicas);
            (&divided, None)
        } else {
            (ask.tier, ask.budget)
        };
        let mut admission = ask.state.admit(tier, budget, ask.estimated_tokens, ask.now, ask.wall)?;
        if self.ceiling.is_set() {
            let ceiling = self.ceiling.divided(replicas);
            let project = {
                let mut projects = self.projects.lock().unwrap_or_else(PoisonError::into_inner);
                match projects.get(ask.project) {
                    Some(state) => state.clone(),
                    None => {
                        projects.entry(ask.project.to_owned()).or_insert_with(|| Arc::new(ProjectState::new())).clone()
                    }
                }
            };
            if let Err(error) = project.take(ceiling, ask.estimated_tokens, ask.now) {
                ask.state.cancel(&admission, tier, ask.now);
                return Err(Refusal { error, report: Box::new(admission.report) });
            }
            admission.project = Some((project, ceiling.tokens_per_minute.map(|t| t as f64)));
        }
        Ok(admission)
    }
}

/// A retry budget shared by a tier's requests: every request deposits `percent`/100 of a retry,
/// every retry withdraws one, and `min_per_second` retries are always allowed.
#[derive(Debug)]
pub struct RetryBudget {
    /// Deposits in hundredths of a retry, the start of the current second, retries in it.
    state: Mutex<(u64, Instant, u32)>,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new() -> Self {
        Self { state: Mutex::new((0, Instant::now(), 0)) }
    }

    /// Records one request.
    pub fn deposit(&self, percent: u32) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Never bank more than 10,000 retries.
        state.0 = (state.0 + u64::from(percent)).min(1_000_000);
    }

    /// Asks for one retry.
    pub fn withdraw(&self, min_per_second: u32, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(state.1) >= Duration::from_secs(1) {
            state.1 = now;
            state.2 = 0;
        }
        if state.2 < min_per_second {
            state.2 += 1;
            return true;
        }
        if state.0 >= 100 {
            state.0 -= 100;
            return true;
        }
        false
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(rpm: Option<u32>, tpm: Option<u64>, concurrent: Option<u32>) -> TierConfig {
        TierConfig {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrent: concurrent,
            first_token_ms: 1000,
            total_ms: 1000,
            idle_stream_ms: 1000,
            priority: 0,
            slo_ttft_ms: None,
            slo_tpot_ms: None,
            price_multiplier: 1.0,
            retry_percent: 20,
            min_retries_per_second: 1,
        }
    }

    #[test]
    fn bucket_refills_continuously() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start);
        assert_eq!(bucket.take(start, 60.0, 60.0), Ok(0.0));
        let wait = bucket.take(start, 60.0, 1.0).expect_err("empty");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "one per second at 60 rpm, got {wait:?}");
        assert!(bucket.take(start + Duration::from_secs(1), 60.0, 1.0).is_ok());
    }

    fn ask<'a>(state: &'a Arc<KeyState>, tier: &'a TierConfig, estimated_tokens: u64) -> Ask<'a> {
        let (now, wall) = (Instant::now(), jiff::Timestamp::now());
        Ask { project: "p", key_id: "ns/k", state, tier, budget: None, estimated_tokens, now, wall }
    }

    #[tokio::test]
    async fn the_project_ceiling_holds_over_all_keys_and_gives_back_what_it_refused() {
        let limiter = Limiter::local(ProjectCeiling { requests_per_minute: Some(3), tokens_per_minute: None });
        let limits = tier(Some(2), Some(1000), Some(10));
        let (a, b) = (Arc::new(KeyState::new()), Arc::new(KeyState::new()));
        limiter.admit(ask(&a, &limits, 10)).await.expect("a1");
        limiter.admit(ask(&a, &limits, 10)).await.expect("a2");
        limiter.admit(ask(&b, &limits, 10)).await.expect("b1");
        let refused = limiter.admit(ask(&b, &limits, 10)).await.expect_err("the project's fourth");
        match refused.error {
            ApiError::RateLimited { what, limit: 3, .. } => assert_eq!(what, limit_name::PROJECT),
            other => panic!("expected the project ceiling, got {other:?}"),
        }
        // Key b's own bucket got its request back: it has one left, not zero.
        let report = b.report(&limits, Instant::now());
        assert_eq!(report.requests.map(|r| r.1), Some(1));
        assert_eq!(report.tokens.map(|t| t.1), Some(990));
        assert_eq!(b.in_flight.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_divided_tier_is_a_replica_share_of_at_least_one() {
        let divided = divided_tier(&tier(Some(100), Some(1000), Some(3)), 4);
        assert_eq!(
            (divided.requests_per_minute, divided.tokens_per_minute, divided.max_concurrent),
            (Some(25), Some(250), Some(1))
        );
        assert_eq!(divided_tier(&tier(Some(1), None, None), 4).requests_per_minute, Some(1));
    }

    #[test]
    fn requests_per_minute_refuse_the_next_request_and_say_when() {
        let state = KeyState::new();
        let limits = tier(Some(2), None, None);
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let first = state.admit(&limits, None, 0, now, wall).expect("first");
        assert_eq!(first.report.requests.map(|r| (r.0, r.1)), Some((2, 1)));
        state.admit(&limits, None, 0, now, wall).expect("second");
        match state.admit(&limits, None, 0, now, wall).map_err(|r| (r.error, r.report)) {
            Err((ApiError::RateLimited { retry_after, limit: 2, what }, report)) => {
                assert!(retry_after.as_secs_f64() > 29.0);
                assert_eq!(what, limit_name::REQUESTS);
                assert_eq!(report.requests.map(|r| (r.0, r.1)), Some((2, 0)), "the refusal's headers say none left");
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[test]
    fn token_estimates_are_corrected_by_real_usage() {
        let state = KeyState::new();
        let limits = tier(None, Some(1000), None);
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let admission = state.admit(&limits, None, 100, now, wall).expect("admitted");
        assert_eq!(admission.report.tokens.map(|t| t.1), Some(900));
        // The request really used 950 tokens: only 50 are left.
        state.settle(&admission, &limits, Used { prompt_tokens: 900, completion_tokens: 50, cost_usd: 0.0 }, now, wall);
        let next = state.admit(&limits, None, 10, now, wall).expect("admitted");
        assert_eq!(next.report.tokens.map(|t| t.1), Some(40));
        assert!(state.admit(&limits, None, 100, now, wall).is_err(), "more than what is left");
    }

    #[test]
    fn concurrency_slots_are_released_on_settle() {
        let state = KeyState::new();
        let limits = tier(None, None, Some(1));
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let held = state.admit(&limits, None, 0, now, wall).expect("first");
        assert!(matches!(
            state.admit(&limits, None, 0, now, wall).map_err(|r| r.error),
            Err(ApiError::RateLimited { what: limit_name::CONCURRENCY, .. })
        ));
        state.settle(&held, &limits, Used::default(), now, wall);
        assert!(state.admit(&limits, None, 0, now, wall).is_ok());
    }

    #[test]
    fn budgets_stop_spending_and_reset_with_the_period() {
        let state = KeyState::new();
        let limits = tier(None, None, None);
        let budget = BudgetConfig { limit_usd: 1.0, period: BudgetPeriod::Daily };
        let now = Instant::now();
        let day1: jiff::Timestamp = "2026-03-01T10:00:00Z".parse().expect("time");
        let day2: jiff::Timestamp = "2026-03-02T00:00:01Z".parse().expect("time");
        let admission = state.admit(&limits, Some(&budget), 0, now, day1).expect("admitted");
        state.settle(&admission, &limits, Used { cost_usd: 1.5, ..Used::default() }, now, day1);
        assert!(matches!(
            state.admit(&limits, Some(&budget), 0, now, day1),
            Err(Refusal { error: ApiError::BudgetExhausted { .. }, .. })
        ));
        assert!(state.admit(&limits, Some(&budget), 0, now, day2).is_ok(), "a new day, a new budget");
        let today = budget_period(BudgetPeriod::Daily, day2);
        assert_eq!(state.totals(today).spend_usd, 0.0);
    }

    #[test]
    fn budgets_count_what_other_replicas_spent() {
        let state = KeyState::new();
        let limits = tier(None, None, None);
        let budget = BudgetConfig { limit_usd: 1.0, period: BudgetPeriod::Monthly };
        let now = Instant::now();
        let wall: jiff::Timestamp = "2026-03-10T10:00:00Z".parse().expect("time");
        let admission = state.admit(&limits, Some(&budget), 0, now, wall).expect("admitted");
        state.settle(&admission, &limits, Used { prompt_tokens: 10, completion_tokens: 5, cost_usd: 0.4 }, now, wall);
        let period = budget_period(BudgetPeriod::Monthly, wall);
        state.set_spent_elsewhere(period, 0.5);
        assert!(state.admit(&limits, Some(&budget), 0, now, wall).is_ok(), "0.9 of 1.0 spent");
        state.set_spent_elsewhere(period, 0.6);
        assert!(matches!(
            state.admit(&limits, Some(&budget), 0, now, wall),
            Err(Refusal { error: ApiError::BudgetExhausted { .. }, .. })
        ));
        state.set_spent_elsewhere(period - 1, 5.0);
        assert!(
            state.admit(&limits, Some(&budget), 0, now, wall).is_ok(),
            "last month's spend elsewhere does not count"
        );
        let totals = state.totals(period);
        assert_eq!((totals.requests, totals.prompt_tokens, totals.completion_tokens), (1, 10, 5));
        assert_eq!(period_id(BudgetPeriod::Monthly, wall), "monthly:2026-03");
        assert_eq!(period_id(BudgetPeriod::Daily, wall), "daily:2026-03-10");
    }

    #[test]
    fn budget_periods_follow_the_utc_calendar() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().expect("time");
        let monthly = |s| budget_period(BudgetPeriod::Monthly, t(s));
        assert_eq!(monthly("2026-01-31T23:59:59Z"), monthly("2026-01-01T00:00:00Z"));
        assert_ne!(monthly("2026-01-31T23:59:59Z"), monthly("2026-02-01T00:00:00Z"));
        assert_eq!(budget_period(BudgetPeriod::Total, t("2030-01-01T00:00:00Z")), 0);
    }

    #[test]
    fn retry_budget_allows_the_floor_then_the_percentage() {
        let budget = RetryBudget::new();
        let now = Instant::now();
        assert!(budget.withdraw(1, now), "the per-second floor");
        assert!(!budget.withdraw(1, now), "nothing deposited");
        for _ in 0..10 {
            budget.deposit(10);
        }
        assert!(budget.withdraw(1, now), "ten requests at 10% buy one retry");
        assert!(!budget.withdraw(1, now));
    }
}
