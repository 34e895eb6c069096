//! The router: walks a route's fallback chain for one request.
//!
//! Each step asks [`decide`] where to go next, over snapshots of the
//! chain's providers, and carries the decision out: an attempt under its own
//! deadline (first token, attempt end, and never past the request's total
//! deadline), a retry after back-off or after the provider's `Retry-After`,
//! a hedged second attempt when the first is slower than the route's hedge
//! point, or a final fallback (the stale-if-error cache, then the
//! extractive answer from the swarm's knowledge). Retries happen here and
//! nowhere else; every extra attempt on a provider is paid from that
//! provider's retry budget, hedges included, so a total outage cannot
//! multiply load.
//!
//! An exhausted chain returns one error that keeps every attempt and the
//! trace id. A failure the route does not fail over on (by default a plain
//! 4xx: the request itself is wrong) is returned at once.

mod stream;

pub use stream::send_whole;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::breaker::Admission;
use super::cache::{Fingerprint, ResponseCache};
use super::decision::{
    AttemptState, Capabilities, Decision, DomainSet, ErrorKind, FinalFallback, MAX_CHAIN, Reason,
    RoutePolicy, decide,
};
use super::pool::{Pool, ProviderHandle};
use crate::config::{Config, Hedge, ProviderId, Route, Trigger};
use crate::provider::{
    AttemptDeadline, Backend, ChatRequest, ChatResponse, FinishReason, ProviderError, Usage,
};
use crate::swarm::{Capability, RouteName};
use crate::trace::TraceId;

/// Less time than this left is not worth an upstream attempt.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(20);

/// Why a router could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("route `{route}`: {message}")]
    Route { route: RouteName, message: String },
}

/// One request to route.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub trace_id: TraceId,
    pub route: RouteName,
    /// The tenant or virtual key: cached answers never cross scopes.
    pub scope: String,
    pub request: ChatRequest,
    /// Capabilities the agent requires of any model that answers.
    pub required: Vec<Capability>,
    /// The swarm's extractive surrogate, when it has a knowledge base.
    pub extractive: Option<Arc<dyn Backend>>,
    /// The agent's data contract: every provider's answer must be JSON
    /// meeting it, or the attempt fails as `contract` and the next provider
    /// is asked with the same context.
    pub contract: Option<Arc<jsonschema::Validator>>,
    /// The provider the worker is bound to (supervised failover moved it
    /// off the route's primary): tried first, then the rest of the chain in
    /// its order. `None` or a provider outside the chain: the chain as is.
    pub bound_to: Option<ProviderId>,
}

impl RouteRequest {
    pub fn new(route: impl Into<String>, request: ChatRequest) -> Self {
        Self {
            trace_id: TraceId::new(),
            route: RouteName(route.into()),
            scope: String::new(),
            request,
            required: Vec::new(),
            extractive: None,
            contract: None,
            bound_to: None,
        }
    }
}

/// Who answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ServedBy {
    Provider {
        id: ProviderId,
    },
    /// A cached answer to the same request, `age` old.
    Cache {
        age: Duration,
    },
    /// The extractive surrogate over the knowledge base.
    Extractive,
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptReason {
    Primary,
    SpillOver,
    Failover,
    Retry,
    Hedge,
    /// A final fallback that is a provider of its own (a supervised local
    /// model server), asked after the route's chain.
    FinalFallback,
}

/// One attempt, for the trace and the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub provider: ProviderId,
    pub reason: AttemptReason,
    /// When it started, from the request's start.
    pub started: Duration,
    pub latency: Duration,
    /// The failure's label (`5xx`, `connect`, ...) and message; `None` on success.
    pub error: Option<(String, String)>,
    pub status: Option<u16>,
    pub usage: Option<Usage>,
    /// Whether a hedge made this attempt lose the race (it was cancelled).
    pub cancelled: bool,
}

/// A routed answer.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub trace_id: TraceId,
    pub response: ChatResponse,
    pub served_by: ServedBy,
    /// Not served by the route's first choice.
    pub fallback: bool,
    /// Served by a final fallback (cache or extractive).
    pub degraded: bool,
    /// The surrogate said plainly it cannot answer.
    pub refusal: bool,
    pub attempts: Vec<AttemptRecord>,
}

impl Outcome {
    /// An answer from a final fallback: degraded, and a fallback by nature.
    fn from_final_fallback(
        trace_id: TraceId,
        response: ChatResponse,
        served_by: ServedBy,
        attempts: Vec<AttemptRecord>,
    ) -> Outcome {
        Outcome {
            trace_id,
            refusal: response.finish_reason == FinishReason::NoAnswer,
            response,
            served_by,
            fallback: true,
            degraded: true,
            attempts,
        }
    }
}

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no route `{0}`")]
    UnknownRoute(RouteName),
    #[error("route `{route}` has no answer for request {trace_id}: every provider and final fallback failed{}", summary(.attempts))]
    Exhausted {
        trace_id: TraceId,
        route: RouteName,
        attempts: Vec<AttemptRecord>,
    },
    #[error("request {trace_id} refused by {provider}: {error}")]
    Refused {
        trace_id: TraceId,
        provider: ProviderId,
        error: ProviderError,
        attempts: Vec<AttemptRecord>,
    },
}

fn summary(attempts: &[AttemptRecord]) -> String {
    let parts: Vec<String> = attempts
        .iter()
        .filter_map(|a| {
            a.error
                .as_ref()
                .map(|(label, _)| format!("{} {label}", a.provider))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

impl RouteError {
    /// Nothing was left to try for `request`.
    fn exhausted(request: &RouteRequest, attempts: Vec<AttemptRecord>) -> RouteError {
        RouteError::Exhausted {
            trace_id: request.trace_id,
            route: request.route.clone(),
            attempts,
        }
    }

    /// The attempts made before the request gave up.
    pub fn attempts(&self) -> &[AttemptRecord] {
        match self {
            RouteError::UnknownRoute(_) => &[],
            RouteError::Exhausted { attempts, .. } | RouteError::Refused { attempts, .. } => {
                attempts
            }
        }
    }

    pub fn trace_id(&self) -> Option<TraceId> {
        match self {
            RouteError::UnknownRoute(_) => None,
            RouteError::Exhausted { trace_id, .. } | RouteError::Refused { trace_id, .. } => {
                Some(*trace_id)
            }
        }
    }
}

#[derive(Debug)]
struct CompiledRoute {
    spec: Route,
    /// Pool indices of the remote providers, in chain order.
    chain: Vec<usize>,
    policy: RoutePolicy,
    backoff: Backoff,
}

/// A request's walk along its route's chain, as it starts.
struct Walk<'r> {
    route: &'r CompiledRoute,
    /// Pool indices in the order this request tries them: the route's
    /// chain, with the worker's bound provider moved to the front.
    chain: Vec<usize>,
    started: Instant,
    /// The request's total deadline: attempts and back-offs together.
    total_end: Instant,
    fingerprint: Fingerprint,
    /// The route's policy with the agent's required capabilities.
    policy: RoutePolicy,
    state: AttemptState,
    attempts: Vec<AttemptRecord>,
    snapshots: Vec<super::decision::ProviderSnapshot>,
    first_choice: Option<usize>,
}

/// The next step of a request's walk along its chain.
enum Step {
    /// Ask again (the budget refused a retry; the decision changes).
    Again,
    Attempt {
        position: u8,
        reason: AttemptReason,
    },
    Fallback(FinalFallback),
    Exhausted,
}

/// Routes requests over the provider pool.
#[derive(Debug)]
pub struct Router {
    pool: Arc<Pool>,
    routes: HashMap<RouteName, CompiledRoute>,
    /// Token prices per provider, for the journal and the report.
    costs: HashMap<ProviderId, crate::config::Cost>,
    cache: ResponseCache,
    rng: Mutex<StdRng>,
}

/// The failure-over triggers a provider error falls under; `None` for a
/// plain 4xx, which fails over only when its status is listed.
pub fn trigger_of(error: &ProviderError) -> Option<Trigger> {
    Some(match error {
        ProviderError::Connect(_) => Trigger::Connect,
        ProviderError::Reset(_) => Trigger::Reset,
        ProviderError::FirstTokenTimeout(_) => Trigger::FirstTokenTimeout,
        ProviderError::Timeout(_) => Trigger::Timeout,
        ProviderError::RateLimited { .. } => Trigger::RateLimited,
        ProviderError::Status { status: 408, .. } => Trigger::Timeout,
        ProviderError::Status { status, .. } if *status >= 500 => Trigger::ServerError,
        ProviderError::Malformed(_) => Trigger::Malformed,
        ProviderError::StreamCut { .. } => Trigger::CutStream,
        ProviderError::ContentFilter => Trigger::ContentFilter,
        ProviderError::ContextLength(_) => Trigger::ContextLength,
        ProviderError::Contract(_) => Trigger::Contract,
        _ => return None,
    })
}

fn fails_over(route: &Route, error: &ProviderError) -> bool {
    match error {
        // Not the request's fault: another provider may well serve it.
        ProviderError::PrefillRejected(_)
        | ProviderError::MissingKey(_)
        | ProviderError::Unavailable(_)
        | ProviderError::Saturated(_)
        | ProviderError::BreakerOpen => true,
        // A redirect, a refused key or an unknown model is the provider's
        // configuration fault, not the request's: the next one may serve.
        ProviderError::Status { status, .. }
            if *status < 400 || matches!(*status, 401 | 403 | 404) =>
        {
            true
        }
        _ => match trigger_of(error) {
            Some(trigger) => route.fallback_on.contains(&trigger),
            None => error
                .status()
                .is_some_and(|s| route.fallback_statuses.contains(&s)),
        },
    }
}

impl Router {
    /// Compiles the config's routes over `pool`.
    pub fn new(config: &Config, pool: Pool) -> Result<Router, RouterError> {
        let mut routes = HashMap::new();
        for route in config.routes.values() {
            let err = |message: String| RouterError::Route {
                route: route.name.clone(),
                message,
            };
            let chain: Vec<usize> = route
                .chain
                .iter()
                .filter_map(|id| pool.index_of(id))
                .collect();
            if chain.len() > MAX_CHAIN {
                return Err(err(format!(
                    "at most {MAX_CHAIN} remote providers in a chain"
                )));
            }
            let allowed_domains = route.allowed_domains.as_ref().map(|names| {
                names
                    .iter()
                    .filter_map(|n| pool.find_domain(n))
                    .collect::<DomainSet>()
            });
            let mut final_fallbacks = [None; 3];
            for (slot, fallback) in final_fallbacks.iter_mut().zip(&route.final_fallbacks) {
                *slot = Some(*fallback);
            }
            let policy = RoutePolicy {
                allowed_domains,
                required: Capabilities::NONE,
                sla_p95: route.sla_p95,
                max_retry_after: route.max_retry_after,
                retries_per_provider: route.retries.min(u32::from(u8::MAX)) as u8,
                spill_over: route.spill_over,
                final_fallbacks,
            };
            let backoff = Backoff::new(route.backoff_base, route.backoff_max)
                .map_err(|e| err(e.to_string()))?;
            routes.insert(
                route.name.clone(),
                CompiledRoute {
                    spec: route.clone(),
                    chain,
                    policy,
                    backoff,
                },
            );
        }
        let costs = config
            .providers
            .iter()
            .map(|(id, provider)| (id.clone(), provider.cost))
            .collect();
        Ok(Router {
            pool: Arc::new(pool),
            routes,
            costs,
            cache: ResponseCache::new(config.cache.ttl.0, config.cache.max_entries),
            rng: Mutex::new(StdRng::from_os_rng()),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// What `usage` cost on `provider` (zero when it has no price).
    pub fn cost_of(&self, provider: &ProviderId, usage: Option<&Usage>) -> f64 {
        match (self.costs.get(provider), usage) {
            (Some(cost), Some(usage)) => {
                cost.per_1k_input * f64::from(usage.input_tokens) / 1000.0
                    + cost.per_1k_output * f64::from(usage.output_tokens) / 1000.0
            }
            _ => 0.0,
        }
    }

    /// The route's deadline for a whole request, if it exists.
    /// The names of the routes, sorted.
    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.keys().map(|r| r.0.clone()).collect();
        names.sort();
        names
    }

    /// `request` with its output tokens capped to its route's `max_tokens`.
    pub(crate) fn capped(&self, mut request: RouteRequest) -> RouteRequest {
        if let Some(cap) = self
            .routes
            .get(&request.route)
            .and_then(|route| route.spec.max_tokens)
        {
            let asked = request.request.max_tokens.unwrap_or(cap);
            request.request.max_tokens = Some(asked.min(cap));
        }
        request
    }

    pub fn route_spec(&self, route: &RouteName) -> Option<&Route> {
        self.routes.get(route).map(|r| &r.spec)
    }

    /// The route's remote providers in chain order.
    pub fn chain(&self, route: &RouteName) -> Option<Vec<&Arc<ProviderHandle>>> {
        self.routes
            .get(route)
            .map(|r| r.chain.iter().map(|&i| self.pool.get(i)).collect())
    }

    fn jitter(&self, backoff: &Backoff, retry: u32) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        backoff.delay(retry, &mut *rng)
    }

    /// Starts a request's walk: its route, deadline, cache key and policy.
    fn walk(&self, request: &RouteRequest) -> Result<Walk<'_>, RouteError> {
        let route = self
            .routes
            .get(&request.route)
            .ok_or_else(|| RouteError::UnknownRoute(request.route.clone()))?;
        let started = Instant::now();
        let mut policy = route.policy;
        policy.required = request.required.iter().copied().collect();
        let mut chain = route.chain.clone();
        // A route primary whose breaker offers a half-open trial keeps its
        // place: a real request is the trial that proves it recovered (a
        // token-free probe cannot), and the request fails over at once if
        // it has not.
        let primary_on_trial = route.chain.first().is_some_and(|&i| {
            self.pool.get(i).breaker(started).state == super::breaker::BreakerState::HalfOpen
        });
        if let Some(bound) = request
            .bound_to
            .as_ref()
            .and_then(|id| self.pool.index_of(id))
            && let Some(at) = chain.iter().position(|&i| i == bound)
            && !primary_on_trial
        {
            chain[..=at].rotate_right(1);
        }
        Ok(Walk {
            route,
            chain,
            started,
            total_end: started + route.spec.deadlines.total,
            fingerprint: Fingerprint::of(&request.scope, &request.route, &request.request),
            policy,
            state: AttemptState::new(route.spec.deadlines.total),
            attempts: Vec::new(),
            snapshots: Vec::with_capacity(route.chain.len()),
            first_choice: route.chain.first().copied(),
        })
    }

    /// Decides the request's next step and pays for it: the budget for a
    /// retry (then its back-off or the provider's Retry-After), a deposit
    /// for a first attempt on a provider. Shared by the whole and the
    /// streaming walk.
    #[allow(clippy::too_many_arguments)]
    async fn next_step(
        &self,
        route: &CompiledRoute,
        chain: &[usize],
        request: &RouteRequest,
        policy: &RoutePolicy,
        state: &mut AttemptState,
        snapshots: &mut Vec<super::decision::ProviderSnapshot>,
        total_end: Instant,
    ) -> Step {
        let now = Instant::now();
        state.remaining = total_end.saturating_duration_since(now);
        snapshots.clear();
        snapshots.extend(
            chain
                .iter()
                .map(|&i| self.pool.get(i).snapshot(i as u16, now)),
        );
        // An attempt needs a little time to be worth starting; with less,
        // go to the (local, quick) final fallbacks.
        if state.remaining < MIN_ATTEMPT_TIME {
            state.remaining = Duration::ZERO;
        }
        let routed = decide(snapshots, policy, state);
        for (position, reason) in routed.skipped.iter() {
            tracing::debug!(trace = %request.trace_id, provider = %self.pool.get(chain[usize::from(position)]).id(), ?reason, "passed over");
        }
        match routed.decision {
            Decision::Attempt { position, reason } => {
                let handle = self.pool.get(chain[usize::from(position)]);
                let reason = match reason {
                    Reason::Primary => AttemptReason::Primary,
                    Reason::SpillOver { .. } => AttemptReason::SpillOver,
                    Reason::Failover { .. } => AttemptReason::Failover,
                    Reason::Retry => AttemptReason::Retry,
                };
                if reason == AttemptReason::Retry {
                    if !handle.budget.try_withdraw(now) {
                        state.budget_available = false;
                        return Step::Again;
                    }
                    let retry = u32::from(
                        state.positions[usize::from(position)]
                            .attempts
                            .saturating_sub(1),
                    );
                    let wait = self.jitter(&route.backoff, retry).min(state.remaining);
                    tokio::time::sleep(wait).await;
                } else {
                    // A request's first attempt on a provider pays in.
                    handle.budget.deposit(now);
                }
                state.budget_available = true;
                Step::Attempt { position, reason }
            }
            Decision::RetryAfter { position, wait } => {
                let handle = self.pool.get(chain[usize::from(position)]);
                if !handle.budget.try_withdraw(now) {
                    state.budget_available = false;
                    return Step::Again;
                }
                tokio::time::sleep(wait).await;
                state.budget_available = true;
                Step::Attempt {
                    position,
                    reason: AttemptReason::Retry,
                }
            }
            Decision::FinalFallback(fallback) => {
                state.record_fallback(fallback);
                Step::Fallback(fallback)
            }
            Decision::Exhausted => Step::Exhausted,
        }
    }

    /// The answer of a final fallback, when it has one for this request.
    /// A local model server's calls are attempts like any provider's, so
    /// they go to `attempts`.
    async fn final_answer(
        &self,
        fallback: FinalFallback,
        fingerprint: &Fingerprint,
        request: &RouteRequest,
        started: Instant,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Option<(ChatResponse, ServedBy)> {
        match fallback {
            FinalFallback::Cache => self
                .cache
                .get(fingerprint, Instant::now())
                .map(|cached| (cached.response, ServedBy::Cache { age: cached.age })),
            FinalFallback::Local => self.local_answer(request, started, attempts).await,
            FinalFallback::Extractive => {
                let extractive = request.extractive.as_ref()?;
                // Local and quick: a few seconds even when the remote
                // deadline is spent.
                let deadline = AttemptDeadline::new(Duration::from_secs(5), Duration::from_secs(5));
                extractive
                    .complete(&request.request, deadline)
                    .await
                    .ok()
                    .map(|response| (response, ServedBy::Extractive))
            }
        }
    }

    /// The answer of the first supervised local model server that gives
    /// one. A local server in the route's own chain already had its
    /// attempt there and is not asked twice. Each call is a full attempt:
    /// its concurrency slot, its breaker and health, its record.
    async fn local_answer(
        &self,
        request: &RouteRequest,
        started: Instant,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Option<(ChatResponse, ServedBy)> {
        let route = self.routes.get(&request.route)?;
        let in_chain = |index: usize| route.chain.contains(&index);
        for (index, handle) in self.pool.handles().iter().enumerate() {
            if handle.spec.kind != crate::config::ProviderKind::Local || in_chain(index) {
                continue;
            }
            // Its own full attempt time, even when the remote providers
            // spent the request's: this is the last answer before the
            // surrogate. So its timeouts are its own, and charged to it.
            let (record, result) = self
                .attempt(
                    handle,
                    request,
                    route,
                    AttemptReason::FinalFallback,
                    started,
                    None,
                )
                .await;
            attempts.push(record);
            match result {
                Ok(response) => {
                    let id = handle.id().clone();
                    return Some((response, ServedBy::Provider { id }));
                }
                Err(error) => {
                    tracing::warn!(trace = %request.trace_id, provider = %handle.id(), %error, "the local model server did not answer");
                }
            }
        }
        None
    }

    /// Routes one request to a complete answer.
    pub async fn complete(&self, request: RouteRequest) -> Result<Outcome, RouteError> {
        let request = self.capped(request);
        let Walk {
            route,
            chain,
            started,
            total_end,
            fingerprint,
            policy,
            mut state,
            mut attempts,
            mut snapshots,
            first_choice,
        } = self.walk(&request)?;

        loop {
            let (position, attempt_reason) = match self
                .next_step(
                    route,
                    &chain,
                    &request,
                    &policy,
                    &mut state,
                    &mut snapshots,
                    total_end,
                )
                .await
            {
                Step::Again => continue,
                Step::Attempt { position, reason } => (position, reason),
                Step::Fallback(fallback) => {
                    if let Some((response, served_by)) = self
                        .final_answer(fallback, &fingerprint, &request, started, &mut attempts)
                        .await
                    {
                        return Ok(Outcome::from_final_fallback(
                            request.trace_id,
                            response,
                            served_by,
                            attempts,
                        ));
                    }
                    continue;
                }
                Step::Exhausted => return Err(RouteError::exhausted(&request, attempts)),
            };
            let result = self
                .attempt_hedged(
                    route,
                    &chain,
                    &request,
                    &snapshots,
                    &policy,
                    &state,
                    position,
                    attempt_reason,
                    started,
                    total_end,
                    &mut attempts,
                )
                .await;
            match result {
                Ok((response, served_position)) => {
                    self.cache
                        .put(fingerprint, response.clone(), Instant::now());
                    let served_index = chain[usize::from(served_position)];
                    return Ok(Outcome {
                        trace_id: request.trace_id,
                        refusal: response.finish_reason == FinishReason::NoAnswer,
                        response,
                        served_by: ServedBy::Provider {
                            id: self.pool.get(served_index).id().clone(),
                        },
                        fallback: Some(served_index) != first_choice,
                        degraded: false,
                        attempts,
                    });
                }
                Err(failures) => {
                    for (error, failed_position) in failures {
                        if !fails_over(&route.spec, &error) {
                            return Err(RouteError::Refused {
                                trace_id: request.trace_id,
                                provider: self
                                    .pool
                                    .get(chain[usize::from(failed_position)])
                                    .id()
                                    .clone(),
                                error,
                                attempts,
                            });
                        }
                        state.record_failure(failed_position, ErrorKind::from(&error));
                    }
                }
            }
        }
    }

    /// One attempt at `position`, with a hedged second attempt on the next
    /// eligible provider when the first is slower than the route's hedge
    /// point. Returns the answer and the position that gave it, or the
    /// failure and the position that failed.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_hedged(
        &self,
        route: &CompiledRoute,
        chain: &[usize],
        request: &RouteRequest,
        snapshots: &[super::decision::ProviderSnapshot],
        policy: &RoutePolicy,
        state: &AttemptState,
        position: u8,
        reason: AttemptReason,
        started: Instant,
        total_end: Instant,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<(ChatResponse, u8), Vec<(ProviderError, u8)>> {
        let handle = self.pool.get(chain[usize::from(position)]);
        let hedge_after = match route.spec.hedge {
            _ if reason == AttemptReason::Retry => None,
            Some(Hedge::After(delay)) => Some(delay),
            Some(Hedge::Percentile(p)) => handle.latency_percentile(p),
            None => None,
        };
        let primary = self.attempt(handle, request, route, reason, started, Some(total_end));
        let Some(delay) = hedge_after else {
            let (record, result) = primary.await;
            attempts.push(record);
            return result
                .map(|r| (r, position))
                .map_err(|e| vec![(e, position)]);
        };
        tokio::pin!(primary);
        tokio::select! {
            (record, result) = &mut primary => {
                attempts.push(record);
                return result.map(|r| (r, position)).map_err(|e| vec![(e, position)]);
            }
            _ = tokio::time::sleep(delay) => {}
        }
        // Where would the request go if this attempt had failed?
        let mut hypothetical = *state;
        hypothetical.record_failure(position, ErrorKind::Timeout);
        let second = match decide(snapshots, policy, &hypothetical).decision {
            Decision::Attempt { position: next, .. } if next != position => Some(next),
            _ => None,
        };
        let Some(second) = second.filter(|&next| {
            self.pool
                .get(chain[usize::from(next)])
                .budget
                .try_withdraw(Instant::now())
        }) else {
            let (record, result) = primary.await;
            attempts.push(record);
            return result
                .map(|r| (r, position))
                .map_err(|e| vec![(e, position)]);
        };
        let second_handle = self.pool.get(chain[usize::from(second)]);
        tracing::info!(trace = %request.trace_id, from = %handle.id(), to = %second_handle.id(), ?delay, "hedging");
        let hedge = self.attempt(
            second_handle,
            request,
            route,
            AttemptReason::Hedge,
            started,
            Some(total_end),
        );
        tokio::pin!(hedge);
        // The first answer wins and the other attempt is dropped, which
        // closes its connection; a failure waits for the other attempt.
        tokio::select! {
            (record, result) = &mut primary => {
                attempts.push(record);
                match result {
                    Ok(response) => {
                        attempts.push(cancelled(second_handle, AttemptReason::Hedge, started));
                        Ok((response, position))
                    }
                    Err(first) => {
                        let (record, result) = hedge.await;
                        attempts.push(record);
                        result.map(|r| (r, second)).map_err(|e| vec![(first, position), (e, second)])
                    }
                }
            }
            (record, result) = &mut hedge => {
                attempts.push(record);
                match result {
                    Ok(response) => {
                        attempts.push(cancelled(handle, reason, started));
                        Ok((response, second))
                    }
                    Err(first) => {
                        let (record, result) = primary.await;
                        attempts.push(record);
                        result.map(|r| (r, position)).map_err(|e| vec![(first, second), (e, position)])
                    }
                }
            }
        }
    }

    /// One call to one provider, recorded on its handle. `total_end` is
    /// the request's deadline, when one caps the attempt (a final
    /// fallback's call has its own full attempt time: `None`).
    async fn attempt(
        &self,
        handle: &ProviderHandle,
        request: &RouteRequest,
        route: &CompiledRoute,
        reason: AttemptReason,
        started: Instant,
        total_end: Option<Instant>,
    ) -> (AttemptRecord, Result<ChatResponse, ProviderError>) {
        let begin = Instant::now();
        let own_end = begin + route.spec.deadlines.attempt;
        let deadline = AttemptDeadline {
            first_token: route.spec.deadlines.first_token,
            end: total_end.map_or(own_end, |total_end| own_end.min(total_end)),
        };
        let refused = |error: ProviderError| {
            let record = AttemptRecord {
                provider: handle.id().clone(),
                reason,
                started: begin.saturating_duration_since(started),
                latency: begin.elapsed(),
                error: Some((error.label().to_owned(), error.to_string())),
                status: None,
                usage: None,
                cancelled: false,
            };
            (record, Err(error))
        };
        // The concurrency slot first: a half-open trial taken before a wait
        // in the queue would be lost if the attempt were dropped waiting.
        let _slot = match handle.slot(deadline.end).await {
            Ok(slot) => slot,
            Err(error) => return refused(error),
        };
        let admission = handle.admit(Instant::now());
        if let Admission::Rejected { .. } = admission {
            // Another request took the half-open trial between the snapshot
            // and now: this provider is not called, and nothing is charged
            // to its health.
            return refused(ProviderError::BreakerOpen);
        }
        let capped_by_total = total_end.is_some_and(|total_end| own_end > total_end);
        let guard = handle.begin(begin, admission);
        // Always stream from the upstream, even for a complete answer: only
        // a stream shows when the first token arrives, so a provider that
        // accepts and then stalls is caught at the first-token deadline.
        let result = match handle.backend.stream(&request.request, deadline).await {
            Ok(stream) => crate::provider::collect(stream).await,
            Err(error) => Err(error),
        };
        let result = result
            .and_then(|response| check_contract(request.contract.as_deref(), response))
            .map(|mut response| {
                if response.usage.is_none() {
                    response.usage = Some(Usage::estimate(&request.request, &response));
                }
                response
            });
        let latency = begin.elapsed();
        let timed_out = matches!(
            result,
            Err(ProviderError::Timeout(_) | ProviderError::FirstTokenTimeout(_))
        );
        if capped_by_total && timed_out {
            // The request's own deadline cut this attempt short: that says
            // nothing about the provider, so its breaker is not charged.
            drop(guard);
        } else {
            guard.finish(Instant::now(), latency, result.as_ref().map(|_| ()));
        }
        tracing::debug!(trace = %request.trace_id, provider = %handle.id(), ?admission, ?latency, ok = result.is_ok(), "attempt");
        let record = AttemptRecord {
            provider: handle.id().clone(),
            reason,
            started: begin.saturating_duration_since(started),
            latency,
            error: result
                .as_ref()
                .err()
                .map(|e| (e.label().to_owned(), e.to_string())),
            status: result.as_ref().err().and_then(ProviderError::status),
            usage: result.as_ref().ok().and_then(|r| r.usage),
            cancelled: false,
        };
        (record, result)
    }
}

/// Checks an answer against the agent's output schema. A broken contract
/// is the provider's failure: it answered, but not what was agreed.
pub fn check_contract(
    contract: Option<&jsonschema::Validator>,
    response: ChatResponse,
) -> Result<ChatResponse, ProviderError> {
    let Some(validator) = contract else {
        return Ok(response);
    };
    if !response.tool_calls.is_empty() {
        // A tool call is a step, not the answer the contract is about.
        return Ok(response);
    }
    let value: serde_json::Value = serde_json::from_str(response.text.trim())
        .map_err(|e| ProviderError::Contract(format!("the answer is not JSON: {e}")))?;
    if let Some(error) = validator.iter_errors(&value).next() {
        return Err(ProviderError::Contract(format!(
            "{error} (at {})",
            error.instance_path()
        )));
    }
    Ok(response)
}

/// The record of an attempt that lost a hedge race.
fn cancelled(handle: &ProviderHandle, reason: AttemptReason, started: Instant) -> AttemptRecord {
    AttemptRecord {
        provider: handle.id().clone(),
        reason,
        started: Instant::now().saturating_duration_since(started),
        latency: Duration::ZERO,
        error: None,
        status: None,
        usage: None,
        cancelled: true,
    }
}
