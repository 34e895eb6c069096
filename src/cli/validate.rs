//! `baton validate [SWARM]...`: check swarms and the config.

use std::process::ExitCode;

use baton::config::ConfigError;
use baton::diagnostic::Diagnostics;
use baton::template::{self, TemplateError};

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Swarm directories or names under ./agents/, or a directory of swarms
    /// (default: every swarm under ./agents/).
    swarms: Vec<String>,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let config = match cli.config() {
        Ok(config) => config,
        Err(error) => {
            if let Some(ConfigError::Invalid(diagnostics)) = error.downcast_ref::<ConfigError>() {
                print!("{diagnostics}");
                println!(
                    "config: {} error(s); swarms not checked",
                    diagnostics.error_count()
                );
                return Ok(ExitCode::FAILURE);
            }
            return Err(error);
        }
    };
    print!("{}", config.warnings);
    let requested: Vec<String> = if args.swarms.is_empty() {
        vec!["agents".into()]
    } else {
        args.swarms.clone()
    };
    let mut dirs = Vec::new();
    for argument in &requested {
        dirs.extend(template::swarm_dirs(&template::resolve_swarm_dir(argument)));
    }
    let mut failed = false;
    for dir in dirs {
        let (diagnostics, summary) = match template::load_swarm(&dir, &config) {
            Ok(loaded) => {
                let swarm = &loaded.swarm;
                let summary = format!(
                    "ok: {} ({} agents, {} rules, {} knowledge files), {} warning(s)",
                    dir.display(),
                    swarm.agents.len(),
                    swarm.rules.len(),
                    swarm.knowledge.len(),
                    loaded.warnings.len()
                );
                (loaded.warnings, summary)
            }
            Err(error) => {
                failed = true;
                let diagnostics: Diagnostics = match &error {
                    TemplateError::Invalid(d) => d.clone(),
                    other => other.diagnostics(),
                };
                let summary = format!(
                    "failed: {}: {} error(s), {} warning(s)",
                    dir.display(),
                    diagnostics.error_count(),
                    diagnostics.warning_count()
                );
                (diagnostics, summary)
            }
        };
        print!("{diagnostics}");
        println!("{summary}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
