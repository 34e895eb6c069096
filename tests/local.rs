//! The supervised local model server (`kind = "local"`): Baton starts it as
//! a child process, answers from it as the final fallback once the remote
//! providers failed, restarts it when it dies, and leaves no orphan
//! behind, whether it stops cleanly or is killed.
//!
//! The local server here is `baton mock-provider`, a real
//! OpenAI-compatible server in its own process. With `BATON_LONG=1` a
//! second test runs a real model: `python -m llama_cpp.server` over Gemma 3
//! 270M (`scripts/setup-local-model.sh` installs both; llama.cpp compiles
//! for minutes).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use common::Serve;
use serde_json::{Value, json};

async fn failing_mock() -> MockHandle {
    let script = Script::from_toml(
        "[[fault]]\nkind = \"status\"\nstatus = 503\n",
        Path::new("remote.toml"),
    )
    .unwrap();
    MockServer::start("127.0.0.1:0".parse().unwrap(), script)
        .await
        .unwrap()
}

/// A route whose only remote provider fails, with the local server as its
/// one final fallback.
fn config(remote: &MockHandle, local: &str) -> String {
    format!(
        r#"default_route = "main"
[defaults]
retries = 0
final_fallbacks = ["local"]
first_token_timeout = "10s"
attempt_timeout = "20s"
total_timeout = "30s"

[providers.remote]
kind = "openai"
model = "m"
base_url = "{}/v1"
probe = {{ interval = "60s", kind = "none" }}

[providers.surrogate]
kind = "local"
domain = "local"
{local}
probe = {{ interval = "1s" }}

[routes.main]
chain = ["remote"]
"#,
        remote.base_url()
    )
}

fn mock_as_local_server() -> String {
    format!(
        "model = \"local-model\"\ncommand = [\"{}\", \"mock-provider\", \"--addr\", \"127.0.0.1:{{port}}\"]\nready_timeout = \"20s\"",
        env!("CARGO_BIN_EXE_baton")
    )
}

/// Processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (in parentheses): state, then ppid.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after.split_whitespace().nth(1) == Some(&parent.to_string()) {
            children.push(pid);
        }
    }
    children
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's bookkeeping is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn ask(
    serve: &Serve,
    prompt: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(serve.url("/v1/chat/completions"))
        // Greedy decoding: a real model at its default temperature may end
        // its answer at the first token (Gemma 270M did, one time in three).
        .json(&json!({
            "model": "main",
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]
        }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap())
}

fn answered_by_the_local_server(
    (status, headers, body): &(reqwest::StatusCode, reqwest::header::HeaderMap, Value),
    prompt: &str,
) {
    assert_eq!(*status, 200, "{body}");
    assert_eq!(headers["x-baton-served-by"], "surrogate", "{body}");
    assert_eq!(headers["x-baton-degraded"], "true");
    // The mock's own answer to this prompt: the local server wrote it.
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected_answer(prompt, 24)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_server_answers_last_is_restarted_when_it_dies_and_stops_with_baton() {
    let remote = failing_mock().await;
    let serve = Serve::start(&config(&remote, &mock_as_local_server()), &[], &[]);
    let baton = serve.child.id();

    let first = ask(&serve, "Where is my parcel?").await;
    answered_by_the_local_server(&first, "Where is my parcel?");
    let trace = serve.trace(first.1["x-baton-trace-id"].to_str().unwrap());
    assert_eq!(
        remote.stats().requests,
        1,
        "the remote provider was tried first: {trace:#}"
    );
    // The local server's call is in the journal like any attempt, after
    // the chain's.
    let attempts = trace["attempts"].as_array().unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(attempts.len(), 2, "{trace:#}");
    assert_eq!(attempts[0]["provider"], "remote", "{trace:#}");
    assert_eq!(last["provider"], "surrogate", "{trace:#}");
    assert_eq!(last["reason"], "final_fallback", "{trace:#}");
    let servers = children_of(baton);
    assert_eq!(servers.len(), 1, "one local server: {servers:?}");
    let dead = servers[0];

    // The server dies; Baton starts another, and the next request waits
    // for it within its deadline.
    signal(dead, "KILL");
    wait_until("the killed server is gone", Duration::from_secs(5), || {
        !alive(dead)
    });
    let second = ask(&serve, "Can I change the address?").await;
    answered_by_the_local_server(&second, "Can I change the address?");
    let servers = children_of(baton);
    assert_eq!(servers.len(), 1, "{servers:?}");
    let restarted = servers[0];
    assert_ne!(restarted, dead);

    // A clean stop takes the server with it.
    signal(baton, "TERM");
    wait_until("baton serve exits", Duration::from_secs(10), || {
        !alive(baton)
    });
    wait_until(
        "the local server is stopped",
        Duration::from_secs(5),
        || !alive(restarted),
    );
    remote.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_baton_leaves_no_local_server_behind() {
    let remote = failing_mock().await;
    let serve = Serve::start(&config(&remote, &mock_as_local_server()), &[], &[]);
    let baton = serve.child.id();
    answered_by_the_local_server(&ask(&serve, "Hello?").await, "Hello?");
    let server = children_of(baton)[0];
    signal(baton, "KILL");
    wait_until(
        "the local server dies with baton",
        Duration::from_secs(5),
        || !alive(server),
    );
    remote.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_gets_ready_is_given_up_and_the_request_fails_clearly() {
    let remote = failing_mock().await;
    // `sleep` takes the port argument and never listens on it.
    let local = "command = [\"sleep\", \"{port}\"]\nready_timeout = \"300ms\"\nmax_restarts = 1";
    let serve = Serve::start(&config(&remote, local), &[], &[]);
    let (status, _, body) = ask(&serve, "Anyone?").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(remote.stats().requests, 1);
    remote.shutdown().await;
}

/// A real model: llama.cpp's server over Gemma 3 270M (a base model
/// without a chat template, so its words are not checked: that the answer
/// came from it, after the remote providers failed, is).
#[tokio::test(flavor = "multi_thread")]
async fn a_real_local_model_answers_when_every_remote_provider_fails() {
    if std::env::var_os("BATON_LONG").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = Command::new(root.join("scripts/setup-local-model.sh"))
        .status()
        .expect("scripts/setup-local-model.sh runs");
    assert!(setup.success(), "scripts/setup-local-model.sh failed");
    let (primary, secondary) = (failing_mock().await, failing_mock().await);
    let local = format!(
        "model = \"gemma3-270m\"\nmodel_path = \"{}\"\ncommand = [\"{}\", \"-m\", \"llama_cpp.server\", \"--model\", \"{{model_path}}\", \"--host\", \"127.0.0.1\", \"--port\", \"{{port}}\", \"--n_ctx\", \"2048\"]\nready_timeout = \"120s\"",
        root.join("models/gemma3-270m-q4_k_m.gguf").display(),
        root.join(".venv-local/bin/python").display()
    );
    let mut config = config(&primary, &local);
    config = config.replace(
        "[routes.main]\nchain = [\"remote\"]",
        &format!(
            "[providers.backup]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\nprobe = {{ interval = \"60s\", kind = \"none\" }}\n\n[routes.main]\nchain = [\"remote\", \"backup\"]\nmax_tokens = 16",
            secondary.base_url()
        ),
    );
    let serve = Serve::start(&config, &[], &[]);
    let (status, headers, body) = ask(&serve, "The capital of France is").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-baton-served-by"], "surrogate", "{body}");
    assert_eq!(primary.stats().requests, 1);
    assert_eq!(secondary.stats().requests, 1);
    let trace = serve.trace(headers["x-baton-trace-id"].to_str().unwrap());
    // The words are the model's (a base model may well stop after a
    // newline); that it finished an answer is what is checked.
    let choice = &body["choices"][0];
    assert!(choice["message"]["content"].is_string(), "{body}");
    assert!(
        matches!(choice["finish_reason"].as_str(), Some("stop" | "length")),
        "{body}"
    );
    assert_eq!(trace["served_by"], "surrogate");
    assert_eq!(trace["answer"], choice["message"]["content"], "{trace:#}");
    let attempts = trace["attempts"].as_array().unwrap();
    let providers: Vec<&str> = attempts
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["remote", "backup", "surrogate"], "{trace:#}");
    assert_eq!(attempts[2]["reason"], "final_fallback");
    assert!(attempts[2]["error"].is_null(), "{trace:#}");
    // llama.cpp's server sends no usage in a stream: Baton estimates it,
    // so that keys' token limits and budgets still count the answer.
    assert!(
        attempts[2]["input_tokens"].as_u64().unwrap() > 0,
        "{trace:#}"
    );
    primary.shutdown().await;
    secondary.shutdown().await;
}
