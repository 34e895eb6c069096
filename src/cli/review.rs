//! `baton review list|approve|reject`: the queue of answers that high-stakes
//! agents gave through a fallback path, in the store (through the admin
//! socket when another process holds it).

use std::fmt::Write as _;
use std::process::ExitCode;

use baton::review::{ReviewItem, ReviewQueue, ReviewStatus};
use baton::store::Store;

use super::Cli;
use super::admin::{Output, with_store};
use super::show::one_line;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Pending answers, oldest first (`--all`: decided ones too).
    List {
        /// Include approved and rejected items.
        #[arg(long)]
        all: bool,
        /// Print the items as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Mark an answer as right.
    Approve(Decide),
    /// Mark an answer as wrong.
    Reject(Decide),
}

#[derive(Debug, clap::Args)]
pub struct Decide {
    /// The review id (`rv-…`), as `baton review list` shows it.
    id: String,
    /// The reviewer's note.
    #[arg(short = 'm', long = "message", value_name = "NOTE")]
    note: Option<String>,
}

pub fn run(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    with_store(cli, |store, out| exec(command, store, out))
}

pub fn exec(command: &Command, store: &Store, out: &mut Output) -> anyhow::Result<ExitCode> {
    let queue = ReviewQueue::new(store)?;
    match command {
        Command::List { all, json } => {
            let items = if *all {
                queue.list()?
            } else {
                queue.pending()?
            };
            if *json {
                out.stdout
                    .push_str(&format!("{}\n", serde_json::to_string_pretty(&items)?));
            } else if items.is_empty() {
                let _ = writeln!(
                    out.stdout,
                    "no {}reviews",
                    if *all { "" } else { "pending " }
                );
            } else {
                for item in &items {
                    describe(item, &mut out.stdout);
                }
            }
        }
        Command::Approve(decide) => {
            let item = queue.approve(&decide.id, decide.note.clone())?;
            let _ = writeln!(out.stdout, "{} approved", item.id);
        }
        Command::Reject(decide) => {
            let item = queue.reject(&decide.id, decide.note.clone())?;
            let _ = writeln!(out.stdout, "{} rejected", item.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An item as a few lines for people.
pub(super) fn describe(item: &ReviewItem, out: &mut String) {
    let _ = writeln!(
        out,
        "{}  {}  {}  {}/{}  served by {}{}",
        item.id,
        item.status,
        item.at,
        item.swarm,
        item.worker,
        item.served_by,
        if item.degraded { " (degraded)" } else { "" }
    );
    let _ = writeln!(out, "  trace {}", item.trace_id);
    if let Some(session) = &item.session {
        let _ = writeln!(out, "  session {session}");
    }
    let _ = writeln!(out, "  Q: {}", one_line(&item.question, 200));
    let _ = writeln!(out, "  A: {}", one_line(&item.answer, 200));
    if let Some(decision) = &item.decision
        && decision.status != ReviewStatus::Pending
    {
        let _ = writeln!(
            out,
            "  {} {}{}",
            decision.status,
            decision.at,
            decision
                .note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
    }
}
