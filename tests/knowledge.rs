//! The knowledge base and the extractive surrogate over the shipped swarms'
//! real documents (`agents/*/knowledge`).
//!
//! - answers: questions whose answer sits in a known file cite that file
//!   first and quote the key fact;
//! - refusals: unrelated questions give `NoAnswer`, never a loose quote;
//! - streaming, follow-ups, determinism, persistence, the empty index.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton::config::ProviderId;
use baton::knowledge::KnowledgeIndex;
use baton::provider::extractive::{Extractive, NO_ANSWER};
use baton::provider::{
    AttemptDeadline, Backend, ChatRequest, ChatResponse, FinishReason, Message, ProviderError,
    StreamEvent,
};
use futures_util::StreamExt;

fn knowledge_dir(swarm: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("agents")
        .join(swarm)
        .join("knowledge")
}

fn index(swarm: &str) -> Arc<KnowledgeIndex> {
    Arc::new(KnowledgeIndex::build_dir(&knowledge_dir(swarm)).expect("shipped knowledge indexes"))
}

fn backend(swarm: &str) -> Extractive {
    Extractive::new(ProviderId(format!("extractive-{swarm}")), index(swarm))
}

fn deadline() -> AttemptDeadline {
    AttemptDeadline::new(Duration::from_secs(5), Duration::from_secs(30))
}

fn ask(question: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::system("You answer from the knowledge base."),
            Message::user(question),
        ],
        ..ChatRequest::default()
    }
}

/// The citations of the `Sources:` line, in order.
fn sources(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Sources: "))
        .unwrap_or_else(|| panic!("no Sources line in:\n{text}"));
    line.split("], ")
        .map(|c| c.trim_start_matches('[').trim_end_matches(']').to_owned())
        .collect()
}

async fn complete(backend: &Extractive, request: &ChatRequest) -> ChatResponse {
    backend
        .complete(request, deadline())
        .await
        .expect("extractive never fails on a non-empty index")
}

const ANSWERED: &[(&str, &str, &str, &str)] = &[
    // (swarm, question, file of the first citation, key fact in the answer)
    (
        "knowledge-qa",
        "How do I restore a backup into a new database?",
        "backup-and-restore.md",
        "--new-db",
    ),
    (
        "knowledge-qa",
        "How do I repair a corrupt WAL?",
        "troubleshooting.md",
        "--repair-wal",
    ),
    (
        "knowledge-qa",
        "What happens to writes when two nodes are down?",
        "clustering.md",
        "TW-4001",
    ),
    (
        "knowledge-qa",
        "How do I backfill a downsampling rule?",
        "retention-and-downsampling.md",
        "tidectl downsample backfill",
    ),
    (
        "knowledge-qa",
        "What are the minimum hardware requirements?",
        "installation.md",
        "4 GB RAM",
    ),
    (
        "knowledge-qa",
        "How often should I take a full backup?",
        "backup-and-restore.md",
        "every 7 days",
    ),
    (
        "knowledge-qa",
        "What does error TW-1004 mean?",
        "troubleshooting.md",
        "Field type conflict",
    ),
    (
        "support-bot",
        "How long do refunds take to appear?",
        "refunds-and-cancellations.md",
        "5-10 business days",
    ),
    (
        "support-bot",
        "Which printers are recommended for thermal labels?",
        "printing-labels.md",
        "Zebra",
    ),
    (
        "support-bot",
        "How do I verify webhook signatures?",
        "webhooks.md",
        "HMAC-SHA256",
    ),
    (
        "support-bot",
        "I lost my phone and my recovery codes",
        "two-factor-authentication.md",
        "Contact support",
    ),
    (
        "support-bot",
        "How long is an invite link valid?",
        "team-members.md",
        "valid for 7 days",
    ),
    (
        "support-bot",
        "What happens when a payment fails?",
        "invoices-and-receipts.md",
        "3, 5, and 7 days",
    ),
    (
        "support-bot",
        "Which carriers are supported?",
        "carrier-connections.md",
        "DHL Express",
    ),
    (
        "support-bot",
        "What is the price of the Growth plan?",
        "plans-and-pricing.md",
        "$79/month",
    ),
];

#[tokio::test]
async fn answers_cite_the_document_holding_the_fact() {
    let qa = backend("knowledge-qa");
    let support = backend("support-bot");
    let mut failures = Vec::new();
    for &(swarm, question, file, fact) in ANSWERED {
        let backend = if swarm == "support-bot" {
            &support
        } else {
            &qa
        };
        let response = complete(backend, &ask(question)).await;
        let ok = response.finish_reason == FinishReason::Stop
            && sources(&response.text)[0].starts_with(&format!("{file}#"))
            && response.text.contains(fact);
        if !ok {
            failures.push(format!(
                "[{swarm}] {question}: want {file} and {fact:?}, got {:?}:\n{}",
                response.finish_reason, response.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn every_quoted_sentence_carries_a_listed_citation() {
    let backend = backend("support-bot");
    let response = complete(&backend, &ask("What happens when a payment fails?")).await;
    let (body, _) = response
        .text
        .split_once("\n\nSources: ")
        .expect("a blank line then the Sources line");
    let listed = sources(&response.text);
    let quoted: Vec<&str> = body.lines().collect();
    assert!(!quoted.is_empty() && quoted.len() <= 4, "{}", response.text);
    for line in quoted {
        let cited = listed.iter().any(|c| line.ends_with(&format!(" [{c}]")));
        assert!(cited, "{line:?} lacks a citation from {listed:?}");
    }
}

#[tokio::test]
async fn unrelated_questions_get_no_answer() {
    let unrelated = [
        "What is the capital of France?",
        "How do I bake sourdough bread?",
        "Who won the football world cup in 2018?",
        "Can you recommend a good movie for tonight?",
        "What time is it in Tokyo?",
        "Tell me a joke about databases",
    ];
    for swarm in ["knowledge-qa", "support-bot"] {
        let backend = backend(swarm);
        for question in unrelated {
            let response = complete(&backend, &ask(question)).await;
            assert_eq!(
                response.finish_reason,
                FinishReason::NoAnswer,
                "[{swarm}] {question} was answered:\n{}",
                response.text
            );
            assert_eq!(response.text, NO_ANSWER);
        }
    }
}

#[tokio::test]
async fn response_metadata_is_the_surrogates() {
    let backend = backend("support-bot");
    let response = complete(&backend, &ask("How long is an invite link valid?")).await;
    assert_eq!(response.model, "extractive");
    assert_eq!(response.request_id, None);
    assert!(response.tool_calls.is_empty());
    let usage = response.usage.expect("usage is reported");
    // Words of the system prompt and the question.
    assert_eq!(usage.input_tokens, 6 + 7);
    assert_eq!(
        usage.output_tokens as usize,
        response.text.split_whitespace().count()
    );
    assert_eq!(backend.id(), &ProviderId("extractive-support-bot".into()));
}

async fn streamed(backend: &Extractive, request: &ChatRequest) -> (Vec<String>, StreamEvent) {
    let mut stream = backend
        .stream(request, deadline())
        .await
        .expect("the stream opens");
    let mut deltas = Vec::new();
    let mut finished = None;
    while let Some(event) = stream.next().await {
        match event.expect("no stream errors") {
            StreamEvent::Delta(text) => {
                assert!(finished.is_none(), "delta after Finished");
                deltas.push(text);
            }
            other @ StreamEvent::Finished { .. } => finished = Some(other),
            other => panic!("unexpected event {other:?}"),
        }
    }
    (deltas, finished.expect("the stream ends with Finished"))
}

#[tokio::test]
async fn streaming_gives_the_same_text_as_complete() {
    let backend = backend("knowledge-qa");
    for question in [
        "How do I repair a corrupt WAL?",
        "What is the capital of France?",
    ] {
        let request = ask(question);
        let whole = complete(&backend, &request).await;
        let (deltas, finished) = streamed(&backend, &request).await;
        assert_eq!(deltas.concat(), whole.text);
        assert!(deltas.len() > 1, "{question}: one delta");
        assert!(
            deltas.iter().all(|d| d.split_whitespace().count() <= 4),
            "{deltas:?}"
        );
        assert_eq!(
            finished,
            StreamEvent::Finished {
                finish_reason: whole.finish_reason,
                usage: whole.usage,
                request_id: None,
                model: "extractive".into(),
            }
        );
    }
}

#[tokio::test]
async fn answers_are_deterministic() {
    let first = backend("knowledge-qa");
    let rebuilt = backend("knowledge-qa");
    for &(_, question, _, _) in ANSWERED.iter().filter(|a| a.0 == "knowledge-qa") {
        let request = ask(question);
        let a = complete(&first, &request).await;
        let b = complete(&first, &request).await;
        let c = complete(&rebuilt, &request).await;
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}

#[tokio::test]
async fn a_short_follow_up_is_read_with_the_previous_question() {
    let backend = backend("support-bot");
    let request = ChatRequest {
        messages: vec![
            Message::user("Which printers are recommended for thermal labels?"),
            Message::assistant("Zebra and Rollo printers."),
            Message::user("and DYMO?"),
        ],
        ..ChatRequest::default()
    };
    let response = complete(&backend, &request).await;
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert!(
        response.text.contains("DYMO 4XL works with PDF only"),
        "{}",
        response.text
    );
}

#[tokio::test]
async fn a_passed_deadline_still_gets_the_instant_answer() {
    let backend = backend("support-bot");
    let spent = AttemptDeadline::new(Duration::ZERO, Duration::ZERO);
    let response = backend
        .complete(&ask("How long is an invite link valid?"), spent)
        .await
        .expect("answering takes microseconds, well inside any deadline");
    assert!(response.text.contains("7 days"));
}

#[tokio::test]
async fn an_empty_knowledge_base_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = Arc::new(KnowledgeIndex::build_dir(dir.path()).expect("empty index"));
    assert!(empty.is_empty());
    let backend = Extractive::new(ProviderId("kb".into()), empty);
    let err = backend
        .complete(&ask("How do I cancel?"), deadline())
        .await
        .expect_err("nothing to answer from");
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    let err = backend
        .stream(&ask("How do I cancel?"), deadline())
        .await
        .err()
        .expect("nothing to stream from");
    assert_eq!(err.label(), "unavailable");
}

#[test]
fn shipped_documents_split_into_cited_passages() {
    let index = index("support-bot");
    let files: std::collections::BTreeSet<&str> =
        index.passages().iter().map(|p| p.file.as_str()).collect();
    assert_eq!(files.len(), 8);
    let refund_rules = index
        .passages()
        .iter()
        .find(|p| p.heading == "Refunds and cancellations > Refund rules")
        .expect("the Refund rules section");
    assert_eq!(refund_rules.file, "refunds-and-cancellations.md");
    assert_eq!(refund_rules.line, 3);
    assert!(refund_rules.text.starts_with("- Yearly plans: full refund"));
    assert_eq!(
        refund_rules.citation(),
        "[refunds-and-cancellations.md#Refunds and cancellations > Refund rules]"
    );
    // No passage is a bare heading, none is longer than a window.
    for passage in index.passages() {
        assert!(!passage.text.trim().is_empty());
        assert!(passage.text.split_whitespace().count() <= 220);
    }
}

#[test]
fn a_persisted_index_answers_like_the_built_one() {
    let built = index("knowledge-qa");
    let json = serde_json::to_vec(&*built).expect("serialize");
    let loaded: KnowledgeIndex = serde_json::from_slice(&json).expect("deserialize");
    assert_eq!(loaded.len(), built.len());
    for query in ["corrupt wal repair", "token revoke", "rolling upgrade"] {
        assert_eq!(loaded.search(query, 5), built.search(query, 5));
    }
}
