//! `baton keys create|list|revoke`: the gateway's virtual keys. Like every
//! store command they run here or, while `baton serve` holds the store,
//! inside it through its admin socket; the gateway follows the `keys` tree,
//! so a new or revoked key counts from its next request.

use std::fmt::Write as _;
use std::process::ExitCode;

use baton::store::Store;
use baton::store::keys::{KeyRecord, Keys, generate, hash, now_ms, prefix_of};

use super::Cli;
use super::admin::Output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a key and print it (the only time it is shown: the store keeps
    /// its hash).
    Create(CreateArgs),
    /// Every key: name, prefix, scope, limits, spending (never the key).
    List {
        /// Print the keys as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke the key with this name or prefix.
    Revoke {
        #[arg(value_name = "NAME-OR-PREFIX")]
        who: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: String,
    /// Routes the key may use as `model` (default: every route).
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// Swarms the key may use as `swarm:NAME` (default: every swarm).
    #[arg(long, value_delimiter = ',')]
    swarms: Option<Vec<String>>,
    /// Requests per rolling minute.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per rolling minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// Spending limit, in the currency of the providers' costs.
    #[arg(long)]
    budget: Option<f64>,
    /// May create keys (within its own scope) through `POST /v1/keys`.
    #[arg(long)]
    admin: bool,
}

pub fn run(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    let exec = |store: &Store, out: &mut Output| exec(command, store, out);
    match command {
        Command::Create(_) => super::admin::with_store_creating(cli, exec),
        _ => super::admin::with_store(cli, exec),
    }
}

pub fn exec(command: &Command, store: &Store, out: &mut Output) -> anyhow::Result<ExitCode> {
    let keys = Keys::new(store)?;
    match command {
        Command::Create(args) => {
            if args.name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            if args.budget.is_some_and(|b| !b.is_finite() || b < 0.0) {
                anyhow::bail!("--budget must be a non-negative number");
            }
            if keys
                .all()?
                .iter()
                .any(|(_, r)| !r.revoked && r.name == args.name)
            {
                anyhow::bail!("a live key is already named `{}`", args.name);
            }
            let key = generate();
            let record = KeyRecord {
                name: args.name.clone(),
                prefix: prefix_of(&key),
                routes: args.routes.clone(),
                swarms: args.swarms.clone(),
                rpm: args.rpm,
                tpm: args.tpm,
                budget: args.budget,
                spent: 0.0,
                created_ms: now_ms(),
                revoked: false,
                admin: args.admin,
            };
            keys.insert(&hash(&key), &record)?;
            out.stdout.push_str(&format!("{key}\n"));
            out.stderr.push_str(&format!(
                "key `{}` created; it is shown only now: keep it somewhere safe\n",
                record.name
            ));
        }
        Command::List { json } => {
            let all: Vec<KeyRecord> = keys.all()?.into_iter().map(|(_, r)| r).collect();
            if *json {
                out.stdout
                    .push_str(&format!("{}\n", serde_json::to_string_pretty(&all)?));
                return Ok(ExitCode::SUCCESS);
            }
            if all.is_empty() {
                out.stdout
                    .push_str("no keys: the gateway is open to every local client\n");
            }
            let list = |l: &Option<Vec<String>>| l.as_ref().map_or("*".to_owned(), |l| l.join(","));
            let limit = |l: Option<String>| l.unwrap_or_else(|| "-".to_owned());
            for r in &all {
                let _ = writeln!(
                    out.stdout,
                    "{:<16} {}…  routes {} swarms {} rpm {} tpm {} budget {} spent {:.6}{}{}",
                    r.name,
                    r.prefix,
                    list(&r.routes),
                    list(&r.swarms),
                    limit(r.rpm.map(|v| v.to_string())),
                    limit(r.tpm.map(|v| v.to_string())),
                    limit(r.budget.map(|v| v.to_string())),
                    r.spent,
                    if r.admin { " admin" } else { "" },
                    if r.revoked { " REVOKED" } else { "" },
                );
            }
        }
        Command::Revoke { who } => {
            let revoked = keys.revoke(who)?;
            if revoked.is_empty() {
                anyhow::bail!("no live key is named `{who}` or has that prefix");
            }
            out.stdout
                .push_str(&format!("revoked: {}\n", revoked.join(", ")));
            if keys.all()?.iter().all(|(_, r)| r.revoked) {
                out.stderr.push_str(
                    "warning: no live key is left: the gateway no longer asks for keys\n",
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
