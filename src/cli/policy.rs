//! `baton policy apply|history|show|diff|rollback`: versions of the routing
//! policy (baton.toml and the swarm files it serves) in the store.
//!
//! Each subcommand is written against an open store (`exec`), so it runs
//! the same here or, when a `chat`/`run`/`serve` holds the store, inside
//! that process through its admin socket; the process then switches to
//! the new active version without a restart. What a policy covers, and
//! how it is checked, is in `baton::policy`.
//!
//! Applying the active version's files again stores nothing: it says
//! "nothing changed since vN" and exits 0 (the files asked for are the ones
//! serving), so a CI job may apply on every push.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use baton::policy::{self, CollectError, POLICIES_DIR, Sources};
use baton::review::Timestamp;
use baton::store::Store;
use baton::store::policy::{Policies, PolicyError, PolicyVersion, diff};
use serde::Serialize;

use super::Cli;
use super::admin::Output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Store baton.toml and the swarms it serves as a new version and make
    /// it active (it is checked first, as `baton validate` checks).
    Apply(ApplyArgs),
    /// Every version, oldest first; `*` marks the active one.
    History {
        /// Print the versions as a JSON array (without file contents).
        #[arg(long)]
        json: bool,
    },
    /// One version: who made it, when and why, its files and its diff.
    Show {
        /// The version (`3` or `v3`).
        #[arg(value_parser = parse_version)]
        version: u64,
        /// Print the whole version, files included, as JSON.
        #[arg(long)]
        json: bool,
        /// Print only this file of the version (e.g. `agents/support-bot/CLAUDE.md`).
        #[arg(long, value_name = "PATH", conflicts_with = "json")]
        file: Option<String>,
    },
    /// The unified diff from version A to version B.
    Diff {
        #[arg(value_parser = parse_version)]
        a: u64,
        #[arg(value_parser = parse_version)]
        b: u64,
    },
    /// Make an earlier version's files active again, as a new version.
    Rollback {
        #[arg(value_parser = parse_version)]
        version: u64,
        /// Why (default: "rollback to vN").
        #[arg(short, long)]
        message: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The config (default: --config, else $BATON_CONFIG, else ./baton.toml,
    /// else the built-in default); the swarms under `agents/` beside it
    /// are part of the policy.
    file: Option<PathBuf>,
    /// Why this version (shown by `history`).
    #[arg(short, long)]
    message: Option<String>,
    /// A further swarm directory to include (repeatable).
    #[arg(long = "swarm", value_name = "DIR")]
    swarms: Vec<PathBuf>,
}

fn parse_version(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix('v').unwrap_or(text);
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a version number such as `3` or `v3`, found `{text}`"
        )),
    }
}

/// Runs the command here, or through the admin socket of the process
/// holding the store. `apply` creates the store if there is none; the
/// others only read or extend an existing history.
pub fn run(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    let exec = |store: &Store, out: &mut Output| exec(cli, command, store, out);
    match command {
        Command::Apply(_) => super::admin::with_store_creating(cli, exec),
        _ => super::admin::with_store(cli, exec),
    }
}

pub fn exec(
    cli: &Cli,
    command: &Command,
    store: &Store,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let policies = Policies::new(store)?;
    match command {
        Command::Apply(args) => apply(cli, args, store, &policies, out),
        Command::History { json } => history(&policies, *json, out),
        Command::Show {
            version,
            json,
            file,
        } => show(&policies, *version, *json, file.as_deref(), out),
        Command::Diff { a, b } => {
            let diff = policies.diff(*a, *b)?;
            if diff.is_empty() {
                let _ = writeln!(out.stderr, "v{a} and v{b} have the same files");
            }
            out.stdout.push_str(&diff);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { version, message } => {
            match policies.rollback(*version, &out.author, message.as_deref()) {
                Ok(made) => {
                    write_out(&made, store, out);
                    let _ = writeln!(
                        out.stdout,
                        "v{} is active: the files of v{version} again ({}), {}",
                        made.number,
                        made.short_hash(),
                        change_summary(&made)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(PolicyError::Unchanged { active }) => {
                    let _ = writeln!(
                        out.stdout,
                        "nothing changed since v{active}: v{version}'s files are the active ones; no version made"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => Err(error.into()),
            }
        }
    }
}

/// The state directory of `store` (the store is its `state/`), where
/// versions are written out and tried.
fn state_dir(store: &Store) -> PathBuf {
    store
        .path()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

fn apply(
    cli: &Cli,
    args: &ApplyArgs,
    store: &Store,
    policies: &Policies,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let config = args
        .file
        .clone()
        .or_else(|| cli.config.clone())
        .or_else(|| {
            std::env::var_os("BATON_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .map(|path| out.resolve(&path))
        .or_else(|| Some(out.cwd.join("baton.toml")).filter(|p| p.is_file()));
    let root = config
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(|| out.cwd.clone(), Path::to_owned);
    let mut extra_swarms = Vec::new();
    for dir in &args.swarms {
        let path = out.resolve(dir);
        let named = out.cwd.join("agents").join(dir);
        if path.is_dir() {
            extra_swarms.push(path);
        } else if named.is_dir() {
            extra_swarms.push(named);
        } else {
            anyhow::bail!(
                "--swarm {}: swarm directory not found (give a path, or a name under ./agents/)",
                dir.display()
            );
        }
    }
    let sources = Sources {
        config,
        root,
        extra_swarms,
    };
    let collected = match policy::collect(&sources, &state_dir(store).join(POLICIES_DIR)) {
        Ok(collected) => collected,
        Err(error) => {
            if let Some(findings) = error.diagnostics() {
                out.stderr.push_str(&findings.to_string());
                let _ = writeln!(
                    out.stderr,
                    "policy not applied: {} error(s){}",
                    findings.error_count(),
                    if matches!(error, CollectError::Stored(_)) {
                        " in the policy as it would be stored (a file it needs is outside what a policy stores)"
                    } else {
                        ""
                    }
                );
                return Ok(ExitCode::FAILURE);
            }
            return Err(anyhow::Error::new(error).context("policy not applied"));
        }
    };
    out.stderr.push_str(&collected.warnings.to_string());
    let message = args.message.clone().unwrap_or_default();
    match policies.apply(collected.files, &out.author, &message) {
        Ok(made) => {
            write_out(&made, store, out);
            let _ = writeln!(
                out.stdout,
                "v{} is active ({}): {} file(s), swarms: {}; {}",
                made.number,
                made.short_hash(),
                made.files.len(),
                if collected.swarms.is_empty() {
                    "none".to_owned()
                } else {
                    collected.swarms.join(", ")
                },
                change_summary(&made)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(PolicyError::Unchanged { active }) => {
            let _ = writeln!(
                out.stdout,
                "nothing changed since v{active}; no version made"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Err(error.into()),
    }
}

/// Writes the version just activated to the state directory, where a
/// process that cannot open the store (another holds it) finds it, and
/// drops older copies but the one before it (a process may be switching
/// away from it right now).
fn write_out(version: &PolicyVersion, store: &Store, out: &mut Output) {
    let state = state_dir(store);
    if let Err(error) = policy::served_from(version, &state) {
        let _ = writeln!(
            out.stderr,
            "warning: v{} is active but could not be written out for processes without the store: {error}",
            version.number
        );
        return;
    }
    if let Err(error) = super::graph::save_snapshot(version, store) {
        let _ = writeln!(
            out.stderr,
            "warning: v{} is active but its dependency graph could not be saved: {error:#}",
            version.number
        );
    }
    policy::prune_written(&state, version.number.saturating_sub(1));
}

/// "2 file(s) changed against v1 (+3 -1)".
fn change_summary(version: &PolicyVersion) -> String {
    let (files, added, removed) = diff::stats(&version.diff);
    let against = version
        .parent
        .map_or_else(|| "nothing".to_owned(), |p| format!("v{p}"));
    format!("{files} file(s) changed against {against} (+{added} -{removed})")
}

fn at(ms: u64) -> String {
    Timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// A version without its files, for `history --json`.
#[derive(Serialize)]
struct Summary<'a> {
    number: u64,
    active: bool,
    hash: &'a str,
    created: String,
    created_ms: u64,
    author: &'a str,
    message: &'a str,
    parent: Option<u64>,
    rollback_of: Option<u64>,
    files: Vec<&'a str>,
}

fn history(policies: &Policies, json: bool, out: &mut Output) -> anyhow::Result<ExitCode> {
    let versions = policies.history()?;
    let active = policies.active_number()?;
    if json {
        let summaries: Vec<Summary> = versions
            .iter()
            .map(|v| Summary {
                number: v.number,
                active: Some(v.number) == active,
                hash: &v.hash,
                created: at(v.created_ms),
                created_ms: v.created_ms,
                author: &v.author,
                message: &v.message,
                parent: v.parent,
                rollback_of: v.rollback_of,
                files: v.files.keys().map(String::as_str).collect(),
            })
            .collect();
        let _ = writeln!(out.stdout, "{}", serde_json::to_string_pretty(&summaries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        let _ = writeln!(
            out.stdout,
            "no policy has been applied to this store (`baton policy apply` stores the first version)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    for version in &versions {
        let mark = if Some(version.number) == active {
            '*'
        } else {
            ' '
        };
        let mut message = if version.message.is_empty() {
            "(no message)".to_owned()
        } else {
            version.message.clone()
        };
        if let Some(of) = version.rollback_of
            && !message.contains(&format!("v{of}"))
        {
            let _ = write!(message, " (rollback to v{of})");
        }
        let _ = writeln!(
            out.stdout,
            "{mark} v{:<4} {}  {}  {:<12} {}",
            version.number,
            at(version.created_ms),
            version.short_hash(),
            version.author,
            message
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(
    policies: &Policies,
    number: u64,
    json: bool,
    file: Option<&str>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let version = policies.get(number)?;
    let active = policies.active_number()? == Some(number);
    if let Some(path) = file {
        let Some(content) = version.files.get(path) else {
            anyhow::bail!(
                "v{number} has no file `{path}` (files: {})",
                version
                    .files
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        out.stdout.push_str(content);
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        let mut value = serde_json::to_value(&version)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("active".into(), active.into());
            object.insert("created".into(), at(version.created_ms).into());
        }
        let _ = writeln!(out.stdout, "{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let o = &mut out.stdout;
    let _ = writeln!(
        o,
        "version  v{number}{}",
        if active { " (active)" } else { "" }
    );
    let _ = writeln!(o, "hash     {}", version.hash);
    let _ = writeln!(o, "created  {}", at(version.created_ms));
    let _ = writeln!(o, "author   {}", version.author);
    let _ = writeln!(o, "message  {}", version.message);
    if let Some(parent) = version.parent {
        let _ = writeln!(o, "parent   v{parent}");
    }
    if let Some(of) = version.rollback_of {
        let _ = writeln!(o, "restores v{of}");
    }
    let _ = writeln!(o, "files    {}", version.files.len());
    for (path, content) in &version.files {
        let _ = writeln!(
            o,
            "  {path}  ({} line(s), {} bytes)",
            content.lines().count(),
            content.len()
        );
    }
    let against = version
        .parent
        .map_or_else(|| "nothing".to_owned(), |p| format!("v{p}"));
    let _ = writeln!(o, "\ndiff against {against}:");
    o.push_str(&version.diff);
    Ok(ExitCode::SUCCESS)
}
