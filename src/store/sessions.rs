//! Conversation history, so that a conversation survives a restart.
//!
//! Key: the swarm's name, a zero byte, the session id (sessions of two
//! swarms never mix). The history is written after every answered turn,
//! in the same flush as the turn's journal record.

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::journal::now_ms;
use super::{Store, StoreError};
use crate::provider::Message;

pub const TREE: &str = "sessions";

/// One session's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub messages: Vec<Message>,
    pub updated_ms: u64,
}

/// The sessions of a store.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    tree: sled::Tree,
}

fn key(swarm: &str, session: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(swarm.len() + 1 + session.len());
    key.extend_from_slice(swarm.as_bytes());
    key.push(0);
    key.extend_from_slice(session.as_bytes());
    key
}

impl Sessions {
    pub fn new(store: &Store) -> Result<Sessions, StoreError> {
        Ok(Sessions {
            store: store.clone(),
            tree: store.tree(TREE)?,
        })
    }

    pub fn load(&self, swarm: &str, session: &str) -> Result<Option<Vec<Message>>, StoreError> {
        let key = key(swarm, session);
        self.tree
            .get(&key)
            .map_err(|e| self.store.error(e))?
            .map(|bytes| decode::<SessionRecord>(TREE, &key, &bytes).map(|r| r.messages))
            .transpose()
    }

    pub fn save(&self, swarm: &str, session: &str, messages: &[Message]) -> Result<(), StoreError> {
        let record = SessionRecord {
            messages: messages.to_vec(),
            updated_ms: now_ms(),
        };
        self.tree
            .insert(key(swarm, session), encode(&record))
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    pub fn remove(&self, swarm: &str, session: &str) -> Result<(), StoreError> {
        self.tree
            .remove(key(swarm, session))
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    /// The session ids of `swarm`.
    pub fn list(&self, swarm: &str) -> Result<Vec<String>, StoreError> {
        let prefix = key(swarm, "");
        self.tree
            .scan_prefix(&prefix)
            .keys()
            .map(|key| {
                let key = key.map_err(|e| self.store.error(e))?;
                Ok(String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            })
            .collect()
    }
}
