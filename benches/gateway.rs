//! Benchmark: `baton serve` under open-loop load — what the gateway adds to
//! a request's latency, and the highest rate it sustains.
//!
//! An open-loop generator sends non-streaming chat completions on a fixed
//! schedule (request i at `start + i / rate`, whatever has come back), so a
//! server (or a client) that falls behind shows as queueing in the latency:
//! each latency is measured from the request's *scheduled* send time, not
//! from when it went out (no coordinated omission). Requests go over a pool
//! of keep-alive HTTP/1.1 connections (hyper; at most
//! `BATON_BENCH_CONNECTIONS`, opened as needed and kept) and each has a
//! deadline (`BATON_BENCH_TIMEOUT_MS` after its scheduled time, waiting for
//! a connection included); one that misses it counts as a timeout.
//!
//! Three targets in the same run, each over the same ladder of rates:
//! 1. `direct`: the zero-latency mock upstream itself;
//! 2. `flush`: `baton serve` in front of that mock (a route over it), the
//!    journal on in its default durability (each request's records flushed
//!    before it is answered);
//! 3. `relaxed`: the same with `[store] durability = "relaxed"`.
//!
//! The mock runs as its own process (`baton mock-provider`), as `baton
//! serve` does, so that the generator's process only generates load: its
//! runtime is not slowed by answering requests (the `lag` column, how late
//! requests actually left, is the generator's own health), and each
//! process's CPU time is read apart from the others in `/proc`.
//!
//! Each step runs a warm-up of 0.5 s and then `BATON_BENCH_SECONDS` of
//! measured requests at the step's rate (at most 150,000), then waits for
//! every request to end (bounded by the timeout). A target's ladder stops
//! at the first rate it does not sustain: fewer than 95 % of the rate
//! completed successfully per second, more than 1 % errors or timeouts, or
//! a standing queue (p99 over `BATON_BENCH_MAX_P99_MS`, default 100 ms).
//!
//! Printed per target and rate: achieved rate, ok / error / timeout shares,
//! p50, p99, p99.9 from the scheduled time, the generator's p99 lag, and
//! for Baton the added p50 and p99 (Baton − direct at the same rate) and
//! the ratio p99(Baton) / p99(direct); then the CPU each process used (per
//! cent of one core) and what the rest of the host used meanwhile (`other`:
//! anything else running, such as a build, skews every figure), and the
//! CPU time the mock and Baton spent per request (100 Hz ticks: coarse at
//! low rates). Then the
//! highest sustained rate per target, `baton serve`'s memory (VmRSS and
//! VmHWM from `/proc/PID/status`: idle, and after its ladder), and whether
//! the issue's floor (added p99 under 1 ms at 2,000 req/s; ≥ 10,000 req/s
//! sustained) and goal (added p99 under 0.3 ms at 5,000 req/s) are met.
//! Nothing asserts timings.
//!
//! Run: `cargo bench --bench gateway`. Knobs: `BATON_BENCH_RATES` (default
//! `500,1000,2000,5000,10000,15000`), `BATON_BENCH_SECONDS` (3),
//! `BATON_BENCH_CONNECTIONS` (256), `BATON_BENCH_TIMEOUT_MS` (2000),
//! `BATON_BENCH_MAX_P99_MS` (100),
//! `BATON_BENCH_TARGETS` (`direct,flush,relaxed`), and `BATON_BENCH_PIN=1`
//! to pin the generator to CPU 0 and the mock and `baton serve` to CPU 1
//! (with `taskset`; Linux only).

#[path = "support/load.rs"]
mod load;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use load::{
    Pool, Process, Settings, Step, Target, WARM_UP, env_or, memory, pin_self, spawn_mock, step,
    wait_for_line,
};

const DEFAULT_RATES: &str = "500,1000,2000,5000,10000,15000";

/// A target's ladder in short: its name, the highest rate it sustained,
/// and `baton serve`'s memory (RSS, HWM in MiB) idle and after the ladder.
type Summary = (
    &'static str,
    Option<u64>,
    Option<(f64, f64)>,
    Option<(f64, f64)>,
);
/// The single user message every request carries (one prompt, so the
/// mock's per-prompt statistics stay one entry).
const BODY_DIRECT: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Where is my parcel?"}]}"#;
const BODY_BATON: &str =
    r#"{"model":"main","messages":[{"role":"user","content":"Where is my parcel?"}]}"#;

fn baton_command(pin: bool) -> Command {
    let mut command = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", env!("CARGO_BIN_EXE_baton")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_baton"))
    };
    command
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STATE")
        .env_remove("BATON_LOG")
        .env_remove("RUST_LOG");
    command
}

/// `baton mock-provider` on a free port: zero latency, 8-token answers.
fn start_mock(dir: &Path, pin: bool) -> (Process, String) {
    let script = dir.join("mock.toml");
    std::fs::write(&script, "[server]\nanswer_tokens = 8\n").expect("mock script");
    let mut command = baton_command(pin);
    command.current_dir(dir);
    spawn_mock(command, &script, "mock")
}

/// `baton serve` on a free port with a route `main` over the mock.
fn start_serve(dir: &Path, mock: &str, durability: &str, pin: bool) -> (Process, String) {
    let config = format!(
        r#"default_route = "main"
[defaults]
retries = 0
final_fallbacks = []
[providers.mock]
kind = "openai"
model = "m"
base_url = "http://{mock}/v1"
capabilities = ["chat", "streaming"]
probe = {{ interval = "60s", kind = "none" }}
[routes.main]
chain = ["mock"]
[store]
durability = "{durability}"
"#
    );
    std::fs::write(dir.join("baton.toml"), config).expect("baton.toml");
    let mut child = baton_command(pin)
        .arg("--config")
        .arg(dir.join("baton.toml"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let process = Process {
        child,
        name: "baton serve",
    };
    let port = wait_for_line(stderr, "listening on http://127.0.0.1:", "baton serve");
    (process, format!("127.0.0.1:{port}"))
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn signed_ms(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}

fn print_header(baton: bool) {
    print!(
        "{:>7} {:>9} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7}",
        "rate", "achieved", "ok%", "err%", "tmo%", "p50 ms", "p99 ms", "p99.9 ms", "lag99"
    );
    if baton {
        print!(" {:>8} {:>8} {:>6}", "+p50 ms", "+p99 ms", "p99×");
    }
    println!("   cpu% gen/mock/baton/other   cpu µs/req mock/baton");
}

/// `direct`: `None` for the direct target itself, `Some(None)` when the
/// direct target did not run this rate.
fn print_step(step: &Step, direct: Option<Option<&Step>>, max_p99: Duration) {
    let share = |n: u64| 100.0 * n as f64 / step.sent.max(1) as f64;
    print!(
        "{:>7} {:>9.0} {:>6.2} {:>6.2} {:>6.2} {:>8} {:>8} {:>8} {:>7}",
        step.rate,
        step.achieved,
        share(step.ok),
        share(step.errors),
        share(step.timeouts),
        ms(step.latency[0]),
        ms(step.latency[1]),
        ms(step.latency[2]),
        ms(step.lag_p99),
    );
    match direct {
        Some(Some(direct)) => {
            let added = |i: usize| step.latency[i] as i64 - direct.latency[i] as i64;
            print!(
                " {:>8} {:>8} {:>6.2}",
                signed_ms(added(0)),
                signed_ms(added(1)),
                step.latency[1] as f64 / direct.latency[1].max(1) as f64
            );
        }
        Some(None) => print!(" {:>8} {:>8} {:>6}", "-", "-", "-"),
        None => {}
    }
    println!(
        "   {:>26}   {:>19}{}",
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}",
            step.cpu[0], step.cpu[1], step.cpu[2], step.cpu[3]
        ),
        format!(
            "{:.0}/{:.0}",
            step.cpu_per_request[0], step.cpu_per_request[1]
        ),
        if step.sustained(max_p99) {
            ""
        } else {
            "  (not sustained)"
        }
    );
    if let Some(error) = &step.first_error {
        println!("        first error: {error}");
    }
}

fn main() {
    let pin = std::env::var("BATON_BENCH_PIN").is_ok_and(|v| v == "1");
    if pin {
        // Before any thread exists, so that every thread inherits it.
        pin_self();
    }
    let rates: Vec<u64> = std::env::var("BATON_BENCH_RATES")
        .unwrap_or_else(|_| DEFAULT_RATES.to_owned())
        .split(',')
        .filter_map(|r| r.trim().replace('_', "").parse().ok())
        .filter(|&r| r > 0)
        .collect();
    let settings = Settings {
        seconds: env_or("BATON_BENCH_SECONDS", 3.0_f64).max(0.1),
        timeout: Duration::from_millis(env_or("BATON_BENCH_TIMEOUT_MS", 2_000_u64).max(1)),
        connections: env_or("BATON_BENCH_CONNECTIONS", 256_usize).max(1),
        max_p99: Duration::from_millis(env_or("BATON_BENCH_MAX_P99_MS", 100_u64).max(1)),
    };
    let wanted =
        std::env::var("BATON_BENCH_TARGETS").unwrap_or_else(|_| "direct,flush,relaxed".into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if pin { 1 } else { 2 })
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir");
    let (mock, mock_addr) = start_mock(dir.path(), pin);
    println!(
        "open loop, non-streaming chat completions to a zero-latency mock (8-token answers); \
         {} s per rate after a {} ms warm-up; {} connections at most; timeout {} ms; {}",
        settings.seconds,
        WARM_UP.as_millis(),
        settings.connections,
        settings.timeout.as_millis(),
        if pin {
            "generator on CPU 0, mock and baton serve on CPU 1"
        } else {
            "unpinned"
        }
    );
    println!(
        "latencies from the scheduled send time; lag99 = p99 of how late requests left the generator; \
         + = Baton − direct at the same rate; p99× = p99(Baton) / p99(direct)\n"
    );
    let mut direct_steps: Vec<Step> = Vec::new();
    let mut summary: Vec<Summary> = Vec::new();
    let mut verdicts: Vec<String> = Vec::new();
    for name in ["direct", "flush", "relaxed"] {
        if !wanted.contains(&name) {
            continue;
        }
        let serve_dir = tempfile::tempdir_in(dir.path()).expect("serve dir");
        let mut serve =
            (name != "direct").then(|| start_serve(serve_dir.path(), &mock_addr, name, pin));
        let target = Target {
            name,
            addr: serve
                .as_ref()
                .map_or(mock_addr.clone(), |(_, addr)| addr.clone()),
            body: Bytes::from_static(if name == "direct" {
                BODY_DIRECT.as_bytes()
            } else {
                BODY_BATON.as_bytes()
            }),
            serve: serve.as_ref().map(|(process, _)| process.pid()),
        };
        let idle = target.serve.and_then(memory);
        println!(
            "== {} ==",
            match name {
                "direct" => "direct: the mock itself",
                "flush" => "baton serve, journal durability flush (the default)",
                _ => "baton serve, journal durability relaxed",
            }
        );
        print_header(name != "direct");
        let pool = Arc::new(Pool::new(&target.addr, settings.connections));
        let mut highest = None;
        let mut steps = Vec::new();
        for &rate in &rates {
            let result = runtime.block_on(step(&pool, &target, rate, &settings, mock.pid()));
            let direct = direct_steps.iter().find(|d| d.rate == rate);
            print_step(
                &result,
                (name != "direct").then_some(direct),
                settings.max_p99,
            );
            let sustained = result.sustained(settings.max_p99);
            if sustained {
                highest = Some(rate);
            }
            steps.push(result);
            if !sustained {
                break;
            }
        }
        println!(
            "   ({} connections opened)\n",
            pool.opened.load(Ordering::Relaxed)
        );
        let after = target.serve.and_then(memory);
        if let Some((process, _)) = &mut serve
            && let Ok(Some(status)) = process.child.try_wait().map(|s| s.map(|s| s.to_string()))
        {
            println!("   {} exited: {status}", process.name);
        }
        if name != "direct" {
            let added_p99 = |rate: u64| {
                let baton = steps
                    .iter()
                    .find(|s| s.rate == rate && s.sustained(settings.max_p99))?;
                let direct = direct_steps.iter().find(|s| s.rate == rate)?;
                Some(baton.latency[1] as i64 - direct.latency[1] as i64)
            };
            let check = |rate: u64, bound_us: i64| match added_p99(rate) {
                Some(added) => format!(
                    "added p99 {} ms at {rate} req/s: {}",
                    signed_ms(added),
                    if added < bound_us { "met" } else { "NOT met" }
                ),
                None => format!("added p99 at {rate} req/s: not measured (or not sustained)"),
            };
            let rate_met = highest.is_some_and(|h| h >= 10_000);
            verdicts.push(format!(
                "{name}: floor: {}; {} req/s sustained: {}. goal: {}",
                check(2_000, 1_000),
                highest.map_or("none".to_owned(), |h| h.to_string()),
                if rate_met {
                    "≥ 10,000, met"
                } else {
                    "< 10,000, NOT met"
                },
                check(5_000, 300),
            ));
        }
        summary.push((target.name, highest, idle, after));
        if name == "direct" {
            direct_steps = steps;
        }
        drop(serve);
    }
    println!("== summary ==");
    println!(
        "{:>8} {:>16} {:>20} {:>24}",
        "target", "highest sustained", "idle RSS/HWM MiB", "after ladder RSS/HWM MiB"
    );
    let mib = |m: Option<(f64, f64)>| {
        m.map_or("-".to_owned(), |(rss, hwm)| format!("{rss:.1} / {hwm:.1}"))
    };
    let direct_highest = summary.iter().find(|s| s.0 == "direct").and_then(|s| s.1);
    for (name, highest, idle, after) in &summary {
        let ratio = match (highest, direct_highest) {
            (Some(h), Some(d)) if *name != "direct" => {
                format!(" ({:.0} % of direct)", 100.0 * *h as f64 / d as f64)
            }
            _ => String::new(),
        };
        println!(
            "{:>8} {:>16} {:>20} {:>24}{ratio}",
            name,
            highest.map_or("none".to_owned(), |h| format!("{h} req/s")),
            mib(*idle),
            mib(*after),
        );
    }
    if let Some(rate) = rates.last()
        && direct_highest == Some(*rate)
    {
        println!(
            "(direct sustained the top of the ladder: the mock and generator are not the limit below it)"
        );
    }
    println!();
    for verdict in verdicts {
        println!("{verdict}");
    }
    drop(mock);
}
