//! Embedding Baton: load a swarm and ask it a question while its primary
//! provider is down. Two mock upstreams run in-process on loopback (the
//! primary answering 503, the secondary healthy), so this needs no key and
//! no network.
//!
//! Run from the repository's root: `cargo run --example ask_with_failover`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton::actor::baton::{Baton, start_swarm};
use baton::actor::supervisor::SupervisorMsg;
use baton::config::Config;
use baton::knowledge::KnowledgeIndex;
use baton::provider::mock::{MockServer, Script};
use baton::routing::pool::Pool;
use baton::routing::router::Router;
use ractor::rpc::CallResult;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let down = Script::from_toml(
        "[[fault]]\nkind = \"status\"\nstatus = 503\n",
        Path::new("down"),
    )?;
    let primary = MockServer::start(([127, 0, 0, 1], 0).into(), down).await?;
    let secondary = MockServer::start(([127, 0, 0, 1], 0).into(), Script::default()).await?;

    // Every route of the swarm goes to the primary first, then the
    // secondary, then the extractive surrogate over the swarm's articles.
    let config = Config::parse(
        &format!(
            r#"default_route = "support"
[providers.primary]
kind = "openai"
model = "fast"
base_url = "{}/v1"
domain = "cloud-a"
capabilities = ["chat", "tools", "json", "streaming"]

[providers.secondary]
kind = "anthropic"
model = "steady"
base_url = "{}"
domain = "cloud-b"
capabilities = ["chat", "tools", "json", "streaming"]

[routes.support]
chain = ["primary", "secondary"]

[routes.fast]
chain = ["primary", "secondary"]
"#,
            primary.base_url(),
            secondary.base_url()
        ),
        Path::new("example.toml"),
    )?;

    let dir = Path::new("agents/support-bot");
    let swarm = baton::template::load_swarm(dir, &config)
        .map_err(|e| anyhow::anyhow!("{}", e.diagnostics()))?
        .swarm;
    let knowledge = KnowledgeIndex::build(&dir.join("knowledge"), &swarm.knowledge)?;

    let router = Arc::new(Router::new(&config, Pool::from_config(&config)?)?);
    let (root, handle) = Baton::start(router, config.health.clone()).await?;
    let supervisor = start_swarm(&root, Arc::new(swarm), Some(Arc::new(knowledge)))
        .await
        .map_err(anyhow::Error::msg)?;

    let question = "I was charged twice for my yearly plan. Can I get a refund?";
    let asked = supervisor
        .call(
            |reply| SupervisorMsg::Ask {
                text: question.to_owned(),
                session: None,
                reply,
            },
            Some(Duration::from_secs(60)),
        )
        .await?;
    let CallResult::Success(answer) = asked else {
        anyhow::bail!("the supervisor did not answer");
    };
    let answer = answer?;
    println!("Q: {question}");
    println!("worker: {}", answer.classification.worker);
    for attempt in &answer.outcome.attempts {
        let result = attempt
            .error
            .as_ref()
            .map_or("ok".to_owned(), |(label, _)| label.clone());
        println!("  tried {}: {result}", attempt.provider);
    }
    println!(
        "served by {} (fallback: {}, needs review: {})",
        baton::review::served_by_label(&answer.outcome),
        answer.outcome.fallback,
        answer.needs_review
    );
    println!("A: {}", answer.outcome.response.text);

    root.stop(None);
    handle.await?;
    primary.shutdown().await;
    secondary.shutdown().await;
    Ok(())
}
