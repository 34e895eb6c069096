//! `baton demo [support-bot|knowledge-qa] [--json] [--keep-state DIR]`:
//! the main job end to end, with no API key and no network.
//!
//! It starts three mock upstreams on loopback — the providers of
//! `examples/demo/baton.toml`, `fast-primary` and `long-context` in
//! failure domain `cloud-a`, `secondary` in `cloud-b` — loads the
//! workload's swarm from `./agents/`, and plays the workload's
//! conversations, one starting every [`PACE`], while the fault scripts
//! under `examples/demo/faults/WORKLOAD/` act on the mocks: one stream cut
//! mid-answer, the route's first choice down from 8 s to 18 s, bursts of
//! 429 at the secondary. Every turn is streamed, as a chat UI would ask.
//!
//! Each worker's switch from one provider to another is printed as it
//! happens; at the end come what the run saw (answers, refusals, failures,
//! continued streams, replayed contexts), the KPI report of the run's
//! period, the review queue, and the dependency graph with its single
//! points of failure.
//!
//! The config, conversations and fault scripts are compiled in, so the
//! demo always plays the scripts its figures are checked against; the
//! mocks take free ports, written into the run's copy of the config. The
//! store is a fresh temporary directory, removed afterwards, unless
//! `--keep-state` names one to keep (then `baton --state DIR/state report`
//! and friends can look at the run again).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use baton::actor::supervisor::{Switch, SwitchReason};
use baton::config::Config;
use baton::graph::analysis::{self, Outage};
use baton::provider::StreamEvent;
use baton::provider::mock::{Fault, FaultKind, MockHandle, MockServer, Script, Stats};
use baton::review::{ReviewItem, ReviewQueue, served_by_label};
use baton::routing::router::AttemptReason;
use baton::store::health::now_ns;
use baton::store::journal::Journal;
use baton::telemetry::report::{Report, ReportOptions, build};
use baton::trace::TraceId;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::launch::{Running, launch};
use super::run::script::{self, Conversation};
use super::{Cli, Command};

/// A new conversation starts this often.
const PACE: Duration = Duration::from_millis(500);
/// decision-support: a burst of this many questions at once...
const BURST_SIZE: usize = 16;
/// ...the first this long after the start...
const BURST_FIRST: Duration = Duration::from_secs(1);
/// ...and the next ones this far apart.
const BURST_EVERY: Duration = Duration::from_secs(5);
/// A customer reads an answer this long before the next turn.
const THINK: Duration = Duration::from_millis(300);
/// Review items printed in full; the rest are counted.
const REVIEWS_SHOWN: usize = 2;
/// How often the swarm's bindings are read for switches to print.
const WATCH_EVERY: Duration = Duration::from_millis(100);

const CONFIG: &str = include_str!("../../examples/demo/baton.toml");
/// The providers the demo mocks, with the port each has in `CONFIG`.
const PROVIDERS: [(&str, &str); 3] = [
    ("fast-primary", "127.0.0.1:18601"),
    ("long-context", "127.0.0.1:18602"),
    ("secondary", "127.0.0.1:18603"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Support conversations (billing, technical, account, refunds).
    SupportBot,
    /// Questions about the product documentation, answered with citations.
    KnowledgeQa,
    /// On-call questions in bursts that saturate the triage route's first
    /// model: the route spills over to a faster, cheaper one.
    DecisionSupport,
}

impl Workload {
    fn swarm(self) -> &'static str {
        match self {
            Workload::SupportBot => "support-bot",
            Workload::KnowledgeQa => "knowledge-qa",
            Workload::DecisionSupport => "decision-support",
        }
    }

    /// When conversation `index` starts, from the start of the faults.
    fn start_of(self, index: usize) -> Duration {
        match self {
            Workload::DecisionSupport => BURST_FIRST + BURST_EVERY * (index / BURST_SIZE) as u32,
            _ => PACE * index as u32,
        }
    }

    fn pace(self) -> String {
        match self {
            Workload::DecisionSupport => format!(
                "in bursts of {BURST_SIZE} at once every {} s",
                BURST_EVERY.as_secs()
            ),
            _ => format!("one starting every {} ms", PACE.as_millis()),
        }
    }

    fn conversations(self) -> &'static str {
        match self {
            Workload::SupportBot => include_str!("../../examples/demo/support-bot.jsonl"),
            Workload::KnowledgeQa => include_str!("../../examples/demo/knowledge-qa.jsonl"),
            Workload::DecisionSupport => {
                include_str!("../../examples/demo/decision-support.jsonl")
            }
        }
    }

    /// Each mocked provider's fault script, in `PROVIDERS` order.
    fn faults(self) -> [&'static str; 3] {
        match self {
            Workload::SupportBot => [
                include_str!("../../examples/demo/faults/support-bot/fast-primary.toml"),
                include_str!("../../examples/demo/faults/support-bot/long-context.toml"),
                include_str!("../../examples/demo/faults/support-bot/secondary.toml"),
            ],
            Workload::KnowledgeQa => [
                include_str!("../../examples/demo/faults/knowledge-qa/fast-primary.toml"),
                include_str!("../../examples/demo/faults/knowledge-qa/long-context.toml"),
                include_str!("../../examples/demo/faults/knowledge-qa/secondary.toml"),
            ],
            Workload::DecisionSupport => [
                include_str!("../../examples/demo/faults/decision-support/fast-primary.toml"),
                include_str!("../../examples/demo/faults/decision-support/long-context.toml"),
                include_str!("../../examples/demo/faults/decision-support/secondary.toml"),
            ],
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The workload to play.
    #[arg(value_enum, default_value = "support-bot")]
    workload: Workload,
    /// Print what the run saw as one JSON object on stdout (switches go to
    /// stderr as they happen).
    #[arg(long)]
    json: bool,
    /// Keep the run's config and store in DIR (new or empty) instead of a
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    keep_state: Option<PathBuf>,
}

/// The run's directory: removed on the way out unless it was asked for.
struct Scratch {
    dir: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(keep_state: Option<&Path>) -> anyhow::Result<Scratch> {
        let (dir, keep) = match keep_state {
            Some(dir) => {
                if dir
                    .read_dir()
                    .is_ok_and(|mut entries| entries.next().is_some())
                {
                    anyhow::bail!(
                        "--keep-state {}: the directory is not empty; give a new one",
                        dir.display()
                    );
                }
                (dir.to_owned(), true)
            }
            None => (
                std::env::temp_dir().join(format!("baton-demo-{}", uuid::Uuid::now_v7())),
                false,
            ),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch { dir, keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `[file#heading]` citations in `text`, in order, each once. A
/// heading may hold brackets of its own (`[config.md#Reference > [server]]`),
/// so a citation ends at its matching bracket; a file name has a dot and
/// no spaces (`[C#]` is not a citation).
fn citations_in(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(offset) = text[start..].find('[') {
        let open = start + offset;
        let mut depth = 0usize;
        let close = bytes[open..].iter().position(|&b| {
            match b {
                b'[' => depth += 1,
                b']' => depth -= 1,
                _ => {}
            }
            depth == 0 || b == b'\n'
        });
        let citation = close
            .map(|len| &text[open..=open + len])
            .filter(|candidate| candidate.ends_with(']'))
            .filter(|candidate| {
                candidate[1..].split_once('#').is_some_and(|(file, _)| {
                    file.contains('.') && !file.contains(|c: char| c.is_whitespace() || c == '[')
                })
            });
        match citation {
            Some(citation) => {
                if !found.iter().any(|c| c == citation) {
                    found.push(citation.to_owned());
                }
                start = open + citation.len();
            }
            None => start = open + 1,
        }
    }
    found
}

/// One turn as the demo saw it.
#[derive(Debug, Serialize)]
struct Turn {
    conversation: String,
    /// 1-based.
    turn: usize,
    /// Seconds from the start of the fault scripts.
    at_s: f64,
    latency_ms: f64,
    /// For `baton trace` (with `--keep-state`).
    trace_id: Option<TraceId>,
    worker: Option<String>,
    served_by: Option<String>,
    fallback: bool,
    degraded: bool,
    refusal: bool,
    needs_review: bool,
    /// A stream of the request (any worker's step) was cut mid-answer and
    /// another attempt finished it; read from the journal, which has every
    /// step's attempts (the answer has only the last step's).
    continued: bool,
    /// Passed over a saturated provider of its route (spill-over).
    spilled: bool,
    /// Served by another provider than the conversation's previous turn:
    /// the history so far was replayed to it.
    replayed_context: bool,
    /// The `[file#heading]` citations in the answer.
    citations: Vec<String>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SwitchSeen {
    worker: String,
    from: String,
    to: String,
    reason: SwitchReason,
    detail: String,
    at_s: f64,
    unnecessary: bool,
}

#[derive(Debug, Serialize)]
struct MockSeen {
    provider: String,
    faults: Vec<String>,
    requests: u64,
    by_outcome: BTreeMap<String, u64>,
    probes: u64,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    workload: &'static str,
    conversations: usize,
    turns: usize,
    answered: usize,
    /// Answers that cite the swarm's knowledge base.
    cited: usize,
    /// Answers from a fallback provider or a final fallback.
    fallbacks: usize,
    degraded: usize,
    refusals: usize,
    failed: usize,
    continued_streams: usize,
    replayed_contexts: usize,
    /// Turns that spilled over to a faster model at peak load.
    spills: usize,
    failovers: usize,
    fail_backs: usize,
    unnecessary_switches: usize,
    switches: Vec<SwitchSeen>,
    mocks: Vec<MockSeen>,
    review_queue: Vec<ReviewItem>,
    single_points_of_failure: usize,
    report: Report,
    elapsed_s: f64,
    turn_log: Vec<Turn>,
    /// The graph's one-screen view, for the text output.
    #[serde(skip)]
    graph_text: String,
}

impl Summary {
    /// The end of the human output (the fault script and the switches were
    /// printed as the run went).
    fn text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "\n== the run: {:.1} s ==\n{} turns: {} answered ({}{} by a fallback, {} of them degraded), {} refusals, {} failed",
            self.elapsed_s,
            self.turns,
            self.answered,
            if self.cited > 0 {
                format!("{} citing the knowledge base; ", self.cited)
            } else {
                String::new()
            },
            self.fallbacks,
            self.degraded,
            self.refusals,
            self.failed
        );
        let _ = writeln!(
            text,
            "{} stream(s) cut mid-answer and continued by another provider; {} turn(s) replayed their conversation to another provider",
            self.continued_streams, self.replayed_contexts
        );
        let _ = writeln!(
            text,
            "{} failover(s), {} fail-back(s), {} unnecessary switch(es); {} turn(s) spilled over to a faster model at peak load",
            self.failovers, self.fail_backs, self.unnecessary_switches, self.spills
        );
        for mock in &self.mocks {
            let outcomes: Vec<String> = mock
                .by_outcome
                .iter()
                .map(|(outcome, n)| format!("{outcome} {n}"))
                .collect();
            let _ = writeln!(
                text,
                "  mock {:<13} {} request(s): {}; {} probe(s)",
                mock.provider,
                mock.requests,
                outcomes.join(", "),
                mock.probes
            );
        }
        let _ = writeln!(text, "\n== KPI report of the run ==");
        text.push_str(&self.report.to_table());
        let _ = writeln!(
            text,
            "\n== review queue: {} answer(s) of a high-stakes worker served on a fallback path ==",
            self.review_queue.len()
        );
        let mut by_worker: BTreeMap<&str, usize> = BTreeMap::new();
        for item in &self.review_queue {
            *by_worker.entry(item.worker.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = by_worker
            .iter()
            .map(|(worker, n)| format!("{worker} {n}"))
            .collect();
        if !counts.is_empty() {
            let _ = writeln!(text, "by worker: {}", counts.join(", "));
        }
        // Refunds first: the answers that move money are the ones to read.
        let mut shown: Vec<&ReviewItem> = self.review_queue.iter().collect();
        shown.sort_by_key(|item| item.worker != "refunds");
        for item in shown.iter().take(REVIEWS_SHOWN) {
            super::review::describe(item, &mut text);
        }
        if self.review_queue.len() > REVIEWS_SHOWN {
            let _ = writeln!(
                text,
                "... and {} more (`baton demo --keep-state DIR`, then `baton --state DIR/state review list`)",
                self.review_queue.len() - REVIEWS_SHOWN
            );
        }
        let _ = writeln!(text, "\n== dependency graph ==");
        text.push_str(&self.graph_text);
        text
    }
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let workload = args.workload;
    // `./SWARM` or `./agents/SWARM` first (a checkout's root, or a copy
    // being edited), then
    // the checkout this binary was built from, so the demo also runs from
    // any other directory.
    let mut swarm_dir = baton::template::resolve_swarm_dir(workload.swarm());
    if !swarm_dir.is_dir() {
        swarm_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("agents")
            .join(workload.swarm());
    }
    if !swarm_dir.is_dir() {
        anyhow::bail!(
            "the demo plays the shipped swarm agents/{}, which is neither under this directory nor at {}: run it from the repository's root",
            workload.swarm(),
            swarm_dir.display()
        );
    }
    let conversations = script::parse(
        workload.conversations(),
        Path::new(&format!("examples/demo/{}.jsonl", workload.swarm())),
    )
    .map_err(|diagnostics| anyhow::anyhow!("the demo's script is broken:\n{diagnostics}"))?;
    let mut scripts = Vec::new();
    for ((name, _), text) in PROVIDERS.iter().zip(workload.faults()) {
        let path = format!("examples/demo/faults/{}/{name}.toml", workload.swarm());
        scripts.push(Script::from_toml(text, Path::new(&path))?);
    }
    let scratch = Scratch::new(args.keep_state.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(play(
        cli,
        args,
        &swarm_dir,
        &conversations,
        scripts,
        &scratch,
    ))?;
    let healthy = summary.failed == 0;
    if args.json {
        super::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    } else {
        super::print_stdout(&summary.text())?;
    }
    if scratch.keep {
        eprintln!(
            "the run's config and store are in {}: try `baton --config {} --state {} report --since 5m`",
            scratch.dir.display(),
            scratch.dir.join("baton.toml").display(),
            scratch.dir.join("state").display()
        );
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn play(
    cli: &Cli,
    args: &Args,
    swarm_dir: &Path,
    conversations: &[Conversation],
    scripts: Vec<Script>,
    scratch: &Scratch,
) -> anyhow::Result<Summary> {
    let workload = args.workload;
    // The mocks start healthy, with their scripts' pace; the faults start
    // with the traffic, so that the swarm's start-up does not eat into them.
    let mut mocks: Vec<MockHandle> = Vec::new();
    let mut config_text = CONFIG.to_owned();
    for ((_, port), script) in PROVIDERS.iter().zip(&scripts) {
        let healthy = Script {
            server: script.server.clone(),
            faults: Vec::new(),
        };
        let mock = MockServer::start(([127, 0, 0, 1], 0).into(), healthy).await?;
        config_text = config_text.replace(port, &mock.addr().to_string());
        mocks.push(mock);
    }
    let config_path = scratch.dir.join("baton.toml");
    std::fs::write(&config_path, &config_text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let config = Config::load(&config_path)?;
    let run_cli = Cli {
        config: Some(config_path.clone()),
        state: scratch.dir.join("state"),
        verbose: cli.verbose,
        command: Command::Demo(args.clone()),
    };
    let swarm_path = swarm_dir.display().to_string();
    let swarm = launch(&run_cli, &swarm_path).await?;
    let turns: usize = conversations.iter().map(|c| c.turns.len()).sum();
    let mut intro = format!(
        "baton demo {}: {} conversations ({turns} turns), {}, against three mock upstreams on loopback; no key, no network\nfault script (from t = 0):\n",
        workload.swarm(),
        conversations.len(),
        workload.pace()
    );
    for ((name, _), script) in PROVIDERS.iter().zip(&scripts) {
        let faults: Vec<String> = script.faults.iter().map(describe_fault).collect();
        let _ = writeln!(
            intro,
            "  {name:<13} ({}) {}",
            domain_of(&config, name),
            if faults.is_empty() {
                "healthy".to_owned()
            } else {
                faults.join("; ")
            }
        );
    }
    say(&ProgressBar::hidden(), args.json, &intro);

    let started_ns = now_ns();
    let t0 = Instant::now();
    for (mock, script) in mocks.iter().zip(&scripts) {
        mock.set_script(script.clone());
    }
    let progress = progress_bar(turns as u64, args.json);
    let traffic = play_conversations(&swarm, workload, conversations, t0, &progress, args.json);
    let watch = watch_switches(&swarm, t0, &progress, args.json);
    let mut log = tokio::select! {
        log = traffic => log,
        () = watch => unreachable!("the watch runs until the traffic ends"),
    };
    progress.finish_and_clear();
    let elapsed = t0.elapsed();

    let bindings = swarm.bindings().await?;
    let switches: Vec<SwitchSeen> = bindings
        .switches
        .iter()
        .map(|s| switch_seen(s, started_ns))
        .collect();
    let store = swarm
        .store()
        .context("the demo's own store is held by another process")?;
    let journal = Journal::new(store)?;
    for turn in &mut log {
        if let (Some(trace_id), None) = (turn.trace_id, &turn.error)
            && let Some(record) = journal.get(trace_id)?
        {
            turn.continued = record.attempts.iter().any(|a| a.outcome == "cut_stream");
        }
    }
    let report = build(
        store,
        &ReportOptions::new(started_ns, now_ns()).with_config(&config),
    )?;
    let review_queue = ReviewQueue::new(store)?.pending()?;
    let loaded = baton::template::load_swarm(swarm_dir, &config)
        .map_err(|e| anyhow::anyhow!("{}", e.diagnostics()))?;
    let mut graph = baton::graph::build(&config, &[loaded.swarm]);
    graph.live = Some(baton::graph::live::read(
        store,
        &graph,
        &super::graph::keys_here(&graph),
        started_ns,
        now_ns(),
    )?);
    let spofs = analysis::spof(&graph, &Outage::none());
    let graph_text = format!(
        "{}\n{}",
        super::graph::summary(&graph, "examples/demo/baton.toml"),
        super::graph::spof_table(&spofs)
    );
    let mocks_seen = PROVIDERS
        .iter()
        .zip(&scripts)
        .zip(&mocks)
        .map(|(((name, _), script), mock)| mock_seen(name, script, &mock.stats()))
        .collect();
    swarm.stop().await;
    for mock in mocks {
        mock.shutdown().await;
    }

    let count = |pick: fn(&Turn) -> bool| log.iter().filter(|t| pick(t)).count();
    Ok(Summary {
        workload: workload.swarm(),
        conversations: conversations.len(),
        turns: log.len(),
        answered: count(|t| t.error.is_none() && !t.refusal),
        cited: count(|t| t.error.is_none() && !t.refusal && !t.citations.is_empty()),
        fallbacks: count(|t| t.fallback),
        degraded: count(|t| t.degraded),
        refusals: count(|t| t.refusal),
        failed: count(|t| t.error.is_some()),
        continued_streams: count(|t| t.continued),
        replayed_contexts: count(|t| t.replayed_context),
        spills: count(|t| t.spilled),
        failovers: switches
            .iter()
            .filter(|s| s.reason == SwitchReason::Failover)
            .count(),
        fail_backs: switches
            .iter()
            .filter(|s| s.reason == SwitchReason::FailBack)
            .count(),
        unnecessary_switches: switches.iter().filter(|s| s.unnecessary).count(),
        switches,
        mocks: mocks_seen,
        review_queue,
        single_points_of_failure: spofs.iter().filter(|s| s.any()).count(),
        report,
        elapsed_s: elapsed.as_secs_f64(),
        turn_log: log,
        graph_text,
    })
}

/// Starts each conversation at its time in the workload; all run at once.
async fn play_conversations(
    swarm: &Running,
    workload: Workload,
    conversations: &[Conversation],
    t0: Instant,
    progress: &ProgressBar,
    json: bool,
) -> Vec<Turn> {
    let run_id = uuid::Uuid::now_v7();
    let bursts = std::sync::Mutex::new(BurstTally::default());
    let bursts = &bursts;
    let mut log: Vec<Turn> = futures_util::stream::iter(conversations.iter().enumerate())
        .map(|(index, conversation)| async move {
            tokio::time::sleep_until((t0 + workload.start_of(index)).into()).await;
            let turns = converse(
                swarm,
                conversation,
                format!("demo-{run_id}:{}", conversation.id),
                t0,
                progress,
                json,
                workload != Workload::DecisionSupport,
            )
            .await;
            if workload == Workload::DecisionSupport {
                let burst = index / BURST_SIZE;
                let size = BURST_SIZE.min(conversations.len() - burst * BURST_SIZE);
                let line = lock(bursts).add(burst, size, &turns, t0 + workload.start_of(index), t0);
                if let Some(line) = line {
                    say(progress, json, &line);
                }
            }
            turns
        })
        .buffer_unordered(conversations.len().max(1))
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    log.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    log
}

/// What the turns of each decision-support burst came to, printed once a
/// burst has all its answers (one line per spill would bury the switches).
#[derive(Default)]
struct BurstTally {
    seen: BTreeMap<usize, Burst>,
}

#[derive(Default)]
struct Burst {
    conversations_done: usize,
    spilled: usize,
    failed: usize,
    served_by: BTreeMap<String, usize>,
}

impl BurstTally {
    /// Counts one conversation's turns; returns the burst's line when it
    /// was the burst's last.
    fn add(
        &mut self,
        burst: usize,
        size: usize,
        turns: &[Turn],
        started: Instant,
        t0: Instant,
    ) -> Option<String> {
        let tally = self.seen.entry(burst).or_default();
        tally.conversations_done += 1;
        for turn in turns {
            tally.spilled += usize::from(turn.spilled);
            match &turn.served_by {
                Some(by) => *tally.served_by.entry(by.clone()).or_default() += 1,
                None => tally.failed += 1,
            }
        }
        if tally.conversations_done < size {
            return None;
        }
        let mut outcomes: Vec<String> = tally
            .served_by
            .iter()
            .map(|(by, n)| format!("{n} answered by {by}"))
            .collect();
        if tally.failed > 0 {
            outcomes.push(format!("{} failed", tally.failed));
        }
        Some(format!(
            "  t={:>5.1}s burst {}: {size} conversations at once, {} turn(s) spilled over from a busy first choice; {}\n",
            started.duration_since(t0).as_secs_f64(),
            burst + 1,
            tally.spilled,
            outcomes.join(", ")
        ))
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Plays one conversation; prints each spill-over as it happens when
/// `print_spills`.
async fn converse(
    swarm: &Running,
    conversation: &Conversation,
    session: String,
    t0: Instant,
    progress: &ProgressBar,
    json: bool,
    print_spills: bool,
) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::with_capacity(conversation.turns.len());
    for (index, text) in conversation.turns.iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(THINK).await;
        }
        let started = Instant::now();
        let (sink, mut events) = tokio::sync::mpsc::channel::<StreamEvent>(64);
        let drain = async { while events.recv().await.is_some() {} };
        let (asked, ()) = tokio::join!(swarm.ask_streaming(text, Some(&session), sink), drain);
        let previous = turns.iter().rev().find_map(|t: &Turn| t.served_by.clone());
        let mut turn = Turn {
            conversation: conversation.id.clone(),
            turn: index + 1,
            at_s: started.duration_since(t0).as_secs_f64(),
            latency_ms: started.elapsed().as_secs_f64() * 1_000.0,
            trace_id: None,
            worker: None,
            served_by: None,
            fallback: false,
            degraded: false,
            refusal: false,
            needs_review: false,
            continued: false,
            spilled: false,
            replayed_context: false,
            citations: Vec::new(),
            error: None,
        };
        match asked {
            Ok(Ok(answer)) => {
                let outcome = &answer.outcome;
                let served_by = served_by_label(outcome);
                turn.trace_id = Some(outcome.trace_id);
                turn.worker = answer.chain.last().map(|agent| agent.0.clone());
                turn.fallback = outcome.fallback;
                turn.degraded = outcome.degraded;
                turn.refusal = outcome.refusal;
                turn.citations = citations_in(&outcome.response.text);
                turn.needs_review = answer.needs_review;
                turn.replayed_context = previous.is_some_and(|p| p != served_by);
                turn.spilled = outcome
                    .attempts
                    .iter()
                    .any(|a| a.reason == AttemptReason::SpillOver);
                if turn.spilled && print_spills {
                    say(
                        progress,
                        json,
                        &format!(
                            "  t={:>5.1}s spill-over {}: answered by {served_by} (the route's first choice was saturated)\n",
                            turn.at_s,
                            turn.worker.as_deref().unwrap_or("?")
                        ),
                    );
                }
                turn.served_by = Some(served_by);
                if let Err(error) = swarm.queue_for_review(text, &answer) {
                    turn.error = Some(format!("cannot queue the answer for review: {error:#}"));
                }
            }
            Ok(Err(error)) => turn.error = Some(error.to_string()),
            Err(error) => turn.error = Some(format!("{error:#}")),
        }
        progress.inc(1);
        turns.push(turn);
    }
    swarm.forget(&session);
    turns
}

/// Prints every new switch of a worker as it happens; never returns.
async fn watch_switches(swarm: &Running, t0: Instant, progress: &ProgressBar, json: bool) {
    let started_ns = now_ns().saturating_sub(t0.elapsed().as_nanos() as u64);
    let mut seen = 0u64;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Ok(report) = swarm.bindings().await else {
            continue;
        };
        let new = report.switch_count.saturating_sub(seen) as usize;
        seen = report.switch_count;
        let first = report.switches.len().saturating_sub(new);
        for switch in &report.switches[first..] {
            let s = switch_seen(switch, started_ns);
            let what = match s.reason {
                SwitchReason::Failover => "failover ",
                SwitchReason::FailBack => "fail-back",
            };
            say(
                progress,
                json,
                &format!(
                    "  t={:>5.1}s {what} {}: {} → {} ({})\n",
                    s.at_s, s.worker, s.from, s.to, s.detail
                ),
            );
        }
    }
}

fn switch_seen(switch: &Switch, started_ns: u64) -> SwitchSeen {
    let at_ns = switch
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    SwitchSeen {
        worker: switch.worker.0.clone(),
        from: switch.from.0.clone(),
        to: switch.to.0.clone(),
        reason: switch.reason,
        detail: switch.detail.clone(),
        at_s: at_ns.saturating_sub(started_ns) as f64 / 1e9,
        unnecessary: switch.unnecessary,
    }
}

fn mock_seen(provider: &str, script: &Script, stats: &Stats) -> MockSeen {
    MockSeen {
        provider: provider.to_owned(),
        faults: script.faults.iter().map(describe_fault).collect(),
        requests: stats.requests,
        by_outcome: stats.by_outcome.clone(),
        probes: stats.models_requests,
    }
}

fn domain_of(config: &Config, provider: &str) -> String {
    config
        .providers
        .iter()
        .find(|(id, _)| id.0 == provider)
        .map_or_else(|| "-".to_owned(), |(_, p)| p.domain.clone())
}

/// A fault as one phrase: what it does and when.
fn describe_fault(fault: &Fault) -> String {
    let what = match &fault.kind {
        FaultKind::Status {
            status,
            retry_after,
        } => match retry_after {
            Some(after) => format!("{status} with Retry-After {}s", after.as_secs_f64().ceil()),
            None => format!("{status}"),
        },
        FaultKind::Refuse => "connections refused".to_owned(),
        FaultKind::CutStream { after_tokens } => {
            format!("stream cut after {after_tokens} tokens")
        }
        other => other.label().replace('_', " "),
    };
    let secs = |d: Duration| format!("{}", d.as_secs_f64());
    let when = match fault.window.to {
        Some(to) => format!("{}–{} s", secs(fault.window.from), secs(to)),
        None => format!("from {} s", secs(fault.window.from)),
    };
    let times = match fault.limit {
        Some(1) => ", once".to_owned(),
        Some(n) => format!(", at most {n} times"),
        None => String::new(),
    };
    format!("{what} at {when}{times}")
}

/// A line above the progress bar (on stderr with `--json`, where stdout
/// carries only the JSON).
fn say(progress: &ProgressBar, json: bool, text: &str) {
    if json {
        eprint!("{text}");
    } else if progress.is_hidden() {
        let _ = super::print_stdout(text);
    } else {
        progress.println(text.trim_end());
    }
}

/// A bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(total: u64, json: bool) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() && !json {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template("  {bar:40} {pos}/{len} turns, {elapsed}") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::citations_in;

    #[test]
    fn citations_are_the_bracketed_file_and_heading_pairs_each_once() {
        let text = "Keep 30 days [retention.md#Default retention]. See [a note] and \
                    [x [limits.md#Series] then [retention.md#Default retention] \
                    [config.md#Reference > [server]] [open#";
        assert_eq!(
            citations_in(text),
            [
                "[retention.md#Default retention]",
                "[limits.md#Series]",
                "[config.md#Reference > [server]]"
            ]
        );
        assert!(citations_in("no citation here [plain], in [C#] or [issue#42]").is_empty());
    }
}
