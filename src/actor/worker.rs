//! The worker actor: one per worker agent of a swarm.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{Answer, AskError};
use crate::context;
use crate::knowledge::KnowledgeIndex;
use crate::provider::{Backend, Message};
use crate::routing::router::{RouteRequest, Router};
use crate::swarm::classify::Classification;
use crate::swarm::{AgentSpec, Stakes, Swarm};
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
}

/// One request for this worker.
pub struct Job {
    pub trace_id: TraceId,
    pub text: String,
    pub history: Vec<Message>,
    pub classification: Classification,
    pub session: Option<String>,
    /// Tenant or key scope (cached answers never cross it).
    pub scope: String,
    pub reply: RpcReplyPort<Result<Answer, AskError>>,
}

pub enum WorkerMsg {
    Ask(Box<Job>),
    /// Makes the worker fail: supervision is tested with it (and an
    /// operator can use it to recycle a worker).
    Crash,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Ask(job) => {
                let args = state.clone();
                // The upstream call runs on its own task: the mailbox stays
                // free for the next request.
                tokio::spawn(async move {
                    let job = *job;
                    let request = context::assemble(
                        &args.swarm,
                        &args.agent,
                        &job.classification.requested_rules,
                        args.knowledge.as_deref(),
                        &job.history,
                        &job.text,
                    );
                    let route_request = RouteRequest {
                        trace_id: job.trace_id,
                        route: args.agent.route.clone(),
                        scope: job.scope,
                        request,
                        required: args.agent.requires.clone(),
                        extractive: args.extractive.clone(),
                        contract: args.contract.clone(),
                    };
                    let result = args
                        .router
                        .complete(route_request)
                        .await
                        .map_err(AskError::from)
                        .map(|outcome| Answer {
                            needs_review: args.agent.stakes == Stakes::High && outcome.fallback,
                            classification: job.classification,
                            outcome,
                            session: job.session,
                        });
                    // The caller may have given up waiting; nothing to do then.
                    let _ = job.reply.send(result);
                });
                Ok(())
            }
            WorkerMsg::Crash => Err("worker asked to crash".into()),
        }
    }
}
