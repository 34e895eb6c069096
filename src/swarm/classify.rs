//! Intent classification: which worker of a swarm answers a request.
//!
//! Deterministic and cheap (microseconds): each worker is a small document
//! made of its `intents` (weighted ×3: they are written to be matched), its
//! `description` (×1), its own system prompt (×½: the prompt names the
//! domain in many more words than the intents do) and the bodies of the
//! glob rules that reach it specifically (×½; rules that reach every agent
//! tell workers apart in no way and are left out). A request is scored against every worker with
//! BM25 (k1 = 1.2, b = 0.75, as for the knowledge base; with a handful of
//! documents, idf mostly rewards the words only one worker uses). The
//! tokenizer is the knowledge base's, so plurals and verb forms meet.
//!
//! Confidence is the winner's margin over the runner-up, relative to the
//! winner: 1 when only one worker matched, 0 on a tie. Below the threshold
//! (or with nothing matched) the supervisor's template decides: its
//! `default_worker:` field, else the first worker it `delegates` to, else
//! the first worker.
//!
//! Agent-requested rules (Cursor's description-only kind) are attached per
//! request when the request shares a content word with their description
//! (meta words such as "use", "when", "customer" do not count).

use std::collections::HashMap;

use crate::knowledge::for_each_term;
use crate::swarm::{AgentId, RuleId, RuleKind, Swarm};

/// Below this confidence the supervisor's default decides.
pub const DEFAULT_THRESHOLD: f32 = 0.05;

const K1: f32 = 1.2;
const B: f32 = 0.75;
const INTENT_WEIGHT: f32 = 3.0;
const DESCRIPTION_WEIGHT: f32 = 1.0;
const RULE_WEIGHT: f32 = 0.5;
const PROMPT_WEIGHT: f32 = 0.5;

/// Words that describe when a rule applies rather than what it is about.
const META_WORDS: &[&str] = &[
    "use", "when", "customer", "user", "ask", "request", "mention", "question", "want", "apply",
    "agent", "always", "rule", "about",
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
    /// The winner's BM25 score (0 when nothing matched).
    pub score: f32,
    /// The winner's margin over the runner-up, in [0, 1].
    pub confidence: f32,
    pub runner_up: Option<(AgentId, f32)>,
    pub decided_by: DecidedBy,
    /// Agent-requested rules whose description the request matches.
    pub requested_rules: Vec<RuleId>,
}

#[derive(Debug, Clone)]
struct Profile {
    worker: AgentId,
    /// Weighted term frequencies.
    terms: HashMap<String, f32>,
    length: f32,
}

/// A classifier built once per loaded swarm.
#[derive(Debug, Clone)]
pub struct Classifier {
    profiles: Vec<Profile>,
    idf: HashMap<String, f32>,
    average_length: f32,
    default: AgentId,
    threshold: f32,
    requestable: Vec<(RuleId, Vec<String>)>,
}

impl Classifier {
    /// Builds the classifier of `swarm` with [`DEFAULT_THRESHOLD`].
    pub fn new(swarm: &Swarm) -> Classifier {
        Self::with_threshold(swarm, DEFAULT_THRESHOLD)
    }

    pub fn with_threshold(swarm: &Swarm, threshold: f32) -> Classifier {
        let workers: Vec<_> = swarm.workers().collect();
        let mut profiles = Vec::with_capacity(workers.len());
        for worker in &workers {
            let mut terms: HashMap<String, f32> = HashMap::new();
            let mut add = |text: &str, weight: f32| {
                for_each_term(text, |t| *terms.entry(t.to_owned()).or_default() += weight);
            };
            for intent in &worker.intents {
                add(intent, INTENT_WEIGHT);
            }
            add(&worker.description, DESCRIPTION_WEIGHT);
            add(&worker.prompt, PROMPT_WEIGHT);
            for id in &worker.rules {
                let rule = swarm.rule(*id);
                if rule.kind == RuleKind::AutoAttached {
                    add(&rule.body, RULE_WEIGHT);
                }
            }
            let length = terms.values().sum();
            profiles.push(Profile {
                worker: worker.id.clone(),
                terms,
                length,
            });
        }
        let count = profiles.len() as f32;
        let mut document_frequency: HashMap<String, f32> = HashMap::new();
        for profile in &profiles {
            for term in profile.terms.keys() {
                *document_frequency.entry(term.clone()).or_default() += 1.0;
            }
        }
        let idf = document_frequency
            .into_iter()
            .map(|(term, df)| (term, (1.0 + (count - df + 0.5) / (df + 0.5)).ln()))
            .collect();
        let average_length = if profiles.is_empty() {
            1.0
        } else {
            profiles.iter().map(|p| p.length).sum::<f32>() / count
        };
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
            profiles,
            idf,
            average_length,
            default: default_worker(swarm),
            threshold,
            requestable,
        }
    }

    /// Picks the worker for `text`.
    pub fn classify(&self, text: &str) -> Classification {
        let mut query: Vec<String> = Vec::new();
        for_each_term(text, |t| {
            if !query.iter().any(|q| q == t) {
                query.push(t.to_owned());
            }
        });
        let mut best: Option<(usize, f32)> = None;
        let mut second: Option<(usize, f32)> = None;
        for (index, profile) in self.profiles.iter().enumerate() {
            let norm = K1 * (1.0 - B + B * profile.length / self.average_length);
            let score: f32 = query
                .iter()
                .filter_map(|term| {
                    let tf = *profile.terms.get(term)?;
                    let idf = *self.idf.get(term)?;
                    Some(idf * tf * (K1 + 1.0) / (tf + norm))
                })
                .sum();
            if best.is_none_or(|(_, s)| score > s) {
                second = best;
                best = Some((index, score));
            } else if second.is_none_or(|(_, s)| score > s) {
                second = Some((index, score));
            }
        }
        let requested_rules = self
            .requestable
            .iter()
            .filter(|(_, words)| words.iter().any(|w| query.contains(w)))
            .map(|(id, _)| *id)
            .collect();
        let (top_index, top) = best.unwrap_or((0, 0.0));
        let runner = second.map(|(i, s)| (self.profiles[i].worker.clone(), s));
        let confidence = if top > 0.0 {
            (top - second.map_or(0.0, |(_, s)| s)) / top
        } else {
            0.0
        };
        let classified = top > 0.0 && confidence >= self.threshold && !self.profiles.is_empty();
        Classification {
            worker: if classified {
                self.profiles[top_index].worker.clone()
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
