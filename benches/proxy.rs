//! Benchmark: what the router adds to one call.
//!
//! The same request goes to a mock provider on loopback (no scripted
//! latency) directly through Baton's OpenAI client, and through the router
//! (fingerprint, snapshots, decision, breaker and budget bookkeeping, cache
//! write). Both stream from the upstream, as the router always does. Prints
//! the median and p99 of each and the difference of the medians.
//! Run: `cargo bench --bench proxy`.

use std::path::Path;
use std::time::{Duration, Instant};

use baton::config::{Config, ProviderId};
use baton::provider::mock::{MockServer, Script};
use baton::provider::openai::OpenAi;
use baton::provider::{AttemptDeadline, Backend, ChatRequest, Message, collect};
use baton::routing::pool::Pool;
use baton::routing::router::{RouteRequest, Router};

const CALLS: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mock = MockServer::start("127.0.0.1:0".parse().unwrap(), Script::from_toml("[server]\nanswer_tokens = 16\n", Path::new("bench.toml")).unwrap())
            .await
            .expect("mock");
        let base = format!("{}/v1", mock.base_url());
        let config = Config::parse(
            &format!(
                "default_route = \"r\"\n[providers.m]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{base}\"\n[routes.r]\nchain = [\"m\"]\n"
            ),
            Path::new("bench.toml"),
        )
        .expect("config");
        let router = Router::new(&config, Pool::from_config(&config).expect("pool")).expect("router");
        let direct = OpenAi::new(ProviderId("m".into()), &base, "m", None, Duration::from_secs(1)).expect("client");
        let request = |i: usize| ChatRequest {
            messages: vec![Message::user(format!("question number {}", i % 50))],
            ..ChatRequest::default()
        };

        // Warm both paths (connection pool, allocator).
        for i in 0..200 {
            let deadline = AttemptDeadline::new(Duration::from_secs(5), Duration::from_secs(10));
            collect(direct.stream(&request(i), deadline).await.unwrap()).await.unwrap();
            router.complete(RouteRequest::new("r", request(i))).await.unwrap();
        }

        let mut direct_times = Vec::with_capacity(CALLS);
        let mut routed_times = Vec::with_capacity(CALLS);
        // Interleave so that both see the same machine conditions.
        for i in 0..CALLS {
            let deadline = AttemptDeadline::new(Duration::from_secs(5), Duration::from_secs(10));
            let start = Instant::now();
            collect(direct.stream(&request(i), deadline).await.unwrap()).await.unwrap();
            direct_times.push(start.elapsed());

            let start = Instant::now();
            router.complete(RouteRequest::new("r", request(i))).await.unwrap();
            routed_times.push(start.elapsed());
        }
        direct_times.sort();
        routed_times.sort();
        let (d50, r50) = (percentile(&direct_times, 0.5), percentile(&routed_times, 0.5));
        println!(
            "direct to mock: p50 {:?}, p99 {:?} ({CALLS} calls)",
            d50,
            percentile(&direct_times, 0.99)
        );
        println!(
            "through router: p50 {:?}, p99 {:?} ({CALLS} calls)",
            r50,
            percentile(&routed_times, 0.99)
        );
        println!("router adds (p50 difference): {:?}", r50.saturating_sub(d50));
    });
}
