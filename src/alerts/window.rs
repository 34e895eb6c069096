//! The sliding window the SLA and burn-rate rules read: per route and per
//! second of finishing, how many requests finished, how many completed
//! within the route's `sla_p95`, and how many failed.
//!
//! Kept up to date from the journal incrementally, so that a tick costs the
//! requests that ended since the last one rather than the whole window. The
//! journal is keyed by trace id, whose first 48 bits are the millisecond
//! the id was made, so [`Journal::since`] scans by the time a request
//! *started*, while the window counts requests by when they *ended*. A scan
//! therefore resumes from the oldest request it saw still open (it may end
//! later), or from a little before the scan when none was open (a trace id
//! is made a moment before its record is written). Records seen finished
//! past the resume point are remembered by trace id, so a second scan over
//! them does not count them twice; ids before the resume point are never
//! scanned again and are forgotten.
//!
//! On the first tick of a process the scan reaches back over the longest
//! rule window plus the longest route deadline: a request that started
//! that long before the window and ended inside it is the only kind missed.
//! Counts live in one-second buckets: a window's edge is exact to a second.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::store::StoreError;
use crate::store::journal::{Journal, RequestState};
use crate::swarm::RouteName;
use crate::trace::TraceId;

/// How far before a scan the next one starts when no request was open:
/// covers the moment between making a trace id and journaling it.
pub const RESCAN_MARGIN: Duration = Duration::from_secs(5);

/// Finished requests of one route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub finished: u64,
    /// Completed within the route's `sla_p95` (zero for a route without one).
    pub within: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.finished += other.finished;
        self.within += other.within;
        self.failed += other.failed;
    }
}

/// Per-route counts over the longest window any rule needs.
#[derive(Debug)]
pub struct Window {
    /// Each watched route's latency target; a route's index is its slot in
    /// every bucket.
    targets: Vec<Option<Duration>>,
    index: HashMap<String, usize>,
    keep: Duration,
    lookback: Duration,
    /// Second since the epoch at which requests finished → counts per route.
    buckets: BTreeMap<u64, Vec<Counts>>,
    /// Finished requests already counted whose ids the next scan may meet.
    counted: BTreeSet<TraceId>,
    resume_ms: Option<u64>,
}

/// The millisecond a trace id was made (UUID v7's first 48 bits).
fn id_ms(id: &TraceId) -> u64 {
    let b = id.0.as_bytes();
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The smallest trace id made at `ms`.
fn first_id_at(ms: u64) -> TraceId {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    TraceId(uuid::Uuid::from_bytes(bytes))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Window {
    /// Watches `routes` (with their `sla_p95`), keeping `keep` of history;
    /// `lookback` is how long before the window a request that ends in it
    /// may have started (the longest route deadline).
    pub fn new(
        routes: impl IntoIterator<Item = (RouteName, Option<Duration>)>,
        keep: Duration,
        lookback: Duration,
    ) -> Window {
        let mut targets = Vec::new();
        let mut index = HashMap::new();
        for (route, target) in routes {
            index.insert(route.0, targets.len());
            targets.push(target);
        }
        Window {
            targets,
            index,
            keep,
            lookback,
            buckets: BTreeMap::new(),
            counted: BTreeSet::new(),
            resume_ms: None,
        }
    }

    /// Reads the journal from where the last refresh left off, as of `now_ms`.
    pub fn refresh(&mut self, journal: &Journal, now_ms: u64) -> Result<(), StoreError> {
        let start_ms = now_ms.saturating_sub(millis(self.keep));
        let floor = start_ms.saturating_sub(millis(self.lookback));
        let from = self.resume_ms.map_or(floor, |resume| resume.max(floor));
        let mut oldest_open: Option<u64> = None;
        for record in journal.since(from) {
            let record = record?;
            let finished = match (record.state, record.finished_ms) {
                (RequestState::Accepted, _) | (_, None) => {
                    let made = id_ms(&record.trace_id);
                    oldest_open = Some(oldest_open.map_or(made, |o| o.min(made)));
                    continue;
                }
                (_, Some(finished)) => finished,
            };
            if finished < start_ms {
                continue;
            }
            let Some(&slot) = record.route.as_deref().and_then(|r| self.index.get(r)) else {
                continue;
            };
            if !self.counted.insert(record.trace_id) {
                continue;
            }
            let routes = self.targets.len();
            let counts = &mut self
                .buckets
                .entry(finished / 1000)
                .or_insert_with(|| vec![Counts::default(); routes])[slot];
            counts.finished += 1;
            match record.state {
                RequestState::Failed => counts.failed += 1,
                _ => {
                    let latency =
                        Duration::from_millis(finished.saturating_sub(record.accepted_ms));
                    if self.targets[slot].is_some_and(|target| latency <= target) {
                        counts.within += 1;
                    }
                }
            }
        }
        // Never move back: an open request older than `from` was not seen
        // by this scan, and the floor only rises.
        let resume = oldest_open
            .unwrap_or(u64::MAX)
            .min(now_ms.saturating_sub(millis(RESCAN_MARGIN)))
            .max(from);
        self.resume_ms = Some(resume);
        self.counted = self.counted.split_off(&first_id_at(resume));
        self.buckets = self.buckets.split_off(&(start_ms / 1000));
        Ok(())
    }

    /// The counts of `route` over the `window` up to `now_ms` (`None` for a
    /// route not watched).
    pub fn counts(&self, route: &str, window: Duration, now_ms: u64) -> Option<Counts> {
        let slot = *self.index.get(route)?;
        let first = now_ms.saturating_sub(millis(window)) / 1000;
        let mut total = Counts::default();
        for counts in self.buckets.range(first..).map(|(_, c)| c[slot]) {
            total += counts;
        }
        Some(total)
    }

    /// Ids remembered against double counting (for tests of the bound).
    pub fn remembered(&self) -> usize {
        self.counted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::journal::{Ending, JournalRecord, now_ms};
    use crate::store::{Store, StoreSettings};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            durability: crate::store::Durability::Relaxed,
            ..StoreSettings::default()
        };
        let store = Store::open(dir.path(), &settings).unwrap();
        (dir, store)
    }

    /// Journals a request of `route` that took `latency` and ends now.
    fn request(journal: &Journal, route: &str, latency: Duration, ok: bool) -> TraceId {
        let id = TraceId::new();
        let mut record = JournalRecord::accepted(id, "q");
        record.route = Some(route.into());
        record.accepted_ms -= millis(latency);
        journal.accept(&record).unwrap();
        finish(journal, id, ok);
        id
    }

    fn finish(journal: &Journal, id: TraceId, ok: bool) {
        let ending = if ok {
            Ending::Completed {
                chain: vec![],
                attempts: vec![],
                served_by: "provider:p".into(),
                fallback: false,
                degraded: false,
                refusal: false,
                needs_review: false,
                answer: "a".into(),
            }
        } else {
            Ending::Failed {
                chain: vec![],
                attempts: vec![],
                error: "all providers failed".into(),
            }
        };
        journal.finish(id, None, ending).unwrap();
    }

    fn window() -> Window {
        Window::new(
            [
                (RouteName("support".into()), Some(Duration::from_secs(3))),
                (RouteName("batch".into()), None),
            ],
            Duration::from_secs(60),
            Duration::from_secs(120),
        )
    }

    #[test]
    fn counts_split_by_route_latency_and_outcome() {
        let (_dir, store) = store();
        let journal = Journal::new(&store).unwrap();
        request(&journal, "support", Duration::from_millis(200), true);
        request(&journal, "support", Duration::from_secs(5), true);
        request(&journal, "support", Duration::from_millis(10), false);
        request(&journal, "batch", Duration::from_secs(30), true);
        request(&journal, "unwatched", Duration::ZERO, true);
        let mut window = window();
        let now = now_ms();
        window.refresh(&journal, now).unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            window.counts("support", minute, now),
            Some(Counts {
                finished: 3,
                within: 1,
                failed: 1
            })
        );
        assert_eq!(
            window.counts("batch", minute, now),
            Some(Counts {
                finished: 1,
                within: 0,
                failed: 0
            })
        );
        assert_eq!(window.counts("unwatched", minute, now), None);
    }

    #[test]
    fn a_second_refresh_counts_each_request_once_and_picks_up_late_endings() {
        let (_dir, store) = store();
        let journal = Journal::new(&store).unwrap();
        request(&journal, "support", Duration::ZERO, true);
        // Open across the first refresh; it ends before the second.
        let open = TraceId::new();
        let mut record = JournalRecord::accepted(open, "q");
        record.route = Some("support".into());
        journal.accept(&record).unwrap();

        let mut window = window();
        let minute = Duration::from_secs(60);
        let now = now_ms();
        window.refresh(&journal, now).unwrap();
        assert_eq!(window.counts("support", minute, now).unwrap().finished, 1);

        finish(&journal, open, false);
        request(&journal, "support", Duration::ZERO, true);
        let now = now_ms();
        window.refresh(&journal, now).unwrap();
        window.refresh(&journal, now).unwrap();
        let counts = window.counts("support", minute, now).unwrap();
        assert_eq!(counts.finished, 3, "{counts:?}");
        assert_eq!(counts.failed, 1, "{counts:?}");
    }

    #[test]
    fn requests_leave_the_window_as_it_slides_and_are_forgotten() {
        let (_dir, store) = store();
        let journal = Journal::new(&store).unwrap();
        for _ in 0..5 {
            request(&journal, "support", Duration::ZERO, true);
        }
        let mut window = window();
        let now = now_ms();
        window.refresh(&journal, now).unwrap();
        assert_eq!(
            window
                .counts("support", Duration::from_secs(60), now)
                .unwrap()
                .finished,
            5
        );
        // Two minutes on: out of every window, and out of memory.
        let later = now + 120_000;
        window.refresh(&journal, later).unwrap();
        assert_eq!(
            window.counts("support", Duration::from_secs(60), later),
            Some(Counts::default())
        );
        assert_eq!(window.remembered(), 0);
        assert!(window.buckets.is_empty());
    }

    #[test]
    fn a_shorter_rule_window_sees_only_its_own_span() {
        let (_dir, store) = store();
        let journal = Journal::new(&store).unwrap();
        request(&journal, "support", Duration::ZERO, true);
        let mut window = window();
        // Evaluated 30 s after the request ended: inside a minute, outside 10 s.
        let now = now_ms() + 30_000;
        window.refresh(&journal, now).unwrap();
        assert_eq!(
            window
                .counts("support", Duration::from_secs(60), now)
                .unwrap()
                .finished,
            1
        );
        assert_eq!(
            window
                .counts("support", Duration::from_secs(10), now)
                .unwrap()
                .finished,
            0
        );
    }
}
