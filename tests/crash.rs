//! The journal under SIGKILL.
//!
//! A client (this test process) feeds `baton run --acks` a batch of
//! conversations on stdin and counts each acknowledgement as it reads it
//! from the pipe; Baton prints one only after the answer's journal record
//! is flushed. At a random moment — often while the store is still being
//! opened — the client kills Baton with SIGKILL, then checks the store:
//! sled opens without reporting corruption, its checksum pass succeeds,
//! and every acknowledged request is in the journal as completed. The next
//! cycle's process settles whatever the kill left open; after the last
//! cycle a clean run does, and then no request may be left open.
//!
//! The default run keeps a few cycles so the path stays exercised;
//! `BATON_LONG=1` runs 100. The seed is printed so a failure can be
//! replayed with `BATON_CRASH_SEED`.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::provider::mock::{MockServer, Script};
use baton::store::journal::{Journal, RequestState};
use baton::trace::TraceId;
use common::open_store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn config(base_url: &str) -> String {
    let mut config = String::from(
        "default_route = \"default\"\n\
         [defaults]\nretries = 0\nfirst_token_timeout = \"2s\"\nattempt_timeout = \"5s\"\ntotal_timeout = \"10s\"\n\
         [breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n",
    );
    config.push_str(&format!(
        "[providers.upstream]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{base_url}/v1\"\n\
         capabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n"
    ));
    for route in [
        "default",
        "support",
        "fast",
        "sonnet",
        "opus",
        "haiku",
        "knowledge",
        "triage",
    ] {
        config.push_str(&format!("[routes.{route}]\nchain = [\"upstream\"]\n"));
    }
    config
}

/// `conversations` two-turn support conversations, ids unique per cycle.
fn script(cycle: usize, conversations: usize) -> String {
    let questions = [
        "Why was I charged twice this month?",
        "The app crashes when I upload a photo.",
        "How do I change the email on my account?",
        "Can I get a refund on my yearly plan?",
    ];
    (0..conversations)
        .map(|i| {
            let first = questions[i % questions.len()];
            format!(
                "{{\"id\": \"c{cycle}-{i}\", \"turns\": [\"{first}\", \"Thanks, and what happens next?\"]}}\n"
            )
        })
        .collect()
}

fn spawn_run(config: &Path, state: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--config")
        .arg(config)
        .arg("--state")
        .arg(state)
        .args(["run"])
        .arg(repo().join("agents/support-bot"))
        .args(["--script", "-", "--acks", "--concurrency", "16"])
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STATE")
        .env_remove("BATON_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the baton binary runs")
}

/// Feeds the script and reads acknowledgements on threads of their own,
/// so that a kill can land at any moment.
fn feed_and_count(child: &mut Child, script: String) -> std::thread::JoinHandle<Vec<TraceId>> {
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        // The process may die before it reads everything: that is the test.
        let _ = stdin.write_all(script.as_bytes());
    });
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value: serde_json::Value = match serde_json::from_str(&line) {
                Ok(value) => value,
                // A line cut by the kill was never a whole acknowledgement.
                Err(_) => continue,
            };
            if let Some(id) = value["ack"].as_str() {
                acked.push(TraceId(id.parse().expect("an ack carries a trace id")));
            }
        }
        acked
    })
}

/// Opens the store as the next process would and checks every
/// acknowledged request is there, completed; returns how many are open.
/// With `lost` (a measurement of relaxed durability), acknowledged
/// requests missing or unfinished are counted there instead of failing.
fn verify(
    state: &Path,
    acked: &HashSet<TraceId>,
    cycle: usize,
    seed: u64,
    mut lost: Option<&mut HashSet<TraceId>>,
) -> usize {
    let store = open_store(state).unwrap_or_else(|error| {
        panic!("cycle {cycle} (seed {seed}): the store does not open after SIGKILL: {error}")
    });
    store
        .checksum()
        .unwrap_or_else(|error| panic!("cycle {cycle} (seed {seed}): checksum pass: {error}"));
    let journal = Journal::new(&store).unwrap();
    for trace_id in acked {
        let record = journal
            .get(*trace_id)
            .unwrap_or_else(|error| panic!("cycle {cycle} (seed {seed}): {error}"));
        if let Some(lost) = lost.as_deref_mut() {
            if record.is_none_or(|r| r.state != RequestState::Completed) {
                lost.insert(*trace_id);
            }
            continue;
        }
        let record = record.unwrap_or_else(|| {
            panic!(
                "cycle {cycle} (seed {seed}): acknowledged request {trace_id} is not in the journal"
            )
        });
        assert_eq!(
            record.state,
            RequestState::Completed,
            "cycle {cycle} (seed {seed}): acknowledged request {trace_id}"
        );
    }
    journal.open().unwrap().len()
}

/// Conversations per cycle: enough that most kills land mid-batch.
const CONVERSATIONS: usize = 120;

#[test]
fn every_acknowledged_request_survives_sigkill_and_none_is_left_open() {
    let long = std::env::var("BATON_LONG").is_ok_and(|v| v == "1");
    let cycles = if long { 100 } else { 4 };
    let seed = std::env::var("BATON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash test: {cycles} cycles, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(async {
        MockServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Script::from_toml("[server]\nlatency = \"40ms\"\n", Path::new("t.toml")).unwrap(),
        )
        .await
        .unwrap()
    });
    // BATON_CRASH_DURABILITY=relaxed measures what acknowledging before the
    // flush loses instead of asserting that nothing is lost.
    let relaxed = std::env::var("BATON_CRASH_DURABILITY").is_ok_and(|v| v == "relaxed");
    let mut lost: HashSet<TraceId> = HashSet::new();
    let dir = tempfile::tempdir().unwrap();
    let config_path: PathBuf = dir.path().join("baton.toml");
    let mut text = config(&mock.base_url());
    if relaxed {
        text.push_str("[store]\ndurability = \"relaxed\"\n");
    }
    std::fs::write(&config_path, text).unwrap();
    let state = dir.path().join("state");

    let mut acked_total: HashSet<TraceId> = HashSet::new();
    let mut left_open = 0;
    let mut killed_mid_run = 0;
    for cycle in 0..cycles {
        let mut child = spawn_run(&config_path, &state);
        let reader = feed_and_count(&mut child, script(cycle, CONVERSATIONS));
        // A quarter of the kills land in the first 60 ms: start-up and the
        // store's open and recovery.
        let delay = if rng.random_bool(0.25) {
            rng.random_range(0..60)
        } else {
            rng.random_range(60..1500)
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(delay) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let finished_first = child.try_wait().unwrap().is_some();
        // Child::kill sends SIGKILL on Unix.
        let _ = child.kill();
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        if !finished_first && !acked.is_empty() && acked.len() < 2 * CONVERSATIONS {
            killed_mid_run += 1;
        }
        eprintln!(
            "cycle {cycle}: killed after {delay} ms{}, {} acknowledged",
            if finished_first {
                " (it had finished)"
            } else {
                ""
            },
            acked.len()
        );
        acked_total.extend(acked);
        left_open = verify(
            &state,
            &acked_total,
            cycle,
            seed,
            relaxed.then_some(&mut lost),
        );
    }
    eprintln!(
        "crash test: {} acknowledged across {cycles} kills ({killed_mid_run} mid-run); {left_open} left open by the last",
        acked_total.len()
    );

    // A run that is not killed recovers what the last kill left open.
    let mut child = spawn_run(&config_path, &state);
    let reader = feed_and_count(&mut child, script(cycles, 2));
    let status = child.wait().unwrap();
    let acked = reader.join().unwrap();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    assert!(status.success(), "the clean run failed: {stderr}");
    assert_eq!(acked.len(), 4, "{stderr}");
    if left_open > 0 {
        assert!(
            stderr.contains(&format!("recovered {left_open} request(s)")),
            "{stderr}"
        );
    }
    acked_total.extend(acked);
    if relaxed {
        eprintln!(
            "crash test, relaxed durability: {} of {} acknowledged requests lost",
            lost.len(),
            acked_total.len()
        );
    }
    let open = verify(
        &state,
        &acked_total,
        cycles,
        seed,
        relaxed.then_some(&mut lost),
    );
    assert_eq!(open, 0, "requests left open after recovery");

    let store = open_store(&state).unwrap();
    let journal = Journal::new(&store).unwrap();
    for record in journal.iter() {
        let record = record.unwrap();
        assert_ne!(
            record.state,
            RequestState::Accepted,
            "request {} left dangling",
            record.trace_id
        );
        if record.state == RequestState::Failed {
            assert!(
                record
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("interrupted")),
                "{record:?}"
            );
        }
    }
}

fn spawn_serve(config: &Path, state: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--config")
        .arg(config)
        .arg("--state")
        .arg(state)
        .args(["serve", "--addr", "127.0.0.1:0"])
        // ./agents/ of the repository: both shipped swarms are served.
        .current_dir(repo())
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STATE")
        .env_remove("BATON_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the baton binary runs")
}

/// HTTP clients that keep asking `baton serve` until it is gone; each
/// answer with a trace id is an acknowledgement (the gateway answers only
/// after the request's journal record is flushed).
fn http_clients(
    child: &mut Child,
    clients: usize,
    requests_each: usize,
) -> std::thread::JoinHandle<Vec<TraceId>> {
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut port = None;
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                port = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                break;
            }
        }
        // Drains the rest so the server never blocks on its stderr.
        std::thread::spawn(move || for _ in lines {});
        let Some(port) = port else {
            return Vec::new();
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
            let tasks: Vec<_> = (0..clients)
                .map(|client| {
                    let (http, url) = (http.clone(), url.clone());
                    tokio::spawn(async move {
                        let mut acked = Vec::new();
                        for i in 0..requests_each {
                            // Routes and swarms alike.
                            let model = if (client + i) % 3 == 0 { "swarm:support-bot" } else { "support" };
                            let body = serde_json::json!({
                                "model": model,
                                "messages": [{ "role": "user", "content": format!("Why was I charged twice? ({client}/{i})") }],
                            });
                            let Ok(response) = http.post(&url).json(&body).send().await else {
                                break;
                            };
                            if response.status() != 200 {
                                continue;
                            }
                            let Ok(value) = response.json::<serde_json::Value>().await else {
                                break;
                            };
                            if let Some(id) = value["baton"]["trace_id"].as_str() {
                                acked.push(TraceId(id.parse().expect("a trace id")));
                            }
                        }
                        acked
                    })
                })
                .collect();
            let mut acked = Vec::new();
            for task in tasks {
                acked.extend(task.await.unwrap_or_default());
            }
            acked
        })
    })
}

#[test]
fn every_request_acknowledged_over_http_survives_sigkill_of_baton_serve() {
    let long = std::env::var("BATON_LONG").is_ok_and(|v| v == "1");
    let cycles = if long { 100 } else { 3 };
    let seed = std::env::var("BATON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("serve crash test: {cycles} cycles, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(async {
        MockServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Script::from_toml("[server]\nlatency = \"40ms\"\n", Path::new("t.toml")).unwrap(),
        )
        .await
        .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("baton.toml");
    std::fs::write(&config_path, config(&mock.base_url())).unwrap();
    let state = dir.path().join("state");

    let mut acked_total: HashSet<TraceId> = HashSet::new();
    let mut killed_mid_run = 0;
    for cycle in 0..cycles {
        let mut child = spawn_serve(&config_path, &state);
        let clients = http_clients(&mut child, 16, 40);
        let delay = if rng.random_bool(0.25) {
            rng.random_range(0..60)
        } else {
            rng.random_range(60..2000)
        };
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        let acked = clients.join().unwrap();
        if !acked.is_empty() {
            killed_mid_run += 1;
        }
        eprintln!(
            "serve cycle {cycle}: killed after {delay} ms, {} acknowledged",
            acked.len()
        );
        acked_total.extend(acked);
        verify(&state, &acked_total, cycle, seed, None);
    }

    // A server that is not killed settles what the last kill left open,
    // answers, and stops cleanly on SIGTERM.
    let mut child = spawn_serve(&config_path, &state);
    let clients = http_clients(&mut child, 2, 2);
    let acked = clients.join().unwrap();
    assert_eq!(acked.len(), 4, "the clean server answered");
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "baton serve stops cleanly on SIGTERM: {status}"
    );
    acked_total.extend(acked);
    eprintln!(
        "serve crash test: {} acknowledged over HTTP across {cycles} kills ({killed_mid_run} mid-run)",
        acked_total.len()
    );
    let open = verify(&state, &acked_total, cycles, seed, None);
    assert_eq!(open, 0, "requests left open after recovery");
}
