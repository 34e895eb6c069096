//! The `idempotency` tree: the first result of each (scope,
//! Idempotency-Key), so that a client retrying a request gets that result
//! again instead of a second upstream call.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::keys::now_ms;
use super::{Store, StoreError, decode, encode};

pub const IDEMPOTENCY: &str = "idempotency";

/// A finished request's answer as the client got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// SHA-256 of the request body, hex: the same key with another body
    /// is a client bug, not a retry.
    pub fingerprint: String,
    pub at_ms: u64,
}

/// The tree key of `idempotency_key` sent by `scope` (a virtual key's hash
/// in hex, or `anonymous`): scopes never see each other's results.
pub fn entry_key(scope: &str, idempotency_key: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(scope.as_bytes());
    hasher.update([0]);
    hasher.update(idempotency_key.as_bytes());
    hasher.finalize().into()
}

pub fn fingerprint(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Store,
    tree: sled::Tree,
    window: Duration,
}

impl Idempotency {
    pub fn new(store: &Store, window: Duration) -> Result<Idempotency, StoreError> {
        Ok(Idempotency {
            store: store.clone(),
            tree: store.tree(IDEMPOTENCY)?,
            window,
        })
    }

    fn expired(&self, result: &StoredResult) -> bool {
        now_ms().saturating_sub(result.at_ms) > self.window.as_millis() as u64
    }

    /// The stored result, unless it is older than the window.
    pub fn get(&self, key: &[u8; 32]) -> Result<Option<StoredResult>, StoreError> {
        let Some(bytes) = self.tree.get(key).map_err(|e| self.store.error(e))? else {
            return Ok(None);
        };
        let result: StoredResult = decode(IDEMPOTENCY, key, &bytes)?;
        Ok((!self.expired(&result)).then_some(result))
    }

    pub fn put(&self, key: &[u8; 32], result: &StoredResult) -> Result<(), StoreError> {
        self.tree
            .insert(key, encode(result))
            .map_err(|e| self.store.error(e))?;
        Ok(())
    }

    /// Removes results older than the window (and unreadable ones: a
    /// result nobody can replay is no use); how many went.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let mut gone = 0;
        for entry in &self.tree {
            let (key, value) = entry.map_err(|e| self.store.error(e))?;
            let stale = decode::<StoredResult>(IDEMPOTENCY, &key, &value)
                .map_or(true, |result| self.expired(&result));
            if stale {
                self.tree.remove(&key).map_err(|e| self.store.error(e))?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    fn result(at_ms: u64) -> StoredResult {
        StoredResult {
            status: 200,
            headers: vec![("x-baton-trace-id".into(), "t".into())],
            body: "{}".into(),
            fingerprint: fingerprint(b"{}"),
            at_ms,
        }
    }

    #[test]
    fn results_outside_the_window_are_absent_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        let results = Idempotency::new(&store, Duration::from_secs(60)).unwrap();
        let (fresh, old) = (entry_key("anonymous", "a"), entry_key("anonymous", "b"));
        assert_ne!(fresh, entry_key("other", "a"), "scopes are apart");
        results.put(&fresh, &result(now_ms())).unwrap();
        results.put(&old, &result(now_ms() - 120_000)).unwrap();
        assert_eq!(
            results.get(&fresh).unwrap(),
            Some(result(results.get(&fresh).unwrap().unwrap().at_ms))
        );
        assert_eq!(results.get(&old).unwrap(), None);
        assert_eq!(results.prune().unwrap(), 1);
        assert!(results.get(&fresh).unwrap().is_some());
    }
}
