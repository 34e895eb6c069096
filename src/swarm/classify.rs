//! Intent classification: which worker of a swarm answers a request.
//!
//! It must be deterministic and take microseconds, and customers rarely use
//! the words an agent's author would: they write "I want my money back", not
//! "refund", with typos, and they mention other workers' topics in passing
//! ("my team member gets an error printing"). So each worker is a bag of
//! weighted words drawn only from the swarm's own files, and a request goes
//! to the worker whose bag makes it most likely: multinomial naive Bayes.
//!
//! **What a worker is made of**, with each source's weight per word:
//! - `intents` (×3): written to be matched;
//! - `description` (×1);
//! - the system prompt (×½): it names the domain in many more words than
//!   the intents do;
//! - glob rules that reach this worker (×½); rules that reach every agent
//!   tell workers apart in no way and are left out;
//! - `examples:` (×1): requests written as customers write them. They carry
//!   the paraphrases ("get my money back", "can't get in") that no prompt
//!   spells out, and are most of what the classifier knows;
//! - knowledge documents (×1): each document goes to the worker whose bag
//!   (before any document) makes it most likely, so printer models and
//!   error messages reach the technical worker without any front matter
//!   saying so;
//! - pairs of neighbouring words in a clause (`money back`, `log in`),
//!   stop words skipped, counted once more like a word: phrase cues that
//!   single words miss.
//!
//! **Why naive Bayes and not BM25.** With a handful of workers, BM25's idf
//! only knows in how many workers a word occurs: "refund" appears in the
//! billing prompt too ("you cannot issue refunds"), so it weighed almost
//! nothing, though the refunds worker uses it twenty times as often. Naive
//! Bayes keeps that ratio. Every worker's counts are scaled to the same
//! total before smoothing (Lidstone, ½ per word): otherwise the worker with
//! the longest prompt and the most documents would lose on every word it
//! shares, for being long.
//!
//! **Typos.** The tokenizer is the knowledge base's, so plurals and verb
//! forms meet. A word whose term the swarm never uses is corrected to the
//! known word one edit away (a letter replaced, added, dropped, or two
//! swapped), looked up in a symmetric-deletion index (each known word
//! filed under itself with one letter removed, as SymSpell does), so a
//! correction costs a few hash lookups rather than a scan. Ties go to the
//! word with more weight. Words under four letters and words with digits
//! are never corrected: numbers are facts. Contractions typed without
//! their apostrophe ("cant") are stop words, as "can't" is.
//!
//! **Deciding.** The score is the winner's posterior probability, the
//! confidence its margin over the runner-up relative to itself: 1 when one
//! worker explains the words far better, 0 on a tie. Below the threshold,
//! or when no word of the request is known, the supervisor's template
//! decides: its `default_worker:` field, else the first worker it
//! `delegates` to, else the first worker.
//!
//! Tried and left out, for no gain on the tuning questions: scoring the
//! nearest example, extra weight for intent words or for the sentence that
//! asks the question, and ignoring what follows "not asking for".
//!
//! Agent-requested rules (Cursor's description-only kind) are attached per
//! request when the request shares a content word with their description
//! (meta words such as "use", "when", "customer" do not count).
//!
//! Invariants: everything is built once per loaded swarm; a classification
//! only reads. Term ids are given in the order the files are read and ties
//! are broken by that order, so results never depend on hash order.

use std::collections::HashMap;

use crate::knowledge::{KnowledgeIndex, for_each_term};
use crate::swarm::{AgentId, RuleId, RuleKind, Swarm};

/// Below this confidence the supervisor's default decides.
pub const DEFAULT_THRESHOLD: f32 = 0.05;

const INTENT_WEIGHT: f32 = 3.0;
const DESCRIPTION_WEIGHT: f32 = 1.0;
const PROMPT_WEIGHT: f32 = 0.5;
const RULE_WEIGHT: f32 = 0.5;
const EXAMPLE_WEIGHT: f32 = 1.0;
const KNOWLEDGE_WEIGHT: f32 = 1.0;
/// A pair of neighbouring words counts this much beside its two words.
const PAIR_WEIGHT: f32 = 1.0;
/// Added to every count, so that a word one worker never used lowers its
/// likelihood without ruling it out.
const SMOOTHING: f32 = 0.5;
/// Shorter words are too close to too many others to correct.
const MIN_CORRECTED_LEN: usize = 4;

/// Words that describe when a rule applies rather than what it is about.
const META_WORDS: &[&str] = &[
    "use", "when", "customer", "user", "ask", "request", "mention", "question", "want", "apply",
    "agent", "always", "rule", "about",
];

/// Contractions typed without their apostrophe. With it, the tokenizer
/// splits them into stop words (`can` + `t`); without it they must not
/// count either.
const CONTRACTIONS: &[&str] = &[
    "cant", "dont", "didnt", "doesnt", "wont", "isnt", "arent", "wasnt", "havent", "couldnt", "im",
    "ive", "youre", "thats", "whats", "theres",
];

/// Who decided which worker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    Classifier,
    /// Confidence was below the threshold: the supervisor's default.
    SupervisorDefault,
}

/// The classifier's answer for one request, for the trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    pub worker: AgentId,
    /// The winner's posterior probability (0 when nothing matched).
    pub score: f32,
    /// The winner's margin over the runner-up, relative to the winner, in
    /// [0, 1].
    pub confidence: f32,
    pub runner_up: Option<(AgentId, f32)>,
    pub decided_by: DecidedBy,
    /// Agent-requested rules whose description the request matches.
    pub requested_rules: Vec<RuleId>,
}

/// A classifier built once per loaded swarm.
#[derive(Debug, Clone)]
pub struct Classifier {
    workers: Vec<AgentId>,
    terms: HashMap<String, u32>,
    /// Pairs of neighbouring terms, numbered after the terms.
    pairs: HashMap<(u32, u32), u32>,
    /// log P(feature | worker) at `[feature * workers + worker]`: one
    /// request word reads one contiguous row.
    log_likelihood: Vec<f32>,
    spelling: Spelling,
    default: AgentId,
    threshold: f32,
    requestable: Vec<(RuleId, Vec<String>)>,
}

/// Weighted feature counts of one worker.
type Counts = HashMap<u32, f32>;

/// The features seen while the classifier is built.
#[derive(Default)]
struct Vocabulary {
    terms: HashMap<String, u32>,
    pairs: HashMap<(u32, u32), u32>,
    /// Every word as written (lowercased, unstemmed) and its term: what
    /// typos are corrected towards.
    surface: HashMap<String, u32>,
}

impl Vocabulary {
    fn len(&self) -> usize {
        self.terms.len() + self.pairs.len()
    }

    fn term(&mut self, term: String) -> u32 {
        let next = self.len() as u32;
        *self.terms.entry(term).or_insert(next)
    }

    fn pair(&mut self, pair: (u32, u32)) -> u32 {
        let next = self.len() as u32;
        *self.pairs.entry(pair).or_insert(next)
    }

    /// Adds the words of `text`, and the pairs of neighbours in each of its
    /// clauses, to `counts` with `weight`.
    fn count(&mut self, text: &str, weight: f32, counts: &mut Counts) {
        for_each_clause(text, |clause| {
            let mut previous = None;
            for word in clause {
                let Some(term) = term_of(word) else {
                    continue;
                };
                let id = self.term(term);
                if !self.surface.contains_key(word) {
                    self.surface.insert(word.clone(), id);
                }
                *counts.entry(id).or_default() += weight;
                if let Some(before) = previous {
                    let pair = self.pair((before, id));
                    *counts.entry(pair).or_default() += weight * PAIR_WEIGHT;
                }
                previous = Some(id);
            }
        });
    }
}

impl Classifier {
    /// Builds the classifier of `swarm` with [`DEFAULT_THRESHOLD`]. The
    /// knowledge base, when there is one, lends each worker the words of
    /// the documents about its domain.
    pub fn new(swarm: &Swarm, knowledge: Option<&KnowledgeIndex>) -> Classifier {
        Self::with_threshold(swarm, knowledge, DEFAULT_THRESHOLD)
    }

    pub fn with_threshold(
        swarm: &Swarm,
        knowledge: Option<&KnowledgeIndex>,
        threshold: f32,
    ) -> Classifier {
        let workers: Vec<_> = swarm.workers().collect();
        let mut vocabulary = Vocabulary::default();
        let mut counts: Vec<Counts> = workers
            .iter()
            .map(|worker| {
                let mut own = Counts::new();
                for intent in &worker.intents {
                    vocabulary.count(intent, INTENT_WEIGHT, &mut own);
                }
                vocabulary.count(&worker.description, DESCRIPTION_WEIGHT, &mut own);
                vocabulary.count(&worker.prompt, PROMPT_WEIGHT, &mut own);
                for id in &worker.rules {
                    let rule = swarm.rule(*id);
                    if rule.kind == RuleKind::AutoAttached {
                        vocabulary.count(&rule.body, RULE_WEIGHT, &mut own);
                    }
                }
                for example in &worker.examples {
                    vocabulary.count(example, EXAMPLE_WEIGHT, &mut own);
                }
                own
            })
            .collect();
        if let Some(index) = knowledge.filter(|_| !workers.is_empty()) {
            lend_documents(index, &mut vocabulary, &mut counts);
        }

        let log_likelihood = likelihoods(&counts, vocabulary.len());
        let mut mass = vec![0.0_f32; vocabulary.len()];
        for own in &counts {
            for (&feature, &count) in own {
                mass[feature as usize] += count;
            }
        }
        let requestable = swarm
            .requestable_rules()
            .map(|(id, rule)| {
                let mut words = Vec::new();
                for_each_term(rule.description.as_deref().unwrap_or_default(), |t| {
                    if !META_WORDS.contains(&t) && !words.iter().any(|w| w == t) {
                        words.push(t.to_owned());
                    }
                });
                (id, words)
            })
            .collect();
        Classifier {
            workers: workers.iter().map(|w| w.id.clone()).collect(),
            spelling: Spelling::new(&vocabulary.surface, mass),
            terms: vocabulary.terms,
            pairs: vocabulary.pairs,
            log_likelihood,
            default: default_worker(swarm),
            threshold,
            requestable,
        }
    }

    /// Picks the worker for `text`.
    pub fn classify(&self, text: &str) -> Classification {
        let mut features: Vec<u32> = Vec::new();
        let mut terms: Vec<String> = Vec::new();
        for_each_clause(text, |clause| {
            let mut previous = None;
            for word in clause {
                let Some(term) = term_of(word) else {
                    continue;
                };
                let known = match self.terms.get(&term) {
                    Some(&id) => Some(id),
                    None => self.spelling.correct(word),
                };
                if !terms.contains(&term) {
                    terms.push(term);
                }
                let Some(id) = known else {
                    // An unknown word sits between its neighbours: they
                    // are no pair.
                    previous = None;
                    continue;
                };
                let pair = previous.and_then(|before| self.pairs.get(&(before, id)));
                for &feature in std::iter::once(&id).chain(pair) {
                    if !features.contains(&feature) {
                        features.push(feature);
                    }
                }
                previous = Some(id);
            }
        });

        let posterior = self.posterior(&features);
        let mut best: Option<(usize, f32)> = None;
        let mut second: Option<(usize, f32)> = None;
        for (index, &p) in posterior.iter().enumerate() {
            if best.is_none_or(|(_, s)| p > s) {
                second = best;
                best = Some((index, p));
            } else if second.is_none_or(|(_, s)| p > s) {
                second = Some((index, p));
            }
        }
        let requested_rules = self
            .requestable
            .iter()
            .filter(|(_, words)| words.iter().any(|w| terms.contains(w)))
            .map(|(id, _)| *id)
            .collect();
        let (top_index, top) = best.unwrap_or((0, 0.0));
        let runner = second.map(|(i, p)| (self.workers[i].clone(), p));
        let confidence = if top > 0.0 {
            (top - second.map_or(0.0, |(_, p)| p)) / top
        } else {
            0.0
        };
        let classified = top > 0.0 && confidence >= self.threshold;
        Classification {
            worker: if classified {
                self.workers[top_index].clone()
            } else {
                self.default.clone()
            },
            score: top,
            confidence,
            runner_up: runner,
            decided_by: if classified {
                DecidedBy::Classifier
            } else {
                DecidedBy::SupervisorDefault
            },
            requested_rules,
        }
    }

    /// P(worker | features) with equal priors; all zero without features.
    fn posterior(&self, features: &[u32]) -> Vec<f32> {
        let n = self.workers.len();
        let mut posterior = vec![0.0_f32; n];
        if features.is_empty() {
            return posterior;
        }
        for &feature in features {
            let row = &self.log_likelihood[feature as usize * n..][..n];
            for (p, l) in posterior.iter_mut().zip(row) {
                *p += l;
            }
        }
        // Subtracting the largest log before exponentiating keeps the
        // best worker at exp(0) = 1, however long the request.
        let top = posterior.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for p in posterior.iter_mut() {
            *p = (*p - top).exp();
            total += *p;
        }
        for p in posterior.iter_mut() {
            *p /= total;
        }
        posterior
    }
}

/// Adds each knowledge document to the worker whose counts make it most
/// likely. All documents are judged against the workers' own files first,
/// so the order of the files does not matter.
fn lend_documents(index: &KnowledgeIndex, vocabulary: &mut Vocabulary, counts: &mut [Counts]) {
    let mut documents: Vec<(&str, String)> = Vec::new();
    for passage in index.passages() {
        match documents.last_mut() {
            Some((file, text)) if *file == passage.file => {
                text.push('\n');
                text.push_str(&passage.text);
            }
            _ => documents.push((&passage.file, passage.text.clone())),
        }
    }
    let probes: Vec<Counts> = documents
        .iter()
        .map(|(_, text)| {
            let mut probe = Counts::new();
            vocabulary.count(text, 1.0, &mut probe);
            probe
        })
        .collect();
    let n = counts.len();
    let model = likelihoods(counts, vocabulary.len());
    let owners: Vec<usize> = probes
        .iter()
        .map(|probe| {
            let mut scores = vec![0.0_f32; n];
            for (&feature, &count) in probe {
                let row = &model[feature as usize * n..][..n];
                for (score, l) in scores.iter_mut().zip(row) {
                    *score += count * l;
                }
            }
            (0..n).fold(0, |best, w| if scores[w] > scores[best] { w } else { best })
        })
        .collect();
    for ((_, text), owner) in documents.iter().zip(owners) {
        vocabulary.count(text, KNOWLEDGE_WEIGHT, &mut counts[owner]);
    }
}

/// log P(feature | worker), each worker's counts scaled to the same total
/// and then smoothed, laid out feature-major.
fn likelihoods(counts: &[Counts], features: usize) -> Vec<f32> {
    let n = counts.len();
    let totals: Vec<f32> = counts.iter().map(|own| own.values().sum()).collect();
    let mean = totals.iter().sum::<f32>() / n.max(1) as f32;
    let denominator = mean + SMOOTHING * features as f32;
    let mut out = vec![(SMOOTHING / denominator).ln(); features * n];
    for (w, own) in counts.iter().enumerate() {
        let scale = if totals[w] > 0.0 {
            mean / totals[w]
        } else {
            0.0
        };
        for (&feature, &count) in own {
            out[feature as usize * n + w] = ((count * scale + SMOOTHING) / denominator).ln();
        }
    }
    out
}

/// Calls `f` with the words of each clause of `text`: runs of
/// alphanumerics, lowercased, split as the shared tokenizer splits them;
/// clauses end at `,.;:!?` and line breaks, so that pairs do not join
/// words across them.
fn for_each_clause(text: &str, mut f: impl FnMut(&[String])) {
    let mut clause: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_ascii() {
                word.push(c.to_ascii_lowercase());
            } else {
                word.extend(c.to_lowercase());
            }
            continue;
        }
        if !word.is_empty() {
            clause.push(std::mem::take(&mut word));
        }
        if matches!(c, ',' | '.' | ';' | ':' | '!' | '?' | '\n') && !clause.is_empty() {
            f(&clause);
            clause.clear();
        }
    }
    if !word.is_empty() {
        clause.push(word);
    }
    if !clause.is_empty() {
        f(&clause);
    }
}

/// The shared tokenizer's term for one word; `None` for a stop word.
fn term_of(word: &str) -> Option<String> {
    if CONTRACTIONS.contains(&word) {
        return None;
    }
    let mut term = None;
    for_each_term(word, |t| term = Some(t.to_owned()));
    term
}

/// Single-typo correction towards the words the swarm's files use.
#[derive(Debug, Clone)]
struct Spelling {
    /// Known words, sorted, with their terms.
    words: Vec<(String, u32)>,
    /// A known word with one letter removed -> the known words (indices
    /// into `words`) it came from.
    near: HashMap<String, Vec<u32>>,
    exact: HashMap<String, u32>,
    /// Each feature's weight in all the workers together: when a typo is
    /// one edit from two words, the more used one is the likelier.
    mass: Vec<f32>,
}

impl Spelling {
    fn new(surface: &HashMap<String, u32>, mass: Vec<f32>) -> Spelling {
        let mut words: Vec<(String, u32)> = surface.iter().map(|(w, &t)| (w.clone(), t)).collect();
        words.sort();
        let mut near: HashMap<String, Vec<u32>> = HashMap::new();
        for (index, (word, _)) in words.iter().enumerate() {
            if correctable(word) {
                for shorter in deletions(word) {
                    near.entry(shorter).or_default().push(index as u32);
                }
            }
        }
        Spelling {
            exact: surface.clone(),
            words,
            near,
            mass,
        }
    }

    /// The term `word` is most likely a typo of, when it is one edit from
    /// a known word.
    fn correct(&self, word: &str) -> Option<u32> {
        if !correctable(word) {
            return None;
        }
        let mut best: Option<u32> = None;
        let mut consider = |term: u32| {
            let better = best.is_none_or(|b| {
                let (m, current) = (self.mass[term as usize], self.mass[b as usize]);
                m > current || (m == current && term < b)
            });
            if better {
                best = Some(term);
            }
        };
        // The index finds every known word within one deletion of the
        // typo's deletions; only those truly one edit away count.
        let candidates = |key: &str, consider: &mut dyn FnMut(u32)| {
            for &index in self.near.get(key).into_iter().flatten() {
                let (known, term) = &self.words[index as usize];
                if one_edit_apart(word, known) {
                    consider(*term);
                }
            }
        };
        // A letter dropped from a known word.
        candidates(word, &mut consider);
        for shorter in deletions(word) {
            // A letter added to a known word.
            if shorter.len() >= MIN_CORRECTED_LEN {
                if let Some(&term) = self.exact.get(&shorter) {
                    consider(term);
                }
            }
            // A letter replaced, or two neighbours swapped.
            candidates(&shorter, &mut consider);
        }
        best
    }
}

fn correctable(word: &str) -> bool {
    word.len() >= MIN_CORRECTED_LEN && word.bytes().all(|b| b.is_ascii_lowercase())
}

/// `word` with each of its letters left out in turn (ASCII words only).
fn deletions(word: &str) -> impl Iterator<Item = String> + '_ {
    (0..word.len()).map(move |i| {
        let mut shorter = String::with_capacity(word.len() - 1);
        shorter.push_str(&word[..i]);
        shorter.push_str(&word[i + 1..]);
        shorter
    })
}

/// One letter replaced, added or dropped, or two neighbours swapped, turns
/// `a` into `b` (ASCII words).
fn one_edit_apart(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    match long.len() - short.len() {
        0 => {
            let suffix = short[prefix..]
                .iter()
                .rev()
                .zip(long[prefix..].iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
            match short.len() - prefix - suffix {
                1 => true,
                2 => short[prefix] == long[prefix + 1] && short[prefix + 1] == long[prefix],
                _ => false,
            }
        }
        1 => short[prefix..] == long[prefix + 1..],
        _ => false,
    }
}

/// The supervisor's `default_worker:`, else its first delegate, else the
/// first worker.
fn default_worker(swarm: &Swarm) -> AgentId {
    let supervisor = swarm
        .agents
        .iter()
        .find(|a| a.role == crate::swarm::Role::Supervisor);
    let named = supervisor
        .and_then(|s| s.extra.get("default_worker"))
        .and_then(|v| v.as_str())
        .filter(|name| swarm.workers().any(|w| w.id.0 == *name))
        .map(|name| AgentId(name.to_owned()));
    named
        .or_else(|| supervisor.and_then(|s| s.delegates.first().cloned()))
        .or_else(|| swarm.workers().next().map(|w| w.id.clone()))
        .unwrap_or_else(|| AgentId(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_edit_covers_replace_add_drop_and_swap_only() {
        assert!(one_edit_apart("invoce", "invoice"));
        assert!(one_edit_apart("refnud", "refund"));
        assert!(one_edit_apart("lable", "label"));
        assert!(one_edit_apart("pasword", "password"));
        assert!(one_edit_apart("chargr", "charge"));
        assert!(!one_edit_apart("tied", "time"), "two edits");
        assert!(!one_edit_apart("refund", "refund"), "no edit");
        assert!(!one_edit_apart("card", "cards2"));
    }

    fn spelling(words: &[(&str, u32)], mass: &[f32]) -> Spelling {
        let surface = words.iter().map(|(w, t)| (w.to_string(), *t)).collect();
        Spelling::new(&surface, mass.to_vec())
    }

    #[test]
    fn typos_meet_the_known_word_and_the_more_used_one_wins_a_tie() {
        let s = spelling(
            &[("refund", 0), ("invoice", 1), ("voice", 2)],
            &[5.0, 3.0, 1.0],
        );
        assert_eq!(s.correct("refnd"), Some(0));
        assert_eq!(s.correct("refunds"), Some(0));
        assert_eq!(s.correct("invioce"), Some(1));
        assert_eq!(s.correct("vioce"), Some(2));
        assert_eq!(s.correct("hello"), None);
        let tie = spelling(&[("plant", 0), ("plane", 1)], &[1.0, 4.0]);
        assert_eq!(tie.correct("plan"), Some(1));
    }

    #[test]
    fn short_words_and_numbers_are_never_corrected() {
        let s = spelling(&[("api", 0), ("1004", 1)], &[1.0, 1.0]);
        assert_eq!(s.correct("apy"), None);
        assert_eq!(s.correct("1005"), None);
    }

    #[test]
    fn clauses_split_at_punctuation_and_words_as_the_tokenizer_does() {
        let mut clauses = Vec::new();
        for_each_clause("Hi, I can't log in!\nTW-1004 Überweisung", |c| {
            clauses.push(c.join(" "))
        });
        assert_eq!(clauses, ["hi", "i can t log in", "tw 1004 überweisung"]);
    }

    #[test]
    fn contractions_without_apostrophes_are_stop_words() {
        assert_eq!(term_of("cant"), None);
        assert_eq!(term_of("t"), None);
        assert_eq!(term_of("refunded").as_deref(), Some("refund"));
    }
}
