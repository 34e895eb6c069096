//! The request journal: one record per trace id, from `accepted` to
//! `completed` or `failed`.
//!
//! `accepted` is written with the request's context (swarm or route,
//! session, question) and made durable before any provider is called; the
//! final state adds every attempt, who served the answer and the answer.
//! An `open` marker (tree `inflight`, trace id → empty) is kept beside each
//! record from acceptance to its end, so that start-up finds the requests
//! a crash interrupted without scanning the whole journal.
//!
//! Marker and record are two plain writes, ordered so that whatever prefix
//! of them a crash leaves is read correctly: sled keeps one log for every
//! tree and recovers a prefix of it. Accepting writes the marker, then the
//! record (a marker without a record is a request never acknowledged, and
//! [`Journal::open`] drops it); ending writes the final record, then
//! removes the marker (a marker beside an ended record is dropped too).
//! Not transactions: a sled transaction (like a batch) takes a lock that
//! excludes every other write of the process, and with two per request
//! durable journaling ran at a fifth of the throughput and wrote three and
//! a half times the bytes (`benches/store.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::{Store, StoreError};
use crate::trace::TraceId;

pub const TREE: &str = "journal";
pub const INFLIGHT: &str = "inflight";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Accepted,
    Completed,
    Failed,
}

/// What to do with a request a crash interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInterrupt {
    /// Mark it `failed: interrupted` (its caller is gone and was told nothing).
    #[default]
    Fail,
    /// Ask it again with its journaled context; the answer is journaled.
    Resume,
}

/// How the classifier chose the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationEntry {
    pub worker: String,
    pub score: f32,
    pub confidence: f32,
    pub decided_by: String,
}

/// One upstream attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptEntry {
    /// The worker whose step made the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub provider: String,
    /// `primary`, `failover`, `retry`, `hedge`, `spill_over`, `final_fallback`.
    pub reason: String,
    /// From the request's acceptance.
    pub started_ms: f64,
    pub latency_ms: f64,
    /// `ok`, or the failure's kind (`timeout`, `429`, `5xx`, `cut_stream`, `contract`, ...).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default)]
    pub input_tokens: u32,
    #[serde(default)]
    pub output_tokens: u32,
    #[serde(default)]
    pub cost: f64,
    #[serde(default)]
    pub cancelled: bool,
}

/// One request's whole life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub trace_id: TraceId,
    pub state: RequestState,
    pub accepted_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The request's text: with the session, the context a resume needs.
    pub question: String,
    #[serde(default)]
    pub on_interrupt: OnInterrupt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationEntry>,
    /// The workers that took part, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptEntry>,
    /// `provider:<id>`, `cache`, `extractive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    #[serde(default)]
    pub fallback: bool,
    #[serde(default)]
    pub degraded: bool,
    #[serde(default)]
    pub refusal: bool,
    #[serde(default)]
    pub needs_review: bool,
    /// Whether the request was asked again after a crash interrupted it.
    #[serde(default)]
    pub resumed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JournalRecord {
    /// A request accepted now.
    pub fn accepted(trace_id: TraceId, question: impl Into<String>) -> JournalRecord {
        JournalRecord {
            trace_id,
            state: RequestState::Accepted,
            accepted_ms: now_ms(),
            finished_ms: None,
            swarm: None,
            route: None,
            session: None,
            question: question.into(),
            on_interrupt: OnInterrupt::Fail,
            classification: None,
            chain: Vec::new(),
            attempts: Vec::new(),
            served_by: None,
            fallback: false,
            degraded: false,
            refusal: false,
            needs_review: false,
            resumed: false,
            answer: None,
            error: None,
        }
    }

    /// Time from acceptance to the end, when it has ended.
    pub fn latency(&self) -> Option<Duration> {
        self.finished_ms
            .map(|end| Duration::from_millis(end.saturating_sub(self.accepted_ms)))
    }
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Ending {
    Completed {
        chain: Vec<String>,
        attempts: Vec<AttemptEntry>,
        served_by: String,
        fallback: bool,
        degraded: bool,
        refusal: bool,
        needs_review: bool,
        answer: String,
    },
    Failed {
        chain: Vec<String>,
        attempts: Vec<AttemptEntry>,
        error: String,
    },
}

/// The journal of a store.
#[derive(Debug, Clone)]
pub struct Journal {
    store: Store,
    records: sled::Tree,
    inflight: sled::Tree,
}

impl Journal {
    pub fn new(store: &Store) -> Result<Journal, StoreError> {
        Ok(Journal {
            store: store.clone(),
            records: store.tree(TREE)?,
            inflight: store.tree(INFLIGHT)?,
        })
    }

    /// Writes `record` (state `accepted`) and its open marker. Not durable
    /// until [`Store::durable`] says so.
    pub fn accept(&self, record: &JournalRecord) -> Result<(), StoreError> {
        let key = record.trace_id.0.as_bytes();
        let value = encode(record);
        self.inflight
            .insert(key, &[][..])
            .map_err(|e| self.store.error(e))?;
        self.records
            .insert(key, value)
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    /// Ends the request `trace_id` and removes its open marker.
    pub fn finish(
        &self,
        trace_id: TraceId,
        classification: Option<ClassificationEntry>,
        ending: Ending,
    ) -> Result<JournalRecord, StoreError> {
        let record = self
            .get(trace_id)?
            .unwrap_or_else(|| JournalRecord::accepted(trace_id, String::new()));
        self.end(record, classification, ending)
    }

    /// Ends `record`, the one its caller accepted and still holds, without
    /// reading it back (a read and a decode per request on the gateway's
    /// hot path).
    pub fn end(
        &self,
        mut record: JournalRecord,
        classification: Option<ClassificationEntry>,
        ending: Ending,
    ) -> Result<JournalRecord, StoreError> {
        if classification.is_some() {
            record.classification = classification;
        }
        record.finished_ms = Some(now_ms());
        match ending {
            Ending::Completed {
                chain,
                attempts,
                served_by,
                fallback,
                degraded,
                refusal,
                needs_review,
                answer,
            } => {
                record.state = RequestState::Completed;
                record.chain = chain;
                record.attempts = attempts;
                record.served_by = Some(served_by);
                record.fallback = fallback;
                record.degraded = degraded;
                record.refusal = refusal;
                record.needs_review = needs_review;
                record.answer = Some(answer);
            }
            Ending::Failed {
                chain,
                attempts,
                error,
            } => {
                record.state = RequestState::Failed;
                record.chain = chain;
                record.attempts = attempts;
                record.error = Some(error);
            }
        }
        self.put_finished(&record)?;
        Ok(record)
    }

    fn put_finished(&self, record: &JournalRecord) -> Result<(), StoreError> {
        let key = record.trace_id.0.as_bytes();
        let value = encode(record);
        self.records
            .insert(key, value)
            .map_err(|e| self.store.error(e))?;
        self.inflight
            .remove(key)
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    pub fn get(&self, trace_id: TraceId) -> Result<Option<JournalRecord>, StoreError> {
        let key = trace_id.0.as_bytes();
        self.records
            .get(key)
            .map_err(|e| self.store.error(e))?
            .map(|bytes| decode(TREE, key, &bytes))
            .transpose()
    }

    /// The requests still open: accepted and not ended. Right after
    /// start-up, before new requests come in, these are the ones a crash
    /// interrupted.
    pub fn open(&self) -> Result<Vec<JournalRecord>, StoreError> {
        let mut open = Vec::new();
        for entry in self.inflight.iter() {
            let (key, _) = entry.map_err(|e| self.store.error(e))?;
            let record = match self.records.get(&key).map_err(|e| self.store.error(e))? {
                Some(bytes) => Some(decode::<JournalRecord>(TREE, &key, &bytes)?),
                None => None,
            };
            match record {
                Some(record) if record.state == RequestState::Accepted => open.push(record),
                // A marker without its record (the crash came between the
                // two writes of acceptance: never acknowledged), or beside
                // a record that ended (between the two writes of the end).
                _ => {
                    self.inflight
                        .remove(&key)
                        .map_err(|e| self.store.error(e))?;
                }
            }
        }
        Ok(open)
    }

    /// Marks an interrupted request `failed: interrupted`.
    pub fn fail_interrupted(&self, record: &JournalRecord) -> Result<JournalRecord, StoreError> {
        let mut record = record.clone();
        record.state = RequestState::Failed;
        record.finished_ms = Some(now_ms());
        record.error = Some("interrupted: the process stopped before the request ended".into());
        self.put_finished(&record)?;
        Ok(record)
    }

    /// Every record, oldest first (trace ids are time-ordered).
    pub fn iter(&self) -> impl Iterator<Item = Result<JournalRecord, StoreError>> + '_ {
        self.records.iter().map(move |entry| {
            let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
            decode(TREE, &key, &bytes)
        })
    }

    /// Records accepted at or after `since_ms`.
    pub fn since(
        &self,
        since_ms: u64,
    ) -> impl Iterator<Item = Result<JournalRecord, StoreError>> + '_ {
        // A v7 UUID starts with its 48-bit millisecond timestamp.
        let mut start = [0u8; 16];
        start[..6].copy_from_slice(&since_ms.to_be_bytes()[2..]);
        self.records.range(start..).map(move |entry| {
            let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
            decode(TREE, &key, &bytes)
        })
    }

    /// Finds a record by a trace id, or by a fragment of one: its start or
    /// its end. A v7 id starts with its timestamp, so ids of one minute
    /// share their first eight digits; the end is the random part, and the
    /// handier one to quote.
    pub fn find(&self, id: &str) -> Result<Vec<JournalRecord>, StoreError> {
        if let Ok(uuid) = uuid::Uuid::parse_str(id) {
            return Ok(self.get(TraceId(uuid))?.into_iter().collect());
        }
        let wanted = id.to_ascii_lowercase();
        let mut found = Vec::new();
        for record in self.iter() {
            let record = record?;
            let full = record.trace_id.to_string();
            if full.starts_with(&wanted) || full.ends_with(&wanted) {
                found.push(record);
                if found.len() > 10 {
                    break;
                }
            }
        }
        Ok(found)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    fn ended(journal: &Journal, record: &JournalRecord) -> JournalRecord {
        journal
            .finish(
                record.trace_id,
                None,
                Ending::Failed {
                    chain: Vec::new(),
                    attempts: Vec::new(),
                    error: "every provider failed".into(),
                },
            )
            .unwrap()
    }

    #[test]
    fn open_finds_accepted_requests_and_drops_what_a_crash_between_two_writes_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        let journal = Journal::new(&store).unwrap();

        let open = JournalRecord::accepted(TraceId::new(), "still running");
        journal.accept(&open).unwrap();
        let done = JournalRecord::accepted(TraceId::new(), "answered");
        journal.accept(&done).unwrap();
        ended(&journal, &done);

        // A crash between the marker and the record of an acceptance.
        let orphan = TraceId::new();
        journal
            .inflight
            .insert(orphan.0.as_bytes(), &[][..])
            .unwrap();
        // A crash between the final record and the marker's removal.
        let late = JournalRecord::accepted(TraceId::new(), "ended, marker left");
        journal.accept(&late).unwrap();
        let mut final_record = ended(&journal, &late);
        final_record.state = RequestState::Completed;
        journal
            .inflight
            .insert(late.trace_id.0.as_bytes(), &[][..])
            .unwrap();

        let found: Vec<TraceId> = journal.open().unwrap().iter().map(|r| r.trace_id).collect();
        assert_eq!(found, [open.trace_id]);
        // The stale markers are gone; the open one stays.
        assert_eq!(journal.inflight.len(), 1);
        assert_eq!(
            journal.get(late.trace_id).unwrap().unwrap().state,
            RequestState::Failed
        );
        assert!(journal.get(orphan).unwrap().is_none());
    }
}
