//! The KPI report: per provider and per route, over a period.
//!
//! Figures come from two sources that never overlap: the per-minute
//! aggregates of compacted minutes, and the raw events compaction has not
//! folded yet (it deletes what it folds, in the same transaction). A
//! compacted minute counts when it starts inside the period; raw events
//! count by their own time. Raw events are scanned in parallel time
//! slices, each folding into its own tallies, merged at the end.
//!
//! Per provider (from its attempts): attempts, success and error rates by
//! kind, attempt latency percentiles, uptime and MTTR from the health
//! history, the time from its failures to an answer through a fallback,
//! the binding switches away from it, contract violations, tokens, cost.
//! Per route (from its requests): requests, success, error rates by kind,
//! request latency percentiles (acceptance to end, whatever the end), SLA
//! attainment against `sla_p95`, the error budget and burn rate against
//! the SLO (see [`crate::telemetry`]), fallbacks, degraded answers and
//! refusals apart, contract violations, tokens, cost.
//!
//! Health: a provider is up whenever its health is not `down` (degraded
//! still serves). Its state at the start of the period is the last change
//! before it, else the first change's `from`, else healthy. An outage is a
//! change to `down`; it is repaired by the next change to anything else,
//! and MTTR is the mean length of the outages repaired in the period
//! (measured from their start, even if that was before the period).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::aggregate::{Aggregate, Tallies};
use crate::config::Config;
use crate::review::Timestamp;
use crate::store::health::{HealthLog, HealthRecord};
use crate::store::telemetry::Telemetry;
use crate::store::{Store, StoreError};

/// The share of requests that must be within `sla_p95` for the SLA to be met.
pub const SLA_SHARE: f64 = 0.95;

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The period, `since_ns <= t < until_ns`, ns since the epoch.
    pub since_ns: u64,
    pub until_ns: u64,
    /// The availability objective (share of requests answered).
    pub slo: f64,
    /// Routes to report even without traffic, with their latency targets.
    /// A route seen only in telemetry is reported without a target.
    pub routes: BTreeMap<String, Option<Duration>>,
    /// Providers to report even without traffic.
    pub providers: BTreeSet<String>,
    /// Threads scanning raw events.
    pub threads: usize,
}

impl ReportOptions {
    /// The period, with the default objective, no known routes, and a
    /// thread per core.
    pub fn new(since_ns: u64, until_ns: u64) -> ReportOptions {
        ReportOptions {
            since_ns,
            until_ns,
            slo: super::ReportSettings::default().slo,
            routes: BTreeMap::new(),
            providers: BTreeSet::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Takes the objective, the routes and their targets, and the providers
    /// from `config`.
    pub fn with_config(mut self, config: &Config) -> ReportOptions {
        self.slo = config.report.slo;
        self.routes = config
            .routes
            .values()
            .map(|route| (route.name.0.clone(), route.sla_p95))
            .collect();
        self.providers = config.providers.keys().map(|p| p.0.clone()).collect();
        self
    }
}

/// Where the figures came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sources {
    /// Raw events scanned.
    pub raw_events: u64,
    /// Per-minute aggregates read (one per minute and subject).
    pub aggregates: u64,
}

/// Latency percentiles in milliseconds, to the histogram's precision
/// (0.1%); the maximum is exact. `None` without samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latencies {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latencies {
    fn of(tally: &Aggregate) -> Latencies {
        let at = |q: f64| tally.latency.quantile(q).map(ms);
        Latencies {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: (tally.latency.count() > 0).then(|| tally.max_latency_us as f64 / 1_000.0),
        }
    }
}

/// A provider's availability over the period, from its health history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Availability {
    /// Share of the period not `down`.
    pub uptime: f64,
    pub down_ms: f64,
    /// Outages overlapping the period.
    pub outages: u64,
    /// Outages that ended in the period.
    pub recoveries: u64,
    /// Mean length of those, ms.
    pub mttr_ms: Option<f64>,
    /// Down at the end of the period.
    pub down_at_end: bool,
}

/// One provider's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderReport {
    pub name: String,
    pub attempts: u64,
    pub ok: u64,
    pub success_rate: Option<f64>,
    /// Failed attempts by kind, and their share of the attempts.
    pub errors: BTreeMap<String, u64>,
    pub error_rates: BTreeMap<String, f64>,
    pub latency: Latencies,
    #[serde(flatten)]
    pub availability: Availability,
    /// Requests whose first failure was this provider's and that a fallback
    /// answered, and the mean time from that failure to the answer.
    pub fallback_recoveries: u64,
    pub time_to_fallback_ms: Option<f64>,
    /// Binding switches away from this provider, and those found unnecessary.
    pub switches: u64,
    pub unnecessary_switches: u64,
    pub contract_violations: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
    /// Attempts Baton ended before calling the provider (`saturated`,
    /// `breaker_open`): not in `attempts`, the rates or the latency.
    pub never_sent: BTreeMap<String, u64>,
}

/// One route's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteReport {
    /// `-` for requests without a route.
    pub name: String,
    pub requests: u64,
    /// Requests answered (degraded answers included, refusals not).
    pub answered: u64,
    pub success_rate: Option<f64>,
    /// Failed requests by kind, and their share of the requests.
    pub errors: BTreeMap<String, u64>,
    pub error_rates: BTreeMap<String, f64>,
    pub latency: Latencies,
    pub sla_p95_ms: Option<f64>,
    /// Share of requests that ended within `sla_p95`.
    pub sla_attainment: Option<f64>,
    pub sla_met: Option<bool>,
    pub slo: f64,
    /// Share of the error budget not spent (negative: overspent).
    pub error_budget_left: Option<f64>,
    /// Miss rate over the allowed miss rate.
    pub burn_rate: Option<f64>,
    pub fallbacks: u64,
    pub time_to_fallback_ms: Option<f64>,
    pub degraded: u64,
    pub degraded_by: BTreeMap<String, u64>,
    pub refusals: u64,
    pub needs_review: u64,
    pub contract_violations: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
}

/// Sums over every route.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub answered: u64,
    pub failed: u64,
    pub attempts: u64,
    pub fallbacks: u64,
    pub degraded: u64,
    pub refusals: u64,
    pub switches: u64,
    pub unnecessary_switches: u64,
    pub contract_violations: u64,
    pub cost: f64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub since: Timestamp,
    pub until: Timestamp,
    pub period_s: f64,
    pub slo: f64,
    pub sources: Sources,
    pub totals: Totals,
    pub providers: Vec<ProviderReport>,
    pub routes: Vec<RouteReport>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn mean_ms(sum_us: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum_us as f64 / count as f64 / 1_000.0)
}

/// Folds the period's aggregates and raw events into tallies.
pub fn tally(
    store: &Store,
    since_ns: u64,
    until_ns: u64,
    threads: usize,
) -> Result<(Tallies, Sources), StoreError> {
    let telemetry = Telemetry::new(store)?;
    let mut tallies = Tallies::default();
    let mut sources = Sources::default();
    for (key, aggregate) in telemetry.aggregates(since_ns, until_ns)? {
        tallies.add(key.subject, &key.name, &aggregate);
        sources.aggregates += 1;
    }
    let parts = telemetry.scan_parallel(
        since_ns,
        until_ns,
        threads,
        || (Tallies::default(), 0u64),
        |(tallies, seen), event| {
            tallies.fold(&event);
            *seen += 1;
        },
    )?;
    for (part, seen) in parts {
        tallies.merge(&part);
        sources.raw_events += seen;
    }
    Ok((tallies, sources))
}

/// The report of `store` over `options`' period.
pub fn build(store: &Store, options: &ReportOptions) -> Result<Report, StoreError> {
    let (tallies, sources) = tally(store, options.since_ns, options.until_ns, options.threads)?;
    let health = HealthLog::new(store)?.history()?;
    Ok(compute(&tallies, &health, options, sources))
}

/// The report from tallies and health changes (any order; grouped here).
pub fn compute(
    tallies: &Tallies,
    health: &[HealthRecord],
    options: &ReportOptions,
    sources: Sources,
) -> Report {
    let mut changes: BTreeMap<&str, Vec<&HealthRecord>> = BTreeMap::new();
    for change in health {
        changes.entry(&change.provider).or_default().push(change);
    }
    for list in changes.values_mut() {
        list.sort_by_key(|c| c.at_ns);
    }
    let empty = Aggregate::default();

    let provider_names: BTreeSet<&str> = options
        .providers
        .iter()
        .map(String::as_str)
        .chain(tallies.providers.names())
        .chain(changes.keys().copied())
        .collect();
    let providers: Vec<ProviderReport> = provider_names
        .into_iter()
        .map(|name| {
            let tally = tallies.providers.get(name).unwrap_or(&empty);
            let history = changes.get(name).map_or(&[][..], Vec::as_slice);
            provider_report(name, tally, history, options)
        })
        .collect();

    let route_names: BTreeSet<&str> = options
        .routes
        .keys()
        .map(String::as_str)
        .chain(tallies.routes.names())
        .collect();
    let routes: Vec<RouteReport> = route_names
        .into_iter()
        .map(|name| {
            let tally = tallies.routes.get(name).unwrap_or(&empty);
            let target = options.routes.get(name).copied().flatten();
            route_report(name, tally, target, options.slo)
        })
        .collect();

    let mut totals = Totals::default();
    for route in &routes {
        totals.requests += route.requests;
        totals.answered += route.answered;
        totals.failed += route.errors.values().sum::<u64>();
        totals.fallbacks += route.fallbacks;
        totals.degraded += route.degraded;
        totals.refusals += route.refusals;
        totals.cost += route.cost;
    }
    for provider in &providers {
        totals.attempts += provider.attempts;
        totals.switches += provider.switches;
        totals.unnecessary_switches += provider.unnecessary_switches;
        totals.contract_violations += provider.contract_violations;
    }
    let to_time = |ns: u64| Timestamp(UNIX_EPOCH + Duration::from_nanos(ns));
    Report {
        since: to_time(options.since_ns),
        until: to_time(options.until_ns),
        period_s: options.until_ns.saturating_sub(options.since_ns) as f64 / 1e9,
        slo: options.slo,
        sources,
        totals,
        providers,
        routes,
    }
}

fn errors_of(
    tally: &Aggregate,
    not_errors: &[&str],
) -> (BTreeMap<String, u64>, BTreeMap<String, f64>) {
    let errors: BTreeMap<String, u64> = tally
        .outcomes
        .iter()
        .filter(|(kind, _)| !not_errors.contains(&kind.as_str()))
        .map(|(kind, n)| (kind.clone(), *n))
        .collect();
    let rates = errors
        .iter()
        .map(|(kind, n)| (kind.clone(), *n as f64 / tally.count.max(1) as f64))
        .collect();
    (errors, rates)
}

/// `name n, name n` for a note under a table row.
fn counts_line(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn provider_report(
    name: &str,
    tally: &Aggregate,
    history: &[&HealthRecord],
    options: &ReportOptions,
) -> ProviderReport {
    let ok = tally.outcomes.get("ok").copied().unwrap_or(0);
    let (errors, error_rates) = errors_of(tally, &["ok"]);
    ProviderReport {
        name: name.to_owned(),
        attempts: tally.count,
        ok,
        success_rate: ratio(ok, tally.count),
        errors,
        error_rates,
        latency: Latencies::of(tally),
        availability: availability(history, options.since_ns, options.until_ns),
        fallback_recoveries: tally.to_fallback_count,
        time_to_fallback_ms: mean_ms(tally.to_fallback_us, tally.to_fallback_count),
        switches: tally.switches,
        unnecessary_switches: tally.unnecessary_switches,
        contract_violations: tally.contract_violations,
        input_tokens: tally.input_tokens,
        output_tokens: tally.output_tokens,
        cost: tally.cost(),
        never_sent: tally.never_sent.clone(),
    }
}

fn route_report(name: &str, tally: &Aggregate, target: Option<Duration>, slo: f64) -> RouteReport {
    let answered = tally.outcomes.get("ok").copied().unwrap_or(0);
    let (errors, error_rates) = errors_of(tally, &["ok", "refusal"]);
    let sla_attainment = target.and_then(|t| ratio(tally.latency.count_within(t), tally.count));
    let missed = tally.count - answered.min(tally.count);
    let allowed = (1.0 - slo) * tally.count as f64;
    let (error_budget_left, burn_rate) = if tally.count > 0 {
        (
            Some(1.0 - missed as f64 / allowed),
            Some(missed as f64 / tally.count as f64 / (1.0 - slo)),
        )
    } else {
        (None, None)
    };
    RouteReport {
        name: if name.is_empty() { "-" } else { name }.to_owned(),
        requests: tally.count,
        answered,
        success_rate: ratio(answered, tally.count),
        errors,
        error_rates,
        latency: Latencies::of(tally),
        sla_p95_ms: target.map(ms),
        sla_attainment,
        sla_met: sla_attainment.map(|share| share >= SLA_SHARE),
        slo,
        error_budget_left,
        burn_rate,
        fallbacks: tally.fallbacks,
        time_to_fallback_ms: mean_ms(tally.to_fallback_us, tally.to_fallback_count),
        degraded: tally.degraded,
        degraded_by: tally.degraded_by.clone(),
        refusals: tally.refusals,
        needs_review: tally.needs_review,
        contract_violations: tally.contract_violations,
        input_tokens: tally.input_tokens,
        output_tokens: tally.output_tokens,
        cost: tally.cost(),
    }
}

const DOWN: &str = "down";

/// Uptime and outages over `since_ns..until_ns` from one provider's
/// changes in time order.
pub fn availability(history: &[&HealthRecord], since_ns: u64, until_ns: u64) -> Availability {
    // Outages as (start, end) over the whole history: one open when the
    // history starts has no known start, one still open has no end.
    let mut outages: Vec<(Option<u64>, Option<u64>)> = Vec::new();
    let mut open: Option<Option<u64>> = history.first().filter(|c| c.from == DOWN).map(|_| None);
    for change in history {
        match (change.to == DOWN, open) {
            (true, None) => open = Some(Some(change.at_ns)),
            (false, Some(start)) => {
                outages.push((start, Some(change.at_ns)));
                open = None;
            }
            // Down again while down, or up again while up: no edge.
            _ => {}
        }
    }
    if let Some(start) = open {
        outages.push((start, None));
    }

    let mut down_ns = 0u64;
    let mut overlapping = 0u64;
    let mut repairs = Vec::new();
    for &(start, end) in &outages {
        let from = start.unwrap_or(0).max(since_ns);
        let to = end.unwrap_or(u64::MAX).min(until_ns);
        if from < to {
            overlapping += 1;
            down_ns += to - from;
        }
        if let (Some(start), Some(end)) = (start, end)
            && end > since_ns
            && end <= until_ns
        {
            repairs.push(end - start);
        }
    }
    let period = until_ns.saturating_sub(since_ns);
    let recoveries = repairs.len() as u64;
    Availability {
        uptime: if period == 0 {
            1.0
        } else {
            1.0 - down_ns as f64 / period as f64
        },
        down_ms: down_ns as f64 / 1e6,
        outages: overlapping,
        recoveries,
        mttr_ms: (recoveries > 0)
            .then(|| repairs.iter().sum::<u64>() as f64 / recoveries as f64 / 1e6),
        down_at_end: outages.iter().any(|&(start, end)| {
            start.unwrap_or(0) < until_ns && end.is_none_or(|end| end > until_ns)
        }),
    }
}

/// `1.23s`, `850ms`, `12.5ms`, `250µs`, `1m15s`, `2h05m`.
pub fn human_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1_000.0)
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.2}s", ms / 1_000.0)
    } else if ms < 3_600_000.0 {
        let seconds = (ms / 1_000.0).round() as u64;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        let minutes = (ms / 60_000.0).round() as u64;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), human_ms)
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |s| format!("{:.2}%", s * 100.0))
}

/// A people's line of error rates: `5xx 3.00%, timeout 1.00%`.
fn error_line(rates: &BTreeMap<String, f64>, counts: &BTreeMap<String, u64>) -> String {
    let mut by_count: Vec<_> = rates.iter().collect();
    by_count.sort_by(|a, b| counts[b.0].cmp(&counts[a.0]).then(a.0.cmp(b.0)));
    by_count
        .iter()
        .map(|(kind, rate)| format!("{kind} {:.2}% ({})", *rate * 100.0, counts[*kind]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lays rows out under their headers, columns padded to fit; the first
/// column is left-aligned, the figures right-aligned.
fn table(headers: &[&str], rows: &[(Vec<String>, Option<String>)]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for (cells, _) in rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<width$}");
            } else {
                let _ = write!(text, "  {cell:>width$}");
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut text = line(&mut headers.iter().copied());
    for (cells, note) in rows {
        text.push_str(&line(&mut cells.iter().map(String::as_str)));
        if let Some(note) = note {
            let _ = writeln!(text, "    {note}");
        }
    }
    text
}

impl Report {
    /// The report for people.
    pub fn to_table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "from {} to {} ({}); SLO: {:.2}% of requests answered",
            self.since,
            self.until,
            human_ms(self.period_s * 1_000.0),
            self.slo * 100.0
        );
        let t = &self.totals;
        let _ = writeln!(
            text,
            "{} requests: {} answered ({} degraded), {} refused, {} failed; {} attempts, {} fallbacks, {} switches ({} unnecessary), {} contract violations, cost {:.4}",
            t.requests,
            t.answered,
            t.degraded,
            t.refusals,
            t.failed,
            t.attempts,
            t.fallbacks,
            t.switches,
            t.unnecessary_switches,
            t.contract_violations,
            t.cost
        );
        let _ = writeln!(
            text,
            "read {} raw events and {} per-minute aggregates\n",
            self.sources.raw_events, self.sources.aggregates
        );

        let rows: Vec<_> = self
            .providers
            .iter()
            .map(|p| {
                let mttr = match (p.availability.mttr_ms, p.availability.outages) {
                    (Some(mttr), _) => human_ms(mttr),
                    (None, 0) => "-".to_owned(),
                    (None, _) => "open".to_owned(),
                };
                let cells = vec![
                    p.name.clone(),
                    p.attempts.to_string(),
                    percent(p.success_rate),
                    opt_ms(p.latency.p50_ms),
                    opt_ms(p.latency.p95_ms),
                    opt_ms(p.latency.p99_ms),
                    opt_ms(p.latency.max_ms),
                    percent(Some(p.availability.uptime)),
                    p.availability.outages.to_string(),
                    mttr,
                    opt_ms(p.time_to_fallback_ms),
                    format!("{}/{}", p.switches, p.unnecessary_switches),
                    p.contract_violations.to_string(),
                    format!("{:.4}", p.cost),
                ];
                let mut notes = Vec::new();
                if !p.errors.is_empty() {
                    notes.push(format!("errors: {}", error_line(&p.error_rates, &p.errors)));
                }
                if !p.never_sent.is_empty() {
                    notes.push(format!(
                        "not sent (Baton moved on first): {}",
                        counts_line(&p.never_sent)
                    ));
                }
                (cells, (!notes.is_empty()).then(|| notes.join("; ")))
            })
            .collect();
        text.push_str(&table(
            &[
                "PROVIDER",
                "ATTEMPTS",
                "OK",
                "P50",
                "P95",
                "P99",
                "MAX",
                "UPTIME",
                "OUTAGES",
                "MTTR",
                "TO-FALLBACK",
                "SWITCHES/UNNEEDED",
                "CONTRACT",
                "COST",
            ],
            &rows,
        ));
        text.push('\n');

        let rows: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                let sla = match (r.sla_p95_ms, r.sla_attainment) {
                    (Some(target), Some(share)) => {
                        format!("{} within {}", percent(Some(share)), human_ms(target))
                    }
                    (Some(target), None) => format!("- within {}", human_ms(target)),
                    (None, _) => "no target".to_owned(),
                };
                let cells = vec![
                    r.name.clone(),
                    r.requests.to_string(),
                    percent(r.success_rate),
                    opt_ms(r.latency.p50_ms),
                    opt_ms(r.latency.p95_ms),
                    opt_ms(r.latency.p99_ms),
                    opt_ms(r.latency.max_ms),
                    sla,
                    percent(r.error_budget_left),
                    r.burn_rate
                        .map_or_else(|| "-".to_owned(), |b| format!("{b:.2}")),
                    r.fallbacks.to_string(),
                    opt_ms(r.time_to_fallback_ms),
                    r.degraded.to_string(),
                    r.refusals.to_string(),
                    format!("{:.4}", r.cost),
                ];
                let mut notes = Vec::new();
                if !r.errors.is_empty() {
                    notes.push(format!("errors: {}", error_line(&r.error_rates, &r.errors)));
                }
                if !r.degraded_by.is_empty() {
                    notes.push(format!("degraded: {}", counts_line(&r.degraded_by)));
                }
                if r.contract_violations > 0 {
                    notes.push(format!("contract violations: {}", r.contract_violations));
                }
                (cells, (!notes.is_empty()).then(|| notes.join("; ")))
            })
            .collect();
        text.push_str(&table(
            &[
                "ROUTE",
                "REQUESTS",
                "OK",
                "P50",
                "P95",
                "P99",
                "MAX",
                "SLA P95",
                "BUDGET LEFT",
                "BURN",
                "FALLBACKS",
                "TO-FALLBACK",
                "DEGRADED",
                "REFUSALS",
                "COST",
            ],
            &rows,
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn change(from: &str, to: &str, at_s: u64) -> HealthRecord {
        HealthRecord {
            provider: "p".into(),
            from: from.into(),
            to: to.into(),
            reason: "test".into(),
            at_ns: at_s * S,
        }
    }

    fn of(changes: &[HealthRecord], since_s: u64, until_s: u64) -> Availability {
        let refs: Vec<&HealthRecord> = changes.iter().collect();
        availability(&refs, since_s * S, until_s * S)
    }

    #[test]
    fn uptime_and_mttr_over_two_outages_one_still_open() {
        // Period 0..1000 s; down 100..160 (60 s) and from 900 on (100 s):
        // uptime 1 - 160/1000 = 0.84; one repair of 60 s.
        let a = of(
            &[
                change("healthy", "down", 100),
                change("down", "healthy", 160),
                change("healthy", "down", 900),
            ],
            0,
            1000,
        );
        assert!((a.uptime - 0.84).abs() < 1e-12, "{a:?}");
        assert_eq!(a.down_ms, 160_000.0);
        assert_eq!((a.outages, a.recoveries), (2, 1));
        assert_eq!(a.mttr_ms, Some(60_000.0));
        assert!(a.down_at_end);
    }

    #[test]
    fn an_outage_begun_before_the_period_counts_whole_for_mttr_and_clipped_for_uptime() {
        // Down 50..130 s, period 100..200: 30 s of it down; MTTR 80 s.
        let a = of(
            &[
                change("healthy", "down", 50),
                change("down", "healthy", 130),
            ],
            100,
            200,
        );
        assert!((a.uptime - 0.7).abs() < 1e-12, "{a:?}");
        assert_eq!((a.outages, a.recoveries), (1, 1));
        assert_eq!(a.mttr_ms, Some(80_000.0));
        assert!(!a.down_at_end);
        // Repaired before the period: not its outage at all.
        let before = of(
            &[change("healthy", "down", 10), change("down", "healthy", 20)],
            100,
            200,
        );
        assert_eq!(
            (before.uptime, before.outages, before.mttr_ms),
            (1.0, 0, None)
        );
    }

    #[test]
    fn a_history_that_starts_down_is_down_until_its_first_change_with_no_mttr() {
        let a = of(&[change("down", "healthy", 150)], 100, 200);
        assert!((a.uptime - 0.5).abs() < 1e-12, "{a:?}");
        assert_eq!((a.outages, a.recoveries, a.mttr_ms), (1, 0, None));
    }

    #[test]
    fn degraded_is_up_and_repeated_down_is_one_outage() {
        let a = of(
            &[
                change("healthy", "degraded", 10),
                change("degraded", "down", 20),
                change("down", "down", 25),
                change("down", "degraded", 40),
                change("degraded", "healthy", 50),
            ],
            0,
            100,
        );
        assert!((a.uptime - 0.8).abs() < 1e-12, "{a:?}");
        assert_eq!((a.outages, a.recoveries, a.mttr_ms), (1, 1, Some(20_000.0)));
        let none = of(&[], 0, 100);
        assert_eq!((none.uptime, none.outages), (1.0, 0));
    }

    fn route_tally(answered: u64, failed: u64, refused: u64) -> Aggregate {
        let mut tally = Aggregate {
            count: answered + failed + refused,
            ..Aggregate::default()
        };
        tally.outcomes.insert("ok".into(), answered);
        if failed > 0 {
            tally.outcomes.insert("5xx".into(), failed);
        }
        if refused > 0 {
            tally.outcomes.insert("refusal".into(), refused);
        }
        tally.refusals = refused;
        for i in 0..tally.count {
            tally.latency.record_us(1_000 * (i + 1));
        }
        tally.max_latency_us = 1_000 * tally.count;
        tally
    }

    #[test]
    fn the_error_budget_counts_failures_and_refusals_against_the_objective() {
        // 1000 requests, 5 failed + 3 refused = 8 missed; 1% allowed = 10:
        // 20% of the budget left, burning at 0.8.
        let r = route_report("default", &route_tally(992, 5, 3), None, 0.99);
        assert_eq!((r.requests, r.answered), (1000, 992));
        assert!((r.error_budget_left.unwrap() - 0.2).abs() < 1e-9, "{r:?}");
        assert!((r.burn_rate.unwrap() - 0.8).abs() < 1e-9, "{r:?}");
        assert_eq!(r.errors, BTreeMap::from([("5xx".into(), 5)]));
        assert!((r.error_rates["5xx"] - 0.005).abs() < 1e-12);
        assert_eq!(r.sla_attainment, None);
        // Twice the allowed misses: the budget is overspent by as much.
        let over = route_report("default", &route_tally(98, 2, 0), None, 0.99);
        assert!(
            (over.error_budget_left.unwrap() + 1.0).abs() < 1e-9,
            "{over:?}"
        );
        assert!((over.burn_rate.unwrap() - 2.0).abs() < 1e-9);
        let idle = route_report("default", &Aggregate::default(), None, 0.99);
        assert_eq!(
            (idle.error_budget_left, idle.burn_rate, idle.success_rate),
            (None, None, None)
        );
    }

    #[test]
    fn sla_attainment_is_the_share_within_the_target() {
        // Latencies 1..=100 ms; target 95 ms: 95 of 100 within, met.
        let r = route_report(
            "r",
            &route_tally(100, 0, 0),
            Some(Duration::from_millis(95)),
            0.99,
        );
        assert_eq!(r.sla_attainment, Some(0.95));
        assert_eq!(r.sla_met, Some(true));
        let r = route_report(
            "r",
            &route_tally(100, 0, 0),
            Some(Duration::from_millis(90)),
            0.99,
        );
        assert_eq!((r.sla_attainment, r.sla_met), (Some(0.90), Some(false)));
        assert_eq!(r.latency.max_ms, Some(100.0));
    }

    #[test]
    fn the_table_names_every_provider_and_route_with_its_errors() {
        let mut tallies = Tallies::default();
        *tallies.at(super::super::aggregate::Subject::Route, "default") = route_tally(9, 1, 0);
        let mut options = ReportOptions::new(0, 3_600 * S);
        options.providers.insert("idle".into());
        let report = compute(
            &tallies,
            &[change("healthy", "down", 1800)],
            &options,
            Sources::default(),
        );
        let table = report.to_table();
        for needle in [
            "PROVIDER",
            "ROUTE",
            "idle",
            "default",
            "errors: 5xx 10.00% (1)",
            "50.00%",
        ] {
            assert!(table.contains(needle), "no {needle:?} in\n{table}");
        }
        assert_eq!(report.totals.requests, 10);
        assert_eq!(report.totals.failed, 1);
        let p = report.providers.iter().find(|p| p.name == "p").unwrap();
        assert_eq!(p.availability.uptime, 0.5);
        assert_eq!(p.success_rate, None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(0.25), "250µs");
        assert_eq!(human_ms(12.34), "12.3ms");
        assert_eq!(human_ms(850.0), "850ms");
        assert_eq!(human_ms(1_234.0), "1.23s");
        assert_eq!(human_ms(75_000.0), "1m15s");
        assert_eq!(human_ms(7_500_000.0), "2h05m");
    }
}
