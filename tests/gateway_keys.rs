//! Virtual keys and Idempotency-Key at the gateway, through the real
//! binary: `baton serve` as a child process on a loopback port, upstream a
//! loopback mock in this process, keys made by `baton keys create` through
//! the admin socket of the running gateway.

use std::path::Path;
use std::time::Duration;

use baton::provider::mock::{MockHandle, MockServer, Script};
use serde_json::{Value, json};

async fn mock(script: &str) -> MockHandle {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml(script, Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap()
}

/// Every token costs 1, so a budget of 1 is spent by the first answer.
fn config(upstream: &MockHandle) -> String {
    format!(
        "default_route = \"main\"\n[defaults]\nretries = 0\nfirst_token_timeout = \"2s\"\nattempt_timeout = \"5s\"\ntotal_timeout = \"10s\"\n\
         [breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n\
         [providers.up]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\n\
         capabilities = [\"chat\", \"streaming\"]\ncost_per_1k_input = 1000.0\ncost_per_1k_output = 1000.0\n\
         [routes.main]\nchain = [\"up\"]\nfinal_fallbacks = []\n\
         [routes.other]\nchain = [\"up\"]\nfinal_fallbacks = []\n",
        upstream.base_url()
    )
}

mod common;

use common::{Serve, Workdir};

impl Workdir {
    /// `baton keys create ARGS`: the new key.
    async fn key(&self, args: &[&str]) -> String {
        let mut all = vec!["keys", "create"];
        all.extend_from_slice(args);
        self.ok(&all).await.trim().to_owned()
    }
}

/// `baton serve` with an HTTP client for it.
struct Gateway {
    running: Serve,
    http: reqwest::Client,
    base: String,
}

/// Starts `baton serve` over `workdir`, off the runtime so that the mock
/// keeps serving while the gateway starts.
async fn start(workdir: Workdir, args: &[&str]) -> Gateway {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let running = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        workdir.serve(&args)
    })
    .await
    .unwrap();
    Gateway {
        base: running.url(""),
        running,
        http: reqwest::Client::new(),
    }
}

impl Gateway {
    fn workdir(&self) -> &Workdir {
        &self.running.workdir
    }

    async fn chat(
        &self,
        key: Option<&str>,
        model: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/v1/chat/completions", self.base)).json(
            &json!({ "model": model, "messages": [{ "role": "user", "content": "hello there" }] }),
        );
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Stops like Ctrl-C would; the directory stays for the next one.
    async fn stop(self) -> Workdir {
        let Gateway { running, .. } = self;
        tokio::task::spawn_blocking(move || running.stop())
            .await
            .unwrap()
    }
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_scope_and_rate_limit() {
    let upstream = mock("").await;
    let scratch = Workdir::with_config(&config(&upstream));
    let serve = start(scratch, &[]).await;
    // No key yet: the gateway is open.
    assert_eq!(serve.chat(None, "main", &[]).await.status(), 200);
    // Made through the admin socket of the running gateway.
    let key = serve
        .workdir()
        .key(&["--name", "ci", "--routes", "main", "--rpm", "2"])
        .await;
    assert!(key.starts_with("bk-"), "{key}");

    let (status, body) = error_of(serve.chat(None, "main", &[]).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, _) = error_of(serve.chat(Some("bk-wrong"), "main", &[]).await).await;
    assert_eq!(status, 401);

    let (status, body) = error_of(serve.chat(Some(&key), "other", &[]).await).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["type"], "permission_error");

    let models: Value = serve
        .http
        .get(format!("{}/v1/models", serve.base))
        .header("x-api-key", &key)
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
    assert_eq!(ids, ["main"]);
    let health = serve
        .http
        .get(format!("{}/healthz", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health stays open");

    assert_eq!(serve.chat(Some(&key), "main", &[]).await.status(), 200);
    assert_eq!(serve.chat(Some(&key), "main", &[]).await.status(), 200);
    let limited = serve.chat(Some(&key), "main", &[]).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (_, body) = error_of(limited).await;
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Tokens count once an answer has ended: one answer fills 10.
    let tokens = serve
        .workdir()
        .key(&["--name", "tokens", "--tpm", "10"])
        .await;
    assert_eq!(serve.chat(Some(&tokens), "main", &[]).await.status(), 200);
    let limited = serve.chat(Some(&tokens), "main", &[]).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));

    // Revoked through the admin socket: refused from the next request
    // (another key keeps keys on: revoking the last one opens the gateway).
    let other = serve.workdir().key(&["--name", "other"]).await;
    serve.workdir().ok(&["keys", "revoke", "ci"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = error_of(serve.chat(Some(&key), "main", &[]).await).await;
    assert_eq!(status, 401);
    assert_eq!(serve.chat(Some(&other), "other", &[]).await.status(), 200);
    let listed = serve.workdir().ok(&["keys", "list", "--json"]).await;
    assert!(
        !listed.contains(&key),
        "the key never leaves the create output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_stops_upstream_calls_even_after_a_restart() {
    let upstream = mock("").await;
    let scratch = Workdir::with_config(&config(&upstream));
    let key = scratch.key(&["--name", "capped", "--budget", "1"]).await;
    let serve = start(scratch, &[]).await;
    assert_eq!(serve.chat(Some(&key), "main", &[]).await.status(), 200);
    let refused = serve.chat(Some(&key), "main", &[]).await;
    assert!(refused.headers().get("retry-after").is_none());
    let (status, body) = error_of(refused).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(upstream.stats().requests, 1);
    let scratch = serve.stop().await;

    let listed: Value =
        serde_json::from_str(&scratch.ok(&["keys", "list", "--json"]).await).unwrap();
    assert!(listed[0]["spent"].as_f64().unwrap() >= 1.0, "{listed}");
    let serve = start(scratch, &[]).await;
    let (status, body) = error_of(serve.chat(Some(&key), "main", &[]).await).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(
        upstream.stats().requests,
        1,
        "no upstream call after the budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cannot_widen_their_own_scope() {
    let upstream = mock("").await;
    let scratch = Workdir::with_config(&config(&upstream));
    let admin = scratch
        .key(&[
            "--name", "ops", "--routes", "main", "--rpm", "10", "--admin",
        ])
        .await;
    let user = scratch.key(&["--name", "app"]).await;
    let serve = start(scratch, &[]).await;
    let create = |key: &str, body: Value| {
        serve
            .http
            .post(format!("{}/v1/keys", serve.base))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let (status, _) = error_of(create(&user, json!({ "name": "x" })).await.unwrap()).await;
    assert_eq!(status, 403, "a non-admin key creates nothing");
    for wider in [
        json!({ "name": "x", "routes": ["other"], "rpm": 5 }),
        json!({ "name": "x", "routes": ["main"], "rpm": 50 }),
        json!({ "name": "x", "rpm": 5 }),
        json!({ "name": "x", "routes": ["main"] }),
    ] {
        let (status, body) = error_of(create(&admin, wider.clone()).await.unwrap()).await;
        assert_eq!(status, 403, "{wider}: {body}");
    }
    let made = create(
        &admin,
        json!({ "name": "child", "routes": ["main"], "rpm": 5 }),
    )
    .await
    .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let child = made["key"].as_str().unwrap();
    assert_eq!(serve.chat(Some(child), "main", &[]).await.status(), 200);
    assert_eq!(serve.chat(Some(child), "other", &[]).await.status(), 403);
    let (status, _) = error_of(create(child, json!({ "name": "y" })).await.unwrap()).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_asks_upstream_once() {
    let upstream = mock("[server]\nlatency = \"400ms\"\n").await;
    let scratch = Workdir::with_config(&config(&upstream));
    let serve = start(scratch, &["--idempotency-window", "10m"]).await;
    let same = [("idempotency-key", "order-42")];
    let answers =
        futures_util::future::join_all((0..5).map(|_| serve.chat(None, "main", &same))).await;
    let mut bodies = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 200);
        assert!(answer.headers().contains_key("x-baton-trace-id"));
        bodies.push(answer.text().await.unwrap());
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert_eq!(upstream.stats().requests, 1);

    let again = serve.chat(None, "main", &same).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), bodies[0]);
    assert_eq!(upstream.stats().requests, 1);

    let other = serve
        .http
        .post(format!("{}/v1/chat/completions", serve.base))
        .header("idempotency-key", "order-42")
        .json(&json!({ "model": "main", "messages": [{ "role": "user", "content": "something else" }] }))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(other).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");

    let streamed = serve
        .http
        .post(format!("{}/v1/chat/completions", serve.base))
        .header("idempotency-key", "order-43")
        .json(&json!({ "model": "main", "stream": true, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 400);
    assert_eq!(upstream.stats().requests, 1);
}
