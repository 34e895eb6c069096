//! Drawings of the graph: DOT for Graphviz, Mermaid for markdown, SVG
//! laid out by Baton itself ([`svg`]), and JSON for tools.
//!
//! The drawings show what a reader acts on: swarms, agents, routes,
//! providers clustered by failure domain, the degraded fallbacks and data
//! contracts. Capabilities and models are written into the provider
//! labels rather than drawn as nodes (the JSON has them as nodes). Edges
//! from a route carry their failover order; a provider the live facts say
//! is down is red.

pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use petgraph::graph::NodeIndex;
use serde_json::{Value, json};

use super::{DependencyGraph, EdgeKind, Node, NodeKind};

/// A node as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawNode {
    /// The graph id (`provider:openai-mini`).
    pub id: String,
    pub kind: NodeKind,
    /// First line: the name; further lines: details (model, capabilities,
    /// health).
    pub lines: Vec<String>,
    /// The failure domain cluster it is drawn in (providers only).
    pub cluster: Option<String>,
    /// Out of service now (providers only, from live facts).
    pub down: bool,
}

/// An edge as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawEdge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    /// The failover order for `served-by` and `falls-back-to`.
    pub label: Option<String>,
}

/// What every drawing shows, in a stable order: swarms and agents, routes,
/// providers by domain, fallbacks, contracts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drawing {
    pub nodes: Vec<DrawNode>,
    pub edges: Vec<DrawEdge>,
}

impl Drawing {
    /// The failure domains and the providers drawn in each, sorted.
    pub fn clusters(&self) -> BTreeMap<&str, Vec<&DrawNode>> {
        let mut clusters: BTreeMap<&str, Vec<&DrawNode>> = BTreeMap::new();
        for node in &self.nodes {
            if let Some(cluster) = &node.cluster {
                clusters.entry(cluster).or_default().push(node);
            }
        }
        clusters
    }
}

fn drawn(kind: NodeKind) -> bool {
    !matches!(
        kind,
        NodeKind::Capability | NodeKind::Model | NodeKind::Domain
    )
}

fn rank(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::Swarm => 0,
        NodeKind::Agent => 1,
        NodeKind::Contract => 2,
        NodeKind::Route => 3,
        NodeKind::Provider => 4,
        NodeKind::Fallback => 5,
        NodeKind::Model | NodeKind::Capability | NodeKind::Domain => 6,
    }
}

fn lines(graph: &DependencyGraph, index: NodeIndex) -> Vec<String> {
    let node = graph.node(index);
    let mut lines = vec![node.label()];
    match node {
        Node::Swarm { .. } => lines[0] = format!("swarm {}", node.label()),
        Node::Agent { role, requires, .. } => {
            let mut detail = format!("{role:?}").to_lowercase();
            if !requires.is_empty() {
                let needs: Vec<&str> = requires.iter().map(|c| c.as_str()).collect();
                let _ = write!(detail, " · needs {}", needs.join(", "));
            }
            lines.push(detail);
            if let Some(binding) = graph
                .live
                .as_ref()
                .and_then(|live| live.bindings.get(&node.id()))
            {
                lines.push(format!("→ {}", binding.provider));
            }
        }
        Node::Route { .. } => lines[0] = format!("route {}", node.label()),
        Node::Provider {
            model,
            capabilities,
            ..
        } => {
            if let Some(model) = model {
                lines.push(model.clone());
            }
            let caps: Vec<&str> = capabilities.iter().map(|c| c.as_str()).collect();
            if !caps.is_empty() {
                lines.push(caps.join(", "));
            }
            if let Some(facts) = graph
                .live
                .as_ref()
                .and_then(|live| live.providers.get(&node.label()))
            {
                let mut state = facts.health.clone().unwrap_or_else(|| "no data".to_owned());
                if let Some(breaker) = facts.breaker.as_deref().filter(|b| *b != "closed") {
                    let _ = write!(state, " · breaker {breaker}");
                }
                if let Some(p95) = facts.p95_ms {
                    let _ = write!(state, " · p95 {p95:.0} ms");
                }
                lines.push(state);
            }
        }
        Node::Fallback { .. } => lines.push("degraded".to_owned()),
        Node::Contract { schema, .. } => lines.push(format!("schema {schema}")),
        Node::Model { .. } | Node::Capability { .. } | Node::Domain { .. } => {}
    }
    lines
}

/// The drawing of `graph`.
pub fn drawing(graph: &DependencyGraph) -> Drawing {
    let mut indices: Vec<NodeIndex> = graph
        .nodes()
        .filter(|(_, node)| drawn(node.kind()))
        .map(|(index, _)| index)
        .collect();
    indices.sort_by_cached_key(|index| {
        let node = graph.node(*index);
        let cluster = match node {
            Node::Provider { domain, .. } => domain.clone(),
            _ => String::new(),
        };
        (rank(node.kind()), cluster, index.index())
    });
    let nodes = indices
        .iter()
        .map(|index| {
            let node = graph.node(*index);
            DrawNode {
                id: node.id(),
                kind: node.kind(),
                lines: lines(graph, *index),
                cluster: match node {
                    Node::Provider { domain, .. } => Some(domain.clone()),
                    _ => None,
                },
                down: graph.is_down(*index),
            }
        })
        .collect();
    let mut edges: Vec<(u8, DrawEdge)> = graph
        .edges()
        .filter(|(from, to, _)| drawn(graph.node(*from).kind()) && drawn(graph.node(*to).kind()))
        .map(|(from, to, edge)| {
            (
                rank(graph.node(from).kind()),
                DrawEdge {
                    from: graph.node(from).id(),
                    to: graph.node(to).id(),
                    kind: edge.kind,
                    label: edge.order.map(|o| o.to_string()),
                },
            )
        })
        .collect();
    edges.sort_by(|(ra, a), (rb, b)| {
        (ra, &a.from, &a.label, &a.to).cmp(&(rb, &b.from, &b.label, &b.to))
    });
    Drawing {
        nodes,
        edges: edges.into_iter().map(|(_, edge)| edge).collect(),
    }
}

/// Graphviz DOT: `baton graph --format dot | dot -Tsvg > graph.svg`.
pub fn dot(graph: &DependencyGraph) -> String {
    let drawing = drawing(graph);
    let mut out = String::new();
    out.push_str("digraph baton {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=10];\n");
    let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    let node_line = |node: &DrawNode| {
        let label = node
            .lines
            .iter()
            .map(|l| quote(l))
            .collect::<Vec<_>>()
            .join("\\n");
        let (shape, style) = match node.kind {
            NodeKind::Swarm => ("folder", "filled\", fillcolor=\"#e8eefc"),
            NodeKind::Agent => ("box", "rounded"),
            NodeKind::Route => ("cds", "solid"),
            NodeKind::Fallback => ("box", "dashed"),
            NodeKind::Contract => ("note", "solid"),
            _ => ("box", "solid"),
        };
        let colour = if node.down {
            ", color=\"#c62828\", fontcolor=\"#c62828\", style=\"filled\", fillcolor=\"#ffcdd2\""
        } else {
            ""
        };
        if node.down {
            format!(
                "\"{}\" [label=\"{label}\", shape={shape}{colour}];",
                quote(&node.id)
            )
        } else {
            format!(
                "\"{}\" [label=\"{label}\", shape={shape}, style=\"{style}\"];",
                quote(&node.id)
            )
        }
    };
    let clusters = drawing.clusters();
    for (i, (domain, members)) in clusters.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{i} {{\n    label=\"domain {}\";\n    style=\"rounded,dashed\";\n    color=\"#888888\";",
            quote(domain)
        );
        for node in members {
            let _ = writeln!(out, "    {}", node_line(node));
        }
        out.push_str("  }\n");
    }
    for node in drawing.nodes.iter().filter(|n| n.cluster.is_none()) {
        let _ = writeln!(out, "  {}", node_line(node));
    }
    for edge in &drawing.edges {
        let mut attributes = vec![format!("tooltip=\"{}\"", edge.kind.as_str())];
        if let Some(label) = &edge.label {
            attributes.push(format!("label=\"{label}\""));
        }
        match edge.kind {
            EdgeKind::FallsBackTo => attributes.push("style=dashed".to_owned()),
            EdgeKind::Requires => attributes.push("style=dotted".to_owned()),
            _ => {}
        }
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [{}];",
            quote(&edge.from),
            quote(&edge.to),
            attributes.join(", ")
        );
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart for markdown documents.
pub fn mermaid(graph: &DependencyGraph) -> String {
    let drawing = drawing(graph);
    // Mermaid ids are plain words; the graph ids are not.
    let ids: BTreeMap<&str, String> = drawing
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.id.as_str(), format!("n{i}")))
        .collect();
    let text = |line: &str| line.replace('"', "#quot;");
    let node_line = |node: &DrawNode| {
        let label = node
            .lines
            .iter()
            .map(|l| text(l))
            .collect::<Vec<_>>()
            .join("<br/>");
        let id = &ids[node.id.as_str()];
        match node.kind {
            NodeKind::Swarm => format!("{id}[/\"{label}\"/]"),
            NodeKind::Agent => format!("{id}(\"{label}\")"),
            NodeKind::Route => format!("{id}{{{{\"{label}\"}}}}"),
            NodeKind::Contract => format!("{id}[[\"{label}\"]]"),
            NodeKind::Fallback => format!("{id}>\"{label}\"]"),
            _ => format!("{id}[\"{label}\"]"),
        }
    };
    let mut out = String::from("flowchart LR\n");
    for (i, (domain, members)) in drawing.clusters().iter().enumerate() {
        let _ = writeln!(out, "  subgraph d{i}[\"domain {}\"]", text(domain));
        for node in members {
            let _ = writeln!(out, "    {}", node_line(node));
        }
        out.push_str("  end\n");
    }
    for node in drawing.nodes.iter().filter(|n| n.cluster.is_none()) {
        let _ = writeln!(out, "  {}", node_line(node));
    }
    for edge in &drawing.edges {
        let arrow = match edge.kind {
            EdgeKind::FallsBackTo | EdgeKind::Requires => "-.->",
            _ => "-->",
        };
        let (from, to) = (&ids[edge.from.as_str()], &ids[edge.to.as_str()]);
        match &edge.label {
            Some(label) => {
                let _ = writeln!(out, "  {from} {arrow}|{label}| {to}");
            }
            None => {
                let _ = writeln!(out, "  {from} {arrow} {to}");
            }
        }
    }
    let down: Vec<&str> = drawing
        .nodes
        .iter()
        .filter(|n| n.down)
        .map(|n| ids[n.id.as_str()].as_str())
        .collect();
    if !down.is_empty() {
        out.push_str("  classDef down fill:#ffcdd2,stroke:#c62828,color:#c62828\n");
        let _ = writeln!(out, "  class {} down", down.join(","));
    }
    out
}

/// The whole graph as JSON for tools: every node with its attributes (and
/// live facts under `live`), every edge, and the live period.
pub fn json(graph: &DependencyGraph) -> Value {
    let snapshot = graph.snapshot();
    let live = graph.live.as_ref();
    let nodes: Vec<Value> = snapshot
        .nodes
        .iter()
        .map(|node| {
            let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
            let id = node.id();
            if let Value::Object(map) = &mut value {
                map.insert("id".to_owned(), Value::String(id.clone()));
                let facts = live.and_then(|live| match node {
                    Node::Provider { name, .. } => live
                        .providers
                        .get(name)
                        .and_then(|p| serde_json::to_value(p).ok()),
                    Node::Agent { .. } => live.bindings.get(&id).map(|b| json!({ "binding": b })),
                    Node::Contract { .. } => live
                        .contracts
                        .get(&id)
                        .map(|by_provider| json!({ "providers": by_provider })),
                    _ => None,
                });
                if let Some(facts) = facts {
                    map.insert("live".to_owned(), facts);
                }
            }
            value
        })
        .collect();
    json!({
        "nodes": nodes,
        "edges": snapshot.edges,
        "live": live.map(|l| json!({ "since_ms": l.since_ms, "until_ms": l.until_ms })),
    })
}
