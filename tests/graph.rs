//! The capability/dependency graph, on the shipped files and on a fixture
//! with known faults (`tests/data/graph/shop/`):
//!
//! - the shipped swarms under the shipped baton.toml: the one coverage gap
//!   there is, and, counting only an OpenAI key, the single points of
//!   failure that leaves; under the demo config: no finding at all;
//! - the fixture: the exact findings of `check`, the exact blast radius of
//!   a domain and of a provider, the exact services;
//! - through the binary: `check` gates with its exit code, a policy change
//!   shows in `graph diff A B` as exactly the changed nodes and edges,
//!   `--version N` shows the old graph, and live facts (an open breaker, a
//!   switch, contracts met and broken) reach the JSON and the drawings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use baton::config::Config;
use baton::graph::analysis::{self, Impact, Level, Outage, Rule};
use baton::graph::{self, DependencyGraph, EdgeKind, Node, NodeKind};
use baton::store::health::{BreakerRecord, HealthLog};
use baton::store::journal::{AttemptEntry, JournalRecord, RequestState};
use baton::store::telemetry::{SwitchEvent, Telemetry};
use baton::store::{Store, StoreSettings};
use baton::template;
use baton::trace::TraceId;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("tests/data/graph/shop")
}

/// The graph of `config` and the swarm directories `swarms`.
fn load(config: &Path, swarms: &[PathBuf]) -> DependencyGraph {
    let config = Config::load(config).unwrap();
    let swarms: Vec<_> = swarms
        .iter()
        .map(|dir| template::load_swarm(dir, &config).unwrap().swarm)
        .collect();
    graph::build(&config, &swarms)
}

fn shipped_swarms() -> Vec<PathBuf> {
    vec![
        root().join("agents/support-bot"),
        root().join("agents/knowledge-qa"),
    ]
}

fn shop() -> DependencyGraph {
    load(
        &fixture().join("baton.toml"),
        &[fixture().join("agents/shop")],
    )
}

/// (rule, subject) of every finding, in the order `check` gives them.
fn findings(graph: &DependencyGraph, outage: &Outage) -> Vec<(Rule, String)> {
    analysis::check(graph, outage)
        .into_iter()
        .map(|f| (f.rule, f.subject))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_shipped_graph_has_the_expected_shape() {
    let graph = load(&root().join("baton.toml"), &shipped_swarms());
    let index = |id: &str| graph.index(id).unwrap_or_else(|| panic!("no node {id}"));
    let labels = |from: &str, kind| -> Vec<String> {
        graph
            .targets(index(from), kind)
            .into_iter()
            .map(|(to, _)| graph.node(to).id())
            .collect()
    };
    assert_eq!(
        labels("swarm:support-bot", EdgeKind::Delegates),
        strings(&["agent:support-bot/supervisor"])
    );
    let mut workers = labels("agent:support-bot/supervisor", EdgeKind::Delegates);
    workers.sort();
    assert_eq!(
        workers,
        strings(&[
            "agent:support-bot/account",
            "agent:support-bot/billing",
            "agent:support-bot/refunds",
            "agent:support-bot/technical",
        ])
    );
    assert_eq!(
        labels("agent:support-bot/refunds", EdgeKind::Delegates),
        strings(&["agent:support-bot/billing"])
    );
    assert_eq!(
        labels("agent:support-bot/billing", EdgeKind::BoundTo),
        strings(&["route:support"])
    );
    // The chain in baton.toml's order, the extractive entry as a fallback.
    assert_eq!(
        labels("route:support", EdgeKind::ServedBy),
        strings(&[
            "provider:anthropic-sonnet",
            "provider:openai-mini",
            "provider:openrouter-llama",
        ])
    );
    let orders: Vec<Option<u16>> = graph
        .targets(index("route:support"), EdgeKind::ServedBy)
        .iter()
        .map(|(_, edge)| edge.order)
        .collect();
    assert_eq!(orders, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(
        labels("route:support", EdgeKind::FallsBackTo),
        strings(&["fallback:cache", "fallback:extractive"])
    );
    let mut depends = labels("provider:openrouter-llama", EdgeKind::DependsOn);
    depends.sort();
    assert_eq!(
        depends,
        strings(&["domain:openrouter", "model:llama-3.3-70b-instruct"])
    );
    assert!(
        labels("provider:openrouter-llama", EdgeKind::Provides)
            .contains(&"capability:tools".to_owned())
    );
    assert_eq!(
        labels("agent:support-bot/technical", EdgeKind::Requires),
        strings(&[
            "capability:chat",
            "capability:tools",
            "capability:streaming"
        ])
    );
    assert_eq!(graph.nodes_of(NodeKind::Domain).count(), 4);
    assert!(graph.index("provider:extractive").is_none());
}

#[test]
fn the_shipped_config_has_one_coverage_gap_and_no_spof() {
    let graph = load(&root().join("baton.toml"), &shipped_swarms());
    assert_eq!(
        findings(&graph, &Outage::none()),
        vec![(Rule::Coverage, "agent:knowledge-qa/researcher".to_owned())]
    );
    let check = analysis::check(&graph, &Outage::none());
    assert_eq!(
        check[0].message,
        "knowledge-qa/researcher requires chat, long-context; route knowledge passes over ollama-local (lacks long-context) for it"
    );
    assert!(
        analysis::spof(&graph, &Outage::none())
            .iter()
            .all(|s| !s.any())
    );
    let billing = analysis::services(&graph, &Outage::none())
        .into_iter()
        .find(|s| s.agent == "billing")
        .unwrap();
    assert_eq!(billing.level, Level::Full);
    assert_eq!(
        billing.full,
        strings(&["anthropic-sonnet", "openai-mini", "openrouter-llama"])
    );
    assert_eq!(
        billing.full_domains,
        strings(&["anthropic", "openai", "openrouter"])
    );
    assert_eq!(billing.degraded, strings(&["cache", "extractive"]));
}

#[test]
fn with_only_an_openai_key_every_tool_or_long_context_agent_depends_on_openai() {
    let graph = load(&root().join("baton.toml"), &shipped_swarms());
    // What `--keys-set` does with only OPENAI_API_KEY set: every provider
    // needing another key is out (ollama-local needs none).
    let mut outage = Outage::none();
    for (index, node) in graph.nodes_of(NodeKind::Provider) {
        if let Node::Provider {
            key_env: Some(env), ..
        } = node
            && env != "OPENAI_API_KEY"
        {
            outage.providers.insert(index);
        }
    }
    let spofs: Vec<(String, Vec<String>)> = analysis::spof(&graph, &outage)
        .into_iter()
        .filter(|s| s.any())
        .map(|s| (format!("{}/{}", s.swarm, s.agent), s.domains))
        .collect();
    let openai = strings(&["openai"]);
    assert_eq!(
        spofs,
        vec![
            // The answerer and both supervisors keep ollama-local.
            ("knowledge-qa/researcher".to_owned(), openai.clone()),
            ("support-bot/account".to_owned(), openai.clone()),
            ("support-bot/billing".to_owned(), openai.clone()),
            ("support-bot/refunds".to_owned(), openai.clone()),
            ("support-bot/technical".to_owned(), openai),
        ]
    );
}

#[test]
fn the_demo_config_serves_every_shipped_agent_from_two_domains() {
    let graph = load(&root().join("examples/demo/baton.toml"), &shipped_swarms());
    assert_eq!(findings(&graph, &Outage::none()), vec![]);
    for service in analysis::services(&graph, &Outage::none()) {
        assert_eq!(
            service.full_domains,
            strings(&["cloud-a", "cloud-b"]),
            "{}/{}",
            service.swarm,
            service.agent
        );
    }
    let cloud_a = analysis::resolve(&graph, "cloud-a").unwrap();
    let blast = analysis::blast_radius(&graph, cloud_a, &Outage::none());
    assert_eq!(
        blast.providers_down,
        strings(&["fast-primary", "long-context"])
    );
    assert_eq!(blast.agents.len(), 8);
    assert!(
        blast
            .agents
            .iter()
            .all(|a| a.impact == Impact::FailsOver && a.served_by.as_deref() == Some("secondary"))
    );
}

#[test]
fn the_fixture_reports_exactly_its_known_faults() {
    let graph = shop();
    assert_eq!(
        findings(&graph, &Outage::none()),
        vec![
            (Rule::Spof, "agent:shop/orders".to_owned()),
            (Rule::Coverage, "agent:shop/orders".to_owned()),
            (Rule::NoIndependentFallback, "route:batch".to_owned()),
            (Rule::UnreachableProvider, "provider:spare".to_owned()),
            (Rule::SharedModel, "model:gpt-4.1-mini".to_owned()),
        ]
    );
    let messages: Vec<String> = analysis::check(&graph, &Outage::none())
        .into_iter()
        .map(|f| f.message)
        .collect();
    assert_eq!(
        messages[0],
        "shop/orders: every provider of route main able to serve it (openai-direct, openrouter-gpt) is in domain openai; if openai fails, only cache, extractive can answer"
    );
    assert_eq!(
        messages[1],
        "shop/orders requires chat, tools; route main passes over anthropic-haiku (lacks tools) for it"
    );

    let spofs = analysis::spof(&graph, &Outage::none());
    let orders = spofs.iter().find(|s| s.agent == "orders").unwrap();
    assert_eq!(orders.domains, strings(&["openai"]));
    assert!(orders.providers.is_empty(), "two providers: neither alone");
    assert_eq!(orders.left, strings(&["cache", "extractive"]));
    assert_eq!(spofs.iter().filter(|s| s.any()).count(), 1);
}

#[test]
fn the_blast_radius_of_a_domain_and_of_a_provider_is_exact() {
    let graph = shop();
    let openai = analysis::resolve(&graph, "openai").unwrap();
    let blast = analysis::blast_radius(&graph, openai, &Outage::none());
    assert_eq!(blast.node, "domain:openai");
    assert_eq!(
        blast.providers_down,
        strings(&["openai-direct", "openrouter-gpt"])
    );
    let agents: Vec<(&str, Impact, Option<&str>)> = blast
        .agents
        .iter()
        .map(|a| (a.name.as_str(), a.impact, a.served_by.as_deref()))
        .collect();
    assert_eq!(
        agents,
        vec![
            ("shop/greeter", Impact::FailsOver, Some("anthropic-haiku")),
            ("shop/orders", Impact::Degraded, Some("cache")),
            (
                "shop/supervisor",
                Impact::FailsOver,
                Some("anthropic-haiku")
            ),
        ]
    );
    let routes: Vec<(&str, Impact)> = blast
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.impact))
        .collect();
    assert_eq!(routes, vec![("main", Impact::FailsOver)]);
    assert_eq!(blast.swarms.len(), 1);
    assert_eq!(blast.swarms[0].impact, Impact::Degraded);

    // Losing the one provider `orders` never uses costs the others a
    // fallback and leaves `orders` alone.
    let haiku = analysis::resolve(&graph, "anthropic-haiku").unwrap();
    let blast = analysis::blast_radius(&graph, haiku, &Outage::none());
    let agents: Vec<(&str, Impact)> = blast
        .agents
        .iter()
        .map(|a| (a.name.as_str(), a.impact))
        .collect();
    assert_eq!(
        agents,
        vec![
            ("shop/greeter", Impact::LosesFallback),
            ("shop/supervisor", Impact::LosesFallback),
        ]
    );

    // The model reached through two domains takes all three providers.
    let model = analysis::resolve(&graph, "gpt-4.1-mini").unwrap();
    let blast = analysis::blast_radius(&graph, model, &Outage::none());
    assert_eq!(
        blast.providers_down,
        strings(&["azure-gpt", "openai-direct", "openrouter-gpt"])
    );
    let batch = blast.routes.iter().find(|r| r.name == "batch").unwrap();
    assert_eq!(batch.impact, Impact::Degraded);
    assert_eq!(batch.served_by.as_deref(), Some("cache"));
}

#[test]
fn naming_a_node_that_cannot_fail_or_does_not_exist_is_an_error() {
    let graph = shop();
    assert_eq!(
        analysis::resolve(&graph, "nope").unwrap_err().to_string(),
        "no provider, failure domain or model named `nope` in the graph"
    );
    assert_eq!(
        analysis::resolve(&graph, "route:main")
            .unwrap_err()
            .to_string(),
        "`route:main` is not a provider, failure domain or model: only those can go down"
    );
}

#[test]
fn a_contract_is_a_node_the_agent_requires() {
    let graph = shop();
    let orders = graph.index("agent:shop/orders").unwrap();
    let required: Vec<String> = graph
        .targets(orders, EdgeKind::Requires)
        .into_iter()
        .map(|(to, _)| graph.node(to).id())
        .collect();
    assert!(required.contains(&"contract:shop/orders".to_owned()));
    assert!(graph.index("contract:shop/greeter").is_none());
}

#[test]
fn a_snapshot_rebuilds_the_same_graph() {
    let graph = load(&root().join("baton.toml"), &shipped_swarms());
    let snapshot = graph.snapshot();
    let again = DependencyGraph::from_snapshot(snapshot.clone());
    assert_eq!(again.snapshot(), snapshot);
    assert_eq!(again.node_count(), graph.node_count());
    assert_eq!(again.edge_count(), graph.edge_count());
}

// ---- through the binary ----

/// A copy of the fixture in a temporary directory, with its state dir.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(), dir.path());
        Repo { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn baton(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("--state")
            .arg(self.path("state"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("BATON_CONFIG")
            .env_remove("BATON_STATE")
            .env_remove("OPENAI_API_KEY")
            .env("BATON_AUTHOR", "tester")
            .output()
            .expect("the baton binary runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.baton(args);
        assert!(
            output.status.success(),
            "baton {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn edit(&self, name: &str, from: &str, to: &str) {
        let path = self.path(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{name} lacks {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn check_fails_on_the_fixture_and_passes_on_the_demo_config() {
    let repo = Repo::new();
    let output = repo.baton(&["graph", "check", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let found: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let rules: Vec<&str> = found.iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        vec![
            "spof",
            "coverage",
            "no-independent-fallback",
            "unreachable-provider",
            "shared-model"
        ]
    );

    let demo = root().join("examples/demo/baton.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--config")
        .arg(&demo)
        .arg("--state")
        .arg(repo.path("no-state"))
        .args(["graph", "check"])
        .current_dir(root())
        .env_remove("BATON_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.stdout.is_empty(), "no finding is printed");
    assert!(!repo.path("no-state").exists(), "check creates no store");
}

#[test]
fn a_policy_change_diffs_as_exactly_the_changed_nodes_and_edges() {
    let repo = Repo::new();
    repo.ok(&["policy", "apply", "-m", "first"]);
    // Three changes: haiku gains tools, the chain puts haiku second, and
    // the spare provider goes.
    repo.edit(
        "baton.toml",
        "capabilities = [\"chat\", \"streaming\"]",
        "capabilities = [\"chat\", \"tools\", \"streaming\"]",
    );
    repo.edit(
        "baton.toml",
        "chain = [\"openai-direct\", \"openrouter-gpt\", \"anthropic-haiku\", \"extractive\"]",
        "chain = [\"openai-direct\", \"anthropic-haiku\", \"openrouter-gpt\", \"extractive\"]",
    );
    repo.edit(
        "baton.toml",
        "[providers.spare]\nkind = \"openai\"\nmodel = \"llama3.2\"\nbase_url = \"http://127.0.0.1:9/local/v1\"\ndomain = \"local\"\ncapabilities = [\"chat\"]\n",
        "",
    );
    repo.ok(&["policy", "apply", "-m", "second"]);

    let diff: Value =
        serde_json::from_str(&repo.ok(&["graph", "diff", "1", "2", "--json"])).unwrap();
    let ids = |key: &str| -> Vec<String> {
        diff[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let kind = n["kind"].as_str().unwrap();
                format!("{kind}:{}", n["name"].as_str().unwrap())
            })
            .collect()
    };
    assert_eq!(ids("added_nodes"), Vec::<String>::new());
    assert_eq!(
        ids("removed_nodes"),
        strings(&["domain:local", "model:llama3.2", "provider:spare"])
    );
    let changed: Vec<(String, Vec<String>)> = diff["changed_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["attributes"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![(
            "provider:anthropic-haiku".to_owned(),
            strings(&["capabilities"])
        )]
    );
    let edges = |key: &str| -> Vec<String> {
        diff[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {} {}", e["from"], e["kind"], e["to"]).replace('"', ""))
            .collect()
    };
    assert_eq!(
        edges("added_edges"),
        strings(&["provider:anthropic-haiku provides capability:tools"])
    );
    assert_eq!(
        edges("removed_edges"),
        strings(&[
            "provider:spare provides capability:chat",
            "provider:spare depends-on domain:local",
            "provider:spare depends-on model:llama3.2",
        ])
    );
    let moved: Vec<String> = diff["changed_edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["to"].as_str().unwrap(),
                e["order_before"],
                e["order_after"]
            )
        })
        .collect();
    assert_eq!(
        moved,
        strings(&[
            "provider:anthropic-haiku 3 2",
            "provider:openrouter-gpt 2 3"
        ])
    );

    // The text form says the same, one line per change.
    let text = repo.ok(&["graph", "diff", "v1", "v2"]);
    assert_eq!(text.lines().count(), 3 + 1 + 1 + 3 + 2, "{text}");
    assert!(text.contains("~ edge route:main -served-by-> provider:anthropic-haiku: order 3 -> 2"));

    // The old version's graph is still there, and the active one is the new.
    let old: Value =
        serde_json::from_str(&repo.ok(&["graph", "--version", "1", "--format", "json"])).unwrap();
    let has_spare = |graph: &Value| {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "provider:spare")
    };
    assert!(has_spare(&old));
    let now: Value = serde_json::from_str(&repo.ok(&["graph", "--format", "json"])).unwrap();
    assert!(!has_spare(&now));
    assert!(repo.ok(&["graph"]).starts_with("policy v2 (active)"));
}

fn attempt(provider: &str, outcome: &str) -> AttemptEntry {
    AttemptEntry {
        worker: Some("orders".into()),
        provider: provider.into(),
        reason: "primary".into(),
        started_ms: 0.0,
        latency_ms: 40.0,
        outcome: outcome.into(),
        error: (outcome != "ok").then(|| format!("{outcome} from {provider}")),
        status: None,
        input_tokens: 10,
        output_tokens: 5,
        cost: 0.0,
        cancelled: false,
    }
}

#[test]
fn live_facts_reach_the_json_and_the_drawings() {
    let repo = Repo::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    {
        let store = Store::open(&repo.path("state"), &StoreSettings::default()).unwrap();
        HealthLog::new(&store)
            .unwrap()
            .save_breaker(
                "openai-direct",
                &BreakerRecord {
                    state: "open".into(),
                    ejections: 1,
                    open_until_ms: Some(now_ms + 60_000),
                    at_ms: now_ms,
                },
            )
            .unwrap();
        let telemetry = Telemetry::new(&store).unwrap();
        let outcomes = [
            ("openai-direct", "ok"),
            ("openai-direct", "ok"),
            ("openrouter-gpt", "contract"),
            ("openrouter-gpt", "ok"),
        ];
        for (i, (provider, outcome)) in outcomes.iter().enumerate() {
            let accepted = now_ms - 10_000 + i as u64 * 100;
            let mut record = JournalRecord::accepted(TraceId::new(), "where is my parcel?");
            record.accepted_ms = accepted;
            record.finished_ms = Some(accepted + 50);
            record.swarm = Some("shop".into());
            record.route = Some("main".into());
            record.chain = vec!["orders".into()];
            record.state = RequestState::Completed;
            record.served_by = Some(format!("provider:{provider}"));
            record.attempts = vec![attempt(provider, outcome)];
            telemetry.record_finished(&record).unwrap();
        }
        telemetry
            .record_switch(&SwitchEvent {
                swarm: "shop".into(),
                worker: "greeter".into(),
                from: "openai-direct".into(),
                to: "anthropic-haiku".into(),
                reason: "failover".into(),
                unnecessary: false,
                at_ns: (now_ms - 5_000) * 1_000_000,
            })
            .unwrap();
        store.flush().unwrap();
    }

    let graph: Value = serde_json::from_str(&repo.ok(&["graph", "--format", "json"])).unwrap();
    let node = |id: &str| -> Value {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no node {id}"))
    };
    assert_eq!(node("provider:openai-direct")["live"]["breaker"], "open");
    assert_eq!(node("provider:openrouter-gpt")["live"]["attempts"], 2);
    assert_eq!(
        node("provider:openrouter-gpt")["live"]["error_rates"]["contract"],
        0.5
    );
    let contract = node("contract:shop/orders");
    assert_eq!(contract["live"]["providers"]["openai-direct"]["met"], 2);
    assert_eq!(contract["live"]["providers"]["openrouter-gpt"]["broken"], 1);
    assert_eq!(contract["live"]["providers"]["openrouter-gpt"]["met"], 1);
    // The switch binds greeter; the others go to the first provider up
    // (openai-direct's breaker is open).
    assert_eq!(
        node("agent:shop/greeter")["live"]["binding"]["provider"],
        "anthropic-haiku"
    );
    assert_eq!(
        node("agent:shop/greeter")["live"]["binding"]["from"],
        "switch"
    );
    assert_eq!(
        node("agent:shop/orders")["live"]["binding"]["provider"],
        "openrouter-gpt"
    );

    // The down provider is red in every drawing, and only it.
    let dot = repo.ok(&["graph", "--format", "dot"]);
    let red: Vec<&str> = dot.lines().filter(|l| l.contains("#c62828")).collect();
    assert_eq!(red.len(), 1, "{dot}");
    assert!(red[0].contains("\"provider:openai-direct\""));
    assert!(dot.contains("label=\"domain openai\""));
    let mermaid = repo.ok(&["graph", "--format", "mermaid"]);
    let down_class = mermaid
        .lines()
        .find(|l| l.trim_start().starts_with("class "))
        .unwrap();
    let red_id = down_class.split_whitespace().nth(1).unwrap();
    assert!(mermaid.lines().any(|l| {
        l.trim_start()
            .starts_with(&format!("{red_id}[\"openai-direct"))
    }));
    let text = repo.ok(&["graph"]);
    assert!(text.contains("1 openai-direct (openai) DOWN"), "{text}");
    let svg = repo.ok(&["graph", "--format", "svg"]);
    let down: Vec<&str> = svg
        .lines()
        .filter(|l| l.contains("<g class=\"node provider down\""))
        .collect();
    assert_eq!(down.len(), 1, "{svg}");
    assert!(down[0].contains("id=\"provider:openai-direct\""));
}

#[test]
fn the_readme_picture_is_what_the_tool_draws() {
    let graph = load(
        &root().join("baton.toml"),
        &[root().join("agents/support-bot")],
    );
    let swarm = graph.index("swarm:support-bot").unwrap();
    let drawn = graph::render::svg::svg(&graph.reachable_from(&[swarm]));
    let committed = std::fs::read_to_string(root().join("docs/support-bot-graph.svg")).unwrap();
    assert!(
        drawn == committed,
        "docs/support-bot-graph.svg is stale: run `baton graph --swarm support-bot --format svg -o docs/support-bot-graph.svg`"
    );
}
