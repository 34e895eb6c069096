//! The provider pool: one [`ProviderHandle`] per configured remote provider,
//! shared by every route and swarm of the process.
//!
//! A handle owns what is per provider per process (DESIGN.md): the backend
//! client, the circuit breaker, the retry budget, the in-flight count, the
//! requests of the last minute and recent latencies. Routing reads it as a
//! [`ProviderSnapshot`] — a small `Copy` value — so that the decision itself
//! takes no lock. The breaker sits behind a mutex held for a few
//! instructions; the Health actor of a later issue takes ownership of it.
//!
//! Providers of kind `extractive` are not in the pool: the extractive
//! answer depends on the swarm's knowledge base, so it is given per request
//! and served as a final fallback. Kind `local` (a supervised local model
//! server) is not built yet and is left out with a warning.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{Admission, Breaker, BreakerPolicy, BreakerSnapshot, BreakerState};
use super::budget::{RetryBudget, RetryBudgetPolicy};
use super::decision::{BreakerGate, Capabilities, DomainId, ProviderSnapshot};
use crate::config::{Config, Provider, ProviderId, ProviderKind};
use crate::provider::anthropic::Anthropic;
use crate::provider::local::Local;
use crate::provider::openai::OpenAi;
use crate::provider::{Backend, ProviderError};
use crate::secret::Secret;

/// How many recent latencies a provider keeps for its percentiles.
const LATENCY_SAMPLES: usize = 256;

/// Why the pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("provider `{provider}`: {message}")]
    Provider {
        provider: ProviderId,
        message: String,
    },
    #[error("too many failure domains (at most 64)")]
    TooManyDomains,
}

/// A provider's health as its Health actor judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    /// Answering, but slower than `[health] degraded_latency` or failing
    /// more than `degraded_error_rate` of recent calls.
    Degraded,
    /// The breaker is open (or half-open, not yet proven).
    Down,
}

impl HealthState {
    fn from_u8(value: u8) -> HealthState {
        match value {
            1 => HealthState::Degraded,
            2 => HealthState::Down,
            _ => HealthState::Healthy,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            HealthState::Healthy => 0,
            HealthState::Degraded => 1,
            HealthState::Down => 2,
        }
    }

    pub fn is_up(self) -> bool {
        self != HealthState::Down
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Down => "down",
        })
    }
}

/// One attempt's outcome, as the provider's Health actor hears of it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub latency: Duration,
    /// The failure's label when it counts against the provider's health.
    pub failure: Option<&'static str>,
    pub status: Option<u16>,
}

type Observer = Box<dyn Fn(Observed) + Send + Sync>;

/// One remote provider and its live state.
pub struct ProviderHandle {
    pub spec: Provider,
    pub backend: Arc<dyn Backend>,
    pub domain: DomainId,
    pub capabilities: Capabilities,
    pub budget: RetryBudget,
    breaker: Mutex<Breaker>,
    in_flight: AtomicU32,
    recent: Mutex<Recent>,
    health: AtomicU8,
    /// Set by the provider's actor; hears every outcome.
    observer: Mutex<Option<Observer>>,
    limit: Option<Limit>,
}

/// `max_concurrency` enforced: a slot per call, a bounded queue for them.
struct Limit {
    slots: tokio::sync::Semaphore,
    max_concurrency: u32,
    queued: AtomicU32,
    max_queue: u32,
}

/// A call's concurrency slot, held until the attempt ends.
pub type Slot<'a> = Option<tokio::sync::SemaphorePermit<'a>>;

impl std::fmt::Debug for ProviderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHandle")
            .field("id", &self.spec.id)
            .field("domain", &self.domain)
            .field("health", &self.health())
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Recent {
    starts: VecDeque<Instant>,
    latencies: VecDeque<Duration>,
    /// p95 of `latencies`, recomputed every [`P95_REFRESH`] samples: every
    /// routing step reads it, and a sort per read showed in profiles.
    p95: Option<Duration>,
    samples_since_p95: u32,
}

/// Successful calls between two recomputations of the cached p95.
const P95_REFRESH: u32 = 8;

impl Recent {
    fn p95(&mut self) -> Option<Duration> {
        if self.samples_since_p95 > 0
            && (self.p95.is_none() || self.samples_since_p95 >= P95_REFRESH)
        {
            self.p95 = percentile(&self.latencies, 95.0);
            self.samples_since_p95 = 0;
        }
        self.p95
    }
}

/// Keeps the in-flight count right however an attempt ends, including
/// cancellation (a hedged loser is dropped): then the breaker's trial slot,
/// if the attempt held one, is given back.
#[derive(Debug)]
pub struct InFlight<'a> {
    handle: &'a ProviderHandle,
    /// Whether the breaker admitted this attempt as a half-open trial.
    trial: bool,
    finished: bool,
}

impl InFlight<'_> {
    /// Records the attempt's outcome (see [`ProviderHandle::record`]).
    pub fn finish(mut self, now: Instant, latency: Duration, outcome: Result<(), &ProviderError>) {
        self.finished = true;
        self.handle.record(now, latency, outcome, self.trial);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.handle.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished && self.trial {
            self.handle.abandon(Instant::now());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is counters and a breaker whose every transition is
    // a single assignment; a panic elsewhere cannot leave it torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProviderHandle {
    pub fn new(
        spec: Provider,
        backend: Arc<dyn Backend>,
        domain: DomainId,
        breaker: BreakerPolicy,
        budget: RetryBudgetPolicy,
        now: Instant,
    ) -> Result<Self, PoolError> {
        let error = |message: String| PoolError::Provider {
            provider: spec.id.clone(),
            message,
        };
        let breaker = Breaker::new(breaker, now).map_err(|e| error(e.to_string()))?;
        let budget = RetryBudget::new(budget).map_err(|e| error(e.to_string()))?;
        let capabilities = spec.capabilities.iter().copied().collect();
        Ok(Self {
            backend,
            domain,
            capabilities,
            budget,
            breaker: Mutex::new(breaker),
            in_flight: AtomicU32::new(0),
            recent: Mutex::new(Recent::default()),
            health: AtomicU8::new(HealthState::Healthy.as_u8()),
            observer: Mutex::new(None),
            limit: spec.max_concurrency.filter(|m| *m > 0).map(|max| Limit {
                slots: tokio::sync::Semaphore::new(max as usize),
                max_concurrency: max,
                queued: AtomicU32::new(0),
                max_queue: spec.max_queue.unwrap_or(max),
            }),
            spec,
        })
    }

    pub fn id(&self) -> &ProviderId {
        &self.spec.id
    }

    /// Waits for a concurrency slot, until `until`. With every slot taken
    /// and the queue full, refuses at once: the request spills over rather
    /// than piling up behind a saturated provider.
    pub async fn slot(&self, until: Instant) -> Result<Slot<'_>, ProviderError> {
        let Some(limit) = &self.limit else {
            return Ok(None);
        };
        if let Ok(permit) = limit.slots.try_acquire() {
            return Ok(Some(permit));
        }
        let queued = limit.queued.fetch_add(1, Ordering::AcqRel);
        struct Leave<'a>(&'a AtomicU32);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _leave = Leave(&limit.queued);
        if queued >= limit.max_queue {
            return Err(ProviderError::Saturated(format!(
                "{} calls in flight (max_concurrency) and {} waiting: the queue is full",
                limit.max_concurrency, limit.max_queue
            )));
        }
        match tokio::time::timeout_at(until, limit.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) => Err(ProviderError::Unavailable(
                "the provider is shutting down".into(),
            )),
            Err(_) => Err(ProviderError::Saturated(format!(
                "no concurrency slot freed before the attempt's deadline ({} in flight)",
                limit.max_concurrency
            ))),
        }
    }

    /// The health its Health actor last published (Healthy until one runs).
    pub fn health(&self) -> HealthState {
        HealthState::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Publishes a new health state; returns the previous one.
    pub fn set_health(&self, state: HealthState) -> HealthState {
        HealthState::from_u8(self.health.swap(state.as_u8(), Ordering::AcqRel))
    }

    /// Sets the one listener for outcomes (a restarted Provider actor
    /// replaces its predecessor's).
    pub fn observe(&self, observer: impl Fn(Observed) + Send + Sync + 'static) {
        *lock(&self.observer) = Some(Box::new(observer));
    }

    /// Records a failed active probe: it counts like a failed call, so a
    /// provider that is down is found without traffic.
    pub fn record_probe_failure(&self, now: Instant, trial: bool) {
        let mut breaker = lock(&self.breaker);
        if trial || breaker.state(now) == BreakerState::Closed {
            breaker.record_failure(now);
        }
    }

    /// Records a successful probe that proved the model answers (a chat
    /// probe): it may close a half-open breaker.
    pub fn record_probe_success(&self, now: Instant, trial: bool) {
        let mut breaker = lock(&self.breaker);
        if trial || breaker.state(now) == BreakerState::Closed {
            breaker.record_success(now);
        }
    }

    /// The provider as routing sees it now.
    pub fn snapshot(&self, index: u16, now: Instant) -> ProviderSnapshot {
        let gate = BreakerGate::from(peek_admission(&lock(&self.breaker), now));
        let (requests_last_minute, p95) = {
            let mut recent = lock(&self.recent);
            prune(&mut recent.starts, now);
            (recent.starts.len() as u32, recent.p95())
        };
        ProviderSnapshot {
            provider: index,
            domain: self.domain,
            capabilities: self.capabilities,
            key_available: self.spec.key_available,
            breaker: gate,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            max_concurrency: self.spec.max_concurrency.unwrap_or(0),
            requests_last_minute,
            rpm_limit: self.spec.rpm.unwrap_or(0),
            p95,
        }
    }

    /// Asks the breaker for a call (taking a trial slot when half-open).
    pub fn admit(&self, now: Instant) -> Admission {
        lock(&self.breaker).admit(now)
    }

    /// Counts an attempt the breaker admitted as started; the guard ends it.
    pub fn begin(&self, now: Instant, admission: Admission) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut recent = lock(&self.recent);
        prune(&mut recent.starts, now);
        recent.starts.push_back(now);
        InFlight {
            handle: self,
            trial: admission == Admission::Trial,
            finished: false,
        }
    }

    /// Records an attempt's outcome for the breaker and the latency window.
    /// Only a trial's outcome decides a half-open breaker: an attempt
    /// admitted earlier, while it was closed, says nothing about now.
    pub fn record(
        &self,
        now: Instant,
        latency: Duration,
        outcome: Result<(), &ProviderError>,
        trial: bool,
    ) {
        self.record_in_breaker(now, latency, outcome, trial);
        // After the breaker: the Health actor reads it when it hears this.
        if let Some(observer) = lock(&self.observer).as_ref() {
            observer(Observed {
                latency,
                failure: outcome
                    .err()
                    .filter(|e| counts_against_health(e))
                    .map(ProviderError::label),
                status: outcome.err().and_then(ProviderError::status),
            });
        }
    }

    fn record_in_breaker(
        &self,
        now: Instant,
        latency: Duration,
        outcome: Result<(), &ProviderError>,
        trial: bool,
    ) {
        let breaker_listens = {
            let breaker = lock(&self.breaker);
            trial || breaker.state(now) == BreakerState::Closed
        };
        if !breaker_listens {
            return;
        }
        match outcome {
            Ok(()) => {
                lock(&self.breaker).record_success(now);
                let mut recent = lock(&self.recent);
                if recent.latencies.len() == LATENCY_SAMPLES {
                    recent.latencies.pop_front();
                }
                recent.latencies.push_back(latency);
                recent.samples_since_p95 += 1;
            }
            Err(error) if counts_against_health(error) => lock(&self.breaker).record_failure(now),
            // The request's own fault (or a refusal of its content) says
            // nothing about the provider's health; free a trial slot if
            // this attempt held one.
            Err(_) => lock(&self.breaker).release_trial(now),
        }
    }

    /// An attempt that was abandoned (a hedged loser) gives back its trial.
    pub fn abandon(&self, now: Instant) {
        lock(&self.breaker).release_trial(now);
    }

    /// See [`crate::routing::breaker::Breaker::restore_open`]; the health
    /// shows Down until a trial or probe proves otherwise.
    pub fn restore_open(&self, ejections: u32, remaining: Duration, now: Instant) {
        lock(&self.breaker).restore_open(ejections, remaining, now);
        self.set_health(HealthState::Down);
    }

    pub fn breaker(&self, now: Instant) -> BreakerSnapshot {
        lock(&self.breaker).snapshot(now)
    }

    /// A percentile (0–100) of recent successful latencies.
    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        let mut recent = lock(&self.recent);
        if p == 95.0 {
            return recent.p95();
        }
        percentile(&recent.latencies, p)
    }
}

/// What the breaker would answer, without taking a trial slot.
fn peek_admission(breaker: &Breaker, now: Instant) -> Admission {
    // `admit` takes a trial slot when half-open; routing must only look, so
    // it asks a copy.
    let mut copy = breaker.clone();
    copy.admit(now)
}

fn prune(starts: &mut VecDeque<Instant>, now: Instant) {
    while starts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
    {
        starts.pop_front();
    }
}

fn percentile(samples: &VecDeque<Duration>, p: f64) -> Option<Duration> {
    // Too few samples make a percentile noise; wait for some traffic.
    if samples.len() < 5 {
        return None;
    }
    let mut values: Vec<Duration> = samples.iter().copied().collect();
    let rank = (((p / 100.0) * (values.len() - 1) as f64).round() as usize).min(values.len() - 1);
    Some(*values.select_nth_unstable(rank).1)
}

/// Failures that say the provider is unwell, as opposed to the request
/// being refused for what it is.
pub fn counts_against_health(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Connect(_)
            | ProviderError::Reset(_)
            | ProviderError::FirstTokenTimeout(_)
            | ProviderError::Timeout(_)
            | ProviderError::RateLimited { .. }
            | ProviderError::Malformed(_)
            | ProviderError::StreamCut { .. }
    ) || matches!(error, ProviderError::Status { status, .. } if *status >= 500 || *status == 408)
}

/// Every remote provider of the config, with its live state.
#[derive(Debug)]
pub struct Pool {
    providers: Vec<Arc<ProviderHandle>>,
    by_id: HashMap<ProviderId, usize>,
    domains: Vec<String>,
    /// Providers left out, and why (for `baton validate` and the log).
    pub skipped: Vec<(ProviderId, String)>,
}

impl Pool {
    /// Builds a client per remote provider of `config`.
    pub fn from_config(config: &Config) -> Result<Pool, PoolError> {
        let mut pool = Pool::empty();
        let now = Instant::now();
        for provider in config.providers.values() {
            let key = provider.api_key_env.as_deref().and_then(Secret::from_env);
            let base_url = provider.base_url.clone().unwrap_or_default();
            let model = provider.model.clone().unwrap_or_default();
            let error = |e: ProviderError| PoolError::Provider {
                provider: provider.id.clone(),
                message: e.to_string(),
            };
            let backend: Arc<dyn Backend> = match provider.kind {
                ProviderKind::Openai => Arc::new(
                    OpenAi::new(
                        provider.id.clone(),
                        &base_url,
                        model,
                        key,
                        provider.connect_timeout,
                    )
                    .map_err(error)?,
                ),
                ProviderKind::Anthropic => Arc::new(
                    Anthropic::new(
                        provider.id.clone(),
                        &base_url,
                        model,
                        key,
                        provider.connect_timeout,
                    )
                    .map_err(error)?,
                ),
                ProviderKind::Extractive => continue,
                ProviderKind::Local => {
                    let skip = if !provider.key_available {
                        Some("its model file is missing")
                    } else if tokio::runtime::Handle::try_current().is_err() {
                        // Commands that only read the config start no server.
                        Some("no server is started outside a running process")
                    } else {
                        None
                    };
                    if let Some(why) = skip {
                        pool.skipped.push((provider.id.clone(), why.into()));
                        continue;
                    }
                    let spec =
                        provider
                            .local
                            .clone()
                            .unwrap_or_else(|| crate::config::LocalServerSpec {
                                command: crate::config::LocalServerSpec::default_command(),
                                model_path: None,
                                ready_timeout: Duration::from_secs(60),
                                max_restarts: 5,
                            });
                    Arc::new(
                        Local::start(provider.id.clone(), &spec, model, provider.connect_timeout)
                            .map_err(error)?,
                    )
                }
            };
            pool.add(provider.clone(), backend, config, now)?;
        }
        Ok(pool)
    }

    /// An empty pool, for callers that add backends themselves.
    pub fn empty() -> Pool {
        Pool {
            providers: Vec::new(),
            by_id: HashMap::new(),
            domains: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Adds a provider with the given backend (tests plug in any backend).
    pub fn add(
        &mut self,
        spec: Provider,
        backend: Arc<dyn Backend>,
        config: &Config,
        now: Instant,
    ) -> Result<(), PoolError> {
        let domain = self.domain_id(&spec.domain)?;
        let breaker = BreakerPolicy {
            consecutive_failures: config.breaker.consecutive_failures,
            failure_rate: config.breaker.failure_rate,
            min_requests: config.breaker.min_requests,
            window: config.breaker.window.0,
            base_ejection: config.breaker.base_ejection.0,
            max_ejection: config.breaker.max_ejection.0,
            half_open_trials: config.breaker.half_open_trials,
        };
        let budget = RetryBudgetPolicy {
            ratio: config.budget.ratio,
            min_per_second: config.budget.min_per_second,
            ttl: config.budget.ttl.0,
        };
        let id = spec.id.clone();
        let handle = ProviderHandle::new(spec, backend, domain, breaker, budget, now)?;
        self.by_id.insert(id, self.providers.len());
        self.providers.push(Arc::new(handle));
        Ok(())
    }

    /// The id of a failure domain, allocating one for a new name.
    pub fn domain_id(&mut self, name: &str) -> Result<DomainId, PoolError> {
        if let Some(i) = self.domains.iter().position(|d| d == name) {
            return Ok(DomainId(i as u8));
        }
        if self.domains.len() >= 64 {
            return Err(PoolError::TooManyDomains);
        }
        self.domains.push(name.to_owned());
        Ok(DomainId((self.domains.len() - 1) as u8))
    }

    /// The id of a known domain.
    pub fn find_domain(&self, name: &str) -> Option<DomainId> {
        self.domains
            .iter()
            .position(|d| d == name)
            .map(|i| DomainId(i as u8))
    }

    pub fn index_of(&self, id: &ProviderId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, index: usize) -> &Arc<ProviderHandle> {
        &self.providers[index]
    }

    pub fn handles(&self) -> &[Arc<ProviderHandle>] {
        &self.providers
    }
}
