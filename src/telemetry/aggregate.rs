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

use std::collections::{BTreeMap, HashMap};
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
        // A bucket is named by its highest value: the top one's lies a
        // little above the bound itself.
        let top = latency.0.highest_equivalent(LATENCY_MAX_US);
        for [value, count] in buckets {
            if value > top {
                return Err(serde::de::Error::custom(format!(
                    "latency bucket {value} µs is above the histogram's {top} µs"
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
    /// Those answers by who served them (`cache`, `extractive`, ...).
    pub degraded_by: BTreeMap<String, u64>,
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
    /// Attempts that ended inside Baton before the provider was called
    /// (its queue full, its breaker open), by kind: kept out of `count`,
    /// the outcomes and the latency, which judge the provider.
    pub never_sent: BTreeMap<String, u64>,
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
        for (source, n) in &other.degraded_by {
            *self.degraded_by.entry(source.clone()).or_default() += n;
        }
        self.refusals += other.refusals;
        self.needs_review += other.needs_review;
        self.contract_violations += other.contract_violations;
        self.to_fallback_us += other.to_fallback_us;
        self.to_fallback_count += other.to_fallback_count;
        self.switches += other.switches;
        self.unnecessary_switches += other.unnecessary_switches;
        for (kind, n) in &other.never_sent {
            *self.never_sent.entry(kind.clone()).or_default() += n;
        }
    }

    fn outcome(&mut self, kind: &str) {
        count(&mut self.outcomes, kind);
    }

    fn latency(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency.record_us(us);
        self.max_latency_us = self.max_latency_us.max(us);
    }

    /// Adds an attempt to a provider's tally.
    pub fn add_attempt(&mut self, attempt: &crate::store::telemetry::AttemptEvent<'_>) {
        if crate::provider::ProviderError::NEVER_SENT.contains(&attempt.outcome) {
            count(&mut self.never_sent, attempt.outcome);
            return;
        }
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
        if request.degraded {
            self.degraded += 1;
            count(&mut self.degraded_by, request.served_by);
        }
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

/// Counts one `kind`. Looked up before inserting: the kinds repeat, so
/// allocating the key for every event would be the scan's main cost.
fn count(counts: &mut BTreeMap<String, u64>, kind: &str) {
    match counts.get_mut(kind) {
        Some(n) => *n += 1,
        None => {
            counts.insert(kind.to_owned(), 1);
        }
    }
}

fn cost_nanos(cost: f64) -> u64 {
    if cost.is_finite() && cost > 0.0 {
        (cost * COST_SCALE).round() as u64
    } else {
        0
    }
}

/// The tallies of one kind of subject, by name.
///
/// A vector with a name index rather than a map of tallies: looking a
/// name up returns a position, so the hit path is one hash lookup and the
/// name is only allocated for a new subject (a map's entry API would
/// allocate the name for every event).
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    index: HashMap<String, usize>,
    tallies: Vec<(String, Aggregate)>,
}

impl Subjects {
    /// The tally of `name`, made on first use.
    pub fn at(&mut self, name: &str) -> &mut Aggregate {
        let position = match self.index.get(name) {
            Some(&position) => position,
            None => {
                self.index.insert(name.to_owned(), self.tallies.len());
                self.tallies.push((name.to_owned(), Aggregate::default()));
                self.tallies.len() - 1
            }
        };
        &mut self.tallies[position].1
    }

    pub fn get(&self, name: &str) -> Option<&Aggregate> {
        self.index
            .get(name)
            .map(|&position| &self.tallies[position].1)
    }

    /// Every subject, in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Aggregate)> {
        self.tallies.iter().map(|(name, a)| (name.as_str(), a))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tallies.iter().map(|(name, _)| name.as_str())
    }

    pub fn len(&self) -> usize {
        self.tallies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }
}

/// Equal when the same names have equal tallies, whatever the order they
/// were first seen in.
impl PartialEq for Subjects {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(name, a)| other.get(name) == Some(a))
    }
}

impl std::ops::Index<&str> for Subjects {
    type Output = Aggregate;

    fn index(&self, name: &str) -> &Aggregate {
        self.get(name)
            .unwrap_or_else(|| panic!("no tally for `{name}`"))
    }
}

/// Tallies by subject: what a scan of events folds into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tallies {
    pub providers: Subjects,
    pub routes: Subjects,
}

impl Tallies {
    /// The tally of `name` under `subject`, made on first use.
    pub fn at(&mut self, subject: Subject, name: &str) -> &mut Aggregate {
        match subject {
            Subject::Provider => self.providers.at(name),
            Subject::Route => self.routes.at(name),
        }
    }

    /// Folds one event in, under the subjects it concerns: an attempt
    /// under its provider (and, if it broke the contract, its route's
    /// violations); a request under its route (and its time-to-fallback
    /// under the provider that failed first); a switch under the provider
    /// it left.
    pub fn fold(&mut self, event: &Event<'_>) {
        match event {
            Event::Attempt(attempt) => {
                self.at(Subject::Provider, attempt.provider)
                    .add_attempt(attempt);
                if attempt.outcome == "contract" {
                    self.at(Subject::Route, attempt.route).contract_violations += 1;
                }
            }
            Event::Request(request) => {
                self.at(Subject::Route, request.route).add_request(request);
                if let Some(us) = to_fallback_us(request) {
                    self.at(Subject::Provider, request.first_failed_provider)
                        .add_fallback_recovery(us);
                }
            }
            Event::Switch(switch) => {
                let tally = self.at(Subject::Provider, &switch.from);
                tally.switches += 1;
                tally.unnecessary_switches += u64::from(switch.unnecessary);
            }
            Event::Unnecessary { switch, .. } => {
                self.at(Subject::Provider, &switch.from)
                    .unnecessary_switches += 1;
            }
        }
    }

    pub fn add(&mut self, subject: Subject, name: &str, aggregate: &Aggregate) {
        self.at(subject, name).merge(aggregate);
    }

    pub fn merge(&mut self, other: &Tallies) {
        for (name, aggregate) in other.providers.iter() {
            self.add(Subject::Provider, name, aggregate);
        }
        for (name, aggregate) in other.routes.iter() {
            self.add(Subject::Route, name, aggregate);
        }
    }

    /// Every tally with its subject, in a stable order.
    pub fn entries(&self) -> Vec<(Subject, &str, &Aggregate)> {
        let mut entries: Vec<_> = self
            .providers
            .iter()
            .map(|(name, a)| (Subject::Provider, name, a))
            .chain(
                self.routes
                    .iter()
                    .map(|(name, a)| (Subject::Route, name, a)),
            )
            .collect();
        entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::telemetry::{AttemptEvent, RequestEvent, SwitchEvent};
    use crate::trace::TraceId;

    fn attempt(
        provider: &str,
        outcome: &'static str,
        latency_us: u64,
        cost: f64,
    ) -> Event<'static> {
        Event::Attempt(AttemptEvent {
            at_ns: 0,
            trace_id: TraceId::new(),
            provider: Box::leak(provider.to_owned().into_boxed_str()),
            route: "default",
            outcome,
            reason: "primary",
            worker: "w",
            swarm: "s",
            status: None,
            latency: Duration::from_micros(latency_us),
            input_tokens: 3,
            output_tokens: 4,
            cost,
            cancelled: false,
        })
    }

    fn request(at_ns: u64, first_failure_ns: Option<u64>, fallback: bool) -> Event<'static> {
        Event::Request(RequestEvent {
            at_ns,
            trace_id: TraceId::new(),
            swarm: "s",
            route: "default",
            worker: "w",
            state: RequestState::Completed,
            latency: Duration::from_millis(40),
            served_by: "provider:b",
            fallback,
            degraded: false,
            refusal: false,
            needs_review: false,
            resumed: false,
            input_tokens: 1,
            output_tokens: 2,
            cost: 0.1,
            error_kind: "",
            first_failure_ns,
            first_failed_provider: if first_failure_ns.is_some() { "a" } else { "" },
        })
    }

    #[test]
    fn a_latency_histogram_round_trips_through_its_buckets() {
        let mut latency = Latency::new();
        for us in [0, 1, 999, 1_000, 123_456, 7_654_321, 10_000_000_000] {
            latency.record_us(us);
        }
        let json = serde_json::to_string(&latency).unwrap();
        let back: Latency = serde_json::from_str(&json).unwrap();
        assert_eq!(back, latency);
        assert_eq!(back.count(), 7);
        for q in [0.0, 0.5, 0.9, 1.0] {
            assert_eq!(back.quantile(q), latency.quantile(q), "q {q}");
        }
        // Longer than the histogram's hour: recorded as an hour.
        assert_eq!(
            back.quantile(1.0),
            Some(Duration::from_micros(
                latency.histogram().highest_equivalent(LATENCY_MAX_US)
            ))
        );
    }

    #[test]
    fn a_bucket_above_the_histogram_is_refused_when_read() {
        let error = serde_json::from_str::<Latency>("[[99999999999, 1]]").unwrap_err();
        assert!(error.to_string().contains("above the histogram"), "{error}");
    }

    #[test]
    fn merging_tallies_equals_folding_every_event_into_one() {
        let events = [
            attempt("a", "ok", 1_500, 0.1),
            attempt("a", "5xx", 250_000, 0.0),
            attempt("b", "contract", 80_000, 0.3),
            attempt("a", "saturated", 3, 0.0),
            attempt("a", "ok", 1_000_000, 0.7),
            attempt("a", "breaker_open", 2, 0.0),
            request(5_000_000_000, Some(4_000_000_000), true),
            request(6_000_000_000, None, false),
            Event::Switch(SwitchEvent {
                swarm: "s".into(),
                worker: "w".into(),
                from: "a".into(),
                to: "b".into(),
                reason: "failover".into(),
                unnecessary: true,
                at_ns: 1,
            }),
        ];
        let mut whole = Tallies::default();
        events.iter().for_each(|e| whole.fold(e));
        let (mut left, mut right) = (Tallies::default(), Tallies::default());
        events[..4].iter().for_each(|e| left.fold(e));
        events[4..].iter().for_each(|e| right.fold(e));
        // Merge in the other order: the sums must not depend on it.
        right.merge(&left);
        assert_eq!(right, whole);

        let a = &whole.providers["a"];
        // Refused inside Baton: counted apart, not as the provider's
        // attempts, errors or (near-zero) latencies.
        assert_eq!(a.count, 3);
        assert_eq!(
            a.outcomes,
            BTreeMap::from([("5xx".into(), 1), ("ok".into(), 2)])
        );
        assert_eq!(
            a.never_sent,
            BTreeMap::from([("breaker_open".into(), 1), ("saturated".into(), 1)])
        );
        assert_eq!(a.latency.histogram().min(), 1_500);
        assert_eq!(a.cost_nanos, 800_000_000);
        assert_eq!(a.max_latency_us, 1_000_000);
        assert_eq!((a.to_fallback_count, a.to_fallback_us), (1, 1_000_000));
        assert_eq!((a.switches, a.unnecessary_switches), (1, 1));
        let route = &whole.routes["default"];
        assert_eq!(route.count, 2);
        assert_eq!(route.fallbacks, 1);
        assert_eq!(route.contract_violations, 1);
        assert_eq!(whole.providers["b"].contract_violations, 1);
    }

    #[test]
    fn an_aggregate_key_round_trips_and_sorts_by_minute_first() {
        let key = AggregateKey {
            minute: 28_333_334,
            subject: Subject::Route,
            name: "défaut".into(),
        };
        assert_eq!(AggregateKey::from_bytes(&key.to_bytes()), Some(key.clone()));
        let later = AggregateKey {
            minute: 28_333_335,
            subject: Subject::Provider,
            name: "a".into(),
        };
        assert!(key.to_bytes() < later.to_bytes());
        assert_eq!(AggregateKey::from_bytes(b"short"), None);
    }
}
