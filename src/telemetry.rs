//! What happened, in figures: telemetry tallies, latency histograms and the
//! SLA / MTTR report.
//!
//! Events are written and stored by [`crate::store::telemetry`]; this
//! module folds them into [`aggregate::Aggregate`]s (the same tallies
//! compaction keeps per minute) and turns those, with the providers'
//! health history, into a [`report::Report`].

pub mod aggregate;
