//! The end-of-run summary: counts by outcome, latency percentiles, and
//! counts per worker and per provider, as a table or as JSON.
//!
//! Every request lands in exactly one of answered, refusals and failures,
//! so they add up to the requests. Answers are split further by path: the
//! route's first choice, a fallback provider, or a final fallback (cache or
//! extractive surrogate: degraded). A refusal is the surrogate saying it
//! cannot answer; DESIGN.md counts it apart from answers. Latency covers
//! every request that got a reply (answers and refusals), as the caller
//! saw it: classification, queueing and every attempt.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use baton::actor::{Answer, AskError};
use baton::review::served_by_label;
use baton::routing::router::{AttemptRecord, RouteError};
use serde::Serialize;

/// What happened to one request.
pub struct TurnResult {
    pub conversation: String,
    /// 1-based.
    pub turn: usize,
    pub latency: Duration,
    pub reply: Reply,
}

pub enum Reply {
    Answer {
        answer: Box<Answer>,
        /// Whether adding it to the review queue failed.
        review_error: Option<String>,
    },
    Failed {
        error: String,
        /// The attempts the route made, when the error says.
        attempts: Vec<AttemptRecord>,
    },
}

impl Reply {
    /// A reply from the swarm's error.
    pub fn failed(error: &AskError) -> Reply {
        let attempts = match error {
            AskError::Route(
                RouteError::Exhausted { attempts, .. } | RouteError::Refused { attempts, .. },
            ) => attempts.clone(),
            _ => Vec::new(),
        };
        Reply::Failed {
            error: error.to_string(),
            attempts,
        }
    }
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub script: String,
    pub swarm: String,
    pub conversations: usize,
    pub concurrency: usize,
    pub elapsed_ms: f64,
    pub requests: usize,
    pub answered: Answered,
    pub refusals: usize,
    pub failures: usize,
    /// Answers marked for human review.
    pub needs_review: usize,
    /// Of those, the ones in the review queue (the rest failed to be added).
    pub queued_for_review: usize,
    pub latency_ms: Latency,
    pub workers: BTreeMap<String, WorkerCounts>,
    pub providers: BTreeMap<String, ProviderCounts>,
    pub failed: Vec<Failure>,
}

/// Answers by the path that served them.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Answered {
    pub total: usize,
    /// By the route's first choice.
    pub first_choice: usize,
    /// By another provider of the chain.
    pub fallback: usize,
    /// By a final fallback: the cache or the extractive surrogate.
    pub degraded: usize,
}

/// Nearest-rank percentiles, in milliseconds; zero when nothing replied.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct WorkerCounts {
    pub answered: usize,
    pub refusals: usize,
    pub needs_review: usize,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ProviderCounts {
    /// Replies it served (`extractive` and `cache` included as providers).
    pub served: usize,
    /// Attempts on it that failed (hedges that lost are not failures).
    pub failed_attempts: usize,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Failure {
    pub conversation: String,
    pub turn: usize,
    pub error: String,
}

impl Summary {
    /// Folds the results of a run into its summary.
    pub fn new(
        script: String,
        swarm: String,
        conversations: usize,
        concurrency: usize,
        elapsed: Duration,
        results: &[TurnResult],
    ) -> Summary {
        let mut summary = Summary {
            script,
            swarm,
            conversations,
            concurrency,
            elapsed_ms: millis(elapsed),
            requests: results.len(),
            ..Summary::default()
        };
        let mut latencies = Vec::new();
        for result in results {
            let attempts = match &result.reply {
                Reply::Answer {
                    answer,
                    review_error,
                } => {
                    latencies.push(result.latency);
                    let outcome = &answer.outcome;
                    let worker = summary
                        .workers
                        .entry(answer.classification.worker.0.clone())
                        .or_default();
                    if outcome.refusal {
                        summary.refusals += 1;
                        worker.refusals += 1;
                    } else {
                        summary.answered.total += 1;
                        worker.answered += 1;
                        if outcome.degraded {
                            summary.answered.degraded += 1;
                        } else if outcome.fallback {
                            summary.answered.fallback += 1;
                        } else {
                            summary.answered.first_choice += 1;
                        }
                    }
                    if answer.needs_review {
                        summary.needs_review += 1;
                        worker.needs_review += 1;
                        if review_error.is_none() {
                            summary.queued_for_review += 1;
                        }
                    }
                    summary
                        .providers
                        .entry(served_by_label(outcome))
                        .or_default()
                        .served += 1;
                    &outcome.attempts
                }
                Reply::Failed { error, attempts } => {
                    summary.failures += 1;
                    summary.failed.push(Failure {
                        conversation: result.conversation.clone(),
                        turn: result.turn,
                        error: error.clone(),
                    });
                    attempts
                }
            };
            for attempt in attempts
                .iter()
                .filter(|a| a.error.is_some() && !a.cancelled)
            {
                summary
                    .providers
                    .entry(attempt.provider.0.clone())
                    .or_default()
                    .failed_attempts += 1;
            }
        }
        latencies.sort();
        summary.latency_ms = Latency {
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            max: latencies.last().map_or(0.0, |d| millis(*d)),
        };
        summary
    }

    /// The summary as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} conversation(s) from {} against {}: {} request(s) in {:.1} s (concurrency {})\n",
            self.conversations,
            self.script,
            self.swarm,
            self.requests,
            self.elapsed_ms / 1000.0,
            self.concurrency
        );
        let rows = [
            ("requests", self.requests),
            ("answered", self.answered.total),
            ("  by first choice", self.answered.first_choice),
            ("  by a fallback", self.answered.fallback),
            ("  degraded", self.answered.degraded),
            ("refusals", self.refusals),
            ("failures", self.failures),
            ("needs review", self.needs_review),
        ];
        for (label, count) in rows {
            let _ = writeln!(out, "{label:<20}{count:>8}");
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "{:<20}p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            "latency", l.p50, l.p95, l.p99, l.max
        );
        let width = self
            .workers
            .keys()
            .chain(self.providers.keys())
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>8}  {:>8}  {:>12}",
            "worker", "answered", "refusals", "needs review"
        );
        for (name, w) in &self.workers {
            let _ = writeln!(
                out,
                "{name:<width$}  {:>8}  {:>8}  {:>12}",
                w.answered, w.refusals, w.needs_review
            );
        }
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>8}  {:>15}",
            "provider", "served", "failed attempts"
        );
        for (name, p) in &self.providers {
            let _ = writeln!(
                out,
                "{name:<width$}  {:>8}  {:>15}",
                p.served, p.failed_attempts
            );
        }
        out
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The nearest-rank percentile of sorted `values`, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    millis(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 95.0), 95.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
