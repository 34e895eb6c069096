//! `baton init DIR --template NAME`: scaffold a swarm from a blueprint.

use std::path::PathBuf;
use std::process::ExitCode;

use baton::template::{self, blueprint};

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to create (must be absent or empty).
    #[arg(required_unless_present = "list")]
    dir: Option<PathBuf>,
    /// Blueprint to start from.
    #[arg(long, short, default_value = "supervisor-worker")]
    template: String,
    /// List the built-in blueprints and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    if args.list {
        for name in blueprint::names() {
            println!("{name}: {}", blueprint::agent_names(name).join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dir) = &args.dir else {
        anyhow::bail!("give a directory to create");
    };
    let written = blueprint::scaffold(&args.template, dir)?;
    println!(
        "created {} from blueprint `{}`:",
        dir.display(),
        args.template
    );
    for path in &written {
        println!("  {}", path.display());
    }
    let config = cli.config()?;
    match template::load_swarm(dir, &config) {
        Ok(loaded) => {
            print!("{}", loaded.warnings);
            println!(
                "validates clean; next: edit the agents, then `baton agents {}`",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            print!("{}", error.diagnostics());
            println!(
                "the new swarm does not validate against {}",
                config.path.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
