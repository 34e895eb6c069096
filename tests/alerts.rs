//! Alerts end to end: the alert task of a process over a real store in a
//! temp directory, POSTing to a real webhook receiver on loopback.
//!
//! - a provider outage fires once and resolves once, in order, through
//!   webhook retries, with nothing secret in the logs;
//! - SLA attainment and burn rate over journal records written through the
//!   store API: a bad window fires once, good traffic resolves once;
//! - a restart in the middle of an episode neither fires again nor loses
//!   the resolve (provider down, and SLA rebuilt from the journal);
//! - `baton validate` reports a bad rule kind and a bad webhook URL with
//!   their lines and fields.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{StatusCode, Uri};
use baton::alerts::{self, AlertHandle};
use baton::config::Config;
use baton::store::journal::{Ending, Journal, JournalRecord};
use baton::store::{Store, StoreError, StoreSettings};
use baton::trace::TraceId;
use serde_json::Value;
use tokio::task::JoinHandle;

/// A webhook receiver that records every POST and can refuse the first few.
#[derive(Clone, Default)]
struct Receiver {
    inner: Arc<Mutex<Received>>,
}

#[derive(Default)]
struct Received {
    /// Bodies answered 200, in arrival order.
    accepted: Vec<Value>,
    paths: Vec<String>,
    /// Every POST, refused ones included.
    attempts: usize,
    /// Answer 503 to this many POSTs first.
    refuse: usize,
}

impl Receiver {
    async fn start(refuse: usize) -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        receiver.inner.lock().unwrap().refuse = refuse;
        let state = receiver.clone();
        let app = Router::new().fallback(move |uri: Uri, body: String| {
            let state = state.clone();
            async move {
                let mut received = state.inner.lock().unwrap();
                received.attempts += 1;
                if received.refuse > 0 {
                    received.refuse -= 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                received.paths.push(uri.path().to_owned());
                received
                    .accepted
                    .push(serde_json::from_str(&body).expect("the webhook body is JSON"));
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.inner.lock().unwrap().accepted.clone()
    }

    fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts
    }
}

const PROVIDERS: &str = "default_route = \"support\"\n\
    [providers.primary]\nkind = \"extractive\"\n\
    [providers.backup]\nkind = \"extractive\"\n\
    [routes.support]\nchain = [\"primary\", \"backup\"]\nsla_p95 = \"1s\"\n";

fn config(webhook: &str, rules: &str) -> Arc<Config> {
    let text = format!(
        "{PROVIDERS}[alerts]\nwebhook = \"{webhook}\"\nevaluate_every = \"1h\"\nwebhook_timeout = \"2s\"\n{rules}"
    );
    Arc::new(Config::parse(&text, Path::new("baton.toml")).expect("the test config is valid"))
}

const DOWN_RULE: &str = "[[alerts.rules]]\nname = \"provider-down\"\nkind = \"provider_down\"\n";
const SLA_RULE: &str = "[[alerts.rules]]\nname = \"support-sla\"\nkind = \"sla_attainment\"\nroute = \"support\"\ntarget = 0.9\nwindow = \"5m\"\nmin_requests = 5\n";
const BURN_RULE: &str = "[[alerts.rules]]\nname = \"support-burn\"\nkind = \"burn_rate\"\nroute = \"support\"\nslo = 0.95\nthreshold = 4.0\nwindow = \"5m\"\nmin_requests = 10\n";

async fn open(dir: &Path) -> Store {
    // The previous process's store lets go of its lock once its committer
    // task, on this runtime, has wound down: wait without blocking it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir, &StoreSettings::default()) {
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.expect("the store opens"),
        }
    }
}

fn start(store: &Store, config: &Arc<Config>) -> (AlertHandle, JoinHandle<()>) {
    alerts::spawn(store.clone(), config.clone()).expect("the alert task starts")
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000 + secs)
}

/// Journals `n` requests of route `support` that took `latency`.
fn traffic(journal: &Journal, n: usize, latency: Duration, ok: bool) {
    for _ in 0..n {
        let id = TraceId::new();
        let mut record = JournalRecord::accepted(id, "where is my order?");
        record.route = Some("support".into());
        record.accepted_ms -= latency.as_millis() as u64;
        journal.accept(&record).unwrap();
        let ending = if ok {
            Ending::Completed {
                chain: vec!["orders".into()],
                attempts: vec![],
                served_by: "provider:primary".into(),
                fallback: false,
                degraded: false,
                refusal: false,
                needs_review: false,
                answer: "on its way".into(),
            }
        } else {
            Ending::Failed {
                chain: vec!["orders".into()],
                attempts: vec![],
                error: "every provider failed".into(),
            }
        };
        journal.finish(id, None, ending).unwrap();
    }
}

fn statuses(bodies: &[Value]) -> Vec<(&str, &str, &str)> {
    bodies
        .iter()
        .map(|b| {
            (
                b["alert"].as_str().unwrap(),
                b["status"].as_str().unwrap(),
                b["subject"].as_str().unwrap(),
            )
        })
        .collect()
}

/// Every log line of this test binary. One global subscriber, because
/// tracing's per-thread defaults lose events when parallel tests register
/// callsites; each test that reads the log names its rules uniquely and
/// looks only at its own lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        logs
    })
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines that mention `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

fn rule(name: &str, body: &str) -> String {
    format!("[[alerts.rules]]\nname = \"{name}\"\n{body}")
}

#[tokio::test]
async fn a_provider_outage_fires_once_and_resolves_once_through_webhook_retries() {
    let logs = logs();
    // Two 503s first: the fire goes out on its third try.
    let (receiver, addr) = Receiver::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let config = config(
        &format!("http://{addr}/hooks/s3cr3t-token?key=k3y"),
        &rule("outage-log", "kind = \"provider_down\"\n"),
    );
    let (alerts, task) = start(&store, &config);

    alerts.on_health("primary", true, at(0));
    // The outage lasts several evaluations and repeated Down reports.
    for second in 1..4 {
        alerts.evaluate().await;
        alerts.on_health("primary", true, at(second * 10));
    }
    alerts.on_health("primary", false, at(95));
    alerts.evaluate().await;
    alerts.on_health("primary", false, at(100));
    alerts.flush().await;

    let bodies = receiver.bodies();
    assert_eq!(
        statuses(&bodies),
        [
            ("outage-log", "firing", "primary"),
            ("outage-log", "resolved", "primary")
        ],
        "{bodies:#?}"
    );
    assert_eq!(receiver.attempts(), 4, "two refusals, then one POST each");
    let (fire, resolve) = (&bodies[0], &bodies[1]);
    assert_eq!(fire["kind"], "provider_down");
    assert_eq!(fire["started_at"], "2025-06-15T15:06:40.000Z");
    assert!(fire.get("resolved_at").is_none(), "{fire}");
    assert_eq!(fire["value"], Value::Null);
    assert_eq!(resolve["started_at"], fire["started_at"]);
    assert_eq!(resolve["resolved_at"], "2025-06-15T15:08:15.000Z");
    assert_eq!(resolve["duration_ms"], 95_000);
    assert_eq!(
        receiver.inner.lock().unwrap().paths,
        ["/hooks/s3cr3t-token", "/hooks/s3cr3t-token"]
    );

    alerts.shutdown();
    task.await.unwrap();
    let ours = logs.lines_with("alert=outage-log");
    assert_eq!(ours.len(), 2, "{ours:#?}");
    assert!(
        ours[0].contains("alert firing: provider `primary` is down"),
        "{ours:#?}"
    );
    assert!(
        ours[1].contains("alert resolved: provider `primary` is up again (after 1m35s)"),
        "{ours:#?}"
    );
    let armed = logs.lines_with(&format!("webhook=http://{addr}"));
    assert_eq!(armed.len(), 1, "{armed:#?}");
    assert!(armed[0].contains("alerts armed"), "{armed:#?}");
    let all = logs.text();
    assert!(!all.contains("s3cr3t") && !all.contains("k3y"), "{all}");
}

#[tokio::test]
async fn a_webhook_that_cannot_be_reached_is_logged_by_origin_only() {
    let logs = logs();
    // A port nobody listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let config = config(
        &format!("http://{addr}/hooks/s3cr3t-token"),
        &rule("unreachable-log", "kind = \"provider_down\"\n"),
    );
    let (alerts, task) = start(&store, &config);
    alerts.on_health("backup", true, at(0));
    alerts.flush().await;
    alerts.shutdown();
    task.await.unwrap();
    let ours = logs.lines_with("alert=unreachable-log");
    assert_eq!(ours.len(), 2, "{ours:#?}");
    assert!(ours[0].contains("alert firing:"), "{ours:#?}");
    assert!(
        ours[1].contains("alert webhook delivery failed after 4 attempts"),
        "{ours:#?}"
    );
    assert!(
        ours[1].contains(&format!("webhook=http://{addr} ")),
        "{ours:#?}"
    );
    let all = logs.text();
    assert!(!all.contains("s3cr3t"), "{all}");
}

#[tokio::test]
async fn sla_attainment_under_target_fires_once_and_good_traffic_resolves_it() {
    let (receiver, addr) = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let journal = Journal::new(&store).unwrap();
    let (alerts, task) = start(&store, &config(&format!("http://{addr}/hook"), SLA_RULE));

    // Four slow requests: below min_requests, nothing to judge yet.
    traffic(&journal, 4, Duration::from_secs(3), true);
    alerts.evaluate().await;
    // Ten slow, one failure: 0 of 11 within 1 s.
    traffic(&journal, 6, Duration::from_secs(3), true);
    traffic(&journal, 1, Duration::ZERO, false);
    alerts.evaluate().await;
    // Still bad over several evaluations.
    traffic(&journal, 5, Duration::from_secs(2), true);
    alerts.evaluate().await;
    alerts.evaluate().await;
    alerts.flush().await;
    let bodies = receiver.bodies();
    assert_eq!(
        statuses(&bodies),
        [("support-sla", "firing", "support")],
        "{bodies:#?}"
    );
    assert_eq!(bodies[0]["value"], 0.0);
    assert_eq!(bodies[0]["threshold"], 0.9);
    let summary = bodies[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("0.0% of 11 requests finished in the last 5m completed within 1s"),
        "{summary}"
    );

    // 16 bad + 150 fast: 150 / 166 = 90.4% ≥ 90%.
    traffic(&journal, 150, Duration::from_millis(20), true);
    alerts.evaluate().await;
    alerts.evaluate().await;
    alerts.flush().await;
    let bodies = receiver.bodies();
    assert_eq!(
        statuses(&bodies),
        [
            ("support-sla", "firing", "support"),
            ("support-sla", "resolved", "support")
        ],
        "{bodies:#?}"
    );
    let attainment = bodies[1]["value"].as_f64().unwrap();
    assert!((attainment - 150.0 / 166.0).abs() < 1e-9, "{attainment}");
    assert!(bodies[1]["duration_ms"].is_u64(), "{}", bodies[1]);
    alerts.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn a_burning_error_budget_fires_once_and_resolves_once() {
    let (receiver, addr) = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let journal = Journal::new(&store).unwrap();
    let (alerts, task) = start(&store, &config(&format!("http://{addr}/hook"), BURN_RULE));

    // 5 of 20 failed: 25% / 5% budget = 5× > 4×.
    traffic(&journal, 15, Duration::ZERO, true);
    traffic(&journal, 5, Duration::ZERO, false);
    alerts.evaluate().await;
    traffic(&journal, 1, Duration::ZERO, false);
    alerts.evaluate().await;
    // 6 of 40 failed: 3× ≤ 4×.
    traffic(&journal, 19, Duration::ZERO, true);
    alerts.evaluate().await;
    alerts.evaluate().await;
    alerts.flush().await;

    let bodies = receiver.bodies();
    assert_eq!(
        statuses(&bodies),
        [
            ("support-burn", "firing", "support"),
            ("support-burn", "resolved", "support")
        ],
        "{bodies:#?}"
    );
    assert_eq!(bodies[0]["kind"], "burn_rate");
    assert!((bodies[0]["value"].as_f64().unwrap() - 5.0).abs() < 1e-9);
    assert!((bodies[1]["value"].as_f64().unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(bodies[1]["threshold"], 4.0);
    alerts.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn a_restart_during_an_outage_neither_fires_again_nor_loses_the_resolve() {
    let (receiver, addr) = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("http://{addr}/hook"), DOWN_RULE);
    {
        let store = open(dir.path()).await;
        let (alerts, task) = start(&store, &config);
        alerts.on_health("primary", true, at(0));
        alerts.flush().await;
        alerts.shutdown();
        task.await.unwrap();
    }
    assert_eq!(receiver.bodies().len(), 1);

    // A new process on the same state directory: its health actor reports
    // the provider still down, then recovered.
    let store = open(dir.path()).await;
    let (alerts, task) = start(&store, &config);
    alerts.on_health("primary", true, at(30));
    alerts.evaluate().await;
    alerts.on_health("primary", false, at(60));
    alerts.flush().await;
    let bodies = receiver.bodies();
    assert_eq!(
        statuses(&bodies),
        [
            ("provider-down", "firing", "primary"),
            ("provider-down", "resolved", "primary")
        ],
        "{bodies:#?}"
    );
    assert_eq!(bodies[1]["started_at"], bodies[0]["started_at"]);
    assert_eq!(bodies[1]["duration_ms"], 60_000);
    alerts.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn an_sla_episode_survives_a_restart_and_the_window_is_rebuilt_from_the_journal() {
    let (receiver, addr) = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("http://{addr}/hook"), SLA_RULE);
    {
        let store = open(dir.path()).await;
        let journal = Journal::new(&store).unwrap();
        let (alerts, task) = start(&store, &config);
        traffic(&journal, 10, Duration::from_secs(5), true);
        alerts.evaluate().await;
        alerts.flush().await;
        alerts.shutdown();
        task.await.unwrap();
        store.flush().unwrap();
    }
    assert_eq!(
        statuses(&receiver.bodies()),
        [("support-sla", "firing", "support")]
    );

    let store = open(dir.path()).await;
    let journal = Journal::new(&store).unwrap();
    let (alerts, task) = start(&store, &config);
    // The new process reads the slow requests back: still bad, no new fire.
    alerts.evaluate().await;
    alerts.flush().await;
    assert_eq!(receiver.bodies().len(), 1, "{:#?}", receiver.bodies());
    traffic(&journal, 100, Duration::ZERO, true);
    alerts.evaluate().await;
    alerts.flush().await;
    assert_eq!(
        statuses(&receiver.bodies()),
        [
            ("support-sla", "firing", "support"),
            ("support-sla", "resolved", "support")
        ]
    );
    alerts.shutdown();
    task.await.unwrap();
}

/// Waits (in the test's time) until `done` holds, checking every second.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..120 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{what}: not within 120 s");
}

#[tokio::test(start_paused = true)]
async fn the_task_evaluates_on_its_own_tick_and_logs_without_a_webhook() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let journal = Journal::new(&store).unwrap();
    let sla = rule(
        "tick-log",
        "kind = \"sla_attainment\"\ntarget = 0.9\nwindow = \"5m\"\nmin_requests = 5\n",
    );
    let text = format!("{PROVIDERS}[alerts]\nevaluate_every = \"10s\"\n{sla}");
    let config = Arc::new(Config::parse(&text, Path::new("baton.toml")).unwrap());
    let (alerts, task) = start(&store, &config);
    let episodes = baton::store::alerts::AlertEpisodes::new(&store).unwrap();

    traffic(&journal, 10, Duration::from_secs(4), true);
    eventually("the tick fires the SLA alert", || {
        episodes.all().unwrap().len() == 1
    })
    .await;
    // Several more ticks over the same bad window.
    tokio::time::sleep(Duration::from_secs(45)).await;
    traffic(&journal, 200, Duration::ZERO, true);
    eventually("the tick resolves it", || {
        episodes.all().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(45)).await;
    alerts.shutdown();
    task.await.unwrap();
    let ours = logs.lines_with("alert=tick-log");
    assert_eq!(ours.len(), 2, "{ours:#?}");
    assert!(
        ours[0].contains("alert firing: route `support`"),
        "{ours:#?}"
    );
    assert!(
        ours[1].contains("alert resolved: route `support`"),
        "{ours:#?}"
    );
}

fn validate(config_text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    std::fs::write(&path, config_text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "validate",
            "--config",
            path.to_str().unwrap(),
            "agents/support-bot",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("BATON_CONFIG")
        .output()
        .expect("the baton binary runs");
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn validate_names_the_line_and_field_of_a_bad_rule_kind_and_a_bad_webhook() {
    let out = validate(&format!(
        "{PROVIDERS}[alerts]\nwebhook = \"ftp://hooks.example.com/s3cr3t\"\n[[alerts.rules]]\nname = \"x\"\nkind = \"provider_slow\"\n"
    ));
    assert!(
        out.contains("baton.toml:10:11: error: field `webhook`: [alerts]: expected an http:// or https:// URL, found the scheme `ftp`"),
        "{out}"
    );
    assert!(
        out.contains("baton.toml:13:8: error: field `kind`: alert rule `x`: expected one of provider_down, sla_attainment, burn_rate, found `provider_slow`"),
        "{out}"
    );
    assert!(!out.contains("s3cr3t"), "{out}");
}
