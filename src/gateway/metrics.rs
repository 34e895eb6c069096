//! `GET /metrics`: the Prometheus text exposition of the gateway's
//! counters, its latency histogram, and each provider's health and breaker
//! read at scrape time.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::routing::breaker::BreakerState;
use crate::routing::pool::HealthState;
use crate::routing::router::{Outcome, Router, ServedBy};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    /// Counts per bucket (not cumulative), then the overflow.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    served_by: Mutex<BTreeMap<String, u64>>,
    fallbacks: AtomicU64,
    degraded: AtomicU64,
    cache_hits: AtomicU64,
    in_flight: AtomicI64,
    recent: Mutex<VecDeque<Failover>>,
}

/// How many failovers the dashboard lists.
const RECENT: usize = 50;

/// An answer that came from other than the route's first choice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failover {
    pub at_ms: u64,
    pub model: String,
    /// The provider of the first attempt.
    pub from: String,
    pub to: String,
    /// The first attempt's failure (`5xx`, `timeout`, ...).
    pub reason: String,
}

/// A request counted in flight until dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// A request answered with `status` after `elapsed` (streams: when the
    /// response head went out).
    pub fn observe_request(&self, status: u16, elapsed: Duration) {
        *self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The latest failovers, newest first.
    pub fn recent_failovers(&self) -> Vec<Failover> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    /// Requests answered, fallbacks and degraded answers so far.
    pub fn totals(&self) -> serde_json::Value {
        let requests: u64 = self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        serde_json::json!({
            "requests": requests,
            "fallbacks": self.fallbacks.load(Ordering::Relaxed),
            "degraded": self.degraded.load(Ordering::Relaxed),
        })
    }

    /// Who answered a request for `model`, and how.
    pub fn observe_outcome(&self, model: &str, outcome: &Outcome) {
        let label = match &outcome.served_by {
            ServedBy::Provider { id } => id.0.clone(),
            ServedBy::Cache { .. } => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                "cache".to_owned()
            }
            ServedBy::Extractive => "extractive".to_owned(),
        };
        *self
            .served_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label.clone())
            .or_default() += 1;
        if outcome.fallback {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            let first_failure = outcome.attempts.iter().find(|a| a.error.is_some());
            let failover = Failover {
                at_ms: crate::store::journal::now_ms(),
                model: model.to_owned(),
                from: first_failure.map_or_else(String::new, |a| a.provider.0.clone()),
                to: label.clone(),
                reason: first_failure
                    .and_then(|a| a.error.as_ref().map(|(kind, _)| kind.clone()))
                    .unwrap_or_else(|| "spill-over".to_owned()),
            };
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(failover);
        }
        if outcome.degraded {
            self.degraded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition, with the providers of `router` as they are now.
    pub fn render(&self, router: &Router) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "baton_requests_total",
            "counter",
            "Chat requests answered, by HTTP status.",
        );
        let mut text = String::new();
        for (status, count) in self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(text, "baton_requests_total{{status=\"{status}\"}} {count}");
        }
        out.push_str(&text);
        let _ = writeln!(
            out,
            "# HELP baton_request_duration_seconds Time to the response head.\n# TYPE baton_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "baton_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "baton_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "baton_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "baton_request_duration_seconds_count {cumulative}");
        let simple = [
            (
                "baton_fallbacks_total",
                "counter",
                "Answers not served by the route's first choice.",
                self.fallbacks.load(Ordering::Relaxed) as i64,
            ),
            (
                "baton_degraded_total",
                "counter",
                "Answers served by the cache or the extractive surrogate.",
                self.degraded.load(Ordering::Relaxed) as i64,
            ),
            (
                "baton_cache_hits_total",
                "counter",
                "Answers served from the response cache.",
                self.cache_hits.load(Ordering::Relaxed) as i64,
            ),
            (
                "baton_in_flight",
                "gauge",
                "Chat requests in progress.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP baton_served_total Answers by who served them.\n# TYPE baton_served_total counter"
        );
        for (by, count) in self
            .served_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "baton_served_total{{by=\"{}\"}} {count}", escape(by));
        }
        let now = tokio::time::Instant::now();
        let _ = writeln!(
            out,
            "# HELP baton_provider_up Whether the provider is Healthy or Degraded (1) or Down (0).\n# TYPE baton_provider_up gauge"
        );
        let handles = router.pool().handles();
        for handle in handles {
            let up = u8::from(handle.health().is_up());
            let _ = writeln!(
                out,
                "baton_provider_up{{provider=\"{}\"}} {up}",
                escape(&handle.id().0)
            );
        }
        let _ = writeln!(
            out,
            "# HELP baton_provider_health The provider's health state (1 for the current one).\n# TYPE baton_provider_health gauge"
        );
        for handle in handles {
            let health = handle.health();
            for (state, name) in [
                (HealthState::Healthy, "healthy"),
                (HealthState::Degraded, "degraded"),
                (HealthState::Down, "down"),
            ] {
                let _ = writeln!(
                    out,
                    "baton_provider_health{{provider=\"{}\",state=\"{name}\"}} {}",
                    escape(&handle.id().0),
                    u8::from(health == state)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP baton_provider_breaker_state The provider's breaker: 0 closed, 1 half-open, 2 open.\n# TYPE baton_provider_breaker_state gauge"
        );
        for handle in handles {
            let state = match handle.breaker(now).state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            let _ = writeln!(
                out,
                "baton_provider_breaker_state{{provider=\"{}\"}} {state}",
                escape(&handle.id().0)
            );
        }
        out
    }
}

/// A label value as the exposition format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
