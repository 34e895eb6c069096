//! How long one routing decision takes: a realistic five-provider route
//! with mixed provider states, decided 1,000,000 times over a cycle of
//! varied attempt states (fresh requests, retries, Retry-After waits,
//! context-length and content-filter failovers, exhausted chains).
//!
//! Run: `cargo bench --bench decision`. Target: under 5 µs per decision.

use std::hint::black_box;
use std::time::{Duration, Instant};

use baton::routing::decision::{
    AttemptState, BreakerGate, Capabilities, DomainId, ErrorKind, FinalFallback, ProviderSnapshot,
    RoutePolicy, decide,
};
use baton::swarm::Capability;

const DECISIONS: u32 = 1_000_000;

fn main() {
    let now = tokio::time::Instant::now();
    let chat: Capabilities = [Capability::Chat, Capability::Tools, Capability::Streaming]
        .into_iter()
        .collect();
    let long = chat.with(Capability::LongContext);
    let provider = |index: u16, domain: u8, capabilities| ProviderSnapshot {
        provider: index,
        domain: DomainId(domain),
        capabilities,
        key_available: true,
        breaker: BreakerGate::Allowed,
        in_flight: 2,
        max_concurrency: 16,
        requests_last_minute: 40,
        rpm_limit: 500,
        p95: Some(Duration::from_millis(2_500)),
    };
    let mut chain = [
        // Primary: busy, at its concurrency limit.
        provider(0, 0, long),
        // Same vendor, other model: breaker open.
        provider(1, 0, chat),
        // Second vendor: slower than the SLA.
        provider(2, 1, long),
        // Third vendor: half-open, a trial slot free.
        provider(3, 2, chat),
        // A self-hosted model: healthy, long context.
        provider(4, 3, long),
    ];
    chain[0].in_flight = 16;
    chain[1].breaker = BreakerGate::Open {
        until: now + Duration::from_secs(30),
    };
    chain[2].p95 = Some(Duration::from_secs(9));
    chain[3].breaker = BreakerGate::TrialAvailable;

    let route = RoutePolicy {
        required: Capabilities::of(Capability::Tools),
        sla_p95: Some(Duration::from_secs(6)),
        ..RoutePolicy::default()
    };

    let deadline = Duration::from_secs(30);
    let mut states = Vec::new();
    let fresh = AttemptState::new(deadline);
    states.push(fresh);
    let scripts: [&[(u8, ErrorKind)]; 8] = [
        &[(0, ErrorKind::Connect)],
        &[(0, ErrorKind::Connect), (0, ErrorKind::Connect)],
        &[(
            0,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            },
        )],
        &[(
            0,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(20)),
            },
        )],
        &[(3, ErrorKind::ContextLength)],
        &[(0, ErrorKind::ContentFilter), (3, ErrorKind::Contract)],
        &[
            (0, ErrorKind::Server { retry_after: None }),
            (4, ErrorKind::Timeout),
        ],
        &[
            (0, ErrorKind::Client),
            (2, ErrorKind::Client),
            (3, ErrorKind::Client),
            (4, ErrorKind::Client),
        ],
    ];
    for script in scripts {
        let mut state = fresh;
        for (position, error) in script {
            state.record_failure(*position, *error);
        }
        states.push(state);
        // The same state with no budget left, and with fallbacks tried.
        state.budget_available = false;
        states.push(state);
        state.record_fallback(FinalFallback::Cache);
        states.push(state);
    }

    // Warm up caches and branch predictors.
    for state in &states {
        black_box(decide(
            black_box(&chain),
            black_box(&route),
            black_box(state),
        ));
    }

    let start = Instant::now();
    let mut attempts = 0u32;
    for i in 0..DECISIONS {
        let state = &states[i as usize % states.len()];
        let routed = decide(black_box(&chain), black_box(&route), black_box(state));
        if matches!(
            routed.decision,
            baton::routing::decision::Decision::Attempt { .. }
        ) {
            attempts += 1;
        }
        black_box(routed);
    }
    let elapsed = start.elapsed();
    let per_decision = elapsed.as_nanos() as f64 / f64::from(DECISIONS);
    println!(
        "decision: {DECISIONS} decisions over {} attempt states in {elapsed:.2?}: \
         {per_decision:.1} ns per decision ({attempts} attempts)",
        states.len()
    );
}
