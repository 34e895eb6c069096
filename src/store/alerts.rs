//! Open alert episodes, so that a restart in the middle of an outage
//! neither fires the alert a second time nor forgets to resolve it.
//!
//! Kept in the `meta` tree: key `alert/<rule>/<subject>` (UTF-8; rule
//! names cannot contain `/`, so the key is unambiguous), value an
//! [`EpisodeRecord`]. A key exists exactly while its episode is open: the
//! fire writes it, the resolve removes it.

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::{Store, StoreError};

pub const TREE: &str = "meta";
/// The key prefix of every episode in `meta`.
pub const PREFIX: &str = "alert/";

/// One open episode: a rule's subject went bad and has not recovered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub rule: String,
    /// The rule's kind when it fired (`provider_down`, ...).
    pub kind: String,
    /// The provider or route that went bad.
    pub subject: String,
    /// When it went bad, ms since the epoch.
    pub started_ms: u64,
    /// The measure that fired it, when the kind has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// The episodes of a store.
#[derive(Debug, Clone)]
pub struct AlertEpisodes {
    store: Store,
    meta: sled::Tree,
}

fn key(rule: &str, subject: &str) -> String {
    format!("{PREFIX}{rule}/{subject}")
}

impl AlertEpisodes {
    pub fn new(store: &Store) -> Result<AlertEpisodes, StoreError> {
        Ok(AlertEpisodes {
            store: store.clone(),
            meta: store.tree(TREE)?,
        })
    }

    /// Records an open episode (replacing one of the same rule and subject).
    /// Durable once [`Store::durable`] says so.
    pub fn open(&self, record: &EpisodeRecord) -> Result<(), StoreError> {
        self.meta
            .insert(key(&record.rule, &record.subject), encode(record))
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    /// Ends the episode of `rule` and `subject`; false when none was open.
    pub fn close(&self, rule: &str, subject: &str) -> Result<bool, StoreError> {
        self.meta
            .remove(key(rule, subject))
            .map(|old| old.is_some())
            .map_err(|e| self.store.error(e))
    }

    /// Every open episode, ordered by rule then subject.
    pub fn all(&self) -> Result<Vec<EpisodeRecord>, StoreError> {
        let mut all = self
            .meta
            .scan_prefix(PREFIX)
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
                decode(TREE, &key, &bytes)
            })
            .collect::<Result<Vec<EpisodeRecord>, StoreError>>()?;
        // Key order puts `a-b/x` before `a/x` (`-` sorts before `/`).
        all.sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    fn record(rule: &str, subject: &str) -> EpisodeRecord {
        EpisodeRecord {
            rule: rule.into(),
            kind: "provider_down".into(),
            subject: subject.into(),
            started_ms: 1_700_000_000_000,
            value: None,
            threshold: None,
        }
    }

    #[test]
    fn episodes_survive_a_reopen_and_close_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
            let episodes = AlertEpisodes::new(&store).unwrap();
            episodes.open(&record("down", "b/with-slash")).unwrap();
            episodes.open(&record("down", "a")).unwrap();
            episodes.open(&record("down-2", "a")).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        let episodes = AlertEpisodes::new(&store).unwrap();
        let all = episodes.all().unwrap();
        let keys: Vec<(&str, &str)> = all
            .iter()
            .map(|e| (e.rule.as_str(), e.subject.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("down", "a"), ("down", "b/with-slash"), ("down-2", "a")]
        );
        assert!(episodes.close("down", "a").unwrap());
        assert!(!episodes.close("down", "a").unwrap());
        assert_eq!(episodes.all().unwrap().len(), 2);
    }

    #[test]
    fn other_meta_keys_are_not_episodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        store
            .tree(TREE)
            .unwrap()
            .insert("active", encode(&3u64))
            .unwrap();
        let episodes = AlertEpisodes::new(&store).unwrap();
        assert!(episodes.all().unwrap().is_empty());
    }
}
