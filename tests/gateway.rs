//! `baton serve` through its HTTP interface: the real binary on a loopback
//! port, in front of in-process mock upstreams.
//!
//! - answers through a route, in full and streamed (usage included), with
//!   the facts in headers and body, and journaled (read back with `baton
//!   trace` through the server's admin socket);
//! - failover before an answer and in the middle of a stream: the client
//!   sees one complete answer;
//! - errors in OpenAI's shape: a bad field named, an unknown model, a body
//!   over the limit (no upstream call), overload with Retry-After, every
//!   provider failing;
//! - a client that hangs up cancels the upstream call, and the request ends
//!   in the journal as failed;
//! - nothing in a request changes where Baton connects;
//! - `/readyz` turns 503 when every provider of a route is down, and
//!   `/metrics` parses as Prometheus text;
//! - `swarm:NAME` asks a swarm.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use serde_json::{Value, json};

use common::Serve;

async fn mock(script: &str) -> MockHandle {
    let script = Script::from_toml(script, Path::new("mock.toml")).unwrap();
    MockServer::start("127.0.0.1:0".parse().unwrap(), script)
        .await
        .unwrap()
}

/// A route `main` over `primary` then `secondary`, with breakers that open
/// after one failure.
fn config(primary: &MockHandle, secondary: &MockHandle, extra: &str) -> String {
    format!(
        r#"default_route = "main"
[defaults]
retries = 0
final_fallbacks = []
[breaker]
consecutive_failures = 1
base_ejection = "60s"
[providers.primary]
kind = "openai"
model = "m1"
base_url = "{}/v1"
domain = "a"
capabilities = ["chat", "tools", "streaming"]
probe = {{ interval = "60s", kind = "none" }}
[providers.secondary]
kind = "openai"
model = "m2"
base_url = "{}/v1"
domain = "b"
capabilities = ["chat", "tools", "streaming"]
probe = {{ interval = "60s", kind = "none" }}
[routes.main]
chain = ["primary", "secondary"]
{extra}"#,
        primary.base_url(),
        secondary.base_url()
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn ask(text: &str) -> Value {
    json!({ "model": "main", "messages": [{ "role": "user", "content": text }] })
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_answers_in_full_and_is_journaled() {
    let (primary, secondary) = (mock("").await, mock("").await);
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let response = client()
        .post(serve.url("/v1/chat/completions"))
        .json(&ask("where is my parcel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("x-baton-served-by").as_deref(), Some("primary"));
    assert_eq!(header("x-baton-fallback").as_deref(), Some("false"));
    let trace_id = header("x-baton-trace-id").unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected_answer("where is my parcel", 24)
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 24);
    assert_eq!(body["baton"]["trace_id"], trace_id.as_str());
    let record = serve.trace(&trace_id);
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(record["route"], "main");
    assert_eq!(record["served_by"], "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_provider_full_the_gateway_answers_503_with_retry_after() {
    let (primary, secondary) = (
        mock("[server]\nlatency = \"1s\"\n").await,
        mock("[server]\nlatency = \"1s\"\n").await,
    );
    let one_at_a_time = "max_concurrency = 1\nmax_queue = 0\n";
    let config = config(&primary, &secondary, "")
        .replace(
            "[providers.secondary]",
            &format!("{one_at_a_time}[providers.secondary]"),
        )
        .replace("[routes.main]", &format!("{one_at_a_time}[routes.main]"));
    let serve = Serve::start(&config, &[], &[]);
    let http = client();
    let mut busy = Vec::new();
    for text in ["first", "second"] {
        let request = http
            .post(serve.url("/v1/chat/completions"))
            .json(&ask(text));
        busy.push(tokio::spawn(request.send()));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // One call in flight on each provider, and no queue: the third is
    // refused at once, without an upstream call, and told when to retry.
    let third = http
        .post(serve.url("/v1/chat/completions"))
        .json(&ask("third"))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "providers_saturated", "{body}");
    for request in busy {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(primary.stats().requests + secondary.stats().requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_primary_fails_over_and_says_so() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let secondary = mock("").await;
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let response = client()
        .post(serve.url("/v1/chat/completions"))
        .json(&ask("refund please"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-baton-served-by"], "secondary");
    assert_eq!(response.headers()["x-baton-fallback"], "true");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["baton"]["attempts"], 2);
    assert_eq!(primary.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_reaches_the_client_complete() {
    let primary = mock("[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 5\n").await;
    let secondary = mock("").await;
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let mut request = ask("my label will not print");
    request["stream"] = json!(true);
    request["stream_options"] = json!({ "include_usage": true });
    let response = client()
        .post(serve.url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let events = events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, expected_answer("my label will not print", 24));
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["baton"]["served_by"], "secondary");
    assert_eq!(finish["baton"]["fallback"], true);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(primary.stats().by_outcome["cut_stream"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_openai_shape_with_fitting_statuses() {
    let (primary, secondary) = (mock("").await, mock("").await);
    let serve = Serve::start(
        &config(&primary, &secondary, ""),
        &[],
        &["--body-limit", "4096"],
    );
    let http = client();
    let post = |body: String| {
        http.post(serve.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let response = post(
        json!({ "model": "main", "messages": [{ "role": "robot", "content": "hi" }] }).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages[0].role");

    let response = post(
        json!({ "model": "nope", "messages": [{ "role": "user", "content": "hi" }] }).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");

    let big = ask(&"word ".repeat(2000)).to_string();
    let response = post(big).await.unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert_eq!(
        primary.stats().requests,
        0,
        "no upstream call for a refused body"
    );

    let response = http.get(serve.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_failing_is_a_502_with_the_trace_and_journaled() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let secondary = mock("[[fault]]\nkind = \"status\"\nstatus = 500\n").await;
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let response = client()
        .post(serve.url("/v1/chat/completions"))
        .json(&ask("anyone there"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let trace_id = response.headers()["x-baton-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "all_providers_failed");
    assert_eq!(body["error"]["trace_id"], trace_id.as_str());
    let record = serve.trace(&trace_id);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["attempts"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_retry_after() {
    // The primary holds every request; one fills the gateway.
    let primary = mock("[[fault]]\nkind = \"hang\"\n").await;
    let secondary = mock("").await;
    let serve = Serve::start(
        &config(
            &primary,
            &secondary,
            "attempt_timeout = \"20s\"\nfirst_token_timeout = \"20s\"\n",
        ),
        &[],
        &["--max-in-flight", "1"],
    );
    let http = client();
    let first = tokio::spawn(
        http.post(serve.url("/v1/chat/completions"))
            .json(&ask("first"))
            .send(),
    );
    // Until the first is upstream.
    for _ in 0..200 {
        if primary.stats().requests > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(primary.stats().requests, 1);
    let response = http
        .post(serve.url("/v1/chat/completions"))
        .json(&ask("second"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(
        primary.stats().requests,
        1,
        "the refused one never went upstream"
    );
    first.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_cancels_the_upstream_call() {
    let primary = mock("[server]\nanswer_tokens = 400\ntoken_interval = \"20ms\"\n").await;
    let secondary = mock("").await;
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let mut request = ask("tell me everything");
    request["stream"] = json!(true);
    let mut response = client()
        .post(serve.url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    let trace_id = response.headers()["x-baton-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let first = response.chunk().await.unwrap();
    assert!(first.is_some());
    drop(response);
    // 400 tokens take 8 s; a cancelled call stops well short of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let streamed = primary.stats().streamed_tokens;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        primary.stats().streamed_tokens,
        streamed,
        "the upstream stream stopped"
    );
    assert!(streamed < 150, "{streamed} tokens streamed");
    let record = serve.trace(&trace_id);
    assert_eq!(record["state"], "failed");
    assert_eq!(record["error"], "client disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_a_request_changes_where_baton_connects() {
    let (primary, secondary) = (mock("").await, mock("").await);
    let elsewhere = mock("").await;
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let mut request = ask("hello");
    request["api_base"] = json!(format!("{}/v1", elsewhere.base_url()));
    request["base_url"] = json!(format!("{}/v1", elsewhere.base_url()));
    let response = client()
        .post(serve.url("/v1/chat/completions"))
        .header("host", elsewhere.addr().to_string())
        .header("x-forwarded-host", elsewhere.addr().to_string())
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(primary.stats().requests, 1);
    let stats = elsewhere.stats();
    assert_eq!(stats.requests + stats.models_requests, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_when_every_provider_of_a_route_is_down_and_metrics_parse() {
    let primary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let secondary = mock("[[fault]]\nkind = \"status\"\nstatus = 503\n").await;
    let serve = Serve::start(&config(&primary, &secondary, ""), &[], &[]);
    let http = client();
    let ready = http.get(serve.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        http.get(serve.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // One failure each opens both breakers (consecutive_failures = 1).
    let failed = http
        .post(serve.url("/v1/chat/completions"))
        .json(&ask("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    let mut status = 0;
    for _ in 0..100 {
        let ready = http.get(serve.url("/readyz")).send().await.unwrap();
        status = ready.status().as_u16();
        if status == 503 {
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["routes"]["main"]["ready"], false);
            assert_eq!(body["routes"]["main"]["up"], json!([]));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 503);

    let text = http
        .get(serve.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, label: (&str, &str)| -> Option<f64> {
        scrape.samples.iter().find_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (s.metric == name && s.labels.get(label.0) == Some(label.1)).then_some(value)
        })
    };
    assert_eq!(value("baton_requests_total", ("status", "502")), Some(1.0));
    assert_eq!(
        value("baton_provider_up", ("provider", "primary")),
        Some(0.0)
    );
    assert_eq!(
        value("baton_provider_breaker_state", ("provider", "secondary")),
        Some(2.0)
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "baton_request_duration_seconds")
        .expect("the latency histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().unwrap().count, 1.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_answers_as_a_model() {
    let (primary, secondary) = (mock("").await, mock("").await);
    let swarm = [
        (
            "agents/desk/supervisor.md",
            "---\nname: supervisor\ndescription: Sends questions on.\nrole: supervisor\nroute: main\nintents: [help]\ndelegates: [parcels]\n---\nRoute the question.\n",
        ),
        (
            "agents/desk/parcels.md",
            "---\nname: parcels\ndescription: Answers about parcels and deliveries.\nroute: main\nintents: [parcel, delivery]\n---\nYou answer parcel questions.\n",
        ),
    ];
    let serve = Serve::start(&config(&primary, &secondary, ""), &swarm, &[]);
    let http = client();
    let models: Value = http
        .get(serve.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["main", "swarm:desk"]);
    let response = http
        .post(serve.url("/v1/chat/completions"))
        .json(&json!({ "model": "swarm:desk", "messages": [{ "role": "user", "content": "where is my parcel delivery" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-baton-worker"], "parcels");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["baton"]["worker"], "parcels");
    assert!(
        primary
            .stats()
            .last_system
            .contains("You answer parcel questions.")
    );
    let record = serve.trace(body["baton"]["trace_id"].as_str().unwrap());
    assert_eq!(record["swarm"], "desk");
    assert_eq!(record["state"], "completed");
}

/// The official `openai` and `anthropic` Python SDKs (in `.venv-sdk/`, made
/// by `scripts/setup-sdk-venv.sh`) call the gateway unmodified: plain,
/// streamed with a failover mid-stream, tools, an error
/// (`tests/sdk/check_gateway.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_talk_to_the_gateway_unmodified() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-sdk/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup-sdk-venv.sh to install the openai and anthropic SDKs",
        python.display()
    );
    // Every stream of the primary is cut; its plain answers are whole.
    let primary = mock("[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 5\n").await;
    let secondary = mock("").await;
    let serve = Serve::start(
        &config(&primary, &secondary, "")
            .replace("consecutive_failures = 1", "consecutive_failures = 1000"),
        &[],
        &[],
    );
    let base_url = serve.url("");
    let expected = expected_answer("my label will not print", 24);
    let script = root.join("tests/sdk/check_gateway.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg("--base-url")
            .arg(base_url)
            .arg("--expected")
            .arg(expected)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("openai: plain") && stdout.contains("anthropic: plain"),
        "{stdout}"
    );
    assert!(
        primary.stats().by_outcome["cut_stream"] >= 2,
        "{:?}",
        primary.stats()
    );
}

/// Headless Chromium, driven over the DevTools protocol.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let binary = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|name| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {name}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("chromium is not installed: run scripts/setup-chromium.sh");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let port = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("chromium did not open its DevTools port");
            if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse::<u16>().unwrap();
            }
        };
        let targets: Value = client()
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .unwrap();
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            next_id: 0,
        };
        browser.call("Page.navigate", json!({ "url": url })).await;
        browser
    }

    /// Sends a DevTools command and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("DevTools answers")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["id"] == id {
                    return value["result"].clone();
                }
            }
        }
    }

    /// Evaluates `expression` in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` evaluates to `expected`.
    async fn wait_for(&mut self, expression: &str, expected: Value, what: &str) {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.eval(expression).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: `{expression}` stayed {last}, expected {expected}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_provider_going_down_and_coming_back_without_a_reload() {
    let (primary, secondary) = (mock("").await, mock("").await);
    // One-token chat probes every 200 ms (a models probe never closes a
    // breaker); one failure opens the breaker for 2 s.
    let config = config(&primary, &secondary, "")
        .replace("base_ejection = \"60s\"", "base_ejection = \"2s\"")
        .replace(
            "probe = { interval = \"60s\", kind = \"none\" }",
            "probe = { interval = \"200ms\", kind = \"chat\" }",
        );
    let serve = Serve::start(&config, &[], &[]);
    let page = client().get(serve.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let svg = client()
        .get(serve.url("/dashboard/graph.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");

    let mut browser = Browser::open(&serve.url("/dashboard")).await;
    let health = "document.querySelector('tr[data-provider=primary]')?.dataset.health ?? null";
    browser
        .wait_for(health, json!("healthy"), "the page lists primary as up")
        .await;
    let loaded_at = browser.eval("performance.timeOrigin").await;

    primary.set_script(
        Script::from_toml("[[fault]]\nkind = \"refuse\"\n", Path::new("down.toml")).unwrap(),
    );
    browser
        .wait_for(health, json!("down"), "primary shown Down")
        .await;
    let badge = browser
        .eval("document.querySelector('tr[data-provider=primary] .badge').textContent")
        .await;
    assert_eq!(badge, "Down");
    assert_eq!(
        browser
            .eval("document.querySelector('tr[data-provider=secondary]').dataset.health")
            .await,
        "healthy"
    );

    primary.set_script(Script::from_toml("", Path::new("up.toml")).unwrap());
    browser
        .wait_for(health, json!("healthy"), "primary shown Up again")
        .await;
    assert_eq!(
        browser.eval("performance.timeOrigin").await,
        loaded_at,
        "the page was not reloaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_caps_the_output_tokens_a_request_may_ask_for() {
    let (primary, secondary) = (mock("").await, mock("").await);
    let serve = Serve::start(&config(&primary, &secondary, "max_tokens = 5\n"), &[], &[]);
    for asked in [json!(100), Value::Null] {
        let mut request = ask("tell me a long story");
        request["max_tokens"] = asked.clone();
        let body: Value = client()
            .post(serve.url("/v1/chat/completions"))
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["usage"]["completion_tokens"], 5,
            "asked {asked}: {body}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
    let mut request = ask("short");
    request["max_tokens"] = json!(3);
    let body: Value = client()
        .post(serve.url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"]["completion_tokens"], 3,
        "a smaller ask stands"
    );
}
