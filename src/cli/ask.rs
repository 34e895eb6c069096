//! `baton ask SWARM "message" [--session ID] [--json]`: one question to a
//! swarm.
//!
//! The request is journaled in the store; with `--session` the turn joins
//! that conversation's stored history (one `ask` per turn works as a
//! conversation).

use std::process::ExitCode;

use anyhow::Context;

use super::launch::launch;
use super::{Cli, show};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Swarm directory, or a name under ./agents/.
    swarm: String,
    /// The question.
    message: String,
    /// The conversation this turn belongs to.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Print the answer with its classification, attempts and trace as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let swarm = launch(cli, &args.swarm).await?;
        let answer = swarm.ask(&args.message, args.session.as_deref()).await;
        let queued = match &answer {
            Ok(Ok(answer)) => swarm.queue_for_review(&args.message, answer),
            _ => Ok(None),
        };
        swarm.stop().await;
        match answer? {
            Ok(answer) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                } else {
                    println!("{}", answer.outcome.response.text.trim_end());
                    eprintln!("\n{}", show::status_line(&answer));
                }
                match queued {
                    Ok(Some(id)) => eprintln!("-- queued for review as {id} (baton review list)"),
                    Ok(None) => {}
                    Err(error) => {
                        eprintln!("warning: the answer needs review but was not queued: {error:#}")
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("error: {error}");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
