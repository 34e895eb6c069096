//! The store's two throughput targets.
//!
//! (a) Durable journal writes: N concurrent writers on a two-thread Tokio
//!     runtime, each looping `accept` → `store.durable().await` → `finish`
//!     → `store.durable().await`
//!     (the request's life as the supervisor writes it), with durability
//!     `flush` (group commit). Records per second = finished requests per
//!     second. Target: ≥ 20,000 records/s on 2 cores.
//! (b) `baton report`'s computation over 1,000,000 raw telemetry events
//!     (250,000 requests of four events each: the request and three
//!     attempts), no aggregates, with 1 and 2 scanning threads. Target:
//!     under 2 s. Run with the default `[store] cache_mib` (256), then
//!     again at 64 MiB to show what a cache smaller than the events costs
//!     (sled pages every leaf in and out: the scan is then 2–3× slower).
//!
//! Run: `cargo bench --bench store`. `BATON_BENCH_SECONDS` sets how long
//! each concurrency level of (a) runs (default 3), `BATON_BENCH_WRITERS`
//! the levels (`1,16,64`), `BATON_BENCH_PART` one part only (`a` or `b`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton::store::journal::{AttemptEntry, Ending, Journal, JournalRecord, RequestState};
use baton::store::telemetry::{MINUTE_NS, Telemetry};
use baton::store::{Durability, Store, StoreSettings};
use baton::telemetry::report::{ReportOptions, build};
use baton::trace::TraceId;

const CONCURRENCY: [usize; 5] = [1, 16, 64, 256, 1024];
const REPORT_REQUESTS: u64 = 250_000;

fn attempt(provider: &str, latency_ms: f64, outcome: &str) -> AttemptEntry {
    AttemptEntry {
        worker: Some("billing".into()),
        provider: provider.into(),
        reason: "primary".into(),
        started_ms: 0.0,
        latency_ms,
        outcome: outcome.into(),
        error: None,
        status: None,
        input_tokens: 420,
        output_tokens: 180,
        cost: 0.0021,
        cancelled: false,
    }
}

fn journal_writes(seconds: u64, levels: &[usize]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "(a) durable journal writes: accept → durable → finish, group commit, 2 worker threads"
    );
    for &writers in levels {
        let dir = tempfile::tempdir().expect("state dir");
        let (finished, elapsed) = runtime.block_on(async {
            let settings = StoreSettings {
                durability: Durability::Flush,
                ..StoreSettings::default()
            };
            let store = Store::open(dir.path(), &settings).expect("store");
            let journal = Journal::new(&store).expect("journal");
            let stop = Arc::new(AtomicBool::new(false));
            let finished = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let (store, journal) = (store.clone(), journal.clone());
                    let (stop, finished) = (stop.clone(), finished.clone());
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let mut record = JournalRecord::accepted(
                                TraceId::new(),
                                "Why was I charged twice for my subscription this month?",
                            );
                            record.swarm = Some("support-bot".into());
                            record.route = Some("support".into());
                            record.session = Some(format!("session-{w}"));
                            journal.accept(&record).expect("accept");
                            store.durable().await.expect("durable");
                            journal
                                .finish(
                                    record.trace_id,
                                    None,
                                    Ending::Completed {
                                        chain: vec!["billing".into()],
                                        attempts: vec![attempt("anthropic-sonnet", 812.0, "ok")],
                                        served_by: "provider:anthropic-sonnet".into(),
                                        fallback: false,
                                        degraded: false,
                                        refusal: false,
                                        needs_review: false,
                                        answer: "You were charged once for the plan and once for the upgrade; \
                                                 the second charge is prorated."
                                            .into(),
                                    },
                                )
                                .expect("finish");
                            // The supervisor answers only once the end is on disk too.
                            store.durable().await.expect("durable");
                            finished.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for task in tasks {
                task.await.expect("writer");
            }
            let elapsed = start.elapsed();
            store.flush().expect("flush");
            (finished.load(Ordering::Relaxed), elapsed)
        });
        println!(
            "  {writers:>5} writers: {finished:>8} requests in {elapsed:.2?}: {:>8.0} requests/s",
            finished as f64 / elapsed.as_secs_f64()
        );
    }
}

fn report_scan(cache_mib: u64) {
    let dir = tempfile::tempdir().expect("state dir");
    let settings = StoreSettings {
        durability: Durability::Relaxed,
        cache_mib,
        ..StoreSettings::default()
    };
    let store = Store::open(dir.path(), &settings).expect("store");
    let telemetry = Telemetry::new(&store).expect("telemetry");
    // A day of traffic, ending at a minute boundary.
    let day_ms = 24 * 3_600_000;
    let start_ms = 28_333_334 * 60_000 - day_ms;
    let providers = [
        "anthropic-sonnet",
        "openai-mini",
        "openrouter-llama",
        "ollama-local",
    ];
    let routes = ["default", "support", "knowledge", "fast"];
    let outcomes = ["5xx", "timeout", "429", "connect"];
    let writing = Instant::now();
    for i in 0..REPORT_REQUESTS {
        let accepted_ms = start_ms + i * day_ms / REPORT_REQUESTS;
        let mut record = JournalRecord::accepted(TraceId::new(), "q");
        record.accepted_ms = accepted_ms;
        record.swarm = Some("support-bot".into());
        record.route = Some(routes[(i % 4) as usize].into());
        record.chain = vec!["billing".into()];
        // Two failed attempts then an answer: three attempt events.
        let first = (i % 4) as usize;
        let latency = 200.0 + (i % 997) as f64 * 3.0;
        let mut attempts = vec![
            attempt(
                providers[first],
                100.0 + (i % 13) as f64,
                outcomes[(i / 4 % 4) as usize],
            ),
            attempt(
                providers[(first + 1) % 4],
                50.0 + (i % 7) as f64,
                outcomes[(i / 16 % 4) as usize],
            ),
            attempt(providers[(first + 2) % 4], latency, "ok"),
        ];
        attempts[1].started_ms = attempts[0].latency_ms;
        attempts[2].started_ms = attempts[1].started_ms + attempts[1].latency_ms;
        let total = attempts[2].started_ms + latency;
        record.finished_ms = Some(accepted_ms + total as u64);
        record.attempts = attempts;
        record.state = RequestState::Completed;
        record.served_by = Some(format!("provider:{}", providers[(first + 2) % 4]));
        record.fallback = true;
        telemetry.record_finished(&record).expect("record");
    }
    store.flush().expect("flush");
    println!(
        "(b) report over raw telemetry, cache {cache_mib} MiB: wrote {} events in {:.2?} ({} bytes on disk)",
        telemetry.len(),
        writing.elapsed(),
        store.size_on_disk().unwrap_or(0)
    );
    let until_ns = (start_ms + day_ms) * 1_000_000 + MINUTE_NS;
    for threads in [1, 2] {
        let mut options = ReportOptions::new(start_ms * 1_000_000, until_ns);
        options.threads = threads;
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let report = build(&store, &options).expect("report");
            times.push(started.elapsed());
            assert_eq!(report.sources.raw_events, REPORT_REQUESTS * 4);
            assert_eq!(report.sources.aggregates, 0);
            assert_eq!(report.totals.requests, REPORT_REQUESTS);
            assert_eq!(report.totals.attempts, REPORT_REQUESTS * 3);
        }
        times.sort();
        println!(
            "  {threads} thread(s): {} events: best {:.2?}, median {:.2?}, worst {:.2?} ({:.0} ns per event at best)",
            REPORT_REQUESTS * 4,
            times[0],
            times[1],
            times[2],
            times[0].as_nanos() as f64 / (REPORT_REQUESTS * 4) as f64
        );
    }
}

fn main() {
    let seconds = std::env::var("BATON_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let levels: Vec<usize> = std::env::var("BATON_BENCH_WRITERS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| CONCURRENCY.to_vec());
    let part = std::env::var("BATON_BENCH_PART").unwrap_or_default();
    if part != "b" {
        journal_writes(seconds, &levels);
    }
    if part != "a" {
        report_scan(StoreSettings::default().cache_mib);
        report_scan(64);
    }
}
