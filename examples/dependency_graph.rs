//! Embedding Baton: read the capability/dependency graph of a policy — the
//! shipped `baton.toml` and the two shipped swarms — and ask it what a
//! user of the policy asks: which agents hang on a single provider or
//! failure domain, and what an outage of one company would do.
//!
//! Run from the repository's root: `cargo run --example dependency_graph`.

use std::path::Path;

use baton::config::Config;
use baton::graph::analysis::{self, Outage};

fn main() -> anyhow::Result<()> {
    let config = Config::load(Path::new("baton.toml"))?;
    let mut swarms = Vec::new();
    for dir in ["agents/support-bot", "agents/knowledge-qa"] {
        let loaded = baton::template::load_swarm(Path::new(dir), &config)
            .map_err(|e| anyhow::anyhow!("{}", e.diagnostics()))?;
        swarms.push(loaded.swarm);
    }
    let graph = baton::graph::build(&config, &swarms);

    println!("single points of failure at full service:");
    let spofs = analysis::spof(&graph, &Outage::none());
    for spof in spofs.iter().filter(|s| s.any()) {
        println!(
            "  {}/{}: domains {:?}, providers {:?}; left when it fails: {:?}",
            spof.swarm, spof.agent, spof.domains, spof.providers, spof.left
        );
    }
    if !spofs.iter().any(|s| s.any()) {
        println!("  none");
    }

    let openai = analysis::resolve(&graph, "openai")?;
    let blast = analysis::blast_radius(&graph, openai, &Outage::none());
    println!(
        "\nif {} goes down ({} out):",
        blast.node,
        blast.providers_down.join(", ")
    );
    for agent in &blast.agents {
        println!(
            "  {:<26} {:<12} {} -> {}",
            agent.name,
            agent.impact.as_str(),
            agent.was.as_deref().unwrap_or("-"),
            agent.served_by.as_deref().unwrap_or("nothing")
        );
    }

    println!("\nfindings of `baton graph check`:");
    for finding in analysis::check(&graph, &Outage::none()) {
        println!("  [{}] {}", finding.rule.as_str(), finding.message);
    }

    println!(
        "\nMermaid, for a markdown page:\n{}",
        baton::graph::render::mermaid(&graph)
    );
    Ok(())
}
