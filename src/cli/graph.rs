//! `baton graph`: the capability/dependency graph of the policy — drawn
//! (`--format text|dot|mermaid|json|svg`), questioned (`services`, `spof`,
//! `blast-radius NODE`, `check`) and compared across policy versions
//! (`diff A B`).
//!
//! Which graph: `--version N` is the snapshot stored with policy version
//! N. Otherwise the active policy version when one has been applied, else
//! the config and swarm files (as `baton validate` finds them). `check` is
//! the exception: it reads the files unless `--version` is given, so it
//! can gate the CI of a swarm repository before anything is applied.
//!
//! When a store exists, providers, agents and contracts carry live facts
//! from it (breakers, health, error rates, p95, bindings) over `--since`.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use baton::config::duration::parse_duration;
use baton::config::{Config, DEFAULT_CONFIG, EMBEDDED_PATH};
use baton::graph::analysis::{self, Level, Outage, Severity};
use baton::graph::{self, DependencyGraph, EdgeKind, Node, NodeKind, render};
use baton::policy;
use baton::store::Store;
use baton::store::graph::GraphSnapshots;
use baton::store::health::now_ns;
use baton::store::policy::{Policies, PolicyVersion};
use baton::template;
use serde::Serialize;

use super::Cli;
use super::admin::{self, Output};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// How to draw the graph: a text summary, Graphviz DOT, Mermaid, JSON
    /// (every node and edge with attributes), or SVG laid out by Baton.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the drawing to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Which graph, and how to read it; every subcommand takes these.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// The snapshot stored with policy version N (`3` or `v3`).
    #[arg(long = "version", global = true, value_name = "N", value_parser = parse_version)]
    version: Option<u64>,
    /// Only this swarm (a directory, or a name under ./agents/); repeatable.
    #[arg(long = "swarm", global = true, value_name = "SWARM")]
    swarms: Vec<String>,
    /// Count only providers whose API key is set in this environment: what
    /// this machine could reach now, rather than what the policy allows.
    #[arg(long, global = true)]
    keys_set: bool,
    /// The period of the live facts.
    #[arg(long, global = true, default_value = "1h", value_parser = parse_duration)]
    since: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Dot,
    Mermaid,
    Json,
    Svg,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// For every agent: the providers able to serve it in full (and their
    /// failure domains) and the degraded fallbacks left behind them.
    Services {
        #[arg(long)]
        json: bool,
    },
    /// For every agent: the failure domains and providers whose loss alone
    /// leaves it without full service.
    Spof {
        #[arg(long)]
        json: bool,
    },
    /// What loses service, fails over or degrades if NODE goes down: a
    /// provider, a failure domain or a model (`openai-mini`, `domain:openai`).
    BlastRadius {
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Single points of failure, capability gaps, unreachable providers and
    /// routes without an independent fallback; exit 1 on any error finding.
    Check {
        #[arg(long)]
        json: bool,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// The nodes and edges that differ between two policy versions.
    Diff {
        #[arg(value_parser = parse_version)]
        a: u64,
        #[arg(value_parser = parse_version)]
        b: u64,
        #[arg(long)]
        json: bool,
    },
}

fn parse_version(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix('v').unwrap_or(text);
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "expected a version number such as `3` or `v3`, found `{text}`"
        )),
    }
}

/// Runs against the store (here or through its holder's admin socket)
/// when there is one, else from the files alone.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let needs_store =
        args.source.version.is_some() || matches!(args.command, Some(Command::Diff { .. }));
    let files_only = matches!(args.command, Some(Command::Check { .. })) && !needs_store;
    let database = cli.state.join(baton::store::DATABASE_DIR);
    if needs_store || (!files_only && database.exists()) {
        return admin::with_store(cli, |store, out| exec(cli, args, Some(store), out));
    }
    let mut out = Output::local();
    let code = exec(cli, args, None, &mut out);
    match code {
        Ok(code) => out.print(code),
        Err(error) => {
            out.print(ExitCode::FAILURE)?;
            Err(error)
        }
    }
}

pub fn exec(
    cli: &Cli,
    args: &Args,
    store: Option<&Store>,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    if let Some(Command::Diff { a, b, json }) = &args.command {
        let store =
            store.context("`graph diff` compares stored policy versions; there is no store")?;
        let before = stored_graph(store, *a)?.snapshot();
        let after = stored_graph(store, *b)?.snapshot();
        let changes = graph::diff::diff(&before, &after);
        if *json {
            let _ = writeln!(out.stdout, "{}", serde_json::to_string_pretty(&changes)?);
        } else if changes.is_empty() {
            let _ = writeln!(out.stderr, "v{a} and v{b} have the same graph");
        } else {
            out.stdout.push_str(&changes.render());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let files_only = matches!(args.command, Some(Command::Check { .. }));
    let (mut graph, origin) = load(cli, &args.source, store, files_only, out)?;
    if let (Some(store), false) = (store, files_only) {
        let until = now_ns();
        let since =
            until.saturating_sub(args.source.since.as_nanos().min(u128::from(u64::MAX)) as u64);
        graph.live = Some(graph::live::read(
            store,
            &graph,
            &keys_here(&graph),
            since,
            until,
        )?);
    }
    let outage = if args.source.keys_set {
        missing_keys(&graph)
    } else {
        Outage::none()
    };
    match &args.command {
        None => draw(&graph, &origin, args, out),
        Some(Command::Services { json }) => {
            let services = analysis::services(&graph, &outage);
            if *json {
                print_json(out, &services)?;
            } else {
                out.stdout.push_str(&services_table(&services));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Spof { json }) => {
            let spofs = analysis::spof(&graph, &outage);
            if *json {
                print_json(out, &spofs)?;
            } else {
                out.stdout.push_str(&spof_table(&spofs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::BlastRadius { node, json }) => {
            let target = analysis::resolve(&graph, node)?;
            let blast = analysis::blast_radius(&graph, target, &outage);
            if *json {
                print_json(out, &blast)?;
            } else {
                out.stdout.push_str(&blast_table(&blast));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check { json, strict }) => {
            let findings = analysis::check(&graph, &outage);
            let failing = findings
                .iter()
                .filter(|f| f.severity == Severity::Error || *strict)
                .count();
            if *json {
                print_json(out, &findings)?;
            } else {
                for finding in &findings {
                    let severity = match finding.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    };
                    let _ = writeln!(
                        out.stdout,
                        "{severity}[{}]: {}",
                        finding.rule.as_str(),
                        finding.message
                    );
                }
                let _ = writeln!(
                    out.stderr,
                    "{origin}: {} finding(s), {failing} failing the check",
                    findings.len()
                );
            }
            Ok(if failing > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(Command::Diff { .. }) => unreachable!("handled above"),
    }
}

fn print_json(out: &mut Output, value: &impl Serialize) -> anyhow::Result<()> {
    let _ = writeln!(out.stdout, "{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Whether each provider's key is set in this process's environment.
pub(super) fn keys_here(graph: &DependencyGraph) -> HashMap<String, bool> {
    graph
        .nodes_of(NodeKind::Provider)
        .filter_map(|(_, node)| match node {
            Node::Provider {
                name,
                key_env: Some(env),
                ..
            } => Some((
                name.clone(),
                std::env::var_os(env).is_some_and(|v| !v.is_empty()),
            )),
            _ => None,
        })
        .collect()
}

/// The providers whose key is missing here, as an outage.
fn missing_keys(graph: &DependencyGraph) -> Outage {
    let keys = keys_here(graph);
    let mut outage = Outage::none();
    for (index, node) in graph.nodes_of(NodeKind::Provider) {
        if keys.get(&node.label()) == Some(&false) {
            outage.providers.insert(index);
        }
    }
    outage
}

/// The graph the arguments ask for, and a line saying where it came from.
fn load(
    cli: &Cli,
    source: &SourceArgs,
    store: Option<&Store>,
    files_only: bool,
    out: &mut Output,
) -> anyhow::Result<(DependencyGraph, String)> {
    if let Some(version) = source.version {
        let store = store.context("--version reads the store; there is none")?;
        let graph = stored_graph(store, version)?;
        return Ok((
            only_swarms(graph, &source.swarms, out)?,
            format!("policy v{version}"),
        ));
    }
    if !files_only && let Some(store) = store {
        let policies = Policies::new(store)?;
        if let Some(active) = policies.active_number()? {
            let graph = stored_graph(store, active)?;
            return Ok((
                only_swarms(graph, &source.swarms, out)?,
                format!("policy v{active} (active)"),
            ));
        }
    }
    let (config_path, config) = config_here(cli, out)?;
    // The swarms beside the config, as `policy apply` takes them; a config
    // kept apart from any swarms (examples/demo/) is read with ./agents/.
    let agents = config_path
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join("agents"))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| out.cwd.join("agents"));
    let dirs: Vec<PathBuf> = if source.swarms.is_empty() {
        if agents.is_dir() {
            template::swarm_dirs(&agents)
        } else {
            Vec::new()
        }
    } else {
        source
            .swarms
            .iter()
            .map(|name| {
                let path = out.resolve(Path::new(name));
                if path.is_dir() {
                    path
                } else {
                    agents.join(name)
                }
            })
            .collect()
    };
    let graph = only_swarms(build_from(&config, &dirs, out)?, &source.swarms, out)?;
    let origin = config_path.map_or_else(|| EMBEDDED_PATH.to_owned(), |p| p.display().to_string());
    Ok((graph, origin))
}

/// The config as DESIGN.md finds it, relative to where the command was
/// run (which, through the admin socket, is not this process's directory).
fn config_here(cli: &Cli, out: &Output) -> anyhow::Result<(Option<PathBuf>, Config)> {
    let here = std::env::current_dir().ok().as_deref() == Some(out.cwd.as_path());
    let path = cli
        .config
        .as_deref()
        .map(|p| out.resolve(p))
        .or_else(|| {
            here.then(|| std::env::var_os("BATON_CONFIG").filter(|p| !p.is_empty()))
                .flatten()
                .map(|p| out.resolve(Path::new(&p)))
        })
        .or_else(|| Some(out.cwd.join("baton.toml")).filter(|p| p.is_file()));
    match path {
        Some(path) => {
            let config = Config::load(&path)?;
            Ok((Some(path), config))
        }
        None => Ok((
            None,
            Config::parse(DEFAULT_CONFIG, Path::new(EMBEDDED_PATH))?,
        )),
    }
}

/// Loads each swarm directory against `config` and builds the graph; a
/// swarm that does not validate is an error with its findings.
fn build_from(
    config: &Config,
    dirs: &[PathBuf],
    out: &mut Output,
) -> anyhow::Result<DependencyGraph> {
    let mut swarms = Vec::new();
    for dir in dirs {
        match template::load_swarm(dir, config) {
            Ok(loaded) => swarms.push(loaded.swarm),
            Err(error) => {
                out.stderr.push_str(&error.diagnostics().to_string());
                anyhow::bail!(
                    "{} does not validate; run `baton validate {}`",
                    dir.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(graph::build(config, &swarms))
}

/// The graph of a stored policy version: its snapshot, else built from its
/// files (a version made before snapshots were kept).
fn stored_graph(store: &Store, version: u64) -> anyhow::Result<DependencyGraph> {
    if let Some(snapshot) = GraphSnapshots::new(store)?.get(version)? {
        return Ok(DependencyGraph::from_snapshot(snapshot));
    }
    let stored = Policies::new(store)?.get(version)?;
    version_graph(&stored, store)
}

fn state_dir(store: &Store) -> PathBuf {
    store
        .path()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Builds the graph of a version from its files.
fn version_graph(version: &PolicyVersion, store: &Store) -> anyhow::Result<DependencyGraph> {
    let sources = policy::served_from(version, &state_dir(store))?;
    let config = Config::load(&sources.config)?;
    let dirs: Vec<PathBuf> = sources
        .swarms()
        .iter()
        .map(|name| sources.agents.join(name))
        .collect();
    let mut ignored = Output::default();
    build_from(&config, &dirs, &mut ignored)
        .with_context(|| format!("the files of policy v{}", version.number))
}

/// Saves the snapshot of a version just made (`policy apply`, `rollback`).
pub fn save_snapshot(version: &PolicyVersion, store: &Store) -> anyhow::Result<()> {
    let graph = version_graph(version, store)?;
    GraphSnapshots::new(store)?.save(version.number, &graph.snapshot())?;
    Ok(())
}

/// Keeps only the named swarms' agents and contracts.
fn only_swarms(
    graph: DependencyGraph,
    names: &[String],
    out: &Output,
) -> anyhow::Result<DependencyGraph> {
    if names.is_empty() {
        return Ok(graph);
    }
    let wanted: BTreeSet<String> = names
        .iter()
        .map(|name| {
            let path = out.resolve(Path::new(name));
            path.file_name()
                .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    let known: BTreeSet<String> = graph
        .nodes_of(NodeKind::Swarm)
        .map(|(_, node)| node.label())
        .collect();
    if let Some(missing) = wanted.iter().find(|w| !known.contains(*w)) {
        anyhow::bail!(
            "this policy serves no swarm `{missing}` (it serves: {})",
            known.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let starts: Vec<_> = wanted
        .iter()
        .filter_map(|name| graph.index(&format!("swarm:{name}")))
        .collect();
    Ok(graph.reachable_from(&starts))
}

fn draw(
    graph: &DependencyGraph,
    origin: &str,
    args: &Args,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let text = match args.format {
        Format::Text => summary(graph, origin),
        Format::Dot => render::dot(graph),
        Format::Mermaid => render::mermaid(graph),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&render::json(graph))?),
        Format::Svg => render::svg::svg(graph),
    };
    match &args.output {
        Some(path) => {
            let path = out.resolve(path);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let _ = writeln!(out.stderr, "wrote {}", path.display());
        }
        None => out.stdout.push_str(&text),
    }
    Ok(ExitCode::SUCCESS)
}

/// Pads cells to column widths.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn join_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

fn services_table(services: &[analysis::Service]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                format!("{}/{}", s.swarm, s.agent),
                s.route.clone().unwrap_or_else(|| "-".into()),
                join_or(
                    &s.requires.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                    "-",
                ),
                format!("{} ({} domain(s))", s.full.len(), s.full_domains.len()),
                join_or(&s.full, "none"),
                join_or(&s.degraded, "none"),
            ]
        })
        .collect();
    table(
        &["AGENT", "ROUTE", "REQUIRES", "FULL", "FULL VIA", "DEGRADED"],
        &rows,
    )
}

pub(super) fn spof_table(spofs: &[analysis::Spof]) -> String {
    let rows: Vec<Vec<String>> = spofs
        .iter()
        .map(|s| {
            let point = if s.no_full_service {
                "no full service at all".to_owned()
            } else if s.domains.is_empty() && s.providers.is_empty() {
                "none".to_owned()
            } else {
                let mut parts = Vec::new();
                if !s.domains.is_empty() {
                    parts.push(format!("domain {}", s.domains.join(", ")));
                }
                if !s.providers.is_empty() {
                    parts.push(format!("provider {}", s.providers.join(", ")));
                }
                parts.join("; ")
            };
            vec![
                format!("{}/{}", s.swarm, s.agent),
                s.route.clone().unwrap_or_else(|| "-".into()),
                point,
                if s.any() {
                    join_or(&s.left, "nothing")
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let count = spofs.iter().filter(|s| s.any()).count();
    let mut text = table(
        &[
            "AGENT",
            "ROUTE",
            "SINGLE POINT OF FAILURE",
            "LEFT WHEN IT FAILS",
        ],
        &rows,
    );
    let _ = writeln!(
        text,
        "\n{count} of {} agent(s) have a single point of failure at full service",
        spofs.len()
    );
    text
}

fn blast_table(blast: &analysis::BlastRadius) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "if {} goes down: providers out: {}",
        blast.node,
        join_or(&blast.providers_down, "none")
    );
    let rows = |items: &[analysis::Affected]| -> Vec<Vec<String>> {
        items
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.impact.as_str().to_owned(),
                    a.was.clone().unwrap_or_else(|| "-".into()),
                    a.served_by.clone().unwrap_or_else(|| "nothing".into()),
                ]
            })
            .collect()
    };
    for (title, items) in [("agents", &blast.agents), ("routes", &blast.routes)] {
        let _ = writeln!(text, "\n{title}");
        if items.is_empty() {
            let _ = writeln!(text, "  none affected");
        } else {
            text.push_str(&table(
                &["NAME", "IMPACT", "SERVED BY", "DURING THE OUTAGE"],
                &rows(items),
            ));
        }
    }
    let _ = writeln!(text, "\nswarms");
    if blast.swarms.is_empty() {
        let _ = writeln!(text, "  none affected");
    }
    for swarm in &blast.swarms {
        let counts: Vec<String> = swarm
            .agents
            .iter()
            .map(|(impact, n)| format!("{n} {impact}"))
            .collect();
        let _ = writeln!(
            text,
            "  {}: {} ({})",
            swarm.name,
            swarm.impact.as_str(),
            counts.join(", ")
        );
    }
    text
}

/// The text view: where the graph came from, each route's failover order
/// with domains, each swarm's agents with their service, the providers.
pub(super) fn summary(graph: &DependencyGraph, origin: &str) -> String {
    let mut text = String::new();
    let count = |kind| graph.nodes_of(kind).count();
    let _ = writeln!(
        text,
        "{origin}: {} swarm(s), {} agent(s), {} route(s), {} provider(s) in {} failure domain(s)",
        count(NodeKind::Swarm),
        count(NodeKind::Agent),
        count(NodeKind::Route),
        count(NodeKind::Provider),
        count(NodeKind::Domain)
    );
    let _ = writeln!(text, "\nroutes (failover order; ⇢ degraded fallbacks)");
    for (route, node) in graph.nodes_of(NodeKind::Route) {
        let mut steps = Vec::new();
        let mut domains = BTreeSet::new();
        for (target, edge) in graph.targets(route, EdgeKind::ServedBy) {
            let provider = graph.node(target);
            if let Node::Provider { domain, .. } = provider {
                domains.insert(domain.clone());
                let down = if graph.is_down(target) { " DOWN" } else { "" };
                steps.push(format!(
                    "{} {} ({domain}){down}",
                    edge.order.unwrap_or(0),
                    provider.label()
                ));
            }
        }
        let fallbacks: Vec<String> = graph
            .targets(route, EdgeKind::FallsBackTo)
            .into_iter()
            .map(|(target, _)| format!(" ⇢ {}", graph.node(target).label()))
            .collect();
        let companies = if domains.len() == 1 {
            "  [one domain]"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  {:<12} {}{}{companies}",
            node.label(),
            steps.join(" → "),
            fallbacks.concat()
        );
    }
    let services = analysis::services(graph, &Outage::none());
    let mut swarm = "";
    for service in &services {
        if service.swarm != swarm {
            swarm = &service.swarm;
            let _ = writeln!(text, "\nswarm {swarm}");
        }
        let level = match service.level {
            Level::Full => format!(
                "full via {} provider(s) in {} domain(s)",
                service.full.len(),
                service.full_domains.len()
            ),
            Level::Degraded => format!("degraded only ({})", service.degraded.join(", ")),
            Level::None => "no service".to_owned(),
        };
        let binding = graph
            .live
            .as_ref()
            .and_then(|live| {
                live.bindings
                    .get(&format!("agent:{}/{}", service.swarm, service.agent))
            })
            .map(|b| format!("; bound to {}", b.provider))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  {:<12} route {:<10} {level}{binding}",
            service.agent,
            service.route.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(text, "\nproviders");
    for (_, node) in graph.nodes_of(NodeKind::Provider) {
        if let Node::Provider {
            name,
            domain,
            model,
            capabilities,
            ..
        } = node
        {
            let caps: Vec<&str> = capabilities.iter().map(|c| c.as_str()).collect();
            let mut line = format!(
                "  {name:<18} domain {domain:<11} {:<34} {}",
                model.as_deref().unwrap_or("-"),
                caps.join(", ")
            );
            if let Some(facts) = graph.live.as_ref().and_then(|l| l.providers.get(name)) {
                let _ = write!(
                    line,
                    "  [{}{}, {} attempt(s){}]",
                    facts.health.as_deref().unwrap_or("no health data"),
                    facts
                        .breaker
                        .as_deref()
                        .filter(|b| *b != "closed")
                        .map(|b| format!(", breaker {b}"))
                        .unwrap_or_default(),
                    facts.attempts,
                    facts
                        .p95_ms
                        .map(|p| format!(", p95 {p:.0} ms"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(text, "{line}");
        }
    }
    text
}
