//! Property tests: the front-matter, agent, rule, memory-import and
//! template-merge parsers never panic, whatever bytes they are fed.
//!
//! Two generators: arbitrary bytes, and real files (the shipped swarms, the
//! blueprints and the real-shaped fixtures) mutated by byte flips, inserted
//! YAML-significant characters, deleted and duplicated spans, and swapped
//! lines; and a token soup of front-matter and markdown syntax. 100,000
//! cases in all by default (50,000 mutated files, 25,000 each of bytes and
//! tokens); `BATON_LONG=1` runs ten times as many. A failure prints the
//! shrunk input.

use std::path::{Path, PathBuf};

use baton::diagnostic::Diagnostics;
use baton::template::{agent, blueprint, frontmatter, memory, rule, text};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn config(cases: u32) -> Config {
    let scale = if std::env::var_os("BATON_LONG").is_some() {
        10
    } else {
        1
    };
    Config {
        cases: cases * scale,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Every parser over one input. The path is in an empty temp-less location:
/// a schema path in fuzzed front matter resolves under a directory that does
/// not exist, so no real file is read.
fn exercise(bytes: &[u8]) {
    let path = Path::new("/nonexistent-baton-fuzz/swarm/agent.md");
    // Invalid UTF-8 is rejected by `decode`; parse its lossy form as well so
    // that random bytes still reach the parsers.
    let decoded =
        text::decode(bytes).unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned());
    let document = frontmatter::parse(&decoded);
    for field in &document.fields {
        assert!(field.line >= 1);
    }
    let mut diagnostics = Diagnostics::new();
    let _ = agent::read(path, &decoded, &mut diagnostics);
    let _ = rule::read(
        Path::new("/nonexistent-baton-fuzz/rules/r.mdc"),
        &decoded,
        &mut diagnostics,
    );
    for d in &diagnostics {
        // Rendering must not panic either (it slices user text).
        let _ = d.to_string();
    }
    let _ = memory::find_imports(&decoded);
    let _ = blueprint::merge_bodies(&decoded, &document.body);
}

fn seeds() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut pending = vec![
        root.join("agents"),
        root.join("templates"),
        root.join("tests/data/real"),
    ];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("knowledge") {
                    pending.push(path);
                }
            } else {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(out.len() >= 20, "seed corpus too small: {}", out.len());
    out
}

/// What to do to a seed at a position.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, &'static str),
    Delete(usize, usize),
    Duplicate(usize, usize),
    SwapLines(usize, usize),
}

const TOKENS: &[&str] = &[
    ":",
    ": ",
    "*",
    "**/",
    "&a",
    "!tag",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "|",
    ">",
    "#",
    "@",
    "@x/y.md",
    "\n",
    "\r\n",
    "---\n",
    "\n---\n",
    "...",
    "- ",
    "  ",
    "\t",
    "\\n",
    "<example>",
    "</example>",
    "```\n",
    "# H\n",
    "## H\n",
    "\u{feff}",
    "\u{0}",
    "é",
    "key: [a, b",
    "alwaysApply: \"true\"\n",
    "globs: **/*.ts\n",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip(at, b) if len > 0 => bytes[at % len] = b,
            Mutation::Insert(at, token) => {
                let at = if len == 0 { 0 } else { at % (len + 1) };
                bytes.splice(at..at, token.bytes());
            }
            Mutation::Delete(at, n) if len > 0 => {
                let start = at % len;
                let end = (start + n).min(len);
                bytes.drain(start..end);
            }
            Mutation::Duplicate(at, n) if len > 0 => {
                let start = at % len;
                let end = (start + n).min(len);
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::SwapLines(a, b) => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                lines.swap(a % n, b % n);
                bytes = lines.join(&b'\n');
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(25_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }
}

proptest! {
    #![proptest_config(config(25_000))]

    /// Token soup: front-matter and markdown syntax in random order, the
    /// inputs most likely to reach deep parser states.
    #[test]
    fn token_soup_never_panics(
        tokens in prop::collection::vec(
            prop_oneof![prop::sample::select(TOKENS).prop_map(str::to_owned), "[a-zA-Z ]{0,12}"],
            0..80,
        ),
    ) {
        exercise(tokens.concat().as_bytes());
    }
}

proptest! {
    #![proptest_config(config(50_000))]

    #[test]
    fn mutated_real_files_never_panic(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        thread_local! {
            static SEEDS: Vec<Vec<u8>> = seeds();
        }
        let bytes = SEEDS.with(|s| s[seed.index(s.len())].clone());
        exercise(&apply(bytes, &mutations));
    }
}
