//! Intent classification on the shipped support-bot swarm, measured on a
//! labelled set written for the project (`tests/data/support-intents.tsv`):
//! a third of it is held out from everything the intents were tuned on.
//! The target is 90 % on that third; the keyword classifier reaches
//! about 53 % on these deliberately paraphrased questions (most contain no
//! intent keyword), so the test holds today's floor against regressions
//! while the target stays open (see the issue note).

use std::path::Path;

use baton::config::{Config, DEFAULT_CONFIG};
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

fn classifier() -> Classifier {
    let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).unwrap();
    let swarm = load_swarm(Path::new("agents/support-bot"), &config)
        .unwrap()
        .swarm;
    Classifier::new(&swarm)
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

/// Today's floor; the target is 0.90.
const HELD_OUT_FLOOR: f64 = 0.50;

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
    assert!(right * 10 >= total * 8, "{right}/{total}");
}

#[test]
fn an_unrelated_message_goes_to_the_supervisors_default() {
    let got = classifier().classify("hello there");
    assert_eq!(got.decided_by, DecidedBy::SupervisorDefault);
    assert_eq!(got.worker.0, "billing", "the supervisor's first delegate");
}

#[test]
fn an_angry_customer_gets_the_escalation_rule_attached() {
    let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).unwrap();
    let swarm = load_swarm(Path::new("agents/support-bot"), &config)
        .unwrap()
        .swarm;
    let classifier = Classifier::new(&swarm);
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
