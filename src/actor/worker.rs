//! The worker actor: one per worker agent of a swarm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::AskError;
use super::supervisor::SupervisorMsg;
use crate::config::ProviderId;
use crate::context;
use crate::knowledge::KnowledgeIndex;
use crate::provider::{Backend, Message, StreamEvent};
use crate::routing::router::{RouteRequest, Router};
use crate::swarm::{AgentSpec, RuleId, Swarm};
use crate::trace::TraceId;

/// A worker's behaviour; its spec is in its arguments.
pub struct Worker;

/// What a worker is spawned with.
#[derive(Clone)]
pub struct WorkerArgs {
    pub swarm: Arc<Swarm>,
    pub agent: AgentSpec,
    pub router: Arc<Router>,
    pub knowledge: Option<Arc<KnowledgeIndex>>,
    pub extractive: Option<Arc<dyn Backend>>,
    /// The agent's `output_schema`, compiled once.
    pub contract: Option<Arc<jsonschema::Validator>>,
    /// Where finished work is reported.
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// One request for this worker. Cloned by the supervisor, which keeps a
/// copy until the worker has handed it to the routing layer, so that a
/// worker that dies holding it can be replaced and the request handed on.
#[derive(Debug, Clone)]
pub struct Job {
    pub trace_id: TraceId,
    /// One step of a delegation chain has its own id; the request's trace
    /// id stays the same along the chain.
    pub step: u64,
    pub text: String,
    /// The user's own words, which knowledge retrieval searches: after a
    /// handoff `text` also carries the previous step's brief, model output
    /// that would pull the search away from what was asked.
    pub question: Arc<str>,
    /// The session so far, shared with the supervisor's copy.
    pub history: Arc<Vec<Message>>,
    pub requested_rules: Vec<RuleId>,
    /// Tenant or key scope (cached answers never cross it).
    pub scope: String,
    /// The provider the supervisor has bound this worker to.
    pub bound_to: Option<ProviderId>,
    /// Set by the worker once the routing layer owns the request: from then
    /// on it completes or fails by routing's rules, whatever happens to the
    /// worker actor.
    pub started: Arc<AtomicBool>,
    /// Where the answer streams as it arrives (the last step of a chain
    /// only); `None`: the answer comes whole.
    pub sink: Option<tokio::sync::mpsc::Sender<StreamEvent>>,
}

pub enum WorkerMsg {
    Ask(Box<Job>),
    /// Makes the worker panic after holding its mailbox for `after`, so
    /// that requests can queue behind the crash: supervision is tested
    /// with it (and an operator can use it to recycle a worker).
    Crash {
        after: std::time::Duration,
    },
}

pub struct WorkerState {
    args: WorkerArgs,
    /// The system prompt's fixed part, built once.
    prefix: context::Prefix,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState {
            prefix: context::Prefix::new(&args.swarm, &args.agent),
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let WorkerState {
            args: state,
            prefix,
        } = state;
        match message {
            WorkerMsg::Ask(job) => {
                let job = *job;
                let request = context::assemble_with(
                    prefix,
                    &state.swarm,
                    &job.requested_rules,
                    state.knowledge.as_deref(),
                    &job.history,
                    &job.text,
                    &job.question,
                );
                let route_request = RouteRequest {
                    trace_id: job.trace_id,
                    route: state.agent.route.clone(),
                    scope: job.scope,
                    request,
                    required: state.agent.requires.clone(),
                    extractive: state.extractive.clone(),
                    contract: state.contract.clone(),
                    bound_to: job.bound_to,
                };
                job.started.store(true, Ordering::Release);
                let router = state.router.clone();
                let supervisor = state.supervisor.clone();
                let (trace_id, step, sink) = (job.trace_id, job.step, job.sink);
                // The upstream call runs on its own task: the mailbox stays
                // free for the next request, and the request outlives this
                // actor if it fails meanwhile.
                let routing = tokio::spawn(async move {
                    match sink {
                        Some(sink) => router.stream_to(route_request, sink).await,
                        None => router.complete(route_request).await,
                    }
                });
                // Watched apart from the routing task: even if it panicked,
                // the request ends as failed rather than waiting forever.
                tokio::spawn(async move {
                    let result = match routing.await {
                        Ok(result) => result.map_err(AskError::Route),
                        Err(error) => Err(AskError::WorkerDown(format!(
                            "request {trace_id}: the routing task failed: {error}"
                        ))),
                    };
                    let _ = supervisor.send_message(SupervisorMsg::Done {
                        trace_id,
                        step,
                        result: Box::new(result),
                    });
                });
                Ok(())
            }
            WorkerMsg::Crash { after } => {
                tokio::time::sleep(after).await;
                panic!("worker `{}` asked to crash", state.agent.id)
            }
        }
    }
}
