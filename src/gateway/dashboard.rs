//! `GET /dashboard`: one page, served by Baton with everything inline (no
//! CDN, no outside request), that polls `/dashboard/state` every second:
//! each provider's health, breaker and latency percentiles, the recent
//! failovers, and the dependency graph drawing (`/dashboard/graph.svg`,
//! drawn by Baton with down providers in red).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::graph::DependencyGraph;
use crate::graph::live::{Live, ProviderLive};
use crate::routing::breaker::BreakerState;
use crate::routing::pool::HealthState;
use crate::routing::router::Router;

fn health_name(state: HealthState) -> &'static str {
    match state {
        HealthState::Healthy => "healthy",
        HealthState::Degraded => "degraded",
        HealthState::Down => "down",
    }
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Open => "open",
    }
}

/// Each provider of `router` as it is now.
pub fn providers(router: &Router) -> Vec<Value> {
    let now = tokio::time::Instant::now();
    router
        .pool()
        .handles()
        .iter()
        .map(|handle| {
            let ms = |p: f64| {
                handle
                    .latency_percentile(p)
                    .map(|d| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0)
            };
            json!({
                "name": handle.id().0,
                "health": health_name(handle.health()),
                "breaker": breaker_name(handle.breaker(now).state),
                "p50_ms": ms(50.0),
                "p95_ms": ms(95.0),
                "p99_ms": ms(99.0),
            })
        })
        .collect()
}

/// The graph with each provider's health and breaker as the router sees
/// them now, so the drawing shows who is down.
pub fn graph_now(graph: &DependencyGraph, router: &Router) -> DependencyGraph {
    let now = tokio::time::Instant::now();
    let mut providers = BTreeMap::new();
    for handle in router.pool().handles() {
        providers.insert(
            handle.id().0.clone(),
            ProviderLive {
                health: Some(health_name(handle.health()).to_owned()),
                breaker: Some(breaker_name(handle.breaker(now).state).to_owned()),
                ..ProviderLive::default()
            },
        );
    }
    let mut drawn = graph.clone();
    drawn.live = Some(Live {
        providers,
        ..Live::default()
    });
    drawn
}

/// The page. Its script only talks to the server that sent it.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Baton dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font-family: Helvetica, Arial, sans-serif; margin: 1.5rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
  .muted { color: #777; font-size: .85rem; }
  table { border-collapse: collapse; min-width: 40rem; }
  th, td { text-align: left; padding: .3rem .7rem; border-bottom: 1px solid #e5e5e5; font-size: .9rem; }
  th { color: #555; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .badge { display: inline-block; padding: .05rem .5rem; border-radius: .7rem; font-size: .8rem; font-weight: 600; }
  .healthy { background: #e3f4e5; color: #1b5e20; }
  .degraded { background: #fff3cd; color: #7a5a00; }
  .down { background: #ffcdd2; color: #c62828; }
  #graph img { max-width: 100%; border: 1px solid #eee; }
  #error { color: #c62828; }
</style>
</head>
<body>
<h1>Baton</h1>
<div class="muted">updated <span id="updated">never</span> · <span id="totals"></span> <span id="error"></span></div>

<h2>Providers</h2>
<table>
  <thead><tr><th>provider</th><th>health</th><th>breaker</th><th>p50</th><th>p95</th><th>p99</th></tr></thead>
  <tbody id="providers"></tbody>
</table>

<h2>Recent failovers</h2>
<table>
  <thead><tr><th>when</th><th>model</th><th>from</th><th>to</th><th>why</th></tr></thead>
  <tbody id="failovers"><tr><td colspan="5" class="muted">none yet</td></tr></tbody>
</table>

<h2>Dependency graph</h2>
<div id="graph"><img id="graph-img" alt="the dependency graph of the policy" src="/dashboard/graph.svg"></div>

<script>
"use strict";
const ms = v => v === null || v === undefined ? "–" : v.toFixed(1) + " ms";
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
let lastDown = "";
async function refresh() {
  try {
    const response = await fetch("/dashboard/state", { cache: "no-store" });
    const state = await response.json();
    const body = document.getElementById("providers");
    body.replaceChildren();
    for (const p of state.providers) {
      const row = document.createElement("tr");
      row.dataset.provider = p.name;
      row.dataset.health = p.health;
      row.dataset.breaker = p.breaker;
      cell(row, p.name);
      const badge = document.createElement("span");
      badge.className = "badge " + p.health;
      badge.textContent = p.health === "down" ? "Down" : p.health === "degraded" ? "Degraded" : "Up";
      const health = document.createElement("td");
      health.appendChild(badge);
      row.appendChild(health);
      cell(row, p.breaker.replace("_", "-"));
      cell(row, ms(p.p50_ms), "num");
      cell(row, ms(p.p95_ms), "num");
      cell(row, ms(p.p99_ms), "num");
      body.appendChild(row);
    }
    const failovers = document.getElementById("failovers");
    if (state.failovers.length > 0) {
      failovers.replaceChildren();
      for (const f of state.failovers) {
        const row = document.createElement("tr");
        cell(row, new Date(f.at_ms).toLocaleTimeString());
        cell(row, f.model);
        cell(row, f.from);
        cell(row, f.to);
        cell(row, f.reason);
        failovers.appendChild(row);
      }
    }
    const t = state.totals;
    document.getElementById("totals").textContent =
      t.requests + " requests, " + t.fallbacks + " fallbacks, " + t.degraded + " degraded";
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.getElementById("error").textContent = "";
    const down = state.providers.filter(p => p.health === "down").map(p => p.name).join(",");
    if (down !== lastDown) {
      lastDown = down;
      document.getElementById("graph-img").src = "/dashboard/graph.svg?t=" + Date.now();
    }
  } catch (e) {
    document.getElementById("error").textContent = "· cannot reach Baton: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"##;
