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

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

const DEFAULT_RATES: &str = "500,1000,2000,5000,10000,15000";
const WARM_UP: Duration = Duration::from_millis(500);
const MAX_MEASURED: u64 = 150_000;
/// A rate is sustained when at least this share of it completes OK per
/// second...
const SUSTAINED_SHARE: f64 = 0.95;
/// ...and at most this share of its requests fail or time out.
const MAX_FAILED_SHARE: f64 = 0.01;
/// The single user message every request carries (one prompt, so the
/// mock's per-prompt statistics stay one entry).
const BODY_DIRECT: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Where is my parcel?"}]}"#;
const BODY_BATON: &str =
    r#"{"model":"main","messages":[{"role":"user","content":"Where is my parcel?"}]}"#;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A child process, killed when dropped.
struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Reads `pipe` line by line on a thread (so the child never blocks on a
/// full pipe) until a line contains `marker`; returns what follows it.
fn wait_for_line(
    pipe: impl std::io::Read + Send + 'static,
    marker: &'static str,
    what: &str,
) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what} did not start:\n{}", seen.join("\n")));
        if let Some(rest) = line.split(marker).nth(1) {
            return rest.split_whitespace().next().unwrap_or("").to_owned();
        }
        seen.push(line);
    }
}

/// `baton mock-provider` on a free port: zero latency, 8-token answers.
fn start_mock(dir: &Path, pin: bool) -> (Process, String) {
    let script = dir.join("mock.toml");
    std::fs::write(&script, "[server]\nanswer_tokens = 8\n").expect("mock script");
    let mut child = baton_command(pin)
        .args(["mock-provider", "--addr", "127.0.0.1:0", "--script"])
        .arg(&script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("baton mock-provider starts");
    let stdout = child.stdout.take().expect("stdout");
    let process = Process {
        child,
        name: "mock",
    };
    let addr = wait_for_line(stdout, "listening on ", "baton mock-provider");
    (process, addr)
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

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time a process has used (user + system), in clock ticks.
fn process_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    tick(11).unwrap_or(0) + tick(12).unwrap_or(0)
}

/// Busy ticks of the whole host (every CPU).
fn host_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum()
}

/// CPU ticks of the generator, the mock, Baton and the host at one instant.
#[derive(Clone, Copy)]
struct Ticks {
    at: Instant,
    generator: u64,
    mock: u64,
    baton: u64,
    host: u64,
}

impl Ticks {
    fn now(mock: u32, baton: Option<u32>) -> Ticks {
        Ticks {
            at: Instant::now(),
            generator: process_ticks("self"),
            mock: process_ticks(&mock.to_string()),
            baton: baton.map_or(0, |pid| process_ticks(&pid.to_string())),
            host: host_ticks(),
        }
    }
}

/// Per cent of one core used between two readings (100 ticks a second).
fn cpu_share(ticks: u64, over: Duration) -> f64 {
    ticks as f64 / over.as_secs_f64()
}

/// The keep-alive connections to one target.
struct Pool {
    addr: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    slots: tokio::sync::Semaphore,
    opened: AtomicUsize,
}

impl Pool {
    fn new(addr: &str, connections: usize) -> Pool {
        Pool {
            addr: addr.to_owned(),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(connections),
            opened: AtomicUsize::new(0),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// Sends one request on an idle connection (or a new one) and reads the
    /// whole answer; the connection goes back to the pool only if the
    /// exchange completed.
    async fn send(&self, path: &'static str, body: &Bytes) -> Result<StatusCode, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let reused = self.idle.lock().expect("pool").pop();
        let mut sender = match reused {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let request = Request::post(path)
            .header(header::HOST, &self.addr)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        self.idle.lock().expect("pool").push(sender);
        Ok(status)
    }
}

/// What the requests of one step came to.
struct Record {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ok: u64,
    errors: u64,
    timeouts: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

impl Record {
    fn new() -> Record {
        let histogram = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        Record {
            latency: histogram(),
            lag: histogram(),
            ok: 0,
            errors: 0,
            timeouts: 0,
            first_error: None,
            last_done: None,
        }
    }
}

/// One step's results.
struct Step {
    rate: u64,
    sent: u64,
    achieved: f64,
    ok: u64,
    errors: u64,
    timeouts: u64,
    /// p50, p99, p99.9 from the scheduled time, in µs.
    latency: [u64; 3],
    lag_p99: u64,
    first_error: Option<String>,
    /// Per cent of one core: generator, mock, Baton, the rest of the host.
    cpu: [f64; 4],
    /// CPU time per request (warm-up included), in µs: mock, Baton.
    cpu_per_request: [f64; 2],
}

impl Step {
    fn failed_share(&self) -> f64 {
        (self.errors + self.timeouts) as f64 / self.sent.max(1) as f64
    }

    /// Kept up with: nearly the whole rate answered OK per second, few
    /// failures, and no standing queue (p99 within `max_p99`).
    fn sustained(&self, max_p99: Duration) -> bool {
        self.achieved >= SUSTAINED_SHARE * self.rate as f64
            && self.failed_share() <= MAX_FAILED_SHARE
            && self.latency[1] <= max_p99.as_micros() as u64
    }
}

struct Target {
    name: &'static str,
    addr: String,
    body: Bytes,
    /// `baton serve`'s pid (none for the mock itself).
    serve: Option<u32>,
}

/// A target's ladder in short: its name, the highest rate it sustained,
/// and `baton serve`'s memory (RSS, HWM in MiB) idle and after the ladder.
type Summary = (
    &'static str,
    Option<u64>,
    Option<(f64, f64)>,
    Option<(f64, f64)>,
);

struct Settings {
    seconds: f64,
    timeout: Duration,
    connections: usize,
    max_p99: Duration,
}

/// One step: a warm-up then the measured requests at `rate`, on a fixed
/// schedule kept by a thread of its own (`thread::sleep` wakes within tens
/// of microseconds, where Tokio's timer has a millisecond's grain).
async fn step(
    pool: &Arc<Pool>,
    target: &Target,
    rate: u64,
    settings: &Settings,
    mock_pid: u32,
) -> Step {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let warm = (WARM_UP.as_secs_f64() * rate as f64).round() as u64;
    let measured = ((settings.seconds * rate as f64).round() as u64).clamp(1, MAX_MEASURED);
    let record = Arc::new(Mutex::new(Record::new()));
    let runtime = tokio::runtime::Handle::current();
    let timeout = settings.timeout;
    let body = target.body.clone();
    let pacer_pool = pool.clone();
    let pacer_record = record.clone();
    let before = Ticks::now(mock_pid, target.serve);
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity((warm + measured) as usize);
        for i in 0..warm + measured {
            let scheduled = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let pool = pacer_pool.clone();
            let record = pacer_record.clone();
            let body = body.clone();
            let counted = i >= warm;
            tasks.push(runtime.spawn(async move {
                let lag = scheduled.elapsed();
                let result = tokio::time::timeout_at(
                    (scheduled + timeout).into(),
                    pool.send("/v1/chat/completions", &body),
                )
                .await;
                let done = Instant::now();
                if !counted {
                    return;
                }
                let mut record = record.lock().expect("record");
                record.lag.saturating_record(lag.as_micros() as u64);
                match result {
                    Ok(Ok(StatusCode::OK)) => {
                        record.ok += 1;
                        record
                            .latency
                            .saturating_record((done - scheduled).as_micros() as u64);
                        record.last_done = Some(done);
                    }
                    Ok(Ok(status)) => {
                        record.errors += 1;
                        record
                            .first_error
                            .get_or_insert_with(|| format!("status {status}"));
                    }
                    Ok(Err(error)) => {
                        record.errors += 1;
                        record.first_error.get_or_insert(error);
                    }
                    Err(_) => record.timeouts += 1,
                }
            }));
        }
        tasks
    });
    let tasks = tokio::task::spawn_blocking(move || pacer.join().expect("pacer"))
        .await
        .expect("pacer");
    for task in tasks {
        let _ = task.await;
    }
    let after = Ticks::now(mock_pid, target.serve);
    let record = std::mem::replace(&mut *record.lock().expect("record"), Record::new());
    let first_measured = start + interval.mul_f64(warm as f64);
    let last_scheduled = start + interval.mul_f64((warm + measured - 1) as f64);
    // OK answers per second over the measured schedule, or until the last
    // of them came back if that was later (a backlog stretches it).
    let span = record
        .last_done
        .map_or(last_scheduled, |done| done.max(last_scheduled))
        .saturating_duration_since(first_measured)
        .max(interval.mul_f64((measured.max(2) - 1) as f64));
    let over = after.at - before.at;
    let ours = |a: u64, b: u64| b.saturating_sub(a);
    let generator = ours(before.generator, after.generator);
    let mock = ours(before.mock, after.mock);
    let baton = ours(before.baton, after.baton);
    let other = ours(before.host, after.host).saturating_sub(generator + mock + baton);
    let q = |p: f64| record.latency.value_at_quantile(p);
    Step {
        rate,
        sent: measured,
        achieved: record.ok as f64 / span.as_secs_f64(),
        ok: record.ok,
        errors: record.errors,
        timeouts: record.timeouts,
        latency: [q(0.50), q(0.99), q(0.999)],
        lag_p99: record.lag.value_at_quantile(0.99),
        first_error: record.first_error,
        cpu_per_request: [
            mock as f64 * 10_000.0 / (warm + measured) as f64,
            baton as f64 * 10_000.0 / (warm + measured) as f64,
        ],
        cpu: [
            cpu_share(generator, over),
            cpu_share(mock, over),
            cpu_share(baton, over),
            cpu_share(other, over),
        ],
    }
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

fn pin_self() {
    let pid = std::process::id().to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("BATON_BENCH_PIN: taskset failed; running unpinned");
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
