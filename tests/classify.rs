//! Intent classification on the shipped support-bot swarm, measured on a
//! labelled set written for the project (`tests/data/support-intents.tsv`):
//! half of it is held out from everything the swarm's intents and examples
//! were written and tuned against. The questions are deliberately
//! paraphrased (most contain no intent keyword) and some carry typos.
//!
//! The held-out rows come in two parts:
//! - the first 68, written with the tuning rows. The keyword (BM25)
//!   classifier placed 36 of them (52.9 %); the naive Bayes classifier over
//!   the swarm's own files (intents, prompts, glob rules, the workers'
//!   `examples:` and the knowledge documents) places 61 (89.7 %). That
//!   score was looked at five times while the classifier was built, as the
//!   aggregate count only, never the questions.
//! - the last 66, written afterwards by an author who saw only the worker
//!   roles and the help-centre articles (not the agents, their examples or
//!   the classifier), with the classifier frozen, and scored once: 63
//!   (95.5 %).
//!
//! Together: 124 of 134 (92.5 %), over the 90 % target; the floor
//! below holds it against regressions.
//!
//! The tuning questions are not a fair estimate: the examples were written
//! with their topics in mind, and some are close paraphrases of them.

use std::path::Path;

use baton::config::{Config, DEFAULT_CONFIG};
use baton::knowledge::KnowledgeIndex;
use baton::swarm::Swarm;
use baton::swarm::classify::{Classifier, DecidedBy};
use baton::template::load_swarm;

struct Row {
    split: String,
    worker: String,
    question: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string("tests/data/support-intents.tsv").expect("the labelled set");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (split, worker, question) = (parts.next(), parts.next(), parts.next());
            Row {
                split: split.expect("split").to_owned(),
                worker: worker.expect("worker").to_owned(),
                question: question.expect("question").to_owned(),
            }
        })
        .collect()
}

fn swarm() -> Swarm {
    let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).unwrap();
    load_swarm(Path::new("agents/support-bot"), &config)
        .unwrap()
        .swarm
}

/// The classifier as `baton ask` builds it: with the knowledge base.
fn classifier_of(swarm: &Swarm) -> Classifier {
    let knowledge =
        KnowledgeIndex::build(Path::new("agents/support-bot/knowledge"), &swarm.knowledge).unwrap();
    Classifier::new(swarm, Some(&knowledge))
}

fn classifier() -> Classifier {
    classifier_of(&swarm())
}

fn accuracy(split: &str) -> (usize, usize, Vec<String>) {
    let classifier = classifier();
    let mut right = 0;
    let mut misses = Vec::new();
    let rows: Vec<Row> = rows().into_iter().filter(|r| r.split == split).collect();
    for row in &rows {
        let got = classifier.classify(&row.question);
        if got.worker.0 == row.worker {
            right += 1;
        } else {
            misses.push(format!(
                "{} -> {} ({:.2}): {}",
                row.worker, got.worker, got.confidence, row.question
            ));
        }
    }
    (right, rows.len(), misses)
}

#[test]
fn the_labelled_set_has_150_questions_a_third_held_out() {
    let rows = rows();
    assert!(rows.len() >= 150, "{}", rows.len());
    let held = rows.iter().filter(|r| r.split == "heldout").count();
    assert!(held * 3 >= rows.len() - 3, "{held} of {}", rows.len());
    for worker in ["billing", "technical", "account", "refunds"] {
        assert!(
            rows.iter()
                .any(|r| r.worker == worker && r.split == "heldout"),
            "{worker}"
        );
    }
}

/// The target; today 124 of 134.
const HELD_OUT_FLOOR: f64 = 0.90;

#[test]
fn held_out_accuracy_holds_its_floor() {
    let (right, total, misses) = accuracy("heldout");
    let share = right as f64 / total as f64;
    println!(
        "held-out accuracy: {right}/{total} = {:.1} %",
        share * 100.0
    );
    assert!(
        share >= HELD_OUT_FLOOR,
        "{right}/{total}:\n{}",
        misses.join("\n")
    );
}

#[test]
fn tuning_accuracy_is_reported() {
    let (right, total, _) = accuracy("tune");
    println!("tuning-set accuracy: {right}/{total}");
    assert!(right * 20 >= total * 19, "{right}/{total}");
}

#[test]
fn an_unrelated_message_goes_to_the_supervisors_default() {
    let got = classifier().classify("hello there");
    assert_eq!(got.decided_by, DecidedBy::SupervisorDefault);
    assert_eq!(got.worker.0, "billing", "the supervisor's first delegate");
}

#[test]
fn an_angry_customer_gets_the_escalation_rule_attached() {
    let swarm = swarm();
    let classifier = classifier_of(&swarm);
    let got =
        classifier.classify("This is ridiculous, I want to talk to a manager about my invoice");
    let names: Vec<&str> = got
        .requested_rules
        .iter()
        .map(|id| swarm.rule(*id).name.as_str())
        .collect();
    assert_eq!(names, ["escalation"]);
    assert_eq!(got.worker.0, "billing");
    let calm = classifier.classify("Where can I download my invoice?");
    assert!(calm.requested_rules.is_empty());
}
