//! `baton run SWARM --script FILE [--concurrency N] [--json]`: a batch of
//! scripted conversations against a swarm, then a summary.
//!
//! Conversations run concurrently, at most `--concurrency` at once; the
//! turns of one conversation run in order in one session, so each turn is
//! asked with the conversation so far (a failed turn is not remembered,
//! and the conversation goes on with its next turn, as a customer would).
//! A progress bar shows on stderr when it is a terminal. The exit code is
//! 1 if any request failed or an answer could not be queued for review.
//!
//! The script format is in [`script`]; the summary's in [`summary`].

pub(super) mod script;
mod summary;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::script::Conversation;
use self::summary::{Reply, Summary, TurnResult};
use super::Cli;
use super::launch::{Running, launch};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Swarm directory, or a name under ./agents/.
    swarm: String,
    /// JSON Lines script: one `{"id": ..., "turns": [...]}` per line
    /// (`-`: read it from stdin).
    #[arg(long, value_name = "FILE")]
    script: PathBuf,
    /// Print one JSON line on stdout per turn as soon as it is answered
    /// (and journaled durably) or fails; the summary goes to stderr.
    #[arg(long)]
    acks: bool,
    /// Conversations in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let conversations = match script::load(&args.script) {
        Ok(conversations) => conversations,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            anyhow::bail!(
                "script {} has {} error(s)",
                args.script.display(),
                diagnostics.error_count()
            );
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let swarm = launch(cli, &args.swarm).await?;
        let turns: usize = conversations.iter().map(|c| c.turns.len()).sum();
        let progress = progress_bar(turns as u64);
        // Sessions are per process today; the run's own prefix keeps them
        // apart from other runs once sessions are durable.
        let run_id = uuid::Uuid::now_v7();
        let started = Instant::now();
        let concurrency = usize::from(args.concurrency);
        let results: Vec<TurnResult> = futures_util::stream::iter(&conversations)
            .map(|conversation| {
                converse(
                    &swarm,
                    conversation,
                    format!("run-{run_id}:{}", conversation.id),
                    &progress,
                    args.acks,
                )
            })
            .buffer_unordered(concurrency)
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
        let elapsed = started.elapsed();
        progress.finish_and_clear();
        let swarm_name = swarm.name.clone();
        swarm.stop().await;

        let summary = Summary::new(
            args.script.display().to_string(),
            swarm_name,
            conversations.len(),
            concurrency,
            elapsed,
            &results,
        );
        let mut review_errors = 0;
        for result in &results {
            if let Reply::Answer {
                review_error: Some(error),
                ..
            } = &result.reply
            {
                review_errors += 1;
                eprintln!(
                    "error: {} turn {}: cannot queue the answer for review: {error}",
                    result.conversation, result.turn
                );
            }
        }
        if args.acks {
            eprint!("{}", summary.table());
        } else if args.json {
            super::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
        } else {
            let mut table = summary.table();
            if summary.queued_for_review > 0 {
                table.push_str(&format!(
                    "\n{} answer(s) queued for review: baton review list\n",
                    summary.queued_for_review
                ));
            }
            super::print_stdout(&table)?;
        }
        for failure in &summary.failed {
            eprintln!(
                "failed: {} turn {}: {}",
                failure.conversation, failure.turn, failure.error
            );
        }
        Ok(if summary.failures == 0 && review_errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Runs one conversation's turns in order in `session`.
async fn converse(
    swarm: &Running,
    conversation: &Conversation,
    session: String,
    progress: &ProgressBar,
    acks: bool,
) -> Vec<TurnResult> {
    let mut results = Vec::with_capacity(conversation.turns.len());
    for (index, text) in conversation.turns.iter().enumerate() {
        let started = Instant::now();
        let asked = swarm.ask(text, Some(&session)).await;
        let latency = started.elapsed();
        let reply = match asked {
            Ok(Ok(answer)) => {
                let review_error = swarm
                    .queue_for_review(text, &answer)
                    .err()
                    .map(|e| format!("{e:#}"));
                Reply::Answer {
                    answer: Box::new(answer),
                    review_error,
                }
            }
            Ok(Err(error)) => Reply::failed(&error),
            Err(error) => Reply::Failed {
                error: format!("{error:#}"),
                attempts: Vec::new(),
            },
        };
        if acks {
            acknowledge(&conversation.id, index + 1, &reply);
        }
        progress.inc(1);
        results.push(TurnResult {
            conversation: conversation.id.clone(),
            turn: index + 1,
            latency,
            reply,
        });
    }
    // The conversation is over: its history need not stay in memory.
    swarm.forget(&session);
    results
}

/// One line on stdout for a turn that ended: its acknowledgement when it
/// was answered (the answer is in the journal by then), else its failure.
fn acknowledge(conversation: &str, turn: usize, reply: &Reply) {
    let line = match reply {
        Reply::Answer { answer, .. } => serde_json::json!({
            "ack": answer.outcome.trace_id,
            "conversation": conversation,
            "turn": turn,
        }),
        Reply::Failed { error, .. } => serde_json::json!({
            "failed": error,
            "conversation": conversation,
            "turn": turn,
        }),
    };
    // A reader that went away is the client's business; the run goes on.
    let _ = super::print_stdout(&format!("{line}\n"));
}

/// A bar on stderr, hidden when stderr is not a terminal (tests, CI, logs).
fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {elapsed} elapsed, eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}
