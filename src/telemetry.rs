//! What happened, in figures: telemetry tallies, latency histograms and the
//! SLA / MTTR report.
//!
//! Events are written and stored by [`crate::store::telemetry`]; this
//! module folds them into [`aggregate::Aggregate`]s (the same tallies
//! compaction keeps per minute) and turns those, with the providers'
//! health history, into a [`report::Report`].
//!
//! # The objective
//!
//! A route's service-level objective is an availability objective: the
//! share of its requests that must end with an answer (`[report] slo`,
//! default 0.99). An answer from a final fallback (cache, local model,
//! extractive) counts as an answer — it is counted apart as degraded —
//! while a refusal ("cannot answer") and a failure do not. The error
//! budget is the `1 - slo` share of requests allowed to miss; the report
//! gives how much of it is left and the burn rate (the miss rate over the
//! allowed rate: 1 spends the budget exactly over the period, above 1
//! overspends it). Latency is judged apart, against the route's
//! `sla_p95`: the SLA attainment is the share of requests that ended
//! within it (met when at least 95% did).

pub mod aggregate;
pub mod report;

use serde::{Deserialize, Serialize};

/// `[report]` in baton.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// The share of requests that must end with an answer.
    pub slo: f64,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self { slo: 0.99 }
    }
}
