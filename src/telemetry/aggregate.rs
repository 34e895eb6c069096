//! Tallies of telemetry events: the per-minute aggregates compaction
//! stores, and the per-provider and per-route sums a report is made of.
//!
//! One type serves both, so that a report over compacted minutes and a
//! report over the raw events they replaced add up the same things in the
//! same way. Every field merges exactly: counts and sums are integers
//! (cost in billionths, so adding in another order gives the same total),
//! and the latency histogram is stored as its non-empty HDR buckets, which
//! re-record into the very same buckets.
//!
//! Stored in the `aggregates` tree: key = minute since the epoch (u64
//! big-endian), a subject byte (`p` provider, `r` route), the name (UTF-8);
//! value = version 1 (JSON) of [`Aggregate`].

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::store::journal::RequestState;
use crate::store::telemetry::Event;

/// Latencies are recorded in microseconds, up to an hour (longer ones are
/// recorded as an hour), to three significant digits: a percentile is
/// within 0.1% of the true value.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
pub const LATENCY_SIGFIG: u8 = 3;

/// Cost is summed in billionths of its currency unit.
pub const COST_SCALE: f64 = 1e9;

/// What an aggregate is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// Attempts to one provider (and the switches away from it).
    Provider,
    /// Requests of one route.
    Route,
}

impl Subject {
    fn byte(self) -> u8 {
        match self {
            Subject::Provider => b'p',
            Subject::Route => b'r',
        }
    }
}

/// The key of one per-minute aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggregateKey {
    /// Minutes since the epoch.
    pub minute: u64,
    pub subject: Subject,
    pub name: String,
}

impl AggregateKey {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(9 + self.name.len());
        bytes.extend_from_slice(&self.minute.to_be_bytes());
        bytes.push(self.subject.byte());
        bytes.extend_from_slice(self.name.as_bytes());
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<AggregateKey> {
        let minute = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let subject = match *bytes.get(8)? {
            b'p' => Subject::Provider,
            b'r' => Subject::Route,
            _ => return None,
        };
        let name = std::str::from_utf8(&bytes[9..]).ok()?.to_owned();
        Some(AggregateKey {
            minute,
            subject,
            name,
        })
    }
}

/// An HDR latency histogram in microseconds; serialised as its non-empty
/// buckets `[highest value of the bucket, count]`.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    pub fn new() -> Latency {
        Latency(
            Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
                .expect("the latency bounds are valid constants"),
        )
    }

    pub fn record(&mut self, latency: Duration) {
        self.record_us(latency.as_micros().min(u128::from(LATENCY_MAX_US)) as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.min(LATENCY_MAX_US));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: addition cannot fail.
        self.0
            .add(&other.0)
            .expect("latency histograms share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0–1), to the histogram's precision;
    /// `None` when nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.0.value_at_quantile(quantile)))
    }

    /// How many recorded latencies are at most `limit` (to the histogram's
    /// precision: values in `limit`'s own bucket count as within).
    pub fn count_within(&self, limit: Duration) -> u64 {
        let us = limit.as_micros().min(u128::from(LATENCY_MAX_US)) as u64;
        self.0.count_between(0, us)
    }

    pub fn buckets(&self) -> Vec<[u64; 2]> {
        self.0
            .iter_recorded()
            .map(|v| [v.value_iterated_to(), v.count_at_value()])
            .collect()
    }

    /// The histogram engine itself, for callers that need more than this
    /// wrapper offers.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl PartialEq for Latency {
    fn eq(&self, other: &Self) -> bool {
        self.count() == other.count() && self.buckets() == other.buckets()
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count())
            .field("buckets", &self.buckets())
            .finish()
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.buckets().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let buckets = Vec::<[u64; 2]>::deserialize(deserializer)?;
        let mut latency = Latency::new();
        for [value, count] in buckets {
            if value > LATENCY_MAX_US {
                return Err(serde::de::Error::custom(format!(
                    "latency bucket {value} µs is above the histogram's {LATENCY_MAX_US} µs"
                )));
            }
            latency.0.saturating_record_n(value, count);
        }
        Ok(latency)
    }
}

/// The tally of one subject over some time (a minute, or a report's
/// period).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Aggregate {
    /// Requests (route) or attempts (provider).
    pub count: u64,
    /// By outcome: `ok`, `refusal` (routes only), or the failure's kind.
    pub outcomes: BTreeMap<String, u64>,
    pub latency: Latency,
    /// The exact longest latency, µs.
    pub max_latency_us: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Billionths of the cost's currency unit.
    pub cost_nanos: u64,
    /// Requests answered by a provider after another failed.
    pub fallbacks: u64,
    /// Answers from a final fallback (cache, local, extractive).
    pub degraded: u64,
    pub refusals: u64,
    pub needs_review: u64,
    /// Attempts whose answer broke the agent's output contract.
    pub contract_violations: u64,
    /// From a request's first failed attempt to its answer through a
    /// fallback: the sum (µs) and how many requests.
    pub to_fallback_us: u64,
    pub to_fallback_count: u64,
    /// Binding switches away from this provider.
    pub switches: u64,
    /// Of those, found unnecessary.
    pub unnecessary_switches: u64,
}

impl Aggregate {
    /// Adds every field of `other`.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        for (kind, n) in &other.outcomes {
            *self.outcomes.entry(kind.clone()).or_default() += n;
        }
        self.latency.merge(&other.latency);
        self.max_latency_us = self.max_latency_us.max(other.max_latency_us);
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_nanos += other.cost_nanos;
        self.fallbacks += other.fallbacks;
        self.degraded += other.degraded;
        self.refusals += other.refusals;
        self.needs_review += other.needs_review;
        self.contract_violations += other.contract_violations;
        self.to_fallback_us += other.to_fallback_us;
        self.to_fallback_count += other.to_fallback_count;
        self.switches += other.switches;
        self.unnecessary_switches += other.unnecessary_switches;
    }

    fn outcome(&mut self, kind: &str) {
        // Look up before inserting: the kinds repeat, so allocating the
        // key for every event would be the scan's main cost.
        match self.outcomes.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.outcomes.insert(kind.to_owned(), 1);
            }
        }
    }

    fn latency(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency.record_us(us);
        self.max_latency_us = self.max_latency_us.max(us);
    }

    /// Adds an attempt to a provider's tally.
    pub fn add_attempt(&mut self, attempt: &crate::store::telemetry::AttemptEvent<'_>) {
        self.count += 1;
        self.outcome(attempt.outcome);
        self.latency(attempt.latency);
        self.input_tokens += u64::from(attempt.input_tokens);
        self.output_tokens += u64::from(attempt.output_tokens);
        self.cost_nanos += cost_nanos(attempt.cost);
        if attempt.outcome == "contract" {
            self.contract_violations += 1;
        }
    }

    /// Adds a request to a route's tally.
    pub fn add_request(&mut self, request: &crate::store::telemetry::RequestEvent<'_>) {
        self.count += 1;
        match request.state {
            RequestState::Failed => self.outcome(if request.error_kind.is_empty() {
                "error"
            } else {
                request.error_kind
            }),
            _ if request.refusal => self.outcome("refusal"),
            _ => self.outcome("ok"),
        }
        self.latency(request.latency);
        self.input_tokens += request.input_tokens;
        self.output_tokens += request.output_tokens;
        self.cost_nanos += cost_nanos(request.cost);
        self.fallbacks += u64::from(request.fallback);
        self.degraded += u64::from(request.degraded);
        self.refusals += u64::from(request.refusal);
        self.needs_review += u64::from(request.needs_review);
        if let Some(us) = to_fallback_us(request) {
            self.to_fallback_us += us;
            self.to_fallback_count += 1;
        }
    }

    /// Adds the time-to-fallback of a request whose first failed attempt
    /// was this provider's.
    pub fn add_fallback_recovery(&mut self, us: u64) {
        self.to_fallback_us += us;
        self.to_fallback_count += 1;
    }

    /// Folds one event into `tallies`, under the subjects it concerns:
    /// an attempt under its provider (and, if it broke the contract, its
    /// route's violations); a request under its route (and its
    /// time-to-fallback under the provider that failed first); a switch
    /// under the provider it left.
    pub fn fold_event(
        tallies: &mut BTreeMap<AggregateKey, Aggregate>,
        minute: u64,
        event: &Event<'_>,
    ) {
        fn at<'t>(
            tallies: &'t mut BTreeMap<AggregateKey, Aggregate>,
            minute: u64,
            subject: Subject,
            name: &str,
        ) -> &'t mut Aggregate {
            tallies
                .entry(AggregateKey {
                    minute,
                    subject,
                    name: name.to_owned(),
                })
                .or_default()
        }
        match event {
            Event::Attempt(attempt) => {
                at(tallies, minute, Subject::Provider, attempt.provider).add_attempt(attempt);
                if attempt.outcome == "contract" {
                    at(tallies, minute, Subject::Route, attempt.route).contract_violations += 1;
                }
            }
            Event::Request(request) => {
                at(tallies, minute, Subject::Route, request.route).add_request(request);
                if let Some(us) = to_fallback_us(request) {
                    at(
                        tallies,
                        minute,
                        Subject::Provider,
                        request.first_failed_provider,
                    )
                    .add_fallback_recovery(us);
                }
            }
            Event::Switch(switch) => {
                let tally = at(tallies, minute, Subject::Provider, &switch.from);
                tally.switches += 1;
                tally.unnecessary_switches += u64::from(switch.unnecessary);
            }
            Event::Unnecessary { switch, .. } => {
                at(tallies, minute, Subject::Provider, &switch.from).unnecessary_switches += 1;
            }
        }
    }

    /// The cost as a currency amount.
    pub fn cost(&self) -> f64 {
        self.cost_nanos as f64 / COST_SCALE
    }
}

/// The time from a request's first failed attempt to its answer, when a
/// fallback answered it.
pub fn to_fallback_us(request: &crate::store::telemetry::RequestEvent<'_>) -> Option<u64> {
    if request.state != RequestState::Completed || !request.fallback || request.refusal {
        return None;
    }
    let failed = request.first_failure_ns?;
    Some(request.at_ns.saturating_sub(failed) / 1_000)
}

fn cost_nanos(cost: f64) -> u64 {
    if cost.is_finite() && cost > 0.0 {
        (cost * COST_SCALE).round() as u64
    } else {
        0
    }
}
