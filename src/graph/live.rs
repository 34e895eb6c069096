//! What the store says happened recently, laid over the graph: breaker
//! state and health per provider, error rates by failure mode and p95
//! latency from telemetry, each agent's current binding, and which
//! providers met or broke each data contract.
//!
//! The binding is the provider a supervisor last switched the worker to
//! within the period; without a switch, the first provider of its route
//! that can serve it and is not down (what the supervisor binds at start).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::analysis::{self, Outage};
use super::{DependencyGraph, NodeKind};
use crate::store::health::HealthLog;
use crate::store::telemetry::{Event, Telemetry};
use crate::store::{Store, StoreError};
use crate::telemetry::report::{self, ReportOptions};

/// Live facts for one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// The telemetry period, ms since the epoch.
    pub since_ms: u64,
    pub until_ms: u64,
    /// By provider name.
    pub providers: BTreeMap<String, ProviderLive>,
    /// By agent id (`agent:SWARM/NAME`): the provider serving it now.
    pub bindings: BTreeMap<String, Binding>,
    /// By contract id, then provider: answers that met or broke it.
    pub contracts: BTreeMap<String, BTreeMap<String, ContractTally>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderLive {
    /// `healthy`, `degraded` or `down`, as last recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// `closed`, `open` or `half_open`, as last saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Whether its API key is set where the graph was read; `None` when
    /// it needs none or nobody asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_set: Option<bool>,
    pub attempts: u64,
    /// Failure mode (`timeout`, `429`, `cut_stream`, `contract`, ...) ->
    /// share of attempts.
    pub error_rates: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
}

impl ProviderLive {
    /// Out of service now: health Down or the breaker open.
    pub fn is_down(&self) -> bool {
        self.health.as_deref() == Some("down") || self.breaker.as_deref() == Some("open")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub provider: String,
    /// `switch` (a supervisor moved it there) or `primary` (the first
    /// provider able to serve it that is up).
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTally {
    pub met: u64,
    pub broken: u64,
}

/// Reads the live facts of `graph`'s providers, agents and contracts from
/// `store` for `since_ns <= t < until_ns`. `keys` tells, per provider
/// name, whether its key is set here.
pub fn read(
    store: &Store,
    graph: &DependencyGraph,
    keys: &HashMap<String, bool>,
    since_ns: u64,
    until_ns: u64,
) -> Result<Live, StoreError> {
    let mut live = Live {
        since_ms: since_ns / 1_000_000,
        until_ms: until_ns / 1_000_000,
        ..Live::default()
    };
    let health = HealthLog::new(store)?;
    let mut options = ReportOptions::new(since_ns, until_ns);
    options.providers = graph
        .nodes_of(NodeKind::Provider)
        .map(|(_, node)| node.label())
        .collect();
    let report = report::build(store, &options)?;
    let reports: HashMap<&str, &report::ProviderReport> = report
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    for name in &options.providers {
        let mut facts = ProviderLive {
            health: health.history_of(name)?.last().map(|r| r.to.clone()),
            breaker: health.breaker(name)?.map(|b| b.state),
            key_set: keys.get(name).copied(),
            ..ProviderLive::default()
        };
        if let Some(tally) = reports.get(name.as_str()) {
            facts.attempts = tally.attempts;
            facts.error_rates = tally.error_rates.clone();
            facts.p95_ms = tally.latency.p95_ms;
        }
        live.providers.insert(name.clone(), facts);
    }

    let contract_of: HashMap<String, String> = graph
        .nodes_of(NodeKind::Contract)
        .filter_map(|(_, node)| match node {
            super::Node::Contract { swarm, agent, .. } => {
                Some((format!("{swarm}/{agent}"), node.id()))
            }
            _ => None,
        })
        .collect();
    Telemetry::new(store)?.scan(since_ns, until_ns, |event| match event {
        Event::Switch(switch) => {
            live.bindings.insert(
                format!("agent:{}/{}", switch.swarm, switch.worker),
                Binding {
                    provider: switch.to,
                    from: "switch".to_owned(),
                    since_ms: Some(switch.at_ns / 1_000_000),
                },
            );
        }
        Event::Attempt(attempt) if !contract_of.is_empty() => {
            let Some(contract) = contract_of.get(&format!("{}/{}", attempt.swarm, attempt.worker))
            else {
                return;
            };
            let tally = live
                .contracts
                .entry(contract.clone())
                .or_default()
                .entry(attempt.provider.to_owned())
                .or_default();
            match attempt.outcome {
                "ok" => tally.met += 1,
                "contract" => tally.broken += 1,
                _ => {}
            }
        }
        _ => {}
    })?;

    let mut out_now = Outage::none();
    for (index, node) in graph.nodes_of(NodeKind::Provider) {
        let name = node.label();
        let down = live.providers.get(&name).is_some_and(ProviderLive::is_down);
        if down || keys.get(&name) == Some(&false) {
            out_now.providers.insert(index);
        }
    }
    for agent in analysis::agents(graph) {
        let id = graph.node(agent.index).id();
        if live.bindings.contains_key(&id) {
            continue;
        }
        let Some(route) = agent.route else { continue };
        let paths =
            analysis::route_paths(graph, route, agent.requires, agent.has_knowledge, &out_now);
        if let Some(provider) = paths.full.first().and_then(|p| graph.provider_name(*p)) {
            live.bindings.insert(
                id,
                Binding {
                    provider: provider.to_owned(),
                    from: "primary".to_owned(),
                    since_ms: None,
                },
            );
        }
    }
    Ok(live)
}
