//! The scripted-fault mock provider over real loopback sockets, checked on
//! the wire with raw HTTP (reqwest) rather than through Baton's clients.
//!
//! Index: answers and shapes (deterministic text, both endpoints, plain and
//! streamed, tools, continuation); every fault kind; time windows, rates and
//! endpoint filters; stats; `PUT /script`; the real binary.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton::provider::mock::{MockHandle, MockServer, Script, Stats, expected_answer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

const LOOPBACK: &str = "127.0.0.1:0";

async fn start(script: &str) -> MockHandle {
    let script = Script::from_toml(script, Path::new("test.toml")).expect("test scripts are valid");
    MockServer::start(LOOPBACK.parse().unwrap(), script)
        .await
        .expect("the mock starts on loopback")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn openai_body(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

fn anthropic_body(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 256,
        "system": "be brief",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    })
}

async fn post(mock: &MockHandle, path: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}{path}", mock.base_url()))
        .header("x-api-key", "sk-test")
        .json(body)
        .send()
        .await
}

async fn openai(mock: &MockHandle, body: &Value) -> reqwest::Response {
    post(mock, "/v1/chat/completions", body)
        .await
        .expect("the mock answers")
}

async fn anthropic(mock: &MockHandle, body: &Value) -> reqwest::Response {
    post(mock, "/v1/messages", body)
        .await
        .expect("the mock answers")
}

/// The body read to its end, and whether it ended in an error (a cut).
async fn read_all(response: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut text = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(error) => return (String::from_utf8_lossy(&text).into_owned(), Some(error)),
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), None)
}

/// `data:` payloads of an SSE body, with their `event:` names if any.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(name) = line.strip_prefix("event: ") {
                event = Some(name.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        events.push((event, data));
    }
    events
}

fn openai_stream_text(text: &str) -> String {
    sse(text)
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

fn anthropic_stream_text(text: &str) -> String {
    sse(text)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

fn io_error_kind(error: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

async fn stats(mock: &MockHandle) -> Stats {
    client()
        .get(format!("{}/stats", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `probe` until it returns true or the deadline passes.
async fn eventually<F, Fut>(deadline: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// ---- answers and shapes ------------------------------------------------------

#[tokio::test]
async fn openai_answer_is_deterministic_with_usage_and_request_id() {
    let mock = start("[server]\nanswer_tokens = 6\nmodel = \"mock-a\"\n").await;
    let response = openai(&mock, &openai_body("what is baton?", false)).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["model"], "mock-a");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(first["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &first["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let text = choice["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 6);
    assert!(text.ends_with(' '));
    assert_eq!(text, expected_answer("what is baton?", 6));
    assert_eq!(first["usage"]["completion_tokens"], 6);
    assert_eq!(first["usage"]["prompt_tokens"], 5);
    assert_eq!(first["usage"]["total_tokens"], 11);

    let again: Value = openai(&mock, &openai_body("what is baton?", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["choices"][0]["message"]["content"], text);
    let other: Value = openai(&mock, &openai_body("something else", false))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other["choices"][0]["message"]["content"], text);
    // The same prompt over the other protocol gets the same words.
    let anth: Value = anthropic(&mock, &anthropic_body("what is baton?", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(anth["content"][0]["text"], text);
    mock.shutdown().await;
}

#[tokio::test]
async fn anthropic_answer_has_the_messages_shape() {
    let mock = start("[server]\nanswer_tokens = 5\n").await;
    let response = anthropic(&mock, &anthropic_body("hello there", false)).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "mock-1");
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(
        message["content"][0]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        5
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 4);
    assert_eq!(message["usage"]["output_tokens"], 5);

    let missing = post(
        &mock,
        "/v1/messages",
        &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .unwrap();
    assert_eq!(missing.status(), 400);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["message"], "max_tokens: Field required");
    mock.shutdown().await;
}

#[tokio::test]
async fn openai_stream_sends_chunks_finish_usage_and_done() {
    let mock = start("[server]\nanswer_tokens = 7\n").await;
    let whole: Value = openai(&mock, &openai_body("stream me", false))
        .await
        .json()
        .await
        .unwrap();
    let response = openai(&mock, &openai_body("stream me", true)).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (text, error) = read_all(response).await;
    assert!(error.is_none(), "{error:?}");
    let events = sse(&text);
    assert!(
        events.iter().all(|(e, _)| e.is_none()),
        "OpenAI streams have no event lines"
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        openai_stream_text(&text),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 7);

    // Without include_usage there is no usage chunk.
    let mut body = openai_body("stream me", true);
    body["stream_options"] = Value::Null;
    let (text, _) = read_all(openai(&mock, &body).await).await;
    assert!(!text.contains("\"usage\""), "{text}");
    mock.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_sends_events_in_order() {
    let mock = start("[server]\nanswer_tokens = 4\n").await;
    let whole: Value = anthropic(&mock, &anthropic_body("stream me", false))
        .await
        .json()
        .await
        .unwrap();
    let (text, error) = read_all(anthropic(&mock, &anthropic_body("stream me", true)).await).await;
    assert!(error.is_none(), "{error:?}");
    let events = sse(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        let value: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            value["type"],
            name.as_deref().unwrap(),
            "data type matches the event name"
        );
    }
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["usage"]["input_tokens"], 4);
    let delta: Value = serde_json::from_str(&events[3].1).unwrap();
    assert_eq!(delta["delta"]["type"], "text_delta");
    let end: Value = serde_json::from_str(&events[8].1).unwrap();
    assert_eq!(end["delta"]["stop_reason"], "end_turn");
    assert_eq!(end["usage"]["output_tokens"], 4);
    assert_eq!(
        anthropic_stream_text(&text),
        whole["content"][0]["text"].as_str().unwrap()
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn max_tokens_truncates_with_length_and_max_tokens_reasons() {
    let mock = start("[server]\nanswer_tokens = 10\n").await;
    let mut body = openai_body("long one", false);
    body["max_tokens"] = json!(3);
    let value: Value = openai(&mock, &body).await.json().await.unwrap();
    assert_eq!(value["choices"][0]["finish_reason"], "length");
    assert_eq!(value["usage"]["completion_tokens"], 3);
    let mut body = anthropic_body("long one", false);
    body["max_tokens"] = json!(3);
    let value: Value = anthropic(&mock, &body).await.json().await.unwrap();
    assert_eq!(value["stop_reason"], "max_tokens");
    mock.shutdown().await;
}

#[tokio::test]
async fn prefill_gets_only_the_rest_of_the_answer() {
    let mock = start("[server]\nanswer_tokens = 8\n").await;
    let whole: Value = openai(&mock, &openai_body("continue me", false))
        .await
        .json()
        .await
        .unwrap();
    let full = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let words: Vec<&str> = full.split_inclusive(' ').collect();
    let head = words[..3].concat();

    let mut body = openai_body("continue me", false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": head}));
    let rest: Value = openai(&mock, &body).await.json().await.unwrap();
    let rest = rest["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(format!("{head}{rest}"), full);

    // Anthropic refuses trailing whitespace in a prefill, so clients trim it.
    let trimmed = head.trim_end();
    let mut body = anthropic_body("continue me", true);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": trimmed}));
    let (text, _) = read_all(anthropic(&mock, &body).await).await;
    assert_eq!(format!("{trimmed}{}", anthropic_stream_text(&text)), full);

    let mut bad = anthropic_body("continue me", false);
    bad["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": head}));
    assert_eq!(anthropic(&mock, &bad).await.status(), 400);
    mock.shutdown().await;
}

#[tokio::test]
async fn restart_continuation_sends_the_whole_answer_again() {
    let mock =
        start("[server]\nanswer_tokens = 8\n[[fault]]\nkind = \"restart_continuation\"\n").await;
    let whole: Value = openai(&mock, &openai_body("continue me", false))
        .await
        .json()
        .await
        .unwrap();
    let full = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let head: String = full.split_inclusive(' ').take(3).collect();
    let mut body = openai_body("continue me", true);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": head}));
    let (text, _) = read_all(openai(&mock, &body).await).await;
    assert_eq!(openai_stream_text(&text), full);
    let stats = mock.stats();
    assert_eq!(stats.by_outcome["restart_continuation"], 1);
    assert_eq!(
        stats.by_outcome["ok"], 1,
        "the fault needs a prefill to apply"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn reject_prefill_is_a_400_only_for_prefill_requests() {
    let mock = start("[[fault]]\nkind = \"reject_prefill\"\n").await;
    assert_eq!(
        anthropic(&mock, &anthropic_body("q", false)).await.status(),
        200
    );
    let mut body = anthropic_body("q", false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "Sure"}));
    let response = anthropic(&mock, &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prefill")
    );
    let mut body = openai_body("q", false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "Sure"}));
    let response = openai(&mock, &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["param"], Value::Null);
    mock.shutdown().await;
}

fn with_tools(mut body: Value, anthropic: bool) -> Value {
    body["tools"] = if anthropic {
        json!([{"name": "lookup", "input_schema": {"type": "object"}},
               {"name": "search_docs", "description": "search", "input_schema": {"type": "object"}}])
    } else {
        json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
               {"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object"}}}])
    };
    body
}

#[tokio::test]
async fn tool_calls_plain_and_streamed_on_both_endpoints() {
    let mock = start("").await;
    let prompt = "please use search_docs for refunds";
    let plain: Value = openai(&mock, &with_tools(openai_body(prompt, false), false))
        .await
        .json()
        .await
        .unwrap();
    let choice = &plain["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "search_docs");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"query": prompt}));

    let (text, _) =
        read_all(openai(&mock, &with_tools(openai_body(prompt, true), false)).await).await;
    let chunks: Vec<Value> = sse(&text)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str(d).ok())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(first["id"], call["id"]);
    assert_eq!(first["function"]["name"], "search_docs");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    let plain: Value = anthropic(&mock, &with_tools(anthropic_body(prompt, false), true))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["stop_reason"], "tool_use");
    assert_eq!(plain["content"][0]["type"], "tool_use");
    assert_eq!(plain["content"][0]["name"], "search_docs");
    assert!(
        plain["content"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );
    assert_eq!(plain["content"][0]["input"], json!({"query": prompt}));

    let (text, _) =
        read_all(anthropic(&mock, &with_tools(anthropic_body(prompt, true), true)).await).await;
    let events: Vec<Value> = sse(&text)
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[1]["content_block"]["type"], "tool_use");
    assert_eq!(events[1]["content_block"]["input"], json!({}));
    let partial: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"query": prompt})
    );
    assert!(
        events
            .iter()
            .any(|e| e["delta"]["stop_reason"] == "tool_use")
    );

    // A prompt naming no tool gets text even when tools are offered.
    let text: Value = openai(&mock, &with_tools(openai_body("just talk", false), false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(text["choices"][0]["finish_reason"], "stop");
    mock.shutdown().await;
}

// ---- faults ------------------------------------------------------------------

#[tokio::test]
async fn status_faults_send_retry_after_and_real_error_bodies() {
    let mock = start(
        "[[fault]]\nkind = \"status\"\nstatus = 503\nretry_after = \"1500ms\"\nendpoint = \"anthropic\"\n\
         [[fault]]\nkind = \"status\"\nstatus = 429\nretry_after = \"2s\"\nendpoint = \"openai\"\n",
    )
    .await;
    let response = anthropic(&mock, &anthropic_body("q", false)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["retry-after"],
        "2",
        "rounded up to whole seconds"
    );
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["message"], "Overloaded");

    let response = openai(&mock, &openai_body("q", true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["param"], Value::Null);
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());

    mock.set_script(
        Script::from_toml(
            "[[fault]]\nkind = \"status\"\nstatus = 500\n",
            Path::new("t"),
        )
        .unwrap(),
    );
    let body: Value = anthropic(&mock, &anthropic_body("q", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["type"], "api_error");
    let response = openai(&mock, &openai_body("q", false)).await;
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    mock.shutdown().await;
}

#[tokio::test]
async fn a_fault_with_a_limit_applies_that_many_times_then_lets_requests_through() {
    let mock = start(
        "[[fault]]\nkind = \"status\"\nstatus = 503\nlimit = 2\n\
         [[fault]]\nkind = \"status\"\nstatus = 429\nlimit = 1\nendpoint = \"openai\"\n",
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            openai(&mock, &openai_body("q", false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [503, 503, 429, 200, 200]);
    // A new script starts its counts afresh.
    mock.set_script(
        Script::from_toml(
            "[[fault]]\nkind = \"status\"\nstatus = 500\nlimit = 1\n",
            Path::new("t"),
        )
        .unwrap(),
    );
    assert_eq!(openai(&mock, &openai_body("q", false)).await.status(), 500);
    assert_eq!(openai(&mock, &openai_body("q", false)).await.status(), 200);
    let error = Script::from_toml(
        "[[fault]]\nkind = \"refuse\"\nlimit = 1\n",
        Path::new("f.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("f.toml:3:9: fault #1: `limit` does not apply to kind = \"refuse\""),
        "{error}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn refuse_closes_the_port_inside_its_window_and_reopens_after() {
    let mock = start("[[fault]]\nkind = \"refuse\"\nfrom = \"150ms\"\nto = \"450ms\"\n").await;
    // An open keep-alive connection must not outlive the refusal.
    let shared_client = client();
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let ok = shared_client
        .post(&url)
        .json(&openai_body("q", false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = eventually(Duration::from_secs(3), || async {
        match shared_client
            .post(&url)
            .json(&openai_body("q", false))
            .send()
            .await
        {
            Err(error) => error.is_connect(),
            Ok(_) => false,
        }
    })
    .await;
    assert!(refused, "connections are refused inside the window");
    let back = eventually(Duration::from_secs(3), || async {
        matches!(shared_client.post(&url).json(&openai_body("q", false)).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(back, "the port accepts again after the window");
    mock.shutdown().await;
}

#[tokio::test]
async fn refuse_from_the_start_refuses_the_first_connection() {
    let mock = start("[[fault]]\nkind = \"refuse\"\n").await;
    let error = post(&mock, "/v1/messages", &anthropic_body("q", false))
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    mock.set_script(Script::default());
    let back = eventually(Duration::from_secs(3), || async {
        post(&mock, "/v1/messages", &anthropic_body("q", false))
            .await
            .is_ok()
    })
    .await;
    assert!(back, "replacing the script opens the port again");
    mock.shutdown().await;
}

#[tokio::test]
async fn reset_is_a_connection_error() {
    let mock = start("[[fault]]\nkind = \"reset\"\n").await;
    let error = post(&mock, "/v1/chat/completions", &openai_body("q", false))
        .await
        .unwrap_err();
    assert!(!error.is_timeout() && !error.is_status(), "{error:?}");
    assert_eq!(
        io_error_kind(&error),
        Some(std::io::ErrorKind::ConnectionReset),
        "the client sees a reset: {error:?}"
    );
    assert_eq!(mock.stats().by_outcome["reset"], 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers_and_closes_when_its_window_ends() {
    let mock = start("[[fault]]\nkind = \"hang\"\nto = \"600ms\"\n").await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = quick
        .post(format!("{}/v1/messages", mock.base_url()))
        .json(&anthropic_body("q", false))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");

    // A patient client sees the connection close when the window ends.
    let started = Instant::now();
    let result = post(&mock, "/v1/messages", &anthropic_body("q", false)).await;
    let waited = started.elapsed();
    match result {
        Err(error) => assert!(!error.is_timeout(), "{error:?}"),
        // The window may already be over when the request arrives.
        Ok(response) => assert_eq!(response.status(), 200),
    }
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    mock.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_and_stream_lines_are_not_json() {
    let mock = start("[[fault]]\nkind = \"malformed\"\n").await;
    let response = openai(&mock, &openai_body("q", false)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let response = anthropic(&mock, &anthropic_body("q", false)).await;
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let (text, error) = read_all(openai(&mock, &openai_body("q", true)).await).await;
    assert!(error.is_none());
    let events = sse(&text);
    assert!(
        events
            .iter()
            .any(|(_, d)| d != "[DONE]" && serde_json::from_str::<Value>(d).is_err()),
        "{text}"
    );
    let (text, _) = read_all(anthropic(&mock, &anthropic_body("q", true)).await).await;
    assert!(
        sse(&text)
            .iter()
            .any(|(_, d)| serde_json::from_str::<Value>(d).is_err()),
        "{text}"
    );
    assert_eq!(mock.stats().by_outcome["malformed"], 4);
    mock.shutdown().await;
}

#[tokio::test]
async fn cut_stream_ends_without_done_or_message_stop() {
    let mock =
        start("[server]\nanswer_tokens = 10\n[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 3\n")
            .await;
    let (text, error) = read_all(openai(&mock, &openai_body("q", true)).await).await;
    assert!(error.is_some(), "a cut stream ends in an error");
    assert!(
        !text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"),
        "{text}"
    );
    assert_eq!(openai_stream_text(&text).split_whitespace().count(), 3);

    let (text, error) = read_all(anthropic(&mock, &anthropic_body("q", true)).await).await;
    assert!(error.is_some());
    assert!(
        !text.contains("message_stop") && !text.contains("message_delta"),
        "{text}"
    );
    assert_eq!(anthropic_stream_text(&text).split_whitespace().count(), 3);

    // A whole answer is cut in the middle of its body.
    let error = openai(&mock, &openai_body("q", false))
        .await
        .text()
        .await
        .unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(mock.stats().streamed_tokens, 6);
    mock.shutdown().await;
}

#[tokio::test]
async fn cut_tool_call_stops_inside_the_arguments() {
    let mock = start("[[fault]]\nkind = \"cut_tool_call\"\nafter_tokens = 1\n").await;
    // Without tools the fault does not fit and the answer is whole.
    assert_eq!(openai(&mock, &openai_body("q", false)).await.status(), 200);
    let (text, error) =
        read_all(openai(&mock, &with_tools(openai_body("call lookup", true), false)).await).await;
    assert!(error.is_some());
    let arguments: String = sse(&text)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(!arguments.is_empty());
    assert!(
        serde_json::from_str::<Value>(&arguments).is_err(),
        "cut inside: {arguments}"
    );

    let (text, error) = read_all(
        anthropic(
            &mock,
            &with_tools(anthropic_body("call lookup", true), true),
        )
        .await,
    )
    .await;
    assert!(error.is_some());
    assert!(
        text.contains("input_json_delta") && !text.contains("message_stop"),
        "{text}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn slow_stream_spaces_tokens_by_its_interval() {
    let mock = start("[server]\nanswer_tokens = 5\n[[fault]]\nkind = \"slow_stream\"\ntoken_interval = \"80ms\"\n").await;
    let started = Instant::now();
    let response = openai(&mock, &openai_body("q", true)).await;
    let headers_at = started.elapsed();
    let (text, error) = read_all(response).await;
    let total = started.elapsed();
    assert!(error.is_none());
    assert_eq!(openai_stream_text(&text).split_whitespace().count(), 5);
    assert!(headers_at < Duration::from_millis(200), "{headers_at:?}");
    // Four gaps between five tokens.
    assert!(total >= Duration::from_millis(320), "{total:?}");
    assert!(total < Duration::from_secs(3), "{total:?}");
    mock.shutdown().await;
}

#[tokio::test]
async fn latency_fault_delays_the_start_of_the_answer() {
    let mock =
        start("[[fault]]\nkind = \"latency\"\ndelay = \"250ms\"\nendpoint = \"openai\"\n").await;
    let started = Instant::now();
    assert_eq!(openai(&mock, &openai_body("q", false)).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    assert_eq!(
        anthropic(&mock, &anthropic_body("q", false)).await.status(),
        200
    );
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "the endpoint filter spares Anthropic"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn content_filter_sets_the_finish_reason_with_partial_text() {
    let mock = start("[[fault]]\nkind = \"content_filter\"\nafter_tokens = 2\n").await;
    let value: Value = openai(&mock, &openai_body("q", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(value["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        value["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        2
    );
    let (text, error) = read_all(anthropic(&mock, &anthropic_body("q", true)).await).await;
    assert!(error.is_none());
    assert!(text.contains("\"stop_reason\":\"refusal\""), "{text}");
    assert!(text.contains("message_stop"));
    mock.shutdown().await;
}

#[tokio::test]
async fn context_length_errors_in_the_real_shapes() {
    let mock = start("[server]\nmax_context_tokens = 5\n").await;
    let short = openai(&mock, &openai_body("two words", false)).await;
    assert_eq!(short.status(), 200);
    let long = openai(&mock, &openai_body("one two three four five six", false)).await;
    assert_eq!(long.status(), 400);
    let body: Value = long.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let long = anthropic(&mock, &anthropic_body("one two three four five six", false)).await;
    let body: Value = long.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "prompt is too long: 8 tokens > 5 maximum"
    );

    mock.set_script(
        Script::from_toml("[[fault]]\nkind = \"context_length\"\n", Path::new("t")).unwrap(),
    );
    let response = anthropic(&mock, &anthropic_body("hi", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prompt is too long: 3 tokens > ")
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn rate_with_a_seed_gives_a_stable_count() {
    let script = "[server]\nseed = 7\n[[fault]]\nkind = \"status\"\nstatus = 503\nrate = 0.3\n";
    let mock = start(script).await;
    let mut counts = Vec::new();
    for _ in 0..2 {
        let mut failures = 0;
        for _ in 0..100 {
            if openai(&mock, &openai_body("q", false)).await.status() == 503 {
                failures += 1;
            }
        }
        counts.push(failures);
        // The same script again restarts the seeded RNG.
        mock.set_script(Script::from_toml(script, Path::new("t")).unwrap());
    }
    assert_eq!(counts[0], counts[1], "the seed fixes the draws");
    assert!(
        (15..=45).contains(&counts[0]),
        "about 30 in 100: {}",
        counts[0]
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn fault_windows_follow_the_script_clock() {
    let mock =
        start("[[fault]]\nkind = \"status\"\nstatus = 503\nfrom = \"300ms\"\nto = \"600ms\"\n")
            .await;
    assert_eq!(openai(&mock, &openai_body("q", false)).await.status(), 200);
    let failing = eventually(Duration::from_secs(3), || async {
        openai(&mock, &openai_body("q", false)).await.status() == 503
    })
    .await;
    assert!(failing, "the fault starts at `from`");
    let healthy = eventually(Duration::from_secs(3), || async {
        openai(&mock, &openai_body("q", false)).await.status() == 200
    })
    .await;
    assert!(healthy, "the fault ends at `to`");
    mock.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_outcomes_tokens_and_prompts() {
    let mock = start("[server]\nanswer_tokens = 3\n[[fault]]\nkind = \"status\"\nstatus = 500\nendpoint = \"anthropic\"\n").await;
    openai(&mock, &openai_body("same", true))
        .await
        .text()
        .await
        .unwrap();
    openai(&mock, &openai_body("same", false))
        .await
        .text()
        .await
        .unwrap();
    anthropic(&mock, &anthropic_body("same", false))
        .await
        .text()
        .await
        .unwrap();
    openai(&mock, &openai_body("other", false))
        .await
        .text()
        .await
        .unwrap();
    let seen = stats(&mock).await;
    assert_eq!(seen, mock.stats());
    assert_eq!(seen.requests, 4);
    assert_eq!(seen.by_endpoint["openai"], 3);
    assert_eq!(seen.by_endpoint["anthropic"], 1);
    assert_eq!(seen.by_outcome["ok"], 3);
    assert_eq!(seen.by_outcome["status"], 1);
    assert_eq!(seen.streamed_tokens, 3);
    // One conversation asked three times (over both protocols), one once.
    let mut counts: Vec<u64> = seen.prompts.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 3]);

    let reset = client()
        .post(format!("{}/stats/reset", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(stats(&mock).await, Stats::default());
    openai(&mock, &openai_body("same", false)).await;
    mock.reset_stats();
    assert_eq!(mock.stats().requests, 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn put_script_swaps_behaviour_and_restarts_the_clock() {
    let mock = start("").await;
    assert_eq!(openai(&mock, &openai_body("q", false)).await.status(), 200);
    let put = |body: &'static str| {
        let url = format!("{}/script", mock.base_url());
        async move { client().put(url).body(body).send().await.unwrap() }
    };
    let response = put("[[fault]]\nkind = \"status\"\nstatus = 529\nto = \"10s\"\n").await;
    assert_eq!(response.status(), 200);
    let response = anthropic(&mock, &anthropic_body("q", false)).await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");

    let response = put("[[fault]]\nkind = \"status\"\nstatus = 99\n").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("PUT /script:3:") && message.contains("`status`"),
        "{message}"
    );
    assert_eq!(
        anthropic(&mock, &anthropic_body("q", false)).await.status(),
        529,
        "a bad script changes nothing"
    );

    assert_eq!(put("").await.status(), 200);
    assert_eq!(
        anthropic(&mock, &anthropic_body("q", false)).await.status(),
        200
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn models_lists_the_script_model_and_unknown_paths_are_404() {
    let mock = start("[server]\nmodel = \"mock-7\"\n").await;
    let models: Value = client()
        .get(format!("{}/v1/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock-7");
    let missing = client()
        .get(format!("{}/v1/nothing", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn non_loopback_addresses_are_refused() {
    let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let error = MockServer::start(addr, Script::default())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("loopback only"), "{error}");
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let mock = start("").await;
    let url = format!("{}/v1/models", mock.base_url());
    assert!(client().get(&url).send().await.is_ok());
    mock.shutdown().await;
    let error = client().get(&url).send().await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

// ---- the binary --------------------------------------------------------------

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_the_script_until_killed() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("flaky.toml");
    std::fs::write(&script, "[server]\nmodel = \"from-file\"\n[[fault]]\nkind = \"status\"\nstatus = 503\nendpoint = \"anthropic\"\n").unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["mock-provider", "--addr", "127.0.0.1:0", "--script"])
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the baton binary starts"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the binary prints its address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let base = format!("http://{addr}");
    let value: Value = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&openai_body("q", false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(value["model"], "from-file");
    let failing = client()
        .post(format!("{base}/v1/messages"))
        .json(&anthropic_body("q", false))
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status(), 503);
    drop(child);

    let bad = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["mock-provider", "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("loopback only"));
}

#[test]
fn shipped_fault_scripts_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/faults");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Script::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 3, "examples/faults holds the example scripts");
}
