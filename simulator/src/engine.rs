//! The simulated engine: arrival (fault draw), admission into a batch of at most `maxNumSeqs`
//! sequences with a FIFO queue beyond it, prefix-cache lookup, latency draws, and the live
//! state behind `/metrics` and `/_sim/*`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
// tokio's clock, so tests with a paused clock see the model's exact timings.
use tokio::time::Instant;

use crate::error::Result;
use crate::faults::{Fault, FaultConfig};
use crate::latency::LatencyModel;
use crate::metrics::Metrics;
use crate::prefix_cache::PrefixCache;
use crate::profile::Profile;
use crate::prompt::Prompt;
use crate::rng::{SplitMix64, combine};
use crate::streaming::StreamPlan;

/// Tokens a non-streamed generation sleeps through at once before it looks at the load again.
const SILENT_STEPS_PER_WAKE: usize = 8;

/// `created` of every response when [`Profile::deterministic_ids`] is on (2023-11-14).
pub const DETERMINISTIC_CREATED: u64 = 1_700_000_000;

/// One simulated LLM backend. Cheap to clone (one `Arc`); all clones share the batch, the
/// prefix cache, the faults and the metrics.
#[derive(Debug, Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    profile: Profile,
    latency: LatencyModel,
    faults: RwLock<FaultConfig>,
    slots: Arc<Semaphore>,
    cache: Mutex<PrefixCache>,
    kv_blocks: AtomicU64,
    requests: AtomicU64,
    metrics: Metrics,
    /// The last `recordRequests` inference requests, oldest first; `None` when none are kept.
    recorded: Option<Mutex<VecDeque<RecordedRequest>>>,
}

/// An inference request as this backend received it (`GET /_sim/requests`).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path and query.
    pub path: String,
    /// The body, byte for byte.
    pub body: Bytes,
}

/// A request that has arrived: its index, its clock and its random stream.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub index: u64,
    pub at: Instant,
    pub rng: SplitMix64,
}

/// A request admitted into the batch. Dropping it frees the batch slot.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The request's number since start (or the last reset).
    pub index: u64,
    /// Prompt tokens found in the prefix cache.
    pub cached_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// When the request arrived (before any queueing).
    pub arrived: Instant,
    /// When it entered the batch.
    pub admitted: Instant,
    /// Its random stream (jitter).
    pub rng: SplitMix64,
    slot: Option<Slot>,
}

#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    kv_blocks: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.metrics.running.dec();
        self.shared.kv_blocks.fetch_sub(self.kv_blocks, Ordering::Relaxed);
    }
}

struct Waiting<'a>(&'a Gauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Simulator {
    /// A backend that behaves as `profile` says (validated first).
    pub fn new(profile: Profile) -> Result<Self> {
        profile.validate()?;
        let model_name = profile.listed_models()[0].to_owned();
        Ok(Self {
            shared: Arc::new(Shared {
                latency: LatencyModel::new(&profile),
                faults: RwLock::new(profile.faults.clone()),
                slots: Arc::new(Semaphore::new(profile.max_num_seqs as usize)),
                cache: Mutex::new(PrefixCache::new(profile.prefix_cache_blocks as usize)),
                kv_blocks: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                metrics: Metrics::new(&model_name),
                recorded: (profile.record_requests > 0)
                    .then(|| Mutex::new(VecDeque::with_capacity(profile.record_requests as usize))),
                profile,
            }),
        })
    }

    /// The profile it was built from.
    pub fn profile(&self) -> &Profile {
        &self.shared.profile
    }

    /// The faults in force now.
    pub fn faults(&self) -> FaultConfig {
        self.shared.faults.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the faults in force (validated first); applies to requests arriving from now on.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<()> {
        faults.validate()?;
        *self.shared.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
        Ok(())
    }

    /// Back to the start: the profile's faults, an empty prefix cache, the request counter at 0
    /// (so a seeded run replays), no recorded requests. Metrics keep counting, as Prometheus
    /// counters must.
    pub fn reset(&self) {
        let shared = &self.shared;
        *shared.faults.write().unwrap_or_else(PoisonError::into_inner) = shared.profile.faults.clone();
        shared.cache.lock().unwrap_or_else(PoisonError::into_inner).clear();
        shared.requests.store(0, Ordering::Relaxed);
        self.clear_recorded_requests();
    }

    /// Whether request bodies are recorded (`recordRequests` above 0).
    pub fn records_requests(&self) -> bool {
        self.shared.recorded.is_some()
    }

    /// Keeps an inference request (dropping the oldest beyond `recordRequests`); does nothing
    /// when none are kept.
    pub fn record_request(&self, path: &str, body: &Bytes) {
        let Some(recorded) = &self.shared.recorded else { return };
        let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
        if recorded.len() == self.shared.profile.record_requests as usize {
            recorded.pop_front();
        }
        recorded.push_back(RecordedRequest { path: path.to_owned(), body: body.clone() });
    }

    /// The inference requests kept, oldest first.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorded.as_ref().map_or_else(Vec::new, |recorded| {
            recorded.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
        })
    }

    /// Forgets the inference requests kept.
    pub fn clear_recorded_requests(&self) {
        if let Some(recorded) = &self.shared.recorded {
            recorded.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Requests in the batch now.
    pub fn running(&self) -> usize {
        usize::try_from(self.shared.metrics.running.get()).unwrap_or(0)
    }

    /// Requests queued for a batch slot now.
    pub fn waiting(&self) -> usize {
        usize::try_from(self.shared.metrics.waiting.get()).unwrap_or(0)
    }

    /// Fraction of the KV cache held by running requests (0-1).
    pub fn kv_cache_usage(&self) -> f64 {
        let capacity = self.shared.profile.prefix_cache_blocks;
        if capacity == 0 {
            return 0.0;
        }
        (self.shared.kv_blocks.load(Ordering::Relaxed) as f64 / f64::from(capacity)).min(1.0)
    }

    /// Blocks held by the prefix cache.
    pub fn cached_blocks(&self) -> usize {
        self.shared.cache.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The `/metrics` page (Prometheus text format).
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render(self.kv_cache_usage())
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Registers an arriving request: numbers it and seeds its random stream.
    pub(crate) fn arrive(&self) -> Arrival {
        let index = self.shared.requests.fetch_add(1, Ordering::Relaxed);
        Arrival { index, at: Instant::now(), rng: SplitMix64::new(combine(self.shared.profile.seed, index)) }
    }

    /// Draws the fault of an arriving request from the faults in force.
    pub(crate) fn draw_fault(&self, arrival: &mut Arrival) -> Option<Fault> {
        let faults = self.shared.faults.read().unwrap_or_else(PoisonError::into_inner);
        if faults.is_quiet() {
            return None;
        }
        faults.pick(arrival.rng.next_f64())
    }

    /// Parses an `x-sim-fault` header against the faults in force.
    pub(crate) fn header_fault(&self, value: &str) -> Result<Option<Fault>, String> {
        self.shared.faults.read().unwrap_or_else(PoisonError::into_inner).parse_header(value)
    }

    /// Waits for a batch slot (FIFO), then looks the prompt up in the prefix cache and reserves
    /// KV blocks for the prompt and `planned_output` tokens. `None` only if the engine is shut.
    pub(crate) async fn admit(&self, arrival: Arrival, prompt: &Prompt, planned_output: usize) -> Option<Admission> {
        let shared = &self.shared;
        let permit = match shared.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                shared.metrics.waiting.inc();
                let _waiting = Waiting(&shared.metrics.waiting);
                shared.slots.clone().acquire_owned().await.ok()?
            }
            Err(TryAcquireError::Closed) => return None,
        };
        shared.metrics.running.inc();
        let block = shared.profile.prefix_cache_block_size as usize;
        let capacity = shared.profile.prefix_cache_blocks;
        let mut cached_tokens = 0;
        let mut kv_blocks = 0;
        if capacity > 0 {
            let hits = shared.cache.lock().unwrap_or_else(PoisonError::into_inner).lookup_and_insert(&prompt.blocks);
            cached_tokens = hits * block;
            // As in vLLM, a fully cached prompt still computes its last block.
            if cached_tokens > 0 && cached_tokens >= prompt.tokens {
                cached_tokens -= block;
            }
            kv_blocks = (prompt.tokens + planned_output).div_ceil(block) as u64;
            shared.kv_blocks.fetch_add(kv_blocks, Ordering::Relaxed);
        }
        let metrics = &shared.metrics;
        metrics.prompt_tokens.inc_by(prompt.tokens as u64);
        metrics.prefix_cache_queries.inc_by(prompt.tokens as u64);
        metrics.prefix_cache_hits.inc_by(cached_tokens as u64);
        Some(Admission {
            index: arrival.index,
            cached_tokens,
            prompt_tokens: prompt.tokens,
            arrived: arrival.at,
            admitted: Instant::now(),
            rng: arrival.rng,
            slot: Some(Slot { shared: shared.clone(), kv_blocks, _permit: permit }),
        })
    }

    /// The prefill time of an admitted request, at the current load.
    pub(crate) fn prefill_delay(&self, admission: &mut Admission) -> Duration {
        let uncached = admission.prompt_tokens - admission.cached_tokens;
        self.shared.latency.prefill(uncached, self.running(), &mut admission.rng)
    }

    /// The next inter-token time of an admitted request, at the current load.
    pub(crate) fn token_delay(&self, admission: &mut Admission) -> Duration {
        self.shared.latency.inter_token(self.running(), &mut admission.rng)
    }

    /// Records a finished request and frees its batch slot.
    pub(crate) fn finish(&self, admission: &mut Admission, generated: usize, reason: &str) {
        let metrics = &self.shared.metrics;
        metrics.generation_tokens.inc_by(generated as u64);
        metrics.e2e_latency.observe(admission.arrived.elapsed().as_secs_f64());
        metrics.finished(reason);
        admission.slot = None;
    }

    /// Sleeps through a whole non-streamed generation of `steps` token steps (time to first
    /// token, then one inter-token gap per further step), recording the latency metrics as a
    /// stream would have. Gaps follow the load as it changes, re-read every
    /// [`SILENT_STEPS_PER_WAKE`] tokens, so plain and streamed requests slow down alike.
    async fn generate_silently(&self, admission: &mut Admission, steps: usize) {
        let metrics = &self.shared.metrics;
        let prefill = self.prefill_delay(admission);
        metrics.ttft.observe((admission.admitted - admission.arrived + prefill).as_secs_f64());
        let mut deadline = admission.admitted + prefill;
        if !prefill.is_zero() {
            tokio::time::sleep_until(deadline).await;
        }
        if self.shared.latency.decode_is_instant() {
            return;
        }
        for step in 1..steps {
            let gap = self.token_delay(admission);
            metrics.inter_token_latency.observe(gap.as_secs_f64());
            metrics.time_per_output_token.observe(gap.as_secs_f64());
            deadline += gap;
            if step % SILENT_STEPS_PER_WAKE == 0 || step + 1 == steps {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }

    /// A whole non-streamed generation: the time it takes (see `generate_silently`), then the
    /// request is recorded as finished and leaves the batch.
    pub(crate) async fn generate_unstreamed(&self, admission: &mut Admission, plan: &StreamPlan) {
        self.generate_silently(admission, plan.steps).await;
        self.finish(admission, plan.generated, plan.finish_reason);
    }

    /// A response id (hex) and `created` timestamp: from the seed and the prompt when
    /// `deterministicIds` is on, else from the clock and the request index.
    pub(crate) fn response_ids(&self, index: u64, prompt_hash: u64) -> (String, u64) {
        let seed = self.shared.profile.seed;
        if self.shared.profile.deterministic_ids {
            let id = combine(seed, prompt_hash);
            return (format!("{id:016x}{:08x}", id >> 32), DETERMINISTIC_CREATED);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let id = combine(combine(seed, index), now.as_nanos() as u64);
        (format!("{id:016x}{:08x}", combine(id, index) >> 32), now.as_secs())
    }
}
