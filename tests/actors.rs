//! The actor tree against real loopback mocks: health actors probing and
//! judging providers, supervised failover with the conversation replayed,
//! fail-back after the hold down, hysteresis under flapping, crash
//! supervision with requests handed over or failed clearly, and delegation
//! chains.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton::actor::baton::{Baton, BatonMsg, start_swarm};
use baton::actor::health::HealthReport;
use baton::actor::supervisor::{BindingReport, MAX_RESTARTS, SupervisorMsg, SwitchReason};
use baton::actor::worker::WorkerMsg;
use baton::actor::{Answer, AskError};
use baton::config::Config;
use baton::knowledge::KnowledgeIndex;
use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use baton::routing::pool::{HealthState, Pool};
use baton::routing::router::{Router, ServedBy};
use baton::swarm::AgentId;
use baton::template::load_swarm;
use ractor::ActorRef;
use tokio::time::Instant;

async fn mock(script: &str) -> MockHandle {
    MockServer::start("127.0.0.1:0".parse().unwrap(), script_of(script))
        .await
        .unwrap()
}

fn script_of(text: &str) -> Script {
    Script::from_toml(text, Path::new("t.toml")).unwrap()
}

/// The port refuses connections: probes and calls both fail.
const DOWN: &str = "[[fault]]\nkind = \"refuse\"\n";

struct Setup {
    /// Probe interval, `None` for no probes.
    probe: Option<&'static str>,
    probe_kind: &'static str,
    hold_down: &'static str,
    degraded_latency: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            probe: Some("20ms"),
            probe_kind: "models",
            hold_down: "400ms",
            degraded_latency: "10s",
        }
    }
}

/// Every route the shipped swarms use goes primary → secondary → kb.
fn config(primary: &MockHandle, secondary: &MockHandle, setup: &Setup) -> Config {
    let probe = |name: &str| match setup.probe {
        Some(interval) => format!(
            "[providers.{name}.probe]\ninterval = \"{interval}\"\nkind = \"{}\"\n",
            setup.probe_kind
        ),
        None => format!("[providers.{name}.probe]\nkind = \"none\"\n"),
    };
    let mut text = format!(
        "default_route = \"default\"\n\
         [defaults]\nretries = 0\nfirst_token_timeout = \"1s\"\nattempt_timeout = \"3s\"\n\
         [breaker]\nconsecutive_failures = 2\nmin_requests = 100\nbase_ejection = \"100ms\"\nmax_ejection = \"200ms\"\n\
         [health]\nhold_down = \"{}\"\ndegraded_latency = \"{}\"\nprobe_timeout = \"300ms\"\n\
         [providers.primary]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\ndomain = \"one\"\n\
         capabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n{}\
         [providers.secondary]\nkind = \"anthropic\"\nmodel = \"m\"\nbase_url = \"{}\"\ndomain = \"two\"\n\
         capabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n{}\
         [providers.kb]\nkind = \"extractive\"\n",
        setup.hold_down,
        setup.degraded_latency,
        primary.base_url(),
        probe("primary"),
        secondary.base_url(),
        probe("secondary"),
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
        text.push_str(&format!(
            "[routes.{route}]\nchain = [\"primary\", \"secondary\", \"kb\"]\n"
        ));
    }
    Config::parse(&text, Path::new("t.toml")).unwrap()
}

struct Running {
    root: ActorRef<BatonMsg>,
    swarm: ActorRef<SupervisorMsg>,
}

async fn start(config: &Config, swarm_dir: &str) -> Running {
    let swarm = load_swarm(Path::new(swarm_dir), config).unwrap().swarm;
    let knowledge =
        KnowledgeIndex::build(&Path::new(swarm_dir).join("knowledge"), &swarm.knowledge).unwrap();
    let router = Router::new(config, Pool::from_config(config).unwrap()).unwrap();
    let (root, _) = Baton::start(Arc::new(router), config.health.clone())
        .await
        .unwrap();
    let swarm = start_swarm(&root, Arc::new(swarm), Some(Arc::new(knowledge)))
        .await
        .unwrap();
    Running { root, swarm }
}

async fn ask(running: &Running, text: &str, session: Option<&str>) -> Result<Answer, AskError> {
    ractor::call_t!(
        running.swarm,
        |reply| SupervisorMsg::Ask {
            text: text.to_owned(),
            session: session.map(str::to_owned),
            reply,
        },
        10_000
    )
    .expect("the supervisor answers")
}

/// Asks with the answer streamed; reads the stream while the request runs.
async fn ask_streaming(running: &Running, question: &str) -> (Answer, String, usize) {
    let (sink, mut received) = tokio::sync::mpsc::channel(4);
    let reading = tokio::spawn(async move {
        let mut streamed = String::new();
        let mut finished = 0;
        while let Some(event) = received.recv().await {
            match event {
                baton::provider::StreamEvent::Delta(text) => streamed.push_str(&text),
                baton::provider::StreamEvent::Finished { .. } => finished += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        (streamed, finished)
    });
    let answer = ractor::call_t!(
        running.swarm,
        |reply| SupervisorMsg::AskStream {
            text: question.to_owned(),
            session: None,
            sink,
            reply,
        },
        10_000
    )
    .unwrap()
    .unwrap();
    let (streamed, finished) = reading.await.unwrap();
    (answer, streamed, finished)
}

fn served(answer: &Answer) -> String {
    match &answer.outcome.served_by {
        ServedBy::Provider { id } => id.0.clone(),
        other => format!("{other:?}"),
    }
}

async fn bindings(running: &Running) -> BindingReport {
    ractor::call_t!(running.swarm, SupervisorMsg::Bindings, 2_000).unwrap()
}

async fn bound(running: &Running, worker: &str) -> String {
    bindings(running)
        .await
        .bindings
        .into_iter()
        .find(|(agent, _)| agent.0 == worker)
        .map(|(_, provider)| provider.0)
        .expect("the worker has a binding")
}

async fn health(running: &Running, provider: &str) -> HealthReport {
    let reports: Vec<HealthReport> =
        ractor::call_t!(running.root, BatonMsg::Health, 5_000).unwrap();
    reports
        .into_iter()
        .find(|r| r.provider.0 == provider)
        .expect("a report for the provider")
}

/// Polls `check` until it holds, failing after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn worker(running: &Running, agent: &str) -> ActorRef<WorkerMsg> {
    ractor::call_t!(
        running.swarm,
        |reply| SupervisorMsg::Worker {
            agent: AgentId(agent.into()),
            reply
        },
        1_000
    )
    .unwrap()
    .expect("the worker runs")
}

async fn restarted(running: &Running, agent: &str, old: &ActorRef<WorkerMsg>) {
    eventually(Duration::from_secs(5), "the worker's restart", || async {
        let current: Option<ActorRef<WorkerMsg>> = ractor::call_t!(
            running.swarm,
            |reply| SupervisorMsg::Worker {
                agent: AgentId(agent.into()),
                reply
            },
            1_000
        )
        .unwrap();
        current.is_some_and(|c| c.get_id() != old.get_id())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_mid_conversation_replays_the_whole_history_and_binds_the_worker_to_the_fallback()
{
    let primary = mock("").await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    let first_question = "My card was declined when paying the invoice";
    let first = ask(&running, first_question, Some("s1")).await.unwrap();
    assert_eq!(first.classification.worker.0, "billing");
    assert_eq!(
        first.outcome.served_by,
        ServedBy::Provider {
            id: baton::config::ProviderId("primary".into())
        }
    );
    assert_eq!(bound(&running, "billing").await, "primary");

    // The primary goes into an outage between the two turns.
    primary.set_script(script_of(DOWN));
    let second_question = "Which cards do you accept for the invoice?";
    let second = ask(&running, second_question, Some("s1")).await.unwrap();
    assert_eq!(
        served(&second),
        "secondary",
        "{:?}",
        second.outcome.attempts
    );
    // The fallback received the whole conversation, translated to its own
    // protocol: the first exchange, then the new question.
    let turns = secondary.stats().last_turns;
    assert_eq!(
        turns,
        [
            format!("user: {first_question}"),
            format!("assistant: {}", first.outcome.response.text),
            format!("user: {second_question}"),
        ]
    );

    // Probes and the failed call bring the breaker open: the supervisor
    // rebinds every worker that was on the primary.
    eventually(Duration::from_secs(3), "the rebinding", || async {
        bound(&running, "billing").await == "secondary"
    })
    .await;
    let report = bindings(&running).await;
    assert!(
        report
            .bindings
            .iter()
            .all(|(_, provider)| provider.0 == "secondary"),
        "{:?}",
        report.bindings
    );
    let billing_switch = report
        .switches
        .iter()
        .find(|s| s.worker.0 == "billing")
        .unwrap();
    assert_eq!(billing_switch.reason, SwitchReason::Failover);
    assert_eq!(billing_switch.from.0, "primary");
    assert_eq!(health(&running, "primary").await.state, HealthState::Down);

    // A high-stakes refund now answered by the secondary needs review.
    let refund = ask(
        &running,
        "How long is the refund window on yearly plans?",
        None,
    )
    .await
    .unwrap();
    assert_eq!(refund.classification.worker.0, "refunds");
    assert!(refund.needs_review);
    assert!(!refund.outcome.degraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fail_back_once_the_primary_has_stayed_up_for_the_hold_down() {
    let primary = mock(DOWN).await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    eventually(Duration::from_secs(3), "the failover", || async {
        bound(&running, "technical").await == "secondary"
    })
    .await;
    let answer = ask(&running, "The webhook is not firing", None)
        .await
        .unwrap();
    assert_eq!(served(&answer), "secondary");

    primary.set_script(script_of(""));
    let recovered_at = Instant::now();
    // Traffic makes the half-open trial on the primary; the binding moves
    // back only after the primary has stayed up for the hold down.
    eventually(Duration::from_secs(5), "the fail-back", || async {
        let _ = ask(&running, "The webhook is not firing", None).await;
        bound(&running, "technical").await == "primary"
    })
    .await;
    assert!(recovered_at.elapsed() >= Duration::from_millis(400));
    let report = bindings(&running).await;
    let technical: Vec<_> = report
        .switches
        .iter()
        .filter(|s| s.worker.0 == "technical")
        .map(|s| (s.reason, s.from.0.as_str(), s.to.0.as_str()))
        .collect();
    assert_eq!(
        technical,
        [
            (SwitchReason::Failover, "primary", "secondary"),
            (SwitchReason::FailBack, "secondary", "primary"),
        ]
    );
    let answer = ask(&running, "The webhook is not firing", None)
        .await
        .unwrap();
    assert_eq!(served(&answer), "primary");
    assert!(!answer.outcome.fallback);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_flapping_faster_than_the_hold_down_switches_at_most_once_per_window() {
    // Down 0–150 ms, up 150–300 ms, and so on for 2.4 s.
    let mut flaps = String::new();
    for i in 0..8 {
        let from = i * 300;
        flaps.push_str(&format!(
            "[[fault]]\nkind = \"refuse\"\nfrom = \"{from}ms\"\nto = \"{}ms\"\n",
            from + 150
        ));
    }
    let primary = mock(&flaps).await;
    let secondary = mock("").await;
    let hold_down = Duration::from_millis(800);
    let running = start(
        &config(
            &primary,
            &secondary,
            &Setup {
                hold_down: "800ms",
                ..Setup::default()
            },
        ),
        "agents/support-bot",
    )
    .await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2600) {
        let answer = ask(&running, "Why was my card charged twice?", None).await;
        assert!(answer.is_ok(), "every request is answered: {answer:?}");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let report = bindings(&running).await;
    let billing: Vec<SystemTime> = report
        .switches
        .iter()
        .filter(|s| s.worker.0 == "billing")
        .map(|s| s.at)
        .collect();
    assert!(!billing.is_empty(), "the first outage moves the worker");
    for pair in billing.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(
            gap >= hold_down,
            "two switches {gap:?} apart: {:?}",
            report.switches
        );
    }
    // 2.6 s of flapping with an 800 ms hold down: at most one switch per
    // window.
    assert!(billing.len() <= 4, "{:?}", report.switches);
    assert!(
        report.unnecessary_count >= 1,
        "the primary came back within the hold down: {:?}",
        report.switches
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_reach_only_the_models_endpoint_and_find_a_dead_provider_without_traffic() {
    let primary = mock("").await;
    let secondary = mock(DOWN).await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    eventually(Duration::from_secs(3), "probes to the primary", || async {
        primary.stats().models_requests >= 5
    })
    .await;
    let stats = primary.stats();
    assert_eq!(stats.requests, 0, "no chat request was spent on probes");
    assert_eq!(stats.streamed_tokens, 0);
    assert!(stats.prompts.is_empty());
    assert_eq!(
        health(&running, "primary").await.state,
        HealthState::Healthy
    );
    // Nothing was sent to the secondary, yet its probes found it down.
    eventually(
        Duration::from_secs(3),
        "the secondary found down",
        || async { health(&running, "secondary").await.state == HealthState::Down },
    )
    .await;
    let report = health(&running, "secondary").await;
    assert!(report.probes_failed >= 2, "{report:?}");
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_becomes_degraded_and_keeps_its_workers() {
    let primary = mock("[[fault]]\nkind = \"latency\"\ndelay = \"120ms\"\n").await;
    let secondary = mock("").await;
    let running = start(
        &config(
            &primary,
            &secondary,
            &Setup {
                degraded_latency: "80ms",
                ..Setup::default()
            },
        ),
        "agents/support-bot",
    )
    .await;
    for i in 0..6 {
        let answer = ask(&running, &format!("Where is invoice number {i}?"), None)
            .await
            .unwrap();
        assert_eq!(served(&answer), "primary");
    }
    eventually(Duration::from_secs(2), "Degraded", || async {
        health(&running, "primary").await.state == HealthState::Degraded
    })
    .await;
    let report = health(&running, "primary").await;
    assert!(
        report.p95.unwrap() > Duration::from_millis(80),
        "{report:?}"
    );
    // Degraded is not down: the worker stays where it is.
    assert_eq!(bound(&running, "billing").await, "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_behind_a_crash_is_handed_to_the_restarted_worker() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    let billing = worker(&running, "billing").await;
    // The worker holds its mailbox, then panics: the request queues behind
    // the crash and dies with the actor, before any upstream attempt.
    billing
        .send_message(WorkerMsg::Crash {
            after: Duration::from_millis(200),
        })
        .unwrap();
    let question = "Can I get a VAT invoice?";
    let answer = ask(&running, question, None).await.unwrap();
    assert_eq!(answer.classification.worker.0, "billing");
    assert_eq!(answer.outcome.response.text, expected_answer(question, 24));
    assert_eq!(primary.stats().requests, 1, "exactly one upstream call");
    assert_eq!(bindings(&running).await.handed_over, 1);
    restarted(&running, "billing", &billing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_already_upstream_completes_when_its_worker_crashes() {
    let primary = mock("[[fault]]\nkind = \"latency\"\ndelay = \"300ms\"\n").await;
    let secondary = mock("").await;
    let running = Arc::new(
        start(
            &config(&primary, &secondary, &Setup::default()),
            "agents/support-bot",
        )
        .await,
    );
    let billing = worker(&running, "billing").await;
    let asking = {
        let running = running.clone();
        tokio::spawn(async move { ask(&running, "Can I get a VAT invoice?", None).await })
    };
    eventually(Duration::from_secs(2), "the upstream call", || async {
        primary.stats().requests == 1
    })
    .await;
    billing
        .send_message(WorkerMsg::Crash {
            after: Duration::ZERO,
        })
        .unwrap();
    let answer = asking.await.unwrap().unwrap();
    assert_eq!(served(&answer), "primary");
    assert_eq!(primary.stats().requests, 1, "no second upstream call");
    assert_eq!(secondary.stats().requests, 0);
    restarted(&running, "billing", &billing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_fails_clearly_when_its_worker_is_left_down() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    for _ in 0..MAX_RESTARTS {
        let billing = worker(&running, "billing").await;
        billing
            .send_message(WorkerMsg::Crash {
                after: Duration::ZERO,
            })
            .unwrap();
        restarted(&running, "billing", &billing).await;
    }
    let billing = worker(&running, "billing").await;
    billing
        .send_message(WorkerMsg::Crash {
            after: Duration::from_millis(200),
        })
        .unwrap();
    let error = ask(&running, "Can I get a VAT invoice?", None)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("worker `billing` failed and is left down"),
        "{message}"
    );
    assert!(message.contains("was not sent upstream"), "{message}");
    assert_eq!(primary.stats().requests, 0);
    // Later requests for that worker fail at once, with the same clarity.
    let error = ask(&running, "Where is my invoice?", None)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("worker `billing` is down"),
        "{error}"
    );
    // The other workers still answer.
    let answer = ask(&running, "The webhook is not firing", None)
        .await
        .unwrap();
    assert_eq!(answer.classification.worker.0, "technical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegating_worker_hands_its_result_to_the_next_worker() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/knowledge-qa",
    )
    .await;
    let question = "Which tidectl command restores a backup?";
    let answer = ask(&running, question, None).await.unwrap();
    let chain: Vec<&str> = answer.chain.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(chain, ["researcher", "answerer"]);
    assert_eq!(primary.stats().requests, 2, "one call per step");
    let brief = primary.stats().last_turns.join("\n");
    assert!(brief.contains("## Handoff from researcher\n"), "{brief}");
    let handed = brief.split("## Handoff from researcher\n").nth(1).unwrap();
    assert!(handed.split_whitespace().count() >= 20, "{brief}");
    assert!(brief.contains(question), "{brief}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_streams_its_answer_and_a_stream_cut_mid_answer_continues_seamlessly() {
    let primary = mock("[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 6\n").await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    let question = "Where can I download the invoice PDF for last month?";
    let (answer, streamed, finished) = ask_streaming(&running, question).await;
    assert_eq!(finished, 1);
    assert!(primary.stats().streamed_tokens >= 6);
    assert_eq!(
        served(&answer),
        "secondary",
        "{:?}",
        answer.outcome.attempts
    );
    // One continuous answer: nothing repeated, nothing missing.
    assert_eq!(streamed, expected_answer(question, 24));
    assert_eq!(answer.outcome.response.text, streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_may_hand_off_streams_its_final_answer_once() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let running = start(
        &config(&primary, &secondary, &Setup::default()),
        "agents/support-bot",
    )
    .await;
    let question = "How long is the refund window on yearly plans?";
    let (answer, streamed, finished) = ask_streaming(&running, question).await;
    assert_eq!(answer.classification.worker.0, "refunds");
    let chain: Vec<&str> = answer.chain.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(chain, ["refunds"], "no handoff was asked for");
    assert_eq!(finished, 1);
    assert_eq!(streamed, answer.outcome.response.text);
    assert_eq!(streamed, expected_answer(question, 24));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_restarts_a_failed_swarm_supervisor_and_hands_out_the_new_one() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let config = config(&primary, &secondary, &Setup::default());
    let running = start(&config, "agents/support-bot").await;
    let swarm = Arc::new(
        load_swarm(Path::new("agents/support-bot"), &config)
            .unwrap()
            .swarm,
    );
    running.swarm.send_message(SupervisorMsg::Crash).unwrap();
    let old = running.swarm.get_id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let restarted = loop {
        match start_swarm(&running.root, swarm.clone(), None).await {
            Ok(supervisor) if supervisor.get_id() != old => break supervisor,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the supervisor was not restarted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let running = Running {
        root: running.root.clone(),
        swarm: restarted,
    };
    let answer = ask(&running, "Where is my invoice?", None).await.unwrap();
    assert_eq!(answer.classification.worker.0, "billing");
}
