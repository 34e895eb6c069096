//! The fallback chain over real loopback sockets: Baton's OpenAI and
//! Anthropic clients call `baton mock-provider` servers whose fault scripts
//! take providers down in every way the router must survive.
//!
//! - one test per failover trigger;
//! - deadlines, retries, Retry-After, hedging, spill-over, allowed domains;
//! - the breaker opening and closing again through half-open;
//! - final fallbacks: cache, then extractive, then a clear error;
//! - the retry budget holding through a total outage.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::config::{Config, ProviderId};
use baton::knowledge::KnowledgeIndex;
use baton::provider::Backend;
use baton::provider::extractive::Extractive;
use baton::provider::mock::{MockHandle, MockServer, Script};
use baton::provider::{ChatRequest, Message};
use baton::routing::pool::Pool;
use baton::routing::router::{AttemptReason, Outcome, RouteError, RouteRequest, Router, ServedBy};

async fn mock(script: &str) -> MockHandle {
    let script =
        Script::from_toml(script, Path::new("test-script.toml")).expect("test script parses");
    MockServer::start("127.0.0.1:0".parse().unwrap(), script)
        .await
        .expect("mock starts")
}

async fn healthy() -> MockHandle {
    mock("").await
}

/// One provider of a test config.
struct Upstream<'a> {
    name: &'a str,
    mock: &'a MockHandle,
    /// `openai` or `anthropic`.
    kind: &'a str,
    extra: &'a str,
}

fn up<'a>(name: &'a str, mock: &'a MockHandle) -> Upstream<'a> {
    Upstream {
        name,
        mock,
        kind: "openai",
        extra: "",
    }
}

/// A config with one route `r` over `upstreams` in order; `route` and
/// `top` add TOML to the route and to the top of the file.
fn config(upstreams: &[Upstream<'_>], route: &str, top: &str) -> Config {
    // Route settings go under [defaults] so that `route` can override them.
    let mut text = format!(
        "default_route = \"r\"\n{top}\n[defaults]\nretries = 0\nfirst_token_timeout = \"500ms\"\nattempt_timeout = \"2s\"\ntotal_timeout = \"10s\"\nfinal_fallbacks = []\n"
    );
    for u in upstreams {
        let base = match u.kind {
            "openai" => format!("{}/v1", u.mock.base_url()),
            _ => u.mock.base_url(),
        };
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"{kind}\"\nmodel = \"mock-{name}\"\nbase_url = \"{base}\"\ndomain = \"{name}\"\n{capabilities}{extra}\n",
            name = u.name,
            kind = u.kind,
            extra = u.extra,
            capabilities = if u.extra.contains("capabilities") {
                ""
            } else {
                "capabilities = [\"chat\", \"streaming\"]\n"
            },
        ));
    }
    let chain: Vec<String> = upstreams
        .iter()
        .map(|u| format!("\"{}\"", u.name))
        .collect();
    text.push_str(&format!(
        "[routes.r]\nchain = [{}]\n{route}\n",
        chain.join(", ")
    ));
    Config::parse(&text, Path::new("test-baton.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn router(config: &Config) -> Router {
    Router::new(config, Pool::from_config(config).expect("pool")).expect("router")
}

fn ask(text: &str) -> RouteRequest {
    RouteRequest::new(
        "r",
        ChatRequest {
            messages: vec![Message::user(text)],
            ..ChatRequest::default()
        },
    )
}

fn served_by(outcome: &Outcome) -> String {
    match &outcome.served_by {
        ServedBy::Provider { id } => id.0.clone(),
        other => format!("{other:?}"),
    }
}

/// Primary fails with `script`; the healthy secondary answers; the first
/// attempt's failure has `label`.
async fn fails_over_on(script: &str, label: &str) {
    let primary = mock(script).await;
    let secondary = healthy().await;
    let config = config(
        &[up("primary", &primary), up("secondary", &secondary)],
        "",
        "",
    );
    let outcome = router(&config)
        .complete(ask("where is my parcel"))
        .await
        .expect("an answer");
    assert_eq!(served_by(&outcome), "secondary");
    assert!(outcome.fallback);
    assert!(!outcome.response.text.is_empty());
    let first = &outcome.attempts[0];
    assert_eq!(first.provider.0, "primary");
    assert_eq!(
        first.error.as_ref().map(|e| e.0.as_str()),
        Some(label),
        "{:?}",
        outcome.attempts
    );
    assert_eq!(outcome.attempts[1].reason, AttemptReason::Failover);
    assert_eq!(secondary.stats().requests, 1);
}

#[tokio::test]
async fn fails_over_when_the_connection_is_refused() {
    fails_over_on("[[fault]]\nkind = \"refuse\"\n", "connect").await;
}

#[tokio::test]
async fn fails_over_when_the_connection_is_reset() {
    fails_over_on("[[fault]]\nkind = \"reset\"\n", "reset").await;
}

#[tokio::test]
async fn fails_over_when_the_first_token_never_comes() {
    fails_over_on("[[fault]]\nkind = \"hang\"\n", "first_token_timeout").await;
}

#[tokio::test]
async fn fails_over_when_a_slow_stream_passes_the_attempt_deadline() {
    // 24 tokens at 200 ms each take 4.8 s; the attempt deadline is 2 s.
    fails_over_on(
        "[[fault]]\nkind = \"slow_stream\"\ntoken_interval = \"200ms\"\n",
        "timeout",
    )
    .await;
}

#[tokio::test]
async fn fails_over_on_500_502_and_503() {
    for status in [500, 502, 503] {
        fails_over_on(
            &format!("[[fault]]\nkind = \"status\"\nstatus = {status}\n"),
            "5xx",
        )
        .await;
    }
}

#[tokio::test]
async fn fails_over_on_429_without_retry_after() {
    fails_over_on("[[fault]]\nkind = \"status\"\nstatus = 429\n", "429").await;
}

#[tokio::test]
async fn fails_over_on_malformed_json() {
    fails_over_on("[[fault]]\nkind = \"malformed\"\n", "malformed").await;
}

#[tokio::test]
async fn fails_over_on_a_content_filter_refusal() {
    fails_over_on("[[fault]]\nkind = \"content_filter\"\n", "content_filter").await;
}

#[tokio::test]
async fn a_cut_stream_is_a_failure_not_a_short_answer() {
    fails_over_on(
        "[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 3\n",
        "cut_stream",
    )
    .await;
}

#[tokio::test]
async fn anthropic_upstreams_fail_over_the_same_way() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 529\n").await;
    let secondary = healthy().await;
    let config = config(
        &[
            Upstream {
                kind: "anthropic",
                ..up("primary", &primary)
            },
            Upstream {
                kind: "anthropic",
                ..up("secondary", &secondary)
            },
        ],
        "",
        "",
    );
    let outcome = router(&config)
        .complete(ask("refund please"))
        .await
        .unwrap();
    assert_eq!(served_by(&outcome), "secondary");
    assert_eq!(outcome.attempts[0].status, Some(529));
    assert_eq!(secondary.stats().by_endpoint.get("anthropic"), Some(&1));
}

#[tokio::test]
async fn a_too_long_prompt_goes_to_the_next_long_context_model() {
    let short = mock("[[fault]]\nkind = \"context_length\"\n").await;
    let other_short = healthy().await;
    let long = healthy().await;
    let config = config(
        &[
            up("short", &short),
            up("other-short", &other_short),
            Upstream {
                extra: "capabilities = [\"chat\", \"streaming\", \"long-context\"]",
                ..up("long", &long)
            },
        ],
        "",
        "",
    );
    let outcome = router(&config)
        .complete(ask("summarise this long contract"))
        .await
        .unwrap();
    assert_eq!(served_by(&outcome), "long");
    assert_eq!(
        outcome.attempts[0].error.as_ref().unwrap().0,
        "context_length"
    );
    assert_eq!(
        other_short.stats().requests,
        0,
        "a model without long context is skipped"
    );
}

#[tokio::test]
async fn a_429_with_a_short_retry_after_is_retried_on_the_same_provider() {
    let primary =
        mock("[[fault]]\nkind = \"status\"\nstatus = 429\nretry_after = \"1s\"\nto = \"300ms\"\n")
            .await;
    let secondary = healthy().await;
    let config = config(
        &[up("primary", &primary), up("secondary", &secondary)],
        "retries = 1",
        "",
    );
    let started = Instant::now();
    let outcome = router(&config)
        .complete(ask("status of order 7"))
        .await
        .unwrap();
    assert_eq!(served_by(&outcome), "primary");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited out Retry-After"
    );
    assert_eq!(primary.stats().requests, 2);
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test]
async fn a_retry_after_longer_than_the_limit_fails_over_at_once() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 429\nretry_after = \"30s\"\n").await;
    let secondary = healthy().await;
    let config = config(
        &[up("primary", &primary), up("secondary", &secondary)],
        "retries = 1",
        "",
    );
    let started = Instant::now();
    let outcome = router(&config).complete(ask("hello")).await.unwrap();
    assert_eq!(served_by(&outcome), "secondary");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(primary.stats().requests, 1);
}

#[tokio::test]
async fn the_total_deadline_caps_attempts_and_back_offs() {
    let hanging = [
        mock("[[fault]]\nkind = \"hang\"\n").await,
        mock("[[fault]]\nkind = \"hang\"\n").await,
        mock("[[fault]]\nkind = \"hang\"\n").await,
    ];
    let config = config(
        &[
            up("a", &hanging[0]),
            up("b", &hanging[1]),
            up("c", &hanging[2]),
        ],
        "total_timeout = \"1s\"\nfirst_token_timeout = \"400ms\"",
        "",
    );
    let started = Instant::now();
    let error = router(&config)
        .complete(ask("anyone there"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1400), "took {elapsed:?}");
    let RouteError::Exhausted {
        attempts, trace_id, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(error.to_string().contains(&trace_id.to_string()));
}

#[tokio::test]
async fn the_total_deadline_includes_back_offs_between_retries() {
    let down = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let config = config(
        &[up("down", &down)],
        "total_timeout = \"1s\"\nretries = 10\nbackoff_base = \"400ms\"\nbackoff_max = \"400ms\"",
        "[budget]\nmin_per_second = 100\n",
    );
    let started = Instant::now();
    let error = router(&config)
        .complete(ask("still there"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, RouteError::Exhausted { .. }), "{error}");
    assert!(elapsed < Duration::from_millis(1300), "took {elapsed:?}");
    // Back-offs of up to 400 ms within 1 s leave room for a few tries only.
    let tries = down.stats().requests;
    assert!((2..=10).contains(&tries), "{tries} tries");
}

#[tokio::test]
async fn hedging_after_the_primarys_p95_latency() {
    let primary = healthy().await;
    let fast = healthy().await;
    let config = config(
        &[up("primary", &primary), up("fast", &fast)],
        "hedge = \"p95\"",
        "",
    );
    let router = router(&config);
    // Some history: the primary's p95 is a few milliseconds.
    for i in 0..8 {
        let outcome = router.complete(ask(&format!("warm {i}"))).await.unwrap();
        assert_eq!(served_by(&outcome), "primary");
    }
    primary.set_script(
        Script::from_toml("[server]\nlatency = \"2s\"\n", Path::new("slow.toml")).unwrap(),
    );
    let started = Instant::now();
    let outcome = router.complete(ask("now slow")).await.unwrap();
    assert_eq!(served_by(&outcome), "fast");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "hedged long before the 2 s answer"
    );
    assert!(
        outcome
            .attempts
            .iter()
            .any(|a| a.reason == AttemptReason::Hedge)
    );
}

#[tokio::test]
async fn hedging_sends_a_second_request_after_the_delay_and_cancels_the_loser() {
    let slow = mock("[server]\nlatency = \"3s\"\n").await;
    let fast = healthy().await;
    let config = config(
        &[up("slow", &slow), up("fast", &fast)],
        "hedge = \"200ms\"",
        "",
    );
    let router = router(&config);
    let started = Instant::now();
    let outcome = router.complete(ask("quick question")).await.unwrap();
    assert_eq!(served_by(&outcome), "fast");
    assert!(started.elapsed() < Duration::from_secs(2));
    let hedge = outcome
        .attempts
        .iter()
        .find(|a| a.reason == AttemptReason::Hedge)
        .expect("a hedge");
    assert_eq!(hedge.provider.0, "fast");
    let loser = outcome
        .attempts
        .iter()
        .find(|a| a.provider.0 == "slow")
        .unwrap();
    assert!(loser.cancelled, "{:?}", outcome.attempts);
    let slow_handle = router.chain(&baton::swarm::RouteName("r".into())).unwrap()[0].clone();
    assert_eq!(
        slow_handle
            .snapshot(0, tokio::time::Instant::now())
            .in_flight,
        0,
        "the loser is no longer in flight"
    );
}

#[tokio::test]
async fn spills_over_a_saturated_provider_instead_of_queueing() {
    let busy = mock("[server]\nlatency = \"400ms\"\n").await;
    let spare = healthy().await;
    let config = config(
        &[
            Upstream {
                extra: "max_concurrency = 1",
                ..up("busy", &busy)
            },
            up("spare", &spare),
        ],
        "",
        "",
    );
    let router = Arc::new(router(&config));
    let first = {
        let router = router.clone();
        tokio::spawn(async move { router.complete(ask("one")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = router.complete(ask("two")).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(served_by(&first), "busy", "{:?}", first.attempts);
    assert_eq!(served_by(&second), "spare");
    assert_eq!(second.attempts[0].reason, AttemptReason::SpillOver);
    assert_eq!(busy.stats().requests, 1);
}

#[tokio::test]
async fn without_spill_over_a_full_queue_refuses_at_once_and_moves_on() {
    let busy = mock("[server]\nlatency = \"400ms\"\n").await;
    let spare = healthy().await;
    let config = config(
        &[
            Upstream {
                extra: "max_concurrency = 1\nmax_queue = 1",
                ..up("busy", &busy)
            },
            up("spare", &spare),
        ],
        "spill_over = false",
        "",
    );
    let router = Arc::new(router(&config));
    let mut running = Vec::new();
    for text in ["one", "two"] {
        let router = router.clone();
        running.push(tokio::spawn(
            async move { router.complete(ask(text)).await },
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One call in flight, one waiting: the third is refused without
    // waiting and answered by the next provider.
    let third = router.complete(ask("three")).await.unwrap();
    assert_eq!(served_by(&third), "spare");
    let refusal = third.attempts[0].error.as_ref().unwrap();
    assert_eq!(refusal.0, "saturated");
    assert!(refusal.1.contains("the queue is full"), "{}", refusal.1);
    assert!(third.attempts[0].latency < Duration::from_millis(50));
    // Passing over a full provider is a spill-over whether the snapshot
    // or the queue found it full: the provider did not fail.
    assert_eq!(third.attempts[1].reason, AttemptReason::SpillOver);
    let busy_breaker = router.pool().handles()[0].breaker(tokio::time::Instant::now());
    assert_eq!(
        busy_breaker.consecutive_failures, 0,
        "a full queue is not charged to the provider's health"
    );
    for task in running {
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(
            served_by(&outcome),
            "busy",
            "the queued call waited its turn"
        );
    }
    assert_eq!(busy.stats().requests, 2);
}

#[tokio::test]
async fn allowed_domains_are_respected_even_when_only_final_fallbacks_remain() {
    let a = healthy().await;
    let b = healthy().await;
    let config = config(
        &[up("a", &a), up("b", &b)],
        "allowed_domains = [\"private\"]\nfinal_fallbacks = [\"cache\"]",
        "",
    );
    let error = router(&config)
        .complete(ask("secret plans"))
        .await
        .unwrap_err();
    assert!(matches!(error, RouteError::Exhausted { .. }), "{error}");
    assert_eq!(
        a.stats().requests + b.stats().requests,
        0,
        "nothing left the allowed domains"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_the_threshold_and_closes_through_half_open() {
    let flaky = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let backup = healthy().await;
    let config = config(
        &[up("flaky", &flaky), up("backup", &backup)],
        "",
        "[breaker]\nconsecutive_failures = 3\nbase_ejection = \"500ms\"\nmax_ejection = \"5s\"\n",
    );
    let router = router(&config);
    for i in 0..3 {
        router.complete(ask(&format!("q{i}"))).await.unwrap();
    }
    assert_eq!(flaky.stats().requests, 3);
    // Open: the next requests go straight to the backup.
    for i in 3..6 {
        let outcome = router.complete(ask(&format!("q{i}"))).await.unwrap();
        assert_eq!(outcome.attempts[0].provider.0, "backup");
    }
    assert_eq!(
        flaky.stats().requests,
        3,
        "no request reaches an open breaker"
    );
    let handle = router.chain(&baton::swarm::RouteName("r".into())).unwrap()[0].clone();
    let snapshot = handle.breaker(tokio::time::Instant::now());
    assert_eq!(snapshot.ejections, 1);

    // The provider recovers; after the ejection a trial closes the breaker.
    flaky.set_script(Script::from_toml("", Path::new("healthy.toml")).unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let trial = router.complete(ask("trial")).await.unwrap();
    assert_eq!(served_by(&trial), "flaky");
    let after = router.complete(ask("after")).await.unwrap();
    assert_eq!(served_by(&after), "flaky");
    assert_eq!(
        format!("{:?}", handle.breaker(tokio::time::Instant::now()).state),
        "Closed"
    );
}

#[tokio::test]
async fn a_half_open_breaker_lets_exactly_one_trial_through_under_concurrency() {
    let flaky = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let backup = healthy().await;
    let config = config(
        &[up("flaky", &flaky), up("backup", &backup)],
        "",
        "[breaker]\nconsecutive_failures = 2\nbase_ejection = \"300ms\"\nhalf_open_trials = 1\n",
    );
    let router = Arc::new(router(&config));
    for i in 0..2 {
        router.complete(ask(&format!("open {i}"))).await.unwrap();
    }
    assert_eq!(flaky.stats().requests, 2);
    // Recovering slowly: the trial is still in flight when the others come.
    flaky.set_script(
        Script::from_toml("[server]\nlatency = \"300ms\"\n", Path::new("slow.toml")).unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            router.complete(ask(&format!("concurrent {i}"))).await
        }));
    }
    let mut by_flaky = 0;
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        if served_by(&outcome) == "flaky" {
            by_flaky += 1;
        }
    }
    assert_eq!(
        flaky.stats().requests,
        3,
        "exactly one trial reached the half-open provider"
    );
    assert_eq!(by_flaky, 1);
}

#[tokio::test]
async fn a_dead_route_answers_from_cache_then_extractive_then_fails_with_the_trace_id() {
    let only = healthy().await;
    let config = config(
        &[up("only", &only)],
        "final_fallbacks = [\"cache\", \"extractive\"]",
        "",
    );
    let router = router(&config);
    let index = KnowledgeIndex::build_dir(Path::new("agents/support-bot/knowledge"))
        .expect("shipped knowledge");
    let extractive: Arc<dyn Backend> = Arc::new(Extractive::new(
        ProviderId("extractive".into()),
        Arc::new(index),
    ));
    let with_knowledge = |text: &str| RouteRequest {
        contract: None,
        extractive: Some(extractive.clone()),
        ..ask(text)
    };
    let fresh = router
        .complete(with_knowledge("what are your opening hours"))
        .await
        .unwrap();
    assert!(!fresh.degraded);

    only.set_script(
        Script::from_toml(
            "[[fault]]\nkind = \"status\"\nstatus = 503\n",
            Path::new("down.toml"),
        )
        .unwrap(),
    );
    // 1. The same question: the cached answer, marked as such.
    let cached = router
        .complete(with_knowledge("what are your opening hours"))
        .await
        .unwrap();
    assert!(
        matches!(cached.served_by, ServedBy::Cache { .. }),
        "{:?}",
        cached.served_by
    );
    assert!(cached.degraded);
    assert_eq!(cached.response.text, fresh.response.text);

    // 2. A new question: the extractive answer, cited, degraded.
    let extracted = router
        .complete(with_knowledge(
            "how long is the refund window on yearly plans",
        ))
        .await
        .unwrap();
    assert_eq!(extracted.served_by, ServedBy::Extractive);
    assert!(extracted.degraded && !extracted.refusal);
    assert!(
        extracted
            .response
            .text
            .contains("[refunds-and-cancellations.md#"),
        "{}",
        extracted.response.text
    );

    // A question the knowledge base cannot answer: a plain refusal, counted apart.
    let refused = router
        .complete(with_knowledge("what is the capital of mongolia"))
        .await
        .unwrap();
    assert!(refused.refusal, "{}", refused.response.text);

    // 3. Without a knowledge base: a clear error carrying the trace id.
    let request = ask("a question never asked before");
    let trace_id = request.trace_id;
    let error = router.complete(request).await.unwrap_err();
    assert_eq!(error.trace_id(), Some(trace_id));
    let message = error.to_string();
    assert!(message.contains(&trace_id.to_string()), "{message}");
    assert!(message.contains("only 5xx"), "{message}");
}

#[tokio::test]
async fn a_refused_key_or_unknown_model_fails_over() {
    for status in [401, 403, 404] {
        fails_over_on(
            &format!("[[fault]]\nkind = \"status\"\nstatus = {status}\n"),
            "4xx",
        )
        .await;
    }
}

#[tokio::test]
async fn an_answer_breaking_the_output_schema_moves_to_the_next_provider() {
    // The mock answers prose; a contract asking for JSON fails it, and the
    // next provider gets the same request. Both break it here, so the
    // request ends with two contract failures.
    let first = healthy().await;
    let second = healthy().await;
    let config = config(&[up("first", &first), up("second", &second)], "", "");
    let schema = serde_json::json!({"type": "object", "required": ["answer"]});
    let request = RouteRequest {
        contract: Some(Arc::new(jsonschema::validator_for(&schema).unwrap())),
        ..ask("give me json")
    };
    let error = router(&config).complete(request).await.unwrap_err();
    let RouteError::Exhausted { attempts, .. } = &error else {
        panic!("{error}")
    };
    let labels: Vec<&str> = attempts
        .iter()
        .map(|a| a.error.as_ref().unwrap().0.as_str())
        .collect();
    assert_eq!(labels, ["contract", "contract"]);
    assert_eq!(first.stats().requests + second.stats().requests, 2);
}

#[tokio::test]
async fn a_streamed_answer_under_a_contract_never_shows_the_caller_a_broken_answer() {
    let first = healthy().await;
    let second = healthy().await;
    let config = config(&[up("first", &first), up("second", &second)], "", "");
    let schema = serde_json::json!({"type": "object", "required": ["answer"]});
    let request = RouteRequest {
        contract: Some(Arc::new(jsonschema::validator_for(&schema).unwrap())),
        ..ask("give me json")
    };
    let (sink, mut events) = tokio::sync::mpsc::channel(64);
    let error = router(&config).stream_to(request, sink).await.unwrap_err();
    assert!(matches!(error, RouteError::Exhausted { .. }), "{error}");
    assert!(
        events.recv().await.is_none(),
        "no text of an answer that broke the contract reached the caller"
    );
    assert_eq!(first.stats().requests + second.stats().requests, 2);
}

#[test]
fn a_json_answer_meeting_the_contract_passes_and_one_missing_a_field_fails() {
    use baton::provider::{ChatResponse, FinishReason};
    use baton::routing::router::check_contract;
    let schema = serde_json::json!({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}});
    let validator = jsonschema::validator_for(&schema).unwrap();
    let response = |text: &str| ChatResponse {
        text: text.into(),
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: None,
        request_id: None,
        model: "m".into(),
    };
    assert!(check_contract(Some(&validator), response("{\"answer\": \"yes\"}")).is_ok());
    let broken = check_contract(Some(&validator), response("{\"reply\": \"yes\"}")).unwrap_err();
    assert_eq!(broken.label(), "contract");
    assert!(check_contract(Some(&validator), response("not json")).is_err());
}

#[tokio::test]
async fn a_plain_400_is_returned_not_failed_over() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 400\n").await;
    let secondary = healthy().await;
    let config = config(
        &[up("primary", &primary), up("secondary", &secondary)],
        "",
        "",
    );
    let error = router(&config).complete(ask("bad")).await.unwrap_err();
    assert!(matches!(error, RouteError::Refused { .. }), "{error}");
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test]
async fn the_retry_budget_holds_in_a_total_outage() {
    let long = std::env::var_os("BATON_LONG").is_some();
    let (requests, seconds) = if long { (1_000u64, 10u64) } else { (200, 2) };
    let down = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    // Retries as eager as can be, and a breaker that never opens, so that
    // only the budget stands between the outage and a retry storm.
    let config = config(
        &[up("down", &down)],
        "retries = 5\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"",
        "[breaker]\nconsecutive_failures = 1000000\nfailure_rate = 1.0\nmin_requests = 1000000\n",
    );
    let router = Arc::new(router(&config));
    let started = Instant::now();
    let pause = Duration::from_secs(seconds) / requests as u32;
    let mut tasks = Vec::new();
    for i in 0..requests {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            router.complete(ask(&format!("outage {i}"))).await
        }));
        tokio::time::sleep(pause).await;
    }
    for task in tasks {
        assert!(task.await.unwrap().is_err());
    }
    // The budget's per-second allowance is granted per started second, so
    // a run of 10.5 s can touch 12 of them: count those.
    let elapsed = started.elapsed().as_secs_f64().ceil() + 1.0;
    let attempts = down.stats().requests as f64;
    let bound = 1.2 * requests as f64 + 10.0 * elapsed;
    println!(
        "retry budget: {attempts} upstream attempts for {requests} requests in {elapsed} s (bound {bound})"
    );
    assert!(
        attempts <= bound,
        "{attempts} upstream attempts for {requests} requests in {elapsed} s (bound {bound})"
    );
    assert!(attempts >= requests as f64, "every request was tried once");
}
