//! The actors (ractor), as DESIGN.md's tree lays them out:
//!
//! - [`baton::Baton`], the root, one per process: a [`provider::Provider`]
//!   actor per remote provider with its [`health::Health`] actor linked
//!   under it, and a [`supervisor::SwarmSupervisor`] per loaded swarm;
//! - each swarm supervisor classifies requests, keeps the sessions, runs
//!   delegation chains and owns the bindings worker → provider, moving
//!   workers when a Health actor reports a provider down and back when it
//!   has stayed up for the hold down;
//! - a [`worker::Worker`] per worker agent assembles the prompt and hands
//!   the request to the routing layer.
//!
//! No actor awaits an upstream inside its message handler: the routing work
//! runs on a task that reports back to the supervisor, so one slow provider
//! never blocks a mailbox. ractor restarts nothing by itself: each level
//! restarts its failed children, a bounded number of times per window.

pub mod baton;
pub mod health;
pub mod provider;
pub mod supervisor;
pub mod worker;

use serde::Serialize;

use crate::routing::router::{Outcome, RouteError};
use crate::swarm::AgentId;
use crate::swarm::classify::Classification;

/// A swarm's answer to one request.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The worker chosen for the request and why.
    pub classification: Classification,
    /// The workers that took part, in order (more than one when a worker
    /// delegates); the last one wrote the answer.
    pub chain: Vec<AgentId>,
    pub outcome: Outcome,
    /// A high-stakes agent answered through a fallback path: a person
    /// should look at it.
    pub needs_review: bool,
    pub session: Option<String>,
}

/// Why a swarm could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("{0}")]
    WorkerDown(String),
    /// The journal could not record the request: it is not acknowledged.
    #[error("{0}")]
    Store(String),
}
