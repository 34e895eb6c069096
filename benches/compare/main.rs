//! Baton side by side with LiteLLM's proxy and the Portkey gateway, and
//! with the upstream called directly, in one run on one machine: the same
//! two mock upstreams (`baton mock-provider`, zero latency, 8-token
//! answers), the same two-provider fallback (primary, then secondary, no
//! retries), everything on 127.0.0.1.
//!
//! `benches/compare/run.sh` installs the peers and runs this inside a
//! network namespace with only `lo`; it can also be run by hand with
//! `BATON_COMPARE_PEERS=DIR` (where `run.sh` installs them) — a peer that
//! is not installed there is left out.
//!
//! Three parts, all open-loop or scripted, nothing asserted (each server
//! first gets 50 requests one after another, so that cold starts are not
//! measured):
//! 1. overhead: `load::step` at each rate of `BATON_COMPARE_RATES`
//!    (default 25,100,500,1000,5000) for `BATON_COMPARE_SECONDS` (3) each;
//!    a target's ladder stops at the first rate it does not sustain. The
//!    generator runs on CPU 0, the mocks and the servers on CPU 1
//!    (`taskset`), when the machine has two.
//! 2. outage: 50 requests/s for 8 s; from 2 s to 6 s the primary answers
//!    503. Share answered, the time from the outage's start to the first
//!    answer, and upstream attempts per client request (the mocks' own
//!    counts).
//! 3. cut streams: 20 streaming requests while the primary cuts every
//!    stream after 3 tokens; the text each client received is compared
//!    with the full answer: complete, duplicated, truncated, or an error.
//!
//! The report goes to stdout, and to `BATON_COMPARE_OUT` (Markdown) when set.

#[path = "../support/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::provider::mock::expected_answer;
use bytes::Bytes;
use load::{
    Pool, Process, Settings, Step, Target, env_or, memory, pin_self, spawn_mock, step,
    wait_for_line,
};
use serde_json::{Value, json};

const PROMPT: &str = "Where is my parcel?";

/// VmRSS and VmHWM in MiB, when the process could be read.
type Memory = Option<(f64, f64)>;
const ANSWER_TOKENS: usize = 8;

fn pinned(program: &Path, pin: bool) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.arg("-c").arg("1").arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn baton_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_mock(dir: &Path, name: &'static str, pin: bool) -> (Process, String) {
    let script = dir.join(format!("{name}.toml"));
    std::fs::write(
        &script,
        format!("[server]\nmodel = \"{name}\"\nanswer_tokens = {ANSWER_TOKENS}\n"),
    )
    .expect("mock script");
    spawn_mock(pinned(&baton_bin(), pin), &script, name)
}

/// Waits until `url` answers at all (any status), up to `limit`.
fn wait_http(url: &str, limit: Duration, what: &str) {
    let client = reqwest::blocking::Client::new();
    let end = Instant::now() + limit;
    while client
        .get(url)
        .timeout(Duration::from_secs(1))
        .send()
        .is_err()
    {
        assert!(
            Instant::now() < end,
            "{what} did not start within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One gateway under test: how to reach it and what it is.
struct Server {
    name: &'static str,
    version: String,
    addr: String,
    /// The `model` a request names, and the headers it carries.
    model: &'static str,
    headers: Vec<(String, String)>,
    process: Option<Process>,
}

fn start_baton(
    dir: &Path,
    primary: &str,
    secondary: &str,
    durability: &'static str,
    pin: bool,
) -> Server {
    let dir = dir.join(durability);
    std::fs::create_dir_all(&dir).expect("baton's dir");
    let dir = dir.as_path();
    let config = format!(
        r#"default_route = "main"
[defaults]
retries = 0
final_fallbacks = []
[providers.primary]
kind = "openai"
model = "gpt-4o-mini"
base_url = "http://{primary}/v1"
probe = {{ interval = "60s", kind = "none" }}
[providers.secondary]
kind = "openai"
model = "gpt-4o-mini"
base_url = "http://{secondary}/v1"
probe = {{ interval = "60s", kind = "none" }}
[routes.main]
chain = ["primary", "secondary"]
[store]
durability = "{durability}"
"#
    );
    std::fs::write(dir.join("baton.toml"), config).expect("baton.toml");
    let mut child = pinned(&baton_bin(), pin)
        .arg("--config")
        .arg(dir.join("baton.toml"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("BATON_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let port = wait_for_line(stderr, "listening on http://127.0.0.1:", "baton serve");
    Server {
        name: if durability == "flush" {
            "baton"
        } else {
            "baton-relaxed"
        },
        version: format!(
            "baton {} `serve`, journal durability {durability}{}",
            env!("CARGO_PKG_VERSION"),
            if durability == "flush" {
                " (the default: two group-committed fsyncs per request)"
            } else {
                " (acknowledged before the journal is on disk, as the peers, which keep none)"
            }
        ),
        addr: format!("127.0.0.1:{port}"),
        model: "main",
        headers: Vec::new(),
        process: Some(Process {
            child,
            name: "baton serve",
        }),
    }
}

fn start_litellm(
    peers: &Path,
    dir: &Path,
    primary: &str,
    secondary: &str,
    pin: bool,
) -> Option<Server> {
    let litellm = peers.join("litellm-venv/bin/litellm");
    if !litellm.is_file() {
        eprintln!("LiteLLM is not installed in {}: left out", peers.display());
        return None;
    }
    // The upstream model is one LiteLLM's cost map knows: with an unknown
    // name it spends CPU on every request looking for a price.
    let config = format!(
        r#"model_list:
  - model_name: main
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://{primary}/v1
      api_key: mock
  - model_name: main-fallback
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://{secondary}/v1
      api_key: mock
router_settings:
  num_retries: 0
  fallbacks: [{{"main": ["main-fallback"]}}]
litellm_settings:
  num_retries: 0
  request_timeout: 10
general_settings:
  master_key: sk-compare
"#
    );
    let path = dir.join("litellm.yaml");
    std::fs::write(&path, config).expect("litellm.yaml");
    let port = free_port();
    let child = pinned(&litellm, pin)
        .arg("--config")
        .arg(&path)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_TELEMETRY", "False")
        .env("LITELLM_LOG", "ERROR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("litellm starts");
    let process = Process {
        child,
        name: "litellm",
    };
    wait_http(
        &format!("http://127.0.0.1:{port}/health/liveliness"),
        Duration::from_secs(120),
        "LiteLLM",
    );
    let version = Command::new(peers.join("litellm-venv/bin/pip"))
        .args(["show", "litellm"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Version: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    Some(Server {
        name: "litellm",
        version: format!("LiteLLM proxy {version} (one worker)"),
        addr: format!("127.0.0.1:{port}"),
        model: "main",
        headers: vec![("authorization".into(), "Bearer sk-compare".into())],
        process: Some(process),
    })
}

fn start_portkey(peers: &Path, primary: &str, secondary: &str, pin: bool) -> Option<Server> {
    let gateway = peers.join("portkey/node_modules/@portkey-ai/gateway");
    let script = gateway.join("build/start-server.js");
    if !script.is_file() {
        eprintln!(
            "the Portkey gateway is not installed in {}: left out",
            peers.display()
        );
        return None;
    }
    let port = free_port();
    let node = PathBuf::from(
        String::from_utf8_lossy(
            &Command::new("sh")
                .args(["-c", "command -v node"])
                .output()
                .expect("sh")
                .stdout,
        )
        .trim(),
    );
    let child = pinned(&node, pin)
        .arg(&script)
        .arg(format!("--port={port}"))
        .arg("--headless")
        .env("NODE_ENV", "production")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Portkey gateway starts");
    let process = Process {
        child,
        name: "portkey",
    };
    wait_http(
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_secs(60),
        "Portkey",
    );
    let version = std::fs::read_to_string(gateway.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let config = json!({
        "strategy": {"mode": "fallback"},
        "targets": [
            {"provider": "openai", "api_key": "mock", "custom_host": format!("http://{primary}/v1")},
            {"provider": "openai", "api_key": "mock", "custom_host": format!("http://{secondary}/v1")},
        ]
    });
    Some(Server {
        name: "portkey",
        version: format!("Portkey gateway {version} on node"),
        addr: format!("127.0.0.1:{port}"),
        model: "gpt-4o-mini",
        headers: vec![("x-portkey-config".into(), config.to_string())],
        process: Some(process),
    })
}

fn body(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]})
        .to_string()
}

/// Replaces a mock's fault script (its clock restarts).
fn set_script(mock: &str, script: &str) {
    reqwest::blocking::Client::new()
        .put(format!("http://{mock}/script"))
        .body(script.to_owned())
        .send()
        .and_then(|r| r.error_for_status())
        .expect("the mock takes a script");
}

/// Chat requests a mock served since its last reset, and resets.
fn take_requests(mock: &str) -> u64 {
    reqwest::blocking::Client::new()
        .post(format!("http://{mock}/stats/reset"))
        .send()
        .and_then(|r| r.json::<Value>())
        .map(|v| v["requests"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

struct Outage {
    sent: u64,
    answered: u64,
    first_answer_after: Option<Duration>,
    /// p50 and p99 latency of the requests sent during the outage.
    during: (Duration, Duration),
    upstream: u64,
}

/// 50 requests/s for 8 s; the primary answers 503 from 2 s to 6 s.
async fn outage(server: &Server, mocks: [&str; 2]) -> Outage {
    const RATE: u64 = 50;
    const SECONDS: u64 = 8;
    take_requests(mocks[0]);
    take_requests(mocks[1]);
    let client = reqwest::Client::new();
    let start = Instant::now();
    let outage_at = start + Duration::from_secs(2);
    let primary = mocks[0].to_owned();
    let script_task = tokio::spawn(async move {
        tokio::time::sleep_until(outage_at.into()).await;
        tokio::task::spawn_blocking(move || {
            set_script(
                &primary,
                "[[fault]]\nkind = \"status\"\nstatus = 503\nto = \"4s\"\n",
            );
        })
        .await
        .expect("script");
    });
    let mut tasks = Vec::new();
    for i in 0..RATE * SECONDS {
        let scheduled = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let mut request = client
            .post(format!("http://{}/v1/chat/completions", server.addr))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(15))
            .body(body(server.model, false));
        for (name, value) in &server.headers {
            request = request.header(name, value);
        }
        tasks.push(tokio::spawn(async move {
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            (scheduled, ok, Instant::now())
        }));
    }
    let _ = script_task.await;
    let mut answered = 0;
    let mut first: Option<Instant> = None;
    let outage_end = outage_at + Duration::from_secs(4);
    let mut during = Vec::new();
    for task in tasks {
        let (scheduled, ok, done) = task.await.expect("request task");
        if (outage_at..outage_end).contains(&scheduled) {
            during.push(done - scheduled);
        }
        if ok {
            answered += 1;
            if scheduled >= outage_at {
                first = Some(first.map_or(done, |f| f.min(done)));
            }
        }
    }
    let upstream = take_requests(mocks[0]) + take_requests(mocks[1]);
    set_script(mocks[0], "");
    during.sort();
    let at = |q: f64| {
        during
            .get(((during.len() as f64 * q) as usize).min(during.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outage {
        sent: RATE * SECONDS,
        answered,
        first_answer_after: first.map(|f| f.saturating_duration_since(outage_at)),
        during: (at(0.50), at(0.99)),
        upstream,
    }
}

#[derive(Default)]
struct Streams {
    complete: u64,
    duplicated: u64,
    truncated: u64,
    failed: u64,
    first_error: Option<String>,
}

/// The text of an OpenAI SSE stream's content deltas.
fn stream_text(raw: &str) -> String {
    raw.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// 20 streams while the primary cuts every stream after 3 tokens.
async fn cut_streams(server: &Server, primary: &str) -> Streams {
    set_script(
        primary,
        "[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 3\n",
    );
    let expected = expected_answer(PROMPT, ANSWER_TOKENS);
    let client = reqwest::Client::new();
    let mut streams = Streams::default();
    for _ in 0..20 {
        let mut request = client
            .post(format!("http://{}/v1/chat/completions", server.addr))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(15))
            .body(body(server.model, true));
        for (name, value) in &server.headers {
            request = request.header(name, value);
        }
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => match response.text().await {
                Ok(raw) => Ok(stream_text(&raw)),
                Err(error) => Err(format!("body: {error}")),
            },
            Ok(response) => Err(format!("status {}", response.status())),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(text) if text == expected => streams.complete += 1,
            Ok(text) if text.len() > expected.len() => streams.duplicated += 1,
            Ok(_) => streams.truncated += 1,
            Err(error) => {
                streams.failed += 1;
                streams.first_error.get_or_insert(error);
            }
        }
    }
    set_script(primary, "");
    streams
}

#[derive(Default)]
struct Tools {
    whole: u64,
    broken: u64,
    failed: u64,
    first_error: Option<String>,
}

/// 10 streamed tool calls while the primary cuts every tool call inside
/// its arguments; a call survived when the client assembled exactly the
/// arguments the full call carries.
async fn cut_tool_calls(server: &Server, primary: &str) -> Tools {
    set_script(
        primary,
        "[[fault]]\nkind = \"cut_tool_call\"\nafter_tokens = 2\n",
    );
    let client = reqwest::Client::new();
    let mut tools = Tools::default();
    let message = "Use lookup_order for order 1042";
    let expected = json!({"query": message});
    for _ in 0..10 {
        let request_body = json!({
            "model": server.model,
            "stream": true,
            "messages": [{"role": "user", "content": message}],
            "tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}],
        });
        let mut request = client
            .post(format!("http://{}/v1/chat/completions", server.addr))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(15))
            .body(request_body.to_string());
        for (name, value) in &server.headers {
            request = request.header(name, value);
        }
        let raw = match request.send().await {
            Ok(response) if response.status().is_success() => {
                response.text().await.map_err(|e| e.to_string())
            }
            Ok(response) => Err(format!("status {}", response.status())),
            Err(error) => Err(error.to_string()),
        };
        match raw {
            Ok(raw) => {
                let arguments: String = raw
                    .lines()
                    .filter_map(|line| line.strip_prefix("data: "))
                    .filter_map(|data| serde_json::from_str::<Value>(data).ok())
                    .filter_map(|v| {
                        v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect();
                if serde_json::from_str::<Value>(&arguments).ok() == Some(expected.clone()) {
                    tools.whole += 1;
                } else {
                    tools.broken += 1;
                }
            }
            Err(error) => {
                tools.failed += 1;
                tools.first_error.get_or_insert(error);
            }
        }
    }
    set_script(primary, "");
    tools
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn machine() -> String {
    // Counted from /proc: this process is pinned to one core by now.
    let cores = std::fs::read_to_string("/proc/cpuinfo").map_or(0, |c| {
        c.lines().filter(|l| l.starts_with("processor")).count()
    });
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("?".to_owned(), |kb| {
            format!("{:.0} GiB", kb / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} memory")
}

fn main() {
    let peers = PathBuf::from(env_or(
        "BATON_COMPARE_PEERS",
        format!("{}/benches/compare/.peers", env!("CARGO_MANIFEST_DIR")),
    ));
    let rates: Vec<u64> = env_or("BATON_COMPARE_RATES", "25,100,500,1000,5000".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let settings = Settings {
        seconds: env_or("BATON_COMPARE_SECONDS", 3.0),
        timeout: Duration::from_millis(2000),
        connections: 256,
        max_p99: Duration::from_millis(100),
    };
    let pin = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pin {
        pin_self();
    }
    let dir = std::env::temp_dir().join(format!("baton-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (primary_process, primary) = start_mock(&dir, "primary", pin);
    let (secondary_process, secondary) = start_mock(&dir, "secondary", pin);
    let mut servers = vec![Server {
        name: "direct",
        version: "the mock upstream itself".to_owned(),
        addr: primary.clone(),
        model: "gpt-4o-mini",
        headers: Vec::new(),
        process: None,
    }];
    servers.push(start_baton(&dir, &primary, &secondary, "flush", pin));
    servers.push(start_baton(&dir, &primary, &secondary, "relaxed", pin));
    servers.extend(start_litellm(&peers, &dir, &primary, &secondary, pin));
    servers.extend(start_portkey(&peers, &primary, &secondary, pin));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut ladders: BTreeMap<&str, Vec<Step>> = BTreeMap::new();
    let mut rss: BTreeMap<&str, (Memory, Memory)> = BTreeMap::new();
    let mut outages: BTreeMap<&str, Outage> = BTreeMap::new();
    let mut streams: BTreeMap<&str, Streams> = BTreeMap::new();
    let mut tools: BTreeMap<&str, Tools> = BTreeMap::new();
    runtime.block_on(async {
        for server in &servers {
            let pid = server.process.as_ref().map(Process::pid);
            let idle = pid.and_then(memory);
            let target = Target {
                name: server.name,
                addr: server.addr.clone(),
                body: Bytes::from(body(server.model, false)),
                serve: pid,
            };
            let pool = Arc::new(
                Pool::new(&server.addr, settings.connections).with_headers(&server.headers),
            );
            // Cold starts (lazy imports, JIT, first connections) are not
            // what is measured: 50 requests one after another first.
            let warm_body = Bytes::from(body(server.model, false));
            for _ in 0..50 {
                let _ = pool.send("/v1/chat/completions", &warm_body).await;
            }
            let mut ladder = Vec::new();
            for &rate in &rates {
                eprintln!("{}: {rate} req/s", server.name);
                let result = step(&pool, &target, rate, &settings, primary_process.pid()).await;
                let sustained = result.sustained(settings.max_p99);
                ladder.push(result);
                if !sustained {
                    break;
                }
            }
            rss.insert(server.name, (idle, pid.and_then(memory)));
            ladders.insert(server.name, ladder);
            if server.name != "direct" {
                eprintln!("{}: outage", server.name);
                outages.insert(server.name, outage(server, [&primary, &secondary]).await);
                eprintln!("{}: cut streams", server.name);
                streams.insert(server.name, cut_streams(server, &primary).await);
                eprintln!("{}: cut tool calls", server.name);
                tools.insert(server.name, cut_tool_calls(server, &primary).await);
            }
        }
    });

    let mut out = String::new();
    let _ = writeln!(out, "# Baton compared with LiteLLM and Portkey\n");
    let _ = writeln!(
        out,
        "Measured by `benches/compare/run.sh` on {} (UTC), on {}. Everything on 127.0.0.1 in a network namespace with only `lo`; the load generator on CPU 0, the mock upstreams and the server under test on CPU 1 (`taskset`).\n",
        time_now(),
        machine()
    );
    let _ = writeln!(out, "| target | what ran |\n|---|---|");
    for server in &servers {
        let _ = writeln!(out, "| {} | {} |", server.name, server.version);
    }
    let _ = writeln!(
        out,
        "\nThe same two upstreams for all: `baton mock-provider` (zero latency, {ANSWER_TOKENS}-token answers) as `primary` and `secondary`; each gateway is configured to fall back from the first to the second, with no retries. Non-streaming chat completions, one prompt.\n"
    );
    let _ = writeln!(out, "## Overhead: open-loop load at fixed rates\n");
    let _ = writeln!(
        out,
        "Latency from each request's scheduled send time ({} s per rate after a 0.5 s warm-up, 2 s timeout); `+p50`/`+p99`: the target's minus the upstream's own at the same rate; a ladder stops at the first rate a target does not sustain (≥ 95 % of the rate answered per second, ≤ 1 % failed, p99 ≤ 100 ms). CPU: per cent of one core used by the server process.\n",
        settings.seconds
    );
    let _ = writeln!(
        out,
        "| target | rate/s | achieved/s | ok % | timeout % | p50 ms | p99 ms | +p50 ms | +p99 ms | p99 × direct | server CPU % |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let direct = ladders.get("direct");
    for server in &servers {
        for s in &ladders[server.name] {
            let base = direct.and_then(|d| d.iter().find(|d| d.rate == s.rate));
            let plus = |i: usize| {
                base.map_or("-".to_owned(), |b| {
                    format!(
                        "{:+.2}",
                        (s.latency[i] as f64 - b.latency[i] as f64) / 1000.0
                    )
                })
            };
            let ratio = base.map_or("-".to_owned(), |b| {
                format!("{:.1}", s.latency[1] as f64 / b.latency[1].max(1) as f64)
            });
            let sent = s.sent.max(1) as f64;
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {:.0} |{}",
                server.name,
                s.rate,
                s.achieved,
                s.ok as f64 * 100.0 / sent,
                s.timeouts as f64 * 100.0 / sent,
                ms(s.latency[0]),
                ms(s.latency[1]),
                if server.name == "direct" {
                    "-".into()
                } else {
                    plus(0)
                },
                if server.name == "direct" {
                    "-".into()
                } else {
                    plus(1)
                },
                if server.name == "direct" {
                    "-".into()
                } else {
                    ratio
                },
                s.cpu[2],
                if s.sustained(settings.max_p99) {
                    ""
                } else {
                    " not sustained"
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "\n| target | highest sustained rate/s | RSS idle MiB | RSS after the ladder MiB |\n|---|---|---|---|"
    );
    for server in &servers {
        let best = ladders[server.name]
            .iter()
            .filter(|s| s.sustained(settings.max_p99))
            .map(|s| s.rate)
            .max();
        let (idle, after) = rss[server.name];
        let mib = |m: Memory| m.map_or("-".to_owned(), |(rss, _)| format!("{rss:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            server.name,
            best.map_or("none".to_owned(), |b| b.to_string()),
            mib(idle),
            mib(after)
        );
    }
    let _ = writeln!(out, "\n## The same outage for all\n");
    let _ = writeln!(
        out,
        "50 requests/s for 8 s; the primary answers 503 from 2 s to 6 s. Amplification: upstream requests (both mocks' counts) per client request.\n"
    );
    let _ = writeln!(
        out,
        "| target | answered | first answer after the outage began | p50 / p99 ms during the outage | amplification |\n|---|---|---|---|---|"
    );
    for server in servers.iter().filter(|s| s.name != "direct") {
        let o = &outages[server.name];
        let _ = writeln!(
            out,
            "| {} | {}/{} ({:.1} %) | {} | {:.1} / {:.1} | {:.2} |",
            server.name,
            o.answered,
            o.sent,
            o.answered as f64 * 100.0 / o.sent as f64,
            o.first_answer_after.map_or("none".to_owned(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1000.0
            )),
            o.during.0.as_secs_f64() * 1000.0,
            o.during.1.as_secs_f64() * 1000.0,
            o.upstream as f64 / o.sent as f64
        );
    }
    let _ = writeln!(out, "\n## Streams cut mid-answer\n");
    let _ = writeln!(
        out,
        "20 streaming requests while the primary cuts every stream after 3 of its {ANSWER_TOKENS} tokens (the secondary is healthy). What the client received, against the full answer:\n"
    );
    let _ = writeln!(
        out,
        "| target | complete | duplicated | truncated | failed (first error) |\n|---|---|---|---|---|"
    );
    for server in servers.iter().filter(|s| s.name != "direct") {
        let s = &streams[server.name];
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}{} |",
            server.name,
            s.complete,
            s.duplicated,
            s.truncated,
            s.failed,
            s.first_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    if streams.get("portkey").is_some_and(|s| s.failed > 0) {
        let _ = writeln!(
            out,
            "\nPortkey's failures are its own: this version answers every streaming request with a 500 (its log shows `TypeError: immutable` in its header handling), with or without a fault. It was measured as installed, not patched."
        );
    }
    if streams.get("litellm").is_some_and(|s| s.truncated > 0) {
        let _ = writeln!(
            out,
            "\nA truncated stream ended without error after the cut: the client got part of the answer and no sign that the rest is missing. Only a gateway that continues a cut stream on the next provider delivers it whole."
        );
    }
    let _ = writeln!(out, "\n## Tool calls cut mid-stream\n");
    let _ = writeln!(
        out,
        "10 streamed requests offering a tool that the message names, while the primary cuts every tool call inside its arguments. Whole: the client assembled exactly the full call's arguments.\n"
    );
    let _ = writeln!(
        out,
        "| target | whole | broken | failed (first error) |\n|---|---|---|---|"
    );
    for server in servers.iter().filter(|s| s.name != "direct") {
        let t = &tools[server.name];
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}{} |",
            server.name,
            t.whole,
            t.broken,
            t.failed,
            t.first_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    print!("{out}");
    if let Ok(path) = std::env::var("BATON_COMPARE_OUT") {
        std::fs::write(&path, &out).expect("BATON_COMPARE_OUT");
    }
    drop(servers);
    drop((primary_process, secondary_process));
    let _ = std::fs::remove_dir_all(&dir);
}

fn time_now() -> String {
    String::from_utf8_lossy(
        &Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_owned()
}
