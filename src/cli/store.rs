//! `baton store check`: the store's integrity, as a command.
//! `baton store compact [--keep 7d]`: folds raw telemetry older than the
//! retention into per-minute aggregates and deletes it.
//!
//! It asks sled to verify its checksums over every tree, decodes every
//! value (so an unknown encoding version or a damaged record shows up,
//! named by tree and key), and counts what is there. A request still open
//! in the journal is reported: outside a running process, it is one that a
//! crash interrupted and no process has recovered yet.

use std::fmt::Write as _;
use std::process::ExitCode;

use baton::store::journal::{Journal, RequestState};
use baton::store::{Store, TREES};

use super::Cli;
use super::admin::{Output, with_store};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify checksums and decode every record; exit 1 on any problem.
    Check {
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fold raw telemetry older than --keep into per-minute aggregates.
    Compact {
        /// Raw events to keep (`7d`, `12h`); default: `[store] keep`.
        #[arg(long, value_parser = baton::config::duration::parse_duration)]
        keep: Option<std::time::Duration>,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    with_store(cli, |store, out| {
        exec(command, store, out).unwrap_or_else(|| Ok(ExitCode::SUCCESS))
    })
}

pub fn exec(
    command: &Command,
    store: &Store,
    out: &mut Output,
) -> Option<anyhow::Result<ExitCode>> {
    match command {
        Command::Check { json } => Some(check(store, *json, out)),
        Command::Compact { keep, json } => Some(compact(store, *keep, *json, out)),
    }
}

fn check(store: &Store, json: bool, out: &mut Output) -> anyhow::Result<ExitCode> {
    let checksum = store.checksum()?;
    let mut problems = Vec::new();
    let mut trees = serde_json::Map::new();
    for name in TREES {
        trees.insert(name.to_owned(), store.tree(name)?.len().into());
    }
    let journal = Journal::new(store)?;
    let (mut completed, mut failed, mut accepted) = (0u64, 0u64, 0u64);
    for record in journal.iter() {
        match record {
            Ok(record) => match record.state {
                RequestState::Completed => completed += 1,
                RequestState::Failed => failed += 1,
                RequestState::Accepted => accepted += 1,
            },
            Err(error) => problems.push(error.to_string()),
        }
    }
    let open = journal.open()?.len();
    let report = serde_json::json!({
        "path": store.path(),
        "checksum": checksum,
        "bytes_on_disk": store.size_on_disk()?,
        "trees": trees,
        "journal": {
            "completed": completed,
            "failed": failed,
            "open": accepted,
            "open_markers": open,
        },
        "problems": problems,
    });
    if json {
        out.stdout
            .push_str(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        let _ = writeln!(
            out.stdout,
            "store {}: checksum {checksum:08x}",
            store.path().display()
        );
        let _ = writeln!(
            out.stdout,
            "journal: {completed} completed, {failed} failed, {accepted} open"
        );
        for (name, count) in &trees {
            let _ = writeln!(out.stdout, "  {name:<12} {count}");
        }
        for problem in &problems {
            let _ = writeln!(out.stderr, "problem: {problem}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn compact(
    store: &Store,
    keep: Option<std::time::Duration>,
    json: bool,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    use baton::store::telemetry::{MINUTE_NS, Telemetry};
    let keep = keep.unwrap_or(store.settings().keep.0);
    let now = baton::store::health::now_ns();
    let cutoff = now.saturating_sub(keep.as_nanos().min(u128::from(u64::MAX)) as u64);
    let telemetry = Telemetry::new(store)?;
    let stats = telemetry.compact(cutoff)?;
    // Compaction folds whole minutes only: the boundary actually used.
    let before = baton::review::Timestamp(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(cutoff - cutoff % MINUTE_NS),
    );
    let remaining = telemetry.len();
    if json {
        let report = serde_json::json!({
            "before": before,
            "events_folded": stats.events,
            "minutes": stats.minutes,
            "raw_events_left": remaining,
        });
        out.stdout
            .push_str(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        let _ = writeln!(
            out.stdout,
            "folded {} raw telemetry events of {} minutes before {before} into per-minute aggregates; {remaining} raw events left",
            stats.events, stats.minutes
        );
    }
    Ok(ExitCode::SUCCESS)
}
