//! Benchmark: the knowledge index and the extractive surrogate at scale.
//!
//! Run with `cargo bench --bench knowledge`. Builds a corpus of well over
//! 3,000 passages by replicating the shipped knowledge documents into many
//! generated files, each copy with a sixth of its words swapped for words
//! of a generated vocabulary (so term statistics are not just the shipped
//! ones repeated), then prints one line per figure: passages, index build
//! time, and the median and p99 latency of `search` and of a whole
//! extractive answer over 1,000 varied queries.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::config::ProviderId;
use baton::knowledge::KnowledgeIndex;
use baton::provider::extractive::Extractive;
use baton::provider::{ChatRequest, Message};

const COPIES: usize = 24;
const QUERIES: usize = 1_000;
const BUILDS: usize = 5;

/// A small deterministic generator, so every run benchmarks the same corpus.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn vocabulary(rng: &mut Lcg) -> Vec<String> {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mir", "den", "sa", "vu", "tor", "el", "qui", "ban", "ro", "zet", "fa", "nil",
        "gor", "up",
    ];
    (0..4_000)
        .map(|_| {
            let n = 2 + rng.below(3);
            (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect()
        })
        .collect()
}

fn vary(text: &str, rng: &mut Lcg, vocabulary: &[String]) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, piece) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let plain = piece.len() >= 4 && piece.bytes().all(|b| b.is_ascii_alphabetic());
        if plain && rng.below(6) == 0 {
            out.push_str(&vocabulary[rng.below(vocabulary.len())]);
        } else {
            out.push_str(piece);
        }
    }
    out
}

fn generate(dir: &Path, rng: &mut Lcg, vocabulary: &[String]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents");
    let mut sources = Vec::new();
    for swarm in ["knowledge-qa", "support-bot"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(swarm).join("knowledge"))
            .expect("shipped knowledge folder")
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            sources.push(std::fs::read_to_string(&path).expect("shipped document"));
        }
    }
    let mut files = Vec::new();
    for copy in 0..COPIES {
        let sub = dir.join(format!("copy-{copy:02}"));
        std::fs::create_dir_all(&sub).expect("copy folder");
        for (i, source) in sources.iter().enumerate() {
            let path = sub.join(format!("doc-{i:02}.md"));
            std::fs::write(&path, vary(source, rng, vocabulary)).expect("generated document");
            files.push(path);
        }
    }
    files
}

fn queries(index: &KnowledgeIndex, rng: &mut Lcg, vocabulary: &[String]) -> Vec<String> {
    (0..QUERIES)
        .map(|i| {
            let passage = &index.passages()[rng.below(index.len())];
            let words: Vec<&str> = passage.text.split_whitespace().collect();
            let n = 3 + rng.below(5);
            let start = rng.below(words.len().saturating_sub(n).max(1));
            let mut query = words[start..(start + n).min(words.len())].join(" ");
            // Some questions carry a word no document has, some are off-topic.
            if i % 5 == 0 {
                query.push(' ');
                query.push_str(&vocabulary[rng.below(vocabulary.len())]);
            }
            if i % 17 == 0 {
                query = "What is the capital of France?".to_owned();
            }
            query
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let mut rng = Lcg(0x5eed);
    let vocabulary = vocabulary(&mut rng);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = generate(dir.path(), &mut rng, &vocabulary);

    let mut builds = Vec::new();
    let mut index = None;
    for _ in 0..BUILDS {
        let start = Instant::now();
        let built = KnowledgeIndex::build(dir.path(), &files).expect("generated corpus indexes");
        builds.push(start.elapsed());
        index = Some(built);
    }
    let index = Arc::new(index.expect("at least one build"));
    builds.sort();
    assert!(index.len() >= 3_000, "only {} passages", index.len());

    let queries = queries(&index, &mut rng, &vocabulary);
    // Warm caches and branch predictors before timing.
    for query in &queries {
        black_box(index.search(query, 10));
    }
    let mut search: Vec<Duration> = queries
        .iter()
        .map(|query| {
            let start = Instant::now();
            black_box(index.search(black_box(query), 10));
            start.elapsed()
        })
        .collect();
    search.sort();

    let backend = Extractive::new(ProviderId("extractive".into()), Arc::clone(&index));
    let requests: Vec<ChatRequest> = queries
        .iter()
        .map(|q| ChatRequest {
            messages: vec![Message::user(q.as_str())],
            ..ChatRequest::default()
        })
        .collect();
    let mut answered = 0;
    let mut answer: Vec<Duration> = requests
        .iter()
        .map(|request| {
            let start = Instant::now();
            let response = backend.answer(black_box(request)).expect("non-empty index");
            let elapsed = start.elapsed();
            if response.finish_reason == baton::provider::FinishReason::Stop {
                answered += 1;
            }
            black_box(response);
            elapsed
        })
        .collect();
    answer.sort();

    println!(
        "knowledge corpus: {} passages from {} files",
        index.len(),
        files.len()
    );
    println!(
        "knowledge index build: median {:.1} ms ({BUILDS} builds, min {:.1} ms)",
        builds[BUILDS / 2].as_secs_f64() * 1e3,
        builds[0].as_secs_f64() * 1e3
    );
    println!(
        "knowledge search top-10: median {:.1} µs ({QUERIES} queries)",
        micros(percentile(&search, 0.5))
    );
    println!(
        "knowledge search top-10: p99 {:.1} µs ({QUERIES} queries)",
        micros(percentile(&search, 0.99))
    );
    println!(
        "extractive answer: median {:.1} µs ({answered} of {QUERIES} answered, the rest NoAnswer)",
        micros(percentile(&answer, 0.5))
    );
    println!(
        "extractive answer: p99 {:.1} µs",
        micros(percentile(&answer, 0.99))
    );
}
