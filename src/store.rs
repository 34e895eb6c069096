//! The durable state of a Baton process, in one sled database.
//!
//! No other module touches sled: everything goes through [`Store`] and the
//! typed handles it hands out ([`journal::Journal`], [`sessions::Sessions`],
//! ...). The database lives in `<state dir>/state` (the state directory is
//! `--state DIR`, else `$BATON_STATE`, else `./.baton`).
//!
//! # Trees and encodings
//!
//! Every value starts with one byte, the version of its encoding; the rest
//! is the value in that version's format. A reader that meets a version it
//! does not know fails with [`StoreError::UnknownVersion`] naming the tree
//! and key, so an older Baton never misreads a newer store. Version 1 of
//! every value is JSON (readable with any tool, and the formats are ours to
//! extend with optional fields) unless the tree says otherwise.
//!
//! | tree          | key                                           | value (v1)                               |
//! |---------------|-----------------------------------------------|------------------------------------------|
//! | `journal`     | trace id, 16 bytes (UUID v7: time-ordered)    | [`journal::JournalRecord`]               |
//! | `inflight`    | trace id of a request not yet ended           | empty (see [`journal`])                  |
//! | `sessions`    | session id, UTF-8                             | [`sessions::SessionRecord`]              |
//! | `telemetry`   | event time ns since the epoch, u64 BE, then a u32 BE sequence | a request, attempt or switch event: v1 is a compact binary layout, not JSON ([`telemetry`]) |
//! | `aggregates`  | minute since the epoch, u64 BE, `p` (provider) or `r` (route), the name | [`crate::telemetry::aggregate::Aggregate`] |
//! | `policies`    | version number, u64 BE                        | [`policy::PolicyVersion`] (files + hash + author/message + diff) |
//! | `breakers`    | provider id, UTF-8                            | [`health::BreakerRecord`]                |
//! | `health`      | provider id, 0x00, time ns u64 BE             | [`health::HealthRecord`]                 |
//! | `cache`       | request fingerprint, 32 bytes                 | a cached response                        |
//! | `reviews`     | review id, UTF-8                              | a review item                            |
//! | `graph`       | policy version, u64 BE                        | [`crate::graph::Snapshot`] ([`graph`])   |
//! | `keys`        | SHA-256 of the virtual key, 32 bytes          | [`keys::KeyRecord`]: scope, limits, spent |
//! | `idempotency` | SHA-256 of scope and Idempotency-Key          | [`idempotency::StoredResult`]            |
//! | `knowledge`   | swarm name, UTF-8                             | the swarm's index                        |
//! | `meta`        | UTF-8 name                                    | store-wide settings: `format`; `active`, the active policy version (u64) |
//! | `meta`        | `alert/<rule>/<subject>`, UTF-8               | an open alert episode ([`alerts::EpisodeRecord`]) |
//!
//! # Durability
//!
//! A write is only acknowledged once a flush covers it: the journal's
//! group commit ([`commit::GroupCommit`]) batches every write waiting for
//! durability into one `flush_async`, so many concurrent writers share one
//! fsync. With `[store] durability = "relaxed"`, writes are acknowledged at
//! once and sled flushes every `flush_every`: up to that much acknowledged
//! work can be lost in a crash.

pub mod alerts;
pub mod cache;
pub mod codec;
pub mod commit;
pub mod graph;
pub mod health;
pub mod idempotency;
pub mod journal;
pub mod keys;
pub mod policy;
pub mod sessions;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigDuration;

pub use self::codec::{decode, encode};
pub use self::commit::GroupCommit;

/// The database directory inside a state directory.
pub const DATABASE_DIR: &str = "state";

/// The admin socket inside a state directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// Every tree the store keeps, opened up front so that a listing of the
/// database shows its whole layout.
pub const TREES: [&str; 15] = [
    "journal",
    "inflight",
    "sessions",
    "telemetry",
    "aggregates",
    "policies",
    "breakers",
    "health",
    "cache",
    "reviews",
    "graph",
    "keys",
    "idempotency",
    "knowledge",
    "meta",
];

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database (sled allows one).
    #[error(
        "the store {} is in use by another Baton process (use its admin socket, or stop it)",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("the store {}: sled reports corruption: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("the store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store: {0}")]
    Sled(String),
    #[error(
        "tree `{tree}`, key {key}: encoding version {found} is not one this Baton reads (it reads {known}); was the store written by a newer Baton?"
    )]
    UnknownVersion {
        tree: &'static str,
        key: String,
        found: u8,
        known: u8,
    },
    #[error("tree `{tree}`, key {key}: cannot decode the value: {detail}")]
    Decode {
        tree: &'static str,
        key: String,
        detail: String,
    },
    #[error("tree `{tree}`, key {key}: the value is empty")]
    Empty { tree: &'static str, key: String },
    /// The database is gone (the process is stopping).
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    fn from_sled(path: &Path, error: sled::Error) -> StoreError {
        match error {
            sled::Error::Io(source) if source.to_string().contains("could not acquire lock") => {
                StoreError::Locked(path.to_owned())
            }
            sled::Error::Io(source) => StoreError::Io {
                path: path.to_owned(),
                source,
            },
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!("at {at:?}"),
            },
            other => StoreError::Sled(other.to_string()),
        }
    }
}

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Acknowledged after a flush (group commit) covers it.
    #[default]
    Flush,
    /// Acknowledged at once; sled flushes every `flush_every`.
    Relaxed,
}

/// `[store]` in baton.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub durability: Durability,
    /// How often sled flushes on its own (the loss window when relaxed).
    pub flush_every: ConfigDuration,
    /// sled's page cache, in MiB (sled's own default is 1 GiB). A bound,
    /// not an allocation. 256: `baton report` over a day of raw telemetry
    /// (a million events) fits, and runs in about a second; at 64 or 128
    /// the scan thrashes the cache and takes 2–3 s (`benches/store.rs`).
    pub cache_mib: u64,
    /// Raw telemetry older than this is folded into per-minute aggregates
    /// by long-running processes.
    pub keep: ConfigDuration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            durability: Durability::Flush,
            flush_every: ConfigDuration(Duration::from_millis(500)),
            cache_mib: 256,
            keep: ConfigDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// The open store of one process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    settings: StoreSettings,
    commit: GroupCommit,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if need be) the store of `state_dir`. Fails with
    /// [`StoreError::Locked`] when another process holds it.
    pub fn open(state_dir: &Path, settings: &StoreSettings) -> Result<Store, StoreError> {
        let path = state_dir.join(DATABASE_DIR);
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        restrict_to_owner(state_dir);
        let flush_every = settings
            .flush_every
            .0
            .as_millis()
            .clamp(1, u128::from(u64::MAX)) as u64;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(settings.cache_mib.max(1) * 1024 * 1024)
            .flush_every_ms(Some(flush_every))
            .open()
            .map_err(|e| StoreError::from_sled(&path, e))?;
        for tree in TREES {
            db.open_tree(tree)
                .map_err(|e| StoreError::from_sled(&path, e))?;
        }
        let commit = GroupCommit::start(db.clone(), settings.durability);
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                db,
                settings: settings.clone(),
                commit,
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    /// One of [`TREES`].
    pub fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        debug_assert!(TREES.contains(&name), "unknown tree {name}");
        self.inner.db.open_tree(name).map_err(|e| self.error(e))
    }

    /// Waits until every write made before the call is durable (at once
    /// when durability is relaxed).
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.inner.commit.durable().await
    }

    /// Flushes now and waits, whatever the durability setting: for
    /// commands that exit right after writing.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map(drop).map_err(|e| self.error(e))
    }

    pub(crate) fn error(&self, error: sled::Error) -> StoreError {
        StoreError::from_sled(&self.inner.path, error)
    }

    /// Verifies sled's checksum over every tree: corruption shows here.
    pub fn checksum(&self) -> Result<u32, StoreError> {
        self.inner.db.checksum().map_err(|e| self.error(e))
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(|e| self.error(e))
    }
}

/// The state directory holds conversations and the admin socket: only its
/// owner may read it.
fn restrict_to_owner(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(error) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), %error, "cannot make the state directory owner-only");
        }
    }
}
