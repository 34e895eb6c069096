//! How answers are described on the terminal, the same way in `ask`,
//! `chat` and `run`, and how they reach the review queue.

use baton::actor::Answer;
use baton::routing::router::{AttemptReason, Outcome, ServedBy};

/// Who served an answer, for people.
pub fn served_by(outcome: &Outcome) -> String {
    match &outcome.served_by {
        ServedBy::Provider { id } => format!("provider {id}"),
        ServedBy::Cache { age } => format!("cache ({age:?} old)"),
        ServedBy::Extractive => "extractive surrogate (knowledge base)".into(),
    }
}

/// The walk along the chain when it was more than one clean attempt:
/// `primary (timeout) → secondary`, each failed attempt with its failure's
/// label, ending with a final fallback when one served. `None` when the
/// first attempt answered, or when no provider was tried at all (the
/// served-by part already says who answered then).
pub fn failover_path(outcome: &Outcome) -> Option<String> {
    let clean = outcome.attempts.len() == 1
        && outcome.attempts[0].error.is_none()
        && matches!(outcome.served_by, ServedBy::Provider { .. });
    if clean || outcome.attempts.is_empty() {
        return None;
    }
    let mut steps: Vec<String> = outcome
        .attempts
        .iter()
        .map(|attempt| {
            let note = match (&attempt.error, attempt.cancelled, attempt.reason) {
                (_, true, _) => " (hedge lost)".to_owned(),
                (Some((label, _)), _, _) => format!(" ({label})"),
                (None, _, AttemptReason::Hedge) => " (hedge)".to_owned(),
                (None, _, _) => String::new(),
            };
            format!("{}{note}", attempt.provider)
        })
        .collect();
    match &outcome.served_by {
        ServedBy::Provider { .. } => {}
        ServedBy::Cache { .. } => steps.push("cache".into()),
        ServedBy::Extractive => steps.push("extractive".into()),
    }
    Some(steps.join(" → "))
}

/// The one-line status printed on stderr after an answer.
pub fn status_line(answer: &Answer) -> String {
    let outcome = &answer.outcome;
    let mut line = format!(
        "-- worker {} ({:?}, confidence {:.2}); served by {}",
        answer.classification.worker,
        answer.classification.decided_by,
        answer.classification.confidence,
        served_by(outcome)
    );
    if outcome.fallback && !outcome.degraded {
        line.push_str(", fallback");
    }
    if outcome.degraded {
        line.push_str(", degraded");
    }
    if outcome.refusal {
        line.push_str(", refusal");
    }
    if answer.needs_review {
        line.push_str(", needs review");
    }
    if let Some(path) = failover_path(outcome) {
        line.push_str("; failover ");
        line.push_str(&path);
    }
    line.push_str(&format!("; trace {}", outcome.trace_id));
    line
}

/// `text` on one line, cut at `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}
