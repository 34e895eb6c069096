//! The routing decision: given a route, a snapshot of its providers and
//! what the request has tried so far, where does the next attempt go?
//!
//! [`decide`] is a pure, synchronous function over small `Copy` structs: it
//! reads no clock, takes no lock, allocates nothing and performs no I/O, so
//! it runs in well under a microsecond and the same inputs always give the
//! same answer (tests and trace replays). Everything it needs arrives as
//! data: providers' health as the Health actors last published it, the
//! request's attempts so far, and whether the provider's retry budget can
//! pay for one more attempt (the caller asks the [`RetryBudget`]).
//!
//! Providers are named by their position in the route's chain (`u8`, at
//! most [`MAX_CHAIN`]), capabilities and failure domains by bits, so every
//! set is a machine word.
//!
//! The rules, in the order they are applied:
//! 1. Retry the provider just tried when its error allows it (connect,
//!    reset, 5xx, malformed; a 429 only after a `Retry-After`), it has
//!    retries left (`retries_per_provider`, once by default), the budget
//!    pays, and it is still eligible. A `Retry-After` is honoured only if
//!    it is at most `max_retry_after` and shorter than the time left;
//!    otherwise the request fails over at once.
//! 2. Otherwise take the first provider in chain order that has not been
//!    tried and is eligible: in an allowed failure domain, with every
//!    required capability (plus long context once a provider said the
//!    prompt is too long), with an API key, and admitted by its breaker.
//! 3. With spill-over on, pass over an eligible provider that is saturated
//!    (in flight ≥ its concurrency, or its requests-per-minute spent) or
//!    slower than the SLA target (p95), when a later eligible one is not;
//!    when all are, use the first of them anyway: slow beats nothing.
//! 4. With no provider left (or no time left), the route's final fallbacks
//!    in order, each once; then [`Decision::Exhausted`].
//!
//! A provider that answered with a 4xx, a content-filter refusal or a
//! broken output contract is never asked again within the request: the
//! next provider may judge the same prompt differently. Timeouts and cut
//! streams also move on rather than retry: a timeout has already spent a
//! whole attempt's deadline on a slow provider, and a cut stream is better
//! continued on the next provider (a streaming caller replays the partial
//! answer there; a complete answer is asked for again from the start).
//!
//! Every provider passed over is recorded with its reason in a fixed-size
//! [`SkipTrace`], so the request's trace can say why it went where it went.
//!
//! [`RetryBudget`]: crate::routing::budget::RetryBudget

use std::time::Duration;

use tokio::time::Instant;

use crate::provider::ProviderError;
use crate::routing::breaker::Admission;
use crate::swarm::Capability;

/// The longest chain a route may have; fixed so every per-position table
/// is an array.
pub const MAX_CHAIN: usize = 16;

/// A set of [`Capability`]s, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    /// The empty set.
    pub const NONE: Capabilities = Capabilities(0);

    /// The set of one capability.
    pub const fn of(capability: Capability) -> Capabilities {
        Capabilities(bit(capability))
    }

    /// This set plus `capability`.
    pub const fn with(self, capability: Capability) -> Capabilities {
        Capabilities(self.0 | bit(capability))
    }

    /// Whether every capability of `other` is in this set.
    pub const fn contains_all(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `capability` is in this set.
    pub const fn has(self, capability: Capability) -> bool {
        self.0 & bit(capability) != 0
    }
}

const fn bit(capability: Capability) -> u8 {
    // Capability has six fieldless variants, so the shift stays below 8.
    1 << capability as u8
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::NONE, Capabilities::with)
    }
}

/// A failure domain, by its index in the policy's list of domains (< 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainId(pub u8);

/// A set of failure domains, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct DomainSet(u64);

impl DomainSet {
    /// No domain.
    pub const EMPTY: DomainSet = DomainSet(0);

    /// This set plus `domain` (ignored from index 64 on).
    pub const fn with(self, domain: DomainId) -> DomainSet {
        if domain.0 < 64 {
            DomainSet(self.0 | 1 << domain.0)
        } else {
            self
        }
    }

    /// Domains at index 64 and above are never members.
    pub const fn contains(self, domain: DomainId) -> bool {
        domain.0 < 64 && self.0 & (1 << domain.0) != 0
    }
}

impl FromIterator<DomainId> for DomainSet {
    fn from_iter<I: IntoIterator<Item = DomainId>>(iter: I) -> Self {
        iter.into_iter().fold(DomainSet::EMPTY, DomainSet::with)
    }
}

/// What a provider's breaker would say to a call, as last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerGate {
    Allowed,
    /// Half-open with a trial slot free.
    TrialAvailable,
    /// Open (or half-open with every trial taken) until `until`.
    Open {
        until: Instant,
    },
}

impl From<Admission> for BreakerGate {
    fn from(admission: Admission) -> Self {
        match admission {
            Admission::Allowed => BreakerGate::Allowed,
            Admission::Trial => BreakerGate::TrialAvailable,
            Admission::Rejected { retry_at } => BreakerGate::Open { until: retry_at },
        }
    }
}

/// One provider of the chain, as its Health and Provider actors last saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderSnapshot {
    /// Index of the provider in the process's provider table.
    pub provider: u16,
    pub domain: DomainId,
    pub capabilities: Capabilities,
    /// Whether its API key's environment variable is set.
    pub key_available: bool,
    pub breaker: BreakerGate,
    pub in_flight: u32,
    /// 0 = no limit.
    pub max_concurrency: u32,
    pub requests_last_minute: u32,
    /// 0 = no limit.
    pub rpm_limit: u32,
    /// Observed p95 latency; `None` until there is enough data.
    pub p95: Option<Duration>,
}

/// A last resort once no provider of the chain can serve (the config's
/// type: the decision reads the route's list as written).
pub use crate::config::FinalFallback;

/// A set of [`FinalFallback`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FallbackSet(u8);

impl FallbackSet {
    /// None tried yet.
    pub const EMPTY: FallbackSet = FallbackSet(0);

    /// This set plus `fallback`.
    pub const fn with(self, fallback: FinalFallback) -> FallbackSet {
        FallbackSet(self.0 | 1 << fallback as u8)
    }

    /// Whether `fallback` is in this set.
    pub const fn contains(self, fallback: FinalFallback) -> bool {
        self.0 & (1 << fallback as u8) != 0
    }
}

/// The parts of a route's policy that the decision reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutePolicy {
    /// Failure domains the route may use; `None` = all.
    pub allowed_domains: Option<DomainSet>,
    /// What the agent needs from a model.
    pub required: Capabilities,
    /// The p95 latency the route promises; slower providers are spilled
    /// over when spill-over is on.
    pub sla_p95: Option<Duration>,
    /// The longest `Retry-After` worth waiting for on the same provider.
    pub max_retry_after: Duration,
    /// Retries of one provider within one request, beyond its first try.
    pub retries_per_provider: u8,
    /// Whether saturated or slow providers are passed over.
    pub spill_over: bool,
    /// Tried in this order once the chain is exhausted.
    pub final_fallbacks: [Option<FinalFallback>; 3],
}

impl Default for RoutePolicy {
    /// Everything allowed, nothing required, a 2 s `Retry-After` limit
    /// (longer waits are better spent on the next provider), one retry per
    /// provider, spill-over on, and DESIGN.md's fallback order.
    fn default() -> Self {
        RoutePolicy {
            allowed_domains: None,
            required: Capabilities::NONE,
            sla_p95: None,
            max_retry_after: Duration::from_secs(2),
            retries_per_provider: 1,
            spill_over: true,
            final_fallbacks: [
                Some(FinalFallback::Cache),
                Some(FinalFallback::Local),
                Some(FinalFallback::Extractive),
            ],
        }
    }
}

/// Why an attempt failed, reduced to what the decision needs from a
/// [`ProviderError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Reset,
    Timeout,
    FirstTokenTimeout,
    /// HTTP 429.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx.
    Server {
        retry_after: Option<Duration>,
    },
    /// HTTP 4xx other than 408 and 429, and other refusals of the request
    /// itself (prefill rejected, no key, cannot answer).
    Client,
    ContextLength,
    ContentFilter,
    Malformed,
    StreamCut,
    /// The answer broke the agent's output schema.
    Contract,
    /// Refused before the call: every concurrency slot and the queue were
    /// taken (the snapshot that chose it was a moment old).
    Saturated,
}

/// Whether an error may be retried on the provider that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SameProvider {
    /// At once, or after the provider's `Retry-After` if it sent one.
    Retry,
    /// Only after a `Retry-After` that fits.
    AfterRetryAfter,
    Never,
}

impl ErrorKind {
    fn same_provider(self) -> SameProvider {
        match self {
            ErrorKind::Connect
            | ErrorKind::Reset
            | ErrorKind::Server { .. }
            | ErrorKind::Malformed => SameProvider::Retry,
            ErrorKind::RateLimited { .. } => SameProvider::AfterRetryAfter,
            ErrorKind::Timeout
            | ErrorKind::FirstTokenTimeout
            | ErrorKind::Client
            | ErrorKind::ContextLength
            | ErrorKind::ContentFilter
            | ErrorKind::StreamCut
            | ErrorKind::Contract
            | ErrorKind::Saturated => SameProvider::Never,
        }
    }

    fn retry_after(self) -> Option<Duration> {
        match self {
            ErrorKind::RateLimited { retry_after } | ErrorKind::Server { retry_after } => {
                retry_after
            }
            _ => None,
        }
    }
}

impl From<&ProviderError> for ErrorKind {
    fn from(error: &ProviderError) -> Self {
        match error {
            ProviderError::Connect(_) => ErrorKind::Connect,
            ProviderError::Reset(_) => ErrorKind::Reset,
            ProviderError::FirstTokenTimeout(_) => ErrorKind::FirstTokenTimeout,
            ProviderError::Timeout(_) => ErrorKind::Timeout,
            ProviderError::RateLimited { retry_after, .. } => ErrorKind::RateLimited {
                retry_after: *retry_after,
            },
            ProviderError::Status { status: 408, .. } => ErrorKind::Timeout,
            ProviderError::Status {
                status,
                retry_after,
                ..
            } if *status >= 500 => ErrorKind::Server {
                retry_after: *retry_after,
            },
            ProviderError::Status { .. }
            | ProviderError::PrefillRejected(_)
            | ProviderError::MissingKey(_)
            | ProviderError::Unavailable(_)
            | ProviderError::BreakerOpen => ErrorKind::Client,
            ProviderError::ContextLength(_) => ErrorKind::ContextLength,
            ProviderError::ContentFilter => ErrorKind::ContentFilter,
            ProviderError::Malformed(_) => ErrorKind::Malformed,
            ProviderError::StreamCut { .. } => ErrorKind::StreamCut,
            ProviderError::Contract(_) => ErrorKind::Contract,
            ProviderError::Saturated(_) => ErrorKind::Saturated,
        }
    }
}

/// What one chain position has seen within the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PositionState {
    pub attempts: u8,
    pub last_error: Option<ErrorKind>,
}

/// The request's attempts so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptState {
    /// Indexed by chain position.
    pub positions: [PositionState; MAX_CHAIN],
    /// The position tried last, whose error the next decision answers.
    pub last: Option<u8>,
    /// The position that last failed of its own accord (a saturation
    /// refusal is Baton's, not the provider's): what a failover is from.
    pub last_failed: Option<u8>,
    /// Time left before the request's total deadline.
    pub remaining: Duration,
    /// Whether the retry budget of the provider tried last can pay for
    /// one more attempt there.
    pub budget_available: bool,
    pub fallbacks_tried: FallbackSet,
}

impl AttemptState {
    /// A request that has tried nothing yet.
    pub fn new(remaining: Duration) -> AttemptState {
        AttemptState {
            positions: [PositionState::default(); MAX_CHAIN],
            last: None,
            last_failed: None,
            remaining,
            budget_available: true,
            fallbacks_tried: FallbackSet::EMPTY,
        }
    }

    /// An attempt at `position` failed with `error`. Positions past
    /// [`MAX_CHAIN`] are ignored, as [`decide`] never picks them.
    pub fn record_failure(&mut self, position: u8, error: ErrorKind) {
        if let Some(state) = self.positions.get_mut(usize::from(position)) {
            state.attempts = state.attempts.saturating_add(1);
            state.last_error = Some(error);
            self.last = Some(position);
            if error != ErrorKind::Saturated {
                self.last_failed = Some(position);
            }
        }
    }

    /// The positions refused for saturation.
    fn saturated(&self, chain_len: usize) -> Positions {
        self.positions[..chain_len.min(MAX_CHAIN)]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.last_error == Some(ErrorKind::Saturated))
            .fold(Positions::EMPTY, |set, (position, _)| {
                set.with(position as u8)
            })
    }

    /// A final fallback was tried and could not answer.
    pub fn record_fallback(&mut self, fallback: FinalFallback) {
        self.fallbacks_tried = self.fallbacks_tried.with(fallback);
    }
}

/// A set of chain positions, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Positions(u16);

impl Positions {
    /// No position.
    pub const EMPTY: Positions = Positions(0);

    /// This set plus `position` (ignored from [`MAX_CHAIN`] on).
    pub const fn with(self, position: u8) -> Positions {
        if (position as usize) < MAX_CHAIN {
            Positions(self.0 | 1 << position)
        } else {
            self
        }
    }

    /// Whether `position` is in this set.
    pub const fn contains(self, position: u8) -> bool {
        (position as usize) < MAX_CHAIN && self.0 & (1 << position) != 0
    }

    /// Whether no position is in this set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The positions in either set.
    pub const fn union(self, other: Positions) -> Positions {
        Positions(self.0 | other.0)
    }
}

/// Why an attempt goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request's first attempt, to the first eligible provider
    /// (providers before it may have been ineligible: see the trace).
    Primary,
    /// The request's first attempt, passing over saturated or slow
    /// providers.
    SpillOver { skipped: Positions },
    /// After the attempt at position `from` failed.
    Failover { from: u8 },
    /// The same provider again.
    Retry,
}

/// Where the next attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Call the provider at `position` now.
    Attempt { position: u8, reason: Reason },
    /// Call the provider at `position` again after `wait` (its Retry-After).
    RetryAfter { position: u8, wait: Duration },
    /// No provider can serve: use this last resort.
    FinalFallback(FinalFallback),
    /// Nothing is left to try.
    Exhausted,
}

/// Why a provider was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    DomainNotAllowed,
    MissingCapability,
    /// An earlier provider found the prompt too long, and this one lacks
    /// the long-context capability.
    NotLongContext,
    NoKey,
    BreakerOpen,
    /// In flight ≥ max concurrency.
    Saturated,
    /// Requests in the last minute ≥ its rpm limit.
    RpmFull,
    /// p95 above the route's SLA target.
    Slow,
    /// No time was left for another attempt.
    DeadlineSpent,
}

/// Why each chain position was passed over in one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkipTrace([Option<SkipReason>; MAX_CHAIN]);

impl SkipTrace {
    /// Why `position` was passed over, if it was.
    pub fn get(&self, position: u8) -> Option<SkipReason> {
        self.0.get(usize::from(position)).copied().flatten()
    }

    /// The positions passed over, with their reasons, in chain order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, SkipReason)> + '_ {
        // MAX_CHAIN fits in a u8, so the index does too.
        (0u8..)
            .zip(self.0.iter())
            .filter_map(|(position, reason)| reason.map(|r| (position, r)))
    }

    fn set(&mut self, position: usize, reason: SkipReason) {
        self.0[position] = Some(reason);
    }

    fn clear(&mut self, position: usize) {
        self.0[position] = None;
    }
}

/// A decision with the trace of what it passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub decision: Decision,
    pub skipped: SkipTrace,
}

/// Decides the next step of a request. `chain` lists the route's providers
/// in chain order; positions from [`MAX_CHAIN`] on are ignored.
pub fn decide(chain: &[ProviderSnapshot], route: &RoutePolicy, state: &AttemptState) -> Routed {
    let chain = &chain[..chain.len().min(MAX_CHAIN)];
    let mut skipped = SkipTrace::default();

    if state.remaining.is_zero() {
        // The final fallbacks are local and quick (a cache read, a local
        // model, a retrieval): still worth offering when remote time is up.
        for (position, state) in state.positions.iter().enumerate().take(chain.len()) {
            if state.attempts == 0 {
                skipped.set(position, SkipReason::DeadlineSpent);
            }
        }
        return Routed {
            decision: final_fallback(route, state),
            skipped,
        };
    }

    let needs_long_context = state.positions[..chain.len()]
        .iter()
        .any(|p| p.last_error == Some(ErrorKind::ContextLength));
    let required = if needs_long_context {
        route.required.with(Capability::LongContext)
    } else {
        route.required
    };

    if let Some(decision) = retry(chain, route, state, required) {
        return Routed { decision, skipped };
    }

    let mut chosen = None;
    let mut first_spilled = None;
    let mut spilled = Positions::EMPTY;
    for (position, provider) in chain.iter().enumerate() {
        if state.positions[position].attempts > 0 {
            continue;
        }
        if let Some(reason) = ineligible(provider, route, required, needs_long_context) {
            skipped.set(position, reason);
            continue;
        }
        if route.spill_over
            && let Some(reason) = strained(provider, route)
        {
            skipped.set(position, reason);
            spilled = spilled.with(position as u8);
            first_spilled.get_or_insert(position);
            continue;
        }
        chosen = Some(position);
        break;
    }
    // Every eligible provider is strained: the first one still beats the
    // final fallbacks.
    if chosen.is_none()
        && let Some(position) = first_spilled
    {
        skipped.clear(position);
        spilled = Positions::EMPTY;
        chosen = Some(position);
    }

    let decision = match chosen {
        // Chain positions are below MAX_CHAIN (16), so they fit in a u8.
        Some(position) => Decision::Attempt {
            position: position as u8,
            reason: match (state.last_failed, state.last) {
                (Some(from), _) => Reason::Failover { from },
                // Only saturation refusals so far: moving on is the same
                // spill-over the snapshot would have made a moment later.
                (None, Some(_)) => Reason::SpillOver {
                    skipped: state.saturated(chain.len()).union(spilled),
                },
                (None, None) if !spilled.is_empty() => Reason::SpillOver { skipped: spilled },
                (None, None) => Reason::Primary,
            },
        },
        None => final_fallback(route, state),
    };
    Routed { decision, skipped }
}

/// Rule 1: the same provider again, if its last error, its retry count,
/// the budget, the deadline and its eligibility all allow it. A retry
/// answers what the provider itself just said, so load signals (which lag)
/// do not veto it; its breaker and key do.
fn retry(
    chain: &[ProviderSnapshot],
    route: &RoutePolicy,
    state: &AttemptState,
    required: Capabilities,
) -> Option<Decision> {
    let position = state.last?;
    let provider = chain.get(usize::from(position))?;
    let tried = state.positions[usize::from(position)];
    let error = tried.last_error?;
    let retries_made = tried.attempts.saturating_sub(1);
    if !state.budget_available
        || retries_made >= route.retries_per_provider
        || ineligible(provider, route, required, false).is_some()
    {
        return None;
    }
    let fits = |wait: Duration| wait <= route.max_retry_after && wait < state.remaining;
    match (error.same_provider(), error.retry_after()) {
        (SameProvider::Never, _) | (SameProvider::AfterRetryAfter, None) => None,
        (SameProvider::Retry, None) => Some(Decision::Attempt {
            position,
            reason: Reason::Retry,
        }),
        (SameProvider::Retry | SameProvider::AfterRetryAfter, Some(wait)) => {
            fits(wait).then_some(Decision::RetryAfter { position, wait })
        }
    }
}

/// Hard rules: a provider failing one of these is never picked.
fn ineligible(
    provider: &ProviderSnapshot,
    route: &RoutePolicy,
    required: Capabilities,
    needs_long_context: bool,
) -> Option<SkipReason> {
    if let Some(allowed) = route.allowed_domains
        && !allowed.contains(provider.domain)
    {
        return Some(SkipReason::DomainNotAllowed);
    }
    if !provider.capabilities.contains_all(required) {
        let only_long_context_missing = needs_long_context
            && provider.capabilities.contains_all(route.required)
            && !provider.capabilities.has(Capability::LongContext);
        return Some(if only_long_context_missing {
            SkipReason::NotLongContext
        } else {
            SkipReason::MissingCapability
        });
    }
    if !provider.key_available {
        return Some(SkipReason::NoKey);
    }
    if let BreakerGate::Open { .. } = provider.breaker {
        return Some(SkipReason::BreakerOpen);
    }
    None
}

/// Soft rules: a provider failing one of these is passed over while a
/// better one exists.
fn strained(provider: &ProviderSnapshot, route: &RoutePolicy) -> Option<SkipReason> {
    if provider.max_concurrency > 0 && provider.in_flight >= provider.max_concurrency {
        return Some(SkipReason::Saturated);
    }
    if provider.rpm_limit > 0 && provider.requests_last_minute >= provider.rpm_limit {
        return Some(SkipReason::RpmFull);
    }
    if let (Some(target), Some(p95)) = (route.sla_p95, provider.p95)
        && p95 > target
    {
        return Some(SkipReason::Slow);
    }
    None
}

fn final_fallback(route: &RoutePolicy, state: &AttemptState) -> Decision {
    route
        .final_fallbacks
        .iter()
        .flatten()
        .find(|f| !state.fallbacks_tried.contains(**f))
        .map_or(Decision::Exhausted, |f| Decision::FinalFallback(*f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn provider(index: u16) -> ProviderSnapshot {
        ProviderSnapshot {
            provider: index,
            domain: DomainId(index as u8),
            capabilities: [Capability::Chat, Capability::Tools].into_iter().collect(),
            key_available: true,
            breaker: BreakerGate::Allowed,
            in_flight: 0,
            max_concurrency: 8,
            requests_last_minute: 0,
            rpm_limit: 0,
            p95: Some(SECOND),
        }
    }

    fn chain(n: u16) -> Vec<ProviderSnapshot> {
        (0..n).map(provider).collect()
    }

    fn fresh() -> AttemptState {
        AttemptState::new(Duration::from_secs(30))
    }

    fn after(failures: &[(u8, ErrorKind)]) -> AttemptState {
        let mut state = fresh();
        for (position, error) in failures {
            state.record_failure(*position, *error);
        }
        state
    }

    fn attempt(position: u8, reason: Reason) -> Decision {
        Decision::Attempt { position, reason }
    }

    fn decision(chain: &[ProviderSnapshot], route: &RoutePolicy, state: &AttemptState) -> Decision {
        decide(chain, route, state).decision
    }

    #[test]
    fn first_attempt_goes_to_the_first_provider() {
        let routed = decide(&chain(3), &RoutePolicy::default(), &fresh());
        assert_eq!(routed.decision, attempt(0, Reason::Primary));
        assert_eq!(routed.skipped.iter().count(), 0);
    }

    #[test]
    fn providers_outside_the_allowed_domains_are_never_picked() {
        let route = RoutePolicy {
            allowed_domains: Some([DomainId(2)].into_iter().collect()),
            ..RoutePolicy::default()
        };
        let routed = decide(&chain(3), &route, &fresh());
        assert_eq!(routed.decision, attempt(2, Reason::Primary));
        assert_eq!(routed.skipped.get(0), Some(SkipReason::DomainNotAllowed));
        assert_eq!(routed.skipped.get(1), Some(SkipReason::DomainNotAllowed));
        // After the only allowed provider fails, the others stay out.
        let state = after(&[(2, ErrorKind::Client)]);
        assert_eq!(
            decision(&chain(3), &route, &state),
            Decision::FinalFallback(FinalFallback::Cache)
        );
    }

    #[test]
    fn providers_lacking_a_required_capability_are_skipped() {
        let mut providers = chain(3);
        providers[1].capabilities = providers[1].capabilities.with(Capability::Vision);
        let route = RoutePolicy {
            required: Capabilities::of(Capability::Vision),
            ..RoutePolicy::default()
        };
        let routed = decide(&providers, &route, &fresh());
        assert_eq!(routed.decision, attempt(1, Reason::Primary));
        assert_eq!(routed.skipped.get(0), Some(SkipReason::MissingCapability));
        assert_eq!(routed.skipped.get(2), None);
    }

    #[test]
    fn providers_without_a_key_are_skipped() {
        let mut providers = chain(2);
        providers[0].key_available = false;
        let routed = decide(&providers, &RoutePolicy::default(), &fresh());
        assert_eq!(routed.decision, attempt(1, Reason::Primary));
        assert_eq!(routed.skipped.get(0), Some(SkipReason::NoKey));
    }

    #[test]
    fn open_breakers_are_skipped_and_free_trial_slots_are_used() {
        let mut providers = chain(3);
        providers[0].breaker = BreakerGate::Open {
            until: Instant::now() + SECOND,
        };
        providers[1].breaker = BreakerGate::TrialAvailable;
        let routed = decide(&providers, &RoutePolicy::default(), &fresh());
        assert_eq!(routed.decision, attempt(1, Reason::Primary));
        assert_eq!(routed.skipped.get(0), Some(SkipReason::BreakerOpen));
        let now = Instant::now();
        assert_eq!(
            BreakerGate::from(Admission::Rejected { retry_at: now }),
            BreakerGate::Open { until: now }
        );
    }

    #[test]
    fn saturated_provider_is_spilled_over_when_a_later_one_is_free() {
        let mut providers = chain(3);
        providers[0].in_flight = 8;
        let routed = decide(&providers, &RoutePolicy::default(), &fresh());
        assert_eq!(
            routed.decision,
            attempt(
                1,
                Reason::SpillOver {
                    skipped: Positions::EMPTY.with(0)
                }
            )
        );
        assert_eq!(routed.skipped.get(0), Some(SkipReason::Saturated));
    }

    #[test]
    fn provider_with_its_rpm_spent_is_spilled_over() {
        let mut providers = chain(2);
        providers[0].rpm_limit = 60;
        providers[0].requests_last_minute = 60;
        let routed = decide(&providers, &RoutePolicy::default(), &fresh());
        assert_eq!(routed.skipped.get(0), Some(SkipReason::RpmFull));
        assert!(matches!(
            routed.decision,
            Decision::Attempt {
                position: 1,
                reason: Reason::SpillOver { .. }
            }
        ));
        // No limit means no limit, however busy.
        providers[0].rpm_limit = 0;
        assert_eq!(
            decision(&providers, &RoutePolicy::default(), &fresh()),
            attempt(0, Reason::Primary)
        );
    }

    #[test]
    fn provider_slower_than_the_sla_is_spilled_over() {
        let mut providers = chain(3);
        providers[0].p95 = Some(Duration::from_secs(9));
        providers[1].p95 = None; // no data yet: not held against it
        let route = RoutePolicy {
            sla_p95: Some(Duration::from_secs(4)),
            ..RoutePolicy::default()
        };
        let routed = decide(&providers, &route, &fresh());
        assert_eq!(routed.skipped.get(0), Some(SkipReason::Slow));
        assert!(matches!(
            routed.decision,
            Decision::Attempt { position: 1, .. }
        ));
    }

    #[test]
    fn the_last_eligible_provider_is_used_even_when_strained() {
        let mut providers = chain(3);
        providers[0].in_flight = 8;
        providers[1].p95 = Some(Duration::from_secs(9));
        providers[2].key_available = false;
        let route = RoutePolicy {
            sla_p95: Some(Duration::from_secs(4)),
            ..RoutePolicy::default()
        };
        let routed = decide(&providers, &route, &fresh());
        // Both strained: the first in chain order wins, and is not
        // reported as skipped.
        assert_eq!(routed.decision, attempt(0, Reason::Primary));
        assert_eq!(routed.skipped.get(0), None);
        assert_eq!(routed.skipped.get(1), Some(SkipReason::Slow));
        assert_eq!(routed.skipped.get(2), Some(SkipReason::NoKey));
    }

    #[test]
    fn without_spill_over_the_chain_order_holds() {
        let mut providers = chain(2);
        providers[0].in_flight = 8;
        let route = RoutePolicy {
            spill_over: false,
            ..RoutePolicy::default()
        };
        assert_eq!(
            decision(&providers, &route, &fresh()),
            attempt(0, Reason::Primary)
        );
    }

    #[test]
    fn context_length_error_goes_to_the_next_long_context_provider() {
        let mut providers = chain(4);
        providers[0].capabilities = providers[0].capabilities.with(Capability::LongContext);
        providers[3].capabilities = providers[3].capabilities.with(Capability::LongContext);
        let state = after(&[(1, ErrorKind::ContextLength)]);
        // Position 0 was skipped earlier (say, saturated) and is free now.
        let routed = decide(&providers, &RoutePolicy::default(), &state);
        assert_eq!(routed.decision, attempt(0, Reason::Failover { from: 1 }));
        let state = after(&[(0, ErrorKind::ContextLength)]);
        let routed = decide(&providers, &RoutePolicy::default(), &state);
        assert_eq!(routed.decision, attempt(3, Reason::Failover { from: 0 }));
        assert_eq!(routed.skipped.get(1), Some(SkipReason::NotLongContext));
        assert_eq!(routed.skipped.get(2), Some(SkipReason::NotLongContext));
        // The requirement sticks after a later, unrelated failure.
        let state = after(&[(0, ErrorKind::ContextLength), (3, ErrorKind::Client)]);
        assert_eq!(
            decision(&providers, &RoutePolicy::default(), &state),
            Decision::FinalFallback(FinalFallback::Cache)
        );
    }

    #[test]
    fn connect_reset_and_5xx_are_retried_once_then_fail_over() {
        for error in [
            ErrorKind::Connect,
            ErrorKind::Reset,
            ErrorKind::Server { retry_after: None },
            ErrorKind::Malformed,
        ] {
            let route = RoutePolicy::default();
            let state = after(&[(0, error)]);
            assert_eq!(
                decision(&chain(2), &route, &state),
                attempt(0, Reason::Retry),
                "{error:?}"
            );
            let state = after(&[(0, error), (0, error)]);
            assert_eq!(
                decision(&chain(2), &route, &state),
                attempt(1, Reason::Failover { from: 0 }),
                "{error:?}"
            );
        }
        // The count is a policy setting.
        let route = RoutePolicy {
            retries_per_provider: 2,
            ..RoutePolicy::default()
        };
        let state = after(&[(0, ErrorKind::Reset), (0, ErrorKind::Reset)]);
        assert_eq!(
            decision(&chain(2), &route, &state),
            attempt(0, Reason::Retry)
        );
    }

    #[test]
    fn no_retry_when_the_budget_cannot_pay() {
        let mut state = after(&[(0, ErrorKind::Connect)]);
        state.budget_available = false;
        assert_eq!(
            decision(&chain(2), &RoutePolicy::default(), &state),
            attempt(1, Reason::Failover { from: 0 })
        );
    }

    #[test]
    fn no_retry_once_the_breaker_opened() {
        let mut providers = chain(2);
        providers[0].breaker = BreakerGate::Open {
            until: Instant::now() + SECOND,
        };
        let state = after(&[(0, ErrorKind::Connect)]);
        assert_eq!(
            decision(&providers, &RoutePolicy::default(), &state),
            attempt(1, Reason::Failover { from: 0 })
        );
    }

    #[test]
    fn rate_limit_waits_for_a_retry_after_that_fits() {
        let route = RoutePolicy::default();
        let limited = |retry_after| ErrorKind::RateLimited { retry_after };
        let state = after(&[(0, limited(Some(SECOND)))]);
        assert_eq!(
            decision(&chain(2), &route, &state),
            Decision::RetryAfter {
                position: 0,
                wait: SECOND
            }
        );
        // Longer than max_retry_after: fail over at once.
        let state = after(&[(0, limited(Some(Duration::from_secs(3))))]);
        assert_eq!(
            decision(&chain(2), &route, &state),
            attempt(1, Reason::Failover { from: 0 })
        );
        // Longer than what is left of the deadline.
        let mut state = after(&[(0, limited(Some(SECOND)))]);
        state.remaining = Duration::from_millis(900);
        assert_eq!(
            decision(&chain(2), &route, &state),
            attempt(1, Reason::Failover { from: 0 })
        );
        // No Retry-After: no reason to believe waiting helps.
        let state = after(&[(0, limited(None))]);
        assert_eq!(
            decision(&chain(2), &route, &state),
            attempt(1, Reason::Failover { from: 0 })
        );
        // And the budget must pay for it.
        let mut state = after(&[(0, limited(Some(SECOND)))]);
        state.budget_available = false;
        assert_eq!(
            decision(&chain(2), &route, &state),
            attempt(1, Reason::Failover { from: 0 })
        );
    }

    #[test]
    fn server_error_with_retry_after_waits_for_it() {
        let state = after(&[(
            0,
            ErrorKind::Server {
                retry_after: Some(Duration::from_millis(500)),
            },
        )]);
        assert_eq!(
            decision(&chain(2), &RoutePolicy::default(), &state),
            Decision::RetryAfter {
                position: 0,
                wait: Duration::from_millis(500)
            }
        );
        let state = after(&[(
            0,
            ErrorKind::Server {
                retry_after: Some(Duration::from_secs(60)),
            },
        )]);
        assert_eq!(
            decision(&chain(2), &RoutePolicy::default(), &state),
            attempt(1, Reason::Failover { from: 0 })
        );
    }

    #[test]
    fn client_errors_content_filter_and_contract_move_on_at_once() {
        for error in [
            ErrorKind::Client,
            ErrorKind::ContentFilter,
            ErrorKind::Contract,
            ErrorKind::Timeout,
            ErrorKind::FirstTokenTimeout,
            ErrorKind::StreamCut,
        ] {
            let state = after(&[(0, error)]);
            assert_eq!(
                decision(&chain(3), &RoutePolicy::default(), &state),
                attempt(1, Reason::Failover { from: 0 }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn exhausted_chain_takes_each_final_fallback_in_order_then_gives_up() {
        let route = RoutePolicy {
            final_fallbacks: [
                Some(FinalFallback::Extractive),
                None,
                Some(FinalFallback::Cache),
            ],
            ..RoutePolicy::default()
        };
        let mut state = after(&[(0, ErrorKind::Client), (1, ErrorKind::ContentFilter)]);
        assert_eq!(
            decision(&chain(2), &route, &state),
            Decision::FinalFallback(FinalFallback::Extractive)
        );
        state.record_fallback(FinalFallback::Extractive);
        assert_eq!(
            decision(&chain(2), &route, &state),
            Decision::FinalFallback(FinalFallback::Cache)
        );
        state.record_fallback(FinalFallback::Cache);
        assert_eq!(decision(&chain(2), &route, &state), Decision::Exhausted);
    }

    #[test]
    fn a_spent_deadline_goes_straight_to_the_final_fallbacks() {
        let mut state = after(&[(0, ErrorKind::Connect)]);
        state.remaining = Duration::ZERO;
        let routed = decide(&chain(3), &RoutePolicy::default(), &state);
        assert_eq!(
            routed.decision,
            Decision::FinalFallback(FinalFallback::Cache)
        );
        assert_eq!(
            routed.skipped.iter().collect::<Vec<_>>(),
            [
                (1, SkipReason::DeadlineSpent),
                (2, SkipReason::DeadlineSpent)
            ]
        );
    }

    #[test]
    fn failover_after_spill_over_names_the_failed_provider() {
        let mut providers = chain(3);
        providers[1].in_flight = 8;
        let state = after(&[(0, ErrorKind::ContentFilter)]);
        let routed = decide(&providers, &RoutePolicy::default(), &state);
        assert_eq!(routed.decision, attempt(2, Reason::Failover { from: 0 }));
        assert_eq!(routed.skipped.get(1), Some(SkipReason::Saturated));
        assert_eq!(routed.skipped.get(0), None);
    }

    #[test]
    fn refused_for_saturation_moves_on_as_a_spill_over_not_a_failover() {
        // The snapshot showed a free slot, but by the time the request
        // reached the provider others had taken every slot and the queue.
        let providers = chain(3);
        let state = after(&[(0, ErrorKind::Saturated)]);
        let routed = decide(&providers, &RoutePolicy::default(), &state);
        assert_eq!(
            routed.decision,
            attempt(
                1,
                Reason::SpillOver {
                    skipped: Positions::EMPTY.with(0)
                }
            )
        );
    }

    #[test]
    fn a_real_failure_after_a_saturation_refusal_is_a_failover() {
        let providers = chain(3);
        let state = after(&[(0, ErrorKind::Saturated), (1, ErrorKind::ContentFilter)]);
        let routed = decide(&providers, &RoutePolicy::default(), &state);
        assert_eq!(routed.decision, attempt(2, Reason::Failover { from: 1 }));
    }

    #[test]
    fn a_failover_is_from_the_provider_that_failed_not_one_found_full() {
        let providers = chain(3);
        // A 5xx, then its retry found the provider full.
        let retried = after(&[
            (0, ErrorKind::Server { retry_after: None }),
            (0, ErrorKind::Saturated),
        ]);
        let routed = decide(&providers, &RoutePolicy::default(), &retried);
        assert_eq!(routed.decision, attempt(1, Reason::Failover { from: 0 }));
        // A content filter, then the next provider found full.
        let then_full = after(&[(0, ErrorKind::ContentFilter), (1, ErrorKind::Saturated)]);
        let routed = decide(&providers, &RoutePolicy::default(), &then_full);
        assert_eq!(routed.decision, attempt(2, Reason::Failover { from: 0 }));
    }

    #[test]
    fn positions_beyond_the_maximum_chain_are_ignored() {
        let mut providers = chain(20);
        for p in &mut providers[..MAX_CHAIN] {
            p.key_available = false;
        }
        assert_eq!(
            decision(&providers, &RoutePolicy::default(), &fresh()),
            Decision::FinalFallback(FinalFallback::Cache)
        );
    }

    #[test]
    fn provider_errors_map_to_decision_kinds() {
        let status = |status, retry_after| ProviderError::Status {
            status,
            retry_after,
            message: String::new(),
        };
        let cases = [
            (
                status(503, Some(SECOND)),
                ErrorKind::Server {
                    retry_after: Some(SECOND),
                },
            ),
            (status(408, None), ErrorKind::Timeout),
            (status(400, None), ErrorKind::Client),
            (
                ProviderError::RateLimited {
                    retry_after: None,
                    message: String::new(),
                },
                ErrorKind::RateLimited { retry_after: None },
            ),
            (
                ProviderError::ContextLength(String::new()),
                ErrorKind::ContextLength,
            ),
            (ProviderError::ContentFilter, ErrorKind::ContentFilter),
            (ProviderError::Contract(String::new()), ErrorKind::Contract),
            (
                ProviderError::StreamCut {
                    tokens: 3,
                    partial: String::new(),
                },
                ErrorKind::StreamCut,
            ),
            (ProviderError::MissingKey("K".into()), ErrorKind::Client),
            (
                ProviderError::Saturated(String::new()),
                ErrorKind::Saturated,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(ErrorKind::from(&error), kind, "{error}");
        }
    }
}
