//! The capability/dependency graph of a policy: what each agent of each
//! swarm needs, which routes and providers can give it, and which failure
//! domains those providers share.
//!
//! # Nodes and edges
//!
//! | node         | id                         | from                                       |
//! |--------------|----------------------------|--------------------------------------------|
//! | `swarm`      | `swarm:NAME`               | a loaded swarm directory                   |
//! | `agent`      | `agent:SWARM/NAME`         | an agent file (supervisor or worker)       |
//! | `route`      | `route:NAME`               | `[routes.NAME]`                            |
//! | `provider`   | `provider:NAME`            | `[providers.NAME]` (not `extractive` ones) |
//! | `model`      | `model:NAME`               | a provider's `model`, vendor prefix dropped |
//! | `capability` | `capability:NAME`          | providers' `capabilities`, agents' `requires` |
//! | `domain`     | `domain:NAME`              | a provider's `domain`                      |
//! | `contract`   | `contract:SWARM/NAME`      | an agent's `output_schema`                 |
//! | `fallback`   | `fallback:cache`, `fallback:extractive` | the degraded last resorts     |
//!
//! Edges: swarm -delegates-> supervisor -delegates-> workers (and worker to
//! worker as `delegates:` says); agent -bound-to-> route; agent -requires->
//! capability and contract; route -served-by(order)-> provider; route
//! -falls-back-to(order)-> fallback or local provider; provider -provides->
//! capability; provider -depends-on-> domain and model.
//!
//! An `extractive` provider listed in a chain is the extractive fallback
//! (the config serves it that way), so it is drawn as `fallback:extractive`
//! and has no domain: it runs inside Baton and survives any outage of an
//! upstream. The cache likewise.
//!
//! The graph is structural: it says what the policy allows, whatever keys
//! this machine has, so a snapshot of a policy version is the same
//! wherever it is taken. What happened recently (breakers, health, error
//! rates, bindings, contracts met) is kept apart in [`live::Live`].

pub mod analysis;
mod build;
pub mod diff;
pub mod live;
pub mod render;

use std::collections::HashMap;

use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

use crate::config::{FinalFallback, ProviderKind};
use crate::swarm::{Capability, Role, Stakes};

pub use build::{build, model_name};

/// One thing the graph knows of, with its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    Swarm {
        name: String,
        /// Whether it has a `knowledge/` base, so the extractive fallback
        /// can answer for it.
        has_knowledge: bool,
    },
    Agent {
        swarm: String,
        name: String,
        role: Role,
        stakes: Stakes,
        requires: Vec<Capability>,
    },
    Route {
        name: String,
    },
    Provider {
        name: String,
        provider: ProviderKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        domain: String,
        capabilities: Vec<Capability>,
        /// The environment variable its key comes from (never the key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_env: Option<String>,
    },
    Model {
        name: String,
    },
    Capability {
        name: Capability,
    },
    Domain {
        name: String,
    },
    Contract {
        swarm: String,
        agent: String,
        /// The first 12 hex digits of the schema's SHA-256: a changed
        /// schema is a changed node.
        schema: String,
    },
    Fallback {
        name: FinalFallback,
    },
}

impl Node {
    /// The stable id: `kind:name` (see the module table).
    pub fn id(&self) -> String {
        match self {
            Node::Swarm { name, .. } => format!("swarm:{name}"),
            Node::Agent { swarm, name, .. } => format!("agent:{swarm}/{name}"),
            Node::Route { name } => format!("route:{name}"),
            Node::Provider { name, .. } => format!("provider:{name}"),
            Node::Model { name } => format!("model:{name}"),
            Node::Capability { name } => format!("capability:{name}"),
            Node::Domain { name } => format!("domain:{name}"),
            Node::Contract { swarm, agent, .. } => format!("contract:{swarm}/{agent}"),
            Node::Fallback { name } => format!("fallback:{}", fallback_name(*name)),
        }
    }

    pub fn kind(&self) -> NodeKind {
        match self {
            Node::Swarm { .. } => NodeKind::Swarm,
            Node::Agent { .. } => NodeKind::Agent,
            Node::Route { .. } => NodeKind::Route,
            Node::Provider { .. } => NodeKind::Provider,
            Node::Model { .. } => NodeKind::Model,
            Node::Capability { .. } => NodeKind::Capability,
            Node::Domain { .. } => NodeKind::Domain,
            Node::Contract { .. } => NodeKind::Contract,
            Node::Fallback { .. } => NodeKind::Fallback,
        }
    }

    /// The short name people read (the id without its kind; an agent's
    /// name without its swarm).
    pub fn label(&self) -> String {
        match self {
            Node::Agent { name, .. } => name.clone(),
            Node::Contract { agent, .. } => format!("{agent} output"),
            other => {
                let id = other.id();
                id.split_once(':')
                    .map_or(id.clone(), |(_, name)| name.to_owned())
            }
        }
    }
}

pub fn fallback_name(fallback: FinalFallback) -> &'static str {
    match fallback {
        FinalFallback::Cache => "cache",
        FinalFallback::Local => "local",
        FinalFallback::Extractive => "extractive",
    }
}

/// A node's kind, without its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Swarm,
    Agent,
    Route,
    Provider,
    Model,
    Capability,
    Domain,
    Contract,
    Fallback,
}

/// What an edge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    Delegates,
    BoundTo,
    ServedBy,
    FallsBackTo,
    Provides,
    Requires,
    DependsOn,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Delegates => "delegates",
            EdgeKind::BoundTo => "bound-to",
            EdgeKind::ServedBy => "served-by",
            EdgeKind::FallsBackTo => "falls-back-to",
            EdgeKind::Provides => "provides",
            EdgeKind::Requires => "requires",
            EdgeKind::DependsOn => "depends-on",
        }
    }
}

/// An edge: its kind and, for `served-by` and `falls-back-to`, its place
/// in the failover order (1 = first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub kind: EdgeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u16>,
}

/// The graph, with an index from node id to node.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    graph: DiGraph<Node, Edge>,
    ids: HashMap<String, NodeIndex>,
    /// Recent facts from the store, when it was read.
    pub live: Option<live::Live>,
}

impl DependencyGraph {
    pub fn new() -> DependencyGraph {
        DependencyGraph::default()
    }

    /// Adds `node`, or returns the node already there under its id.
    pub fn add_node(&mut self, node: Node) -> NodeIndex {
        let id = node.id();
        if let Some(&index) = self.ids.get(&id) {
            return index;
        }
        let index = self.graph.add_node(node);
        self.ids.insert(id, index);
        index
    }

    /// Adds an edge unless the same one is there already.
    pub fn add_edge(&mut self, from: NodeIndex, to: NodeIndex, edge: Edge) -> EdgeIndex {
        if let Some(existing) = self
            .graph
            .edges_connecting(from, to)
            .find(|e| e.weight().kind == edge.kind)
        {
            return existing.id();
        }
        self.graph.add_edge(from, to, edge)
    }

    pub fn index(&self, id: &str) -> Option<NodeIndex> {
        self.ids.get(id).copied()
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.graph[index]
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// Every node, in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.graph
            .node_indices()
            .map(move |index| (index, &self.graph[index]))
    }

    /// Every node of one kind, in insertion order.
    pub fn nodes_of(&self, kind: NodeKind) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.nodes().filter(move |(_, node)| node.kind() == kind)
    }

    /// Every edge as (from, to, edge).
    pub fn edges(&self) -> impl Iterator<Item = (NodeIndex, NodeIndex, Edge)> + '_ {
        self.graph
            .edge_references()
            .map(|e| (e.source(), e.target(), *e.weight()))
    }

    /// The targets of `from`'s outgoing edges of `kind`, in failover order
    /// where the edges have one, else in insertion order.
    pub fn targets(&self, from: NodeIndex, kind: EdgeKind) -> Vec<(NodeIndex, Edge)> {
        let mut found: Vec<(NodeIndex, Edge)> = self
            .graph
            .edges_directed(from, Direction::Outgoing)
            .filter(|e| e.weight().kind == kind)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        // petgraph lists a node's edges newest first.
        found.reverse();
        found.sort_by_key(|(_, edge)| edge.order.unwrap_or(0));
        found
    }

    /// The sources of edges of `kind` pointing at `to`, in insertion order.
    pub fn sources(&self, to: NodeIndex, kind: EdgeKind) -> Vec<NodeIndex> {
        let mut found: Vec<NodeIndex> = self
            .graph
            .edges_directed(to, Direction::Incoming)
            .filter(|e| e.weight().kind == kind)
            .map(|e| e.source())
            .collect();
        found.reverse();
        found
    }

    /// The provider's name when `index` is a provider.
    pub fn provider_name(&self, index: NodeIndex) -> Option<&str> {
        match &self.graph[index] {
            Node::Provider { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Whether the live facts say the provider is out of service now:
    /// health Down, or its breaker open.
    pub fn is_down(&self, index: NodeIndex) -> bool {
        let (Some(live), Some(name)) = (&self.live, self.provider_name(index)) else {
            return false;
        };
        live.providers
            .get(name)
            .is_some_and(live::ProviderLive::is_down)
    }

    /// The part of the graph `starts` depend on: every node reachable from
    /// them along any edge (a swarm's agents, their routes, providers,
    /// domains...). Live facts are kept.
    pub fn reachable_from(&self, starts: &[NodeIndex]) -> DependencyGraph {
        let mut keep = vec![false; self.graph.node_count()];
        for start in starts {
            let mut walk = petgraph::visit::Dfs::new(&self.graph, *start);
            while let Some(index) = walk.next(&self.graph) {
                keep[index.index()] = true;
            }
        }
        let mut snapshot = self.snapshot();
        snapshot
            .nodes
            .retain(|node| self.index(&node.id()).is_some_and(|i| keep[i.index()]));
        let mut graph = DependencyGraph::from_snapshot(snapshot);
        graph.live = self.live.clone();
        graph
    }

    /// The graph as plain data, sorted, for snapshots and JSON.
    pub fn snapshot(&self) -> Snapshot {
        let mut nodes: Vec<Node> = self.graph.node_weights().cloned().collect();
        nodes.sort_by_cached_key(Node::id);
        let mut edges: Vec<SnapshotEdge> = self
            .edges()
            .map(|(from, to, edge)| SnapshotEdge {
                from: self.graph[from].id(),
                to: self.graph[to].id(),
                kind: edge.kind,
                order: edge.order,
            })
            .collect();
        edges.sort_by(|a, b| {
            (&a.from, a.kind, &a.to, a.order).cmp(&(&b.from, b.kind, &b.to, b.order))
        });
        Snapshot { nodes, edges }
    }

    /// Rebuilds a graph from a snapshot; edges naming a node the snapshot
    /// lacks are dropped.
    pub fn from_snapshot(snapshot: Snapshot) -> DependencyGraph {
        let mut graph = DependencyGraph::new();
        for node in snapshot.nodes {
            graph.add_node(node);
        }
        for edge in snapshot.edges {
            if let (Some(from), Some(to)) = (graph.index(&edge.from), graph.index(&edge.to)) {
                graph.add_edge(
                    from,
                    to,
                    Edge {
                        kind: edge.kind,
                        order: edge.order,
                    },
                );
            }
        }
        graph
    }
}

/// A graph as plain, sorted data: what the `graph` tree stores per policy
/// version and what `--format json` prints (with live facts added).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub nodes: Vec<Node>,
    pub edges: Vec<SnapshotEdge>,
}

/// An edge between node ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEdge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u16>,
}
