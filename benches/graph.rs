//! Building and analysing a large dependency graph: 10,000 agents in 100
//! swarms over 200 providers in 20 failure domains and 50 routes of 6
//! providers each. Target: the three analyses (spof, blast radius of the
//! busiest domain, check) together under 1 s.
//!
//! The config is generated as baton.toml text and parsed (as Baton reads
//! one); the swarms are built in memory, since loading 10,000 agent files
//! measures the template loader, not the graph. Each step runs
//! `BATON_BENCH_ROUNDS` times (default 5); the best and the median are
//! printed.
//!
//! Run: `cargo bench --bench graph`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton::config::Config;
use baton::graph::analysis::{self, Outage};
use baton::graph::{self, DependencyGraph};
use baton::swarm::{
    AgentId, AgentSpec, Capability, Handoff, Memory, Role, RouteName, RouteSource, Stakes, Swarm,
};

const PROVIDERS: usize = 200;
const DOMAINS: usize = 20;
const ROUTES: usize = 50;
const CHAIN: usize = 6;
const SWARMS: usize = 100;
const AGENTS_PER_SWARM: usize = 100;

/// Capability sets providers cycle through: some lack tools or long
/// context, so coverage findings exist.
const PROVIDER_CAPABILITIES: [&str; 4] = [
    r#"["chat", "tools", "json", "long-context", "streaming"]"#,
    r#"["chat", "tools", "streaming"]"#,
    r#"["chat", "streaming"]"#,
    r#"["chat", "json", "long-context"]"#,
];

fn config_text() -> String {
    let mut text = String::from("default_route = \"r0\"\n");
    for p in 0..PROVIDERS {
        let _ = write!(
            text,
            "[providers.p{p}]\nkind = \"openai\"\nmodel = \"model-{}\"\nbase_url = \"http://127.0.0.1:9/v1\"\ndomain = \"d{}\"\ncapabilities = {}\n",
            p % 60,
            p % DOMAINS,
            PROVIDER_CAPABILITIES[p % PROVIDER_CAPABILITIES.len()]
        );
    }
    text.push_str("[providers.extractive]\nkind = \"extractive\"\n");
    for r in 0..ROUTES {
        // Chains stride through the providers so routes overlap, and some
        // (every tenth) stay within fewer domains.
        let stride = if r % 10 == 0 { DOMAINS } else { 7 };
        let chain: Vec<String> = (0..CHAIN)
            .map(|i| format!("\"p{}\"", (r * 3 + i * stride) % PROVIDERS))
            .collect();
        let _ = write!(
            text,
            "[routes.r{r}]\nchain = [{}, \"extractive\"]\n",
            chain.join(", ")
        );
    }
    text
}

fn agent(swarm: usize, index: usize) -> AgentSpec {
    let requires = match index % 4 {
        0 => vec![Capability::Chat],
        1 => vec![Capability::Chat, Capability::Tools],
        2 => vec![Capability::Chat, Capability::LongContext],
        _ => vec![Capability::Chat, Capability::Tools, Capability::Streaming],
    };
    let supervisor = index == 0;
    AgentSpec {
        id: AgentId(format!("a{index}")),
        description: "generated".into(),
        role: if supervisor {
            Role::Supervisor
        } else {
            Role::Worker
        },
        route: RouteName(format!("r{}", (swarm * 7 + index) % ROUTES)),
        route_source: RouteSource::Explicit,
        tools: None,
        model: Vec::new(),
        intents: Vec::new(),
        examples: Vec::new(),
        requires,
        stakes: Stakes::Low,
        template: None,
        output_schema: (index % 10 == 0)
            .then(|| serde_json::json!({ "type": "object", "required": ["answer"] })),
        delegates: Vec::new(),
        handoff: Handoff::WhenAsked,
        prompt: String::new(),
        extra: serde_json::Map::new(),
        source: PathBuf::from(format!("s{swarm}/a{index}.md")),
        rules: Vec::new(),
    }
}

fn swarms() -> Vec<Swarm> {
    (0..SWARMS)
        .map(|s| Swarm {
            name: format!("s{s}"),
            dir: PathBuf::from(format!("s{s}")),
            memory: Memory { files: Vec::new() },
            agents: (0..AGENTS_PER_SWARM).map(|a| agent(s, a)).collect(),
            rules: Vec::new(),
            knowledge: if s % 2 == 0 {
                vec![PathBuf::from("kb.md")]
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn rounds() -> usize {
    std::env::var("BATON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Runs `step` `rounds` times; (best, median).
fn time<T>(rounds: usize, mut step: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let value = std::hint::black_box(step());
        times.push(started.elapsed());
        last = Some(value);
    }
    times.sort();
    (
        times[0],
        times[times.len() / 2],
        last.expect("at least one round"),
    )
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
}

fn main() {
    let rounds = rounds().max(1);
    let text = config_text();
    let (best, median, config) = time(rounds, || {
        Config::parse(&text, Path::new("bench.toml")).expect("the generated config is valid")
    });
    println!(
        "parse baton.toml ({} providers, {} routes): best {}, median {}",
        PROVIDERS,
        ROUTES,
        ms(best),
        ms(median)
    );
    let swarms = swarms();
    let (best, median, graph): (_, _, DependencyGraph) =
        time(rounds, || graph::build(&config, &swarms));
    println!(
        "build ({} agents in {} swarms): {} nodes, {} edges: best {}, median {}",
        SWARMS * AGENTS_PER_SWARM,
        SWARMS,
        graph.node_count(),
        graph.edge_count(),
        ms(best),
        ms(median)
    );
    let none = Outage::none();
    let (best_services, median_services, services) =
        time(rounds, || analysis::services(&graph, &none));
    println!(
        "services: {} agents: best {}, median {}",
        services.len(),
        ms(best_services),
        ms(median_services)
    );
    let (best_spof, median_spof, spofs) = time(rounds, || analysis::spof(&graph, &none));
    println!(
        "spof: {} of {} agents with a single point: best {}, median {}",
        spofs.iter().filter(|s| s.any()).count(),
        spofs.len(),
        ms(best_spof),
        ms(median_spof)
    );
    let domain = analysis::resolve(&graph, "d0").expect("domain d0");
    let (best_blast, median_blast, blast) =
        time(rounds, || analysis::blast_radius(&graph, domain, &none));
    println!(
        "blast radius of domain d0: {} providers down, {} agents and {} routes affected: best {}, median {}",
        blast.providers_down.len(),
        blast.agents.len(),
        blast.routes.len(),
        ms(best_blast),
        ms(median_blast)
    );
    let (best_check, median_check, findings) = time(rounds, || analysis::check(&graph, &none));
    println!(
        "check: {} findings: best {}, median {}",
        findings.len(),
        ms(best_check),
        ms(median_check)
    );
    let total = median_spof + median_blast + median_check;
    println!(
        "spof + blast radius + check (medians): {} (target under 1 s: {})",
        ms(total),
        if total < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}
