//! Benchmark: what the actors add to a request, and throughput through one
//! swarm.
//!
//! 1. The same question, sequentially: directly through Baton's OpenAI
//!    client to a zero-latency mock (sending the request the billing worker
//!    would assemble, so both carry the same prompt), and through the support-bot swarm
//!    under the root actor (supervisor → classifier → worker → prompt
//!    assembly → router → the provider's handle, watched by its Provider
//!    and Health actors → the same mock). Reports p50/p99 of each and p99(through) − p99(direct).
//! 2. 64 concurrent sessions asking through the swarm for a fixed number
//!    of requests: requests per second.
//!
//! Run: `cargo bench --bench orchestration`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::actor::baton::{Baton, BatonArgs, start_swarm};
use baton::actor::supervisor::SupervisorMsg;
use baton::config::{Config, ProviderId};
use baton::provider::mock::{MockServer, Script};
use baton::provider::openai::OpenAi;
use baton::provider::{AttemptDeadline, Backend, collect};
use baton::routing::pool::Pool;
use baton::routing::router::Router;
use baton::store::{Durability, Store, StoreSettings};
use baton::template::load_swarm;

const SEQUENTIAL: usize = 2_000;
const SESSIONS: usize = 64;
const CONCURRENT_REQUESTS: usize = 20_000;

fn at(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mock = MockServer::start("127.0.0.1:0".parse().unwrap(), Script::from_toml("[server]\nanswer_tokens = 16\n", Path::new("b.toml")).unwrap())
            .await
            .expect("mock");
        let base = format!("{}/v1", mock.base_url());
        let mut text = format!(
            "default_route = \"default\"\n[providers.mock]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{base}\"\ncapabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n"
        );
        for route in ["default", "support", "fast", "sonnet", "opus", "haiku", "knowledge"] {
            text.push_str(&format!("[routes.{route}]\nchain = [\"mock\"]\n"));
        }
        let config = Config::parse(&text, Path::new("bench.toml")).expect("config");
        let swarm = load_swarm(Path::new("agents/support-bot"), &config).expect("swarm").swarm;
        let swarm_for_prompts = swarm.clone();
        let router = Arc::new(Router::new(&config, Pool::from_config(&config).unwrap()).unwrap());
        // BATON_BENCH_JOURNAL=flush|relaxed: the same run with the store
        // on, every request journaled with that durability.
        let journal = std::env::var("BATON_BENCH_JOURNAL").ok();
        let state = tempfile::tempdir().expect("state dir");
        let store = journal.as_deref().map(|mode| {
            let settings = StoreSettings {
                durability: if mode == "relaxed" { Durability::Relaxed } else { Durability::Flush },
                ..StoreSettings::default()
            };
            Store::open(state.path(), &settings).expect("store")
        });
        println!("journal: {}", journal.as_deref().unwrap_or("off"));
        let (root, _) = Baton::start_with(BatonArgs { router, health: config.health.clone(), store, health_listener: None })
            .await
            .expect("root");
        let supervisor = start_swarm(&root, Arc::new(swarm), None).await.expect("supervisor");
        // The direct call sends the very request the billing worker
        // assembles, so that the difference is the orchestration and not
        // the mock reading a longer prompt.
        let billing = swarm_for_prompts.agent("billing").expect("billing").clone();
        let direct_request = |text: String| baton::context::assemble(&swarm_for_prompts, &billing, &[], None, &[], &text);
        let direct = OpenAi::new(ProviderId("m".into()), &base, "m", None, Duration::from_secs(1)).unwrap();
        let question = |i: usize| format!("Where can I download invoice number {}?", i % 100);
        let handle = supervisor.clone();
        let ask = move |text: String, session: Option<String>| {
            let supervisor = handle.clone();
            async move {
                ractor::call_t!(supervisor, |reply| SupervisorMsg::Ask { text, session, reply }, 10_000)
                    .expect("supervisor")
                    .expect("answer")
            }
        };

        for i in 0..200 {
            ask(question(i), None).await;
            let request = direct_request(question(i));
            collect(direct.stream(&request, AttemptDeadline::new(Duration::from_secs(5), Duration::from_secs(10))).await.unwrap()).await.unwrap();
        }
        let mut direct_times = Vec::with_capacity(SEQUENTIAL);
        let mut swarm_times = Vec::with_capacity(SEQUENTIAL);
        for i in 0..SEQUENTIAL {
            let request = direct_request(question(i));
            let start = Instant::now();
            collect(direct.stream(&request, AttemptDeadline::new(Duration::from_secs(5), Duration::from_secs(10))).await.unwrap()).await.unwrap();
            direct_times.push(start.elapsed());
            let start = Instant::now();
            ask(question(i), None).await;
            swarm_times.push(start.elapsed());
        }
        direct_times.sort();
        swarm_times.sort();
        println!("direct to mock:   p50 {:?}, p99 {:?}", at(&direct_times, 0.5), at(&direct_times, 0.99));
        println!("through the swarm: p50 {:?}, p99 {:?}", at(&swarm_times, 0.5), at(&swarm_times, 0.99));
        println!(
            "orchestration overhead: p50 {:?}, p99 {:?}",
            at(&swarm_times, 0.5).saturating_sub(at(&direct_times, 0.5)),
            at(&swarm_times, 0.99).saturating_sub(at(&direct_times, 0.99))
        );

        let start = Instant::now();
        let per_session = CONCURRENT_REQUESTS / SESSIONS;
        let mut tasks = Vec::new();
        for s in 0..SESSIONS {
            let ask = ask.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_session {
                    ask(question(s * per_session + i), Some(format!("session-{s}"))).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        println!(
            "{SESSIONS} sessions, {} requests: {:.0} requests/s",
            per_session * SESSIONS,
            (per_session * SESSIONS) as f64 / elapsed.as_secs_f64()
        );
    });
}
