//! Benchmark: classifying a support question on the shipped support-bot.
//! Run: `cargo bench --bench classify`.

use std::path::Path;
use std::time::Instant;

use baton::config::{Config, DEFAULT_CONFIG};
use baton::knowledge::KnowledgeIndex;
use baton::swarm::classify::Classifier;
use baton::template::load_swarm;

fn main() {
    let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).expect("config");
    let swarm = load_swarm(Path::new("agents/support-bot"), &config)
        .expect("swarm")
        .swarm;
    let knowledge =
        KnowledgeIndex::build(Path::new("agents/support-bot/knowledge"), &swarm.knowledge)
            .expect("knowledge");
    let classifier = Classifier::new(&swarm, Some(&knowledge));
    let text = std::fs::read_to_string("tests/data/support-intents.tsv").expect("labelled set");
    let questions: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.splitn(3, '\t').nth(2).map(str::to_owned))
        .collect();
    const ROUNDS: usize = 200;
    let mut times = Vec::with_capacity(ROUNDS * questions.len());
    for _ in 0..ROUNDS {
        for question in &questions {
            let start = Instant::now();
            std::hint::black_box(classifier.classify(std::hint::black_box(question)));
            times.push(start.elapsed());
        }
    }
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "classify: median {:?}, p99 {:?} over {} classifications of {} questions",
        at(0.5),
        at(0.99),
        times.len(),
        questions.len()
    );
}
