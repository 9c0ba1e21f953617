//! Limits shared by every replica through Redis (or Valkey): one server-side script checks and
//! reserves a request atomically (requests and tokens per minute as token buckets on Redis's
//! clock, requests in flight as expiring leases, the project ceiling, the budget), another
//! settles it (token estimate corrected with the real usage, lease released, spend written).
//!
//! Redis is never waited on longer than `--redis-timeout-ms`. After a few failures in a row
//! a circuit opens: requests stop trying Redis and are admitted by this replica's in-process
//! counters at 1/N of each limit (N = `--replicas-hint`); a background task probes Redis and
//! closes the circuit when it answers. The transition is logged once each way and counted.
//!
//! Spend is written idempotently: each process owns one field (`<pod>:<boot nonce>`) of the
//! period's spend hash and writes its cumulative total there with a max-merge, so a write
//! repeated after a timeout, or replayed after an outage, can never count twice, and what could
//! not be written stays in memory (marked dirty) until it is.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sluice_crds::api::BudgetPeriod;
use sluice_crds::config::BudgetConfig;

use super::{
    Admission, Ask, LimitReport, Limiter, ProjectCeiling, Refusal, budget_exhausted, budget_period, limit_name,
};
use crate::error::ApiError;
use crate::metrics::LimiterMetrics;

/// Failures in a row that open the circuit.
const FAILURES_TO_OPEN: u32 = 3;
/// How long a lease outlives its request's total time limit (a replica that died holding it).
const LEASE_MARGIN_MS: u64 = 5_000;

/// Bucket arithmetic both scripts share; `now` is Redis's clock in milliseconds.
const BUCKET_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 't')
  if not v[1] then return cap end
  local l = tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60000
  if l > cap then return cap end
  return l
end
local function store(key, cap, l)
  redis.call('HSET', key, 'l', l, 't', now)
  redis.call('PEXPIRE', key, math.ceil((cap - l) * 60000 / cap) + 1000)
end
local function full_in(cap, l)
  if cap <= 0 then return 0 end
  return math.ceil((cap - l) * 60000 / cap)
end
local function merge_spend(key, field, mine, ttl)
  if mine < 0 then return end
  local cur = redis.call('HGET', key, field)
  if (not cur) or tonumber(cur) < mine then redis.call('HSET', key, field, mine) end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
";

/// KEYS: requests, tokens, leases, spend, project requests, project tokens.
/// ARGV: rpm, tpm, max in flight, project rpm, project tpm (0: none), estimate, lease id,
/// lease ms, this process's spend field, its spend (nano-USD), budget (nano-USD, -1: none).
/// Returns {status, retry ms, requests left, requests full in ms, tokens left, tokens full in
/// ms, others' spend}; status 0 admitted, 1 requests, 2 tokens, 3 concurrency, 4 project
/// requests, 5 budget, 6 project tokens.
const ADMIT_LUA: &str = r"
local rpm, tpm, maxc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prpm, ptpm, est = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local budget = tonumber(ARGV[11])
local others = 0
if budget >= 0 then
  local fields = redis.call('HGETALL', KEYS[4])
  for i = 1, #fields, 2 do
    if fields[i] ~= ARGV[9] then others = others + tonumber(fields[i + 1]) end
  end
end
local rl, tl = 0, 0
if rpm > 0 then rl = level(KEYS[1], rpm) end
if tpm > 0 then tl = level(KEYS[2], tpm) end
local function reply(status, retry)
  return {status, retry, math.floor(math.max(rl, 0)), full_in(rpm, rl), math.floor(math.max(tl, 0)), full_in(tpm, tl), others}
end
if budget >= 0 and others + tonumber(ARGV[10]) >= budget then return reply(5, 0) end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then return reply(3, 1000) end
end
if rpm > 0 and rl + 1e-9 < 1 then return reply(1, math.ceil((1 - rl) * 60000 / rpm)) end
local need = math.min(est, tpm)
if tpm > 0 and tl + 1e-9 < need then return reply(2, math.ceil((need - tl) * 60000 / tpm)) end
local prl, ptl = 0, 0
if prpm > 0 then
  prl = level(KEYS[5], prpm)
  if prl + 1e-9 < 1 then return reply(4, math.ceil((1 - prl) * 60000 / prpm)) end
end
if ptpm > 0 then
  local pneed = math.min(est, ptpm)
  ptl = level(KEYS[6], ptpm)
  if ptl + 1e-9 < pneed then return reply(6, math.ceil((pneed - ptl) * 60000 / ptpm)) end
end
if maxc > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), ARGV[7])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[8]))
end
if rpm > 0 then rl = rl - 1; store(KEYS[1], rpm, rl) end
if tpm > 0 then tl = tl - est; store(KEYS[2], tpm, tl) end
if prpm > 0 then store(KEYS[5], prpm, prl - 1) end
if ptpm > 0 then store(KEYS[6], ptpm, ptl - est) end
return reply(0, 0)
";

/// KEYS: tokens, leases, spend, project tokens.
/// ARGV: tpm, project tpm (0: none), tokens to give back (negative: to charge), lease id ('':
/// none), spend field, cumulative spend (nano-USD, -1: none), spend TTL seconds (0: none).
const SETTLE_LUA: &str = r"
local tpm, ptpm, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if c ~= 0 then
  if tpm > 0 then local l = math.min(level(KEYS[1], tpm) + c, tpm); store(KEYS[1], tpm, l) end
  if ptpm > 0 then local l = math.min(level(KEYS[4], ptpm) + c, ptpm); store(KEYS[4], ptpm, l) end
end
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[2], ARGV[4]) end
merge_spend(KEYS[3], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]))
return 1
";

/// KEYS: spend. ARGV: spend field, cumulative spend (nano-USD), TTL seconds (0: none).
const MERGE_LUA: &str = r"
merge_spend(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
";

/// How to reach Redis and what to do without it.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[:password@]host:port[/db]` (never logged: it may hold a password).
    pub url: String,
    /// Longest wait for one Redis call.
    pub timeout: Duration,
    /// How often an open circuit probes Redis, and dirty spend is written.
    pub probe_interval: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Multiplexed connections, used in turn.
    pub connections: usize,
    /// Replicas sharing the limits: the fallback enforces 1/N of each.
    pub replicas: u32,
    /// This process's name (the pod's); a boot nonce is added.
    pub instance: String,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// One process's spend for one key and period, as written (or still to write) to Redis.
#[derive(Debug)]
struct SpendCell {
    /// The spend hash's name.
    hash: String,
    kind: BudgetPeriod,
    period: i64,
    /// This process's cumulative spend in the period, nano-USD.
    mine: u64,
    /// The largest value Redis confirmed for this process's field.
    written: u64,
    /// What the other processes had spent at the last answer, nano-USD.
    others: u64,
}

/// The Redis side of the limiter.
pub struct SharedLimits {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    admit_script: Script,
    settle_script: Script,
    merge_script: Script,
    options: RedisOptions,
    /// `<pod>:<boot nonce>`: this process's field in spend hashes and its lease prefix.
    instance: String,
    leases: AtomicU64,
    open: AtomicBool,
    failures: AtomicU32,
    /// Spend by (key id, period).
    spend: Mutex<HashMap<(String, i64), SpendCell>>,
    /// Leases whose release could not be sent: (leases key, lease id).
    releases: Mutex<Vec<(String, String)>>,
    metrics: LimiterMetrics,
}

impl fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits").field("options", &self.options).finish_non_exhaustive()
    }
}

/// What settling a Redis-admitted (or fallback-admitted) request must tell Redis.
#[derive(Debug)]
pub struct Ticket {
    limits: Arc<SharedLimits>,
    /// `<prefix>:<project>:<key id>`.
    base: String,
    project_base: String,
    /// The lease taken in Redis (`None`: admitted in-process, or no concurrency limit).
    lease: Option<String>,
    /// Tokens per minute charged in Redis (0: none, or admitted in-process).
    tpm: u64,
    project_tpm: u64,
    key_id: String,
    budget: Option<BudgetPeriod>,
}

fn nano(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 { (usd * 1e9).round() as u64 } else { 0 }
}

/// Seconds a period's spend hash lives after its last write (0: forever).
fn spend_ttl(kind: BudgetPeriod) -> u64 {
    match kind {
        BudgetPeriod::Daily => 2 * 86_400,
        BudgetPeriod::Monthly => 40 * 86_400,
        BudgetPeriod::Total => 0,
    }
}

impl SharedLimits {
    /// Prepares the connections; nothing is dialled until the first call, so a gateway starts
    /// (and serves on its fallback) while Redis is away.
    pub fn new(options: RedisOptions, metrics: LimiterMetrics) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| format!("--redis-url: {}", e.to_string().replace(&options.url, "<url>")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(options.timeout.max(Duration::from_millis(250))))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connections = (0..options.connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("Redis client: {e}"))?;
        let script = |body: &str| Script::new(&format!("{BUCKET_LUA}{body}"));
        let instance = format!("{}:{:08x}", options.instance, rand::random::<u32>());
        metrics.redis_up.set(1);
        Ok(Arc::new(Self {
            connections,
            next: AtomicUsize::new(0),
            admit_script: script(ADMIT_LUA),
            settle_script: script(SETTLE_LUA),
            merge_script: script(MERGE_LUA),
            options,
            instance,
            leases: AtomicU64::new(0),
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            spend: Mutex::default(),
            releases: Mutex::default(),
            metrics,
        }))
    }

    /// Where Redis is, without credentials, for the start-up log line.
    pub fn describe(&self) -> String {
        redis::Client::open(self.options.url.as_str())
            .map(|c| c.get_connection_info().addr().to_string())
            .unwrap_or_else(|_| "?".to_owned())
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    /// Whether requests may try Redis now.
    pub fn available(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            // A Redis that comes back empty (restarted without persistence) gets every period
            // this process holds written again; the max-merge makes that harmless otherwise.
            for cell in self.spend.lock().unwrap_or_else(PoisonError::into_inner).values_mut() {
                cell.written = 0;
            }
            self.metrics.redis_up.set(1);
            tracing::info!("Redis answers again: limits are shared across replicas again");
        }
    }

    fn failed(&self, what: &str, error: Option<&redis::RedisError>) {
        self.metrics.redis_errors(if error.is_some() { "error" } else { "timeout" }).inc();
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= FAILURES_TO_OPEN && !self.open.swap(true, Ordering::AcqRel) {
            self.metrics.redis_up.set(0);
            tracing::warn!(
                during = what,
                error = %error.map_or_else(|| format!("no answer within {:?}", self.options.timeout), ToString::to_string),
                replicas_hint = self.options.replicas,
                "Redis unavailable: enforcing per-replica limits at 1/N of each until it answers again"
            );
        }
    }

    /// Runs one Redis call within the timeout; `None` (and a counted failure) when it fails.
    async fn call<T>(&self, what: &str, call: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(Ok(value)) => {
                self.succeeded();
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(what, Some(&error));
                None
            }
            Err(_) => {
                self.failed(what, None);
                None
            }
        }
    }

    fn base(&self, project: &str, key_id: &str) -> String {
        format!("{}:{project}:{key_id}", self.options.key_prefix)
    }

    /// This process's spend and the others' last known one, nano-USD, for a key's period
    /// (creating the cell).
    fn spend_of(&self, ask: &Ask<'_>, budget: &BudgetConfig, base: &str) -> (u64, u64) {
        let period = budget_period(budget.period, ask.wall);
        let mut cells = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        let cell = cells.entry((ask.key_id.to_owned(), period)).or_insert_with(|| SpendCell {
            hash: format!("{base}:spend:{}", budget.period.period_id(ask.wall)),
            kind: budget.period,
            period,
            mine: 0,
            written: 0,
            others: 0,
        });
        (cell.mine, cell.others)
    }

    fn set_others(&self, key_id: &str, period: i64, others: u64) {
        let mut cells = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = cells.get_mut(&(key_id.to_owned(), period)) {
            cell.others = others;
        }
    }

    /// Admits through Redis, or through `limiter`'s in-process counters while Redis is away.
    pub(super) async fn admit(
        self: &Arc<Self>,
        limiter: &Limiter,
        ask: &Ask<'_>,
        ceiling: ProjectCeiling,
    ) -> Result<Admission, Refusal> {
        let base = self.base(ask.project, ask.key_id);
        let project_base = format!("{}:{}:_project", self.options.key_prefix, ask.project);
        let spend = ask.budget.map(|budget| (budget, self.spend_of(ask, budget, &base)));
        let ticket = |lease, tpm, project_tpm| Ticket {
            limits: self.clone(),
            base: base.clone(),
            project_base: project_base.clone(),
            lease,
            tpm,
            project_tpm,
            key_id: ask.key_id.to_owned(),
            budget: ask.budget.map(|b| b.period),
        };
        if self.available() {
            let tier = ask.tier;
            let lease = tier
                .max_concurrent
                .map(|_| format!("{}:{}", self.instance, self.leases.fetch_add(1, Ordering::Relaxed)));
            let lease_ms = u64::from(tier.total_ms) + LEASE_MARGIN_MS;
            let (mine, budget_nano) = match spend {
                Some((budget, (mine, _))) => (mine, nano(budget.limit_usd) as i64),
                None => (0, -1),
            };
            let spend_hash = match ask.budget {
                Some(budget) => format!("{base}:spend:{}", budget.period.period_id(ask.wall)),
                None => format!("{base}:spend"),
            };
            let mut invocation = self.admit_script.prepare_invoke();
            invocation
                .key(format!("{base}:rpm"))
                .key(format!("{base}:tpm"))
                .key(format!("{base}:inflight"))
                .key(spend_hash)
                .key(format!("{project_base}:rpm"))
                .key(format!("{project_base}:tpm"))
                .arg(tier.requests_per_minute.unwrap_or(0))
                .arg(tier.tokens_per_minute.unwrap_or(0))
                .arg(tier.max_concurrent.unwrap_or(0))
                .arg(ceiling.requests_per_minute.unwrap_or(0))
                .arg(ceiling.tokens_per_minute.unwrap_or(0))
                .arg(ask.estimated_tokens)
                .arg(lease.as_deref().unwrap_or(""))
                .arg(lease_ms)
                .arg(&self.instance)
                .arg(mine)
                .arg(budget_nano);
            let mut connection = self.connection();
            let reply: Option<Vec<i64>> = self.call("admit", invocation.invoke_async(&mut connection)).await;
            if let Some(reply) = reply.filter(|r| r.len() == 7) {
                if let Some(budget) = ask.budget {
                    self.set_others(ask.key_id, budget_period(budget.period, ask.wall), reply[6].max(0) as u64);
                }
                let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
                let report = LimitReport {
                    requests: tier
                        .requests_per_minute
                        .map(|rpm| (u64::from(rpm), reply[2].max(0) as u64, ms(reply[3]))),
                    tokens: tier.tokens_per_minute.map(|tpm| (tpm, reply[4].max(0) as u64, ms(reply[5]))),
                };
                let retry_after = ms(reply[1]);
                let limited = |what, limit: Option<u64>| {
                    let error = ApiError::RateLimited { what, limit: limit.unwrap_or(0), retry_after };
                    Err(Refusal { error, report: Box::new(report) })
                };
                return match reply[0] {
                    0 => Ok(Admission {
                        report,
                        estimated_tokens: ask.estimated_tokens,
                        holds_slot: false,
                        local_tokens: None,
                        period_kind: ask.budget.map_or(BudgetPeriod::Monthly, |b| b.period),
                        project: None,
                        shared: Some(ticket(
                            lease,
                            tier.tokens_per_minute.unwrap_or(0),
                            ceiling.tokens_per_minute.unwrap_or(0),
                        )),
                    }),
                    1 => limited(limit_name::REQUESTS, tier.requests_per_minute.map(u64::from)),
                    2 => limited(limit_name::TOKENS, tier.tokens_per_minute),
                    3 => limited(limit_name::CONCURRENCY, tier.max_concurrent.map(u64::from)),
                    4 => limited(limit_name::PROJECT, ceiling.requests_per_minute.map(u64::from)),
                    6 => limited(limit_name::PROJECT, ceiling.tokens_per_minute),
                    _ => match ask.budget {
                        Some(budget) => Err(Refusal { error: budget_exhausted(budget), report: Box::new(report) }),
                        None => limited(limit_name::REQUESTS, None),
                    },
                };
            }
        }
        // The fallback: this replica's share of every limit, and the budget as last known.
        self.metrics.fallback_admissions.inc();
        if let Some((budget, (mine, others))) = spend
            && mine + others >= nano(budget.limit_usd)
        {
            return Err(budget_exhausted(budget).into());
        }
        let mut admission = limiter.admit_local(ask, self.options.replicas.max(1))?;
        admission.shared = Some(ticket(None, 0, 0));
        Ok(admission)
    }

    /// Records a request's spend in memory, then tells Redis (in the background) what settles it.
    fn settle(self: &Arc<Self>, ticket: &Ticket, correction: f64, cost_usd: f64, wall: jiff::Timestamp) {
        // This process's cumulative spend in the period: what the spend field must hold.
        let spend = ticket.budget.and_then(|kind| {
            let period = budget_period(kind, wall);
            let mut cells = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
            let cell = cells.entry((ticket.key_id.clone(), period)).or_insert_with(|| SpendCell {
                hash: format!("{}:spend:{}", ticket.base, kind.period_id(wall)),
                kind,
                period,
                mine: 0,
                written: 0,
                others: 0,
            });
            cell.mine += nano(cost_usd);
            (cell.mine > cell.written).then(|| (cell.hash.clone(), cell.mine))
        });
        let correction = correction.round() as i64;
        let tokens = (ticket.tpm > 0 || ticket.project_tpm > 0) && correction != 0;
        if spend.is_none() && ticket.lease.is_none() && !tokens {
            return;
        }
        let leases = format!("{}:inflight", ticket.base);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.defer_release(&leases, ticket.lease.as_deref());
            return;
        };
        if !self.available() {
            // The spend stays dirty in its cell and the lease is queued: the probe task writes
            // them when Redis answers. A lost token correction heals as the bucket refills.
            self.defer_release(&leases, ticket.lease.as_deref());
            return;
        }
        let limits = self.clone();
        let tokens_key = format!("{}:tpm", ticket.base);
        let project_tokens = format!("{}:tpm", ticket.project_base);
        let (tpm, project_tpm, lease) = (ticket.tpm, ticket.project_tpm, ticket.lease.clone());
        let key_id = ticket.key_id.clone();
        let period = ticket.budget.map(|kind| budget_period(kind, wall));
        let ttl = ticket.budget.map_or(0, spend_ttl);
        runtime.spawn(async move {
            let (hash, mine) = spend.clone().unwrap_or_else(|| (format!("{leases}:none"), 0));
            let mut invocation = limits.settle_script.prepare_invoke();
            invocation
                .key(&tokens_key)
                .key(&leases)
                .key(&hash)
                .key(&project_tokens)
                .arg(tpm)
                .arg(project_tpm)
                .arg(correction)
                .arg(lease.as_deref().unwrap_or(""))
                .arg(&limits.instance)
                .arg(if spend.is_some() { mine as i64 } else { -1 })
                .arg(ttl);
            let mut connection = limits.connection();
            match limits.call("settle", invocation.invoke_async::<i64>(&mut connection)).await {
                Some(_) => {
                    if let Some(period) = period.filter(|_| spend.is_some()) {
                        limits.mark_written(&key_id, period, mine);
                    }
                }
                None => limits.defer_release(&leases, lease.as_deref()),
            }
        });
    }

    fn defer_release(&self, leases: &str, lease: Option<&str>) {
        if let Some(lease) = lease {
            let mut releases = self.releases.lock().unwrap_or_else(PoisonError::into_inner);
            // Unbounded growth is impossible in practice (leases expire anyway); cap it all the same.
            if releases.len() < 100_000 {
                releases.push((leases.to_owned(), lease.to_owned()));
            }
        }
    }

    fn mark_written(&self, key_id: &str, period: i64, mine: u64) {
        let mut cells = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = cells.get_mut(&(key_id.to_owned(), period)) {
            cell.written = cell.written.max(mine);
        }
    }

    /// Spend not yet confirmed by Redis, nano-USD, summed over keys (for tests and metrics).
    pub fn unwritten_spend_nano(&self) -> u64 {
        let cells = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
        cells.values().map(|c| c.mine.saturating_sub(c.written)).sum()
    }

    /// Probes Redis while the circuit is open, and writes what waited: dirty spend (one
    /// pipeline, the script loaded first so no call meets NOSCRIPT) and lease releases. Runs
    /// for the life of the gateway.
    pub async fn maintain(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.options.probe_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !self.available() {
                let mut connection = self.connection();
                let ping = redis::cmd("PING");
                if self.call("probe", ping.query_async::<String>(&mut connection)).await.is_none() {
                    continue;
                }
            }
            self.flush().await;
        }
    }

    /// Writes dirty spend and queued lease releases; returns whether all were written.
    pub async fn flush(&self) -> bool {
        let now = jiff::Timestamp::now();
        let dirty: Vec<(String, i64, String, u64, u64)> = {
            let mut cells = self.spend.lock().unwrap_or_else(PoisonError::into_inner);
            // Written cells of past periods are done with.
            cells.retain(|_, c| c.mine > c.written || c.period == budget_period(c.kind, now));
            cells
                .iter()
                .filter(|(_, c)| c.mine > c.written)
                .map(|((key, period), c)| (key.clone(), *period, c.hash.clone(), c.mine, spend_ttl(c.kind)))
                .collect()
        };
        let releases = std::mem::take(&mut *self.releases.lock().unwrap_or_else(PoisonError::into_inner));
        self.metrics.unwritten_spend.set(dirty.len() as i64);
        if dirty.is_empty() && releases.is_empty() {
            return true;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(self.merge_script_source()).ignore();
        for (_, _, hash, mine, ttl) in &dirty {
            pipe.cmd("EVALSHA")
                .arg(self.merge_script.get_hash())
                .arg(1)
                .arg(hash)
                .arg(&self.instance)
                .arg(*mine)
                .arg(*ttl)
                .ignore();
        }
        for (leases, lease) in &releases {
            pipe.cmd("ZREM").arg(leases).arg(lease).ignore();
        }
        let mut connection = self.connection();
        match self.call("flush", pipe.query_async::<()>(&mut connection)).await {
            Some(()) => {
                for (key, period, _, mine, _) in &dirty {
                    self.mark_written(key, *period, *mine);
                }
                self.metrics.unwritten_spend.set(0);
                if !dirty.is_empty() {
                    tracing::info!(cells = dirty.len(), "spend kept while Redis was away is written");
                }
                true
            }
            None => {
                let mut queued = self.releases.lock().unwrap_or_else(PoisonError::into_inner);
                queued.extend(releases);
                false
            }
        }
    }

    fn merge_script_source(&self) -> String {
        format!("{BUCKET_LUA}{MERGE_LUA}")
    }
}

/// One key's usage in one period as one process saw it (cumulative), or summed over processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageFigures {
    /// Requests settled.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost, nano-USD.
    pub cost_nano: u64,
}

impl UsageFigures {
    /// `"<requests> <prompt> <completion> <nano-USD>"`: one hash field's value.
    fn encode(self) -> String {
        format!("{} {} {} {}", self.requests, self.prompt_tokens, self.completion_tokens, self.cost_nano)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ').map(str::parse::<u64>);
        let mut next = || parts.next()?.ok();
        Some(Self { requests: next()?, prompt_tokens: next()?, completion_tokens: next()?, cost_nano: next()? })
    }

    fn add(&mut self, other: Self) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_nano += other.cost_nano;
    }
}

/// A key's usage this process publishes for the other replicas to read.
#[derive(Clone, Debug)]
pub struct PublishedUsage {
    /// The project's slug.
    pub project: String,
    /// The key's id.
    pub key_id: String,
    /// The period's kind (the key's budget period; monthly without a budget).
    pub kind: BudgetPeriod,
    /// An instant in the period.
    pub at: jiff::Timestamp,
    /// This process's cumulative figures in it.
    pub figures: UsageFigures,
}

/// Cluster-wide usage, read by `GET /v1/keys/self`: each process publishes its cumulative
/// figures of a key's period into its own field of `<prefix>:<project>:<key id>:usage:<period
/// id>` (off the request path, every `--redis-probe-ms`), and a reader sums the other fields
/// with its own live figures. Overwriting one's own field with a larger cumulative value can
/// never count twice.
impl SharedLimits {
    fn usage_hash(&self, project: &str, key_id: &str, kind: BudgetPeriod, at: jiff::Timestamp) -> String {
        format!("{}:usage:{}", self.base(project, key_id), kind.period_id(at))
    }

    /// Writes this process's figures (one pipeline); whether Redis took them.
    pub async fn publish_usage(&self, entries: &[PublishedUsage]) -> bool {
        if entries.is_empty() || !self.available() {
            return entries.is_empty();
        }
        let mut pipe = redis::pipe();
        for entry in entries {
            let hash = self.usage_hash(&entry.project, &entry.key_id, entry.kind, entry.at);
            pipe.cmd("HSET").arg(&hash).arg(&self.instance).arg(entry.figures.encode()).ignore();
            let ttl = spend_ttl(entry.kind);
            if ttl > 0 {
                pipe.cmd("EXPIRE").arg(&hash).arg(ttl).ignore();
            }
        }
        let mut connection = self.connection();
        self.call("usage", pipe.query_async::<()>(&mut connection)).await.is_some()
    }

    /// What every other process published for a key's period, summed; `None` while Redis is
    /// unavailable.
    pub async fn usage_elsewhere(
        &self,
        project: &str,
        key_id: &str,
        kind: BudgetPeriod,
        at: jiff::Timestamp,
    ) -> Option<UsageFigures> {
        if !self.available() {
            return None;
        }
        let hash = self.usage_hash(project, key_id, kind, at);
        let mut connection = self.connection();
        let fields: Vec<(String, String)> =
            self.call("usage", redis::cmd("HGETALL").arg(&hash).query_async(&mut connection)).await?;
        let mut sum = UsageFigures::default();
        for (field, value) in fields {
            if field != self.instance
                && let Some(figures) = UsageFigures::decode(&value)
            {
                sum.add(figures);
            }
        }
        Some(sum)
    }
}

impl Ticket {
    /// Ends the request on the Redis side (see [`SharedLimits::settle`]).
    pub(super) fn settle(&self, correction: f64, cost_usd: f64, wall: jiff::Timestamp) {
        self.limits.settle(self, correction, cost_usd, wall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_is_counted_in_whole_nano_dollars() {
        assert_eq!(nano(0.000_002), 2_000);
        assert_eq!(nano(1.5), 1_500_000_000);
        assert_eq!(nano(-1.0), 0);
        assert_eq!(nano(f64::NAN), 0);
    }

    #[test]
    fn usage_figures_round_trip_and_refuse_garbage() {
        let figures = UsageFigures { requests: 3, prompt_tokens: 30, completion_tokens: 12, cost_nano: 54_000 };
        assert_eq!(UsageFigures::decode(&figures.encode()), Some(figures));
        assert_eq!(UsageFigures::decode("1 2 3"), None);
        assert_eq!(UsageFigures::decode("1 2 x 4"), None);
    }

    #[test]
    fn options_never_show_the_url() {
        let options = RedisOptions {
            url: "redis://:hunter2@127.0.0.1:6379".into(),
            timeout: Duration::from_millis(50),
            probe_interval: Duration::from_millis(500),
            key_prefix: "sluice".into(),
            connections: 1,
            replicas: 2,
            instance: "pod".into(),
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
