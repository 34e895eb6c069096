//! What the load benchmarks share: child processes, CPU and memory
//! readings from `/proc`, keep-alive HTTP/1.1 connection pools, and the
//! open-loop step (a fixed schedule of requests, latency measured from
//! each request's scheduled time). Included by `benches/gateway.rs` and
//! `benches/compare/main.rs` with `#[path]`; each uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
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

pub const WARM_UP: Duration = Duration::from_millis(500);
pub const MAX_MEASURED: u64 = 150_000;
/// A rate is sustained when at least this share of it completes OK per
/// second...
pub const SUSTAINED_SHARE: f64 = 0.95;
/// ...and at most this share of its requests fail or time out.
pub const MAX_FAILED_SHARE: f64 = 0.01;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A child process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub name: &'static str,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line on a thread (so the child never blocks on a
/// full pipe) until a line contains `marker`; returns what follows it.
pub fn wait_for_line(
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

/// `VmRSS` and `VmHWM` of a process, in MiB.
pub fn memory(pid: u32) -> Option<(f64, f64)> {
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
pub fn process_ticks(pid: &str) -> u64 {
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
pub fn host_ticks() -> u64 {
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
pub struct Ticks {
    pub at: Instant,
    pub generator: u64,
    pub mock: u64,
    pub baton: u64,
    pub host: u64,
}

impl Ticks {
    pub fn now(mock: u32, baton: Option<u32>) -> Ticks {
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
pub fn cpu_share(ticks: u64, over: Duration) -> f64 {
    ticks as f64 / over.as_secs_f64()
}

/// The keep-alive connections to one target.
pub struct Pool {
    pub addr: String,
    pub idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    pub slots: tokio::sync::Semaphore,
    pub opened: AtomicUsize,
    /// Sent with every request (a peer's key or routing config).
    pub headers: Vec<(String, String)>,
}

impl Pool {
    pub fn new(addr: &str, connections: usize) -> Pool {
        Pool {
            addr: addr.to_owned(),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(connections),
            opened: AtomicUsize::new(0),
            headers: Vec::new(),
        }
    }

    pub fn with_headers(mut self, headers: &[(String, String)]) -> Pool {
        self.headers = headers.to_vec();
        self
    }

    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
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
    pub async fn send(&self, path: &'static str, body: &Bytes) -> Result<StatusCode, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let reused = self.idle.lock().expect("pool").pop();
        let mut sender = match reused {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let mut request = Request::post(path)
            .header(header::HOST, &self.addr)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
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
pub struct Record {
    pub latency: Histogram<u64>,
    pub lag: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub first_error: Option<String>,
    pub last_done: Option<Instant>,
}

impl Record {
    pub fn new() -> Record {
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
pub struct Step {
    pub rate: u64,
    pub sent: u64,
    pub achieved: f64,
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// p50, p99, p99.9 from the scheduled time, in µs.
    pub latency: [u64; 3],
    pub lag_p99: u64,
    pub first_error: Option<String>,
    /// Per cent of one core: generator, mock, Baton, the rest of the host.
    pub cpu: [f64; 4],
    /// CPU time per request (warm-up included), in µs: mock, Baton.
    pub cpu_per_request: [f64; 2],
}

impl Step {
    pub fn failed_share(&self) -> f64 {
        (self.errors + self.timeouts) as f64 / self.sent.max(1) as f64
    }

    /// Kept up with: nearly the whole rate answered OK per second, few
    /// failures, and no standing queue (p99 within `max_p99`).
    pub fn sustained(&self, max_p99: Duration) -> bool {
        self.achieved >= SUSTAINED_SHARE * self.rate as f64
            && self.failed_share() <= MAX_FAILED_SHARE
            && self.latency[1] <= max_p99.as_micros() as u64
    }
}

pub struct Target {
    pub name: &'static str,
    pub addr: String,
    pub body: Bytes,
    /// `baton serve`'s pid (none for the mock itself).
    pub serve: Option<u32>,
}

pub struct Settings {
    pub seconds: f64,
    pub timeout: Duration,
    pub connections: usize,
    pub max_p99: Duration,
}

/// One step: a warm-up then the measured requests at `rate`, on a fixed
/// schedule kept by a thread of its own (`thread::sleep` wakes within tens
/// of microseconds, where Tokio's timer has a millisecond's grain).
pub async fn step(
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

/// Pins this process (every thread) to CPU 0.
pub fn pin_self() {
    let pid = std::process::id().to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("BATON_BENCH_PIN: taskset failed; running unpinned");
    }
}

/// Starts `baton mock-provider` on a free port with `script`, through
/// `command` (the binary, maybe under `taskset`); returns it and its
/// address.
pub fn spawn_mock(
    mut command: Command,
    script: &std::path::Path,
    name: &'static str,
) -> (Process, String) {
    let mut child = command
        .args(["mock-provider", "--addr", "127.0.0.1:0", "--script"])
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("baton mock-provider starts");
    let stdout = child.stdout.take().expect("stdout");
    let addr = wait_for_line(stdout, "listening on ", "baton mock-provider");
    (Process { child, name }, addr)
}
