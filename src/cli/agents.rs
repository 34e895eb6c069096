//! `baton agents SWARM`: what a swarm is made of and which rules reach whom.

use std::fmt::Write as _;
use std::process::ExitCode;

use baton::swarm::{AgentSpec, RouteSource, RuleKind, Stakes, Swarm};
use baton::template;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Swarm directory, or a name under ./agents/.
    swarm: String,
    /// Print the loaded swarm as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let config = cli.config()?;
    let dir = template::resolve_swarm_dir(&args.swarm);
    let loaded = match template::load_swarm(&dir, &config) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprint!("{}", error.diagnostics());
            eprintln!(
                "{} does not validate; run `baton validate {}`",
                dir.display(),
                args.swarm
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&loaded.swarm)?);
    } else {
        print!("{}", render(&loaded.swarm));
        if !loaded.warnings.is_empty() {
            println!(
                "\n{} warning(s); `baton validate {}` shows them",
                loaded.warnings.len(),
                args.swarm
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The plain-text listing.
pub fn render(swarm: &Swarm) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "swarm {} ({})", swarm.name, swarm.dir.display());
    match swarm.memory.files.split_first() {
        Some((root, imports)) => {
            let _ = writeln!(
                out,
                "memory: {} ({} lines{})",
                file_name(&root.path),
                swarm.memory.text().lines().count(),
                if imports.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", imports {}",
                        imports
                            .iter()
                            .map(|f| file_name(&f.path))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        None => {
            let _ = writeln!(out, "memory: none (no CLAUDE.md)");
        }
    }
    let _ = writeln!(out, "\nsupervisor");
    agent(&mut out, swarm, swarm.supervisor());
    let _ = writeln!(out, "\nworkers");
    for worker in swarm.workers() {
        agent(&mut out, swarm, worker);
    }
    let _ = writeln!(out, "\nrules");
    for (index, rule) in swarm.rules.iter().enumerate() {
        let reach: Vec<&str> = swarm
            .agents
            .iter()
            .filter(|a| a.rules.iter().any(|id| id.0 == index))
            .map(|a| a.id.0.as_str())
            .collect();
        let how = match rule.kind {
            RuleKind::Always => "always".to_owned(),
            RuleKind::AutoAttached => format!("globs {}", rule.globs.join(",")),
            RuleKind::AgentRequested => format!(
                "on request: \"{}\"",
                rule.description.as_deref().unwrap_or_default()
            ),
            RuleKind::Manual => "manual".to_owned(),
        };
        let reach = match rule.kind {
            RuleKind::AgentRequested => "any agent whose request matches".to_owned(),
            _ if reach.is_empty() => "no agent".to_owned(),
            _ => reach.join(", "),
        };
        let _ = writeln!(out, "  {:<18} {how} -> {reach}", rule.name);
    }
    let _ = writeln!(out, "\nknowledge: {} file(s)", swarm.knowledge.len());
    out
}

fn agent(out: &mut String, swarm: &Swarm, agent: &AgentSpec) {
    let source = match agent.route_source {
        RouteSource::Explicit => "",
        RouteSource::Model => " (from model:)",
        RouteSource::Inherited => " (model: inherit)",
        RouteSource::Default => " (default)",
    };
    let _ = writeln!(
        out,
        "  {:<14} route {}{source}, stakes {}{}",
        agent.id.0,
        agent.route,
        match agent.stakes {
            Stakes::Low => "low",
            Stakes::High => "high",
        },
        agent
            .template
            .as_ref()
            .map(|t| format!(", from {t}"))
            .unwrap_or_default()
    );
    let description = agent.description.lines().next().unwrap_or_default();
    if !description.is_empty() {
        let _ = writeln!(out, "      {}", truncate(description, 100));
    }
    if !agent.intents.is_empty() {
        let _ = writeln!(
            out,
            "      intents: {}",
            truncate(&agent.intents.join(", "), 100)
        );
    }
    if !agent.examples.is_empty() {
        let _ = writeln!(out, "      examples: {}", agent.examples.len());
    }
    if !agent.requires.is_empty() {
        let requires: Vec<&str> = agent.requires.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(out, "      requires: {}", requires.join(", "));
    }
    if !agent.delegates.is_empty() {
        let delegates: Vec<&str> = agent.delegates.iter().map(|d| d.0.as_str()).collect();
        let _ = writeln!(out, "      delegates: {}", delegates.join(", "));
    }
    let rules: Vec<&str> = agent
        .rules
        .iter()
        .map(|id| swarm.rule(*id).name.as_str())
        .collect();
    let requestable: Vec<&str> = swarm
        .requestable_rules()
        .map(|(_, r)| r.name.as_str())
        .collect();
    let _ = writeln!(
        out,
        "      rules: {}{}",
        if rules.is_empty() {
            "none".to_owned()
        } else {
            rules.join(", ")
        },
        if requestable.is_empty() {
            String::new()
        } else {
            format!("; on request: {}", requestable.join(", "))
        }
    );
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}
