//! The review queue: answers a person should look at before they are
//! trusted.
//!
//! A high-stakes agent whose answer came through a fallback path (another
//! provider than its route's first choice, the cache, or the extractive
//! surrogate) marks it `needs_review`; the command line adds every such
//! answer here, and a reviewer approves or rejects it with a note.
//!
//! # Storage
//! One JSON Lines log, `reviews.jsonl` in the state directory. Each line is
//! an event: an item was added, or a decision was taken on one. The queue's
//! state is the replay of the log, read afresh on every query, so that
//! `baton review` in one process sees what `baton run` in another appended
//! a moment ago, without either locking the other out. Lines are only ever
//! appended: two processes appending at once cannot overwrite each other's
//! lines, because the file is opened with `O_APPEND` and each line goes out
//! in one `write`; within one process a mutex serialises the writers as
//! well, so concurrent `add`s never interleave their bytes. If two
//! reviewers decide the same item at once, both lines land and the first in
//! the log wins; later ones are ignored on replay.
//!
//! A crash in the middle of a write can leave a line cut short: the next
//! append starts on a fresh line, and replay skips (with a warning) a line
//! that ends before its JSON does, since a write cut short never became an
//! event. Any other line that does not parse is corruption and is reported
//! with its file and line.
//!
//! This is the whole storage: a later issue moves the queue into the sled
//! store (its `reviews` tree). Callers see only this module's API.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::actor::Answer;
use crate::routing::router::{Outcome, ServedBy};
use crate::trace::TraceId;

/// The log's file name inside the state directory.
pub const LOG_FILE: &str = "reviews.jsonl";

/// Why the queue could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("cannot {action} review log {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: corrupt review log line: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no review `{id}` in {} (see `baton review list --all`)", path.display())]
    UnknownId { id: String, path: PathBuf },
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

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
enum Event {
    Added {
        id: ReviewId,
        trace_id: TraceId,
        swarm: String,
        worker: String,
        session: Option<String>,
        question: String,
        answer: String,
        served_by: String,
        degraded: bool,
        at: Timestamp,
    },
    Decided {
        id: ReviewId,
        status: ReviewStatus,
        note: Option<String>,
        at: Timestamp,
    },
}

/// The review queue of one state directory.
#[derive(Debug)]
pub struct ReviewQueue {
    path: PathBuf,
    /// Serialises this process's appends (see the module docs).
    append: Mutex<()>,
}

impl ReviewQueue {
    /// The queue kept in `state_dir`. Nothing is read or created until the
    /// queue is used; the directory is created by the first `add`.
    pub fn open(state_dir: &Path) -> ReviewQueue {
        ReviewQueue {
            path: state_dir.join(LOG_FILE),
            append: Mutex::new(()),
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
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
        self.append(&Event::Added {
            id: item.id.clone(),
            trace_id: item.trace_id,
            swarm: item.swarm.clone(),
            worker: item.worker.clone(),
            session: item.session.clone(),
            question: item.question.clone(),
            answer: item.answer.clone(),
            served_by: item.served_by.clone(),
            degraded: item.degraded,
            at: item.at,
        })?;
        Ok(item)
    }

    /// Every item, oldest first.
    pub fn list(&self) -> Result<Vec<ReviewItem>, ReviewError> {
        self.replay()
    }

    /// The items still waiting for a decision, oldest first.
    pub fn pending(&self) -> Result<Vec<ReviewItem>, ReviewError> {
        Ok(self
            .replay()?
            .into_iter()
            .filter(|item| item.status == ReviewStatus::Pending)
            .collect())
    }

    /// One item by id.
    pub fn get(&self, id: &str) -> Result<ReviewItem, ReviewError> {
        self.replay()?
            .into_iter()
            .find(|item| item.id.0 == id)
            .ok_or_else(|| ReviewError::UnknownId {
                id: id.to_owned(),
                path: self.path.clone(),
            })
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
        let mut item = self.get(id)?;
        if item.status != ReviewStatus::Pending {
            return Err(ReviewError::AlreadyDecided {
                id: id.to_owned(),
                status: item.status,
            });
        }
        let decision = Decision {
            status,
            note,
            at: Timestamp::now(),
        };
        self.append(&Event::Decided {
            id: item.id.clone(),
            status,
            note: decision.note.clone(),
            at: decision.at,
        })?;
        item.status = status;
        item.decision = Some(decision);
        Ok(item)
    }

    fn append(&self, event: &Event) -> Result<(), ReviewError> {
        let io = |action| {
            let path = self.path.clone();
            move |source| ReviewError::Io {
                action,
                path,
                source,
            }
        };
        let mut line = serde_json::to_string(event).expect("review events serialise: plain data");
        line.push('\n');
        // A poisoned lock guards no data, only the order of writes.
        let _guard = self.append.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(io("open"))?;
        if ends_torn(&mut file).map_err(io("read"))? {
            line.insert(0, '\n');
        }
        // One write of the whole line: with O_APPEND the kernel places it
        // at the end as a unit, whatever another process appends meanwhile.
        file.write_all(line.as_bytes()).map_err(io("append to"))?;
        Ok(())
    }

    fn replay(&self) -> Result<Vec<ReviewItem>, ReviewError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ReviewError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut items: Vec<ReviewItem> = Vec::new();
        let mut index: HashMap<ReviewId, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = match serde_json::from_str(line) {
                Ok(event) => event,
                // JSON that ends early is a prefix of a line whose write
                // was cut short by a crash; it never took effect.
                Err(error) if error.is_eof() => {
                    tracing::warn!(path = %self.path.display(), line = i + 1, "skipping a torn last line in the review log");
                    continue;
                }
                Err(error) => {
                    return Err(ReviewError::Corrupt {
                        path: self.path.clone(),
                        line: i + 1,
                        message: error.to_string(),
                    });
                }
            };
            match event {
                Event::Added {
                    id,
                    trace_id,
                    swarm,
                    worker,
                    session,
                    question,
                    answer,
                    served_by,
                    degraded,
                    at,
                } => {
                    if index.contains_key(&id) {
                        return Err(ReviewError::Corrupt {
                            path: self.path.clone(),
                            line: i + 1,
                            message: format!("review `{id}` added twice"),
                        });
                    }
                    index.insert(id.clone(), items.len());
                    items.push(ReviewItem {
                        id,
                        trace_id,
                        swarm,
                        worker,
                        session,
                        question,
                        answer,
                        served_by,
                        degraded,
                        at,
                        status: ReviewStatus::Pending,
                        decision: None,
                    });
                }
                Event::Decided {
                    id,
                    status,
                    note,
                    at,
                } => {
                    let Some(&at_index) = index.get(&id) else {
                        return Err(ReviewError::Corrupt {
                            path: self.path.clone(),
                            line: i + 1,
                            message: format!("a decision on `{id}`, which was never added"),
                        });
                    };
                    let item = &mut items[at_index];
                    // The first decision wins (see the module docs).
                    if item.status == ReviewStatus::Pending && status != ReviewStatus::Pending {
                        item.status = status;
                        item.decision = Some(Decision { status, note, at });
                    }
                }
            }
        }
        Ok(items)
    }
}

/// Whether the file's last byte is not a newline (a torn last line).
fn ends_torn(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
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

    #[test]
    fn decisions_are_seen_by_a_second_queue_on_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ReviewQueue::open(dir.path());
        let a = writer.add(new_review("refund please")).unwrap();
        let b = writer.add(new_review("money back")).unwrap();
        let reader = ReviewQueue::open(dir.path());
        assert_eq!(reader.pending().unwrap().len(), 2);
        let approved = reader
            .approve(&a.id.0, Some("policy quoted right".into()))
            .unwrap();
        assert_eq!(approved.status, ReviewStatus::Approved);
        writer.reject(&b.id.0, None).unwrap();
        let all = writer.list().unwrap();
        assert_eq!(all[0].status, ReviewStatus::Approved);
        assert_eq!(
            all[0].decision.as_ref().unwrap().note.as_deref(),
            Some("policy quoted right")
        );
        assert_eq!(all[1].status, ReviewStatus::Rejected);
        assert!(writer.pending().unwrap().is_empty());
        assert!(matches!(
            writer.approve(&b.id.0, None),
            Err(ReviewError::AlreadyDecided { .. })
        ));
        assert!(matches!(
            writer.approve("rv-nope", None),
            Err(ReviewError::UnknownId { .. })
        ));
    }

    #[test]
    fn concurrent_adds_never_interleave_lines() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(ReviewQueue::open(dir.path()));
        // Long answers make a torn or interleaved write visible as a line
        // that does not parse.
        let long = "word ".repeat(4000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let queue = queue.clone();
                let long = long.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let mut review = new_review(&format!("thread {t} item {i}"));
                        review.answer = long.clone();
                        queue.add(review).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let items = queue.list().unwrap();
        assert_eq!(items.len(), 200);
        assert!(items.iter().all(|item| item.answer == long));
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_skipped_and_the_next_append_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReviewQueue::open(dir.path());
        queue.add(new_review("first")).unwrap();
        let mut file = OpenOptions::new().append(true).open(queue.path()).unwrap();
        file.write_all(b"{\"event\":\"added\",\"id\":\"rv-")
            .unwrap();
        assert_eq!(queue.list().unwrap().len(), 1);
        queue.add(new_review("second")).unwrap();
        let items = queue.list().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].question, "second");
    }

    #[test]
    fn a_corrupt_line_is_reported_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReviewQueue::open(dir.path());
        queue.add(new_review("first")).unwrap();
        let mut file = OpenOptions::new().append(true).open(queue.path()).unwrap();
        file.write_all(b"{\"event\":\"exploded\"}\n").unwrap();
        let error = queue.list().unwrap_err();
        assert!(
            matches!(error, ReviewError::Corrupt { line: 2, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("reviews.jsonl:2:"), "{error}");
    }
}
