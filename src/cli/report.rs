//! `baton report [--since 1h] [--json]`: the KPI report over a period —
//! per provider and per route — from the store's telemetry (raw events
//! and the per-minute aggregates of compacted minutes).
//!
//! The SLA targets (`sla_p95`) and the objective (`[report] slo`) come
//! from the policy that serves: the store's active version once one has
//! been applied, else the config the command line names (read from the
//! client's directory even when the report runs inside the process
//! holding the store). Without a readable config the report still runs,
//! without latency targets and with the default objective, and says so.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use baton::config::Config;
use baton::config::duration::parse_duration;
use baton::store::Store;
use baton::store::health::now_ns;
use baton::telemetry::report::{ReportOptions, build};

use super::Cli;
use super::admin::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The period: from this long ago until now (`30m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    since: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The config for targets: the active policy version, else as found from
/// the client's directory: `--config`, `BATON_CONFIG`, `./baton.toml`, the
/// embedded default.
fn config(cli: &Cli, store: &Store, out: &Output) -> anyhow::Result<Config> {
    let state_dir = store.path().parent().unwrap_or(Path::new("."));
    if let Some(active) = baton::policy::active_sources(store, state_dir)? {
        return Ok(Config::load(&active.config)?);
    }
    let named = cli.config.clone().or_else(|| {
        std::env::var_os("BATON_CONFIG")
            .filter(|p| !p.is_empty())
            .map(Into::into)
    });
    if let Some(path) = named {
        return Ok(Config::load(&out.resolve(&path))?);
    }
    let local = out.resolve(Path::new("baton.toml"));
    if local.is_file() {
        return Ok(Config::load(&local)?);
    }
    Ok(Config::discover(None)?)
}

pub fn exec(cli: &Cli, args: &Args, store: &Store, out: &mut Output) -> anyhow::Result<ExitCode> {
    let until = now_ns();
    let since = until.saturating_sub(args.since.as_nanos().min(u128::from(u64::MAX)) as u64);
    let mut options = ReportOptions::new(since, until);
    match config(cli, store, out) {
        Ok(config) => options = options.with_config(&config),
        Err(error) => out.stderr.push_str(&format!(
            "warning: no SLA targets and the default objective: {error:#}\n"
        )),
    }
    let report = build(store, &options)?;
    if args.json {
        out.stdout
            .push_str(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        out.stdout.push_str(&report.to_table());
    }
    Ok(ExitCode::SUCCESS)
}
