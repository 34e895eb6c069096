//! Questions the graph answers: how many independent ways each agent has
//! to be served, which failure domains are single points of failure, what
//! an outage takes down, and what a policy gets wrong.
//!
//! A *full* path is a provider (remote or local model) in the agent's
//! route that provides every capability the agent requires. A *degraded*
//! path is the cache or the extractive surrogate: they keep answering, but
//! not as a model would. An agent whose full paths all depend on one
//! failure domain has a single point of failure there, however many
//! degraded paths it has.
//!
//! Every analysis takes an [`Outage`]: what to treat as already gone
//! (`baton graph --keys-set` passes the providers whose key is missing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use petgraph::graph::NodeIndex;
use serde::Serialize;

use super::{DependencyGraph, EdgeKind, Node, NodeKind, fallback_name};
use crate::config::FinalFallback;
use crate::swarm::Capability;

/// What is assumed out of service.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    pub providers: HashSet<NodeIndex>,
    pub domains: HashSet<String>,
}

impl Outage {
    pub fn none() -> Outage {
        Outage::default()
    }

    /// Whether `provider` (a provider node) is out under this outage.
    pub fn hits(&self, graph: &DependencyGraph, provider: NodeIndex) -> bool {
        if self.providers.contains(&provider) {
            return true;
        }
        match graph.node(provider) {
            Node::Provider { domain, .. } => self.domains.contains(domain),
            _ => false,
        }
    }

    /// This outage and `target` going down too: a provider, a failure
    /// domain, or a model (every provider reaching it).
    pub fn with(&self, graph: &DependencyGraph, target: NodeIndex) -> Outage {
        let mut outage = self.clone();
        match graph.node(target) {
            Node::Provider { .. } => {
                outage.providers.insert(target);
            }
            Node::Domain { name } => {
                outage.domains.insert(name.clone());
            }
            Node::Model { .. } => {
                outage
                    .providers
                    .extend(graph.sources(target, EdgeKind::DependsOn));
            }
            _ => {}
        }
        outage
    }
}

/// The ways one route can serve one set of requirements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paths {
    /// Providers able to answer in full, in failover order.
    pub full: Vec<NodeIndex>,
    /// Providers of the route passed over for lacking a required capability.
    pub lacking: Vec<(NodeIndex, Vec<Capability>)>,
    /// The degraded last resorts, in order.
    pub degraded: Vec<FinalFallback>,
}

impl Paths {
    pub fn level(&self) -> Level {
        if !self.full.is_empty() {
            Level::Full
        } else if !self.degraded.is_empty() {
            Level::Degraded
        } else {
            Level::None
        }
    }

    /// The failure domains of the full paths, sorted.
    pub fn domains(&self, graph: &DependencyGraph) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .full
            .iter()
            .filter_map(|p| domain_of(graph, *p))
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

/// How well something can be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    None,
    Degraded,
    Full,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Degraded => "degraded",
            Level::Full => "full",
        }
    }
}

fn domain_of(graph: &DependencyGraph, provider: NodeIndex) -> Option<&str> {
    match graph.node(provider) {
        Node::Provider { domain, .. } => Some(domain),
        _ => None,
    }
}

/// The paths of `route` for an agent requiring `requires`; `extractive`
/// counts only when `has_knowledge` (it answers from a knowledge base).
pub fn route_paths(
    graph: &DependencyGraph,
    route: NodeIndex,
    requires: &[Capability],
    has_knowledge: bool,
    outage: &Outage,
) -> Paths {
    let mut paths = Paths::default();
    let providers = graph
        .targets(route, EdgeKind::ServedBy)
        .into_iter()
        .chain(graph.targets(route, EdgeKind::FallsBackTo));
    for (target, _) in providers {
        match graph.node(target) {
            Node::Provider { capabilities, .. } => {
                if outage.hits(graph, target) {
                    continue;
                }
                let missing: Vec<Capability> = requires
                    .iter()
                    .filter(|c| !capabilities.contains(c))
                    .copied()
                    .collect();
                if missing.is_empty() {
                    paths.full.push(target);
                } else {
                    paths.lacking.push((target, missing));
                }
            }
            Node::Fallback { name } if *name != FinalFallback::Extractive || has_knowledge => {
                paths.degraded.push(*name);
            }
            _ => {}
        }
    }
    paths
}

/// One agent, as the analyses see it.
#[derive(Debug, Clone)]
pub struct AgentView<'a> {
    pub index: NodeIndex,
    pub swarm: &'a str,
    pub name: &'a str,
    pub requires: &'a [Capability],
    pub route: Option<NodeIndex>,
    pub has_knowledge: bool,
}

/// Every agent of the graph, sorted by swarm and name.
pub fn agents(graph: &DependencyGraph) -> Vec<AgentView<'_>> {
    let knowledge: HashMap<&str, bool> = graph
        .nodes_of(NodeKind::Swarm)
        .filter_map(|(_, node)| match node {
            Node::Swarm {
                name,
                has_knowledge,
            } => Some((name.as_str(), *has_knowledge)),
            _ => None,
        })
        .collect();
    let mut agents = graph
        .nodes_of(NodeKind::Agent)
        .filter_map(|(index, node)| match node {
            Node::Agent {
                swarm,
                name,
                requires,
                ..
            } => Some(AgentView {
                index,
                swarm,
                name,
                requires,
                route: graph
                    .targets(index, EdgeKind::BoundTo)
                    .first()
                    .map(|(route, _)| *route),
                has_knowledge: knowledge.get(swarm.as_str()).copied().unwrap_or(false),
            }),
            _ => None,
        })
        .collect::<Vec<_>>();
    agents.sort_by(|a, b| (a.swarm, a.name).cmp(&(b.swarm, b.name)));
    agents
}

/// Memoised paths: agents of one route with the same requirements share
/// them (a swarm of thousands of agents has a handful of routes).
struct PathCache<'g> {
    graph: &'g DependencyGraph,
    outage: &'g Outage,
    known: HashMap<(NodeIndex, u8, bool), Paths>,
}

impl<'g> PathCache<'g> {
    fn new(graph: &'g DependencyGraph, outage: &'g Outage) -> PathCache<'g> {
        PathCache {
            graph,
            outage,
            known: HashMap::new(),
        }
    }

    fn of(&mut self, agent: &AgentView<'_>) -> Paths {
        let Some(route) = agent.route else {
            return Paths::default();
        };
        let mask = agent
            .requires
            .iter()
            .fold(0u8, |mask, c| mask | (1 << (*c as u8)));
        self.known
            .entry((route, mask, agent.has_knowledge))
            .or_insert_with(|| {
                route_paths(
                    self.graph,
                    route,
                    agent.requires,
                    agent.has_knowledge,
                    self.outage,
                )
            })
            .clone()
    }
}

fn names(graph: &DependencyGraph, providers: &[NodeIndex]) -> Vec<String> {
    providers
        .iter()
        .filter_map(|p| graph.provider_name(*p).map(str::to_owned))
        .collect()
}

fn fallback_names(fallbacks: &[FinalFallback]) -> Vec<String> {
    fallbacks
        .iter()
        .map(|f| fallback_name(*f).to_owned())
        .collect()
}

fn route_name(graph: &DependencyGraph, route: Option<NodeIndex>) -> Option<String> {
    route.map(|r| graph.node(r).label())
}

/// How one agent can be served: `baton graph services`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub swarm: String,
    pub agent: String,
    pub route: Option<String>,
    pub requires: Vec<Capability>,
    pub level: Level,
    /// Providers able to answer in full, in failover order.
    pub full: Vec<String>,
    /// Their distinct failure domains: independent full paths.
    pub full_domains: Vec<String>,
    pub degraded: Vec<String>,
}

pub fn services(graph: &DependencyGraph, outage: &Outage) -> Vec<Service> {
    let mut cache = PathCache::new(graph, outage);
    agents(graph)
        .iter()
        .map(|agent| {
            let paths = cache.of(agent);
            Service {
                swarm: agent.swarm.to_owned(),
                agent: agent.name.to_owned(),
                route: route_name(graph, agent.route),
                requires: agent.requires.to_vec(),
                level: paths.level(),
                full: names(graph, &paths.full),
                full_domains: paths.domains(graph),
                degraded: fallback_names(&paths.degraded),
            }
        })
        .collect()
}

/// An agent's single points of failure at full service: `baton graph spof`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spof {
    pub swarm: String,
    pub agent: String,
    pub route: Option<String>,
    /// Failure domains whose loss alone leaves no full path.
    pub domains: Vec<String>,
    /// Providers whose loss alone leaves no full path.
    pub providers: Vec<String>,
    /// No full path even now: every answer is degraded (or none).
    pub no_full_service: bool,
    /// What still answers when the single point fails.
    pub left: Vec<String>,
}

impl Spof {
    pub fn any(&self) -> bool {
        self.no_full_service || !self.domains.is_empty() || !self.providers.is_empty()
    }
}

/// For every agent, the domains and providers each of which alone stands
/// between it and degraded service. Providers have one domain each, so a
/// domain is a single point exactly when every full path lies in it.
pub fn spof(graph: &DependencyGraph, outage: &Outage) -> Vec<Spof> {
    let mut cache = PathCache::new(graph, outage);
    agents(graph)
        .iter()
        .map(|agent| {
            let paths = cache.of(agent);
            let domains = paths.domains(graph);
            Spof {
                swarm: agent.swarm.to_owned(),
                agent: agent.name.to_owned(),
                route: route_name(graph, agent.route),
                domains: if domains.len() == 1 {
                    domains
                } else {
                    Vec::new()
                },
                providers: if paths.full.len() == 1 {
                    names(graph, &paths.full)
                } else {
                    Vec::new()
                },
                no_full_service: paths.full.is_empty(),
                left: fallback_names(&paths.degraded),
            }
        })
        .collect()
}

/// What an outage does to one thing that was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Its first full path stays; nothing it relies on changes.
    Unaffected,
    /// Its first path stays, but a fallback behind it is lost.
    LosesFallback,
    /// Its first full path is lost; another full path answers.
    FailsOver,
    /// No full path is left: the cache or the surrogate answers.
    Degraded,
    /// Nothing answers.
    Down,
}

impl Impact {
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::Unaffected => "unaffected",
            Impact::LosesFallback => "loses a fallback",
            Impact::FailsOver => "fails over",
            Impact::Degraded => "degraded",
            Impact::Down => "down",
        }
    }

    fn of(before: &Paths, after: &Paths) -> Impact {
        match after.level() {
            Level::None if before.level() != Level::None => Impact::Down,
            Level::Degraded if before.level() == Level::Full => Impact::Degraded,
            _ if before.full.first() != after.full.first() => Impact::FailsOver,
            _ if before.full.len() != after.full.len()
                || before.degraded.len() != after.degraded.len() =>
            {
                Impact::LosesFallback
            }
            _ => Impact::Unaffected,
        }
    }
}

/// One agent or route under an outage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affected {
    /// `swarm/agent` for an agent, the name for a route.
    pub name: String,
    pub impact: Impact,
    /// What answers first during the outage (a provider or a fallback).
    pub served_by: Option<String>,
    /// What answered first before it.
    pub was: Option<String>,
}

/// One swarm under an outage: its worst-off agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwarmAffected {
    pub name: String,
    pub impact: Impact,
    /// Agents per impact.
    pub agents: BTreeMap<String, usize>,
}

/// `baton graph blast-radius NODE`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlastRadius {
    /// The node that goes down (`provider:NAME`, `domain:NAME`, `model:NAME`).
    pub node: String,
    /// The providers it takes down.
    pub providers_down: Vec<String>,
    /// Every agent that is not unaffected.
    pub agents: Vec<Affected>,
    /// Every route that is not unaffected (as served with no requirements).
    pub routes: Vec<Affected>,
    /// Every swarm with an agent that is not unaffected.
    pub swarms: Vec<SwarmAffected>,
}

fn first(graph: &DependencyGraph, paths: &Paths) -> Option<String> {
    paths
        .full
        .first()
        .and_then(|p| graph.provider_name(*p).map(str::to_owned))
        .or_else(|| paths.degraded.first().map(|f| fallback_name(*f).to_owned()))
}

/// Why a node name could not be used for a blast radius.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("no provider, failure domain or model named `{0}` in the graph")]
    Unknown(String),
    #[error("`{name}` is both {}; say which, e.g. `{}`", .ids.join(" and "), .ids[0])]
    Ambiguous { name: String, ids: Vec<String> },
    #[error("`{0}` is not a provider, failure domain or model: only those can go down")]
    NotAnOutage(String),
}

/// The node a user names: an id (`domain:openai`), or a bare name that is
/// exactly one provider, domain or model.
pub fn resolve(graph: &DependencyGraph, name: &str) -> Result<NodeIndex, NodeError> {
    let can_fail = |index: NodeIndex| {
        matches!(
            graph.node(index).kind(),
            NodeKind::Provider | NodeKind::Domain | NodeKind::Model
        )
    };
    if let Some(index) = graph.index(name) {
        return if can_fail(index) {
            Ok(index)
        } else {
            Err(NodeError::NotAnOutage(name.to_owned()))
        };
    }
    let ids: Vec<String> = ["provider", "domain", "model"]
        .iter()
        .map(|kind| format!("{kind}:{name}"))
        .filter(|id| graph.index(id).is_some())
        .collect();
    match ids.as_slice() {
        [] => Err(NodeError::Unknown(name.to_owned())),
        [id] => Ok(graph.index(id).expect("found above")),
        _ => Err(NodeError::Ambiguous {
            name: name.to_owned(),
            ids,
        }),
    }
}

pub fn blast_radius(graph: &DependencyGraph, target: NodeIndex, outage: &Outage) -> BlastRadius {
    let during = outage.with(graph, target);
    let mut before = PathCache::new(graph, outage);
    let mut after = PathCache::new(graph, &during);
    let mut agents_hit = Vec::new();
    let mut swarms: BTreeMap<String, SwarmAffected> = BTreeMap::new();
    for agent in agents(graph) {
        let (was, now) = (before.of(&agent), after.of(&agent));
        let impact = Impact::of(&was, &now);
        if impact == Impact::Unaffected {
            continue;
        }
        let swarm = swarms
            .entry(agent.swarm.to_owned())
            .or_insert_with(|| SwarmAffected {
                name: agent.swarm.to_owned(),
                impact,
                agents: BTreeMap::new(),
            });
        swarm.impact = swarm.impact.max(impact);
        *swarm.agents.entry(impact.as_str().to_owned()).or_default() += 1;
        agents_hit.push(Affected {
            name: format!("{}/{}", agent.swarm, agent.name),
            impact,
            served_by: first(graph, &now),
            was: first(graph, &was),
        });
    }
    let mut routes = Vec::new();
    for (route, node) in graph.nodes_of(NodeKind::Route) {
        let was = route_paths(graph, route, &[], true, outage);
        let now = route_paths(graph, route, &[], true, &during);
        let impact = Impact::of(&was, &now);
        if impact != Impact::Unaffected {
            routes.push(Affected {
                name: node.label(),
                impact,
                served_by: first(graph, &now),
                was: first(graph, &was),
            });
        }
    }
    let providers_down = graph
        .nodes_of(NodeKind::Provider)
        .filter(|(index, _)| during.hits(graph, *index) && !outage.hits(graph, *index))
        .map(|(_, node)| node.label())
        .collect();
    BlastRadius {
        node: graph.node(target).id(),
        providers_down,
        agents: agents_hit,
        routes,
        swarms: swarms.into_values().collect(),
    }
}

/// How bad a finding is: errors fail `baton graph check`; warnings only
/// with `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// Which rule a finding breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// An agent with no provider able to meet its requirements.
    NoFullService,
    /// An agent whose full paths all share one failure domain.
    Spof,
    /// A provider of an agent's route it must pass over (a missing capability).
    Coverage,
    /// A route whose full paths all share one failure domain.
    NoIndependentFallback,
    /// A provider no route can reach.
    UnreachableProvider,
    /// One model reached through providers in different domains: they may
    /// share the upstream without saying so.
    SharedModel,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NoFullService => "no-full-service",
            Rule::Spof => "spof",
            Rule::Coverage => "coverage",
            Rule::NoIndependentFallback => "no-independent-fallback",
            Rule::UnreachableProvider => "unreachable-provider",
            Rule::SharedModel => "shared-model",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::SharedModel => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// One thing `baton graph check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    /// The node it is about (`agent:support-bot/billing`, `route:fast`...).
    pub subject: String,
    pub message: String,
}

fn finding(rule: Rule, subject: String, message: String) -> Finding {
    Finding {
        rule,
        severity: rule.severity(),
        subject,
        message,
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

fn capabilities(capabilities: &[Capability]) -> String {
    capabilities
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every finding, sorted by rule and subject.
pub fn check(graph: &DependencyGraph, outage: &Outage) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut cache = PathCache::new(graph, outage);
    for agent in agents(graph) {
        let subject = graph.node(agent.index).id();
        let who = format!("{}/{}", agent.swarm, agent.name);
        let Some(route) = agent.route else {
            // A validated swarm always names a route of its config; a
            // snapshot of an older policy may not.
            findings.push(finding(
                Rule::NoFullService,
                subject,
                format!("{who} is bound to no route of this policy"),
            ));
            continue;
        };
        let route_label = graph.node(route).label();
        let paths = cache.of(&agent);
        let left = fallback_names(&paths.degraded);
        if paths.full.is_empty() {
            findings.push(finding(
                Rule::NoFullService,
                subject.clone(),
                format!(
                    "{who} requires {}; no provider of route {route_label} provides it: only {} can answer",
                    capabilities(agent.requires),
                    list(&left)
                ),
            ));
        } else {
            let domains = paths.domains(graph);
            if domains.len() == 1 {
                findings.push(finding(
                    Rule::Spof,
                    subject.clone(),
                    format!(
                        "{who}: every provider of route {route_label} able to serve it ({}) is in domain {}; if {} fails, only {} can answer",
                        names(graph, &paths.full).join(", "),
                        domains[0],
                        domains[0],
                        list(&left)
                    ),
                ));
            }
            if !paths.lacking.is_empty() {
                let passed: Vec<String> = paths
                    .lacking
                    .iter()
                    .map(|(p, missing)| {
                        format!(
                            "{} (lacks {})",
                            graph.node(*p).label(),
                            capabilities(missing)
                        )
                    })
                    .collect();
                findings.push(finding(
                    Rule::Coverage,
                    subject,
                    format!(
                        "{who} requires {}; route {route_label} passes over {} for it",
                        capabilities(agent.requires),
                        passed.join(", ")
                    ),
                ));
            }
        }
    }
    for (route, node) in graph.nodes_of(NodeKind::Route) {
        let paths = route_paths(graph, route, &[], true, outage);
        let domains = paths.domains(graph);
        if domains.len() <= 1 {
            let why = match domains.first() {
                Some(domain) => format!(
                    "every provider of route {} ({}) is in domain {domain}",
                    node.label(),
                    names(graph, &paths.full).join(", ")
                ),
                None => format!("route {} has no provider", node.label()),
            };
            findings.push(finding(
                Rule::NoIndependentFallback,
                node.id(),
                format!(
                    "{why}: no fallback independent of it, only {}",
                    list(&fallback_names(&paths.degraded))
                ),
            ));
        }
    }
    for (provider, node) in graph.nodes_of(NodeKind::Provider) {
        let reached = !graph.sources(provider, EdgeKind::ServedBy).is_empty()
            || !graph.sources(provider, EdgeKind::FallsBackTo).is_empty();
        if !reached {
            findings.push(finding(
                Rule::UnreachableProvider,
                node.id(),
                format!(
                    "provider {} is in no route (or only in routes whose allowed_domains exclude it): nothing can reach it",
                    node.label()
                ),
            ));
        }
    }
    for (model, node) in graph.nodes_of(NodeKind::Model) {
        let mut by_domain: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for provider in graph.sources(model, EdgeKind::DependsOn) {
            if let Some(domain) = domain_of(graph, provider) {
                by_domain
                    .entry(domain)
                    .or_default()
                    .push(graph.node(provider).label());
            }
        }
        if by_domain.len() > 1 {
            let via: Vec<String> = by_domain
                .iter()
                .map(|(domain, providers)| format!("{} ({domain})", providers.join(", ")))
                .collect();
            findings.push(finding(
                Rule::SharedModel,
                node.id(),
                format!(
                    "model {} is reached through {}: if one of them routes to the other's upstream, they fail together; give them one domain if so",
                    node.label(),
                    via.join(" and ")
                ),
            ));
        }
    }
    findings.sort_by(|a, b| (a.rule, &a.subject).cmp(&(b.rule, &b.subject)));
    findings
}
