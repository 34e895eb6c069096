//! The command line: argument parsing and one module per subcommand.
//!
//! Clap types stay here; subcommands turn them into calls on the library
//! and print results. Exit codes: 0 success, 1 the input had errors (or a
//! command failed), 2 bad usage (clap's own).

mod admin;
mod agents;
mod ask;
mod chat;
mod demo;
mod graph;
mod init;
mod keys;
mod launch;
mod mock_provider;
mod policy;
mod report;
mod review;
mod run;
mod serve;
mod show;
mod status;
mod store;
mod trace;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use baton::config::Config;
use baton::store::Store;

use self::admin::Output;

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Multi-LLM fallback router and agent orchestration engine"
)]
pub struct Cli {
    /// Config file (else $BATON_CONFIG, else ./baton.toml, else the built-in default).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory: the store (`state/`) and its admin socket live here.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "BATON_STATE",
        default_value = ".baton"
    )]
    state: PathBuf,
    /// More log output on stderr (-v info, -vv debug); BATON_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check swarms and the config; print errors and warnings like a compiler.
    Validate(validate::Args),
    /// List a swarm: supervisor, workers, routes, and which rules reach whom.
    Agents(agents::Args),
    /// Ask a swarm one question: classified, routed, answered.
    Ask(ask::Args),
    /// Talk to a swarm turn by turn on stdin (piped input works too).
    Chat(chat::Args),
    /// The main job end to end with no key: a swarm through a scripted
    /// outage of mock upstreams, then the report.
    Demo(demo::Args),
    /// Run a script of conversations against a swarm and summarise them.
    Run(run::Args),
    /// The OpenAI-compatible HTTP gateway over the policy's routes and swarms.
    Serve(serve::Args),
    /// The review queue: answers of high-stakes agents served by a fallback.
    #[command(subcommand)]
    Review(review::Command),
    /// The whole life of one request: classification, workers, attempts, answer.
    Trace(trace::Args),
    /// Providers' breakers and health, open requests, pending reviews.
    Status(status::Args),
    /// Per provider and per route: success, latency percentiles, uptime, MTTR, SLA, fallbacks.
    Report(report::Args),
    /// The store itself: check it, compact telemetry.
    #[command(subcommand)]
    Store(store::Command),
    /// Versions of the routing policy (baton.toml and its swarms' files):
    /// apply, history, show, diff, rollback.
    #[command(subcommand)]
    Policy(policy::Command),
    /// The capability/dependency graph: draw it, find single points of
    /// failure, an outage's blast radius, policy gaps; diff two versions.
    Graph(graph::Args),
    /// Virtual keys of the gateway: create, list, revoke.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Create a new swarm directory from a built-in blueprint.
    Init(init::Args),
    /// Run an OpenAI- and Anthropic-compatible upstream whose faults follow a script.
    MockProvider(mock_provider::Args),
}

/// Parses the process arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints every switch itself; the supervisor's warnings about
    // them would say it twice.
    let quiet = matches!(cli.command, Command::Demo(_));
    init_logging(cli.verbose, quiet);
    let result = match &cli.command {
        Command::Validate(args) => validate::run(&cli, args),
        Command::Agents(args) => agents::run(&cli, args),
        Command::Ask(args) => ask::run(&cli, args),
        Command::Chat(args) => chat::run(&cli, args),
        Command::Demo(args) => demo::run(&cli, args),
        Command::Run(args) => run::run(&cli, args),
        Command::Serve(args) => serve::run(&cli, args),
        Command::Review(command) => review::run(&cli, command),
        Command::Trace(args) => admin::with_store(&cli, |store, out| trace::exec(args, store, out)),
        Command::Status(args) => {
            admin::with_store(&cli, |store, out| status::exec(args, store, out))
        }
        Command::Report(args) => {
            admin::with_store(&cli, |store, out| report::exec(&cli, args, store, out))
        }
        Command::Store(command) => store::run(&cli, command),
        Command::Policy(command) => policy::run(&cli, command),
        Command::Graph(args) => graph::run(&cli, args),
        Command::Keys(command) => keys::run(&cli, command),
        Command::Init(args) => init::run(&cli, args),
        Command::MockProvider(args) => mock_provider::run(&cli, args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an
/// error worth a message: the output was for it alone.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

impl Cli {
    /// The config as DESIGN.md finds it; its errors are printed in full.
    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::discover(self.config.as_deref())?)
    }
}

/// Runs a store command against `store`, for the admin socket; `None` for
/// a command that does not work on the store.
fn store_exec(cli: &Cli, store: &Store, out: &mut Output) -> Option<anyhow::Result<ExitCode>> {
    match &cli.command {
        Command::Review(command) => Some(review::exec(command, store, out)),
        Command::Trace(args) => Some(trace::exec(args, store, out)),
        Command::Status(args) => Some(status::exec(args, store, out)),
        Command::Report(args) => Some(report::exec(cli, args, store, out)),
        Command::Store(command) => store::exec(command, store, out),
        Command::Policy(command) => Some(policy::exec(cli, command, store, out)),
        Command::Graph(args) => Some(graph::exec(cli, args, Some(store), out)),
        Command::Keys(command) => Some(keys::exec(command, store, out)),
        _ => None,
    }
}
