//! `baton chat SWARM [--session ID] [--json]`: a conversation on stdin.
//!
//! One line is one user turn. Each answer goes to stdout; a one-line status
//! (worker, who served it, fallback, degraded, review, the failover path)
//! goes to stderr, so that `baton chat ... < turns.txt > answers.txt` keeps
//! the answers alone. Every turn is in one session, so the supervisor
//! replays the conversation so far to whichever provider answers next.
//! `/quit` or end of input ends the chat; the exit code is 1 if any turn
//! got no answer.
//!
//! Reading stdin blocks, so it happens on the main thread between turns,
//! outside the runtime; the actors run on the runtime's worker threads.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

use super::launch::launch;
use super::{Cli, show};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Swarm directory, or a name under ./agents/.
    swarm: String,
    /// The session the turns belong to (default: a new one).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Print each answer as one line of JSON (classification, attempts,
    /// usage, trace) instead of its text.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let swarm = runtime.block_on(launch(cli, &args.swarm))?;
    let session = args
        .session
        .clone()
        .unwrap_or_else(|| format!("chat-{}", uuid::Uuid::now_v7()));
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "-- chatting with {} in session {session}; /quit or Ctrl-D ends",
            swarm.name
        );
    }
    let mut failed = 0usize;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let result: anyhow::Result<()> = (|| loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        line.clear();
        if stdin.read_line(&mut line).context("cannot read stdin")? == 0 {
            return Ok(());
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if text == "/quit" || text == "/exit" {
            return Ok(());
        }
        match runtime.block_on(swarm.ask(text, Some(&session)))? {
            Ok(answer) => {
                let mut stdout = std::io::stdout().lock();
                if args.json {
                    writeln!(stdout, "{}", serde_json::to_string(&answer)?)?;
                } else {
                    writeln!(stdout, "{}", answer.outcome.response.text.trim_end())?;
                }
                stdout.flush()?;
                eprintln!("{}", show::status_line(&answer));
                match swarm.queue_for_review(text, &answer) {
                    Ok(Some(id)) => eprintln!("-- queued for review as {id}"),
                    Ok(None) => {}
                    Err(error) => {
                        eprintln!("warning: the answer needs review but was not queued: {error:#}")
                    }
                }
            }
            Err(error) => {
                failed += 1;
                eprintln!("error: {error}");
            }
        }
        if interactive {
            eprintln!();
        }
    })();
    runtime.block_on(swarm.stop());
    result?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
