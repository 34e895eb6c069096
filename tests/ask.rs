//! A swarm answering through its actors: the supervisor classifies, the
//! worker assembles the prompt and routes it to a real loopback mock; with
//! no provider reachable the extractive surrogate answers; sessions replay
//! history; `baton ask` works offline. (Supervision, failover and health:
//! `tests/actors.rs`.)

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use baton::actor::baton::{Baton, start_swarm};
use baton::actor::supervisor::SupervisorMsg;
use baton::actor::{Answer, AskError};
use baton::config::Config;
use baton::knowledge::KnowledgeIndex;
use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use baton::routing::pool::Pool;
use baton::routing::router::{Router, ServedBy};
use baton::template::load_swarm;
use ractor::ActorRef;

async fn mock(script: &str) -> MockHandle {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml(script, Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap()
}

/// A config whose every route the support-bot uses goes to `upstream`.
fn config(upstream: &MockHandle) -> Config {
    let mut text = format!(
        "default_route = \"default\"\n[defaults]\nretries = 0\nfirst_token_timeout = \"1s\"\n\
         [providers.mock]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\n\
         capabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n\
         [providers.kb]\nkind = \"extractive\"\n",
        upstream.base_url()
    );
    for route in [
        "default",
        "support",
        "fast",
        "sonnet",
        "opus",
        "haiku",
        "knowledge",
    ] {
        text.push_str(&format!("[routes.{route}]\nchain = [\"mock\", \"kb\"]\n"));
    }
    Config::parse(&text, Path::new("t.toml")).unwrap()
}

async fn supervisor(config: &Config) -> ActorRef<SupervisorMsg> {
    let swarm = load_swarm(Path::new("agents/support-bot"), config)
        .unwrap()
        .swarm;
    let knowledge =
        KnowledgeIndex::build(Path::new("agents/support-bot/knowledge"), &swarm.knowledge).unwrap();
    let router = Router::new(config, Pool::from_config(config).unwrap()).unwrap();
    let (root, _) = Baton::start(Arc::new(router), config.health.clone())
        .await
        .unwrap();
    start_swarm(&root, Arc::new(swarm), Some(Arc::new(knowledge)))
        .await
        .unwrap()
}

async fn ask(
    supervisor: &ActorRef<SupervisorMsg>,
    text: &str,
    session: Option<&str>,
) -> Result<Answer, AskError> {
    ractor::call_t!(
        supervisor,
        |reply| SupervisorMsg::Ask {
            text: text.to_owned(),
            session: session.map(str::to_owned),
            reply,
        },
        10_000
    )
    .expect("the supervisor answers")
}

#[tokio::test]
async fn a_billing_question_is_answered_by_the_billing_worker_through_its_route() {
    let upstream = mock("").await;
    let supervisor = supervisor(&config(&upstream)).await;
    let question = "Where can I download the invoice PDF for last month?";
    let answer = ask(&supervisor, question, None).await.unwrap();
    assert_eq!(answer.classification.worker.0, "billing");
    assert_eq!(answer.outcome.response.text, expected_answer(question, 24));
    assert!(matches!(
        answer.outcome.served_by,
        ServedBy::Provider { .. }
    ));
    assert!(!answer.needs_review);
    assert_eq!(upstream.stats().requests, 1);
}

#[tokio::test]
async fn a_session_replays_its_history_to_the_provider() {
    let upstream = mock("").await;
    let supervisor = supervisor(&config(&upstream)).await;
    let first = ask(
        &supervisor,
        "My card was declined when paying the invoice",
        Some("s1"),
    )
    .await
    .unwrap();
    // Remembering happens on the supervisor's mailbox; the next request
    // queues behind it.
    let second = ask(&supervisor, "Which cards do you accept?", Some("s1"))
        .await
        .unwrap();
    let fresh = ask(&supervisor, "Which cards do you accept?", None)
        .await
        .unwrap();
    let with_history = second.outcome.response.usage.unwrap().input_tokens;
    let without = fresh.outcome.response.usage.unwrap().input_tokens;
    let first_exchange = first.outcome.response.text.split_whitespace().count() as u32;
    assert!(
        with_history >= without + first_exchange,
        "{with_history} vs {without} + {first_exchange}"
    );
}

#[tokio::test]
async fn with_every_provider_down_the_surrogate_answers_and_refunds_need_review() {
    let upstream = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let supervisor = supervisor(&config(&upstream)).await;
    let answer = ask(
        &supervisor,
        "How long is the refund window on yearly plans?",
        None,
    )
    .await
    .unwrap();
    assert_eq!(answer.classification.worker.0, "refunds");
    assert_eq!(answer.outcome.served_by, ServedBy::Extractive);
    assert!(answer.outcome.degraded);
    assert!(
        answer.needs_review,
        "a high-stakes answer through a fallback"
    );
    assert!(
        answer.outcome.response.text.contains("14 days"),
        "{}",
        answer.outcome.response.text
    );
}

#[test]
fn baton_ask_answers_offline_from_the_knowledge_base() {
    // The answer needs review; the queue goes here, not into the repository.
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "ask",
            "support-bot",
            "How long is the refund window on yearly plans?",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("BATON_CONFIG")
        .env("BATON_STATE", state.path())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENROUTER_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("14 days"), "{stdout}");
    assert!(
        stdout.contains("[refunds-and-cancellations.md#"),
        "{stdout}"
    );
    assert!(stderr.contains("worker refunds"), "{stderr}");
    assert!(stderr.contains("extractive surrogate"), "{stderr}");
    assert!(stderr.contains("queued for review as rv-"), "{stderr}");
    // The review and the journal record are in the store of the state
    // directory: a later command finds both.
    let listed = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["review", "list", "--json", "--state"])
        .arg(state.path())
        .output()
        .unwrap();
    let items: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    let trace_id = items[0]["trace_id"].as_str().unwrap().to_owned();
    let traced = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["trace", &trace_id, "--state"])
        .arg(state.path())
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&traced.stdout);
    assert!(traced.status.success(), "{trace}");
    assert!(trace.contains("completed"), "{trace}");
    assert!(trace.contains("answer from extractive"), "{trace}");
}
