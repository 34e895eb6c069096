//! Provider keys never leak: not into logs (every target at TRACE, reqwest
//! and hyper included), not into errors (Display and Debug), not into files,
//! and not to another host through a redirect.
//!
//! One test per binary process would be ideal for the environment variable;
//! this file holds the only test that sets it.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::config::Config;
use baton::provider::mock::{MockServer, Script};
use baton::provider::{ChatRequest, Message};
use baton::routing::pool::Pool;
use baton::routing::router::{RouteRequest, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CANARY: &str = "sk-canary-7f3a9b2e-do-not-leak";
const CANARY_VAR: &str = "BATON_TEST_CANARY_KEY";

/// A log sink shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A raw HTTP server that answers every request with `response` and keeps
/// the request bytes it received.
async fn raw_server(response: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_key_appears_in_no_log_error_or_file_and_no_redirect_carries_it() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();
    // SAFETY: this is the only test in this binary and it sets the variable
    // before any other thread reads the environment.
    unsafe { std::env::set_var(CANARY_VAR, CANARY) };

    // The second host: whatever reaches it is recorded.
    let (elsewhere, reached_elsewhere) =
        raw_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into()).await;
    // A provider that redirects to it.
    let (redirecting, reached_redirector) = raw_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/v1/messages\r\ncontent-length: 0\r\n\r\n"
    ))
    .await;
    let failing = MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml(
            "[[fault]]\nkind = \"status\"\nstatus = 503\nto = \"1s\"\n",
            Path::new("t.toml"),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let malformed = MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml("[[fault]]\nkind = \"malformed\"\n", Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap();
    let good = MockServer::start("127.0.0.1:0".parse().unwrap(), Script::default())
        .await
        .unwrap();

    let text = format!(
        "default_route = \"r\"\n\
         [defaults]\nretries = 0\nfinal_fallbacks = [\"cache\"]\n\
         [providers.redirecting]\nkind = \"anthropic\"\nmodel = \"m\"\nbase_url = \"{redirecting}\"\napi_key_env = \"{CANARY_VAR}\"\n\
         [providers.failing]\nkind = \"anthropic\"\nmodel = \"m\"\nbase_url = \"{failing}\"\napi_key_env = \"{CANARY_VAR}\"\n\
         [providers.malformed]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{malformed}/v1\"\napi_key_env = \"{CANARY_VAR}\"\n\
         [providers.good]\nkind = \"anthropic\"\nmodel = \"m\"\nbase_url = \"{good}\"\napi_key_env = \"{CANARY_VAR}\"\n\
         [routes.r]\nchain = [\"redirecting\", \"failing\", \"malformed\", \"good\"]\n\
         [routes.dead]\nchain = [\"redirecting\", \"failing\", \"malformed\"]\n",
        failing = failing.base_url(),
        malformed = malformed.base_url(),
        good = good.base_url(),
    );
    let config = Config::parse(&text, Path::new("secrets.toml")).unwrap();
    let pool = Pool::from_config(&config).unwrap();
    let router = Router::new(&config, pool).unwrap();

    let mut seen_errors = Vec::new();
    let ask = |route: &str| {
        RouteRequest::new(
            route,
            ChatRequest {
                messages: vec![
                    Message::system("be brief"),
                    Message::user("where is my parcel"),
                ],
                ..ChatRequest::default()
            },
        )
    };
    let outcome = router
        .complete(ask("r"))
        .await
        .expect("the good provider answers");
    for attempt in &outcome.attempts {
        seen_errors.push(format!("{attempt:?}"));
    }
    seen_errors.push(format!("{outcome:?}"));
    let error = router.complete(ask("dead")).await.unwrap_err();
    seen_errors.push(error.to_string());
    seen_errors.push(format!("{error:?}"));
    seen_errors.push(format!("{config:?} {router:?}"));

    // The key really was used: the redirecting provider received it in
    // Anthropic's `x-api-key` (a header reqwest would forward on a redirect)...
    let first_request = reached_redirector.lock().unwrap().join("\n");
    assert!(
        first_request.contains(CANARY),
        "the test must exercise the key"
    );
    // ...but the redirect was not followed, so the other host got nothing.
    assert!(
        reached_elsewhere.lock().unwrap().is_empty(),
        "a redirect was followed"
    );
    assert_eq!(outcome.attempts[0].status, Some(307));

    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        log.len() > 1000,
        "TRACE logging captured little: {} bytes",
        log.len()
    );
    assert!(!log.contains(CANARY), "the key leaked into the log");
    for text in &seen_errors {
        assert!(!text.contains(CANARY), "the key leaked into {text}");
    }
    // The same providers behind a swarm run by the binary, with its store:
    // the journal, telemetry, breakers and the process's own output must
    // not hold the key either. The child inherits the key's variable.
    let scratch = tempfile::tempdir().unwrap();
    let with_capabilities = format!(
        "api_key_env = \"{CANARY_VAR}\"\ncapabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n"
    );
    let mut swarm_config = text
        .replace(
            &format!("api_key_env = \"{CANARY_VAR}\"\n"),
            &with_capabilities,
        )
        .replace("[routes.r]", "[routes.old-r]")
        .replace("[routes.dead]", "[routes.old-dead]")
        .replace("default_route = \"r\"", "default_route = \"default\"");
    for route in [
        "default",
        "support",
        "fast",
        "sonnet",
        "opus",
        "haiku",
        "knowledge",
    ] {
        swarm_config.push_str(&format!(
            "[routes.{route}]\nchain = [\"redirecting\", \"failing\", \"malformed\", \"good\"]\n"
        ));
    }
    std::fs::write(scratch.path().join("baton.toml"), swarm_config).unwrap();
    let state = scratch.path().join("state");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    command
        .arg("--config")
        .arg(scratch.path().join("baton.toml"))
        .arg("--state")
        .arg(&state)
        .args(["-vv", "ask"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/support-bot"))
        .args(["Where is my parcel?", "--json"])
        .env("BATON_LOG", "trace");
    // Off the runtime: the in-process upstreams keep serving meanwhile.
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("\"trace_id\""), "{printed}");
    assert!(
        !printed.contains(CANARY),
        "the key leaked into the output of baton ask"
    );
    let mut store_files = 0;
    let mut pending = vec![state.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                store_files += 1;
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(CANARY),
                    "the key leaked into the store file {path:?}"
                );
            }
        }
    }
    assert!(store_files > 0, "the store was written");

    // Files: nothing under the working state directory may hold it.
    for dir in [Path::new(".baton"), Path::new("target/tmp")] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(CANARY),
                        "{:?}",
                        entry.path()
                    );
                }
            }
        }
    }
}
