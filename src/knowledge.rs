//! Knowledge-base indexing and retrieval: BM25 over a swarm's markdown files.
//!
//! [`KnowledgeIndex::build`] reads each file, cuts it into [`Passage`]s at
//! its H1–H3 headings ([`split`]), turns every passage into terms with the
//! one shared tokenizer ([`tokenize`]) and builds an inverted index: for
//! each term, the postings (passage, weight) of the passages holding it.
//! The index is immutable once built, so a single `Arc<KnowledgeIndex>`
//! serves every concurrent query without locks, and it derives serde so it
//! can be persisted and loaded instead of rebuilt.
//!
//! Ranking is Okapi BM25. Because the index never changes, each posting
//! stores its whole BM25 contribution (idf × saturated, length-normalised
//! term frequency) computed at build time, and a query is only a sum of
//! precomputed floats over the postings of its few terms into a dense score
//! array, then a partial sort for the top k: microseconds for thousands of
//! passages, with no allocation per posting.
//!
//! Invariants: postings of a term are in passage order with one entry per
//! passage; `offsets` has one more entry than there are terms; results are
//! deterministic (ties broken by passage order, the order of the files given
//! and of the text within them).

pub mod split;
pub mod tokenize;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use tokenize::{for_each_term, tokenize};

/// BM25 term-frequency saturation. 1.2 is the value the BM25 literature and
/// Lucene settled on for short-to-medium passages: a second mention of a
/// term still counts noticeably, a tenth barely more than a fifth.
const K1: f32 = 1.2;
/// BM25 length normalisation. 0.75, the standard value, keeps a short
/// focused passage ahead of a long one mentioning the same term once,
/// without letting tiny passages win on a single word. Passages are already
/// capped near 220 words, so lengths vary by less than in whole documents.
const B: f32 = 0.75;
/// How many times a passage's own heading is counted. Authors name a
/// section after what it answers, so a question matching the heading is
/// worth more than one matching a passing mention in the body. The headings
/// above it (and the document title) count once: they say which document
/// the passage belongs to without outweighing its own topic.
const OWN_HEADING_WEIGHT: usize = 2;

/// Why a knowledge base could not be indexed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("cannot read knowledge file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("knowledge file {path} is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("knowledge file {path} is outside the knowledge folder {root}")]
    OutsideRoot { path: PathBuf, root: PathBuf },
    #[error("knowledge file {path} brings the index past {max} passages")]
    TooLarge { path: PathBuf, max: u32 },
}

/// Which passage of an index (its position, in file then text order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PassageId(pub u32);

impl PassageId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PassageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A focused piece of a knowledge file: one section, or one window of a
/// long section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passage {
    /// The file, relative to the knowledge folder, with `/` separators.
    pub file: String,
    /// The heading path, outermost first, joined by ` > `
    /// ("Refunds and cancellations > Refund rules"); the file's name for
    /// text before its first heading.
    pub heading: String,
    /// The section's markdown source, trimmed.
    pub text: String,
    /// 1-based line of the heading in the file.
    pub line: usize,
}

impl Passage {
    /// How an answer cites this passage: `[file#heading]`.
    pub fn citation(&self) -> String {
        format!("[{}#{}]", self.file, self.heading)
    }
}

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub passage: PassageId,
    /// The BM25 score; only comparable within one query.
    pub score: f32,
    /// How many distinct query terms the passage contains.
    pub matched: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Posting {
    passage: u32,
    /// This term's full BM25 contribution to the passage's score.
    weight: f32,
}

/// A BM25 index over the passages of a set of markdown files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeIndex {
    passages: Vec<Passage>,
    terms: HashMap<String, u32>,
    /// Inverse document frequency of each term, by term id.
    idf: Vec<f32>,
    /// The postings of term `t` are `postings[offsets[t]..offsets[t + 1]]`.
    offsets: Vec<u32>,
    postings: Vec<Posting>,
}

impl KnowledgeIndex {
    /// Indexes every `.md` file under `root`, recursively, in path order.
    pub fn build_dir(root: &Path) -> Result<KnowledgeIndex, KnowledgeError> {
        let mut files = Vec::new();
        collect_markdown(root, &mut files)?;
        files.sort();
        Self::build(root, &files)
    }

    /// Indexes `files`, in the order given. A relative file path is taken
    /// relative to `root` unless it already starts with it.
    pub fn build(root: &Path, files: &[PathBuf]) -> Result<KnowledgeIndex, KnowledgeError> {
        let mut passages = Vec::new();
        let mut builder = Builder::default();
        for file in files {
            let path = if file.starts_with(root) || file.is_absolute() {
                file.clone()
            } else {
                root.join(file)
            };
            let relative = path
                .strip_prefix(root)
                .map_err(|_| KnowledgeError::OutsideRoot {
                    path: path.clone(),
                    root: root.to_path_buf(),
                })?;
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let bytes = std::fs::read(&path).map_err(|source| KnowledgeError::Io {
                path: path.clone(),
                source,
            })?;
            let source = String::from_utf8(bytes)
                .map_err(|_| KnowledgeError::NotUtf8 { path: path.clone() })?;
            for piece in split::split(&source, &name) {
                if passages.len() >= u32::MAX as usize {
                    return Err(KnowledgeError::TooLarge {
                        path,
                        max: u32::MAX,
                    });
                }
                builder.add(&piece);
                passages.push(Passage {
                    file: name.clone(),
                    heading: piece.path.join(" > "),
                    text: piece.text,
                    line: piece.line,
                });
            }
        }
        let index = builder.finish(passages);
        tracing::debug!(
            files = files.len(),
            passages = index.len(),
            terms = index.terms.len(),
            "knowledge index built"
        );
        Ok(index)
    }

    /// How many passages the index holds.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The passage a hit points at.
    ///
    /// # Panics
    /// If `id` does not come from this index.
    pub fn passage(&self, id: PassageId) -> &Passage {
        &self.passages[id.index()]
    }

    /// All passages, in index order.
    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    /// How rare (informative) a term of the tokenizer is in this corpus;
    /// 0 for a term the corpus does not contain.
    pub fn term_weight(&self, term: &str) -> f32 {
        self.terms.get(term).map_or(0.0, |&t| self.idf[t as usize])
    }

    /// The `k` best passages for `query`, best first. Passages sharing no
    /// term with the query are never returned.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        if k == 0 || self.passages.is_empty() {
            return Vec::new();
        }
        let mut query_terms: Vec<u32> = Vec::new();
        for_each_term(query, |term| {
            if let Some(&id) = self.terms.get(term) {
                if !query_terms.contains(&id) {
                    query_terms.push(id);
                }
            }
        });
        if query_terms.is_empty() {
            return Vec::new();
        }

        // One dense accumulator per passage: cheaper than a hash map at
        // this size, and it needs one allocation per query, not per posting.
        let mut acc = vec![(0.0_f32, 0_u32); self.passages.len()];
        let mut touched: Vec<u32> = Vec::new();
        for &term in &query_terms {
            let t = term as usize;
            let postings = &self.postings[self.offsets[t] as usize..self.offsets[t + 1] as usize];
            for posting in postings {
                let slot = &mut acc[posting.passage as usize];
                if slot.1 == 0 {
                    touched.push(posting.passage);
                }
                slot.0 += posting.weight;
                slot.1 += 1;
            }
        }

        let mut hits: Vec<Hit> = touched
            .into_iter()
            .map(|p| Hit {
                passage: PassageId(p),
                score: acc[p as usize].0,
                matched: acc[p as usize].1 as usize,
            })
            .collect();
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, rank);
            hits.truncate(k);
        }
        hits.sort_unstable_by(rank);
        hits
    }
}

/// Best score first; equal scores in passage order, so results never depend
/// on hash or sort internals.
fn rank(a: &Hit, b: &Hit) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| a.passage.cmp(&b.passage))
}

fn collect_markdown(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), KnowledgeError> {
    let io = |source| KnowledgeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_markdown(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    Ok(())
}

/// Accumulates term counts passage by passage; [`Builder::finish`] turns
/// them into weighted postings once corpus-wide statistics are known.
#[derive(Default)]
struct Builder {
    terms: HashMap<String, u32>,
    /// Per term: (passage, term frequency), in passage order.
    raw: Vec<Vec<(u32, u32)>>,
    lengths: Vec<u32>,
    counts: HashMap<u32, u32>,
}

impl Builder {
    fn add(&mut self, piece: &split::Piece) {
        let passage = self.lengths.len() as u32;
        let mut length = 0;
        let mut count = |term: &str, times: u32| {
            let next = self.terms.len() as u32;
            let id = *self.terms.entry(term.to_owned()).or_insert(next);
            if id == next {
                self.raw.push(Vec::new());
            }
            *self.counts.entry(id).or_default() += times;
            length += times;
        };
        if let Some((own, above)) = piece.path.split_last() {
            for_each_term(own, |t| count(t, OWN_HEADING_WEIGHT as u32));
            for heading in above {
                for_each_term(heading, |t| count(t, 1));
            }
        }
        for_each_term(&piece.text, |t| count(t, 1));
        // Sorted so that postings, and therefore float sums, come out the
        // same on every build.
        let mut counts: Vec<(u32, u32)> = self.counts.drain().collect();
        counts.sort_unstable();
        for (term, tf) in counts {
            self.raw[term as usize].push((passage, tf));
        }
        self.lengths.push(length);
    }

    fn finish(self, passages: Vec<Passage>) -> KnowledgeIndex {
        let n = self.lengths.len() as f32;
        let total: u64 = self.lengths.iter().map(|&l| u64::from(l)).sum();
        let avg = if self.lengths.is_empty() {
            1.0
        } else {
            (total as f32 / n).max(1.0)
        };
        let norms: Vec<f32> = self
            .lengths
            .iter()
            .map(|&l| K1 * (1.0 - B + B * l as f32 / avg))
            .collect();
        let mut idf = Vec::with_capacity(self.raw.len());
        let mut offsets = Vec::with_capacity(self.raw.len() + 1);
        let mut postings = Vec::with_capacity(self.raw.iter().map(Vec::len).sum());
        offsets.push(0);
        for list in &self.raw {
            let df = list.len() as f32;
            // The "plus one" form of BM25 idf stays positive even for a
            // term in most passages, so a match never lowers a score.
            let term_idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            idf.push(term_idf);
            for &(passage, tf) in list {
                let tf = tf as f32;
                let weight = term_idf * tf * (K1 + 1.0) / (tf + norms[passage as usize]);
                postings.push(Posting { passage, weight });
            }
            offsets.push(postings.len() as u32);
        }
        KnowledgeIndex {
            passages,
            terms: self.terms,
            idf,
            offsets,
            postings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(files: &[(&str, &str)]) -> (tempfile::TempDir, KnowledgeIndex) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut paths = Vec::new();
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&path, text).expect("write");
            paths.push(path);
        }
        let index = KnowledgeIndex::build(dir.path(), &paths).expect("index");
        (dir, index)
    }

    fn top_headings(index: &KnowledgeIndex, query: &str) -> Vec<String> {
        index
            .search(query, 10)
            .iter()
            .map(|h| index.passage(h.passage).heading.clone())
            .collect()
    }

    const PETS: &str = "# Pets\n\
        ## Cats\nCats sleep most of the day. A cat purrs.\n\
        ## Dogs\nDogs need walks every day. A dog barks at the mailman.\n\
        ## Dog food\nFeed dogs twice a day; puppies eat more often.\n\
        ## Fish\nFish live in water and need a filter.\n";

    #[test]
    fn passages_carry_file_heading_and_line() {
        let (_dir, index) = corpus(&[("sub/pets.md", PETS)]);
        assert_eq!(index.len(), 4);
        let dogs = index.passage(PassageId(1));
        assert_eq!(dogs.file, "sub/pets.md");
        assert_eq!(dogs.heading, "Pets > Dogs");
        assert_eq!(dogs.line, 4);
        assert_eq!(dogs.citation(), "[sub/pets.md#Pets > Dogs]");
    }

    #[test]
    fn bm25_ranks_the_focused_passage_first() {
        let (_dir, index) = corpus(&[("pets.md", PETS)]);
        assert_eq!(top_headings(&index, "cat")[0], "Pets > Cats");
        // The heading match outweighs a body-only mention.
        assert_eq!(
            top_headings(&index, "what food for my dog")[0],
            "Pets > Dog food"
        );
        assert_eq!(top_headings(&index, "barking dogs")[0], "Pets > Dogs");
        // A term every passage has (the title) cannot rank on its own.
        let hits = index.search("water filter", 10);
        assert_eq!(hits.len(), 1);
        assert_eq!(index.passage(hits[0].passage).heading, "Pets > Fish");
        assert_eq!(hits[0].matched, 2);
    }

    #[test]
    fn rare_terms_outweigh_common_ones() {
        let (_dir, index) = corpus(&[("pets.md", PETS)]);
        assert!(index.term_weight("purr") > index.term_weight("day"));
        assert_eq!(index.term_weight("giraffe"), 0.0);
        // "day" is in three passages, "purrs" only in Cats.
        assert_eq!(top_headings(&index, "day purrs")[0], "Pets > Cats");
    }

    #[test]
    fn unknown_words_and_empty_queries_find_nothing() {
        let (_dir, index) = corpus(&[("pets.md", PETS)]);
        assert!(index.search("quantum chromodynamics", 5).is_empty());
        assert!(index.search("the of and", 5).is_empty());
        assert!(index.search("", 5).is_empty());
        assert!(index.search("cats", 0).is_empty());
    }

    #[test]
    fn top_k_is_sorted_truncated_and_deterministic() {
        let (_dir, index) = corpus(&[("pets.md", PETS)]);
        let hits = index.search("day dogs cats fish", 2);
        assert_eq!(hits.len(), 2);
        assert!(hits[0].score >= hits[1].score);
        assert_eq!(hits, index.search("day dogs cats fish", 2));
        let all = index.search("day dogs cats fish", 10);
        assert_eq!(&all[..2], &hits[..]);
    }

    #[test]
    fn index_survives_a_serde_round_trip() {
        let (_dir, index) = corpus(&[("pets.md", PETS)]);
        let json = serde_json::to_string(&index).expect("serialize");
        let back: KnowledgeIndex = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.search("dog food", 3), index.search("dog food", 3));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.md");
        let err = KnowledgeIndex::build(dir.path(), &[missing]).expect_err("missing file");
        assert!(err.to_string().contains("missing.md"), "{err}");

        std::fs::write(dir.path().join("bad.md"), [0xff, 0xfe, b'a']).expect("write");
        let err =
            KnowledgeIndex::build(dir.path(), &[PathBuf::from("bad.md")]).expect_err("not utf-8");
        assert!(err.to_string().contains("bad.md"), "{err}");

        let err = KnowledgeIndex::build(dir.path(), &[PathBuf::from("/etc/hosts")])
            .expect_err("outside root");
        assert!(matches!(err, KnowledgeError::OutsideRoot { .. }), "{err}");
    }

    #[test]
    fn build_dir_indexes_nested_markdown_in_path_order() {
        let (dir, _) = corpus(&[
            ("b.md", "# B\nbee\n"),
            ("a/c.md", "# C\nsea\n"),
            ("x.txt", "no"),
        ]);
        let index = KnowledgeIndex::build_dir(dir.path()).expect("index");
        let files: Vec<&str> = index.passages().iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["a/c.md", "b.md"]);
    }
}
