//! The routing policy as a set of files: which files a policy covers,
//! checking them before they are stored, and where the active version is
//! served from.
//!
//! # What a policy covers
//!
//! A policy is baton.toml plus every swarm it serves, so that rolling back
//! restores prompts and rules along with routes:
//!
//! - the config, stored as `baton.toml` whatever its file was called (the
//!   embedded default's text when no file is found, so a version never
//!   depends on the binary that made it);
//! - every swarm directory under `agents/` beside the config (beside the
//!   current directory when the embedded default is used), found as
//!   `baton validate` finds them, plus each `--swarm DIR`;
//! - of each swarm, every text file under its directory (agent templates,
//!   `rules/*.mdc`, `CLAUDE.md` and what it imports, knowledge documents,
//!   output-schema files), stored as `agents/<swarm>/<path>` (the swarm's
//!   name is its directory's name, as everywhere else). Names starting
//!   with `.` are left out (editor and VCS files), as are files that are
//!   not text (a policy is what prompts are made of);
//! - memory files a swarm imports from outside its directory, stored at
//!   the same place relative to the swarm's (so `@../shared/style.md`
//!   still resolves), when that place is inside the policy's root or the
//!   swarm's parent directory. Others (a personal `~/` import) are not
//!   stored: they are named in a warning and keep being read from where
//!   they are.
//!
//! Texts are stored as the loaders read them: UTF-8 with `\n` line ends.
//!
//! # Checks before storing
//!
//! [`collect`] loads the config and every swarm as `baton validate` does
//! and refuses the lot, with every finding located by file and line, if
//! any has an error. It then writes the files it would store to a scratch
//! directory and loads them again from there, so a version that is stored
//! is one that loads as it will be served (a relative import or schema
//! file reaching outside what a policy stores shows up here).
//!
//! # Serving
//!
//! Once a policy has been applied, the store's active version serves, not
//! the files it was made from: [`active_sources`] writes the active version
//! under `<state dir>/policies/v<N>/` (once) and says where its config and
//! swarms are, for the unchanged loaders to read.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::store::Store;
use crate::store::policy::{
    AGENTS_DIR, CONFIG_FILE, Policies, PolicyError, PolicyVersion, STAMP, create_private_dir,
    materialize, write_files,
};
use crate::template::{self, text};

/// Where a store's versions are written to disk, inside the state directory.
pub const POLICIES_DIR: &str = "policies";

/// What a policy is made from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The config file; `None` for the embedded default.
    pub config: Option<PathBuf>,
    /// The directory whose `agents/` holds the swarms: the config's
    /// directory, or the current one with the embedded default.
    pub root: PathBuf,
    /// Swarm directories beyond those under `root/agents/`.
    pub extra_swarms: Vec<PathBuf>,
}

/// The files of a policy, checked and ready to store.
#[derive(Debug)]
pub struct Collected {
    pub files: BTreeMap<String, String>,
    /// The swarms it serves, by name.
    pub swarms: Vec<String>,
    /// Findings that do not stop it (including files left out).
    pub warnings: Diagnostics,
}

/// Why files cannot become a policy.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Every finding of every swarm, errors and warnings.
    #[error("{count} error(s) in the swarms:\n{0}", count = .0.error_count())]
    Invalid(Diagnostics),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "two different files would be stored as `{stored}`: {} and {} (swarm directories need distinct names)",
        first.display(),
        second.display()
    )]
    Clash {
        stored: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// The stored copy does not load; paths are shown inside the version.
    #[error(
        "the policy as it would be stored does not load ({count} error(s)); a file it needs is outside what a policy stores:\n{0}",
        count = .0.error_count()
    )]
    Stored(Diagnostics),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl CollectError {
    /// The findings to print like `baton validate` does, if the error has any.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            CollectError::Config(ConfigError::Invalid(d))
            | CollectError::Invalid(d)
            | CollectError::Stored(d) => Some(d),
            _ => None,
        }
    }
}

/// Reads, checks and gathers the files of a policy. `scratch` is a
/// directory where the stored form is tried out (a private subdirectory is
/// made there and removed).
pub fn collect(sources: &Sources, scratch: &Path) -> Result<Collected, CollectError> {
    let (config_text, config_path) = match &sources.config {
        Some(path) => (read(path)?, path.clone()),
        None => (
            DEFAULT_CONFIG.to_owned(),
            PathBuf::from(crate::config::EMBEDDED_PATH),
        ),
    };
    let config = Config::parse(&config_text, &config_path)?;
    let mut warnings = config.warnings.clone();

    let mut dirs: Vec<PathBuf> = Vec::new();
    let agents = sources.root.join(AGENTS_DIR);
    if agents.is_dir() {
        dirs.extend(template::swarm_dirs(&agents));
    }
    dirs.extend(sources.extra_swarms.iter().cloned());
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let identity = d.canonicalize().unwrap_or_else(|_| d.clone());
        let fresh = !seen.contains(&identity);
        seen.push(identity);
        fresh
    });

    let mut findings = Diagnostics::new();
    let mut loaded = Vec::new();
    for dir in &dirs {
        match template::load_swarm(dir, &config) {
            Ok(swarm) => {
                findings.extend(swarm.warnings);
                loaded.push(swarm.swarm);
            }
            Err(error) => findings.extend(error.diagnostics()),
        }
    }
    if findings.has_errors() {
        return Err(CollectError::Invalid(findings));
    }
    warnings.extend(findings);

    let mut files = Files::default();
    files.add(CONFIG_FILE.to_owned(), config_path.clone(), config_text)?;
    let mut swarms = Vec::new();
    for swarm in &loaded {
        let dir = &swarm.dir;
        let name = swarm.name.clone();
        let stored_dir = format!("{AGENTS_DIR}/{name}");
        for path in text_files(dir, &mut warnings) {
            let Some(relative) = relative_to(&path, dir) else {
                continue;
            };
            let content = read(&path)?;
            files.add(format!("{stored_dir}/{relative}"), path, content)?;
        }
        let parent = normalize(&absolute(dir)).parent().map(Path::to_owned);
        for memory in &swarm.memory.files {
            let path = normalize(&absolute(&memory.path));
            if path.starts_with(normalize(&absolute(dir))) {
                continue;
            }
            let stored = parent
                .as_deref()
                .and_then(|p| relative_to(&path, p))
                .map(|r| format!("{AGENTS_DIR}/{r}"))
                .or_else(|| relative_to(&path, &sources.root));
            match stored {
                Some(stored) => files.add(stored, path, memory.text.clone())?,
                None => warnings.push(Diagnostic::warning(
                    &memory.path,
                    format!(
                        "imported by swarm `{name}` from outside the policy's directory {}: not stored in the policy, read from here when it serves",
                        sources.root.display()
                    ),
                )),
            }
        }
        swarms.push(name);
    }
    let files = files.into_map();
    try_stored(&files, &swarms, scratch)?;
    Ok(Collected {
        files,
        swarms,
        warnings,
    })
}

/// The files gathered so far, with where each came from (to name both
/// sides of a clash).
#[derive(Default)]
struct Files {
    files: BTreeMap<String, (PathBuf, String)>,
}

impl Files {
    fn add(&mut self, stored: String, from: PathBuf, content: String) -> Result<(), CollectError> {
        match self.files.get(&stored) {
            Some((_, existing)) if *existing == content => Ok(()),
            Some((first, _)) => Err(CollectError::Clash {
                stored,
                first: first.clone(),
                second: from,
            }),
            None => {
                self.files.insert(stored, (from, content));
                Ok(())
            }
        }
    }

    fn into_map(self) -> BTreeMap<String, String> {
        self.files
            .into_iter()
            .map(|(stored, (_, content))| (stored, content))
            .collect()
    }
}

/// Writes `files` to a scratch directory and loads the config and every
/// swarm from there, as serving would.
fn try_stored(
    files: &BTreeMap<String, String>,
    swarms: &[String],
    scratch: &Path,
) -> Result<(), CollectError> {
    let dir = scratch.join(format!(
        ".check-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    create_private_dir(scratch)?;
    let result = write_files(files, &dir)
        .map_err(CollectError::Policy)
        .and_then(|()| {
            let mut findings = Diagnostics::new();
            match Config::load(&dir.join(CONFIG_FILE)) {
                Ok(config) => {
                    for name in swarms {
                        let swarm = dir.join(AGENTS_DIR).join(name);
                        if let Err(error) = template::load_swarm(&swarm, &config) {
                            findings.extend(error.diagnostics());
                        }
                    }
                }
                Err(ConfigError::Invalid(d)) => findings.extend(d),
                Err(error) => return Err(error.into()),
            }
            // Findings name files inside the version, not the scratch copy.
            let mut located = Diagnostics::new();
            for mut finding in findings.into_iter().filter(Diagnostic::is_error) {
                if let Ok(inside) = finding.path.strip_prefix(&dir) {
                    finding.path = Path::new("<stored policy>").join(inside);
                }
                located.push(finding);
            }
            if located.has_errors() {
                Err(CollectError::Stored(located))
            } else {
                Ok(())
            }
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Every text file under `dir`, sorted; names starting with `.` are
/// skipped, and files that are not text are named in a warning.
fn text_files(dir: &Path, warnings: &mut Diagnostics) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    // Symlinked directories are followed (as the loaders do); each real
    // directory is read once, so a link back up cannot loop.
    let mut visited = std::collections::HashSet::new();
    while let Some(current) = pending.pop() {
        if !visited.insert(current.canonicalize().unwrap_or_else(|_| current.clone())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                match std::fs::read(&path).map(|bytes| text::decode(&bytes)) {
                    Ok(Ok(_)) => out.push(path),
                    Ok(Err(_)) => warnings.push(Diagnostic::warning(
                        &path,
                        "not text: left out of the policy (a policy stores prompts, rules and documents)",
                    )),
                    Err(error) => warnings.push(Diagnostic::warning(
                        &path,
                        format!("cannot read: {error}; left out of the policy"),
                    )),
                }
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> Result<String, CollectError> {
    let bytes = std::fs::read(path).map_err(|source| CollectError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    text::decode(&bytes).map_err(|error| CollectError::Unreadable {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line {}: {}", error.line, error.message),
        ),
    })
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

/// `.` and `..` folded away without touching the disk: an import's path as
/// written (`agents/s/../shared.md`) names the place it would name inside
/// a stored version too, where symlinks are gone.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `path` relative to `base` as a stored path (`/`-separated), when it lies
/// under it.
fn relative_to(path: &Path, base: &Path) -> Option<String> {
    let inside = normalize(&absolute(path));
    let relative = inside.strip_prefix(normalize(&absolute(base))).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Where the active version of a store is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSources {
    pub version: u64,
    pub hash: String,
    /// Its `baton.toml`.
    pub config: PathBuf,
    /// Its `agents/` directory: one swarm directory per swarm it serves.
    pub agents: PathBuf,
}

impl ActiveSources {
    /// The stored directory of the swarm a `SWARM` argument names (a path
    /// to a swarm directory, or a name): the swarm of the same name.
    pub fn swarm_dir(&self, argument: &str) -> PathBuf {
        let on_disk = template::resolve_swarm_dir(argument);
        let name = on_disk
            .canonicalize()
            .ok()
            .filter(|p| p.is_dir())
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| {
                Path::new(argument)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| argument.to_owned());
        self.agents.join(name)
    }

    /// The swarms the version serves, by name.
    pub fn swarms(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.agents)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The active version, written to `<state_dir>/policies/v<N>/` if it is not
/// there yet; `None` while no policy has been applied (the config file and
/// swarm directories serve then).
pub fn active_sources(
    store: &Store,
    state_dir: &Path,
) -> Result<Option<ActiveSources>, PolicyError> {
    match Policies::new(store)?.active()? {
        Some(version) => served_from(&version, state_dir).map(Some),
        None => Ok(None),
    }
}

/// Where `version` is served from, written there if need be.
pub fn served_from(
    version: &PolicyVersion,
    state_dir: &Path,
) -> Result<ActiveSources, PolicyError> {
    let dir = materialize(version, &state_dir.join(POLICIES_DIR))?;
    Ok(ActiveSources {
        version: version.number,
        hash: version.hash.clone(),
        config: dir.join(CONFIG_FILE),
        agents: dir.join(AGENTS_DIR),
    })
}

/// The newest version written out under `<state_dir>/policies/`, for a
/// process that cannot read the store (another one holds it): the active
/// version is always the newest, and `policy apply`/`rollback` write out
/// the version they activate. `None` when none is there.
pub fn newest_written(state_dir: &Path) -> Option<ActiveSources> {
    let dir = state_dir.join(POLICIES_DIR);
    // The stamp is written last, before the directory is renamed into
    // place: a directory without it is not a version.
    let (version, path, hash) = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix('v')?.parse::<u64>().ok()?;
            let hash = std::fs::read_to_string(entry.path().join(STAMP)).ok()?;
            Some((number, entry.path(), hash))
        })
        .max_by_key(|(number, _, _)| *number)?;
    Some(ActiveSources {
        version,
        hash,
        config: path.join(CONFIG_FILE),
        agents: path.join(AGENTS_DIR),
    })
}

/// Removes versions older than `oldest_kept` written out under
/// `<state_dir>/policies/`: they are copies, rewritten from the store
/// whenever one is served again, and a state directory should not grow
/// with every apply. Returns how many went.
pub fn prune_written(state_dir: &Path, oldest_kept: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(state_dir.join(POLICIES_DIR)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix('v')
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < oldest_kept)
        })
        .filter(|entry| std::fs::remove_dir_all(entry.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const CONFIG: &str = "default_route = \"main\"\n\n[providers.local]\nkind = \"extractive\"\n\n[routes.main]\nchain = [\"local\"]\n";

    fn swarm(dir: &Path) {
        write(
            &dir.join("CLAUDE.md"),
            "Shared memory.\n@../shared/style.md\n",
        );
        write(
            &dir.join("lead.md"),
            "---\nname: lead\nrole: supervisor\n---\nYou lead.\n",
        );
        write(
            &dir.join("helper.md"),
            "---\nname: helper\ndescription: helps\n---\nYou help.\n",
        );
        write(
            &dir.join("rules/tone.mdc"),
            "---\nalwaysApply: true\n---\nBe calm.\n",
        );
        write(&dir.join("knowledge/faq.md"), "# FAQ\nAnswers.\n");
        write(&dir.join(".swp"), "editor junk");
    }

    #[test]
    fn a_policy_covers_the_config_and_every_file_of_every_swarm() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("prod.toml"), CONFIG);
        swarm(&root.path().join("agents/support"));
        write(
            &root.path().join("agents/support/CLAUDE.md"),
            "Shared memory.\n@../../shared/style.md\n",
        );
        write(&root.path().join("shared/style.md"), "Short sentences.\n");
        // A swarm elsewhere whose memory imports a file beside it.
        let other = tempfile::tempdir().unwrap();
        swarm(&other.path().join("faq-bot"));
        write(&other.path().join("shared/style.md"), "Plain words.\n");

        let sources = Sources {
            config: Some(root.path().join("prod.toml")),
            root: root.path().to_owned(),
            extra_swarms: vec![other.path().join("faq-bot")],
        };
        let scratch = root.path().join(".baton/policies");
        let collected = collect(&sources, &scratch).unwrap();
        let paths: Vec<&str> = collected.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "agents/faq-bot/CLAUDE.md",
                "agents/faq-bot/helper.md",
                "agents/faq-bot/knowledge/faq.md",
                "agents/faq-bot/lead.md",
                "agents/faq-bot/rules/tone.mdc",
                "agents/shared/style.md",
                "agents/support/CLAUDE.md",
                "agents/support/helper.md",
                "agents/support/knowledge/faq.md",
                "agents/support/lead.md",
                "agents/support/rules/tone.mdc",
                "baton.toml",
                "shared/style.md",
            ]
        );
        assert_eq!(collected.files["baton.toml"], CONFIG);
        assert_eq!(collected.files["agents/shared/style.md"], "Plain words.\n");
        assert_eq!(collected.swarms, ["support", "faq-bot"]);
        // The scratch copy is gone.
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    }

    #[test]
    fn a_swarm_with_errors_is_refused_with_every_finding() {
        let root = tempfile::tempdir().unwrap();
        write(&root.path().join("baton.toml"), CONFIG);
        swarm(&root.path().join("agents/s"));
        write(
            &root.path().join("agents/s/helper.md"),
            "---\nname: helper\nroute: missing\n---\nYou help.\n",
        );
        let sources = Sources {
            config: Some(root.path().join("baton.toml")),
            root: root.path().to_owned(),
            extra_swarms: vec![],
        };
        let error = collect(&sources, &root.path().join("scratch")).unwrap_err();
        let findings = error.diagnostics().expect("diagnostics").to_string();
        assert!(findings.contains("helper.md:3:"), "{findings}");
        assert!(findings.contains("no route `missing`"), "{findings}");
    }

    #[test]
    fn an_invalid_config_is_refused_with_its_file_and_line() {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("baton.toml");
        write(
            &config,
            &CONFIG.replace("chain = [\"local\"]", "chain = [\"nope\"]"),
        );
        let sources = Sources {
            config: Some(config.clone()),
            root: root.path().to_owned(),
            extra_swarms: vec![],
        };
        let error = collect(&sources, &root.path().join("scratch")).unwrap_err();
        let findings = error.diagnostics().expect("diagnostics").to_string();
        assert!(
            findings.contains(&format!("{}:7:", config.display())),
            "{findings}"
        );
    }

    #[test]
    fn an_import_outside_the_root_is_named_and_not_stored() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let personal = elsewhere.path().join("me.md");
        write(&personal, "My notes.\n");
        write(&root.path().join("baton.toml"), CONFIG);
        swarm(&root.path().join("agents/s"));
        write(
            &root.path().join("agents/s/CLAUDE.md"),
            &format!("Memory.\n@{}\n", personal.display()),
        );
        let sources = Sources {
            config: Some(root.path().join("baton.toml")),
            root: root.path().to_owned(),
            extra_swarms: vec![],
        };
        let collected = collect(&sources, &root.path().join("scratch")).unwrap();
        assert!(!collected.files.values().any(|c| c.contains("My notes")));
        assert!(
            collected
                .warnings
                .mentions(&personal, "not stored in the policy"),
            "{}",
            collected.warnings
        );
    }

    #[test]
    fn the_newest_written_version_is_found_and_older_copies_pruned() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(newest_written(state.path()), None);
        let store = Store::open(state.path(), &crate::store::StoreSettings::default()).unwrap();
        let policies = Policies::new(&store).unwrap();
        for n in 1..=3 {
            let mut files = BTreeMap::new();
            files.insert(CONFIG_FILE.to_owned(), format!("# v{n}\n{CONFIG}"));
            let version = policies.apply(files, "ana", "").unwrap();
            served_from(&version, state.path()).unwrap();
        }
        // An unfinished copy (no stamp) is not a version.
        std::fs::create_dir_all(state.path().join("policies/v9/agents")).unwrap();
        let newest = newest_written(state.path()).unwrap();
        assert_eq!(newest.version, 3);
        assert_eq!(
            std::fs::read_to_string(&newest.config).unwrap(),
            format!("# v3\n{CONFIG}")
        );
        assert_eq!(newest.hash, policies.get(3).unwrap().hash);
        assert_eq!(prune_written(state.path(), 2), 1);
        assert!(!state.path().join("policies/v1").exists());
        assert!(state.path().join("policies/v2").exists());
    }
}
