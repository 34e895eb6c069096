//! `baton ask SWARM "message"`: one question to a swarm.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use baton::actor::baton::{Baton, start_swarm};
use baton::actor::supervisor::SupervisorMsg;
use baton::knowledge::KnowledgeIndex;
use baton::routing::pool::Pool;
use baton::routing::router::{Router, ServedBy};
use baton::template;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Swarm directory, or a name under ./agents/.
    swarm: String,
    /// The question.
    message: String,
    /// Print the answer with its classification, attempts and trace as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    eprint!("{}", config.warnings);
    let dir = template::resolve_swarm_dir(&args.swarm);
    let swarm = match template::load_swarm(&dir, &config) {
        Ok(loaded) => loaded.swarm,
        Err(error) => {
            eprint!("{}", error.diagnostics());
            return Ok(ExitCode::FAILURE);
        }
    };
    let knowledge = if swarm.knowledge.is_empty() {
        None
    } else {
        Some(Arc::new(KnowledgeIndex::build(
            &dir.join("knowledge"),
            &swarm.knowledge,
        )?))
    };
    let longest = config
        .routes
        .values()
        .map(|r| r.deadlines.total)
        .max()
        .unwrap_or(Duration::from_secs(120));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let router = Arc::new(Router::new(&config, Pool::from_config(&config)?)?);
        let (root, handle) = Baton::start(router, config.health.clone()).await?;
        let supervisor = start_swarm(&root, Arc::new(swarm), knowledge)
            .await
            .map_err(anyhow::Error::msg)?;
        let answer = supervisor
            .call(
                |reply| SupervisorMsg::Ask {
                    text: args.message.clone(),
                    session: None,
                    reply,
                },
                Some(longest + Duration::from_secs(5)),
            )
            .await?;
        root.stop(None);
        let _ = handle.await;
        let answer = match answer {
            ractor::rpc::CallResult::Success(answer) => answer,
            other => anyhow::bail!("the swarm did not answer: {other:?}"),
        };
        match answer {
            Ok(answer) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                } else {
                    println!("{}", answer.outcome.response.text.trim_end());
                    let served = match &answer.outcome.served_by {
                        ServedBy::Provider { id } => format!("provider {id}"),
                        ServedBy::Cache { age } => format!("cache ({age:?} old)"),
                        ServedBy::Extractive => "extractive surrogate (knowledge base)".into(),
                    };
                    eprintln!(
                        "\n-- worker {} ({:?}, confidence {:.2}); served by {served}{}{}; trace {}",
                        answer.classification.worker,
                        answer.classification.decided_by,
                        answer.classification.confidence,
                        if answer.outcome.degraded {
                            ", degraded"
                        } else {
                            ""
                        },
                        if answer.needs_review {
                            ", needs review"
                        } else {
                            ""
                        },
                        answer.outcome.trace_id
                    );
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
