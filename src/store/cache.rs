//! The durable tier of the response cache: fingerprint (32 bytes) →
//! [`CachedRecord`]. Expired entries are dropped by [`DurableCache::prune`]
//! when a process opens the store, so the tree stays bounded by the TTL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::journal::now_ms;
use super::{Store, StoreError};
use crate::provider::ChatResponse;
use crate::routing::cache::{DurableTier, Fingerprint};

pub const TREE: &str = "cache";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedRecord {
    pub stored_ms: u64,
    pub response: ChatResponse,
}

#[derive(Debug, Clone)]
pub struct DurableCache {
    store: Store,
    tree: sled::Tree,
}

impl DurableCache {
    pub fn new(store: &Store) -> Result<DurableCache, StoreError> {
        Ok(DurableCache {
            store: store.clone(),
            tree: store.tree(TREE)?,
        })
    }

    /// Removes entries older than `ttl`; returns how many.
    pub fn prune(&self, ttl: Duration) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut removed = 0;
        for entry in self.tree.iter() {
            let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
            let expired = match decode::<CachedRecord>(TREE, &key, &bytes) {
                Ok(record) => now.saturating_sub(record.stored_ms) > ttl.as_millis() as u64,
                // A record this Baton cannot read is useless to it.
                Err(_) => true,
            };
            if expired {
                self.tree.remove(&key).map_err(|e| self.store.error(e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl DurableTier for DurableCache {
    fn load(&self, key: &Fingerprint) -> Option<(ChatResponse, Duration)> {
        let bytes = match self.tree.get(key.0) {
            Ok(bytes) => bytes?,
            Err(error) => {
                tracing::error!(error = %self.store.error(error), "cannot read the response cache");
                return None;
            }
        };
        match decode::<CachedRecord>(TREE, &key.0, &bytes) {
            Ok(record) => Some((
                record.response,
                Duration::from_millis(now_ms().saturating_sub(record.stored_ms)),
            )),
            Err(error) => {
                tracing::warn!(%error, "skipping an unreadable cached response");
                None
            }
        }
    }

    fn save(&self, key: &Fingerprint, response: &ChatResponse) {
        let record = CachedRecord {
            stored_ms: now_ms(),
            response: response.clone(),
        };
        if let Err(error) = self.tree.insert(key.0, encode(&record)) {
            tracing::error!(error = %self.store.error(error), "cannot write the response cache");
        }
    }
}
