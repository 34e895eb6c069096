//! `baton report` figures against a scripted scenario worked out by hand.
//!
//! - `the_report_matches_the_hand_worked_scenario`: requests, attempts,
//!   health changes and switches written through the public store API at
//!   known times; every expected figure below is computed in the comments,
//!   not by the code under test.
//! - `a_period_spanning_compacted_minutes_reports_the_same_figures`: the
//!   same scenario after its first minutes were folded into aggregates.
//! - `the_binary_reports_and_compacts_a_store`: `baton report --json` and
//!   `baton store compact` run as a user runs them; an applied policy's
//!   objective serves over the config file's.
//!
//! # The scenario
//!
//! Period: 10 minutes from T0 (a minute boundary). Route `default`
//! (`sla_p95` 1 s, SLO 0.99) over providers `primary` then `backup`.
//! Request i (0 ≤ i < 100) is accepted at T0 + 6·i s:
//!
//! | i | what happens | request latency |
//! |---|---|---|
//! | 20–34 (A, 15) | primary outage 1: primary times out after 1000 ms, backup answers in 500 + 10·(i−20) ms | 1500 + 10·(i−20) ms |
//! | 80–89 (B, 10) | primary outage 2: primary 5xx after 100 ms, backup answers in 800 ms | 900 ms |
//! | 50, 51 (C, 2) | primary 5xx after 100 ms, backup 429 after 50 ms: failed | 150 ms |
//! | 60 (D1) | primary and backup 5xx (100 ms each), extractive answers: degraded | 250 ms |
//! | 61 (D2) | the same, extractive refuses | 260 ms |
//! | the 71 others (E) | primary answers in 100 + i ms | 100 + i ms |
//!
//! Every answering attempt costs 0.002 and uses 100 input / 50 output
//! tokens; failed attempts cost nothing. One request 30 s before T0 and
//! one 1 s after the end must not count.
//!
//! Health: primary down at T0+120 s, up at T0+210 s (90 s), down at
//! T0+480 s, up at T0+540 s (60 s); backup degraded T0+300..330 s (not
//! down). Switches: primary→backup at 125, 300, 485 s; backup→primary at
//! 215, 310, 545 s; the switch at 300 s is found unnecessary at 310 s.
//!
//! Percentiles are HDR's: the value of rank ⌈q·n⌉ in ascending order, to
//! 3 significant digits, so each is checked within 0.1%.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use baton::store::health::{HealthLog, HealthRecord};
use baton::store::journal::{AttemptEntry, JournalRecord, RequestState};
use baton::store::telemetry::{MINUTE_NS, SwitchEvent, Telemetry};
use baton::store::{Store, StoreSettings};
use baton::telemetry::report::{Report, ReportOptions, build};
use baton::trace::TraceId;

/// A minute boundary in November 2023.
const T0_MS: u64 = 28_333_334 * 60_000;
const T0_NS: u64 = T0_MS * 1_000_000;
const PERIOD_NS: u64 = 10 * MINUTE_NS;
const S: u64 = 1_000_000_000;

/// HDR's precision at 3 significant digits, with room for rounding.
const HDR_TOLERANCE: f64 = 0.001;

fn attempt(provider: &str, started_ms: f64, latency_ms: f64, outcome: &str) -> AttemptEntry {
    let ok = outcome == "ok";
    AttemptEntry {
        worker: Some("answerer".into()),
        provider: provider.into(),
        reason: if provider == "primary" {
            "primary"
        } else {
            "failover"
        }
        .into(),
        started_ms,
        latency_ms,
        outcome: outcome.into(),
        error: (!ok).then(|| format!("{outcome} from {provider}")),
        status: match outcome {
            "5xx" => Some(503),
            "429" => Some(429),
            _ => None,
        },
        input_tokens: if ok { 100 } else { 0 },
        output_tokens: if ok { 50 } else { 0 },
        cost: if ok { 0.002 } else { 0.0 },
        cancelled: false,
    }
}

/// A request accepted at `accepted_ms` that ended `latency_ms` later.
fn request(accepted_ms: u64, latency_ms: u64, attempts: Vec<AttemptEntry>) -> JournalRecord {
    let mut record = JournalRecord::accepted(TraceId::new(), "how do I reset my password?");
    record.accepted_ms = accepted_ms;
    record.finished_ms = Some(accepted_ms + latency_ms);
    record.swarm = Some("support".into());
    record.route = Some("default".into());
    record.chain = vec!["answerer".into()];
    record.state = RequestState::Completed;
    record.served_by = Some("provider:primary".into());
    record.answer = Some("Use the link on the sign-in page.".into());
    record.attempts = attempts;
    record
}

fn scenario(store: &Store, t0_ms: u64) {
    let telemetry = Telemetry::new(store).unwrap();
    let write = |record: JournalRecord| telemetry.record_finished(&record).unwrap();
    for i in 0..100u64 {
        let at = t0_ms + 6_000 * i;
        let record = match i {
            20..=34 => {
                let k = (i - 20) as f64;
                let mut r = request(
                    at,
                    1_500 + 10 * (i - 20),
                    vec![
                        attempt("primary", 0.0, 1_000.0, "timeout"),
                        attempt("backup", 1_000.0, 500.0 + 10.0 * k, "ok"),
                    ],
                );
                r.served_by = Some("provider:backup".into());
                r.fallback = true;
                r
            }
            80..=89 => {
                let mut r = request(
                    at,
                    900,
                    vec![
                        attempt("primary", 0.0, 100.0, "5xx"),
                        attempt("backup", 100.0, 800.0, "ok"),
                    ],
                );
                r.served_by = Some("provider:backup".into());
                r.fallback = true;
                r
            }
            50 | 51 => {
                let mut r = request(
                    at,
                    150,
                    vec![
                        attempt("primary", 0.0, 100.0, "5xx"),
                        attempt("backup", 100.0, 50.0, "429"),
                    ],
                );
                r.state = RequestState::Failed;
                r.served_by = None;
                r.answer = None;
                r.error = Some("every provider of route `default` failed".into());
                r
            }
            60 | 61 => {
                let mut r = request(
                    at,
                    if i == 60 { 250 } else { 260 },
                    vec![
                        attempt("primary", 0.0, 100.0, "5xx"),
                        attempt("backup", 100.0, 100.0, "5xx"),
                    ],
                );
                r.served_by = Some("extractive".into());
                if i == 60 {
                    r.degraded = true;
                } else {
                    r.refusal = true;
                }
                r
            }
            _ => request(
                at,
                100 + i,
                vec![attempt("primary", 0.0, (100 + i) as f64, "ok")],
            ),
        };
        write(record);
    }
    // Outside the period on either side.
    write(request(
        t0_ms - 30_000,
        100,
        vec![attempt("primary", 0.0, 100.0, "ok")],
    ));
    write(request(
        t0_ms + 601_000,
        100,
        vec![attempt("primary", 0.0, 100.0, "ok")],
    ));

    let health = HealthLog::new(store).unwrap();
    let t0_ns = t0_ms * 1_000_000;
    for (provider, from, to, at_s) in [
        ("primary", "healthy", "degraded", -100i64),
        ("primary", "degraded", "healthy", -50),
        ("primary", "healthy", "down", 120),
        ("primary", "down", "healthy", 210),
        ("primary", "healthy", "down", 480),
        ("primary", "down", "healthy", 540),
        ("backup", "healthy", "degraded", 300),
        ("backup", "degraded", "healthy", 330),
    ] {
        health
            .record_change(&HealthRecord {
                provider: provider.into(),
                from: from.into(),
                to: to.into(),
                reason: "scripted".into(),
                at_ns: t0_ns.checked_add_signed(at_s * S as i64).unwrap(),
            })
            .unwrap();
    }

    for (from, to, reason, at_s) in [
        ("primary", "backup", "failover", 125),
        ("backup", "primary", "fail_back", 215),
        ("primary", "backup", "failover", 300),
        ("backup", "primary", "fail_back", 310),
        ("primary", "backup", "failover", 485),
        ("backup", "primary", "fail_back", 545),
    ] {
        let switch = SwitchEvent {
            swarm: "support".into(),
            worker: "answerer".into(),
            from: from.into(),
            to: to.into(),
            reason: reason.into(),
            unnecessary: false,
            at_ns: t0_ns + at_s * S,
        };
        telemetry.record_switch(&switch).unwrap();
        if at_s == 300 {
            telemetry
                .mark_unnecessary(&switch, t0_ns + 310 * S)
                .unwrap();
        }
    }
}

fn options() -> ReportOptions {
    let mut options = ReportOptions::new(T0_NS, T0_NS + PERIOD_NS);
    options.slo = 0.99;
    options.routes = BTreeMap::from([("default".to_owned(), Some(Duration::from_secs(1)))]);
    options.threads = 2;
    options
}

fn near(found: Option<f64>, expected: f64, tolerance: f64, what: &str) {
    let found = found.unwrap_or_else(|| panic!("{what}: no value"));
    assert!(
        (found - expected).abs() <= expected.abs() * tolerance + 1e-9,
        "{what}: expected {expected} (±{:.2}%), found {found}",
        tolerance * 100.0
    );
}

fn assert_hand_worked_figures(report: &Report) {
    // Totals: 100 requests in the period (the two outside excluded).
    // Answered: E 71 + A 15 + B 10 + D1 1 = 97; failed C = 2; refused D2 = 1.
    // Attempts: primary 100 + backup 29 = 129.
    let t = &report.totals;
    assert_eq!(
        (t.requests, t.answered, t.failed, t.refusals, t.degraded),
        (100, 97, 2, 1, 1)
    );
    assert_eq!((t.attempts, t.fallbacks), (129, 25));
    assert_eq!((t.switches, t.unnecessary_switches), (6, 1));
    // 96 answering attempts × 0.002.
    near(Some(t.cost), 0.192, 1e-9, "total cost");

    let route = report.routes.iter().find(|r| r.name == "default").unwrap();
    assert_eq!(route.requests, 100);
    assert_eq!(route.answered, 97);
    near(route.success_rate, 0.97, 1e-12, "route success rate");
    // C's last failed attempt was backup's 429.
    assert_eq!(route.errors, BTreeMap::from([("429".to_owned(), 2)]));
    near(
        route.error_rates.get("429").copied(),
        0.02,
        1e-12,
        "429 rate",
    );
    // Request latencies ascending, with ranks:
    //   100..=119 (E, 1–20), 135..=149 (E, 21–35), 150 150 (C, 36–37),
    //   152..=159 (E, 38–45), 162..=179 (E, 46–63), 190..=199 (E, 64–73),
    //   250 (74), 260 (75), 900 ×10 (B, 76–85), 1500..=1640 step 10 (A, 86–100).
    // p50 = rank 50 = 162 + 4 = 166 ms; p95 = rank 95 = A's 10th = 1590 ms;
    // p99 = rank 99 = A's 14th = 1630 ms; max = 1640 ms (exact).
    near(route.latency.p50_ms, 166.0, HDR_TOLERANCE, "route p50");
    near(route.latency.p95_ms, 1_590.0, HDR_TOLERANCE, "route p95");
    near(route.latency.p99_ms, 1_630.0, HDR_TOLERANCE, "route p99");
    assert_eq!(route.latency.max_ms, Some(1_640.0));
    // Within 1 s: all but A's 15 → 85%, under the 95% of a p95 target.
    assert_eq!(route.sla_p95_ms, Some(1_000.0));
    near(route.sla_attainment, 0.85, 1e-12, "SLA attainment");
    assert_eq!(route.sla_met, Some(false));
    // Missed (failed + refused) = 3; allowed 1% of 100 = 1: the budget is
    // overspent twice over (left = 1 − 3/1 = −2), burning at 0.03/0.01 = 3.
    near(route.error_budget_left, -2.0, 1e-9, "error budget left");
    near(route.burn_rate, 3.0, 1e-9, "burn rate");
    assert_eq!(
        (route.fallbacks, route.degraded, route.refusals),
        (25, 1, 1)
    );
    assert_eq!(
        route.degraded_by,
        BTreeMap::from([("extractive".to_owned(), 1)])
    );
    // First failure to fallback answer: A: (1500 + 10k) − 1000 = 500 + 10k,
    // mean 570 over k = 0..14; B: 900 − 100 = 800.
    // (15 × 570 + 10 × 800) / 25 = 16550 / 25 = 662 ms.
    near(
        route.time_to_fallback_ms,
        662.0,
        1e-9,
        "route time to fallback",
    );

    let primary = report
        .providers
        .iter()
        .find(|p| p.name == "primary")
        .unwrap();
    // Attempts: E 71 ok, A 15 timeout, B 10 + C 2 + D 2 = 14 5xx.
    assert_eq!((primary.attempts, primary.ok), (100, 71));
    assert_eq!(
        primary.errors,
        BTreeMap::from([("5xx".to_owned(), 14), ("timeout".to_owned(), 15)])
    );
    near(
        primary.error_rates.get("timeout").copied(),
        0.15,
        1e-12,
        "timeout rate",
    );
    // Attempt latencies ascending: 100 ×15 (B, C, D and E's i=0; ranks
    // 1–15), 101..=119 (16–34), 135..=149 (35–49), 152..=159 (50–57),
    // 162..=179 (58–75), 190..=199 (76–85), 1000 ×15 (A, 86–100).
    // p50 = rank 50 = 152 ms; p95 = p99 = max = 1000 ms.
    near(primary.latency.p50_ms, 152.0, HDR_TOLERANCE, "primary p50");
    near(
        primary.latency.p95_ms,
        1_000.0,
        HDR_TOLERANCE,
        "primary p95",
    );
    near(
        primary.latency.p99_ms,
        1_000.0,
        HDR_TOLERANCE,
        "primary p99",
    );
    assert_eq!(primary.latency.max_ms, Some(1_000.0));
    // Down 120–210 s and 480–540 s: 150 s of 600 → uptime 75%; two
    // outages, both repaired; MTTR (90 + 60) / 2 = 75 s.
    near(
        Some(primary.availability.uptime),
        0.75,
        1e-12,
        "primary uptime",
    );
    assert_eq!(primary.availability.down_ms, 150_000.0);
    assert_eq!(
        (
            primary.availability.outages,
            primary.availability.recoveries
        ),
        (2, 2)
    );
    assert_eq!(primary.availability.mttr_ms, Some(75_000.0));
    assert!(!primary.availability.down_at_end);
    // Primary failed first in every fallback-answered request (A and B).
    assert_eq!(primary.fallback_recoveries, 25);
    near(
        primary.time_to_fallback_ms,
        662.0,
        1e-9,
        "primary time to fallback",
    );
    assert_eq!((primary.switches, primary.unnecessary_switches), (3, 1));
    assert_eq!(
        (primary.input_tokens, primary.output_tokens),
        (7_100, 3_550)
    );
    near(Some(primary.cost), 0.142, 1e-9, "primary cost");

    let backup = report
        .providers
        .iter()
        .find(|p| p.name == "backup")
        .unwrap();
    // A 15 ok, B 10 ok, C 2 × 429, D 2 × 5xx.
    assert_eq!((backup.attempts, backup.ok), (29, 25));
    assert_eq!(
        backup.errors,
        BTreeMap::from([("429".to_owned(), 2), ("5xx".to_owned(), 2)])
    );
    // Ascending: 50 50 (C), 100 100 (D), 500..=640 (A, ranks 5–19),
    // 800 ×10 (B, 20–29). p50 = rank ⌈14.5⌉ = 15 = A's 11th = 600 ms;
    // p95 = rank ⌈27.55⌉ = 28 → 800; p99 = rank 29 → 800.
    near(backup.latency.p50_ms, 600.0, HDR_TOLERANCE, "backup p50");
    near(backup.latency.p95_ms, 800.0, HDR_TOLERANCE, "backup p95");
    near(backup.latency.p99_ms, 800.0, HDR_TOLERANCE, "backup p99");
    // Degraded is not down.
    assert_eq!(backup.availability.uptime, 1.0);
    assert_eq!(
        (backup.availability.outages, backup.availability.mttr_ms),
        (0, None)
    );
    assert_eq!((backup.switches, backup.unnecessary_switches), (3, 0));
    near(Some(backup.cost), 0.05, 1e-9, "backup cost");
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreSettings::default()).unwrap()
}

#[test]
fn the_report_matches_the_hand_worked_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    scenario(&store, T0_MS);
    let report = build(&store, &options()).unwrap();
    assert_eq!(report.sources.aggregates, 0);
    // 100 requests + 129 attempts + 6 switches + 1 verdict.
    assert_eq!(report.sources.raw_events, 236);
    assert_hand_worked_figures(&report);
    let table = report.to_table();
    assert!(
        table.contains("primary") && table.contains("75.00%"),
        "{table}"
    );
}

#[test]
fn a_period_spanning_compacted_minutes_reports_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    scenario(&store, T0_MS);
    let before = build(&store, &options()).unwrap();
    let telemetry = Telemetry::new(&store).unwrap();
    // Fold the first five minutes of the period (and the one before it).
    let stats = telemetry.compact(T0_NS + 5 * MINUTE_NS).unwrap();
    assert!(stats.events > 100, "{stats:?}");
    let after = build(&store, &options()).unwrap();
    assert!(after.sources.aggregates > 0);
    assert!(after.sources.raw_events < before.sources.raw_events);
    assert_hand_worked_figures(&after);
    let strip = |mut r: Report| {
        r.sources = Default::default();
        r
    };
    assert_eq!(strip(after), strip(before));
}

fn baton(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STATE")
        .output()
        .expect("the baton binary runs")
}

#[test]
fn the_binary_reports_and_compacts_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The scenario, moved to start 20 minutes ago.
    let now_ms = baton::store::journal::now_ms();
    let t0_ms = now_ms - 20 * 60_000;
    {
        let store = open(&state);
        scenario(&store, t0_ms);
        store.flush().unwrap();
    }
    std::fs::write(
        dir.path().join("baton.toml"),
        r#"default_route = "default"

[report]
slo = 0.98

[providers.primary]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "m"

[providers.backup]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "m"

[routes.default]
chain = ["primary", "backup"]
sla_p95 = "1s"
"#,
    )
    .unwrap();
    let state_arg = state.to_str().unwrap();

    let output = baton(
        &["--state", state_arg, "report", "--since", "1h", "--json"],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The hour holds the whole scenario, both outliers included (they are
    // inside it now): 102 requests.
    assert_eq!(json["totals"]["requests"], 102, "{json:#}");
    assert_eq!(json["slo"], 0.98);
    let route = &json["routes"][0];
    assert_eq!(route["name"], "default");
    assert_eq!(route["sla_p95_ms"], 1000.0);
    assert_eq!(route["fallbacks"], 25);
    // Missed 3 of 102 against 2% allowed: 1 − 3/2.04.
    let left = route["error_budget_left"].as_f64().unwrap();
    assert!((left - (1.0 - 3.0 / 2.04)).abs() < 1e-9, "{left}");

    let table = baton(&["--state", state_arg, "report"], dir.path());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    if std::env::var_os("SHOW_REPORT").is_some() {
        eprintln!("{text}");
    }
    // 87 of the 102 requests within 1 s.
    for needle in [
        "PROVIDER",
        "ROUTE",
        "primary",
        "backup",
        "default",
        "85.29% within 1.00s",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }

    // Keep 15 minutes of raw events: about the first five minutes of the
    // scenario are folded, and the report over the hour does not change.
    let compact = baton(
        &[
            "--state", state_arg, "store", "compact", "--keep", "15m", "--json",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&compact.stdout);
    assert!(
        compact.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&compact.stderr)
    );
    let done: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(done["events_folded"].as_u64().unwrap() > 50, "{done:#}");
    assert!(done["raw_events_left"].as_u64().unwrap() > 50, "{done:#}");
    let again = baton(
        &["--state", state_arg, "report", "--since", "1h", "--json"],
        dir.path(),
    );
    let mut after: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let mut before = json;
    assert!(
        after["sources"]["aggregates"].as_u64().unwrap() > 0,
        "{after:#}"
    );
    // The period moved on a little: only uptime depends on its length.
    for report in [&mut after, &mut before] {
        for key in ["since", "until", "sources", "period_s"] {
            report.as_object_mut().unwrap().remove(key);
        }
        for provider in report["providers"].as_array_mut().unwrap() {
            provider.as_object_mut().unwrap().remove("uptime");
            provider.as_object_mut().unwrap().remove("down_ms");
        }
    }
    assert_eq!(after, before);

    // Once a policy is applied, its targets serve, not the file's.
    let config = dir.path().join("baton.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("slo = 0.98", "slo = 0.95")).unwrap();
    let apply = baton(
        &["--state", state_arg, "policy", "apply", "-m", "looser"],
        dir.path(),
    );
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    std::fs::write(&config, text.replace("slo = 0.98", "slo = 0.5")).unwrap();
    let served = baton(&["--state", state_arg, "report", "--json"], dir.path());
    let served: serde_json::Value = serde_json::from_slice(&served.stdout).unwrap();
    assert_eq!(served["slo"], 0.95);
}
