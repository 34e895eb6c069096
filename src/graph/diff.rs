//! What changed between two snapshots: `baton graph diff A B`.
//!
//! Nodes are matched by id and edges by (from, kind, to); a node whose
//! attributes differ, or an edge whose failover order moved, is *changed*
//! rather than removed and added, so a reordered chain reads as such.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::{EdgeKind, Node, Snapshot, SnapshotEdge};

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GraphDiff {
    pub added_nodes: Vec<Node>,
    pub removed_nodes: Vec<Node>,
    pub changed_nodes: Vec<NodeChange>,
    pub added_edges: Vec<SnapshotEdge>,
    pub removed_edges: Vec<SnapshotEdge>,
    pub changed_edges: Vec<EdgeChange>,
}

/// A node present in both with different attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeChange {
    pub id: String,
    /// attribute -> (before, after); `null` where one side lacks it.
    pub attributes: BTreeMap<String, (Value, Value)>,
}

/// An edge present in both whose failover order moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeChange {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub order_before: Option<u16>,
    pub order_after: Option<u16>,
}

impl GraphDiff {
    pub fn is_empty(&self) -> bool {
        self.added_nodes.is_empty()
            && self.removed_nodes.is_empty()
            && self.changed_nodes.is_empty()
            && self.added_edges.is_empty()
            && self.removed_edges.is_empty()
            && self.changed_edges.is_empty()
    }

    /// One line per change: `+`/`-`/`~`, then `node ID` or `edge FROM
    /// -KIND-> TO`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for node in &self.added_nodes {
            let _ = writeln!(out, "+ node {}", node.id());
        }
        for node in &self.removed_nodes {
            let _ = writeln!(out, "- node {}", node.id());
        }
        for change in &self.changed_nodes {
            let attributes: Vec<String> = change
                .attributes
                .iter()
                .map(|(name, (before, after))| format!("{name} {before} -> {after}"))
                .collect();
            let _ = writeln!(out, "~ node {}: {}", change.id, attributes.join("; "));
        }
        for edge in &self.added_edges {
            let _ = writeln!(out, "+ edge {}", edge_text(edge));
        }
        for edge in &self.removed_edges {
            let _ = writeln!(out, "- edge {}", edge_text(edge));
        }
        for change in &self.changed_edges {
            let _ = writeln!(
                out,
                "~ edge {} -{}-> {}: order {} -> {}",
                change.from,
                change.kind.as_str(),
                change.to,
                order_text(change.order_before),
                order_text(change.order_after)
            );
        }
        out
    }
}

fn order_text(order: Option<u16>) -> String {
    order.map_or_else(|| "none".to_owned(), |o| o.to_string())
}

pub fn edge_text(edge: &SnapshotEdge) -> String {
    match edge.order {
        Some(order) => format!(
            "{} -{}({order})-> {}",
            edge.from,
            edge.kind.as_str(),
            edge.to
        ),
        None => format!("{} -{}-> {}", edge.from, edge.kind.as_str(), edge.to),
    }
}

fn attributes(node: &Node) -> serde_json::Map<String, Value> {
    match serde_json::to_value(node) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

pub fn diff(before: &Snapshot, after: &Snapshot) -> GraphDiff {
    let mut result = GraphDiff::default();
    let old: BTreeMap<String, &Node> = before.nodes.iter().map(|n| (n.id(), n)).collect();
    let new: BTreeMap<String, &Node> = after.nodes.iter().map(|n| (n.id(), n)).collect();
    for (id, node) in &new {
        match old.get(id) {
            None => result.added_nodes.push((*node).clone()),
            Some(previous) if previous != node => {
                let (a, b) = (attributes(previous), attributes(node));
                let mut changed = BTreeMap::new();
                for key in a.keys().chain(b.keys()) {
                    let (x, y) = (
                        a.get(key).cloned().unwrap_or(Value::Null),
                        b.get(key).cloned().unwrap_or(Value::Null),
                    );
                    if x != y {
                        changed.insert(key.clone(), (x, y));
                    }
                }
                result.changed_nodes.push(NodeChange {
                    id: id.clone(),
                    attributes: changed,
                });
            }
            Some(_) => {}
        }
    }
    for (id, node) in &old {
        if !new.contains_key(id) {
            result.removed_nodes.push((*node).clone());
        }
    }
    let key = |e: &'_ SnapshotEdge| -> (String, EdgeKind, String) {
        (e.from.clone(), e.kind, e.to.clone())
    };
    let old_edges: BTreeMap<(String, EdgeKind, String), &SnapshotEdge> =
        before.edges.iter().map(|e| (key(e), e)).collect();
    let new_edges: BTreeMap<(String, EdgeKind, String), &SnapshotEdge> =
        after.edges.iter().map(|e| (key(e), e)).collect();
    for (k, edge) in &new_edges {
        match old_edges.get(k) {
            None => result.added_edges.push((*edge).clone()),
            Some(previous) if previous.order != edge.order => {
                result.changed_edges.push(EdgeChange {
                    from: edge.from.clone(),
                    to: edge.to.clone(),
                    kind: edge.kind,
                    order_before: previous.order,
                    order_after: edge.order,
                });
            }
            Some(_) => {}
        }
    }
    for (k, edge) in &old_edges {
        if !new_edges.contains_key(k) {
            result.removed_edges.push((*edge).clone());
        }
    }
    result
}
