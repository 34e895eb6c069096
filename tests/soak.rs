//! Soak and chaos through `baton serve`: concurrent clients (plain and
//! streamed requests, some retried with an `Idempotency-Key`) while every
//! mock upstream's fault script changes at random, the policy is changed
//! and rolled back, and Baton is SIGKILLed and restarted halfway.
//!
//! Asserted: every request Baton acknowledged (a 200 with its trace id)
//! is in the journal as completed (or failed, when the answer said so)
//! and nothing is left open after a clean
//! stop; the copies of an idempotent request share one trace id (one
//! upstream routing); the file descriptors Baton holds other than sockets
//! do not grow, and its sockets stay within what the clients can hold
//! open. With `BATON_LONG=1` it runs 10 minutes and also asserts resident
//! memory grows less than 10 % from a minute after the restart to the end;
//! by default 12 s keep the path exercised. The seed is printed.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::provider::mock::{MockHandle, MockServer, Script};
use baton::store::journal::{Journal, RequestState};
use baton::trace::TraceId;
use common::{Serve, open_store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const CLIENTS: usize = 6;

fn config(mocks: &[MockHandle], order: [usize; 3]) -> String {
    let mut text = String::from(
        "default_route = \"main\"\n[defaults]\nretries = 1\nbackoff_base = \"10ms\"\nbackoff_max = \"50ms\"\nmax_retry_after = \"1s\"\nfirst_token_timeout = \"2s\"\nattempt_timeout = \"3s\"\ntotal_timeout = \"8s\"\nfinal_fallbacks = [\"cache\"]\n\
         [breaker]\nconsecutive_failures = 3\nwindow = \"5s\"\nbase_ejection = \"1s\"\nmax_ejection = \"5s\"\n\
         [health]\nhold_down = \"2s\"\nprobe_timeout = \"1s\"\n\
         [store]\ncache_mib = 8\n",
    );
    for (index, mock) in mocks.iter().enumerate() {
        text.push_str(&format!(
            "[providers.p{index}]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\ndomain = \"d{index}\"\nprobe = {{ interval = \"1s\" }}\n",
            mock.base_url()
        ));
    }
    let chain: Vec<String> = order.iter().map(|i| format!("\"p{i}\"")).collect();
    text.push_str(&format!("[routes.main]\nchain = [{}]\n", chain.join(", ")));
    text
}

/// A fault script drawn at random: mostly trouble, sometimes health.
fn chaos(rng: &mut StdRng) -> Script {
    let text = match rng.random_range(0..8) {
        0 | 1 => String::new(),
        2 => "[[fault]]\nkind = \"status\"\nstatus = 503\nrate = 0.5\n".to_owned(),
        3 => "[[fault]]\nkind = \"status\"\nstatus = 429\nretry_after = \"1s\"\nrate = 0.3\n"
            .to_owned(),
        4 => "[[fault]]\nkind = \"reset\"\nrate = 0.2\n".to_owned(),
        5 => "[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 3\nrate = 0.4\n".to_owned(),
        6 => "[server]\nlatency = \"40ms\"\ntoken_interval = \"2ms\"\n".to_owned(),
        _ => "[[fault]]\nkind = \"refuse\"\nto = \"1s\"\n".to_owned(),
    };
    Script::from_toml(&text, std::path::Path::new("chaos.toml")).expect("a chaos script")
}

/// Open file descriptors of `pid`: (sockets, everything else).
fn descriptors(pid: u32) -> (usize, usize) {
    let mut sockets = 0;
    let mut others = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("socket:") => sockets += 1,
            Ok(_) => others += 1,
            Err(_) => {}
        }
    }
    (sockets, others)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn policy(serve: &Serve, args: &[&str]) {
    let mut policy = vec!["policy"];
    policy.extend_from_slice(args);
    let output = serve
        .workdir
        .command(&policy)
        .output()
        .expect("baton policy runs");
    assert!(
        output.status.success(),
        "baton policy {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Shared {
    port: AtomicU16,
    stop: AtomicBool,
    /// Acknowledged requests, and whether the answer said it failed (a
    /// stream whose head went out before every provider failed ends with
    /// an error event: journaled `failed`, rightly).
    acked: Mutex<HashMap<TraceId, bool>>,
    idempotent: Mutex<Vec<Vec<String>>>,
}

/// One client: requests in a loop until told to stop.
async fn client(id: usize, shared: Arc<Shared>, seed: u64) {
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(seed ^ id as u64);
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let url = format!(
            "http://127.0.0.1:{}/v1/chat/completions",
            shared.port.load(Ordering::Relaxed)
        );
        let stream = rng.random_bool(0.4);
        let body = json!({
            "model": "main",
            "stream": stream,
            "messages": [{"role": "user", "content": format!("soak {id} {n}")}],
        });
        let send = |key: Option<String>| {
            let mut request = http.post(&url).json(&body).timeout(Duration::from_secs(20));
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            async move {
                let response = request.send().await.ok()?;
                if response.status() != 200 {
                    return None;
                }
                let trace = response
                    .headers()
                    .get("x-baton-trace-id")?
                    .to_str()
                    .ok()?
                    .to_owned();
                // The answer counts as acknowledged once it was read whole.
                let body = response.bytes().await.ok()?;
                let failed = stream
                    && String::from_utf8_lossy(&body)
                        .lines()
                        .any(|line| line.starts_with("data: {\"error\""));
                Some((trace, failed))
            }
        };
        let traces: Vec<Option<(String, bool)>> = if !stream && rng.random_bool(0.1) {
            let key = format!("soak-{seed}-{id}-{n}");
            let copies =
                futures_util::future::join_all((0..3).map(|_| send(Some(key.clone())))).await;
            let answered: Vec<String> = copies.iter().flatten().map(|(t, _)| t.clone()).collect();
            if answered.len() > 1 {
                shared.idempotent.lock().unwrap().push(answered);
            }
            copies
        } else {
            vec![send(None).await]
        };
        for (trace, failed) in traces.into_iter().flatten() {
            let uuid = uuid::Uuid::parse_str(&trace).expect("a trace id");
            shared.acked.lock().unwrap().insert(TraceId(uuid), failed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baton_serve_holds_up_under_chaos_policy_changes_and_a_sigkill() {
    let long = std::env::var("BATON_LONG").is_ok_and(|v| v == "1");
    let duration = if long {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(12)
    };
    let seed: u64 = std::env::var("BATON_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("soak: {duration:?}, seed {seed} (BATON_SOAK_SEED={seed} repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut mocks = Vec::new();
    for _ in 0..3 {
        mocks.push(
            MockServer::start("127.0.0.1:0".parse().unwrap(), Script::default())
                .await
                .unwrap(),
        );
    }
    let mut serve = Serve::start(&config(&mocks, [0, 1, 2]), &[], &[]);
    serve.workdir.write("v2.toml", &config(&mocks, [1, 0, 2]));
    policy(&serve, &["apply", "-m", "soak: first version"]);

    let shared = Arc::new(Shared {
        port: AtomicU16::new(serve.port),
        stop: AtomicBool::new(false),
        acked: Mutex::new(HashMap::new()),
        idempotent: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, shared.clone(), seed)))
        .collect();

    let start = Instant::now();
    let chaos_every = if long {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(2)
    };
    let (mut applied, mut rolled_back, mut killed) = (false, false, false);
    // RSS readings after the warm-up (a minute after the restart): the
    // allocator moves RSS by several MiB from one reading to the next, so
    // growth compares the median of the first six with that of the last six.
    let mut rss_after_warm_up: Vec<u64> = Vec::new();
    let mut others_after_warm_up: Option<usize> = None;
    while start.elapsed() < duration {
        tokio::time::sleep(chaos_every).await;
        for mock in &mocks {
            mock.set_script(chaos(&mut rng));
        }
        let at = start.elapsed().as_secs_f64() / duration.as_secs_f64();
        if at >= 0.25 && !applied {
            applied = true;
            let v2 = serve.workdir.path("v2.toml");
            policy(
                &serve,
                &["apply", v2.to_str().unwrap(), "-m", "soak: secondary first"],
            );
        }
        if at >= 0.5 && !killed {
            killed = true;
            serve.kill_and_restart();
            shared.port.store(serve.port, Ordering::Relaxed);
        }
        if at >= 0.75 && !rolled_back {
            rolled_back = true;
            policy(&serve, &["rollback", "1", "-m", "soak: back to the first"]);
        }
        if long {
            let pid = serve.child.id();
            eprintln!(
                "soak: t={:>3.0}s RSS {} KiB, fds {:?}, {} acknowledged",
                start.elapsed().as_secs_f64(),
                rss_kib(pid),
                descriptors(pid),
                shared.acked.lock().unwrap().len()
            );
        }
        if long && killed && at >= 0.6 {
            let pid = serve.child.id();
            rss_after_warm_up.push(rss_kib(pid));
            others_after_warm_up.get_or_insert(descriptors(pid).1);
        }
    }
    let pid = serve.child.id();
    let end = (rss_kib(pid), descriptors(pid));
    shared.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    for mock in &mocks {
        mock.set_script(Script::default());
    }

    // A clean stop, then the journal as the next process sees it.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = serve.child.wait();
    let store = open_store(&serve.state()).unwrap();
    let journal = Journal::new(&store).unwrap();
    assert_eq!(
        journal.open().unwrap().len(),
        0,
        "requests left open after a clean stop"
    );
    let acked = shared.acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few answers to judge: {}",
        acked.len()
    );
    for (trace, failed) in &acked {
        let record = journal
            .get(*trace)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {trace} is not in the journal (seed {seed})"));
        let expected = if *failed {
            RequestState::Failed
        } else {
            RequestState::Completed
        };
        assert_eq!(record.state, expected, "{trace} (seed {seed})");
    }
    for copies in shared.idempotent.lock().unwrap().iter() {
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "idempotent copies routed apart: {copies:?} (seed {seed})"
        );
    }
    eprintln!(
        "soak: {} acknowledged, {} idempotent groups, end RSS {} KiB, fds {:?}",
        acked.len(),
        shared.idempotent.lock().unwrap().len(),
        end.0,
        end.1
    );
    // Sockets: the listener, the admin socket, each client's connections
    // (an idempotent retry holds three), pooled upstream connections to
    // three mocks, and a few for the runtime.
    let (sockets, others) = end.1;
    assert!(
        sockets <= 2 + CLIENTS * 3 + 3 * 16 + 8,
        "{sockets} sockets held"
    );
    if let Some(others_then) = others_after_warm_up {
        assert!(
            others <= others_then,
            "file descriptors other than sockets grew: {others_then} -> {others}"
        );
        let median = |readings: &[u64]| {
            let mut sorted = readings.to_vec();
            sorted.sort_unstable();
            sorted[sorted.len() / 2]
        };
        let readings = rss_after_warm_up.len();
        assert!(readings >= 12, "{readings} readings");
        let (first, last) = (
            median(&rss_after_warm_up[..6]),
            median(&rss_after_warm_up[readings - 6..]),
        );
        eprintln!("soak: RSS after the warm-up {first} KiB, at the end {last} KiB");
        assert!(
            (last as f64) < first as f64 * 1.10,
            "resident memory grew {first} -> {last} KiB (over 10 %)"
        );
    }
    for mock in mocks {
        mock.shutdown().await;
    }
}
