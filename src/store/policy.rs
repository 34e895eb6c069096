//! Versioned routing policies: baton.toml and the swarm files it serves,
//! stored as numbered versions, one of them active.
//!
//! A version holds the whole text of every file it covers (relative path →
//! content), so any version can be served again as it was: a rollback
//! restores prompts and rules along with the routes. Versions are never
//! changed or removed; applying new files and rolling back both append a
//! version and make it the active one, so the history reads as what
//! served, in order. The active version is therefore always the newest.
//!
//! Storage: tree `policies`, key the version number (u64 big-endian, so the
//! tree iterates in version order), value a [`PolicyVersion`] (versioned
//! JSON, see [`super::codec`]); the active number is `active` in the `meta`
//! tree (versioned JSON number). The new version and the `active` pointer
//! are written in one transaction, and a change is flushed before it is
//! reported, so a policy change that was acknowledged survives a crash.
//!
//! Applying files identical to the active version's is refused with
//! [`PolicyError::Unchanged`] ("nothing changed since vN"): a version that
//! changes nothing would only blur the history. The command line reports it
//! and exits 0, since the files asked for are the ones serving.
//!
//! The engine never reads a version from the tree: [`materialize`] writes
//! it once as ordinary files under `<dir>/v<N>/`, and the loaders that read
//! a baton.toml and swarm directories from disk read it there unchanged.
//! [`watch_active`] tells a running process that the active version moved.

pub mod diff;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec::{decode, encode};
use super::journal::now_ms;
use super::{Store, StoreError};

pub const TREE: &str = "policies";
pub const META: &str = "meta";
/// The key of the active version's number in the `meta` tree.
pub const ACTIVE: &[u8] = b"active";

/// The config's path inside every version.
pub const CONFIG_FILE: &str = "baton.toml";

/// Where a version's swarm directories are inside it (`agents/<swarm>/`).
pub const AGENTS_DIR: &str = "agents";

/// A file in a materialized version's directory that records which
/// content it holds; written last, so a directory without it is unfinished.
pub const STAMP: &str = ".baton-policy";

/// One stored version of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub number: u64,
    /// SHA-256 of the files in canonical form ([`hash_files`]), hex.
    pub hash: String,
    pub created_ms: u64,
    pub author: String,
    pub message: String,
    /// Relative path (`/`-separated) → content.
    pub files: BTreeMap<String, String>,
    /// The version that was active when this one was made.
    pub parent: Option<u64>,
    /// For a rollback: the version whose files this one restores.
    pub rollback_of: Option<u64>,
    /// Unified diff from the parent's files (from nothing for the first).
    pub diff: String,
}

impl PolicyVersion {
    /// The hash's first twelve digits, as history shows it.
    pub fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }
}

/// Why a policy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("nothing changed since v{active}: the files are those of the active version")]
    Unchanged { active: u64 },
    #[error("no policy version {number} ({})", match .latest {
        Some(latest) => format!("the store has v1 to v{latest}"),
        None => "no policy has been applied to this store".to_owned(),
    })]
    NotFound { number: u64, latest: Option<u64> },
    #[error("policy file `{path}`: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("a policy needs `{CONFIG_FILE}`; the files given do not include it")]
    NoConfig,
    #[error("cannot write the policy files to {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The policy versions of a store.
#[derive(Debug, Clone)]
pub struct Policies {
    store: Store,
    versions: sled::Tree,
    meta: sled::Tree,
}

fn key(number: u64) -> [u8; 8] {
    number.to_be_bytes()
}

/// Why a transaction writing a version gave up.
enum Abort {
    /// Another writer made a version meanwhile: start again from it.
    Moved,
    Decode(StoreError),
}

impl Policies {
    pub fn new(store: &Store) -> Result<Policies, StoreError> {
        Ok(Policies {
            store: store.clone(),
            versions: store.tree(TREE)?,
            meta: store.tree(META)?,
        })
    }

    /// The active version's number, if any policy was ever applied.
    pub fn active_number(&self) -> Result<Option<u64>, StoreError> {
        self.meta
            .get(ACTIVE)
            .map_err(|e| self.store.error(e))?
            .map(|bytes| decode(META, ACTIVE, &bytes))
            .transpose()
    }

    pub fn active(&self) -> Result<Option<PolicyVersion>, PolicyError> {
        match self.active_number()? {
            Some(number) => Ok(Some(self.get(number)?)),
            None => Ok(None),
        }
    }

    /// Version `number`; [`PolicyError::NotFound`] when there is none.
    pub fn get(&self, number: u64) -> Result<PolicyVersion, PolicyError> {
        let key = key(number);
        match self.versions.get(key).map_err(|e| self.store.error(e))? {
            Some(bytes) => Ok(decode(TREE, &key, &bytes)?),
            None => Err(PolicyError::NotFound {
                number,
                latest: self.latest()?,
            }),
        }
    }

    /// The newest version's number.
    pub fn latest(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .versions
            .last()
            .map_err(|e| self.store.error(e))?
            .and_then(|(key, _)| <[u8; 8]>::try_from(key.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Every version, oldest first.
    pub fn history(&self) -> Result<Vec<PolicyVersion>, PolicyError> {
        self.versions
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| self.store.error(e))?;
                Ok(decode(TREE, &key, &bytes)?)
            })
            .collect()
    }

    /// The unified diff from version `a` to version `b`.
    pub fn diff(&self, a: u64, b: u64) -> Result<String, PolicyError> {
        let (old, new) = (self.get(a)?, self.get(b)?);
        Ok(diff::unified(
            &old.files,
            &new.files,
            Some(&format!("v{a}")),
            Some(&format!("v{b}")),
        ))
    }

    /// Stores `files` as a new version and makes it active. The caller has
    /// validated them (a policy that does not load must not become active).
    pub fn apply(
        &self,
        files: BTreeMap<String, String>,
        author: &str,
        message: &str,
    ) -> Result<PolicyVersion, PolicyError> {
        for path in files.keys() {
            check_path(path)?;
        }
        if !files.contains_key(CONFIG_FILE) {
            return Err(PolicyError::NoConfig);
        }
        self.append(files, author, message, None)
    }

    /// Makes version `number`'s files active again, as a new version.
    pub fn rollback(
        &self,
        number: u64,
        author: &str,
        message: Option<&str>,
    ) -> Result<PolicyVersion, PolicyError> {
        let target = self.get(number)?;
        let message = message.map_or_else(|| format!("rollback to v{number}"), str::to_owned);
        self.append(target.files, author, &message, Some(number))
    }

    fn append(
        &self,
        files: BTreeMap<String, String>,
        author: &str,
        message: &str,
        rollback_of: Option<u64>,
    ) -> Result<PolicyVersion, PolicyError> {
        let hash = hash_files(&files);
        loop {
            let parent = self.active()?;
            if let Some(parent) = &parent
                && parent.hash == hash
                && parent.files == files
            {
                return Err(PolicyError::Unchanged {
                    active: parent.number,
                });
            }
            let number = self.latest()?.map_or(1, |n| n + 1);
            let empty = BTreeMap::new();
            let parent_label = parent.as_ref().map(|p| format!("v{}", p.number));
            let version = PolicyVersion {
                number,
                hash: hash.clone(),
                created_ms: now_ms(),
                author: author.to_owned(),
                message: message.to_owned(),
                diff: diff::unified(
                    parent.as_ref().map_or(&empty, |p| &p.files),
                    &files,
                    parent_label.as_deref(),
                    Some(&format!("v{number}")),
                ),
                files: files.clone(),
                parent: parent.as_ref().map(|p| p.number),
                rollback_of,
            };
            let expected_active = version.parent;
            let value = encode(&version);
            let written = (&self.versions, &self.meta).transaction(|(versions, meta)| {
                let active: Option<u64> = meta
                    .get(ACTIVE)?
                    .map(|bytes| decode(META, ACTIVE, &bytes))
                    .transpose()
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Decode(e)))?;
                if active != expected_active || versions.get(key(number))?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Abort::Moved));
                }
                versions.insert(&key(number), value.as_slice())?;
                meta.insert(ACTIVE, encode(&number))?;
                Ok(())
            });
            match written {
                Ok(()) => {
                    self.store.flush()?;
                    return Ok(version);
                }
                Err(TransactionError::Abort(Abort::Moved)) => continue,
                Err(TransactionError::Abort(Abort::Decode(error))) => return Err(error.into()),
                Err(TransactionError::Storage(error)) => {
                    return Err(self.store.error(error).into());
                }
            }
        }
    }
}

/// A stored path must stay inside the directory a version is written to.
fn check_path(path: &str) -> Result<(), PolicyError> {
    let bad = |reason| PolicyError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("an empty path"));
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(bad("paths are `/`-separated, without `\\` or NUL"));
    }
    // Split by hand: `Path::components` quietly drops a `.` in the middle.
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad(
                "expected a relative path without empty, `.` or `..` segments",
            ));
        }
        if segment.starts_with(STAMP) {
            return Err(bad("the name is reserved for Baton's own stamp file"));
        }
    }
    Ok(())
}

/// SHA-256 over the files in path order, each as its path's length (u64
/// big-endian), the path, the content's length, the content, after a tag
/// naming the encoding: unambiguous (no two file sets encode alike) and
/// independent of how the map was built. Lowercase hex.
pub fn hash_files(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"baton-policy-files/1\n");
    for (path, content) in files {
        hasher.update((path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `version`'s files under `dir/v<N>/` unless they are already there
/// as stored, and returns that directory. Owner-only, like the state
/// directory it normally lives in (prompts can be confidential).
///
/// Safe to call from several processes at once: each writes a private
/// directory and renames it into place; a directory whose content differs
/// from the version (edited by hand, cut short by a crash) is replaced.
pub fn materialize(version: &PolicyVersion, dir: &Path) -> Result<PathBuf, PolicyError> {
    let target = dir.join(format!("v{}", version.number));
    if holds(&target, version) {
        return Ok(target);
    }
    create_private_dir(dir)?;
    let scratch = dir.join(format!(
        ".v{}-{}-{}",
        version.number,
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let result = write_files(&version.files, &scratch)
        .and_then(|()| write_file(&scratch.join(STAMP), &version.hash))
        .and_then(|()| {
            if target.exists() && !holds(&target, version) {
                std::fs::remove_dir_all(&target).map_err(|source| PolicyError::Io {
                    path: target.clone(),
                    source,
                })?;
            }
            match std::fs::rename(&scratch, &target) {
                Ok(()) => Ok(()),
                // Another process put it in place meanwhile.
                Err(_) if holds(&target, version) => Ok(()),
                Err(source) => Err(PolicyError::Io {
                    path: target.clone(),
                    source,
                }),
            }
        });
    if scratch.exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result.map(|()| target)
}

/// Writes `files` under `dir` (whose files must not exist yet), owner-only.
pub fn write_files(files: &BTreeMap<String, String>, dir: &Path) -> Result<(), PolicyError> {
    create_private_dir(dir)?;
    for (path, content) in files {
        check_path(path)?;
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            create_private_dir(parent)?;
        }
        write_file(&file, content)?;
    }
    Ok(())
}

/// Whether `target` holds exactly `version`'s files, as stamped.
fn holds(target: &Path, version: &PolicyVersion) -> bool {
    let stamped = std::fs::read_to_string(target.join(STAMP)).ok();
    if stamped.as_deref() != Some(version.hash.as_str()) {
        return false;
    }
    let mut found = BTreeMap::new();
    if !read_tree(target, target, &mut found) {
        return false;
    }
    found == version.files
}

/// Every file under `dir` except the stamp, by relative path; `false` when
/// something cannot be read as text.
fn read_tree(root: &Path, dir: &Path, found: &mut BTreeMap<String, String>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            return false;
        };
        if kind.is_dir() {
            if !read_tree(root, &path, found) {
                return false;
            }
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            return false;
        };
        let relative: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let relative = relative.join("/");
        if relative == STAMP {
            continue;
        }
        let Ok(content) = std::fs::read_to_string(&path) else {
            return false;
        };
        found.insert(relative, content);
    }
    true
}

pub fn create_private_dir(dir: &Path) -> Result<(), PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Every directory created on the way is owner-only too.
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(io)
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), PolicyError> {
    use std::io::Write;
    let io = |source| PolicyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(content.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// How often the thread behind [`watch_active`] checks whether anyone is
/// still listening (it otherwise sleeps until sled reports a change).
const WATCH_IDLE_CHECK: Duration = Duration::from_secs(1);

/// The active version's number (0 while none was applied), kept current:
/// the receiver changes as soon as any writer of this store moves the
/// active version, whether this process applied it or another did through
/// the admin socket.
///
/// sled reports changes to a thread that blocks on them (`watch_prefix` on
/// the `meta` tree's `active` key); that thread forwards each one into a
/// Tokio `watch` channel, and ends once every receiver is dropped or the
/// store is closed. Subscribing happens before the current value is read,
/// so a change between the two is not missed.
pub fn watch_active(store: &Store) -> Result<tokio::sync::watch::Receiver<u64>, StoreError> {
    let policies = Policies::new(store)?;
    let mut subscriber = policies.meta.watch_prefix(ACTIVE);
    let current = policies.active_number()?.unwrap_or(0);
    let (sender, receiver) = tokio::sync::watch::channel(current);
    let spawned = std::thread::Builder::new()
        .name("baton-policy-watch".into())
        .spawn(move || {
            loop {
                match subscriber.next_timeout(WATCH_IDLE_CHECK) {
                    Ok(sled::Event::Insert { key, value }) if key.as_ref() == ACTIVE => {
                        match decode::<u64>(META, ACTIVE, &value) {
                            Ok(number) => {
                                sender.send_if_modified(|seen| {
                                    let changed = *seen != number;
                                    *seen = number;
                                    changed
                                });
                            }
                            Err(error) => {
                                tracing::error!(%error, "the active policy version cannot be read");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if sender.is_closed() {
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        return Err(StoreError::Io {
            path: store.path().to_owned(),
            source: error,
        });
    }
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
            .collect()
    }

    fn open(dir: &Path) -> Store {
        Store::open(dir, &StoreSettings::default()).expect("open store")
    }

    #[test]
    fn apply_history_rollback_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let policies = Policies::new(&store).unwrap();
        assert_eq!(policies.active().unwrap(), None);

        let v1 = files(&[
            ("baton.toml", "a = 1\n"),
            ("agents/s/CLAUDE.md", "Be kind.\n"),
        ]);
        let first = policies.apply(v1.clone(), "ana", "first").unwrap();
        assert_eq!(
            (first.number, first.parent, first.rollback_of),
            (1, None, None)
        );
        assert!(first.diff.contains("--- /dev/null\n+++ v1/baton.toml"));

        let mut v2 = v1.clone();
        v2.insert("agents/s/CLAUDE.md".into(), "Be terse.\n".into());
        let second = policies.apply(v2, "bo", "terser").unwrap();
        assert_eq!((second.number, second.parent), (2, Some(1)));
        assert_eq!(
            second.diff,
            "--- v1/agents/s/CLAUDE.md\n+++ v2/agents/s/CLAUDE.md\n@@ -1 +1 @@\n-Be kind.\n+Be terse.\n"
        );
        assert_eq!(policies.diff(1, 2).unwrap(), second.diff);

        let third = policies.rollback(1, "cy", None).unwrap();
        assert_eq!(third.number, 3);
        assert_eq!(third.rollback_of, Some(1));
        assert_eq!(third.parent, Some(2));
        assert_eq!(third.files, first.files);
        assert_eq!(third.hash, first.hash);
        assert_eq!(third.message, "rollback to v1");
        assert_eq!(policies.active_number().unwrap(), Some(3));
        let numbers: Vec<u64> = policies
            .history()
            .unwrap()
            .iter()
            .map(|v| v.number)
            .collect();
        assert_eq!(numbers, [1, 2, 3]);

        // The history survives closing and reopening the store. sled lets
        // go of its lock when its background flusher notices the database
        // is dropped, a moment later: poll for it.
        drop(policies);
        drop(store);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let store = loop {
            match Store::open(dir.path(), &StoreSettings::default()) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.expect("reopen the store"),
            }
        };
        let policies = Policies::new(&store).unwrap();
        assert_eq!(policies.get(2).unwrap(), second);
        assert_eq!(policies.active().unwrap().unwrap().number, 3);
    }

    #[test]
    fn applying_the_active_files_again_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let policies = Policies::new(&store).unwrap();
        let v1 = files(&[("baton.toml", "a = 1\n")]);
        policies.apply(v1.clone(), "ana", "first").unwrap();
        let error = policies.apply(v1, "ana", "again").unwrap_err();
        assert!(matches!(error, PolicyError::Unchanged { active: 1 }));
        assert_eq!(
            error.to_string(),
            "nothing changed since v1: the files are those of the active version"
        );
        let error = policies.rollback(1, "ana", None).unwrap_err();
        assert!(matches!(error, PolicyError::Unchanged { active: 1 }));
        assert_eq!(policies.latest().unwrap(), Some(1));
    }

    #[test]
    fn unknown_versions_and_bad_paths_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let policies = Policies::new(&store).unwrap();
        assert_eq!(
            policies.get(4).unwrap_err().to_string(),
            "no policy version 4 (no policy has been applied to this store)"
        );
        policies
            .apply(files(&[("baton.toml", "")]), "ana", "")
            .unwrap();
        assert_eq!(
            policies.rollback(9, "ana", None).unwrap_err().to_string(),
            "no policy version 9 (the store has v1 to v1)"
        );
        for bad in ["../x", "/etc/passwd", "a/./b", "a\\b", "", ".baton-policy"] {
            let error = policies
                .apply(files(&[("baton.toml", ""), (bad, "x")]), "ana", "")
                .unwrap_err();
            assert!(
                matches!(error, PolicyError::BadPath { .. }),
                "{bad}: {error}"
            );
        }
        let error = policies
            .apply(files(&[("agents/s/a.md", "x")]), "ana", "")
            .unwrap_err();
        assert!(matches!(error, PolicyError::NoConfig));
    }

    #[test]
    fn the_hash_depends_on_content_and_paths_not_on_order() {
        let a = files(&[("a", "1"), ("b", "2")]);
        let mut b = BTreeMap::new();
        b.insert("b".to_owned(), "2".to_owned());
        b.insert("a".to_owned(), "1".to_owned());
        assert_eq!(hash_files(&a), hash_files(&b));
        assert_eq!(hash_files(&a).len(), 64);
        // Moving bytes between a path and its content changes the hash.
        assert_ne!(
            hash_files(&files(&[("ab", "c")])),
            hash_files(&files(&[("a", "bc")]))
        );
    }

    #[test]
    fn materialize_writes_once_and_repairs_edits() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("state"));
        let policies = Policies::new(&store).unwrap();
        let version = policies
            .apply(
                files(&[
                    ("baton.toml", "a = 1\n"),
                    ("agents/s/rules/r.mdc", "rule\n"),
                ]),
                "ana",
                "",
            )
            .unwrap();
        let out = dir.path().join("policies");
        let target = materialize(&version, &out).unwrap();
        assert_eq!(target, out.join("v1"));
        assert_eq!(
            std::fs::read_to_string(target.join("agents/s/rules/r.mdc")).unwrap(),
            "rule\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&target), 0o700);
            assert_eq!(mode(&target.join("agents")), 0o700);
            assert_eq!(mode(&target.join("baton.toml")), 0o600);
        }
        // A second call leaves the directory as it is.
        let stamp = target.join(STAMP);
        let written = std::fs::metadata(&stamp).unwrap().modified().unwrap();
        assert_eq!(materialize(&version, &out).unwrap(), target);
        assert_eq!(
            std::fs::metadata(&stamp).unwrap().modified().unwrap(),
            written
        );
        // A hand edit (or a stray file) is undone.
        std::fs::write(target.join("baton.toml"), "edited").unwrap();
        std::fs::write(target.join("agents/s/extra.md"), "stray").unwrap();
        materialize(&version, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("baton.toml")).unwrap(),
            "a = 1\n"
        );
        assert!(!target.join("agents/s/extra.md").exists());
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["v1"]);
    }

    #[tokio::test]
    async fn watch_active_reports_a_change_made_after_subscribing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut active = watch_active(&store).unwrap();
        assert_eq!(*active.borrow(), 0);
        let policies = Policies::new(&store).unwrap();
        let writer = tokio::task::spawn_blocking(move || {
            policies
                .apply(files(&[("baton.toml", "x\n")]), "ana", "")
                .unwrap()
        });
        tokio::time::timeout(Duration::from_secs(10), active.changed())
            .await
            .expect("a change within 10 s")
            .unwrap();
        assert_eq!(*active.borrow_and_update(), 1);
        writer.await.unwrap();
    }
}
