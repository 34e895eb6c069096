//! The circuit breaker of one (provider, model): a small state machine that
//! stops sending requests to an upstream that keeps failing, and lets a few
//! trial requests through once it has had time to recover.
//!
//! ```text
//!            consecutive failures ≥ N, or failure rate ≥ R over the window
//!   Closed ───────────────────────────────────────────────────────────────▶ Open { until }
//!     ▲                                                                       │ now ≥ until
//!     │ every trial succeeded                                                 ▼
//!     └───────────────────────────── HalfOpen (≤ half_open_trials trials) ◀───┘
//!                                        │ a trial failed: Open again, ejections + 1
//! ```
//!
//! Invariants:
//! - Time is never read here: every method takes `now` (a
//!   `tokio::time::Instant`), so the owning actor decides what "now" is and
//!   tests run on a paused clock.
//! - The ejection time is `base_ejection × ejections`, capped at
//!   `max_ejection` (Envoy's outlier detection), so a provider that keeps
//!   failing its trials is probed less and less often.
//! - The ejection count decays: a breaker that stays closed for
//!   `max_ejection` since it last closed starts again from the base ejection
//!   the next time it opens, so one bad afternoon does not cost a provider
//!   five-minute ejections a week later.
//! - At most `half_open_trials` trial requests are admitted per probation
//!   period, counting both those in flight and those that already succeeded.
//! - The failure rate is counted over a rolling window split into
//!   [`BUCKETS`] buckets held in a fixed array: recording an outcome is a few
//!   integer operations and never allocates.
//! - Outcomes are counted only while closed (to decide whether to open) and,
//!   while half-open, for trials in flight. A result arriving while open
//!   belongs to a call admitted before the breaker opened; it says nothing
//!   new and is dropped. The owner that can tell such a late result from a
//!   trial's (it got [`Admission::Trial`] for the trial) should drop it too.
//!
//! The caller decides which failures count: a 4xx caused by the request
//! itself, a content-filter refusal or a broken output contract say nothing
//! about the provider's health and should not be recorded as failures.
//!
//! One breaker is owned by one actor (the provider's Health actor), so the
//! methods take `&mut self` and there is no locking here.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// How many buckets the failure-rate window is split into.
pub const BUCKETS: usize = 10;

/// When a breaker opens and how long it stays open.
///
/// The defaults follow Envoy's outlier detection and Finagle's failure
/// accrual, scaled for a router that talks to a handful of LLM providers at
/// a few requests per second rather than to hundreds of hosts at thousands:
/// - `consecutive_failures = 5`: Envoy's `consecutive_5xx` default and
///   Finagle's `consecutiveFailures(5)`. Five in a row is unlikely from an
///   upstream that is merely flaky, and at LLM request rates it is reached
///   within seconds of a real outage.
/// - `failure_rate = 0.5` over `window = 30 s` with `min_requests = 10`:
///   catches the provider that fails every other request and so never
///   reaches five in a row. Envoy's failure-percentage detector (85 % over
///   50 requests) and Finagle's success-rate policy need far more traffic
///   than one provider of a small router sees; 10 requests in 30 s is
///   reached by a busy swarm but keeps a couple of unlucky calls on a quiet
///   one from ejecting a provider.
/// - `base_ejection = 30 s`, `max_ejection = 300 s`: Envoy's
///   `base_ejection_time` and `max_ejection_time`; the ejection time grows
///   by the base for each ejection in a row.
/// - `half_open_trials = 1`: one trial per probation period, as in
///   linkerd2-proxy's probation and Finagle's single probe. The chain keeps
///   serving from the next provider meanwhile, so a single trial costs
///   little, and a provider that is still down hurts one request only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Failure share in (0, 1] over `window` that opens the breaker.
    pub failure_rate: f64,
    /// Requests the window must hold before the failure rate counts.
    pub min_requests: u32,
    /// The span the failure rate is measured over.
    pub window: Duration,
    /// The first ejection's length; the n-th in a row lasts n times as long.
    pub base_ejection: Duration,
    /// The longest an ejection lasts; also how long the breaker must stay
    /// closed before the ejection count resets.
    pub max_ejection: Duration,
    /// Trial requests admitted while half-open.
    pub half_open_trials: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(30),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            half_open_trials: 1,
        }
    }
}

/// Why a breaker policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BreakerPolicyError {
    #[error("breaker consecutive_failures must be at least 1, found 0")]
    ZeroConsecutiveFailures,
    #[error("breaker failure_rate must be in (0, 1], found {0}")]
    FailureRate(f64),
    #[error("breaker min_requests must be at least 1, found 0")]
    ZeroMinRequests,
    #[error("breaker {field} must be greater than zero, found {found:?}")]
    ZeroDuration {
        field: &'static str,
        found: Duration,
    },
    #[error("breaker max_ejection must be at least base_ejection {base:?}, found {max:?}")]
    MaxBelowBase { base: Duration, max: Duration },
    #[error("breaker half_open_trials must be at least 1, found 0")]
    ZeroTrials,
}

impl BreakerPolicy {
    /// Refuses settings that would make the breaker never open, never close
    /// or divide by zero.
    pub fn validate(&self) -> Result<(), BreakerPolicyError> {
        if self.consecutive_failures == 0 {
            return Err(BreakerPolicyError::ZeroConsecutiveFailures);
        }
        // Written so that NaN fails too.
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(BreakerPolicyError::FailureRate(self.failure_rate));
        }
        if self.min_requests == 0 {
            return Err(BreakerPolicyError::ZeroMinRequests);
        }
        for (field, found) in [
            ("window", self.window),
            ("base_ejection", self.base_ejection),
            ("max_ejection", self.max_ejection),
        ] {
            if found.is_zero() {
                return Err(BreakerPolicyError::ZeroDuration { field, found });
            }
        }
        if self.max_ejection < self.base_ejection {
            return Err(BreakerPolicyError::MaxBelowBase {
                base: self.base_ejection,
                max: self.max_ejection,
            });
        }
        if self.half_open_trials == 0 {
            return Err(BreakerPolicyError::ZeroTrials);
        }
        Ok(())
    }
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: go ahead as a trial, and report the outcome (or
    /// [`Breaker::release_trial`] if the call is abandoned).
    Trial,
    /// Open, or half-open with every trial taken. `retry_at` is when the
    /// breaker may admit again: the end of the ejection, or `now` while
    /// trials are in flight (their outcome, not a time, decides).
    Rejected { retry_at: Instant },
}

/// The breaker's state as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// Probing with trials, or open with its ejection over and ready to
    /// admit a trial.
    HalfOpen,
}

impl BreakerState {
    /// The name the store and the report use.
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What `baton status`, `/metrics` and the dashboard show for a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Failures / requests over the window; 0 with no requests.
    pub failure_rate: f64,
    pub requests_in_window: u32,
    /// Ejections in a row, after decay.
    pub ejections: u32,
    /// While open: how long until a trial is admitted.
    pub retry_at: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `in_flight` trials running, `succeeded` already back with success.
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
    },
}

/// One bucket of the failure-rate window. `epoch` is the index of the
/// bucket-sized span of time its counts belong to, so a stale bucket is
/// recognised (and reset) without a timer.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    requests: u32,
    failures: u32,
}

/// A circuit breaker for one (provider, model).
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    phase: Phase,
    consecutive_failures: u32,
    /// Ejections in a row, before decay (see [`Breaker::ejections`]).
    ejections: u32,
    /// When the breaker last became closed; drives the ejection decay.
    closed_since: Instant,
    /// The instant bucket epochs count from.
    origin: Instant,
    bucket_width: Duration,
    buckets: [Bucket; BUCKETS],
}

impl Breaker {
    /// A closed breaker; `now` anchors its window.
    pub fn new(policy: BreakerPolicy, now: Instant) -> Result<Breaker, BreakerPolicyError> {
        policy.validate()?;
        // A window shorter than BUCKETS nanoseconds would give zero-width
        // buckets; one nanosecond is as fine as time gets anyway.
        let bucket_width = (policy.window / BUCKETS as u32).max(Duration::from_nanos(1));
        Ok(Breaker {
            policy,
            phase: Phase::Closed,
            consecutive_failures: 0,
            ejections: 0,
            closed_since: now,
            origin: now,
            bucket_width,
            buckets: [Bucket::default(); BUCKETS],
        })
    }

    /// The policy the breaker was built with.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Asks whether a call may go to the provider now. An ejection that has
    /// run out turns into half-open here, admitting the call as a trial.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { until } if now < until => Admission::Rejected { retry_at: until },
            Phase::Open { .. } => {
                // `validate` guarantees at least one trial per probation.
                self.phase = Phase::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                };
                Admission::Trial
            }
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if in_flight + succeeded < self.policy.half_open_trials {
                    self.phase = Phase::HalfOpen {
                        in_flight: in_flight + 1,
                        succeeded,
                    };
                    Admission::Trial
                } else {
                    Admission::Rejected { retry_at: now }
                }
            }
        }
    }

    /// A call admitted by this breaker succeeded.
    pub fn record_success(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Closed => {
                self.consecutive_failures = 0;
                self.count(now, false);
            }
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } if *in_flight > 0 => {
                *in_flight -= 1;
                *succeeded += 1;
                if *succeeded >= self.policy.half_open_trials {
                    self.close(now);
                }
            }
            // Late results of calls admitted before the breaker opened.
            Phase::HalfOpen { .. } | Phase::Open { .. } => {}
        }
    }

    /// A call admitted by this breaker failed in a way that counts against
    /// the provider's health.
    pub fn record_failure(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.count(now, true);
                let (requests, failures) = self.window_counts(now);
                let rate_tripped = requests >= self.policy.min_requests
                    && f64::from(failures) >= self.policy.failure_rate * f64::from(requests);
                if self.consecutive_failures >= self.policy.consecutive_failures || rate_tripped {
                    // A long quiet spell since the last ejection means this
                    // is a new incident, not the same one continuing.
                    self.ejections = self.ejections(now);
                    self.open(now);
                }
            }
            Phase::HalfOpen { in_flight, .. } if in_flight > 0 => self.open(now),
            Phase::HalfOpen { .. } | Phase::Open { .. } => {}
        }
    }

    /// A trial call was abandoned (cancelled, or the request was answered
    /// elsewhere first) before it produced an outcome: its slot goes back.
    pub fn release_trial(&mut self, _now: Instant) {
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Puts back a breaker a previous process left open: `ejections` in a
    /// row, admitting its next trial after `remaining` (zero: at once, as
    /// a half-open breaker would). A restart must not forget an outage, or
    /// the first requests after it would all go to a provider known down.
    pub fn restore_open(&mut self, ejections: u32, remaining: Duration, now: Instant) {
        self.ejections = ejections.max(1);
        self.consecutive_failures = 0;
        self.phase = Phase::Open {
            until: now + remaining,
        };
    }

    /// The state an operator should see at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Ejections in a row at `now`, after decay: zero once the breaker has
    /// stayed closed for `max_ejection`.
    pub fn ejections(&self, now: Instant) -> u32 {
        let decayed = matches!(self.phase, Phase::Closed)
            && now.saturating_duration_since(self.closed_since) >= self.policy.max_ejection;
        if decayed { 0 } else { self.ejections }
    }

    /// What operators see at `now`.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let (requests, failures) = self.window_counts(now);
        let failure_rate = if requests == 0 {
            0.0
        } else {
            f64::from(failures) / f64::from(requests)
        };
        let retry_at = match self.phase {
            Phase::Open { until } if now < until => Some(until - now),
            _ => None,
        };
        BreakerSnapshot {
            state: self.state(now),
            consecutive_failures: self.consecutive_failures,
            failure_rate,
            requests_in_window: requests,
            ejections: self.ejections(now),
            retry_at,
        }
    }

    fn open(&mut self, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        let ejection = self
            .policy
            .base_ejection
            .checked_mul(self.ejections)
            .unwrap_or(self.policy.max_ejection)
            .min(self.policy.max_ejection);
        self.phase = Phase::Open {
            until: now + ejection,
        };
    }

    fn close(&mut self, now: Instant) {
        self.phase = Phase::Closed;
        self.closed_since = now;
        self.consecutive_failures = 0;
        // The failures that opened the breaker must not re-open it at once.
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let epoch = since / self.bucket_width.as_nanos();
        u64::try_from(epoch).unwrap_or(u64::MAX)
    }

    fn count(&mut self, now: Instant, failure: bool) {
        let epoch = self.epoch(now);
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.requests = bucket.requests.saturating_add(1);
        if failure {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// (requests, failures) over the buckets still inside the window.
    fn window_counts(&self, now: Instant) -> (u32, u32) {
        let epoch = self.epoch(now);
        self.buckets
            .iter()
            .filter(|b| epoch.wrapping_sub(b.epoch) < BUCKETS as u64)
            .fold((0u32, 0u32), |(r, f), b| {
                (r.saturating_add(b.requests), f.saturating_add(b.failures))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy::default(), Instant::now()).unwrap()
    }

    fn fail(breaker: &mut Breaker, times: u32) {
        for _ in 0..times {
            assert_eq!(breaker.admit(Instant::now()), Admission::Allowed);
            breaker.record_failure(Instant::now());
        }
    }

    /// Opens a default breaker with five failures.
    fn opened() -> Breaker {
        let mut breaker = breaker();
        fail(&mut breaker, 5);
        assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
        breaker
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_exactly_five_consecutive_failures() {
        let mut breaker = breaker();
        fail(&mut breaker, 4);
        assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
        fail(&mut breaker, 1);
        assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_between_failures_keeps_it_closed() {
        let mut breaker = breaker();
        fail(&mut breaker, 4);
        breaker.record_success(Instant::now());
        fail(&mut breaker, 4);
        // 9 requests, 8 failures: below min_requests, and never 5 in a row.
        assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
        assert_eq!(breaker.snapshot(Instant::now()).consecutive_failures, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn open_breaker_rejects_and_reports_when_to_retry() {
        let start = Instant::now();
        let mut breaker = opened();
        let until = start + Duration::from_secs(30);
        assert_eq!(
            breaker.admit(Instant::now()),
            Admission::Rejected { retry_at: until }
        );
        advance(Duration::from_secs(29)).await;
        assert_eq!(
            breaker.admit(Instant::now()),
            Admission::Rejected { retry_at: until }
        );
        assert_eq!(
            breaker.snapshot(Instant::now()).retry_at,
            Some(Duration::from_secs(1))
        );
        advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.state(Instant::now()), BreakerState::HalfOpen);
        assert_eq!(breaker.snapshot(Instant::now()).retry_at, None);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_only_the_configured_number_of_trials() {
        let policy = BreakerPolicy {
            half_open_trials: 2,
            ..BreakerPolicy::default()
        };
        let mut breaker = Breaker::new(policy, Instant::now()).unwrap();
        fail(&mut breaker, 5);
        advance(Duration::from_secs(30)).await;
        let now = Instant::now();
        assert_eq!(breaker.admit(now), Admission::Trial);
        assert_eq!(breaker.admit(now), Admission::Trial);
        assert_eq!(breaker.admit(now), Admission::Rejected { retry_at: now });
        // A cancelled trial gives its slot back...
        breaker.release_trial(now);
        assert_eq!(breaker.admit(now), Admission::Trial);
        // ...but a successful one does not: two successes are needed in all.
        breaker.record_success(now);
        assert_eq!(breaker.state(now), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(now), Admission::Rejected { retry_at: now });
        breaker.record_success(now);
        assert_eq!(breaker.state(now), BreakerState::Closed);
        assert_eq!(breaker.admit(now), Admission::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_trial_closes_the_breaker() {
        let mut breaker = opened();
        advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
        breaker.record_success(Instant::now());
        assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.consecutive_failures, 0);
        assert_eq!(snapshot.requests_in_window, 0);
        // Closing does not forget the ejection yet: it decays later.
        assert_eq!(snapshot.ejections, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_with_a_doubled_ejection() {
        let mut breaker = opened();
        advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
        breaker.record_failure(Instant::now());
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.state, BreakerState::Open);
        assert_eq!(snapshot.ejections, 2);
        assert_eq!(snapshot.retry_at, Some(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped_at_max() {
        let mut breaker = opened();
        let mut seen = Vec::new();
        for _ in 0..12 {
            let retry_at = breaker.snapshot(Instant::now()).retry_at.unwrap();
            seen.push(retry_at.as_secs());
            advance(retry_at).await;
            assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
            breaker.record_failure(Instant::now());
        }
        assert_eq!(
            seen,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_count_decays_after_staying_closed_for_max_ejection() {
        let mut breaker = opened();
        advance(Duration::from_secs(30)).await;
        breaker.admit(Instant::now());
        breaker.record_failure(Instant::now());
        advance(Duration::from_secs(60)).await;
        breaker.admit(Instant::now());
        breaker.record_success(Instant::now());
        assert_eq!(breaker.ejections(Instant::now()), 2);
        // Reopening soon after continues the escalation...
        let mut soon = breaker.clone();
        fail(&mut soon, 5);
        assert_eq!(
            soon.snapshot(Instant::now()).retry_at,
            Some(Duration::from_secs(90))
        );
        // ...but after max_ejection of health it starts from the base again.
        advance(Duration::from_secs(300)).await;
        assert_eq!(breaker.ejections(Instant::now()), 0);
        fail(&mut breaker, 5);
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.ejections, 1);
        assert_eq!(snapshot.retry_at, Some(Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_opens_only_once_min_requests_is_reached() {
        let mut breaker = breaker();
        // Alternate failure and success: never two failures in a row, so
        // only the failure rate (50 %) can open the breaker.
        for i in 0..9 {
            let now = Instant::now();
            assert_eq!(breaker.admit(now), Admission::Allowed, "request {i}");
            if i % 2 == 0 {
                breaker.record_failure(now);
            } else {
                breaker.record_success(now);
            }
            advance(Duration::from_secs(1)).await;
        }
        // 9 requests, 5 failures: rate above 50 % but below min_requests.
        assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
        breaker.record_success(Instant::now());
        // 10 requests, 5 failures; the next failure makes 6 of 11.
        assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
        breaker.record_failure(Instant::now());
        assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
        assert_eq!(breaker.snapshot(Instant::now()).consecutive_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_older_than_the_window_do_not_count() {
        let mut breaker = breaker();
        for _ in 0..4 {
            breaker.record_failure(Instant::now());
            breaker.record_success(Instant::now());
        }
        advance(Duration::from_secs(31)).await;
        for _ in 0..6 {
            breaker.record_success(Instant::now());
        }
        breaker.record_failure(Instant::now());
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.state, BreakerState::Closed);
        assert_eq!(snapshot.requests_in_window, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_while_open_are_ignored() {
        let mut breaker = opened();
        breaker.record_failure(Instant::now());
        breaker.record_success(Instant::now());
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.ejections, 1);
        assert_eq!(snapshot.retry_at, Some(Duration::from_secs(30)));
        advance(Duration::from_secs(30)).await;
        // Half-open with no trial in flight: still nothing to learn.
        breaker.record_success(Instant::now());
        assert_eq!(breaker.state(Instant::now()), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_shows_what_operators_need() {
        let mut breaker = breaker();
        for _ in 0..3 {
            breaker.record_success(Instant::now());
        }
        fail(&mut breaker, 3);
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(
            snapshot,
            BreakerSnapshot {
                state: BreakerState::Closed,
                consecutive_failures: 3,
                failure_rate: 0.5,
                requests_in_window: 6,
                ejections: 0,
                retry_at: None,
            }
        );
        let json = serde_json::to_value(snapshot).unwrap();
        assert_eq!(json["state"], "closed");
        assert_eq!(json["failure_rate"], 0.5);

        fail(&mut breaker, 2);
        advance(Duration::from_secs(10)).await;
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.state, BreakerState::Open);
        assert_eq!(snapshot.consecutive_failures, 5);
        assert_eq!(snapshot.requests_in_window, 8);
        assert_eq!(snapshot.ejections, 1);
        assert_eq!(snapshot.retry_at, Some(Duration::from_secs(20)));
        assert_eq!(serde_json::to_value(snapshot).unwrap()["state"], "open");
    }

    #[test]
    fn nonsense_policies_are_rejected() {
        let ok = BreakerPolicy::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            BreakerPolicy {
                failure_rate: 0.0,
                ..ok
            },
            BreakerPolicy {
                failure_rate: 1.5,
                ..ok
            },
            BreakerPolicy {
                failure_rate: f64::NAN,
                ..ok
            },
            BreakerPolicy {
                window: Duration::ZERO,
                ..ok
            },
            BreakerPolicy {
                base_ejection: Duration::ZERO,
                ..ok
            },
            BreakerPolicy {
                max_ejection: Duration::from_secs(10),
                ..ok
            },
            BreakerPolicy {
                consecutive_failures: 0,
                ..ok
            },
            BreakerPolicy {
                min_requests: 0,
                ..ok
            },
            BreakerPolicy {
                half_open_trials: 0,
                ..ok
            },
        ];
        for policy in cases {
            assert!(policy.validate().is_err(), "{policy:?}");
            assert!(Breaker::new(policy, Instant::now()).is_err());
        }
        assert_eq!(
            BreakerPolicy {
                failure_rate: 1.5,
                ..ok
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "breaker failure_rate must be in (0, 1], found 1.5"
        );
        assert!(
            BreakerPolicy {
                failure_rate: 1.0,
                ..ok
            }
            .validate()
            .is_ok()
        );
    }
}
