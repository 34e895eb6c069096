//! The review queue: answers a person should look at before they are
//! trusted.
//!
//! A high-stakes agent whose answer came through a fallback path (another
//! provider than its route's first choice, the cache, or the extractive
//! surrogate) marks it `needs_review`; the command line adds every such
//! answer here, and a reviewer approves or rejects it with a note.
//!
//! # Storage
//! The `reviews` tree of the store: review id → [`ReviewItem`] (versioned
//! JSON, see `store`). A decision is a compare-and-swap on the item, so of
//! two reviewers deciding the same item at once exactly one wins and the
//! other is told it is already decided. The process that holds the store
//! (`run`, `chat`, `serve`) queues answers; `baton review` reaches the
//! queue directly, or through that process's admin socket.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::actor::Answer;
use crate::routing::router::{Outcome, ServedBy};
use crate::store::codec::{decode, encode};
use crate::store::{Store, StoreError};
use crate::trace::TraceId;

/// The store tree of the queue.
pub const TREE: &str = "reviews";

/// Why the queue could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no review `{id}` (see `baton review list --all`)")]
    UnknownId { id: String },
    #[error("review `{id}` is already {status}; a decision is final")]
    AlreadyDecided { id: String, status: ReviewStatus },
}

/// The identity of one queued answer: `rv-` and 10 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReviewId(pub String);

impl ReviewId {
    /// A fresh random id. Forty random bits: two processes adding to the
    /// same log cannot coordinate, and at these sizes a clash is a
    /// one-in-a-hundred-million event per pair of items.
    fn new() -> ReviewId {
        let bits: u64 = rand::random::<u64>() & 0xff_ffff_ffff;
        ReviewId(format!("rv-{bits:010x}"))
    }
}

impl fmt::Display for ReviewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Rejected,
}

impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
        })
    }
}

/// A wall-clock instant, written as RFC 3339 UTC with milliseconds
/// (`2025-03-01T09:30:00.250Z`) so the log reads well by eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Instants before 1970 do not occur in this log; show them as the epoch.
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rest = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60,
            since.subsec_millis()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_timestamp(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected a UTC time such as 2025-03-01T09:30:00.250Z, found `{text}`"
            ))
        })
    }
}

/// Reads what [`Timestamp`]'s `Display` writes (the milliseconds optional).
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<u32>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (hms, millis) = match time.split_once('.') {
        Some((hms, fraction)) if fraction.len() == 3 => (hms, fraction.parse::<u64>().ok()?),
        Some(_) => return None,
        None => (time, 0),
    };
    let mut hms = hms.splitn(3, ':').map(str::parse::<u64>);
    let (hour, minute, second) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(i64::from(year), month, day)).ok()?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp(
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
    ))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A reviewer's decision on an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub status: ReviewStatus,
    pub note: Option<String>,
    pub at: Timestamp,
}

/// An answer waiting for (or past) review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub id: ReviewId,
    pub trace_id: TraceId,
    pub swarm: String,
    /// The worker agent that answered.
    pub worker: String,
    pub session: Option<String>,
    pub question: String,
    pub answer: String,
    /// Who served the answer: a provider id, `cache` or `extractive`.
    pub served_by: String,
    /// Served by a final fallback (cache or extractive surrogate).
    pub degraded: bool,
    /// When it was queued.
    pub at: Timestamp,
    pub status: ReviewStatus,
    /// The decision, once there is one.
    pub decision: Option<Decision>,
}

/// What is queued: an answer and where it came from.
#[derive(Debug, Clone)]
pub struct NewReview {
    pub trace_id: TraceId,
    pub swarm: String,
    pub worker: String,
    pub session: Option<String>,
    pub question: String,
    pub answer: String,
    pub served_by: String,
    pub degraded: bool,
}

impl NewReview {
    /// The review of `answer`, given to `question` by `swarm`.
    pub fn from_answer(swarm: &str, question: &str, answer: &Answer) -> NewReview {
        NewReview {
            trace_id: answer.outcome.trace_id,
            swarm: swarm.to_owned(),
            worker: answer.classification.worker.0.clone(),
            session: answer.session.clone(),
            question: question.to_owned(),
            answer: answer.outcome.response.text.clone(),
            served_by: served_by_label(&answer.outcome),
            degraded: answer.outcome.degraded,
        }
    }
}

/// A short, stable name for who served an outcome.
pub fn served_by_label(outcome: &Outcome) -> String {
    match &outcome.served_by {
        ServedBy::Provider { id } => id.0.clone(),
        ServedBy::Cache { .. } => "cache".to_owned(),
        ServedBy::Extractive => "extractive".to_owned(),
    }
}

/// The review queue of a store.
#[derive(Debug, Clone)]
pub struct ReviewQueue {
    store: Store,
    tree: sled::Tree,
}

impl ReviewQueue {
    pub fn new(store: &Store) -> Result<ReviewQueue, ReviewError> {
        Ok(ReviewQueue {
            store: store.clone(),
            tree: store.tree(TREE)?,
        })
    }

    /// Queues an answer as pending.
    pub fn add(&self, new: NewReview) -> Result<ReviewItem, ReviewError> {
        let item = ReviewItem {
            id: ReviewId::new(),
            trace_id: new.trace_id,
            swarm: new.swarm,
            worker: new.worker,
            session: new.session,
            question: new.question,
            answer: new.answer,
            served_by: new.served_by,
            degraded: new.degraded,
            at: Timestamp::now(),
            status: ReviewStatus::Pending,
            decision: None,
        };
        self.tree
            .insert(item.id.0.as_bytes(), encode(&item))
            .map_err(|e| self.store.error(e))?;
        Ok(item)
    }

    /// Every item, oldest first.
    pub fn list(&self) -> Result<Vec<ReviewItem>, ReviewError> {
        let mut items = self
            .tree
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
                Ok(decode::<ReviewItem>(TREE, &key, &bytes)?)
            })
            .collect::<Result<Vec<_>, ReviewError>>()?;
        items.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        Ok(items)
    }

    /// The items still waiting for a decision, oldest first.
    pub fn pending(&self) -> Result<Vec<ReviewItem>, ReviewError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|item| item.status == ReviewStatus::Pending)
            .collect())
    }

    /// One item by id.
    pub fn get(&self, id: &str) -> Result<ReviewItem, ReviewError> {
        self.load(id).map(|(item, _)| item)
    }

    fn load(&self, id: &str) -> Result<(ReviewItem, sled::IVec), ReviewError> {
        let bytes = self
            .tree
            .get(id.as_bytes())
            .map_err(|e| self.store.error(e))?
            .ok_or_else(|| ReviewError::UnknownId { id: id.to_owned() })?;
        Ok((decode(TREE, id.as_bytes(), &bytes)?, bytes))
    }

    /// Approves a pending item.
    pub fn approve(&self, id: &str, note: Option<String>) -> Result<ReviewItem, ReviewError> {
        self.decide(id, ReviewStatus::Approved, note)
    }

    /// Rejects a pending item.
    pub fn reject(&self, id: &str, note: Option<String>) -> Result<ReviewItem, ReviewError> {
        self.decide(id, ReviewStatus::Rejected, note)
    }

    fn decide(
        &self,
        id: &str,
        status: ReviewStatus,
        note: Option<String>,
    ) -> Result<ReviewItem, ReviewError> {
        let (mut item, old) = self.load(id)?;
        if item.status != ReviewStatus::Pending {
            return Err(ReviewError::AlreadyDecided {
                id: id.to_owned(),
                status: item.status,
            });
        }
        item.status = status;
        item.decision = Some(Decision {
            status,
            note,
            at: Timestamp::now(),
        });
        let swapped = self
            .tree
            .compare_and_swap(id.as_bytes(), Some(old), Some(encode(&item)))
            .map_err(|e| self.store.error(e))?;
        if swapped.is_err() {
            // Someone decided it between our read and our write.
            let now = self.get(id)?;
            return Err(ReviewError::AlreadyDecided {
                id: id.to_owned(),
                status: now.status,
            });
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn new_review(question: &str) -> NewReview {
        NewReview {
            trace_id: TraceId::new(),
            swarm: "support-bot".into(),
            worker: "refunds".into(),
            session: None,
            question: question.into(),
            answer: "Yearly plans can be refunded within 14 days.".into(),
            served_by: "secondary".into(),
            degraded: false,
        }
    }

    #[test]
    fn timestamps_round_trip_through_their_text() {
        for secs in [0u64, 951_782_400, 1_709_251_199, 4_102_444_800] {
            let t = Timestamp(UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250));
            let text = t.to_string();
            assert_eq!(parse_timestamp(&text), Some(t), "{text}");
        }
        assert_eq!(
            Timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(parse_timestamp("2000-13-01T00:00:00Z"), None);
    }

    fn store(dir: &std::path::Path) -> Store {
        Store::open(dir, &crate::store::StoreSettings::default()).unwrap()
    }

    #[test]
    fn decisions_are_final_and_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let queue = ReviewQueue::new(&store(dir.path())).unwrap();
            let a = queue.add(new_review("refund please")).unwrap();
            let b = queue.add(new_review("money back")).unwrap();
            assert_eq!(queue.pending().unwrap().len(), 2);
            let approved = queue
                .approve(&a.id.0, Some("policy quoted right".into()))
                .unwrap();
            assert_eq!(approved.status, ReviewStatus::Approved);
            (a, b)
        };
        let queue = ReviewQueue::new(&store(dir.path())).unwrap();
        queue.reject(&b.id.0, None).unwrap();
        let all = queue.list().unwrap();
        assert_eq!(all.len(), 2);
        let a = all.iter().find(|item| item.id == a.id).unwrap();
        assert_eq!(a.status, ReviewStatus::Approved);
        assert_eq!(
            a.decision.as_ref().unwrap().note.as_deref(),
            Some("policy quoted right")
        );
        assert_eq!(queue.get(&b.id.0).unwrap().status, ReviewStatus::Rejected);
        assert!(queue.pending().unwrap().is_empty());
        assert!(matches!(
            queue.approve(&b.id.0, None),
            Err(ReviewError::AlreadyDecided { .. })
        ));
        assert!(matches!(
            queue.approve("rv-nope", None),
            Err(ReviewError::UnknownId { .. })
        ));
    }

    #[test]
    fn of_two_racing_decisions_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(ReviewQueue::new(&store(dir.path())).unwrap());
        for round in 0..20 {
            let item = queue.add(new_review(&format!("race {round}"))).unwrap();
            let deciders: Vec<_> = (0..4)
                .map(|i| {
                    let queue = queue.clone();
                    let id = item.id.0.clone();
                    std::thread::spawn(move || {
                        if i % 2 == 0 {
                            queue.approve(&id, None).is_ok()
                        } else {
                            queue.reject(&id, None).is_ok()
                        }
                    })
                })
                .collect();
            let wins = deciders
                .into_iter()
                .map(|d| d.join().unwrap_or(false))
                .filter(|&won| won)
                .count();
            assert_eq!(wins, 1, "round {round}");
        }
    }

    #[test]
    fn concurrent_adds_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(ReviewQueue::new(&store(dir.path())).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        queue
                            .add(new_review(&format!("thread {t} item {i}")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(queue.list().unwrap().len(), 200);
    }
}
