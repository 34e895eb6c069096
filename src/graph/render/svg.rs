//! SVG laid out by Baton itself, so a drawing needs no Graphviz.
//!
//! The layout is layered, left to right: swarms, agents, contracts,
//! routes, providers (one dashed box per failure domain), fallbacks. A few
//! barycentre sweeps order each column to cut edge crossings; edges that
//! skip a column pass it through a free gap rather than under its boxes.
//! Text widths are estimated (no font is read), so the same graph always
//! gives the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{DrawNode, Drawing};
use crate::graph::{DependencyGraph, EdgeKind, NodeKind};

/// Room around the drawing; edges passing above a column use its top.
const MARGIN: f64 = 36.0;
const TITLE_SIZE: f64 = 12.0;
const DETAIL_SIZE: f64 = 10.0;
const TITLE_LINE: f64 = 16.0;
const DETAIL_LINE: f64 = 13.0;
/// Estimated advance of one character, as a share of the font size.
const CHAR_WIDTH: f64 = 0.6;
/// Bold glyphs run wider than the plain estimate.
const BOLD_CHAR_WIDTH: f64 = 0.64;
const PAD_X: f64 = 10.0;
const PAD_Y: f64 = 6.0;
const NODE_GAP: f64 = 18.0;
const COLUMN_GAP: f64 = 96.0;
/// Extra room left of the agents' column for the delegation arcs between
/// agents, which bulge to the left.
const ARC_ROOM: f64 = 48.0;
const CLUSTER_PAD: f64 = 12.0;
const CLUSTER_HEADER: f64 = 24.0;
const CLUSTER_GAP: f64 = 40.0;
/// How far a route's pointed ends stick out.
const ROUTE_POINT: f64 = 9.0;
const NOTE_FOLD: f64 = 9.0;
/// Down-then-up barycentre sweeps; a handful settles graphs of this size.
const SWEEPS: usize = 4;
/// Vertical room per numbered edge arriving at one box.
const LABEL_SPACING: f64 = 11.0;
const LEGEND_GAP: f64 = 30.0;
const LEGEND_HEIGHT: f64 = 16.0;

const DOWN_FILL: &str = "#ffcdd2";
const DOWN_STROKE: &str = "#c62828";

/// The SVG document of `graph`.
pub fn svg(graph: &DependencyGraph) -> String {
    let drawing = super::drawing(graph);
    render(&drawing, &layout(&drawing))
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

impl Rect {
    fn right(&self) -> f64 {
        self.x + self.width
    }

    fn bottom(&self) -> f64 {
        self.y + self.height
    }

    fn centre_y(&self) -> f64 {
        self.y + self.height / 2.0
    }

    #[cfg(test)]
    fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.right()
            && other.x < self.right()
            && self.y < other.bottom()
            && other.y < self.bottom()
    }

    #[cfg(test)]
    fn contains(&self, other: &Rect) -> bool {
        self.x <= other.x
            && self.y <= other.y
            && other.right() <= self.right()
            && other.bottom() <= self.bottom()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Cluster {
    name: String,
    rect: Rect,
    /// The backing of its "domain NAME" label, drawn over the edges.
    label: Rect,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    x: f64,
    y: f64,
}

/// An edge with its route: a start, the gaps it threads through other
/// columns, an end, and how the curves between them bend.
#[derive(Debug, Clone, PartialEq)]
struct RoutedEdge {
    /// Index into the drawing's edges.
    edge: usize,
    path: String,
    /// The curve arriving at the target, where the failover order goes.
    last_curve: [Point; 4],
    /// Where along `last_curve` the order would best go (0 = its start).
    label_along: f64,
    /// Where the failover order is written, near the target.
    label_at: Point,
}

/// Where everything goes; `render` only writes it out.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    width: f64,
    height: f64,
    /// One box per drawing node, same index.
    boxes: Vec<Rect>,
    clusters: Vec<Cluster>,
    edges: Vec<RoutedEdge>,
    legend_top: f64,
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Swarm => "swarm",
        NodeKind::Agent => "agent",
        NodeKind::Route => "route",
        NodeKind::Provider => "provider",
        NodeKind::Model => "model",
        NodeKind::Capability => "capability",
        NodeKind::Domain => "domain",
        NodeKind::Contract => "contract",
        NodeKind::Fallback => "fallback",
    }
}

fn text_width(text: &str, size: f64, factor: f64) -> f64 {
    text.chars().count() as f64 * size * factor
}

fn node_size(node: &DrawNode) -> (f64, f64) {
    let mut text = 0.0_f64;
    let mut height = 2.0 * PAD_Y;
    for (number, line) in node.lines.iter().enumerate() {
        if number == 0 {
            text = text.max(text_width(line, TITLE_SIZE, BOLD_CHAR_WIDTH));
            height += TITLE_LINE;
        } else {
            text = text.max(text_width(line, DETAIL_SIZE, CHAR_WIDTH));
            height += DETAIL_LINE;
        }
    }
    let extra = match node.kind {
        NodeKind::Route => 2.0 * ROUTE_POINT,
        NodeKind::Contract => NOTE_FOLD,
        _ => 0.0,
    };
    (
        (text + 2.0 * PAD_X + extra).max(60.0),
        height.max(TITLE_LINE + 2.0 * PAD_Y),
    )
}

/// Nodes that are kept together in a column: an agent with its swarm's
/// other agents, a provider with its failure domain.
fn group_key(node: &DrawNode) -> String {
    if let Some(cluster) = &node.cluster {
        return format!("cluster:{cluster}");
    }
    if node.kind == NodeKind::Agent
        && let Some((swarm, _)) = node
            .id
            .strip_prefix("agent:")
            .and_then(|rest| rest.split_once('/'))
    {
        return format!("swarm:{swarm}");
    }
    format!("node:{}", node.id)
}

/// A column's nodes stacked from 0, with its clusters' extents.
struct Stacked {
    /// The top of each node of the order, same index.
    tops: Vec<f64>,
    clusters: Vec<(String, f64, f64)>,
    height: f64,
}

fn stack(order: &[usize], nodes: &[DrawNode], heights: &[f64]) -> Stacked {
    let mut y = 0.0;
    let mut bottom = 0.0_f64;
    let mut tops = Vec::with_capacity(order.len());
    let mut clusters = Vec::new();
    let mut open: Option<(String, f64)> = None;
    for &node in order {
        let cluster = nodes[node].cluster.as_deref();
        if open.as_ref().map(|(name, _)| name.as_str()) != cluster {
            if let Some((name, top)) = open.take() {
                let cluster_bottom = y - NODE_GAP + CLUSTER_PAD;
                clusters.push((name, top, cluster_bottom));
                bottom = bottom.max(cluster_bottom);
                y = cluster_bottom + CLUSTER_GAP;
            }
            if let Some(name) = cluster {
                open = Some((name.to_owned(), y));
                y += CLUSTER_HEADER;
            }
        }
        tops.push(y);
        bottom = bottom.max(y + heights[node]);
        y += heights[node] + NODE_GAP;
    }
    if let Some((name, top)) = open {
        let cluster_bottom = y - NODE_GAP + CLUSTER_PAD;
        clusters.push((name, top, cluster_bottom));
        bottom = bottom.max(cluster_bottom);
    }
    Stacked {
        tops,
        clusters,
        height: bottom,
    }
}

/// Which side of a box an edge end sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Left,
    Right,
}

/// A node being reordered: (node, barycentre, position in the column now).
type Member = (usize, f64, usize);

/// An edge end on a box side: (height of the node at the other end, link,
/// whether the edge leaves here).
type EdgeEnd = (f64, usize, bool);

struct Columns<'a> {
    nodes: &'a [DrawNode],
    heights: Vec<f64>,
    /// Node indices, top to bottom, per column.
    order: Vec<Vec<usize>>,
    column_of: Vec<usize>,
    /// Stacked heights do not depend on the order within a column (groups
    /// stay contiguous), so every column is centred on the tallest.
    tallest: f64,
}

impl Columns<'_> {
    fn centres(&self) -> Vec<f64> {
        let mut centres = vec![0.0; self.nodes.len()];
        for column in &self.order {
            let stacked = stack(column, self.nodes, &self.heights);
            let offset = (self.tallest - stacked.height) / 2.0;
            for (&node, top) in column.iter().zip(&stacked.tops) {
                centres[node] = offset + top + self.heights[node] / 2.0;
            }
        }
        centres
    }

    /// Reorders one column by the mean height of each node's neighbours
    /// on one side, keeping groups together and leads (supervisors) first.
    fn sweep(&mut self, column: usize, neighbours: &[Vec<usize>], before: bool, leads: &[bool]) {
        let centres = self.centres();
        let barycentre = |node: usize| {
            let ys: Vec<f64> = neighbours[node]
                .iter()
                .filter(|&&other| {
                    if before {
                        self.column_of[other] < column
                    } else {
                        self.column_of[other] > column
                    }
                })
                .map(|&other| centres[other])
                .collect();
            if ys.is_empty() {
                centres[node]
            } else {
                ys.iter().sum::<f64>() / ys.len() as f64
            }
        };
        let mut groups: Vec<(String, Vec<Member>)> = Vec::new();
        for (position, &node) in self.order[column].iter().enumerate() {
            let key = group_key(&self.nodes[node]);
            let member = (node, barycentre(node), position);
            match groups.iter_mut().find(|(existing, _)| *existing == key) {
                Some((_, members)) => members.push(member),
                None => groups.push((key, vec![member])),
            }
        }
        let mut scored: Vec<(f64, usize, Vec<Member>)> = groups
            .into_iter()
            .enumerate()
            .map(|(first, (_, mut members))| {
                members.sort_by(|a, b| {
                    (!leads[a.0])
                        .cmp(&!leads[b.0])
                        .then(a.1.total_cmp(&b.1))
                        .then(a.2.cmp(&b.2))
                });
                let score = members.iter().map(|m| m.1).sum::<f64>() / members.len() as f64;
                (score, first, members)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        self.order[column] = scored
            .into_iter()
            .flat_map(|(_, _, members)| members.into_iter().map(|m| m.0))
            .collect();
    }
}

fn layout(drawing: &Drawing) -> Layout {
    let nodes = &drawing.nodes;
    let mut sizes: Vec<(f64, f64)> = nodes.iter().map(node_size).collect();
    let index_of: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (node.id.as_str(), index))
        .collect();
    // (edge index, from node, to node) for the edges whose ends are drawn.
    let links: Vec<(usize, usize, usize)> = drawing
        .edges
        .iter()
        .enumerate()
        .filter_map(|(index, edge)| {
            Some((
                index,
                *index_of.get(edge.from.as_str())?,
                *index_of.get(edge.to.as_str())?,
            ))
        })
        .collect();

    // A box that many numbered edges point at grows, so their failover
    // numbers have room side by side.
    let mut labelled_ends = vec![0_usize; nodes.len()];
    for &(index, _, to) in &links {
        if drawing.edges[index].label.is_some() {
            labelled_ends[to] += 1;
        }
    }
    for (size, ends) in sizes.iter_mut().zip(&labelled_ends) {
        size.1 = size.1.max(16.0 + *ends as f64 * LABEL_SPACING);
    }
    let heights: Vec<f64> = sizes.iter().map(|s| s.1).collect();

    let mut ranks: Vec<u8> = nodes.iter().map(|n| super::rank(n.kind)).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let column_of: Vec<usize> = nodes
        .iter()
        .map(|n| {
            let rank = super::rank(n.kind);
            ranks.iter().position(|&r| r == rank).unwrap_or(0)
        })
        .collect();
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); ranks.len()];
    for (index, &column) in column_of.iter().enumerate() {
        order[column].push(index);
    }
    // Groups start contiguous so the first stacking already has its final
    // height.
    for column in &mut order {
        let mut keys: Vec<String> = Vec::new();
        for &node in column.iter() {
            let key = group_key(&nodes[node]);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        column.sort_by_key(|&node| {
            let key = group_key(&nodes[node]);
            keys.iter().position(|k| *k == key).unwrap_or(0)
        });
    }

    let mut leads = vec![false; nodes.len()];
    let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &(index, from, to) in &links {
        if drawing.edges[index].kind == EdgeKind::Delegates && nodes[from].kind == NodeKind::Swarm {
            leads[to] = true;
        }
        if column_of[from] != column_of[to] {
            neighbours[from].push(to);
            neighbours[to].push(from);
        }
    }

    let tallest = order
        .iter()
        .map(|column| stack(column, nodes, &heights).height)
        .fold(0.0, f64::max);
    let mut columns = Columns {
        nodes,
        heights: heights.clone(),
        order,
        column_of: column_of.clone(),
        tallest,
    };
    let count = columns.order.len();
    for _ in 0..SWEEPS {
        for column in 1..count {
            columns.sweep(column, &neighbours, true, &leads);
        }
        for column in (0..count.saturating_sub(1)).rev() {
            columns.sweep(column, &neighbours, false, &leads);
        }
    }
    for column in 1..count {
        columns.sweep(column, &neighbours, true, &leads);
    }

    // Horizontal placement: each column as wide as its widest box (or
    // cluster label), boxes centred in it.
    let mut column_x = Vec::with_capacity(count);
    let mut column_width = Vec::with_capacity(count);
    let mut x = MARGIN;
    for (column, members) in columns.order.iter().enumerate() {
        let clustered = members.iter().any(|&n| nodes[n].cluster.is_some());
        let mut width = members.iter().map(|&n| sizes[n].0).fold(0.0, f64::max);
        if clustered {
            let label = members
                .iter()
                .filter_map(|&n| nodes[n].cluster.as_deref())
                .map(|name| text_width(&format!("domain {name}"), DETAIL_SIZE + 1.0, CHAR_WIDTH))
                .fold(0.0, f64::max);
            width = width.max(label) + 2.0 * CLUSTER_PAD;
        }
        if ranks[column] == super::rank(NodeKind::Agent) {
            x += ARC_ROOM;
        }
        column_x.push(x);
        column_width.push(width);
        x += width + COLUMN_GAP;
    }
    let content_right = x - COLUMN_GAP;

    let mut boxes = vec![
        Rect {
            x: 0.0,
            y: 0.0,
            width: 0.0,
            height: 0.0
        };
        nodes.len()
    ];
    let mut clusters = Vec::new();
    // Per column: what an edge passing through must avoid.
    let mut obstacles: Vec<Vec<(f64, f64)>> = vec![Vec::new(); count];
    // Swarms and contracts hang off agents, so they slide to sit beside
    // them; the busier columns stay centred, which keeps their many edges
    // short on both sides.
    let mut centres = columns.centres();
    let attached = [
        super::rank(NodeKind::Swarm),
        super::rank(NodeKind::Contract),
    ];
    let loose: Vec<usize> = (0..count)
        .filter(|&c| attached.contains(&ranks[c]))
        .collect();
    for column in loose.iter().copied() {
        let members = &columns.order[column];
        let tops = pull_towards_neighbours(members, &heights, &neighbours, &centres, tallest);
        for (&node, top) in members.iter().zip(tops) {
            centres[node] = top - MARGIN + heights[node] / 2.0;
        }
    }
    for (column, members) in columns.order.iter().enumerate() {
        let stacked = stack(members, nodes, &heights);
        let offset = MARGIN + (tallest - stacked.height) / 2.0;
        let tops: Vec<f64> = if !loose.contains(&column) {
            stacked.tops.iter().map(|top| offset + top).collect()
        } else {
            members
                .iter()
                .map(|&node| MARGIN + centres[node] - heights[node] / 2.0)
                .collect()
        };
        for (&node, &top) in members.iter().zip(&tops) {
            let (width, height) = sizes[node];
            boxes[node] = Rect {
                x: column_x[column] + (column_width[column] - width) / 2.0,
                y: top,
                width,
                height,
            };
            if nodes[node].cluster.is_none() {
                obstacles[column].push((top, top + height));
            }
        }
        for (name, top, bottom) in stacked.clusters {
            let label = Rect {
                x: column_x[column] + CLUSTER_PAD - 3.0,
                y: offset + top + 5.0,
                width: text_width(&format!("domain {name}"), DETAIL_SIZE + 1.0, CHAR_WIDTH) + 6.0,
                height: 15.0,
            };
            clusters.push(Cluster {
                name,
                rect: Rect {
                    x: column_x[column],
                    y: offset + top,
                    width: column_width[column],
                    height: bottom - top,
                },
                label,
            });
            obstacles[column].push((offset + top, offset + bottom));
        }
        obstacles[column].sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    let mut edges = route_edges(
        &links,
        &boxes,
        nodes,
        &column_of,
        &column_x,
        &column_width,
        &obstacles,
    );

    let mut label_obstacles = boxes.clone();
    label_obstacles.extend(clusters.iter().map(|c| c.label));
    place_labels(&mut edges, drawing, &label_obstacles);

    let content_bottom = MARGIN + tallest;
    let legend_top = content_bottom + LEGEND_GAP;
    let width = (content_right + MARGIN).max(MARGIN * 2.0 + legend_width());
    Layout {
        width: width.ceil(),
        height: (legend_top + LEGEND_HEIGHT + MARGIN).ceil(),
        boxes,
        clusters,
        edges,
        legend_top,
    }
}

/// The tops of a column's boxes, each moved towards the mean height of
/// its neighbours (a swarm beside its supervisor) as far as the order and
/// the spacing allow, within the drawing's height.
fn pull_towards_neighbours(
    members: &[usize],
    heights: &[f64],
    neighbours: &[Vec<usize>],
    centres: &[f64],
    tallest: f64,
) -> Vec<f64> {
    let mut tops: Vec<f64> = members
        .iter()
        .map(|&node| {
            let centre = if neighbours[node].is_empty() {
                centres[node]
            } else {
                neighbours[node].iter().map(|&n| centres[n]).sum::<f64>()
                    / neighbours[node].len() as f64
            };
            MARGIN + centre - heights[node] / 2.0
        })
        .collect();
    let mut floor = MARGIN;
    for (top, &node) in tops.iter_mut().zip(members) {
        *top = top.max(floor);
        floor = *top + heights[node] + NODE_GAP;
    }
    let mut ceiling = MARGIN + tallest;
    for (top, &node) in tops.iter_mut().zip(members).rev() {
        *top = top.min(ceiling - heights[node]);
        ceiling = *top - NODE_GAP;
    }
    tops
}

/// The x where an edge end touches `node`'s box at height `y`: a route's
/// pointed ends slope in.
fn side_x(node: &DrawNode, rect: &Rect, side: Side, y: f64) -> f64 {
    let slope = if node.kind == NodeKind::Route {
        ROUTE_POINT * ((y - rect.centre_y()).abs() / (rect.height / 2.0)).min(1.0)
    } else {
        0.0
    };
    match side {
        Side::Left => rect.x + slope,
        Side::Right => rect.right() - slope,
    }
}

fn route_edges(
    links: &[(usize, usize, usize)],
    boxes: &[Rect],
    nodes: &[DrawNode],
    column_of: &[usize],
    column_x: &[f64],
    column_width: &[f64],
    obstacles: &[Vec<(f64, f64)>],
) -> Vec<RoutedEdge> {
    let sides = |from: usize, to: usize| match column_of[to].cmp(&column_of[from]) {
        std::cmp::Ordering::Greater => (Side::Right, Side::Left),
        std::cmp::Ordering::Equal => (Side::Left, Side::Left),
        std::cmp::Ordering::Less => (Side::Left, Side::Right),
    };

    // Spread the ends meeting one side of a box along it, in the order of
    // the nodes at their other ends, so parallel edges do not cross there.
    let mut ends: BTreeMap<(usize, Side), Vec<EdgeEnd>> = BTreeMap::new();
    for (link, &(_, from, to)) in links.iter().enumerate() {
        let (from_side, to_side) = sides(from, to);
        ends.entry((from, from_side))
            .or_default()
            .push((boxes[to].centre_y(), link, true));
        ends.entry((to, to_side))
            .or_default()
            .push((boxes[from].centre_y(), link, false));
    }
    let mut start = vec![Point { x: 0.0, y: 0.0 }; links.len()];
    let mut end = start.clone();
    let mut end_rank = vec![0_usize; links.len()];
    for ((node, side), mut list) in ends {
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let rect = &boxes[node];
        let inset = (rect.height / 4.0).min(8.0);
        let span = rect.height - 2.0 * inset;
        let count = list.len() as f64;
        for (k, (_, link, outgoing)) in list.into_iter().enumerate() {
            let y = rect.y + inset + span * (k as f64 + 1.0) / (count + 1.0);
            let point = Point {
                x: side_x(&nodes[node], rect, side, y),
                y,
            };
            if outgoing {
                start[link] = point;
            } else {
                end[link] = point;
                end_rank[link] = k;
            }
        }
    }

    // Edges skipping columns: pick, in each column skipped, the free gap
    // nearest the straight line, then spread the edges sharing a gap.
    let mut passes: BTreeMap<(usize, usize), Vec<(f64, usize)>> = BTreeMap::new();
    let mut gap_of: BTreeMap<(usize, usize), (f64, f64)> = BTreeMap::new();
    for (link, &(_, from, to)) in links.iter().enumerate() {
        if column_of[to] <= column_of[from] + 1 {
            continue;
        }
        for column in column_of[from] + 1..column_of[to] {
            let centre_x = column_x[column] + column_width[column] / 2.0;
            let share = (centre_x - start[link].x) / (end[link].x - start[link].x);
            let ideal = start[link].y + (end[link].y - start[link].y) * share;
            let gaps = free_gaps(&obstacles[column]);
            let nearest = gaps
                .iter()
                .enumerate()
                .min_by(|a, b| {
                    distance_to(ideal, *a.1)
                        .total_cmp(&distance_to(ideal, *b.1))
                        .then(a.0.cmp(&b.0))
                })
                .map(|(index, gap)| (index, *gap));
            if let Some((index, gap)) = nearest {
                passes
                    .entry((column, index))
                    .or_default()
                    .push((ideal, link));
                gap_of.insert((column, index), gap);
            }
        }
    }
    let mut waypoints: Vec<Vec<(usize, f64)>> = vec![Vec::new(); links.len()];
    for (key, mut list) in passes {
        let Some(&(top, bottom)) = gap_of.get(&key) else {
            continue;
        };
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let count = list.len() as f64;
        for (k, (_, link)) in list.into_iter().enumerate() {
            let y = top + (bottom - top) * (k as f64 + 1.0) / (count + 1.0);
            waypoints[link].push((key.0, y));
        }
    }

    links
        .iter()
        .enumerate()
        .map(|(link, &(edge, from, to))| {
            let (a, b) = (start[link], end[link]);
            let mut label_along = 0.8;
            let (path, last_curve) = match sides(from, to) {
                (Side::Right, Side::Left) => {
                    let mut through = waypoints[link].clone();
                    through.sort_by_key(|w| w.0);
                    let mut points = vec![a];
                    for (column, y) in through {
                        points.push(Point {
                            x: column_x[column],
                            y,
                        });
                        points.push(Point {
                            x: column_x[column] + column_width[column],
                            y,
                        });
                    }
                    points.push(b);
                    // Neighbouring ends write their numbers at staggered
                    // distances from the box, so the circles do not pile up.
                    label_along = 0.84 - 0.14 * (end_rank[link] % 3) as f64;
                    threaded_path(&points)
                }
                (from_side, _) => {
                    // Within a column or backwards: loop out to one side,
                    // wider for ends further apart so nested arcs separate.
                    let bulge = (24.0 + 0.18 * (b.y - a.y).abs()).min(COLUMN_GAP - 16.0);
                    let direction = if from_side == Side::Left { -1.0 } else { 1.0 };
                    let c1 = Point {
                        x: a.x + direction * bulge,
                        y: a.y,
                    };
                    let back = if column_of[from] == column_of[to] {
                        direction
                    } else {
                        -direction
                    };
                    let c2 = Point {
                        x: b.x + back * bulge,
                        y: b.y,
                    };
                    (
                        format!(
                            "M{} {} C{} {} {} {} {} {}",
                            num(a.x),
                            num(a.y),
                            num(c1.x),
                            num(c1.y),
                            num(c2.x),
                            num(c2.y),
                            num(b.x),
                            num(b.y)
                        ),
                        [a, c1, c2, b],
                    )
                }
            };
            RoutedEdge {
                edge,
                path,
                last_curve,
                label_along,
                label_at: bezier(last_curve, label_along),
            }
        })
        .collect()
}

fn label_radius(label: &str) -> f64 {
    (text_width(label, 9.0, CHAR_WIDTH) / 2.0 + 3.5).max(7.0)
}

/// Moves failover numbers along their curves, off boxes and off each
/// other, where a free spot exists; else leaves them where they were meant.
fn place_labels(edges: &mut [RoutedEdge], drawing: &Drawing, obstacles: &[Rect]) {
    const ALONG: [f64; 8] = [0.84, 0.7, 0.56, 0.92, 0.42, 0.3, 0.2, 0.1];
    let mut placed: Vec<(Point, f64)> = Vec::new();
    for routed in edges.iter_mut() {
        let Some(label) = &drawing.edges[routed.edge].label else {
            continue;
        };
        let radius = label_radius(label);
        let free = |at: Point| {
            placed.iter().all(|(other, other_radius)| {
                (at.x - other.x).hypot(at.y - other.y) >= radius + other_radius + 1.0
            }) && obstacles.iter().all(|rect| {
                at.x + radius <= rect.x
                    || at.x - radius >= rect.right()
                    || at.y + radius <= rect.y
                    || at.y - radius >= rect.bottom()
            })
        };
        let preferred = bezier(routed.last_curve, routed.label_along);
        let chosen = std::iter::once(routed.label_along)
            .chain(ALONG)
            .map(|t| bezier(routed.last_curve, t))
            .find(|&at| free(at))
            .unwrap_or(preferred);
        routed.label_at = chosen;
        placed.push((chosen, radius));
    }
}

/// The free vertical stretches of a column, including above and below it.
fn free_gaps(obstacles: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (Some(first), Some(last)) = (obstacles.first(), obstacles.last()) else {
        return vec![(MARGIN, MARGIN + NODE_GAP)];
    };
    let mut gaps = vec![(first.0 - MARGIN + 4.0, first.0 - 2.0)];
    let mut lowest = first.1;
    for obstacle in &obstacles[1..] {
        if obstacle.0 > lowest {
            gaps.push((lowest, obstacle.0));
        }
        lowest = lowest.max(obstacle.1);
    }
    gaps.push((last.1.max(lowest) + 2.0, last.1.max(lowest) + MARGIN - 4.0));
    gaps
}

fn distance_to(y: f64, gap: (f64, f64)) -> f64 {
    if y < gap.0 {
        gap.0 - y
    } else if y > gap.1 {
        y - gap.1
    } else {
        0.0
    }
}

/// A path through `points`: S-curves between columns, straight through
/// the gaps of the columns crossed.
fn threaded_path(points: &[Point]) -> (String, [Point; 4]) {
    let mut path = String::new();
    let mut last_curve = [Point { x: 0.0, y: 0.0 }; 4];
    if let Some(first) = points.first() {
        let _ = write!(path, "M{} {}", num(first.x), num(first.y));
    }
    for (index, pair) in points.windows(2).enumerate() {
        let (p, q) = (pair[0], pair[1]);
        // Odd steps cross a column along its gap.
        if index % 2 == 1 {
            let _ = write!(path, " L{} {}", num(q.x), num(q.y));
            continue;
        }
        let middle = (p.x + q.x) / 2.0;
        let c1 = Point { x: middle, y: p.y };
        let c2 = Point { x: middle, y: q.y };
        let _ = write!(
            path,
            " C{} {} {} {} {} {}",
            num(c1.x),
            num(c1.y),
            num(c2.x),
            num(c2.y),
            num(q.x),
            num(q.y)
        );
        last_curve = [p, c1, c2, q];
    }
    (path, last_curve)
}

fn bezier([p0, p1, p2, p3]: [Point; 4], t: f64) -> Point {
    let u = 1.0 - t;
    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    Point {
        x: a * p0.x + b * p1.x + c * p2.x + d * p3.x,
        y: a * p0.y + b * p1.y + c * p2.y + d * p3.y,
    }
}

/// Coordinates with one decimal: enough for a screen, and stable bytes.
fn num(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded == 0.0 {
        return "0".to_owned();
    }
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

struct EdgeStyle {
    stroke: &'static str,
    dash: Option<&'static str>,
}

fn edge_style(kind: EdgeKind) -> EdgeStyle {
    match kind {
        EdgeKind::FallsBackTo => EdgeStyle {
            stroke: "#6d6d6d",
            dash: Some("6 4"),
        },
        EdgeKind::Requires => EdgeStyle {
            stroke: "#8d6e63",
            dash: Some("1.5 3"),
        },
        EdgeKind::BoundTo => EdgeStyle {
            stroke: "#3d6fa8",
            dash: None,
        },
        _ => EdgeStyle {
            stroke: "#505050",
            dash: None,
        },
    }
}

/// Fill and stroke of a node's shape; a down node is red whatever it is.
fn node_colours(node: &DrawNode) -> (&'static str, &'static str) {
    if node.down {
        return (DOWN_FILL, DOWN_STROKE);
    }
    match node.kind {
        NodeKind::Swarm => ("#d6e6fb", "#2f5f9e"),
        NodeKind::Agent => ("#ffffff", "#4a4a4a"),
        NodeKind::Contract => ("#fff8e1", "#a1887f"),
        NodeKind::Route => ("#e8f5e9", "#2e7d32"),
        NodeKind::Fallback => ("#f5f5f5", "#616161"),
        _ => ("#ffffff", "#37474f"),
    }
}

fn render(drawing: &Drawing, layout: &Layout) -> String {
    let mut out = String::new();
    let (width, height) = (num(layout.width), num(layout.height));
    let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\">"
    );
    out.push_str("<title>Baton capability graph</title>\n");
    out.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0 0 L10 5 L0 10 z\" fill=\"#505050\"/></marker></defs>\n",
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );

    for cluster in &layout.clusters {
        let rect = &cluster.rect;
        let _ = writeln!(
            out,
            "<g class=\"cluster\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"10\" fill=\"#fafafa\" stroke=\"#8a8a8a\" stroke-dasharray=\"5 4\"/></g>",
            num(rect.x),
            num(rect.y),
            num(rect.width),
            num(rect.height),
        );
    }

    for routed in &layout.edges {
        let edge = &drawing.edges[routed.edge];
        let style = edge_style(edge.kind);
        let dash = style
            .dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<g class=\"edge {}\"><title>{} {} {}</title><path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.3\"{dash} marker-end=\"url(#arrow)\"/>",
            edge.kind.as_str(),
            escape(&edge.from),
            edge.kind.as_str(),
            escape(&edge.to),
            routed.path,
            style.stroke
        );
        if let Some(label) = &edge.label {
            let radius = label_radius(label);
            let at = routed.label_at;
            let _ = write!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"#ffffff\" stroke=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#222222\">{}</text>",
                num(at.x),
                num(at.y),
                num(radius),
                style.stroke,
                num(at.x),
                num(at.y + 3.2),
                escape(label)
            );
        }
        out.push_str("</g>\n");
    }

    // Labels after the edges, so an edge crossing a domain's corner does
    // not strike through its name.
    for cluster in &layout.clusters {
        let label = &cluster.label;
        let _ = writeln!(
            out,
            "<g class=\"cluster-label\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"#fafafa\" fill-opacity=\"0.9\" stroke=\"none\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#5f5f5f\">domain {}</text></g>",
            num(label.x),
            num(label.y),
            num(label.width),
            num(label.height),
            num(label.x + 3.0),
            num(label.y + 11.5),
            escape(&cluster.name)
        );
    }

    for (node, rect) in drawing.nodes.iter().zip(&layout.boxes) {
        render_node(&mut out, node, rect);
    }

    render_legend(&mut out, layout.legend_top);
    out.push_str("</svg>\n");
    out
}

fn render_node(out: &mut String, node: &DrawNode, rect: &Rect) {
    let kind = kind_name(node.kind);
    let down = if node.down { " down" } else { "" };
    let _ = write!(
        out,
        "<g class=\"node {kind}{down}\" id=\"{}\"><title>{}</title>",
        escape(&node.id),
        escape(&node.id)
    );
    let (fill, stroke) = node_colours(node);
    let paint = format!("fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.3\"");
    let (x, y, right, bottom) = (rect.x, rect.y, rect.right(), rect.bottom());
    match node.kind {
        NodeKind::Route => {
            let middle = rect.centre_y();
            let _ = write!(
                out,
                "<polygon points=\"{},{} {},{} {},{} {},{} {},{} {},{}\" {paint}/>",
                num(x),
                num(middle),
                num(x + ROUTE_POINT),
                num(y),
                num(right - ROUTE_POINT),
                num(y),
                num(right),
                num(middle),
                num(right - ROUTE_POINT),
                num(bottom),
                num(x + ROUTE_POINT),
                num(bottom)
            );
        }
        NodeKind::Contract => {
            let fold = right - NOTE_FOLD;
            let _ = write!(
                out,
                "<path d=\"M{} {} L{} {} L{} {} L{} {} L{} {} Z\" {paint}/><path d=\"M{} {} L{} {} L{} {}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"1\"/>",
                num(x),
                num(y),
                num(fold),
                num(y),
                num(right),
                num(y + NOTE_FOLD),
                num(right),
                num(bottom),
                num(x),
                num(bottom),
                num(fold),
                num(y),
                num(fold),
                num(y + NOTE_FOLD),
                num(right),
                num(y + NOTE_FOLD)
            );
        }
        _ => {
            let radius = match node.kind {
                NodeKind::Agent => 10.0,
                NodeKind::Swarm => 4.0,
                _ => 3.0,
            };
            let dash = if node.kind == NodeKind::Fallback {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" {paint}{dash}/>",
                num(x),
                num(y),
                num(rect.width),
                num(rect.height),
                num(radius)
            );
        }
    }
    let centre_x = match node.kind {
        // The fold takes room from the right.
        NodeKind::Contract => x + (rect.width - NOTE_FOLD) / 2.0,
        _ => x + rect.width / 2.0,
    };
    let (title_colour, detail_colour) = if node.down {
        (DOWN_STROKE, DOWN_STROKE)
    } else {
        ("#1f1f1f", "#616161")
    };
    // Boxes grown for their edges keep their text in the middle.
    let block = TITLE_LINE + DETAIL_LINE * node.lines.len().saturating_sub(1) as f64;
    let mut cursor = y + (rect.height - block) / 2.0;
    for (number, line) in node.lines.iter().enumerate() {
        if number == 0 {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" font-size=\"{}\" font-weight=\"bold\" text-anchor=\"middle\" fill=\"{title_colour}\">{}</text>",
                num(centre_x),
                num(cursor + 12.0),
                num(TITLE_SIZE),
                escape(line)
            );
            cursor += TITLE_LINE;
        } else {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"middle\" fill=\"{detail_colour}\">{}</text>",
                num(centre_x),
                num(cursor + 10.0),
                num(DETAIL_SIZE),
                escape(line)
            );
            cursor += DETAIL_LINE;
        }
    }
    out.push_str("</g>\n");
}

/// The legend's entries: a sample of the mark, then what it means.
const LEGEND: [(&str, &str); 6] = [
    ("solid", "served by / delegates"),
    ("bound", "bound to"),
    ("dashed", "falls back to"),
    ("dotted", "requires"),
    ("order", "failover order"),
    ("down", "down (out of service now)"),
];
const LEGEND_SAMPLE: f64 = 34.0;
const LEGEND_SPACING: f64 = 26.0;

fn legend_width() -> f64 {
    LEGEND
        .iter()
        .map(|(_, text)| LEGEND_SAMPLE + 6.0 + text_width(text, 11.0, CHAR_WIDTH) + LEGEND_SPACING)
        .sum::<f64>()
        - LEGEND_SPACING
}

fn render_legend(out: &mut String, top: f64) {
    out.push_str("<g class=\"legend\" font-size=\"11\" fill=\"#333333\">");
    let middle = top + LEGEND_HEIGHT / 2.0;
    let mut x = MARGIN;
    for (sample, text) in LEGEND {
        let line = |kind: EdgeKind| {
            let style = edge_style(kind);
            let dash = style
                .dash
                .map(|d| format!(" stroke-dasharray=\"{d}\""))
                .unwrap_or_default();
            format!(
                "<path d=\"M{} {} L{} {}\" stroke=\"{}\" stroke-width=\"1.3\"{dash} marker-end=\"url(#arrow)\"/>",
                num(x),
                num(middle),
                num(x + LEGEND_SAMPLE),
                num(middle),
                style.stroke
            )
        };
        let mark = match sample {
            "bound" => line(EdgeKind::BoundTo),
            "dashed" => line(EdgeKind::FallsBackTo),
            "dotted" => line(EdgeKind::Requires),
            "order" => format!(
                "<circle cx=\"{}\" cy=\"{}\" r=\"7\" fill=\"#ffffff\" stroke=\"#505050\"/><text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\">1</text>",
                num(x + LEGEND_SAMPLE / 2.0),
                num(middle),
                num(x + LEGEND_SAMPLE / 2.0),
                num(middle + 3.2)
            ),
            "down" => format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"{DOWN_FILL}\" stroke=\"{DOWN_STROKE}\"/>",
                num(x + 4.0),
                num(top + 1.0),
                num(LEGEND_SAMPLE - 8.0),
                num(LEGEND_HEIGHT - 2.0)
            ),
            _ => line(EdgeKind::ServedBy),
        };
        out.push_str(&mark);
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            num(x + LEGEND_SAMPLE + 6.0),
            num(middle + 4.0),
            escape(text)
        );
        x += LEGEND_SAMPLE + 6.0 + text_width(text, 11.0, CHAR_WIDTH) + LEGEND_SPACING;
    }
    out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG};
    use crate::graph::render::{DrawEdge, drawing};
    use crate::graph::{Edge, Node};
    use crate::swarm::Swarm;
    use crate::template::load_swarm;

    fn swarm(name: &str, config: &Config) -> Swarm {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("agents")
            .join(name);
        load_swarm(&dir, config).expect("shipped swarm loads").swarm
    }

    fn shipped(names: &[&str]) -> DependencyGraph {
        let config =
            Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).expect("default config");
        let swarms: Vec<Swarm> = names.iter().map(|name| swarm(name, &config)).collect();
        crate::graph::build(&config, &swarms)
    }

    fn provider(name: &str, domain: &str) -> Node {
        Node::Provider {
            name: name.to_owned(),
            provider: crate::config::ProviderKind::Openai,
            model: Some("gpt-4.1-mini".to_owned()),
            domain: domain.to_owned(),
            capabilities: Vec::new(),
            key_env: None,
        }
    }

    /// Two routes over three providers in two domains, one provider
    /// named to need escaping.
    fn small() -> DependencyGraph {
        let mut graph = DependencyGraph::new();
        let fast = graph.add_node(Node::Route {
            name: "fast".to_owned(),
        });
        let slow = graph.add_node(Node::Route {
            name: "slow".to_owned(),
        });
        let a = graph.add_node(provider("a<b&c", "east"));
        let b = graph.add_node(provider("b", "west"));
        let c = graph.add_node(provider("c", "east"));
        let served = |order| Edge {
            kind: EdgeKind::ServedBy,
            order: Some(order),
        };
        graph.add_edge(fast, b, served(1));
        graph.add_edge(fast, a, served(2));
        graph.add_edge(slow, c, served(1));
        graph.add_edge(slow, b, served(2));
        graph
    }

    fn check_layout(drawing: &Drawing) {
        let layout = layout(drawing);
        assert_eq!(layout.boxes.len(), drawing.nodes.len());
        for (i, a) in layout.boxes.iter().enumerate() {
            assert!(a.width > 0.0 && a.height > 0.0);
            assert!(a.right() <= layout.width && a.bottom() <= layout.legend_top);
            for b in &layout.boxes[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        for (i, cluster) in layout.clusters.iter().enumerate() {
            for other in &layout.clusters[i + 1..] {
                assert!(!cluster.rect.overlaps(&other.rect));
            }
        }
        for (node, rect) in drawing.nodes.iter().zip(&layout.boxes) {
            if let Some(domain) = &node.cluster {
                let cluster = layout
                    .clusters
                    .iter()
                    .find(|c| c.name == *domain)
                    .expect("every domain has its box");
                assert!(
                    cluster.rect.contains(rect),
                    "{} outside its domain",
                    node.id
                );
            } else {
                assert!(layout.clusters.iter().all(|c| !c.rect.overlaps(rect)));
            }
        }
        let domains = drawing.clusters().len();
        assert_eq!(layout.clusters.len(), domains, "one box per domain");
    }

    /// Checks that every opened tag is closed, in order.
    fn balanced(document: &str) -> bool {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = document;
        while let Some(start) = rest.find('<') {
            let Some(length) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + length];
            rest = &rest[start + length + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop() != Some(name.trim()) {
                    return false;
                }
            } else {
                open.push(tag.split_whitespace().next().unwrap_or(""));
            }
        }
        open.is_empty()
    }

    #[test]
    fn the_shipped_swarms_lay_out_without_overlaps() {
        check_layout(&drawing(&small()));
        check_layout(&drawing(&shipped(&["support-bot"])));
        check_layout(&drawing(&shipped(&["support-bot", "knowledge-qa"])));
        check_layout(&Drawing::default());
    }

    #[test]
    fn every_node_is_drawn_once_with_its_id() {
        let graph = shipped(&["support-bot", "knowledge-qa"]);
        let document = svg(&graph);
        for node in &drawing(&graph).nodes {
            let group = format!("id=\"{}\"", escape(&node.id));
            assert_eq!(document.matches(&group).count(), 1, "{}", node.id);
            let title = format!("<title>{}</title>", escape(&node.id));
            assert_eq!(document.matches(&title).count(), 1, "{}", node.id);
        }
        let edges = drawing(&graph).edges.len();
        assert_eq!(document.matches("<g class=\"edge ").count(), edges);
    }

    #[test]
    fn the_document_is_well_formed_and_deterministic() {
        let graph = shipped(&["support-bot"]);
        let document = svg(&graph);
        assert!(document.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(document.contains("viewBox=\"0 0 "));
        assert!(balanced(&document));
        assert_eq!(document, svg(&graph));
        assert_eq!(document, svg(&shipped(&["support-bot"])));
        assert!(balanced(&svg(&small())));
        assert!(balanced(&svg(&DependencyGraph::new())));
    }

    #[test]
    fn text_is_escaped() {
        let document = svg(&small());
        assert!(document.contains(">a&lt;b&amp;c</text>"));
        assert!(document.contains("id=\"provider:a&lt;b&amp;c\""));
        assert!(!document.contains("a<b"));
        assert_eq!(escape("'\"<>&"), "&apos;&quot;&lt;&gt;&amp;");
    }

    #[test]
    fn a_down_provider_is_red() {
        let mut drawn = drawing(&small());
        for node in &mut drawn.nodes {
            node.down = node.id == "provider:b";
        }
        let document = render(&drawn, &layout(&drawn));
        let start = document
            .find("<g class=\"node provider down\" id=\"provider:b\">")
            .expect("the down provider is marked");
        let group = &document[start..];
        let group = &group[..group.find("</g>").unwrap_or(group.len())];
        assert!(group.contains("fill=\"#ffcdd2\" stroke=\"#c62828\""));
        assert!(group.contains("fill=\"#c62828\">b</text>"));
        let up = &document[document.find("id=\"provider:c\"").unwrap_or(0)..];
        assert!(!up[..up.find("</g>").unwrap_or(0)].contains("#ffcdd2"));
    }

    #[test]
    fn providers_stay_grouped_by_domain_and_supervisors_lead() {
        let drawn = drawing(&shipped(&["support-bot", "knowledge-qa"]));
        let layout = layout(&drawn);
        let mut by_top: Vec<(f64, &DrawNode)> =
            layout.boxes.iter().map(|r| r.y).zip(&drawn.nodes).collect();
        by_top.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut seen: Vec<&str> = Vec::new();
        for (_, node) in by_top.iter().filter(|(_, n)| n.kind == NodeKind::Provider) {
            let domain = node.cluster.as_deref().unwrap_or("");
            if seen.last() != Some(&domain) {
                assert!(!seen.contains(&domain), "domain {domain} split");
                seen.push(domain);
            }
        }
        let agents: Vec<&str> = by_top
            .iter()
            .filter(|(_, n)| n.kind == NodeKind::Agent)
            .map(|(_, n)| n.id.as_str())
            .collect();
        for swarm in ["support-bot", "knowledge-qa"] {
            let positions: Vec<usize> = agents
                .iter()
                .enumerate()
                .filter(|(_, id)| id.starts_with(&format!("agent:{swarm}/")))
                .map(|(i, _)| i)
                .collect();
            let first = positions[0];
            assert_eq!(
                positions,
                (first..first + positions.len()).collect::<Vec<_>>()
            );
            assert_eq!(agents[first], format!("agent:{swarm}/supervisor"));
        }
    }

    #[test]
    fn numbered_edges_keep_their_label() {
        let drawn = Drawing {
            nodes: drawing(&small()).nodes,
            edges: vec![DrawEdge {
                from: "route:fast".to_owned(),
                to: "provider:b".to_owned(),
                kind: EdgeKind::FallsBackTo,
                label: Some("7".to_owned()),
            }],
        };
        let document = render(&drawn, &layout(&drawn));
        assert!(document.contains("<g class=\"edge falls-back-to\">"));
        assert!(document.contains("stroke-dasharray=\"6 4\" marker-end"));
        assert!(document.contains(">7</text>"));
    }

    #[test]
    fn failover_numbers_sit_clear_of_boxes_and_each_other() {
        for swarms in [&["support-bot"][..], &["support-bot", "knowledge-qa"]] {
            let drawn = drawing(&shipped(swarms));
            let layout = layout(&drawn);
            let labels: Vec<(Point, f64)> = layout
                .edges
                .iter()
                .filter_map(|routed| {
                    let label = drawn.edges[routed.edge].label.as_deref()?;
                    Some((routed.label_at, label_radius(label)))
                })
                .collect();
            assert!(!labels.is_empty());
            for (i, (at, radius)) in labels.iter().enumerate() {
                let circle = Rect {
                    x: at.x - radius,
                    y: at.y - radius,
                    width: 2.0 * radius,
                    height: 2.0 * radius,
                };
                assert!(layout.boxes.iter().all(|rect| !rect.overlaps(&circle)));
                for (other, other_radius) in &labels[i + 1..] {
                    assert!((at.x - other.x).hypot(at.y - other.y) >= radius + other_radius);
                }
            }
        }
    }
}
