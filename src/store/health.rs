//! Breaker state and health history, so that a restart does not forget
//! that a provider is down.
//!
//! `breakers`: provider id → the breaker's last state ([`BreakerRecord`]).
//! `health`: provider id, a zero byte, the change's time (ns since the
//! epoch, u64 big-endian) → [`HealthRecord`]; a provider's history is one
//! prefix scan, in time order.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::{Store, StoreError};

pub const BREAKERS: &str = "breakers";
pub const HEALTH: &str = "health";

/// A breaker as it was last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerRecord {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub ejections: u32,
    /// While open: when it admits a trial, in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until_ms: Option<u64>,
    pub at_ms: u64,
}

/// One change of a provider's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub provider: String,
    /// `healthy`, `degraded`, `down`.
    pub from: String,
    pub to: String,
    pub reason: String,
    pub at_ns: u64,
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The breaker and health trees of a store.
#[derive(Debug, Clone)]
pub struct HealthLog {
    store: Store,
    breakers: sled::Tree,
    health: sled::Tree,
}

fn health_key(provider: &str, at_ns: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(provider.len() + 9);
    key.extend_from_slice(provider.as_bytes());
    key.push(0);
    key.extend_from_slice(&at_ns.to_be_bytes());
    key
}

impl HealthLog {
    pub fn new(store: &Store) -> Result<HealthLog, StoreError> {
        Ok(HealthLog {
            store: store.clone(),
            breakers: store.tree(BREAKERS)?,
            health: store.tree(HEALTH)?,
        })
    }

    pub fn save_breaker(&self, provider: &str, record: &BreakerRecord) -> Result<(), StoreError> {
        self.breakers
            .insert(provider.as_bytes(), encode(record))
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    pub fn breaker(&self, provider: &str) -> Result<Option<BreakerRecord>, StoreError> {
        self.breakers
            .get(provider.as_bytes())
            .map_err(|e| self.store.error(e))?
            .map(|bytes| decode(BREAKERS, provider.as_bytes(), &bytes))
            .transpose()
    }

    pub fn record_change(&self, record: &HealthRecord) -> Result<(), StoreError> {
        self.health
            .insert(health_key(&record.provider, record.at_ns), encode(record))
            .map(drop)
            .map_err(|e| self.store.error(e))
    }

    /// Every recorded change, provider by provider, each in time order.
    pub fn history(&self) -> Result<Vec<HealthRecord>, StoreError> {
        self.health
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
                decode(HEALTH, &key, &bytes)
            })
            .collect()
    }

    /// One provider's changes in time order.
    pub fn history_of(&self, provider: &str) -> Result<Vec<HealthRecord>, StoreError> {
        let mut prefix = provider.as_bytes().to_vec();
        prefix.push(0);
        self.health
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
                decode(HEALTH, &key, &bytes)
            })
            .collect()
    }
}
