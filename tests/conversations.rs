//! Conversations through the real binary against real loopback mock
//! upstreams: `baton run` over a script (summary counts by path, the
//! shipped support script, a bad script named by file and line), `baton
//! chat` on piped stdin (history replayed to the provider), and the review
//! queue across processes (`ask` queues a high-stakes fallback answer,
//! `review list/approve/reject` see and decide it).
//!
//! Each test starts its own mocks on `127.0.0.1:0`, writes its own config,
//! and keeps its state directory in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

mod common;

use common::Workdir;

use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use serde_json::Value;

async fn mock(script: &str) -> MockHandle {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml(script, Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl Workdir {
    /// Writes `script` to `name` and runs it through support-bot one
    /// conversation at a time, so that request order is the script's.
    async fn run_in_order(&self, name: &str, script: &str) -> Output {
        self.write(name, script);
        self.baton_with_input(
            &[
                "run",
                &support_bot(),
                "--script",
                name,
                "--concurrency",
                "1",
            ],
            None,
        )
        .await
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    })
}

/// Settings every test config shares: no retries (each attempt is one
/// upstream request, so mock counts are exact) and a breaker that never
/// opens during a test (so a down provider is tried every time).
const COMMON: &str = "[defaults]\nretries = 0\nfirst_token_timeout = \"2s\"\n\
    attempt_timeout = \"5s\"\ntotal_timeout = \"10s\"\n\
    [breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n";

fn provider(name: &str, upstream: &MockHandle) -> String {
    format!(
        "[providers.{name}]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\n\
         capabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n",
        upstream.base_url()
    )
}

/// A config serving every route the shipped support-bot uses through `chain`.
fn support_bot_config(providers: &[(&str, &MockHandle)], chain: &[&str]) -> String {
    let mut config = format!("default_route = \"default\"\n{COMMON}");
    for (name, upstream) in providers {
        config.push_str(&provider(name, upstream));
    }
    let chain = chain
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for route in [
        "default",
        "support",
        "fast",
        "sonnet",
        "opus",
        "haiku",
        "knowledge",
    ] {
        config.push_str(&format!("[routes.{route}]\nchain = [{chain}]\n"));
    }
    config
}

fn support_bot() -> String {
    repo().join("agents/support-bot").display().to_string()
}

/// A swarm whose workers each take a different path, so that a run's
/// counts say which path served what: `orders` through a healthy first
/// choice, `refunds` (high stakes) through a fallback provider, `printing`
/// from the extractive surrogate (an answer, or a refusal), `legacy`
/// nowhere at all.
fn write_desk_swarm(scratch: &Workdir) -> PathBuf {
    let worker = |name: &str, route: &str, stakes: &str, intents: &str| {
        format!(
            "---\nname: {name}\ndescription: Handles {name} questions.\nrole: worker\n\
             route: {route}\nstakes: {stakes}\nintents: [{intents}]\n---\nAnswer {name} questions.\n"
        )
    };
    scratch.write(
        "desk/supervisor.md",
        "---\nname: desk\ndescription: Front desk.\nrole: supervisor\nroute: main\n\
         delegates: [orders, refunds, printing, legacy]\n---\nPick the specialist.\n",
    );
    scratch.write(
        "desk/orders.md",
        &worker("orders", "main", "low", "order, parcel, shipment"),
    );
    scratch.write(
        "desk/refunds.md",
        &worker("refunds", "flaky", "high", "refund, \"money back\""),
    );
    scratch.write(
        "desk/printing.md",
        &worker("printing", "dead", "low", "printer, print, thermal"),
    );
    scratch.write(
        "desk/legacy.md",
        &worker("legacy", "broken", "low", "fax, telex"),
    );
    // The surrogate needs a real knowledge base to answer from.
    std::fs::create_dir_all(scratch.path("desk/knowledge")).unwrap();
    for entry in std::fs::read_dir(repo().join("agents/support-bot/knowledge")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            scratch.path("desk/knowledge").join(entry.file_name()),
        )
        .unwrap();
    }
    scratch.path("desk")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_summary_counts_each_path_a_request_took() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let down = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let scratch = Workdir::new();
    let swarm = write_desk_swarm(&scratch);
    let mut config = format!("default_route = \"main\"\n{COMMON}");
    for (name, upstream) in [
        ("primary", &primary),
        ("secondary", &secondary),
        ("down", &down),
    ] {
        config.push_str(&provider(name, upstream));
    }
    config.push_str(
        "[routes.main]\nchain = [\"primary\", \"secondary\"]\n\
         [routes.flaky]\nchain = [\"down\", \"secondary\"]\n\
         [routes.dead]\nchain = [\"down\"]\nfinal_fallbacks = [\"extractive\"]\n\
         [routes.broken]\nchain = [\"down\"]\nfinal_fallbacks = []\n",
    );
    scratch.write("baton.toml", &config);
    let script = scratch.write(
        "desk.jsonl",
        "# one conversation per worker\n\
         {\"id\": \"o1\", \"turns\": [\"Where is my order? The parcel shipment is late.\", \"Please check the order shipment again.\"]}\n\
         {\"id\": \"r1\", \"turns\": [\"I want a refund, money back please.\", \"When will the refund money back arrive?\"]}\n\
         {\"id\": \"p1\", \"turns\": [\"How do I print labels on a thermal printer?\", \"printer quokka xylophone zebra walrus narwhal\"]}\n\
         {\"id\": \"l1\", \"turns\": [\"Can I send the fax by telex?\"]}\n",
    );
    let output = scratch
        .baton_with_input(
            &[
                "run",
                swarm.to_str().unwrap(),
                "--script",
                script.to_str().unwrap(),
                "--concurrency",
                "3",
                "--json",
            ],
            None,
        )
        .await;
    let stderr = text(&output.stderr);
    // The legacy conversation failed: the run says so in its exit code.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let summary = json(&output);
    assert_eq!(summary["conversations"], 4, "{summary:#}");
    assert_eq!(summary["requests"], 7, "{summary:#}");
    assert_eq!(summary["answered"]["total"], 5, "{summary:#}");
    assert_eq!(summary["answered"]["first_choice"], 2, "{summary:#}");
    assert_eq!(summary["answered"]["fallback"], 2, "{summary:#}");
    assert_eq!(summary["answered"]["degraded"], 1, "{summary:#}");
    assert_eq!(summary["refusals"], 1, "{summary:#}");
    assert_eq!(summary["failures"], 1, "{summary:#}");
    assert_eq!(summary["needs_review"], 2, "{summary:#}");
    assert_eq!(summary["queued_for_review"], 2, "{summary:#}");
    assert_eq!(summary["failed"][0]["conversation"], "l1");
    assert!(stderr.contains("failed: l1 turn 1: "), "{stderr}");

    let workers = &summary["workers"];
    assert_eq!(workers["orders"]["answered"], 2, "{summary:#}");
    assert_eq!(workers["refunds"]["answered"], 2, "{summary:#}");
    assert_eq!(workers["refunds"]["needs_review"], 2, "{summary:#}");
    assert_eq!(workers["printing"]["answered"], 1, "{summary:#}");
    assert_eq!(workers["printing"]["refusals"], 1, "{summary:#}");
    let providers = &summary["providers"];
    assert_eq!(providers["primary"]["served"], 2, "{summary:#}");
    assert_eq!(providers["secondary"]["served"], 2, "{summary:#}");
    assert_eq!(providers["extractive"]["served"], 2, "{summary:#}");
    assert_eq!(providers["down"]["failed_attempts"], 5, "{summary:#}");
    assert!(summary["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        summary["latency_ms"]["p50"].as_f64() <= summary["latency_ms"]["p99"].as_f64(),
        "{summary:#}"
    );

    // The upstreams agree with the summary, request for request.
    assert_eq!(primary.stats().requests, 2);
    assert_eq!(secondary.stats().requests, 2);
    assert_eq!(down.stats().requests, 5);

    // Both refunds answers are waiting for a person.
    let listed = scratch
        .baton_with_input(&["review", "list", "--json"], None)
        .await;
    let items = json(&listed);
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().all(|i| i["worker"] == "refunds"
        && i["served_by"] == "secondary"
        && i["swarm"] == "desk"
        && i["status"] == "pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_support_script_runs_clean_against_a_healthy_upstream() {
    let upstream = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(&[("mock", &upstream)], &["mock"]),
    );
    let script = repo().join("examples/scripts/support.jsonl");
    let script_text = std::fs::read_to_string(&script).unwrap();
    let conversations: Vec<Value> = script_text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let turns: usize = conversations
        .iter()
        .map(|c| c["turns"].as_array().unwrap().len())
        .sum();
    assert!(conversations.len() >= 20);
    for topic in ["billing-", "technical-", "account-", "refund-"] {
        assert!(
            conversations
                .iter()
                .any(|c| c["id"].as_str().unwrap().starts_with(topic)),
            "no {topic} conversation"
        );
    }
    let output = scratch
        .baton_with_input(
            &["run", &support_bot(), "--script", script.to_str().unwrap()],
            None,
        )
        .await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let row = |label: &str| -> usize {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` row in\n{stdout}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(row("requests"), turns, "{stdout}");
    assert_eq!(row("answered"), turns, "{stdout}");
    assert_eq!(row("  by first choice"), turns, "{stdout}");
    assert_eq!(row("failures"), 0, "{stdout}");
    assert_eq!(row("needs review"), 0, "{stdout}");
    assert!(stdout.contains("latency             p50 "), "{stdout}");
    for worker in ["billing", "technical", "account", "refunds"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(worker)),
            "no row for {worker}:\n{stdout}"
        );
    }
    assert_eq!(upstream.stats().requests, turns as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_script_is_refused_with_its_file_and_line_before_any_request() {
    let upstream = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(&[("mock", &upstream)], &["mock"]),
    );
    let script = scratch.write(
        "bad.jsonl",
        "{\"id\": \"ok\", \"turns\": [\"Where is my invoice?\"]}\n\
         {\"id\": \"typo\", \"turn\": [\"Where is my invoice?\"]}\n\
         {\"id\": \"ok\", \"turns\": [\"again\"]}\n",
    );
    let output = scratch
        .baton_with_input(
            &["run", &support_bot(), "--script", script.to_str().unwrap()],
            None,
        )
        .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.jsonl:2:") && stderr.contains("unknown field `turn`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "bad.jsonl:3: error: field `id`: conversation `ok` is already defined on line 1"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("has 2 error(s)"), "{stderr}");
    assert_eq!(upstream.stats().requests, 0, "nothing was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_on_piped_stdin_replays_the_first_turn_to_the_provider() {
    let upstream = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(&[("mock", &upstream)], &["mock"]),
    );
    let first = "My card was declined when paying the invoice";
    let second = "Which cards do you accept?";

    // Plain text: each answer on stdout, a status line per turn on stderr.
    let output = scratch
        .baton_with_input(
            &["chat", &support_bot()],
            Some(&format!("{first}\n\n{second}\n/quit\nnever asked\n")),
        )
        .await;
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}\n{}\n",
            expected_answer(first, 24).trim_end(),
            expected_answer(second, 24).trim_end()
        )
    );
    assert_eq!(stderr.matches("-- worker billing").count(), 2, "{stderr}");
    assert!(stderr.contains("served by provider mock"), "{stderr}");
    assert_eq!(upstream.stats().requests, 2, "`/quit` ended the chat");
    upstream.reset_stats();

    // As JSON, to read what the provider counted.
    let output = scratch
        .baton_with_input(
            &["chat", &support_bot(), "--json", "--session", "s-1"],
            Some(&format!("{first}\n{second}\n")),
        )
        .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let turns: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1]["session"], "s-1");
    let fresh = scratch
        .baton_with_input(&["ask", &support_bot(), second, "--json"], None)
        .await;
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let fresh = json(&fresh);

    // The second turn's prompt is the fresh question's prompt plus the
    // first exchange, word for word (the mock counts words as tokens).
    let input = |answer: &Value| {
        answer["outcome"]["response"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
    };
    let first_exchange = (first.split_whitespace().count() + 24) as u64;
    assert_eq!(input(&turns[1]), input(&fresh) + first_exchange);
    // Three different prompts reached the upstream: had the history been
    // dropped, the second turn would have repeated the fresh question's.
    let stats = upstream.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.prompts.len(), 3, "{:?}", stats.prompts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_answered_by_a_fallback_is_queued_then_approved_in_another_process() {
    let primary = mock("[[fault]]\nkind = \"refuse\"\n").await;
    let secondary = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(
            &[("primary", &primary), ("secondary", &secondary)],
            &["primary", "secondary"],
        ),
    );
    let question = "How long is the refund window on yearly plans?";
    let output = scratch
        .baton_with_input(&["ask", &support_bot(), question], None)
        .await;
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        text(&output.stdout).trim_end(),
        expected_answer(question, 24).trim_end()
    );
    assert!(stderr.contains("-- worker refunds"), "{stderr}");
    assert!(
        stderr.contains("served by provider secondary, fallback, needs review"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failover primary (connect) → secondary"),
        "{stderr}"
    );
    assert!(stderr.contains("queued for review as rv-"), "{stderr}");
    assert_eq!(secondary.stats().requests, 1);

    // A low-stakes answer through the same fallback is not queued.
    let billing = scratch
        .baton_with_input(
            &[
                "ask",
                &support_bot(),
                "Where can I download my invoice PDF?",
            ],
            None,
        )
        .await;
    assert!(billing.status.success());
    assert!(!text(&billing.stderr).contains("queued for review"));

    let listed = scratch
        .baton_with_input(&["review", "list", "--json"], None)
        .await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let items = json(&listed);
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert_eq!(item["status"], "pending");
    assert_eq!(item["worker"], "refunds");
    assert_eq!(item["swarm"], "support-bot");
    assert_eq!(item["served_by"], "secondary");
    assert_eq!(item["question"], question);
    assert_eq!(item["answer"], expected_answer(question, 24));
    assert!(item["trace_id"].as_str().unwrap().len() == 36);
    let id = item["id"].as_str().unwrap();

    let unknown = scratch
        .baton_with_input(&["review", "approve", "rv-0000000000"], None)
        .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no review `rv-0000000000`"),
        "{}",
        text(&unknown.stderr)
    );

    let approved = scratch
        .baton_with_input(
            &["review", "approve", id, "-m", "policy quoted correctly"],
            None,
        )
        .await;
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert_eq!(text(&approved.stdout).trim(), format!("{id} approved"));

    let pending = json(
        &scratch
            .baton_with_input(&["review", "list", "--json"], None)
            .await,
    );
    assert_eq!(pending.as_array().unwrap().len(), 0, "{pending:#}");
    let all = json(
        &scratch
            .baton_with_input(&["review", "list", "--all", "--json"], None)
            .await,
    );
    assert_eq!(all[0]["status"], "approved");
    assert_eq!(all[0]["decision"]["note"], "policy quoted correctly");

    // A decision is final.
    let again = scratch
        .baton_with_input(&["review", "reject", id], None)
        .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already approved"),
        "{}",
        text(&again.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_session_survives_a_restart_of_the_process() {
    let upstream = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(&[("upstream", &upstream)], &["upstream"]),
    );
    let first = "I was charged twice for my subscription this month.";
    let second = "Can you tell me when the duplicate charge will be refunded?";
    let one = scratch
        .baton_with_input(
            &["chat", &support_bot(), "--json", "--session", "s-9"],
            Some(&format!("{first}\n")),
        )
        .await;
    assert!(one.status.success(), "{}", text(&one.stderr));
    // A new process, the same session: the first exchange comes from the store.
    let two = scratch
        .baton_with_input(
            &["chat", &support_bot(), "--json", "--session", "s-9"],
            Some(&format!("{second}\n")),
        )
        .await;
    assert!(two.status.success(), "{}", text(&two.stderr));
    let two: Value = serde_json::from_str(text(&two.stdout).trim()).unwrap();
    let fresh = json(
        &scratch
            .baton_with_input(&["ask", &support_bot(), second, "--json"], None)
            .await,
    );
    let input = |answer: &Value| {
        answer["outcome"]["response"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
    };
    let first_exchange = (first.split_whitespace().count() + 24) as u64;
    assert_eq!(input(&two), input(&fresh) + first_exchange);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_serves_a_later_process_during_an_outage() {
    let upstream = mock("").await;
    let scratch = Workdir::new();
    let config = support_bot_config(&[("upstream", &upstream)], &["upstream"]).replace(
        "[defaults]\n",
        "[defaults]\nfinal_fallbacks = [\"cache\"]\n",
    );
    scratch.write("baton.toml", &config);
    let question = "Why was I charged twice this month?";
    let healthy = scratch
        .baton_with_input(&["ask", &support_bot(), question, "--json"], None)
        .await;
    assert!(healthy.status.success(), "{}", text(&healthy.stderr));
    let healthy = json(&healthy);
    upstream.set_script(
        Script::from_toml(
            "[[fault]]\nkind = \"status\"\nstatus = 503\n",
            Path::new("t.toml"),
        )
        .unwrap(),
    );
    let outage = scratch
        .baton_with_input(&["ask", &support_bot(), question, "--json"], None)
        .await;
    assert!(outage.status.success(), "{}", text(&outage.stderr));
    let outage = json(&outage);
    assert_eq!(
        outage["outcome"]["served_by"]["kind"], "cache",
        "{outage:#}"
    );
    assert_eq!(
        outage["outcome"]["response"]["text"],
        healthy["outcome"]["response"]["text"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_found_down_stays_down_for_the_next_process() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let secondary = mock("").await;
    let scratch = Workdir::new();
    let config = support_bot_config(
        &[("primary", &primary), ("secondary", &secondary)],
        &["primary", "secondary"],
    )
    .replace(
        "[breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n",
        "[breaker]\nconsecutive_failures = 1\nbase_ejection = \"60s\"\n",
    );
    scratch.write("baton.toml", &config);
    let question = "Why was I charged twice this month?";
    let first = scratch
        .baton_with_input(&["ask", &support_bot(), question], None)
        .await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(primary.stats().requests, 1);
    let second = scratch
        .baton_with_input(&["ask", &support_bot(), question], None)
        .await;
    let stderr = text(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("breaker restored"), "{stderr}");
    assert!(stderr.contains("served by provider secondary"), "{stderr}");
    // The restored breaker kept the second process off the dead provider.
    assert_eq!(primary.stats().requests, 1);
    assert_eq!(secondary.stats().requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_commands_reach_a_store_held_by_a_running_chat_through_its_admin_socket() {
    use std::io::{BufRead, BufReader, Write};
    let upstream = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(&[("upstream", &upstream)], &["upstream"]),
    );
    let mut chat = scratch
        .command(&["chat", &support_bot(), "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut stdout = BufReader::new(chat.stdout.take().unwrap());
    let answer = tokio::task::spawn_blocking(move || {
        stdin
            .write_all(b"Why was I charged twice this month?\n")
            .unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (line, stdin)
    })
    .await
    .unwrap();
    let (line, stdin) = answer;
    let answer: Value = serde_json::from_str(&line).unwrap();
    let trace_id = answer["outcome"]["trace_id"].as_str().unwrap().to_owned();

    // The chat holds the store: these go through its admin socket.
    let commands: [&[&str]; 3] = [
        &["trace", &trace_id, "--json"],
        &["status", "--json"],
        &["review", "list", "--all", "--json"],
    ];
    let mut remote = Vec::new();
    for args in commands {
        let output = scratch.baton_with_input(args, None).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        remote.push(text(&output.stdout));
    }
    let traced: Value = serde_json::from_str(&remote[0]).unwrap();
    assert_eq!(traced["state"], "completed");
    assert_eq!(traced["attempts"][0]["provider"], "upstream");

    drop(stdin);
    let status = tokio::task::spawn_blocking(move || chat.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        !scratch.path("state/admin.sock").exists(),
        "the socket goes with its process"
    );
    // The store is free now: the same commands open it directly and print
    // the same.
    for (args, remote) in commands.iter().zip(&remote) {
        let output = scratch.baton_with_input(args, None).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert_eq!(&text(&output.stdout), remote, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_requests_are_resumed_or_failed_as_their_route_says_at_start_up() {
    use baton::store::journal::{Journal, JournalRecord, OnInterrupt, RequestState};
    use baton::store::{Store, StoreSettings};
    use baton::trace::TraceId;

    let upstream = mock("").await;
    let scratch = Workdir::new();
    let config = support_bot_config(&[("upstream", &upstream)], &["upstream"]).replace(
        "[routes.support]\n",
        "[routes.support]\non_interrupt = \"resume\"\n",
    );
    scratch.write("baton.toml", &config);
    // What a killed process leaves: two requests accepted, never ended.
    let (resumable, failing) = (TraceId::new(), TraceId::new());
    {
        let store = Store::open(&scratch.path("state"), &StoreSettings::default()).unwrap();
        let journal = Journal::new(&store).unwrap();
        let mut record = JournalRecord::accepted(resumable, "Why was I charged twice this month?");
        record.swarm = Some("support-bot".into());
        record.route = Some("support".into());
        record.session = Some("s-resume".into());
        record.on_interrupt = OnInterrupt::Resume;
        journal.accept(&record).unwrap();
        let mut record = JournalRecord::accepted(failing, "My printer is on fire.");
        record.swarm = Some("support-bot".into());
        record.route = Some("fast".into());
        journal.accept(&record).unwrap();
        store.flush().unwrap();
    }
    let output = scratch
        .baton_with_input(
            &["ask", &support_bot(), "How do I change my email address?"],
            None,
        )
        .await;
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "recovered 2 request(s) a stop interrupted: 1 marked failed (interrupted), 1 resumed"
        ),
        "{stderr}"
    );
    // The resumed request went upstream and the new one too.
    assert_eq!(upstream.stats().requests, 2);

    let store = Store::open(&scratch.path("state"), &StoreSettings::default()).unwrap();
    let journal = Journal::new(&store).unwrap();
    let resumed = journal.get(resumable).unwrap().unwrap();
    assert_eq!(
        resumed.state,
        RequestState::Completed,
        "{resumed:?}\n{stderr}"
    );
    assert!(resumed.resumed);
    assert!(resumed.answer.is_some_and(|a| !a.is_empty()));
    assert_eq!(resumed.attempts.len(), 1);
    let failed = journal.get(failing).unwrap().unwrap();
    assert_eq!(failed.state, RequestState::Failed);
    assert!(failed.error.unwrap().starts_with("interrupted"));
    assert!(journal.open().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_every_attempt_of_a_failed_over_request() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let middle = mock("[[fault]]\nkind = \"reset\"\n").await;
    let last = mock("").await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &support_bot_config(
            &[("primary", &primary), ("middle", &middle), ("last", &last)],
            &["primary", "middle", "last"],
        ),
    );
    let asked = scratch
        .baton_with_input(
            &["ask", &support_bot(), "Why was I charged twice?", "--json"],
            None,
        )
        .await;
    assert!(asked.status.success(), "{}", text(&asked.stderr));
    let trace_id = json(&asked)["outcome"]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The end of the id is enough.
    let traced = scratch
        .baton_with_input(&["trace", &trace_id[trace_id.len() - 12..]], None)
        .await;
    let shown = text(&traced.stdout);
    assert!(traced.status.success(), "{}", text(&traced.stderr));
    let attempt_lines: Vec<&str> = shown.lines().filter(|l| l.contains(" ms  ")).collect();
    assert_eq!(attempt_lines.len(), 3, "{shown}");
    assert!(
        attempt_lines[0].contains("primary") && attempt_lines[0].contains("HTTP 503"),
        "{shown}"
    );
    assert!(
        attempt_lines[1].contains("failover") && attempt_lines[1].contains("middle"),
        "{shown}"
    );
    assert!(
        attempt_lines[2].contains("failover")
            && attempt_lines[2].contains("last")
            && attempt_lines[2].contains("ok in"),
        "{shown}"
    );
    assert!(shown.contains("answer from last, fallback"), "{shown}");
    assert!(shown.contains("classified refunds"), "{shown}");
}

/// A webhook receiver on loopback: the JSON bodies it was sent.
async fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_going_down_during_a_run_fires_one_alert_and_its_recovery_resolves_it() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let secondary = mock("").await;
    let (url, received) = webhook().await;
    let scratch = Workdir::new();
    let config = support_bot_config(
        &[("primary", &primary), ("secondary", &secondary)],
        &["primary", "secondary"],
    )
    .replace(
        "[breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n",
        "[breaker]\nconsecutive_failures = 2\nbase_ejection = \"300ms\"\n",
    ) + &format!(
        "[alerts]\nwebhook = \"{url}\"\n[[alerts.rules]]\nname = \"down\"\nkind = \"provider_down\"\n"
    );
    scratch.write("baton.toml", &config);
    let script = (0..6)
        .map(|i| format!("{{\"id\": \"c{i}\", \"turns\": [\"Why was I charged twice?\"]}}\n"))
        .collect::<String>();
    let run = scratch.run_in_order("outage.jsonl", &script).await;
    assert!(run.status.success(), "{}", text(&run.stderr));
    {
        let sent = received.lock().unwrap();
        assert_eq!(sent.len(), 1, "{sent:#?}");
        assert_eq!(sent[0]["status"], "firing");
        assert_eq!(sent[0]["alert"], "down");
        assert_eq!(sent[0]["subject"], "primary");
    }
    // A second run with the provider still down: the episode is open in
    // the store, so nothing fires again.
    let again = scratch
        .baton_with_input(&["ask", &support_bot(), "Why was I charged twice?"], None)
        .await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(received.lock().unwrap().len(), 1);
    // The provider recovers while no process runs. The next process
    // restores its breaker (the ejection is over: a trial at once), the
    // trial succeeds, the provider is up, and the episode resolves.
    primary.set_script(Script::default());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let mut resolved = false;
    for _ in 0..5 {
        let asked = scratch
            .baton_with_input(&["ask", &support_bot(), "Why was I charged twice?"], None)
            .await;
        assert!(asked.status.success(), "{}", text(&asked.stderr));
        if received.lock().unwrap().len() == 2 {
            resolved = true;
            break;
        }
    }
    assert!(resolved, "{:#?}", received.lock().unwrap());
    let sent = received.lock().unwrap();
    assert_eq!(sent[1]["status"], "resolved");
    assert_eq!(sent[1]["subject"], "primary");
}

/// The report of a run against a fault script, worked out by hand:
/// `primary` answers 503 to everything and its breaker opens after three
/// failures in a row (ejection 60 s, no probes), `secondary` answers in
/// 50 ms. Ten one-turn conversations, one at a time:
/// - requests 1–3 try `primary` (5xx) then `secondary`; `primary` is then
///   Down, every one of the 4 support-bot workers is rebound to
///   `secondary`, and requests 4–10 go to `secondary` alone;
/// - so `primary`: 3 attempts, 0 ok, 3 × 5xx, 1 outage still open at the
///   end; `secondary`: 10 attempts, 10 ok, p50 ≥ 50 ms; 10 requests, 10
///   answered, 10 fallbacks (none served by the first choice), 13
///   attempts, 4 switches, none unnecessary, 0 degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_run_against_a_fault_script_has_the_hand_worked_figures() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let secondary = mock("[server]\nlatency = \"50ms\"\n").await;
    let scratch = Workdir::new();
    let config = support_bot_config(
        &[("primary", &primary), ("secondary", &secondary)],
        &["primary", "secondary"],
    )
    .replace(
        "[breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n",
        "[breaker]\nconsecutive_failures = 3\nmin_requests = 1000\nbase_ejection = \"60s\"\n",
    );
    scratch.write("baton.toml", &config);
    let questions = [
        "Why was I charged twice this month?",
        "The app crashes when I upload a photo.",
        "How do I change the email on my account?",
        "Where can I download my invoice?",
        "Can I get my money back for the yearly plan?",
    ];
    let script: String = (0..10)
        .map(|i| {
            format!(
                "{{\"id\": \"c{i}\", \"turns\": [\"{}\"]}}\n",
                questions[i % questions.len()]
            )
        })
        .collect();
    let run = scratch.run_in_order("faults.jsonl", &script).await;
    assert!(run.status.success(), "{}", text(&run.stderr));
    let report = scratch.baton_with_input(&["report", "--json"], None).await;
    assert!(report.status.success(), "{}", text(&report.stderr));
    let report = json(&report);
    let totals = &report["totals"];
    assert_eq!(totals["requests"], 10, "{totals:#}");
    assert_eq!(totals["answered"], 10);
    assert_eq!(totals["failed"], 0);
    assert_eq!(totals["attempts"], 13);
    assert_eq!(totals["fallbacks"], 10);
    assert_eq!(totals["degraded"], 0);
    assert_eq!(totals["switches"], 4);
    assert_eq!(totals["unnecessary_switches"], 0);
    let provider = |name: &str| {
        report["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {report:#}"))
            .clone()
    };
    let down = provider("primary");
    assert_eq!(down["attempts"], 3, "{down:#}");
    assert_eq!(down["ok"], 0);
    assert_eq!(down["errors"]["5xx"], 3);
    assert_eq!(down["outages"], 1);
    assert_eq!(down["down_at_end"], true);
    assert!(down["uptime"].as_f64().unwrap() < 1.0);
    let up = provider("secondary");
    assert_eq!(up["attempts"], 10, "{up:#}");
    assert_eq!(up["ok"], 10);
    assert_eq!(up["outages"], 0);
    let p50 = up["latency"]["p50_ms"].as_f64().unwrap();
    assert!((50.0..500.0).contains(&p50), "{up:#}");
}
