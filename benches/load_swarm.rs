//! Benchmark: loading a generated swarm of 1,000 agent files and 200 rules.
//!
//! Run with `cargo bench --bench load_swarm`. Prints the minimum, median and
//! maximum wall time of a full `load_swarm` (read, parse, inherit, validate,
//! resolve rules) over repeated runs with a warm page cache. The target is
//! under 100 ms on the 2-core reference machine.

use std::path::Path;
use std::time::{Duration, Instant};

use baton::config::{Config, DEFAULT_CONFIG};
use baton::template::load_swarm;

const AGENTS: usize = 1_000;
const RULES: usize = 200;
const RUNS: usize = 30;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    generate(dir.path());
    let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).expect("shipped config");

    // One untimed run to warm the page cache and check the swarm is valid.
    let loaded = load_swarm(dir.path(), &config).expect("generated swarm loads");
    assert_eq!(loaded.swarm.agents.len(), AGENTS);
    assert_eq!(loaded.swarm.rules.len(), RULES);

    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let loaded = load_swarm(dir.path(), &config).expect("generated swarm loads");
            let elapsed = start.elapsed();
            std::hint::black_box(loaded);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "load_swarm {AGENTS} agents + {RULES} rules: min {:.1} ms, median {:.1} ms, max {:.1} ms ({RUNS} runs)",
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A realistic mix: Claude Code-style agents (comma tools, multi-line
/// descriptions with examples, `model:`), Baton fields, and every rule kind
/// including unquoted star globs.
fn generate(dir: &Path) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("CLAUDE.md"), "# Memory\nBe helpful.\n").unwrap();
    std::fs::write(
        dir.join("supervisor.md"),
        "---\nname: supervisor\ndescription: Routes requests.\nrole: supervisor\nroute: fast\n---\nClassify and delegate.\n",
    )
    .unwrap();
    for i in 1..AGENTS {
        let text = format!(
            "---\nname: agent-{i}\ndescription: Use this agent for topic {i} questions. Examples:\n<example>\nContext: a customer asks about topic {i}\nuser: \"How does topic {i} work?\"\nassistant: \"I'll use the agent-{i} agent\"\n</example>\ntools: Read, Grep, Glob\nmodel: sonnet\nintents: [topic-{i}, area-{area}, \"question {i}\"]\nrequires: [chat, streaming]\nstakes: {stakes}\ncolor: blue\n---\n# Agent {i}\n\n## Role\nYou answer questions about topic {i}.\n\n## How to answer\n- Be brief.\n- Cite sources.\n",
            area = i % 20,
            stakes = if i % 10 == 0 { "high" } else { "low" },
        );
        std::fs::write(dir.join(format!("agent-{i}.md")), text).unwrap();
    }
    for r in 0..RULES {
        let front = match r % 4 {
            0 => "description: Tone rules\nglobs:\nalwaysApply: true".to_owned(),
            1 => format!(
                "description:\nglobs: area-{},agent-{}*\nalwaysApply: false",
                r % 20,
                r
            ),
            2 => format!(
                "description: Use when the customer mentions topic {r}\nglobs:\nalwaysApply: false"
            ),
            _ => "description: TypeScript files\nglobs: **/*.ts\nalwaysApply: false".to_owned(),
        };
        std::fs::write(
            dir.join("rules").join(format!("rule-{r}.mdc")),
            format!("---\n{front}\n---\n- Rule {r} line one.\n- Rule {r} line two.\n"),
        )
        .unwrap();
    }
}
