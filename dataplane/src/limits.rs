//! Per-key admission: requests and tokens per minute, requests in flight, and budgets.
//!
//! In-process counters (one replica). The arithmetic is pure ([`Bucket`], [`budget_period`]) and
//! unit-tested; [`KeyState`] holds the live counters, which outlive configuration reloads so a
//! reload never resets anyone's limits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
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
    period_kind: BudgetPeriod,
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
    ) -> Result<Admission, ApiError> {
        let period_kind = budget.map_or(BudgetPeriod::Monthly, |b| b.period);
        if let Some(budget) = budget {
            let period = budget_period(budget.period, wall);
            let local = self.totals(period).spend_usd;
            let elsewhere = *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner);
            let other = if elsewhere.0 == period { elsewhere.1 } else { 0.0 };
            if local + other >= budget.limit_usd {
                return Err(ApiError::BudgetExhausted {
                    limit_usd: budget.limit_usd,
                    period: period_name(budget.period),
                });
            }
        }
        let holds_slot = if let Some(max) = tier.max_concurrent {
            let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
            if before >= max {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(ApiError::RateLimited {
                    what: "concurrent requests",
                    limit: u64::from(max),
                    retry_after: Duration::from_secs(1),
                });
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
            match bucket.take(now, capacity, 1.0) {
                Ok(left) => report.requests = Some((u64::from(rpm), left as u64, bucket.until_full(capacity))),
                Err(wait) => {
                    release_slot(holds_slot);
                    return Err(ApiError::RateLimited {
                        what: "requests per minute",
                        limit: u64::from(rpm),
                        retry_after: wait,
                    });
                }
            }
        }
        if let Some(tpm) = tier.tokens_per_minute {
            let capacity = tpm as f64;
            let mut bucket = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            match bucket.take(now, capacity, estimated_tokens as f64) {
                Ok(left) => report.tokens = Some((tpm, left as u64, bucket.until_full(capacity))),
                Err(wait) => {
                    drop(bucket);
                    if let Some(rpm) = tier.requests_per_minute {
                        // The request was refused: give its request back.
                        self.requests.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, f64::from(rpm), 1.0);
                    }
                    release_slot(holds_slot);
                    return Err(ApiError::RateLimited { what: "tokens per minute", limit: tpm, retry_after: wait });
                }
            }
        }
        Ok(Admission { report, estimated_tokens, holds_slot, period_kind })
    }

    /// Ends an admitted request: frees its slot, corrects the token estimate with the real
    /// count, and adds its usage and cost to the period's totals. Called exactly once per
    /// admission.
    pub fn settle(&self, admission: &Admission, tier: &TierConfig, used: Used, now: Instant, wall: jiff::Timestamp) {
        if admission.holds_slot {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(tpm) = tier.tokens_per_minute {
            let correction = admission.estimated_tokens as f64 - (used.prompt_tokens + used.completion_tokens) as f64;
            if correction != 0.0 {
                self.tokens.lock().unwrap_or_else(PoisonError::into_inner).adjust(now, tpm as f64, correction);
            }
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

    #[test]
    fn requests_per_minute_refuse_the_next_request_and_say_when() {
        let state = KeyState::new();
        let limits = tier(Some(2), None, None);
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let first = state.admit(&limits, None, 0, now, wall).expect("first");
        assert_eq!(first.report.requests.map(|r| (r.0, r.1)), Some((2, 1)));
        state.admit(&limits, None, 0, now, wall).expect("second");
        match state.admit(&limits, None, 0, now, wall) {
            Err(ApiError::RateLimited { retry_after, limit: 2, .. }) => assert!(retry_after.as_secs_f64() > 29.0),
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
        assert!(matches!(state.admit(&limits, None, 0, now, wall), Err(ApiError::RateLimited { .. })));
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
        assert!(matches!(state.admit(&limits, Some(&budget), 0, now, day1), Err(ApiError::BudgetExhausted { .. })));
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
        assert!(matches!(state.admit(&limits, Some(&budget), 0, now, wall), Err(ApiError::BudgetExhausted { .. })));
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
