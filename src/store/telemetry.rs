//! Telemetry events: one per finished request, one per upstream attempt,
//! one per binding switch of a swarm supervisor.
//!
//! Key: the event's time (ns since the epoch, u64 big-endian) then a u32
//! big-endian sequence, so a range scan over the tree is a scan over a
//! period of time, oldest first. The sequence is process-wide and starts at
//! a random value, so two events of the same nanosecond (request events
//! carry the journal's millisecond times) never share a key.
//!
//! Value: telemetry is scanned by the million (`baton report` reads raw
//! events), so version 1 of this tree is a compact binary layout, not
//! JSON: decoding borrows the strings from the stored bytes and allocates
//! nothing. Layout after the version byte (integers little-endian; `str`
//! is a u16 length then UTF-8 bytes):
//!
//! | kind byte | fields |
//! |-----------|--------|
//! | 1 request | trace id (16), state u8 (0 completed, 1 failed), flags u8 (fallback 1, degraded 2, refusal 4, needs_review 8, resumed 16), latency µs u64, first failure ns u64 (0: none), input tokens u64, output tokens u64, cost f64, then str: swarm, route, worker, served_by, error kind, first failed provider |
//! | 2 attempt | trace id (16), status u16 (0: none), flags u8 (cancelled 1), latency µs u64, input tokens u32, output tokens u32, cost f64, then str: provider, route, outcome, reason, worker, swarm |
//! | 3 switch  | flags u8 (unnecessary 1), then str: swarm, worker, from, to, reason |
//! | 4 unnecessary | the switch's own time ns u64, then str: swarm, worker, from, to, reason |
//!
//! Times: a request event is at the request's end; an attempt event at the
//! attempt's end (its outcome is known then); a switch at the switch.
//!
//! Whether a switch was unnecessary (the provider it left was fine, the
//! worker came straight back) is known only later, so it is recorded as a
//! separate `unnecessary` event at the time it became known
//! ([`Telemetry::mark_unnecessary`]) rather than by rewriting the switch:
//! events are never updated in place, and compaction may already have
//! folded the switch. A switch recorded with `unnecessary` already set is
//! not marked again; the report counts both.
//!
//! Retention: [`Telemetry::compact`] folds every whole minute older than
//! the retention into per-minute aggregates (tree `aggregates`, see
//! [`crate::telemetry::aggregate`]) and deletes the raw events, one
//! transaction per minute, so a crash never counts an event twice or not
//! at all. An event arriving late for a minute already folded is folded
//! into that minute's aggregates by the next compaction.

use std::ops::Bound;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec::{self, show_key};
use super::journal::{JournalRecord, RequestState};
use super::{Store, StoreError};
use crate::telemetry::aggregate::{Aggregate, AggregateKey, Tallies};
use crate::trace::TraceId;

pub const TREE: &str = "telemetry";
pub const AGGREGATES: &str = "aggregates";

/// The encoding version of this tree's values (a binary layout).
pub const VERSION: u8 = 1;

const KIND_REQUEST: u8 = 1;
const KIND_ATTEMPT: u8 = 2;
const KIND_SWITCH: u8 = 3;
const KIND_UNNECESSARY: u8 = 4;

/// Nanoseconds in a minute, the aggregates' resolution.
pub const MINUTE_NS: u64 = 60_000_000_000;

/// Process-wide, random start: keys stay unique across handles and
/// restarts even when events share a timestamp.
static SEQUENCE: LazyLock<AtomicU32> = LazyLock::new(|| AtomicU32::new(rand::random()));

/// A key of the `telemetry` tree.
pub fn event_key(at_ns: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&at_ns.to_be_bytes());
    key[8..].copy_from_slice(&SEQUENCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    key
}

/// The time part of a `telemetry` key.
pub fn key_time(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

/// A binding switch of a swarm supervisor: `worker` moved from provider
/// `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SwitchEvent {
    pub swarm: String,
    pub worker: String,
    pub from: String,
    pub to: String,
    /// `failover` or `fail_back`.
    pub reason: String,
    /// Known to have been unnecessary when recorded.
    pub unnecessary: bool,
    pub at_ns: u64,
}

/// A finished request, as decoded from the store (strings borrowed).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEvent<'a> {
    pub at_ns: u64,
    pub trace_id: TraceId,
    pub swarm: &'a str,
    /// Empty when the request had no route.
    pub route: &'a str,
    /// The worker that answered (the last of the chain); empty if none.
    pub worker: &'a str,
    pub state: RequestState,
    pub latency: Duration,
    /// `provider:<id>`, `cache`, `extractive`...; empty when it failed.
    pub served_by: &'a str,
    pub fallback: bool,
    pub degraded: bool,
    pub refusal: bool,
    pub needs_review: bool,
    pub resumed: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
    /// Why it failed (`interrupted`, or the last attempt's outcome); empty
    /// when it completed.
    pub error_kind: &'a str,
    /// When the first attempt failed, if one did.
    pub first_failure_ns: Option<u64>,
    /// The provider of that attempt.
    pub first_failed_provider: &'a str,
}

/// One upstream attempt, as decoded from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEvent<'a> {
    pub at_ns: u64,
    pub trace_id: TraceId,
    pub provider: &'a str,
    pub route: &'a str,
    /// `ok` or the failure's kind.
    pub outcome: &'a str,
    /// `primary`, `failover`, `retry`, ...
    pub reason: &'a str,
    pub worker: &'a str,
    pub swarm: &'a str,
    pub status: Option<u16>,
    pub latency: Duration,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cost: f64,
    pub cancelled: bool,
}

/// A decoded telemetry event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    Request(RequestEvent<'a>),
    Attempt(AttemptEvent<'a>),
    Switch(SwitchEvent),
    /// A switch found unnecessary at `at_ns` (the switch itself is `switch`).
    Unnecessary {
        at_ns: u64,
        switch: SwitchEvent,
    },
}

impl Event<'_> {
    pub fn at_ns(&self) -> u64 {
        match self {
            Event::Request(e) => e.at_ns,
            Event::Attempt(e) => e.at_ns,
            Event::Switch(e) => e.at_ns,
            Event::Unnecessary { at_ns, .. } => *at_ns,
        }
    }
}

/// The telemetry and aggregates trees of a store.
#[derive(Debug, Clone)]
pub struct Telemetry {
    store: Store,
    events: sled::Tree,
    aggregates: sled::Tree,
}

impl Telemetry {
    pub fn new(store: &Store) -> Result<Telemetry, StoreError> {
        Ok(Telemetry {
            store: store.clone(),
            events: store.tree(TREE)?,
            aggregates: store.tree(AGGREGATES)?,
        })
    }

    /// Writes the events of a finished request: one for the request, one
    /// per attempt. A record still `accepted` writes nothing (it has not
    /// finished). Not durable until a flush covers it ([`Store::durable`]
    /// or sled's timer): telemetry is not acknowledged to anyone. Plain
    /// inserts, not one batch: a sled batch takes a lock that excludes
    /// every other write of the process, journal writes included, and a
    /// crash between two of them costs a few attempt events at most.
    pub fn record_finished(&self, record: &JournalRecord) -> Result<(), StoreError> {
        if record.state == RequestState::Accepted {
            return Ok(());
        }
        let mut buffer = Vec::with_capacity(160);
        for (at_ns, bytes) in encode_record(record, &mut buffer) {
            self.insert(at_ns, bytes)?;
        }
        Ok(())
    }

    /// Records a binding switch.
    pub fn record_switch(&self, event: &SwitchEvent) -> Result<(), StoreError> {
        let mut bytes = vec![VERSION, KIND_SWITCH, u8::from(event.unnecessary)];
        put_switch_names(&mut bytes, event);
        self.insert(event.at_ns, bytes)
    }

    /// Records that `switch` (recorded earlier without the flag) was
    /// unnecessary, as known at `known_at_ns`.
    pub fn mark_unnecessary(
        &self,
        switch: &SwitchEvent,
        known_at_ns: u64,
    ) -> Result<(), StoreError> {
        let mut bytes = vec![VERSION, KIND_UNNECESSARY];
        bytes.extend_from_slice(&switch.at_ns.to_le_bytes());
        put_switch_names(&mut bytes, switch);
        self.insert(known_at_ns, bytes)
    }

    fn insert(&self, at_ns: u64, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.events
            .insert(event_key(at_ns), bytes)
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    /// Visits every raw event with `from_ns <= time < until_ns`, oldest
    /// first. The event borrows the stored bytes, so visiting allocates
    /// nothing for requests and attempts.
    pub fn scan(
        &self,
        from_ns: u64,
        until_ns: u64,
        mut visit: impl FnMut(Event<'_>),
    ) -> Result<u64, StoreError> {
        let mut seen = 0;
        for entry in self.events.range(range_keys(from_ns, until_ns)) {
            let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
            visit(decode_event(&key, &bytes)?);
            seen += 1;
        }
        Ok(seen)
    }

    /// Like [`Telemetry::scan`], split into `parts` consecutive time
    /// slices scanned on their own threads; each slice folds into its own
    /// `T` (made by `init`), and the folds are returned in time order.
    pub fn scan_parallel<T: Send>(
        &self,
        from_ns: u64,
        until_ns: u64,
        parts: usize,
        init: impl Fn() -> T + Sync,
        visit: impl Fn(&mut T, Event<'_>) + Sync,
    ) -> Result<Vec<T>, StoreError> {
        let bounds = self.split_points(from_ns, until_ns, parts.max(1))?;
        std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let (start, end) = (w[0], w[1]);
                    let (init, visit) = (&init, &visit);
                    scope.spawn(move || {
                        let mut state = init();
                        self.scan(start, end, |event| visit(&mut state, event))
                            .map(|_| state)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    /// Slice bounds for a parallel scan: even in time between the first
    /// and last event of the period (events are roughly evenly spread in
    /// time under steady traffic; an uneven split costs speed, not
    /// correctness).
    fn split_points(
        &self,
        from_ns: u64,
        until_ns: u64,
        parts: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let range = range_keys(from_ns, until_ns);
        let first = self
            .events
            .range(range)
            .next()
            .transpose()
            .map_err(|e| self.store.error(e))?;
        let last = self
            .events
            .range(range)
            .next_back()
            .transpose()
            .map_err(|e| self.store.error(e))?;
        let (Some((first, _)), Some((last, _))) = (first, last) else {
            return Ok(vec![from_ns, until_ns]);
        };
        let start = key_time(&first).unwrap_or(from_ns).max(from_ns);
        let end = key_time(&last)
            .unwrap_or(until_ns)
            .saturating_add(1)
            .min(until_ns);
        if parts == 1 || end <= start {
            return Ok(vec![from_ns, until_ns]);
        }
        let step = (end - start) / parts as u64;
        let mut bounds = vec![from_ns];
        bounds.extend((1..parts as u64).map(|i| start + step * i));
        bounds.push(until_ns);
        Ok(bounds)
    }

    /// Raw events stored.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every per-minute aggregate with `from_ns <= minute start < until_ns`.
    pub fn aggregates(
        &self,
        from_ns: u64,
        until_ns: u64,
    ) -> Result<Vec<(AggregateKey, Aggregate)>, StoreError> {
        let from = (from_ns.div_ceil(MINUTE_NS)).to_be_bytes();
        let until = (until_ns.div_ceil(MINUTE_NS)).to_be_bytes();
        let mut found = Vec::new();
        for entry in self.aggregates.range(from..until) {
            let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
            let parsed = AggregateKey::from_bytes(&key).ok_or_else(|| StoreError::Decode {
                tree: AGGREGATES,
                key: show_key(&key),
                detail: "expected a minute (u64), a subject byte and a name".into(),
            })?;
            found.push((parsed, codec::decode(AGGREGATES, &key, &bytes)?));
        }
        Ok(found)
    }

    /// Folds every raw event of the whole minutes before `cutoff_ns` into
    /// per-minute aggregates and deletes them. Returns how many events
    /// were folded.
    pub fn compact(&self, cutoff_ns: u64) -> Result<CompactStats, StoreError> {
        let cutoff = cutoff_ns - cutoff_ns % MINUTE_NS;
        let mut stats = CompactStats::default();
        let mut minute_start = match self.events.iter().next() {
            Some(entry) => {
                let (key, _) = entry.map_err(|e| self.store.error(e))?;
                let at = key_time(&key).unwrap_or(0);
                at - at % MINUTE_NS
            }
            None => return Ok(stats),
        };
        while minute_start < cutoff {
            let minute_end = minute_start + MINUTE_NS;
            let mut keys = Vec::new();
            let mut tallies = Tallies::default();
            for entry in self.events.range(range_keys(minute_start, minute_end)) {
                let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
                tallies.fold(&decode_event(&key, &bytes)?);
                keys.push(key);
            }
            let minute = minute_start / MINUTE_NS;
            let folded: Vec<(AggregateKey, &Aggregate)> = tallies
                .entries()
                .into_iter()
                .map(|(subject, name, aggregate)| {
                    let key = AggregateKey {
                        minute,
                        subject,
                        name: name.to_owned(),
                    };
                    (key, aggregate)
                })
                .collect();
            if !keys.is_empty() {
                self.commit_minute(&keys, &folded)?;
                stats.events += keys.len() as u64;
                stats.minutes += 1;
            }
            // The next minute that holds an event, not the next minute:
            // a store idle for a week is not scanned minute by minute.
            minute_start = match self.events.range(range_keys(minute_end, cutoff)).next() {
                Some(entry) => {
                    let (key, _) = entry.map_err(|e| self.store.error(e))?;
                    let at = key_time(&key).unwrap_or(cutoff);
                    at - at % MINUTE_NS
                }
                None => break,
            };
        }
        Ok(stats)
    }

    /// Merges one minute's aggregates and removes its raw events, in one
    /// transaction.
    fn commit_minute(
        &self,
        keys: &[sled::IVec],
        folded: &[(AggregateKey, &Aggregate)],
    ) -> Result<(), StoreError> {
        let encoded: Vec<(Vec<u8>, &Aggregate)> = folded
            .iter()
            .map(|(key, value)| (key.to_bytes(), *value))
            .collect();
        (&self.events, &self.aggregates)
            .transaction(|(events, aggregates)| {
                for (key, value) in &encoded {
                    let merged = match aggregates.get(key)? {
                        Some(bytes) => {
                            let mut stored: Aggregate = codec::decode(AGGREGATES, key, &bytes)
                                .map_err(ConflictableTransactionError::Abort)?;
                            stored.merge(value);
                            stored
                        }
                        None => (*value).clone(),
                    };
                    aggregates.insert(key.as_slice(), codec::encode(&merged))?;
                }
                for key in keys {
                    events.remove(key)?;
                }
                Ok(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => self.store.error(error),
                TransactionError::Abort(error) => error,
            })
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactStats {
    /// Raw events folded and deleted.
    pub events: u64,
    /// Minutes they belonged to.
    pub minutes: u64,
}

/// Compacts `store` every `every`, keeping `keep` of raw events, until the
/// task is aborted. A failed compaction is logged and retried next time.
pub fn spawn_compactor(
    store: Store,
    keep: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let store = store.clone();
            // sled blocks on I/O: keep it off the runtime's workers.
            let result = tokio::task::spawn_blocking(move || {
                let cutoff = super::health::now_ns().saturating_sub(keep.as_nanos() as u64);
                Telemetry::new(&store)?.compact(cutoff)
            })
            .await;
            match result {
                Ok(Ok(stats)) if stats.events > 0 => {
                    tracing::info!(
                        events = stats.events,
                        minutes = stats.minutes,
                        "telemetry compacted"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "telemetry compaction failed"),
                Err(error) => tracing::warn!(%error, "telemetry compaction task failed"),
            }
        }
    })
}

fn range_keys(from_ns: u64, until_ns: u64) -> (Bound<[u8; 12]>, Bound<[u8; 12]>) {
    let mut from = [0u8; 12];
    from[..8].copy_from_slice(&from_ns.to_be_bytes());
    let mut until = [0u8; 12];
    until[..8].copy_from_slice(&until_ns.to_be_bytes());
    (Bound::Included(from), Bound::Excluded(until))
}

fn ms_to_ns(ms: f64) -> u64 {
    (ms.max(0.0) * 1_000_000.0) as u64
}

fn ms_to_us(ms: f64) -> u64 {
    (ms.max(0.0) * 1_000.0).round() as u64
}

/// The events of a finished record: (time, encoded value), the request's
/// first.
fn encode_record(record: &JournalRecord, buffer: &mut Vec<u8>) -> Vec<(u64, Vec<u8>)> {
    let accepted_ns = record.accepted_ms.saturating_mul(1_000_000);
    let finished_ns = record
        .finished_ms
        .map_or(accepted_ns, |ms| ms.saturating_mul(1_000_000));
    let route = record.route.as_deref().unwrap_or("");
    let swarm = record.swarm.as_deref().unwrap_or("");
    let worker = record
        .chain
        .last()
        .map(String::as_str)
        .or(record.classification.as_ref().map(|c| c.worker.as_str()))
        .unwrap_or("");
    // A call Baton ended itself is no provider's failure: the time to a
    // fallback runs from the first one a provider made.
    let first_failure = record.attempts.iter().find(|a| {
        a.outcome != "ok"
            && !crate::provider::ProviderError::NEVER_SENT.contains(&a.outcome.as_str())
    });
    let first_failure_ns =
        first_failure.map(|a| accepted_ns + ms_to_ns(a.started_ms + a.latency_ms));
    let error_kind = match record.state {
        RequestState::Completed | RequestState::Accepted => "",
        RequestState::Failed => {
            if record
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("interrupted"))
            {
                "interrupted"
            } else {
                record
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.outcome != "ok")
                    .map_or("error", |a| a.outcome.as_str())
            }
        }
    };
    let mut events = Vec::with_capacity(1 + record.attempts.len());

    buffer.clear();
    buffer.extend_from_slice(&[VERSION, KIND_REQUEST]);
    buffer.extend_from_slice(record.trace_id.0.as_bytes());
    buffer.push(u8::from(record.state == RequestState::Failed));
    let flags = u8::from(record.fallback)
        | u8::from(record.degraded) << 1
        | u8::from(record.refusal) << 2
        | u8::from(record.needs_review) << 3
        | u8::from(record.resumed) << 4;
    buffer.push(flags);
    let latency_us = finished_ns.saturating_sub(accepted_ns) / 1_000;
    buffer.extend_from_slice(&latency_us.to_le_bytes());
    buffer.extend_from_slice(&first_failure_ns.unwrap_or(0).to_le_bytes());
    let input: u64 = record
        .attempts
        .iter()
        .map(|a| u64::from(a.input_tokens))
        .sum();
    let output: u64 = record
        .attempts
        .iter()
        .map(|a| u64::from(a.output_tokens))
        .sum();
    let cost: f64 = record.attempts.iter().map(|a| a.cost).sum();
    buffer.extend_from_slice(&input.to_le_bytes());
    buffer.extend_from_slice(&output.to_le_bytes());
    buffer.extend_from_slice(&cost.to_le_bytes());
    for text in [
        swarm,
        route,
        worker,
        record.served_by.as_deref().unwrap_or(""),
        error_kind,
        first_failure.map_or("", |a| a.provider.as_str()),
    ] {
        put_str(buffer, text);
    }
    events.push((finished_ns, buffer.clone()));

    for attempt in &record.attempts {
        buffer.clear();
        buffer.extend_from_slice(&[VERSION, KIND_ATTEMPT]);
        buffer.extend_from_slice(record.trace_id.0.as_bytes());
        buffer.extend_from_slice(&attempt.status.unwrap_or(0).to_le_bytes());
        buffer.push(u8::from(attempt.cancelled));
        buffer.extend_from_slice(&ms_to_us(attempt.latency_ms).to_le_bytes());
        buffer.extend_from_slice(&attempt.input_tokens.to_le_bytes());
        buffer.extend_from_slice(&attempt.output_tokens.to_le_bytes());
        buffer.extend_from_slice(&attempt.cost.to_le_bytes());
        for text in [
            attempt.provider.as_str(),
            route,
            attempt.outcome.as_str(),
            attempt.reason.as_str(),
            attempt.worker.as_deref().unwrap_or(worker),
            swarm,
        ] {
            put_str(buffer, text);
        }
        let at_ns = accepted_ns + ms_to_ns(attempt.started_ms + attempt.latency_ms);
        events.push((at_ns, buffer.clone()));
    }
    events
}

fn put_switch_names(bytes: &mut Vec<u8>, event: &SwitchEvent) {
    for text in [
        &event.swarm,
        &event.worker,
        &event.from,
        &event.to,
        &event.reason,
    ] {
        put_str(bytes, text);
    }
}

/// Strings longer than a u16 length are cut at a character boundary:
/// names in telemetry are identifiers, never that long.
fn put_str(bytes: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    bytes.extend_from_slice(&(end as u16).to_le_bytes());
    bytes.extend_from_slice(&text.as_bytes()[..end]);
}

/// Reads the binary layout; every shortfall is an error naming the key.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    key: &'a [u8],
}

impl<'a> Reader<'a> {
    fn error(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Decode {
            tree: TREE,
            key: show_key(self.key),
            detail: detail.into(),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let slice = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| self.error(format!("truncated at byte {}", self.at)))?;
        self.at += N;
        Ok(slice.try_into().expect("the slice has N bytes"))
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn f64(&mut self) -> Result<f64, StoreError> {
        Ok(f64::from_le_bytes(self.take()?))
    }

    fn trace_id(&mut self) -> Result<TraceId, StoreError> {
        Ok(TraceId(uuid::Uuid::from_bytes(self.take()?)))
    }

    fn str(&mut self) -> Result<&'a str, StoreError> {
        let len = usize::from(self.u16()?);
        let slice = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or_else(|| self.error(format!("a string runs past the end at byte {}", self.at)))?;
        self.at += len;
        std::str::from_utf8(slice)
            .map_err(|_| self.error(format!("a string before byte {} is not UTF-8", self.at)))
    }
}

/// Decodes one stored event (`key` gives its time).
pub fn decode_event<'a>(key: &'a [u8], bytes: &'a [u8]) -> Result<Event<'a>, StoreError> {
    let Some(at_ns) = key_time(key) else {
        return Err(StoreError::Decode {
            tree: TREE,
            key: show_key(key),
            detail: "the key is shorter than its 8-byte time".into(),
        });
    };
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Empty {
            tree: TREE,
            key: show_key(key),
        });
    };
    if version != VERSION {
        return Err(StoreError::UnknownVersion {
            tree: TREE,
            key: show_key(key),
            found: version,
            known: VERSION,
        });
    }
    let mut r = Reader {
        bytes: body,
        at: 0,
        key,
    };
    let event = match r.u8()? {
        KIND_REQUEST => {
            let trace_id = r.trace_id()?;
            let state = match r.u8()? {
                0 => RequestState::Completed,
                1 => RequestState::Failed,
                other => return Err(r.error(format!("request state {other} is not 0 or 1"))),
            };
            let flags = r.u8()?;
            let latency = Duration::from_micros(r.u64()?);
            let first_failure_ns = Some(r.u64()?).filter(|&ns| ns != 0);
            let input_tokens = r.u64()?;
            let output_tokens = r.u64()?;
            let cost = r.f64()?;
            Event::Request(RequestEvent {
                at_ns,
                trace_id,
                state,
                latency,
                first_failure_ns,
                input_tokens,
                output_tokens,
                cost,
                fallback: flags & 1 != 0,
                degraded: flags & 2 != 0,
                refusal: flags & 4 != 0,
                needs_review: flags & 8 != 0,
                resumed: flags & 16 != 0,
                swarm: r.str()?,
                route: r.str()?,
                worker: r.str()?,
                served_by: r.str()?,
                error_kind: r.str()?,
                first_failed_provider: r.str()?,
            })
        }
        KIND_ATTEMPT => {
            let trace_id = r.trace_id()?;
            let status = Some(r.u16()?).filter(|&s| s != 0);
            let cancelled = r.u8()? & 1 != 0;
            let latency = Duration::from_micros(r.u64()?);
            let input_tokens = r.u32()?;
            let output_tokens = r.u32()?;
            let cost = r.f64()?;
            Event::Attempt(AttemptEvent {
                at_ns,
                trace_id,
                status,
                cancelled,
                latency,
                input_tokens,
                output_tokens,
                cost,
                provider: r.str()?,
                route: r.str()?,
                outcome: r.str()?,
                reason: r.str()?,
                worker: r.str()?,
                swarm: r.str()?,
            })
        }
        KIND_SWITCH => {
            let unnecessary = r.u8()? & 1 != 0;
            Event::Switch(read_switch(&mut r, at_ns, unnecessary)?)
        }
        KIND_UNNECESSARY => {
            let switched_at = r.u64()?;
            Event::Unnecessary {
                at_ns,
                switch: read_switch(&mut r, switched_at, false)?,
            }
        }
        other => return Err(r.error(format!("event kind {other} is not one of 1 to 4"))),
    };
    Ok(event)
}

fn read_switch(
    r: &mut Reader<'_>,
    at_ns: u64,
    unnecessary: bool,
) -> Result<SwitchEvent, StoreError> {
    Ok(SwitchEvent {
        swarm: r.str()?.to_owned(),
        worker: r.str()?.to_owned(),
        from: r.str()?.to_owned(),
        to: r.str()?.to_owned(),
        reason: r.str()?.to_owned(),
        unnecessary,
        at_ns,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::StoreSettings;
    use crate::store::journal::AttemptEntry;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        (dir, store)
    }

    fn attempt(provider: &str, started_ms: f64, latency_ms: f64, outcome: &str) -> AttemptEntry {
        AttemptEntry {
            worker: None,
            provider: provider.into(),
            reason: "primary".into(),
            started_ms,
            latency_ms,
            outcome: outcome.into(),
            error: None,
            status: (outcome == "5xx").then_some(503),
            input_tokens: 10,
            output_tokens: 20,
            cost: 0.25,
            cancelled: false,
        }
    }

    fn failed_over(accepted_ms: u64) -> JournalRecord {
        let mut record = JournalRecord::accepted(TraceId::new(), "q");
        record.accepted_ms = accepted_ms;
        record.finished_ms = Some(accepted_ms + 900);
        record.state = RequestState::Completed;
        record.swarm = Some("support".into());
        record.route = Some("default".into());
        record.chain = vec!["billing".into()];
        record.attempts = vec![
            attempt("openai", 0.0, 300.0, "5xx"),
            attempt("anthropic", 310.0, 590.0, "ok"),
        ];
        record.served_by = Some("provider:anthropic".into());
        record.fallback = true;
        record
    }

    #[test]
    fn a_finished_request_writes_one_request_event_and_one_per_attempt() {
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        let record = failed_over(1_000_000);
        telemetry.record_finished(&record).unwrap();
        let mut events = Vec::new();
        telemetry
            .scan(0, u64::MAX, |e| events.push(format!("{e:?}")))
            .unwrap();
        assert_eq!(events.len(), 3, "{events:#?}");
        // Time order: the 5xx ended at +300 ms; the request and its
        // answering attempt both end at +900 ms, and the sequence keeps
        // the order they were written in (the request's first).
        let mut kinds = Vec::new();
        telemetry
            .scan(0, u64::MAX, |e| {
                kinds.push(match e {
                    Event::Request(r) => {
                        assert_eq!(r.trace_id, record.trace_id);
                        assert_eq!(r.latency, Duration::from_millis(900));
                        assert_eq!(r.route, "default");
                        assert_eq!(r.worker, "billing");
                        assert_eq!(r.served_by, "provider:anthropic");
                        assert!(r.fallback && !r.degraded && !r.refusal);
                        assert_eq!(r.first_failure_ns, Some(1_000_300_000_000));
                        assert_eq!(r.first_failed_provider, "openai");
                        assert_eq!((r.input_tokens, r.output_tokens), (20, 40));
                        assert_eq!(r.cost, 0.5);
                        "request".to_string()
                    }
                    Event::Attempt(a) => {
                        format!(
                            "{}:{}:{:?}:{}",
                            a.provider,
                            a.outcome,
                            a.status,
                            a.latency.as_millis()
                        )
                    }
                    other => panic!("unexpected {other:?}"),
                })
            })
            .unwrap();
        assert_eq!(
            kinds,
            [
                "openai:5xx:Some(503):300",
                "request",
                "anthropic:ok:None:590"
            ]
        );
    }

    #[test]
    fn an_accepted_record_writes_nothing() {
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        telemetry
            .record_finished(&JournalRecord::accepted(TraceId::new(), "q"))
            .unwrap();
        assert!(telemetry.is_empty());
    }

    #[test]
    fn a_switch_and_its_later_verdict_round_trip() {
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        let switch = SwitchEvent {
            swarm: "support".into(),
            worker: "billing".into(),
            from: "openai".into(),
            to: "anthropic".into(),
            reason: "failover".into(),
            unnecessary: false,
            at_ns: 5_000,
        };
        telemetry.record_switch(&switch).unwrap();
        telemetry.mark_unnecessary(&switch, 9_000).unwrap();
        let mut events = Vec::new();
        telemetry
            .scan(0, u64::MAX, |e| events.push(format!("{e:?}")))
            .unwrap();
        assert_eq!(
            events,
            [
                format!("{:?}", Event::Switch(switch.clone())),
                format!(
                    "{:?}",
                    Event::Unnecessary {
                        at_ns: 9_000,
                        switch: switch.clone()
                    }
                )
            ]
        );
    }

    #[test]
    fn scan_bounds_are_half_open_in_time() {
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        for at in [10u64, 20, 30] {
            let mut switch = SwitchEvent {
                swarm: "s".into(),
                worker: "w".into(),
                from: "a".into(),
                to: "b".into(),
                reason: "failover".into(),
                unnecessary: false,
                at_ns: at,
            };
            switch.at_ns = at;
            telemetry.record_switch(&switch).unwrap();
        }
        let mut times = Vec::new();
        telemetry.scan(10, 30, |e| times.push(e.at_ns())).unwrap();
        assert_eq!(times, [10, 20]);
    }

    #[test]
    fn an_unknown_version_or_a_truncated_event_is_an_error_not_a_panic() {
        let key = event_key(1);
        let error = decode_event(&key, &[9, 1]).unwrap_err();
        assert!(
            matches!(error, StoreError::UnknownVersion { found: 9, .. }),
            "{error}"
        );
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        telemetry.record_finished(&failed_over(1_000)).unwrap();
        let (key, bytes) = telemetry.events.iter().next().unwrap().unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_event(&key, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let error = decode_event(&key, &bytes[..20]).unwrap_err().to_string();
        assert!(
            error.contains("tree `telemetry`") && error.contains("truncated"),
            "{error}"
        );
    }

    /// A deterministic spread of requests: outcomes, latencies, costs
    /// that do not add up exactly in binary, switches and verdicts.
    fn scenario(telemetry: &Telemetry, base_ns: u64, count: u64) {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for i in 0..count {
            let finished_ms = base_ns / 1_000_000 + i * 2_100;
            let mut record = failed_over(finished_ms - 900);
            record.route = Some(["default", "fast", "support"][next(3) as usize].into());
            let outcomes = ["ok", "5xx", "timeout", "429", "contract"];
            let first = outcomes[next(5) as usize];
            let latency = 1.0 + next(5_000) as f64 / 7.0;
            record.attempts = vec![AttemptEntry {
                cost: next(1_000) as f64 * 0.000_1,
                ..attempt(["a", "b", "c"][next(3) as usize], 0.0, latency, first)
            }];
            if first != "ok" {
                record.attempts.push(attempt("c", latency, 0.3, "ok"));
            }
            record.fallback = first != "ok";
            record.degraded = next(10) == 0;
            record.refusal = next(20) == 0;
            if next(15) == 0 {
                record.state = RequestState::Failed;
                record.error = Some("every provider failed".into());
            }
            telemetry.record_finished(&record).unwrap();
            if i % 40 == 0 {
                let switch = SwitchEvent {
                    swarm: "support".into(),
                    worker: "billing".into(),
                    from: "a".into(),
                    to: "b".into(),
                    reason: "failover".into(),
                    unnecessary: i % 80 == 0,
                    at_ns: finished_ms * 1_000_000 + 1,
                };
                telemetry.record_switch(&switch).unwrap();
                telemetry
                    .mark_unnecessary(&switch, switch.at_ns + 5_000_000_000)
                    .unwrap();
            }
        }
    }

    fn per_minute_from_raw(
        telemetry: &Telemetry,
        from_ns: u64,
        until_ns: u64,
    ) -> BTreeMap<AggregateKey, Aggregate> {
        let mut minutes = BTreeMap::new();
        let mut start = from_ns;
        while start < until_ns {
            let mut tallies = Tallies::default();
            telemetry
                .scan(start, start + MINUTE_NS, |e| tallies.fold(&e))
                .unwrap();
            for (subject, name, aggregate) in tallies.entries() {
                let key = AggregateKey {
                    minute: start / MINUTE_NS,
                    subject,
                    name: name.to_owned(),
                };
                minutes.insert(key, aggregate.clone());
            }
            start += MINUTE_NS;
        }
        minutes
    }

    #[test]
    fn compaction_keeps_aggregates_equal_to_the_raw_events_they_replace() {
        use crate::telemetry::report::{ReportOptions, Sources, compute, tally};
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        let base = 28_333_334 * MINUTE_NS;
        let end = base + 10 * MINUTE_NS;
        scenario(&telemetry, base, 280);
        // Compaction folds whole minutes: a cutoff at 6.5 minutes folds 6.
        let cutoff = base + 6 * MINUTE_NS + MINUTE_NS / 2;
        let folded_until = base + 6 * MINUTE_NS;

        // The first requests' attempts end in the minute before `base`.
        let first = base - MINUTE_NS;
        let expected = per_minute_from_raw(&telemetry, first, folded_until);
        let raw_before = telemetry.scan(0, folded_until, |_| {}).unwrap();
        let left_expected = telemetry.scan(folded_until, u64::MAX, |_| {}).unwrap();
        let (whole_before, sources_before) = tally(&store, base, end, 2).unwrap();
        assert_eq!(sources_before.aggregates, 0);
        assert!(expected.len() > 6 * 3, "{} aggregates", expected.len());

        let stats = telemetry.compact(cutoff).unwrap();
        assert_eq!(stats.events, raw_before);
        assert_eq!(stats.minutes, 7);
        assert_eq!(telemetry.len() as u64, left_expected);
        assert_eq!(telemetry.scan(0, folded_until, |_| {}).unwrap(), 0);

        let stored: BTreeMap<_, _> = telemetry
            .aggregates(first, folded_until)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            stored.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (key, aggregate) in &expected {
            assert_eq!(&stored[key], aggregate, "{key:?}");
        }

        // A period spanning compacted and raw minutes adds up the same.
        let (whole_after, sources_after) = tally(&store, base, end, 2).unwrap();
        let in_period = expected
            .keys()
            .filter(|k| k.minute >= base / MINUTE_NS)
            .count();
        assert_eq!(sources_after.aggregates, in_period as u64);
        assert_eq!(whole_after, whole_before);
        let options = ReportOptions::new(base, end);
        assert_eq!(
            compute(&whole_after, &[], &options, Sources::default()),
            compute(&whole_before, &[], &options, Sources::default())
        );

        // Nothing left to fold: a second run is a no-op.
        assert_eq!(telemetry.compact(cutoff).unwrap(), CompactStats::default());

        // A late event for a folded minute joins that minute's aggregate.
        let mut late = failed_over(base / 1_000_000 + 2 * 60_000 + 5_000);
        late.route = Some("late".into());
        telemetry.record_finished(&late).unwrap();
        assert_eq!(telemetry.compact(cutoff).unwrap().events, 3);
        let late_key = AggregateKey {
            minute: base / MINUTE_NS + 2,
            subject: crate::telemetry::aggregate::Subject::Route,
            name: "late".into(),
        };
        let stored: BTreeMap<_, _> = telemetry
            .aggregates(base, end)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(stored[&late_key].count, 1);
        let openai = AggregateKey {
            minute: base / MINUTE_NS + 2,
            subject: crate::telemetry::aggregate::Subject::Provider,
            name: "openai".into(),
        };
        assert_eq!(stored[&openai].outcomes["5xx"], 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_compactor_folds_old_events_on_its_own() {
        let (_dir, store) = store();
        let telemetry = Telemetry::new(&store).unwrap();
        scenario(&telemetry, 28_333_334 * MINUTE_NS, 20);
        assert!(!telemetry.is_empty());
        let compactor = spawn_compactor(
            store.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(1),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !telemetry.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {} raw events",
                telemetry.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        compactor.abort();
        assert!(!telemetry.aggregates(0, u64::MAX).unwrap().is_empty());
    }
}
