//! The swarm supervisor: classifies requests, keeps sessions, owns and
//! restarts the workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use super::worker::{Job, Worker, WorkerArgs, WorkerMsg};
use super::{Answer, AskError};
use crate::knowledge::KnowledgeIndex;
use crate::provider::Message;
use crate::provider::extractive::Extractive;
use crate::routing::router::Router;
use crate::swarm::classify::Classifier;
use crate::swarm::{AgentId, Swarm};
use crate::trace::TraceId;

/// Restarts of one worker allowed per [`RESTART_WINDOW`]; past that the
/// worker stays down and requests for it fail clearly.
pub const MAX_RESTARTS: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Session turns kept for replay (user and assistant messages).
pub const HISTORY_LIMIT: usize = 40;

pub struct SwarmSupervisor;

pub struct SupervisorArgs {
    pub swarm: Arc<Swarm>,
    pub router: Arc<Router>,
    /// The swarm's knowledge index, when it has a knowledge base.
    pub knowledge: Option<Arc<KnowledgeIndex>>,
}

pub struct SupervisorState {
    classifier: Classifier,
    workers: HashMap<AgentId, ActorRef<WorkerMsg>>,
    worker_args: HashMap<AgentId, WorkerArgs>,
    restarts: HashMap<AgentId, Vec<Instant>>,
    sessions: HashMap<String, Vec<Message>>,
}

pub enum SupervisorMsg {
    Ask {
        text: String,
        session: Option<String>,
        reply: RpcReplyPort<Result<Answer, AskError>>,
    },
    /// A finished exchange, to append to its session.
    Remember {
        session: String,
        user: String,
        assistant: String,
    },
    /// The worker actor of an agent, for tests and status.
    Worker {
        agent: AgentId,
        reply: RpcReplyPort<Option<ActorRef<WorkerMsg>>>,
    },
}

impl SwarmSupervisor {
    async fn spawn_worker(
        myself: &ActorRef<SupervisorMsg>,
        args: WorkerArgs,
    ) -> Result<ActorRef<WorkerMsg>, ActorProcessingErr> {
        let (worker, _) = Actor::spawn_linked(None, Worker, args, myself.get_cell()).await?;
        Ok(worker)
    }
}

impl Actor for SwarmSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let extractive = args.knowledge.as_ref().map(|index| {
            Arc::new(Extractive::new(
                crate::config::ProviderId("extractive".into()),
                index.clone(),
            )) as Arc<dyn crate::provider::Backend>
        });
        let mut state = SupervisorState {
            classifier: Classifier::new(&args.swarm, args.knowledge.as_deref()),
            workers: HashMap::new(),
            worker_args: HashMap::new(),
            restarts: HashMap::new(),
            sessions: HashMap::new(),
        };
        for agent in args.swarm.workers() {
            let worker_args = WorkerArgs {
                swarm: args.swarm.clone(),
                agent: agent.clone(),
                router: args.router.clone(),
                knowledge: args.knowledge.clone(),
                extractive: extractive.clone(),
                // Checked to compile when the swarm was loaded.
                contract: agent
                    .output_schema
                    .as_ref()
                    .and_then(|schema| jsonschema::validator_for(schema).ok())
                    .map(Arc::new),
            };
            let worker = Self::spawn_worker(&myself, worker_args.clone()).await?;
            state.workers.insert(agent.id.clone(), worker);
            state.worker_args.insert(agent.id.clone(), worker_args);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Ask {
                text,
                session,
                reply,
            } => {
                let classification = state.classifier.classify(&text);
                let trace_id = TraceId::new();
                tracing::info!(trace = %trace_id, worker = %classification.worker, score = classification.score, confidence = classification.confidence, decided_by = ?classification.decided_by, "classified");
                let Some(worker) = state.workers.get(&classification.worker) else {
                    let _ = reply.send(Err(AskError::WorkerDown(classification.worker.0.clone())));
                    return Ok(());
                };
                let history = session
                    .as_ref()
                    .and_then(|s| state.sessions.get(s))
                    .cloned()
                    .unwrap_or_default();
                // The worker answers a port of ours, so that the exchange
                // can be remembered in the session before the caller hears.
                let (port_tx, port_rx) = tokio::sync::oneshot::channel();
                let job = Job {
                    trace_id,
                    text: text.clone(),
                    history,
                    classification,
                    session: session.clone(),
                    scope: String::new(),
                    reply: port_tx.into(),
                };
                if worker.send_message(WorkerMsg::Ask(Box::new(job))).is_err() {
                    let _ = reply.send(Err(AskError::WorkerDown(String::from(
                        "worker mailbox closed",
                    ))));
                    return Ok(());
                }
                tokio::spawn(async move {
                    let result = match port_rx.await {
                        Ok(result) => result,
                        Err(_) => Err(AskError::WorkerDown(
                            "the worker stopped before answering".into(),
                        )),
                    };
                    if let (Ok(answer), Some(session)) = (&result, &session) {
                        let _ = myself.send_message(SupervisorMsg::Remember {
                            session: session.clone(),
                            user: text,
                            assistant: answer.outcome.response.text.clone(),
                        });
                    }
                    let _ = reply.send(result);
                });
            }
            SupervisorMsg::Remember {
                session,
                user,
                assistant,
            } => {
                let history = state.sessions.entry(session).or_default();
                history.push(Message::user(user));
                history.push(Message::assistant(assistant));
                if history.len() > HISTORY_LIMIT {
                    let excess = history.len() - HISTORY_LIMIT;
                    history.drain(..excess);
                }
            }
            SupervisorMsg::Worker { agent, reply } => {
                let _ = reply.send(state.workers.get(&agent).cloned());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let Some(agent) = state
            .workers
            .iter()
            .find(|(_, worker)| worker.get_id() == cell.get_id())
            .map(|(agent, _)| agent.clone())
        else {
            return Ok(());
        };
        let now = Instant::now();
        let recent = state.restarts.entry(agent.clone()).or_default();
        recent.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if recent.len() >= MAX_RESTARTS {
            tracing::error!(worker = %agent, %error, "worker failed too often; left down");
            state.workers.remove(&agent);
            return Ok(());
        }
        recent.push(now);
        tracing::warn!(worker = %agent, %error, "worker failed; restarting");
        if let Some(args) = state.worker_args.get(&agent).cloned() {
            let worker = Self::spawn_worker(&myself, args).await?;
            state.workers.insert(agent, worker);
        }
        Ok(())
    }
}
