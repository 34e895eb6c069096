//! The `keys` tree: virtual keys of the gateway. A key is stored only as
//! its SHA-256, so neither the store nor a copy of it can be used to call
//! the gateway; the plaintext is shown once, when the key is made.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Store, StoreError, decode, encode};

pub const KEYS: &str = "keys";

/// What a virtual key may do. `None` scopes and limits mean "no limit".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    /// The first characters of the key, to tell keys apart in listings.
    pub prefix: String,
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    #[serde(default)]
    pub swarms: Option<Vec<String>>,
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub budget: Option<f64>,
    #[serde(default)]
    pub spent: f64,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub admin: bool,
}

/// The store's name for a key.
pub type KeyHash = [u8; 32];

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new key: `bk-` and 43 base62 characters (about 256 bits).
pub fn generate() -> String {
    let mut rng = rand::rng();
    let mut key = String::from("bk-");
    for _ in 0..43 {
        key.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    key
}

/// How much of a key a listing shows: enough to recognise, far too little
/// to guess the rest.
pub fn prefix_of(key: &str) -> String {
    key.chars().take(8).collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone)]
pub struct Keys {
    store: Store,
    tree: sled::Tree,
}

impl Keys {
    pub fn new(store: &Store) -> Result<Keys, StoreError> {
        Ok(Keys {
            store: store.clone(),
            tree: store.tree(KEYS)?,
        })
    }

    /// The tree itself, for a holder that follows its changes.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn insert(&self, hash: &KeyHash, record: &KeyRecord) -> Result<(), StoreError> {
        self.tree
            .insert(hash, encode(record))
            .map_err(|e| self.store.error(e))?;
        Ok(())
    }

    pub fn get(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        match self.tree.get(hash).map_err(|e| self.store.error(e))? {
            Some(bytes) => decode(KEYS, hash, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn all(&self) -> Result<Vec<(KeyHash, KeyRecord)>, StoreError> {
        let mut keys: Vec<(KeyHash, KeyRecord)> = Vec::new();
        for entry in &self.tree {
            let (key, value) = entry.map_err(|e| self.store.error(e))?;
            let Ok(hash) = <KeyHash>::try_from(key.as_ref()) else {
                continue;
            };
            keys.push((hash, decode(KEYS, &key, &value)?));
        }
        keys.sort_by_key(|(_, record)| record.created_ms);
        Ok(keys)
    }

    /// Adds to a key's spending. A read-modify-write in one step, so that
    /// a revocation made meanwhile (through the admin socket) is kept.
    pub fn add_spent(&self, hash: &KeyHash, amount: f64) -> Result<Option<KeyRecord>, StoreError> {
        self.modify(hash, |record| record.spent += amount)
    }

    /// Revokes every live key named `who` or whose prefix is `who`; the
    /// names of those revoked.
    pub fn revoke(&self, who: &str) -> Result<Vec<String>, StoreError> {
        let mut revoked = Vec::new();
        for (hash, record) in self.all()? {
            if !record.revoked && (record.name == who || record.prefix == who) {
                self.modify(&hash, |record| record.revoked = true)?;
                revoked.push(record.name);
            }
        }
        Ok(revoked)
    }

    fn modify(
        &self,
        hash: &KeyHash,
        change: impl Fn(&mut KeyRecord),
    ) -> Result<Option<KeyRecord>, StoreError> {
        let mut failure = None;
        let updated = self
            .tree
            .update_and_fetch(hash, |old| {
                let old = old?;
                match decode::<KeyRecord>(KEYS, hash, old) {
                    Ok(mut record) => {
                        change(&mut record);
                        Some(encode(&record))
                    }
                    Err(error) => {
                        failure = Some(error);
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(|e| self.store.error(e))?;
        if let Some(error) = failure {
            return Err(error);
        }
        match updated {
            Some(bytes) => decode(KEYS, hash, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    fn record(name: &str, key: &str) -> KeyRecord {
        KeyRecord {
            name: name.to_owned(),
            prefix: prefix_of(key),
            routes: Some(vec!["main".to_owned()]),
            swarms: None,
            rpm: Some(2),
            tpm: None,
            budget: Some(1.5),
            spent: 0.0,
            created_ms: now_ms(),
            revoked: false,
            admin: false,
        }
    }

    #[test]
    fn keys_are_random_and_stored_by_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        let keys = Keys::new(&store).unwrap();
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("bk-") && a.len() == 46, "{a}");
        keys.insert(&hash(&a), &record("ci", &a)).unwrap();
        assert_eq!(keys.get(&hash(&a)).unwrap().unwrap().name, "ci");
        assert_eq!(keys.get(&hash(&b)).unwrap(), None);
        for (key, value) in keys.tree().iter().map(Result::unwrap) {
            assert!(!String::from_utf8_lossy(&key).contains(&a));
            assert!(!String::from_utf8_lossy(&value).contains(&a));
        }
    }

    #[test]
    fn spending_adds_up_and_revocation_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreSettings::default()).unwrap();
        let keys = Keys::new(&store).unwrap();
        let key = generate();
        keys.insert(&hash(&key), &record("ci", &key)).unwrap();
        keys.add_spent(&hash(&key), 0.25).unwrap();
        assert_eq!(keys.revoke(&prefix_of(&key)).unwrap(), ["ci"]);
        keys.add_spent(&hash(&key), 0.5).unwrap();
        let back = keys.get(&hash(&key)).unwrap().unwrap();
        assert!(back.revoked);
        assert!((back.spent - 0.75).abs() < 1e-12);
        assert!(keys.revoke("ci").unwrap().is_empty(), "already revoked");
        assert_eq!(keys.add_spent(&hash("bk-nope"), 1.0).unwrap(), None);
    }
}
