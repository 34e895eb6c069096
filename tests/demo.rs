//! The main job end to end: `baton demo` plays its conversations through
//! its fault script with no key, and what it reports matches the script —
//! the failovers fall inside the outage, the fail-backs after the
//! recovery, the one cut stream is continued, the errors the report counts
//! are the ones the mocks sent, and nothing is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use baton::knowledge::KnowledgeIndex;

use serde_json::Value;

fn demo(workload: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["demo", workload, "--json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STATE")
        .env_remove("BATON_LOG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .expect("baton demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "baton demo failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn mock<'a>(summary: &'a Value, provider: &str) -> &'a Value {
    summary["mocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["provider"] == provider)
        .unwrap_or_else(|| panic!("no mock {provider}"))
}

fn provider_report<'a>(summary: &'a Value, provider: &str) -> &'a Value {
    summary["report"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == provider)
        .unwrap_or_else(|| panic!("no report for {provider}"))
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// The switches of one kind, checked against the script's outage of
/// `primary` (503 from 8 s, refused connections until 18 s; the demo's
/// hold down is 3 s): every failover leaves `primary` for `to` while it is
/// failing, every fail-back comes back to it only once it has been healthy
/// for the hold down, and the same workers come back that left.
fn assert_switches_follow_the_outage(summary: &Value, primary: &str, to: &str) {
    let switches = summary["switches"].as_array().unwrap();
    let of = |reason: &str| -> Vec<&Value> {
        switches.iter().filter(|s| s["reason"] == reason).collect()
    };
    let (failovers, fail_backs) = (of("failover"), of("fail_back"));
    assert!(!failovers.is_empty(), "no failover: {switches:#?}");
    for failover in &failovers {
        let at = failover["at_s"].as_f64().unwrap();
        assert!(
            (8.0..18.0).contains(&at),
            "failover outside the outage: {failover}"
        );
        assert_eq!(failover["from"], primary, "{failover}");
        assert_eq!(failover["to"], to, "{failover}");
    }
    assert!(!fail_backs.is_empty(), "no fail-back: {switches:#?}");
    for fail_back in &fail_backs {
        let at = fail_back["at_s"].as_f64().unwrap();
        assert!(
            at >= 21.0,
            "fail-back before the primary was back for the hold down: {fail_back}"
        );
        assert_eq!(fail_back["to"], primary, "{fail_back}");
    }
    let workers = |list: &[&Value]| -> BTreeSet<String> {
        list.iter()
            .map(|s| s["worker"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(workers(&failovers), workers(&fail_backs));
    assert_eq!(count(&summary["failovers"]), failovers.len() as u64);
    assert_eq!(count(&summary["fail_backs"]), fail_backs.len() as u64);
}

#[test]
fn the_support_bot_demo_reports_what_its_fault_script_did() {
    let summary = demo("support-bot");

    // Every turn of the 56 conversations was answered: none lost, none failed.
    assert_eq!(count(&summary["conversations"]), 56);
    assert_eq!(count(&summary["turns"]), 128);
    assert_eq!(count(&summary["failed"]), 0);
    assert_eq!(count(&summary["report"]["totals"]["requests"]), 128);
    assert_eq!(count(&summary["report"]["totals"]["failed"]), 0);

    assert_switches_follow_the_outage(&summary, "fast-primary", "secondary");

    // The script cuts exactly one stream; the demo saw it continued.
    let primary = mock(&summary, "fast-primary");
    assert_eq!(count(&primary["by_outcome"]["cut_stream"]), 1, "{primary}");
    assert_eq!(count(&summary["continued_streams"]), 1);

    // The report counts the errors the mocks sent, no more, no fewer: the
    // primary's 503s and the secondary's 429 bursts.
    let primary_report = provider_report(&summary, "fast-primary");
    assert!(count(&primary["by_outcome"]["status"]) > 0, "{primary}");
    assert_eq!(
        primary_report["errors"]["5xx"], primary["by_outcome"]["status"],
        "{primary_report}"
    );
    assert_eq!(count(&primary_report["errors"]["cut_stream"]), 1);
    // The report's attempts are the calls the provider saw (plus the ones
    // its closed port refused); a call Baton ended itself, its breaker
    // having opened after the router looked, is counted apart.
    assert_eq!(
        count(&primary_report["attempts"]),
        count(&primary["requests"]) + count(&primary_report["errors"]["connect"]),
        "{primary_report}"
    );
    let secondary = mock(&summary, "secondary");
    let secondary_report = provider_report(&summary, "secondary");
    assert!(count(&secondary["by_outcome"]["status"]) > 0, "{secondary}");
    assert_eq!(
        secondary_report["errors"]["429"], secondary["by_outcome"]["status"],
        "{secondary_report}"
    );
    // One outage of the primary, over by the end of the run.
    assert_eq!(count(&primary_report["outages"]), 1, "{primary_report}");
    assert_eq!(count(&primary_report["recoveries"]), 1, "{primary_report}");
    let down_ms = primary_report["down_ms"].as_f64().unwrap();
    assert!(
        (8_000.0..=20_000.0).contains(&down_ms),
        "down {down_ms} ms for a 10 s outage"
    );
    // long-context is the support route's last remote choice: it is
    // needed only while the primary is out and the secondary's 429 burst
    // cannot be waited out (the retry budget spent, or three 429s in a row
    // opening its breaker for 2 s or more). How often that happens depends
    // on how many requests are in flight during a burst, so on the
    // machine's load; when is fixed by the script: within the primary's
    // outage (8-18 s), or the ejections that may follow (up to 10 s).
    for turn in summary["turn_log"].as_array().unwrap() {
        if turn["served_by"] == "long-context" {
            let at = turn["at_s"].as_f64().unwrap();
            assert!((8.0..=28.0).contains(&at), "{turn}");
        }
    }

    // Conversations that spanned a switch had their history replayed to
    // the new provider.
    assert!(count(&summary["replayed_contexts"]) >= 1);
    // A refund answered on the fallback path waits for a person.
    let queue = summary["review_queue"].as_array().unwrap();
    assert!(
        queue
            .iter()
            .any(|item| item["worker"] == "refunds" && item["served_by"] == "secondary"),
        "{queue:#?}"
    );
    // Every queued answer came from a high-stakes worker on a fallback path.
    assert!(
        queue
            .iter()
            .all(|item| item["worker"] == "refunds" || item["worker"] == "account")
    );
    assert_eq!(count(&summary["single_points_of_failure"]), 0);
}

#[test]
fn the_knowledge_qa_demo_fails_over_from_long_context_and_back() {
    let summary = demo("knowledge-qa");
    assert_eq!(count(&summary["turns"]), 100);
    assert_eq!(count(&summary["failed"]), 0);
    assert_switches_follow_the_outage(&summary, "long-context", "secondary");
    assert_eq!(
        count(&mock(&summary, "long-context")["by_outcome"]["cut_stream"]),
        1
    );
    assert_eq!(count(&summary["continued_streams"]), 1);
    // The fast route's provider serves only the supervisor, which
    // classifies on its own: it is probed, never asked.
    assert_eq!(count(&mock(&summary, "fast-primary")["requests"]), 0);
    // The passages retrieved for a question reach the model with their
    // citations, whichever provider serves it: the mocks (`cite = true`)
    // end with the prompt's first citation, as a model told to cite would.
    // A question the knowledge base has nothing on gets no citation. The
    // extractive surrogate picks and cites passages of its own.
    let knowledge = Path::new("agents/knowledge-qa/knowledge");
    let index = KnowledgeIndex::build_dir(knowledge).unwrap();
    let conversations = questions("examples/demo/knowledge-qa.jsonl");
    let mut cited = 0;
    for turn in summary["turn_log"].as_array().unwrap() {
        let id = turn["conversation"].as_str().unwrap();
        let question = &conversations[id][turn["turn"].as_u64().unwrap() as usize - 1];
        let citations: Vec<&str> = turn["citations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        cited += u64::from(!citations.is_empty());
        if turn["served_by"] == "extractive" {
            for citation in &citations {
                let file = citation[1..].split('#').next().unwrap();
                assert!(knowledge.join(file).is_file(), "{citation}: {turn}");
            }
            continue;
        }
        match index.search(question, 3).first() {
            Some(best) => {
                let expected = index.passage(best.passage).citation();
                assert_eq!(citations, [expected.as_str()], "{question}: {turn}");
            }
            None => assert!(citations.is_empty(), "{question}: {turn}"),
        }
    }
    assert!(cited >= 80, "only {cited} of 100 questions found passages");
    assert_eq!(count(&summary["cited"]), cited);
}

/// Each conversation's questions, by id, from a demo's JSONL script.
fn questions(path: &str) -> BTreeMap<String, Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            let conversation: Value = serde_json::from_str(line).unwrap();
            let turns = conversation["turns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            (conversation["id"].as_str().unwrap().to_owned(), turns)
        })
        .collect()
}

#[test]
fn the_decision_support_demo_spills_bursts_over_to_the_faster_model() {
    let summary = demo("decision-support");
    assert_eq!(count(&summary["turns"]), 48);
    assert_eq!(count(&summary["failed"]), 0);
    // Bursts of 16 against a first choice that takes 4 at once: the rest
    // spill over, and nothing fails over (no provider is down).
    let spills = count(&summary["spills"]);
    assert!(spills >= 3, "{spills} spill(s)");
    assert_eq!(count(&summary["failovers"]), 0);
    let turns = summary["turn_log"].as_array().unwrap();
    for turn in turns {
        let served_by = turn["served_by"].as_str().unwrap();
        if turn["spilled"] == true {
            assert_eq!(served_by, "fast-primary", "{turn}");
        } else {
            assert_eq!(served_by, "long-context", "{turn}");
        }
    }
    assert_eq!(
        count(&mock(&summary, "long-context")["requests"]) + spills,
        48,
        "every question went to exactly one model"
    );
    let triage = summary["report"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "triage")
        .unwrap();
    assert_eq!(count(&triage["fallbacks"]), spills, "{triage}");
}
