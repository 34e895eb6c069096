//! The actors (ractor): a swarm supervisor per loaded swarm and a worker per
//! worker agent.
//!
//! The supervisor classifies each request, keeps the session histories and
//! hands the request to the chosen worker; the worker assembles the prompt
//! and runs it through its route. Neither awaits an upstream inside its
//! message handler: the routing work runs on a task that answers the
//! caller's reply port directly, so one slow provider never blocks a
//! mailbox. Workers are linked to the supervisor, which restarts a failed
//! worker (a bounded number of times per window) — ractor restarts nothing
//! by itself.
//!
//! Built so far: these two levels. The provider pool is shared through the
//! [`Router`](crate::routing::router::Router); Provider and Health actors,
//! supervised failover and fail-back come next.

pub mod supervisor;
pub mod worker;

use serde::Serialize;

use crate::routing::router::{Outcome, RouteError};
use crate::swarm::classify::Classification;

/// A swarm's answer to one request.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The worker that answered and why it was chosen.
    pub classification: Classification,
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
    #[error("worker `{0}` is not running")]
    WorkerDown(String),
}
