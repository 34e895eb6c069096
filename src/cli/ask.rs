//! `baton ask SWARM "message" [--session ID] [--json]`: one question to a
//! swarm.
//!
//! Sessions live in the swarm supervisor's memory for now, so `--session`
//! only groups turns within one process (durable sessions come with the
//! store); it is accepted here so that scripts can already pass one.

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
    let queue = cli.reviews();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let swarm = launch(cli, &args.swarm).await?;
        let answer = swarm.ask(&args.message, args.session.as_deref()).await;
        let name = swarm.name.clone();
        swarm.stop().await;
        match answer? {
            Ok(answer) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                } else {
                    println!("{}", answer.outcome.response.text.trim_end());
                    eprintln!("\n{}", show::status_line(&answer));
                }
                if let Some(id) = show::queue_for_review(&queue, &name, &args.message, &answer)? {
                    eprintln!("-- queued for review as {id} (baton review list)");
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
