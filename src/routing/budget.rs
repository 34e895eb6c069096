//! The retry budget of one provider, shared by every request of the process
//! that goes to it (Finagle's `RetryBudget`, Linkerd's and tower's
//! `TpsBudget`).
//!
//! A retry count alone cannot stop a retry storm: when a provider is down,
//! "retry once" doubles its load exactly when it can least take it. A budget
//! ties retries to real traffic instead:
//! - every original request (a request's first attempt) deposits `ratio`
//!   tokens (default 0.2: at most one extra attempt per five requests);
//! - deposits expire after `ttl`, so a quiet hour does not bank an
//!   avalanche of retries for the next outage;
//! - every attempt beyond a request's first (retry, hedge, failover attempt
//!   to this provider) withdraws one token, or is refused;
//! - `min_per_second` withdrawals per second are always allowed, so a
//!   provider with little traffic can still be retried at all.
//!
//! Invariant (tested): from the budget's first use, after N original
//! requests over T started seconds, withdrawals ≤ ratio·N + min_per_second·T
//! (for a window that starts later, add the deposits of the `ttl` before
//! it, which may still be spent inside it). This holds
//! because the two sources are kept apart: the per-second allowance is
//! use-it-or-lose-it within its second, and deposited tokens are consumed
//! when withdrawn (not merely balanced against withdrawals that expire too,
//! which would let the same deposit pay twice).
//!
//! Deposits are kept in a ring of [`SLOTS`] buckets, each `ttl / SLOTS`
//! wide, in millionths of a token so fractional ratios add up exactly. A
//! deposit lives for between 0.9·ttl and ttl, depending on where in its
//! bucket it fell; withdrawals take the oldest tokens first, since those
//! expire first.
//!
//! Time is passed in (`now`), never read, so tests run on a paused clock.
//! The budget is shared between tasks, so the methods take `&self` and the
//! state sits behind a `Mutex`: a critical section is a handful of integer
//! operations over a fixed array (no allocation, no await), so the lock is
//! held for tens of nanoseconds, against attempts that take hundreds of
//! milliseconds; contention, even at thousands of requests per second, is
//! not measurable next to that.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Buckets in the deposit ring.
pub const SLOTS: usize = 10;

/// Deposits are counted in millionths of a token.
const UNITS_PER_TOKEN: u64 = 1_000_000;

/// How a provider's retry budget fills and drains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetPolicy {
    /// Tokens each original request deposits (0.2: one retry per five
    /// requests, the Finagle and Linkerd default).
    pub ratio: f64,
    /// Withdrawals always allowed per second, whatever was deposited
    /// (Finagle's default of 10).
    pub min_per_second: u32,
    /// How long a deposit stays usable (10 s, as in Finagle and tower).
    pub ttl: Duration,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        RetryBudgetPolicy {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Why a retry budget policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetPolicyError {
    #[error("retry budget ratio must be a number from 0 to 1000, found {0}")]
    Ratio(f64),
    #[error("retry budget ttl must be greater than zero, found {0:?}")]
    ZeroTtl(Duration),
}

impl RetryBudgetPolicy {
    /// Refuses a negative, NaN or absurd ratio and a zero ttl.
    pub fn validate(&self) -> Result<(), BudgetPolicyError> {
        // Written so that NaN fails too; above 1000 retries per request the
        // setting is surely a typo, and the unit arithmetic stays small.
        if !(self.ratio >= 0.0 && self.ratio <= 1000.0) {
            return Err(BudgetPolicyError::Ratio(self.ratio));
        }
        if self.ttl.is_zero() {
            return Err(BudgetPolicyError::ZeroTtl(self.ttl));
        }
        Ok(())
    }
}

/// What the status page shows for a budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudgetSnapshot {
    /// Deposited tokens still usable.
    pub balance: f64,
    /// Withdrawals left from this second's minimum allowance.
    pub floor_remaining: u32,
    /// Withdrawals granted since the budget was made.
    pub withdrawn: u64,
    /// Withdrawals refused since the budget was made.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which `ttl / SLOTS` span of time the units were deposited in.
    epoch: u64,
    units: u64,
}

#[derive(Debug)]
struct Inner {
    /// The first instant the budget saw; epochs count from it.
    origin: Option<Instant>,
    slots: [Slot; SLOTS],
    floor_second: u64,
    floor_used: u32,
    withdrawn: u64,
    refused: u64,
}

/// A retry budget for one provider, shared by all its requests.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    deposit_units: u64,
    slot_width: Duration,
    inner: Mutex<Inner>,
}

impl RetryBudget {
    /// A budget with no deposits yet; its clock starts at its first use.
    pub fn new(policy: RetryBudgetPolicy) -> Result<RetryBudget, BudgetPolicyError> {
        policy.validate()?;
        // Rounded down so deposits never exceed what the ratio promises.
        let deposit_units = (policy.ratio * UNITS_PER_TOKEN as f64).floor() as u64;
        let slot_width = (policy.ttl / SLOTS as u32).max(Duration::from_nanos(1));
        Ok(RetryBudget {
            policy,
            deposit_units,
            slot_width,
            inner: Mutex::new(Inner {
                origin: None,
                slots: [Slot::default(); SLOTS],
                floor_second: 0,
                floor_used: 0,
                withdrawn: 0,
                refused: 0,
            }),
        })
    }

    /// The policy the budget was built with.
    pub fn policy(&self) -> &RetryBudgetPolicy {
        &self.policy
    }

    /// An original request (a first attempt) went to the provider.
    pub fn deposit(&self, now: Instant) {
        let mut inner = self.lock();
        let since = inner.since(now);
        let epoch = self.epoch(since);
        let slot = &mut inner.slots[slot_index(epoch)];
        if slot.epoch != epoch {
            *slot = Slot { epoch, units: 0 };
        }
        slot.units = slot.units.saturating_add(self.deposit_units);
    }

    /// Asks to pay for an attempt beyond a request's first; `false` means
    /// the attempt must not be made.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        let since = inner.since(now);
        // The per-second allowance is spent first: it is lost at the end of
        // this second anyway, while deposits may outlive it.
        inner.roll_floor(since);
        if inner.floor_used < self.policy.min_per_second {
            inner.floor_used += 1;
            inner.withdrawn += 1;
            return true;
        }
        let current = self.epoch(since);
        if self.live_units(&inner, current) < UNITS_PER_TOKEN {
            inner.refused += 1;
            return false;
        }
        // Oldest live bucket first: those tokens expire soonest.
        let mut owed = UNITS_PER_TOKEN;
        for epoch in oldest_live(current)..=current {
            let slot = &mut inner.slots[slot_index(epoch)];
            if slot.epoch != epoch {
                continue;
            }
            let take = slot.units.min(owed);
            slot.units -= take;
            owed -= take;
            if owed == 0 {
                break;
            }
        }
        inner.withdrawn += 1;
        true
    }

    /// What the status page shows at `now`.
    pub fn snapshot(&self, now: Instant) -> RetryBudgetSnapshot {
        let mut inner = self.lock();
        let since = inner.since(now);
        inner.roll_floor(since);
        let units = self.live_units(&inner, self.epoch(since));
        RetryBudgetSnapshot {
            balance: units as f64 / UNITS_PER_TOKEN as f64,
            floor_remaining: self.policy.min_per_second.saturating_sub(inner.floor_used),
            withdrawn: inner.withdrawn,
            refused: inner.refused,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the counters consistent before anything can
        // panic, so a poisoned lock holds usable state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn epoch(&self, since: Duration) -> u64 {
        u64::try_from(since.as_nanos() / self.slot_width.as_nanos()).unwrap_or(u64::MAX)
    }

    fn live_units(&self, inner: &Inner, current: u64) -> u64 {
        inner
            .slots
            .iter()
            .filter(|s| current.wrapping_sub(s.epoch) < SLOTS as u64)
            .map(|s| s.units)
            .fold(0u64, u64::saturating_add)
    }
}

impl Inner {
    /// Time since the first instant the budget saw (zero for earlier ones).
    fn since(&mut self, now: Instant) -> Duration {
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin)
    }

    /// Starts a new allowance when a new second began.
    fn roll_floor(&mut self, since: Duration) {
        let second = since.as_secs();
        if second != self.floor_second {
            self.floor_second = second;
            self.floor_used = 0;
        }
    }
}

fn slot_index(epoch: u64) -> usize {
    (epoch % SLOTS as u64) as usize
}

/// The oldest epoch whose deposits are still usable at `current`.
fn oldest_live(current: u64) -> u64 {
    current.saturating_sub(SLOTS as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::advance;

    fn budget() -> RetryBudget {
        RetryBudget::new(RetryBudgetPolicy::default()).unwrap()
    }

    /// Withdraws until refused (or `cap` times); returns how many succeeded.
    fn drain(budget: &RetryBudget, now: Instant, cap: u32) -> u32 {
        let mut granted = 0;
        while granted < cap && budget.try_withdraw(now) {
            granted += 1;
        }
        granted
    }

    #[tokio::test(start_paused = true)]
    async fn min_per_second_is_allowed_without_deposits() {
        let budget = budget();
        assert_eq!(drain(&budget, Instant::now(), 100), 10);
        advance(Duration::from_millis(999)).await;
        assert!(!budget.try_withdraw(Instant::now()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(drain(&budget, Instant::now(), 100), 10);
        let snapshot = budget.snapshot(Instant::now());
        assert_eq!(snapshot.withdrawn, 20);
        // Each drain ends on one refusal, plus the one just before the second.
        assert_eq!(snapshot.refused, 3);
        assert_eq!(snapshot.floor_remaining, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn five_requests_pay_for_one_retry() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            min_per_second: 0,
            ..RetryBudgetPolicy::default()
        })
        .unwrap();
        for _ in 0..4 {
            budget.deposit(Instant::now());
        }
        assert!(!budget.try_withdraw(Instant::now()));
        budget.deposit(Instant::now());
        assert_eq!(budget.snapshot(Instant::now()).balance, 1.0);
        assert!(budget.try_withdraw(Instant::now()));
        assert!(!budget.try_withdraw(Instant::now()));
        assert_eq!(budget.snapshot(Instant::now()).balance, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            min_per_second: 0,
            ..RetryBudgetPolicy::default()
        })
        .unwrap();
        for _ in 0..50 {
            budget.deposit(Instant::now());
        }
        advance(Duration::from_millis(9_999)).await;
        assert_eq!(budget.snapshot(Instant::now()).balance, 10.0);
        assert!(budget.try_withdraw(Instant::now()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(budget.snapshot(Instant::now()).balance, 0.0);
        assert!(!budget.try_withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_take_the_oldest_deposits_first() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            ratio: 1.0,
            min_per_second: 0,
            ..RetryBudgetPolicy::default()
        })
        .unwrap();
        budget.deposit(Instant::now());
        advance(Duration::from_secs(5)).await;
        budget.deposit(Instant::now());
        assert!(budget.try_withdraw(Instant::now()));
        // Had the newer token been taken, the older one would still count
        // here and vanish at 10 s; instead the newer one survives until 15 s.
        advance(Duration::from_secs(6)).await;
        assert_eq!(budget.snapshot(Instant::now()).balance, 1.0);
        assert!(budget.try_withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn total_outage_withdrawals_stay_within_ratio_and_floor() {
        let budget = budget();
        let policy = *budget.policy();
        let start = Instant::now();
        let mut requests = 0u32;
        let mut withdrawals = 0u32;
        // 100 requests per second for 12 s; every one fails and wants up to
        // three more attempts. Traffic is uneven: bursts and pauses.
        for tick in 0..1_200u32 {
            let burst = if (tick / 100) % 3 == 0 { 2 } else { 1 };
            for _ in 0..burst {
                let now = Instant::now();
                budget.deposit(now);
                requests += 1;
                withdrawals += drain(&budget, now, 3);
            }
            advance(Duration::from_millis(10)).await;
        }
        let seconds = (Instant::now() - start).as_secs_f64().ceil();
        assert!(requests >= 1_000 && seconds >= 10.0);
        let bound = policy.ratio * f64::from(requests) + f64::from(policy.min_per_second) * seconds;
        assert!(
            f64::from(withdrawals) <= bound,
            "{withdrawals} withdrawals for {requests} requests over {seconds} s (bound {bound})"
        );
        // And the budget is not stingier than it promises: what is missing
        // is at most the fraction of a token left over at the end.
        assert!(
            f64::from(withdrawals) >= bound - 1.0,
            "{withdrawals} withdrawals, bound {bound}"
        );
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let budget = Arc::new(
            RetryBudget::new(RetryBudgetPolicy {
                ratio: 0.5,
                min_per_second: 3,
                ttl: Duration::from_secs(10),
            })
            .unwrap(),
        );
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit(now);
        }
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || drain(&budget, now, u32::MAX))
            })
            .collect();
        let granted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 3 + 50);
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let ok = RetryBudgetPolicy::default();
        for policy in [
            RetryBudgetPolicy { ratio: -0.1, ..ok },
            RetryBudgetPolicy {
                ratio: f64::NAN,
                ..ok
            },
            RetryBudgetPolicy {
                ratio: f64::INFINITY,
                ..ok
            },
            RetryBudgetPolicy {
                ttl: Duration::ZERO,
                ..ok
            },
        ] {
            assert!(RetryBudget::new(policy).is_err(), "{policy:?}");
        }
        assert!(RetryBudget::new(RetryBudgetPolicy { ratio: 0.0, ..ok }).is_ok());
    }
}
