//! The Health actor: one per provider, linked under its Provider actor.
//!
//! It judges the provider from two sources. Passive: every attempt's
//! outcome, which the provider's handle forwards as it is recorded.
//! Active: a probe on the provider's interval, so that a provider nobody is
//! sending to (every worker moved off it) is still watched. Probes are
//! token-free by default (`GET /models`); a one-token completion only where
//! the config asks for it, since probes that generate tokens cost money.
//!
//! A models probe proves the API answers, not that the model does, so it
//! may open a breaker (a failed probe counts like a failed call) but never
//! closes one: recovery is proven by a half-open trial that a real request
//! (or a chat probe) makes.
//!
//! States: Down while the breaker is not closed; Degraded while the recent
//! p95 latency is over `[health] degraded_latency` or the recent failure
//! share is over `degraded_error_rate`; Healthy otherwise. Each change is
//! published on the process's health port, which swarm supervisors
//! subscribe to, and stored on the handle, which routing and status read
//! without asking the actor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, OutputPort, RpcReplyPort};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{HealthSettings, ProbeKind, ProviderId};
use crate::provider::{AttemptDeadline, ChatRequest, Message, ProviderError};
use crate::routing::breaker::{Admission, BreakerSnapshot, BreakerState};
use crate::routing::pool::{HealthState, Observed, ProviderHandle, counts_against_health};

/// Outcomes kept for the error rate.
const OUTCOME_WINDOW: usize = 20;
/// Fewer outcomes than this say nothing about an error rate.
const MIN_OUTCOMES: usize = 5;

/// A provider's health changed.
#[derive(Debug, Clone, Serialize)]
pub struct HealthChange {
    pub provider: ProviderId,
    pub from: HealthState,
    pub to: HealthState,
    pub reason: String,
    pub at: SystemTime,
}

/// The port every Health actor of a process publishes on.
pub type HealthPort = Arc<OutputPort<HealthChange>>;

/// What `status` shows of a provider.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub provider: ProviderId,
    pub state: HealthState,
    pub breaker: BreakerSnapshot,
    pub p95: Option<Duration>,
    pub error_rate: f64,
    pub probes_sent: u64,
    pub probes_failed: u64,
}

pub struct Health;

pub struct HealthArgs {
    pub handle: Arc<ProviderHandle>,
    pub settings: HealthSettings,
    pub port: HealthPort,
}

pub struct HealthActorState {
    handle: Arc<ProviderHandle>,
    settings: HealthSettings,
    port: HealthPort,
    /// Recent outcomes: `true` for a failure that counts against health.
    outcomes: VecDeque<bool>,
    probing: bool,
    probes_sent: u64,
    probes_failed: u64,
}

pub enum HealthMsg {
    Probe,
    /// A probe finished; its outcome is already on the handle.
    ProbeDone {
        result: Result<(), ProviderError>,
    },
    Observed(Observed),
    Status(RpcReplyPort<HealthReport>),
    /// Makes the actor panic: supervision is tested with it.
    Crash,
}

impl Actor for Health {
    type Msg = HealthMsg;
    type State = HealthActorState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthActorState, ActorProcessingErr> {
        let probe = args.handle.spec.probe;
        if probe.kind != ProbeKind::None && !probe.interval.is_zero() {
            myself.send_interval(probe.interval, || HealthMsg::Probe);
        }
        Ok(HealthActorState {
            handle: args.handle,
            settings: args.settings,
            port: args.port,
            outcomes: VecDeque::with_capacity(OUTCOME_WINDOW),
            probing: false,
            probes_sent: 0,
            probes_failed: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        message: HealthMsg,
        state: &mut HealthActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HealthMsg::Probe => {
                // An ejection may have ended since the last event.
                evaluate(state, "tick");
                if !state.probing {
                    start_probe(&myself, state);
                }
            }
            HealthMsg::ProbeDone { result } => {
                state.probing = false;
                if let Err(error) = &result {
                    state.probes_failed += 1;
                    tracing::debug!(provider = %state.handle.id(), %error, "probe failed");
                }
                evaluate(state, "probe");
            }
            HealthMsg::Observed(observed) => {
                if state.outcomes.len() == OUTCOME_WINDOW {
                    state.outcomes.pop_front();
                }
                state.outcomes.push_back(observed.failure.is_some());
                let reason = observed.failure.unwrap_or("call");
                evaluate(state, reason);
            }
            HealthMsg::Status(reply) => {
                evaluate(state, "status");
                let _ = reply.send(HealthReport {
                    provider: state.handle.id().clone(),
                    state: state.handle.health(),
                    breaker: state.handle.breaker(Instant::now()),
                    p95: state.handle.latency_percentile(95.0),
                    error_rate: error_rate(&state.outcomes),
                    probes_sent: state.probes_sent,
                    probes_failed: state.probes_failed,
                });
            }
            HealthMsg::Crash => panic!("health actor asked to crash"),
        }
        Ok(())
    }
}

/// Runs one probe on its own task, so the mailbox keeps taking outcomes.
fn start_probe(myself: &ActorRef<HealthMsg>, state: &mut HealthActorState) {
    let now = Instant::now();
    let breaker = state.handle.breaker(now).state;
    let kind = state.handle.spec.probe.kind;
    let trial = match (breaker, kind) {
        (BreakerState::Open, _) | (_, ProbeKind::None) => return,
        (BreakerState::Closed, _) => false,
        // Half-open: a chat probe may be the trial; a models probe takes
        // the trial only to report a failure, and gives it back otherwise.
        (BreakerState::HalfOpen, _) => match state.handle.admit(now) {
            Admission::Trial => true,
            Admission::Allowed => false,
            Admission::Rejected { .. } => return,
        },
    };
    state.probing = true;
    state.probes_sent += 1;
    let handle = state.handle.clone();
    let timeout = state.settings.probe_timeout.0;
    let reply_to = myself.clone();
    tokio::spawn(async move {
        let deadline = AttemptDeadline::new(timeout, timeout);
        let result = match kind {
            ProbeKind::Chat => {
                let request = ChatRequest {
                    messages: vec![Message::user("ping")],
                    max_tokens: Some(1),
                    ..ChatRequest::default()
                };
                handle
                    .backend
                    .complete(&request, deadline)
                    .await
                    .map(|_| ())
            }
            _ => handle.backend.probe(deadline).await,
        };
        // Settled on the handle here, not by the actor: a trial this probe
        // holds must go back even if the actor died meanwhile.
        let now = Instant::now();
        match &result {
            Ok(()) if kind == ProbeKind::Chat => handle.record_probe_success(now, trial),
            // A models probe cannot prove the model answers; a trial it
            // held goes back for a real request.
            Ok(()) if trial => handle.abandon(now),
            Ok(()) => {}
            // A refused key or a missing /models endpoint says nothing
            // about whether the provider answers chat requests.
            Err(error) if !counts_against_health(error) => {
                if trial {
                    handle.abandon(now);
                }
            }
            Err(_) => handle.record_probe_failure(now, trial),
        }
        let _ = reply_to.send_message(HealthMsg::ProbeDone { result });
    });
}

fn error_rate(outcomes: &VecDeque<bool>) -> f64 {
    if outcomes.len() < MIN_OUTCOMES {
        return 0.0;
    }
    outcomes.iter().filter(|failed| **failed).count() as f64 / outcomes.len() as f64
}

/// Works out the state from the breaker and recent outcomes; publishes a
/// change.
fn evaluate(state: &mut HealthActorState, cause: &str) {
    let now = Instant::now();
    let breaker = state.handle.breaker(now);
    let p95 = state.handle.latency_percentile(95.0);
    let rate = error_rate(&state.outcomes);
    let (next, reason) = if breaker.state != BreakerState::Closed {
        (
            HealthState::Down,
            format!(
                "breaker {:?} after {} consecutive failures (last: {cause})",
                breaker.state, breaker.consecutive_failures
            ),
        )
    } else if let Some(p95) = p95.filter(|p| *p > state.settings.degraded_latency.0) {
        (
            HealthState::Degraded,
            format!(
                "p95 latency {p95:?} over {:?}",
                state.settings.degraded_latency.0
            ),
        )
    } else if rate >= state.settings.degraded_error_rate && rate > 0.0 {
        (
            HealthState::Degraded,
            format!("{:.0} % of recent calls failed", rate * 100.0),
        )
    } else {
        (HealthState::Healthy, format!("recovered ({cause})"))
    };
    let previous = state.handle.set_health(next);
    if previous != next {
        tracing::info!(provider = %state.handle.id(), from = %previous, to = %next, %reason, "health changed");
        state.port.send(HealthChange {
            provider: state.handle.id().clone(),
            from: previous,
            to: next,
            reason,
            at: SystemTime::now(),
        });
    }
}
