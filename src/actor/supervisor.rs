//! The swarm supervisor: classifies requests, keeps sessions, runs
//! delegation chains, owns the bindings worker → provider, and owns and
//! restarts the workers.
//!
//! Bindings: each worker starts bound to its route's first provider. When a
//! provider's Health actor reports it Down, every worker bound to it moves
//! to the next provider of its chain that is up (supervised failover); the
//! requests already in flight there are replayed on the next provider by
//! the routing layer with the same context. A worker moves back to an
//! earlier provider of its chain once that one has stayed up for the hold
//! down, and no worker switches twice within one hold down (hysteresis: a
//! provider flapping faster than that causes one switch, not a storm). A
//! failover after which the old provider came back within the hold down is
//! flagged unnecessary.
//!
//! Crashes: the supervisor keeps each request until the worker has handed
//! it to the routing layer. A worker that fails before that is restarted
//! and the request handed to its successor (once; a request that a second
//! worker dies on fails clearly); after that the request completes or
//! fails by routing's own rules, since the routing task does not depend on
//! the worker actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use tokio::time::Instant;

use super::health::HealthChange;
use super::worker::{Job, Worker, WorkerArgs, WorkerMsg};
use super::{Answer, AskError};
use crate::config::ProviderId;
use crate::knowledge::KnowledgeIndex;
use crate::provider::extractive::Extractive;
use crate::provider::{Message, StreamEvent};
use crate::routing::pool::HealthState;
use crate::routing::router::AttemptRecord;
use crate::routing::router::{Outcome, Router, send_whole};
use crate::store::health::now_ns;
use crate::store::journal::{AttemptEntry, ClassificationEntry, Ending, Journal, JournalRecord};
use crate::store::sessions::Sessions;
use crate::store::telemetry::{SwitchEvent, Telemetry};
use crate::store::{Store, StoreError};
use crate::swarm::classify::{Classification, Classifier};
use crate::swarm::{AgentId, AgentSpec, Handoff, Stakes, Swarm};
use crate::trace::TraceId;

/// Restarts of one worker allowed per [`RESTART_WINDOW`]; past that the
/// worker stays down and requests for it fail clearly.
pub const MAX_RESTARTS: usize = 3;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Session turns kept for replay (user and assistant messages).
pub const HISTORY_LIMIT: usize = 40;

/// Sessions kept in memory; past this the least recently used is dropped
/// (durable sessions come with the store).
pub const MAX_SESSIONS: usize = 10_000;

/// Switches kept for `status` (the counters keep counting past it).
const SWITCH_LOG: usize = 1000;

pub struct SwarmSupervisor;

pub struct SupervisorArgs {
    pub swarm: Arc<Swarm>,
    pub router: Arc<Router>,
    /// The swarm's knowledge index, when it has a knowledge base.
    pub knowledge: Option<Arc<KnowledgeIndex>>,
    /// How long a recovered provider must stay up before workers move back
    /// to it; also the least time between two switches of one worker.
    pub hold_down: Duration,
    /// The journal and the sessions; `None` keeps requests in memory only.
    pub persistence: Option<Persistence>,
}

/// What a supervisor keeps in the store.
#[derive(Debug, Clone)]
pub struct Persistence {
    pub store: Store,
    pub journal: Journal,
    pub sessions: Sessions,
    pub telemetry: Telemetry,
}

impl Persistence {
    pub fn new(store: &Store) -> Result<Persistence, StoreError> {
        Ok(Persistence {
            store: store.clone(),
            journal: Journal::new(store)?,
            sessions: Sessions::new(store)?,
            telemetry: Telemetry::new(store)?,
        })
    }
}

/// Why a worker moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchReason {
    /// Its provider went down.
    Failover,
    /// An earlier provider of its chain stayed up for the hold down.
    FailBack,
}

/// One move of a worker from one provider to another.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    pub worker: AgentId,
    pub from: ProviderId,
    pub to: ProviderId,
    pub reason: SwitchReason,
    pub detail: String,
    pub at: SystemTime,
    /// A failover after which the old provider came back within the hold
    /// down: the switch cost more than it saved.
    pub unnecessary: bool,
    #[serde(skip)]
    when: Option<Instant>,
}

/// The bindings and the switches so far.
#[derive(Debug, Clone, Serialize)]
pub struct BindingReport {
    pub bindings: Vec<(AgentId, ProviderId)>,
    pub switches: Vec<Switch>,
    pub switch_count: u64,
    pub unnecessary_count: u64,
    /// Requests handed to a restarted worker after theirs failed.
    pub handed_over: u64,
}

struct Binding {
    /// The route's remote providers in order.
    chain: Vec<ProviderId>,
    current: usize,
    last_switch: Option<Instant>,
}

#[derive(Default)]
struct Session {
    history: Arc<Vec<Message>>,
    used: u64,
}

impl Binding {
    /// The next provider of the chain after the current one that is up,
    /// wrapping round.
    fn next_up(&self, router: &Router) -> Option<usize> {
        (1..self.chain.len())
            .map(|step| (self.current + step) % self.chain.len())
            .find(|&i| health_of(router, &self.chain[i]).is_up())
    }
}

/// A request from acceptance to its answer.
struct Pending {
    question: String,
    session: Option<String>,
    classification: Classification,
    /// The workers of the chain so far; the last one holds the request.
    chain: Vec<AgentId>,
    job: Job,
    /// Whether a worker already died holding this request.
    handed_over: bool,
    needs_review: bool,
    sink: Option<tokio::sync::mpsc::Sender<StreamEvent>>,
    /// Whether the current step streams to `sink` itself.
    streamed: bool,
    /// The attempts of the steps before the current one, for the journal.
    attempts: Vec<AttemptEntry>,
    reply: Option<RpcReplyPort<Result<Answer, AskError>>>,
}

pub struct SupervisorState {
    swarm: Arc<Swarm>,
    router: Arc<Router>,
    classifier: Classifier,
    hold_down: Duration,
    workers: HashMap<AgentId, ActorRef<WorkerMsg>>,
    worker_args: HashMap<AgentId, WorkerArgs>,
    restarts: HashMap<AgentId, Vec<Instant>>,
    /// Shared with the requests in flight; an append copies only while
    /// one of them still holds the old history.
    sessions: HashMap<String, Session>,
    /// Counts uses, to find the least recently used session.
    session_clock: u64,
    pending: HashMap<(TraceId, u64), Pending>,
    next_step: u64,
    bindings: HashMap<AgentId, Binding>,
    /// Since when each provider has been up, for fail-back.
    up_since: HashMap<ProviderId, Instant>,
    switches: Vec<Switch>,
    switch_count: u64,
    unnecessary_count: u64,
    handed_over: u64,
    persistence: Option<Persistence>,
    /// Requests whose `accepted` record is waiting for its flush, with the
    /// worker they go to.
    admitting: HashMap<TraceId, (AgentId, Pending)>,
}

pub enum SupervisorMsg {
    Ask {
        text: String,
        session: Option<String>,
        reply: RpcReplyPort<Result<Answer, AskError>>,
    },
    /// As `Ask`, with the answer's text streamed to `sink` as it arrives
    /// (then `Finished`); the reply still carries the whole answer.
    AskStream {
        text: String,
        session: Option<String>,
        sink: tokio::sync::mpsc::Sender<StreamEvent>,
        reply: RpcReplyPort<Result<Answer, AskError>>,
    },
    /// Asks again a request a crash interrupted, under its trace id.
    Resume {
        record: Box<JournalRecord>,
        reply: RpcReplyPort<Result<Answer, AskError>>,
    },
    /// A request's `accepted` record is durable (or could not be made so).
    Admitted {
        trace_id: TraceId,
        result: Result<(), String>,
    },
    /// A worker's routing task finished one step.
    Done {
        trace_id: TraceId,
        step: u64,
        result: Box<Result<Outcome, AskError>>,
    },
    /// A provider's health changed.
    Health(HealthChange),
    /// Looks for workers to move back to a recovered provider.
    Rebalance,
    /// The worker actor of an agent, for tests and status.
    Worker {
        agent: AgentId,
        reply: RpcReplyPort<Option<ActorRef<WorkerMsg>>>,
    },
    Bindings(RpcReplyPort<BindingReport>),
    /// A conversation ended: its history is dropped.
    Forget {
        session: String,
    },
    /// Makes the supervisor panic: the root's supervision is tested with it.
    Crash,
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
            swarm: args.swarm.clone(),
            router: args.router.clone(),
            classifier: Classifier::new(&args.swarm, args.knowledge.as_deref()),
            hold_down: args.hold_down,
            workers: HashMap::new(),
            worker_args: HashMap::new(),
            restarts: HashMap::new(),
            sessions: HashMap::new(),
            session_clock: 0,
            pending: HashMap::new(),
            next_step: 0,
            bindings: HashMap::new(),
            up_since: HashMap::new(),
            switches: Vec::new(),
            switch_count: 0,
            unnecessary_count: 0,
            handed_over: 0,
            persistence: args.persistence.clone(),
            admitting: HashMap::new(),
        };
        let now = Instant::now();
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
                supervisor: myself.clone(),
            };
            let worker = Self::spawn_worker(&myself, worker_args.clone()).await?;
            state.workers.insert(agent.id.clone(), worker);
            state.worker_args.insert(agent.id.clone(), worker_args);
            let chain: Vec<ProviderId> = args
                .router
                .chain(&agent.route)
                .unwrap_or_default()
                .iter()
                .map(|h| h.id().clone())
                .collect();
            for provider in &chain {
                state.up_since.entry(provider.clone()).or_insert(now);
            }
            if !chain.is_empty() {
                let binding = Binding {
                    chain,
                    current: 0,
                    last_switch: None,
                };
                state.bindings.insert(agent.id.clone(), binding);
            }
        }
        // Providers already down when the swarm starts: move off them now.
        let down: Vec<ProviderId> = state
            .up_since
            .keys()
            .filter(|id| health_of(&state.router, id) == HealthState::Down)
            .cloned()
            .collect();
        for provider in down {
            state.up_since.remove(&provider);
            fail_over_from(&mut state, &provider, "down when the swarm started");
        }
        // Fail-back is checked a few times per hold down.
        let tick = (args.hold_down / 4).max(Duration::from_millis(10));
        myself.send_interval(tick, || SupervisorMsg::Rebalance);
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
            } => accept(&myself, state, Incoming::new(text, session), None, reply),
            SupervisorMsg::AskStream {
                text,
                session,
                sink,
                reply,
            } => accept(
                &myself,
                state,
                Incoming::new(text, session),
                Some(sink),
                reply,
            ),
            SupervisorMsg::Resume { record, reply } => {
                let incoming = Incoming {
                    trace_id: record.trace_id,
                    text: record.question,
                    session: record.session,
                    resumed: true,
                };
                accept(&myself, state, incoming, None, reply);
            }
            SupervisorMsg::Admitted { trace_id, result } => {
                let Some((worker, pending)) = state.admitting.remove(&trace_id) else {
                    return Ok(());
                };
                match result {
                    Ok(()) => dispatch(state, worker, pending),
                    Err(why) => finish(
                        state,
                        pending,
                        Err(AskError::Store(format!(
                            "request {trace_id} was not accepted: the journal could not make it durable: {why}"
                        ))),
                    ),
                }
            }
            SupervisorMsg::Done {
                trace_id,
                step,
                result,
            } => {
                let Some(mut pending) = state.pending.remove(&(trace_id, step)) else {
                    return Ok(());
                };
                let agent = pending.chain.last().cloned().expect("a step has a worker");
                let outcome = match *result {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        finish(state, pending, Err(error));
                        return Ok(());
                    }
                };
                let spec = state.swarm.agent(&agent.0);
                // A refusal gave the customer nothing to check: only an
                // answer through a fallback path waits for a person.
                pending.needs_review |= spec.is_some_and(|a| a.stakes == Stakes::High)
                    && outcome.fallback
                    && !outcome.refusal;
                let next = spec
                    .and_then(|a| next_step(a, &outcome.response.text))
                    .filter(|(next, _)| !pending.chain.contains(next));
                match next {
                    Some((next, brief)) => {
                        let entries =
                            attempt_entries(&state.router, Some(&agent), &outcome.attempts);
                        pending.attempts.extend(entries);
                        // The next worker gets the question and this step's
                        // result as its brief, with the same history.
                        pending.job.text = crate::context::handoff_message(
                            &pending.question,
                            &agent.to_string(),
                            &brief,
                        );
                        pending.job.started = Arc::new(AtomicBool::new(false));
                        pending.handed_over = false;
                        dispatch(state, next, pending);
                    }
                    None => finish(state, pending, Ok(outcome)),
                }
            }
            SupervisorMsg::Health(change) => on_health_change(state, change),
            SupervisorMsg::Rebalance => fail_back(state),
            SupervisorMsg::Worker { agent, reply } => {
                let _ = reply.send(state.workers.get(&agent).cloned());
            }
            SupervisorMsg::Forget { session } => {
                state.sessions.remove(&session);
                if let Some(persistence) = &state.persistence
                    && let Err(error) = persistence.sessions.remove(&state.swarm.name, &session)
                {
                    tracing::error!(%error, %session, "cannot drop a session from the store");
                }
            }
            SupervisorMsg::Crash => panic!("swarm supervisor asked to crash"),
            SupervisorMsg::Bindings(reply) => {
                let mut bindings: Vec<(AgentId, ProviderId)> = state
                    .bindings
                    .iter()
                    .map(|(agent, b)| (agent.clone(), b.chain[b.current].clone()))
                    .collect();
                bindings.sort();
                let _ = reply.send(BindingReport {
                    bindings,
                    switches: state.switches.clone(),
                    switch_count: state.switch_count,
                    unnecessary_count: state.unnecessary_count,
                    handed_over: state.handed_over,
                });
            }
        }
        let _ = myself;
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
        state.workers.remove(&agent);
        // The requests the dead worker held and had not handed to routing.
        let orphans: Vec<(TraceId, u64)> = state
            .pending
            .iter()
            .filter(|(_, p)| {
                p.chain.last() == Some(&agent) && !p.job.started.load(Ordering::Acquire)
            })
            .map(|(key, _)| *key)
            .collect();
        let now = Instant::now();
        let recent = state.restarts.entry(agent.clone()).or_default();
        recent.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        let restarted = if recent.len() >= MAX_RESTARTS {
            tracing::error!(worker = %agent, %error, "worker failed too often; left down");
            false
        } else {
            recent.push(now);
            tracing::warn!(worker = %agent, %error, "worker failed; restarting");
            match state.worker_args.get(&agent).cloned() {
                Some(args) => {
                    let worker = Self::spawn_worker(&myself, args).await?;
                    state.workers.insert(agent.clone(), worker);
                    true
                }
                None => false,
            }
        };
        for key in orphans {
            let Some(mut pending) = state.pending.remove(&key) else {
                continue;
            };
            let why = if !restarted {
                Some(format!(
                    "worker `{agent}` failed and is left down after {MAX_RESTARTS} restarts in {RESTART_WINDOW:?}; request {} was not sent upstream",
                    key.0
                ))
            } else if pending.handed_over {
                Some(format!(
                    "worker `{agent}` failed twice while holding request {}; it is not handed on again",
                    key.0
                ))
            } else {
                None
            };
            match why {
                Some(why) => finish(state, pending, Err(AskError::WorkerDown(why))),
                None => {
                    tracing::warn!(trace = %key.0, worker = %agent, "request handed to the restarted worker");
                    pending.handed_over = true;
                    state.handed_over += 1;
                    pending.chain.pop();
                    dispatch(state, agent.clone(), pending);
                }
            }
        }
        Ok(())
    }
}

/// Where a worker's answer goes next, with the brief it carries: its first
/// delegate for a pipeline step; for the others, the delegate its answer
/// names on a `handoff: NAME` line (the line is not part of the brief).
fn next_step(agent: &AgentSpec, answer: &str) -> Option<(AgentId, String)> {
    match agent.handoff {
        Handoff::Always => agent
            .delegates
            .first()
            .map(|next| (next.clone(), answer.to_owned())),
        Handoff::WhenAsked => {
            let mut named = None;
            let mut brief = String::new();
            for line in answer.lines() {
                let asked = line
                    .trim()
                    .split_once(':')
                    .filter(|(key, _)| key.trim().eq_ignore_ascii_case("handoff"))
                    .and_then(|(_, name)| {
                        agent
                            .delegates
                            .iter()
                            .find(|d| d.0.eq_ignore_ascii_case(name.trim()))
                    });
                match asked {
                    Some(next) if named.is_none() => named = Some(next.clone()),
                    _ => {
                        brief.push_str(line);
                        brief.push('\n');
                    }
                }
            }
            named.map(|next| (next, brief))
        }
    }
}

fn health_of(router: &Router, provider: &ProviderId) -> HealthState {
    router
        .pool()
        .index_of(provider)
        .map_or(HealthState::Down, |i| router.pool().get(i).health())
}

/// A request as it arrives.
struct Incoming {
    trace_id: TraceId,
    text: String,
    session: Option<String>,
    /// Asked again after a crash interrupted it.
    resumed: bool,
}

impl Incoming {
    fn new(text: String, session: Option<String>) -> Incoming {
        Incoming {
            trace_id: TraceId::new(),
            text,
            session,
            resumed: false,
        }
    }
}

/// The history of `session`: from memory, else from the store (a
/// conversation of an earlier process, or one evicted from memory).
fn history_of(state: &mut SupervisorState, session: &str) -> Arc<Vec<Message>> {
    if let Some(known) = state.sessions.get(session) {
        return known.history.clone();
    }
    let Some(persistence) = &state.persistence else {
        return Arc::default();
    };
    match persistence.sessions.load(&state.swarm.name, session) {
        Ok(Some(messages)) => {
            let history = Arc::new(messages);
            if state.sessions.len() >= MAX_SESSIONS {
                evict_oldest_session(state);
            }
            state.session_clock += 1;
            state.sessions.insert(
                session.to_owned(),
                Session {
                    history: history.clone(),
                    used: state.session_clock,
                },
            );
            history
        }
        Ok(None) => Arc::default(),
        Err(error) => {
            tracing::error!(%error, %session, "cannot read a session from the store; answering without its history");
            Arc::default()
        }
    }
}

/// Classifies a new request, journals it as accepted and, once that is
/// durable, sends it to its worker.
fn accept(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    incoming: Incoming,
    sink: Option<tokio::sync::mpsc::Sender<StreamEvent>>,
    reply: RpcReplyPort<Result<Answer, AskError>>,
) {
    let Incoming {
        trace_id,
        text,
        session,
        resumed,
    } = incoming;
    let classification = state.classifier.classify(&text);
    tracing::info!(trace = %trace_id, worker = %classification.worker, score = classification.score, confidence = classification.confidence, decided_by = ?classification.decided_by, "classified");
    let history = match &session {
        Some(session) => history_of(state, session),
        None => Arc::default(),
    };
    let worker = classification.worker.clone();
    let job = Job {
        trace_id,
        step: 0,
        question: Arc::from(text.as_str()),
        text: text.clone(),
        history,
        requested_rules: classification.requested_rules.clone(),
        scope: String::new(),
        bound_to: None,
        started: Arc::new(AtomicBool::new(false)),
        sink: None,
    };
    let pending = Pending {
        question: text,
        session,
        classification,
        chain: Vec::new(),
        job,
        handed_over: false,
        needs_review: false,
        sink,
        streamed: false,
        attempts: Vec::new(),
        reply: Some(reply),
    };
    let Some(persistence) = state.persistence.clone() else {
        dispatch(state, worker, pending);
        return;
    };
    let mut record = JournalRecord::accepted(trace_id, pending.question.clone());
    record.swarm = Some(state.swarm.name.clone());
    record.session = pending.session.clone();
    record.resumed = resumed;
    record.classification = Some(classification_entry(&pending.classification));
    if let Some(route) = state.swarm.agent(&worker.0).map(|a| a.route.clone()) {
        record.on_interrupt = state
            .router
            .route_spec(&route)
            .map(|r| r.on_interrupt)
            .unwrap_or_default();
        record.route = Some(route.0);
    }
    if let Err(error) = persistence.journal.accept(&record) {
        finish(
            state,
            pending,
            Err(AskError::Store(format!(
                "request {trace_id} was not accepted: cannot write the journal: {error}"
            ))),
        );
        return;
    }
    state.admitting.insert(trace_id, (worker, pending));
    let myself = myself.clone();
    tokio::spawn(async move {
        let result = persistence.store.durable().await.map_err(|e| e.to_string());
        let _ = myself.send_message(SupervisorMsg::Admitted { trace_id, result });
    });
}

fn classification_entry(classification: &Classification) -> ClassificationEntry {
    ClassificationEntry {
        worker: classification.worker.0.clone(),
        score: classification.score,
        confidence: classification.confidence,
        decided_by: format!("{:?}", classification.decided_by).to_lowercase(),
    }
}

/// The journal's view of a step's attempts (`worker` is `None` for a
/// request routed without a swarm).
pub fn attempt_entries(
    router: &Router,
    worker: Option<&AgentId>,
    attempts: &[AttemptRecord],
) -> Vec<AttemptEntry> {
    attempts
        .iter()
        .map(|attempt| AttemptEntry {
            worker: worker.map(|w| w.0.clone()),
            provider: attempt.provider.0.clone(),
            reason: serde_json::to_value(attempt.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            started_ms: attempt.started.as_secs_f64() * 1000.0,
            latency_ms: attempt.latency.as_secs_f64() * 1000.0,
            outcome: attempt
                .error
                .as_ref()
                .map_or_else(|| "ok".to_owned(), |(label, _)| label.clone()),
            error: attempt.error.as_ref().map(|(_, message)| message.clone()),
            status: attempt.status,
            input_tokens: attempt.usage.map_or(0, |u| u.input_tokens),
            output_tokens: attempt.usage.map_or(0, |u| u.output_tokens),
            cost: router.cost_of(&attempt.provider, attempt.usage.as_ref()),
            cancelled: attempt.cancelled,
        })
        .collect()
}

/// Sends a request's next step to `worker`, keeping a copy until routing
/// owns it.
fn dispatch(state: &mut SupervisorState, worker: AgentId, mut pending: Pending) {
    state.next_step += 1;
    let step = state.next_step;
    pending.job.step = step;
    pending.job.bound_to = state
        .bindings
        .get(&worker)
        .map(|b| b.chain[b.current].clone());
    // Only a step that cannot hand on streams to the caller: a pipeline
    // step's text is a brief, and a specialist that may hand off answers
    // whole (sent in one piece if it turns out final), so the caller sees
    // one answer and one end.
    let may_hand_on = state.swarm.agent(&worker.0).is_some_and(|a| {
        a.delegates
            .iter()
            .any(|next| *next != worker && !pending.chain.contains(next))
    });
    pending.job.sink = if may_hand_on {
        None
    } else {
        pending.sink.clone()
    };
    pending.streamed = pending.job.sink.is_some();
    pending.chain.push(worker.clone());
    let key = (pending.job.trace_id, step);
    let Some(actor) = state.workers.get(&worker) else {
        let why = format!(
            "worker `{worker}` is down; request {} was not sent upstream",
            key.0
        );
        finish(state, pending, Err(AskError::WorkerDown(why)));
        return;
    };
    let job = Box::new(pending.job.clone());
    if actor.send_message(WorkerMsg::Ask(job)).is_err() {
        // The worker is stopping; its supervision event will hand the
        // request on.
        tracing::debug!(trace = %key.0, worker = %worker, "worker mailbox closed");
    }
    state.pending.insert(key, pending);
}

/// A full table is rare and the scan is short next to a model call.
fn evict_oldest_session(state: &mut SupervisorState) {
    let oldest = state
        .sessions
        .iter()
        .min_by_key(|(_, s)| s.used)
        .map(|(id, _)| id.clone());
    if let Some(oldest) = oldest {
        state.sessions.remove(&oldest);
    }
}

/// Remembers the exchange in its session, journals the request's end and
/// answers the caller once that is durable.
fn finish(state: &mut SupervisorState, mut pending: Pending, result: Result<Outcome, AskError>) {
    let result = result.map(|outcome| {
        if let Some(session) = &pending.session {
            if state.sessions.len() >= MAX_SESSIONS && !state.sessions.contains_key(session) {
                evict_oldest_session(state);
            }
            state.session_clock += 1;
            let entry = state.sessions.entry(session.clone()).or_default();
            entry.used = state.session_clock;
            let history = Arc::make_mut(&mut entry.history);
            history.push(Message::user(pending.question.clone()));
            history.push(Message::assistant(outcome.response.text.clone()));
            if history.len() > HISTORY_LIMIT {
                let excess = history.len() - HISTORY_LIMIT;
                history.drain(..excess);
            }
            if let Some(persistence) = &state.persistence
                && let Err(error) = persistence
                    .sessions
                    .save(&state.swarm.name, session, history)
            {
                tracing::error!(%error, %session, "cannot store a session");
            }
        }
        Answer {
            classification: pending.classification.clone(),
            chain: pending.chain.clone(),
            needs_review: pending.needs_review,
            outcome,
            session: pending.session.clone(),
        }
    });
    let journaled = state.persistence.clone().map(|persistence| {
        (
            journal_end(state, &mut pending, &result, &persistence),
            persistence,
        )
    });
    if let (Ok(answer), Some(sink), false) = (&result, pending.sink.take(), pending.streamed) {
        let response = answer.outcome.response.clone();
        tokio::spawn(async move { send_whole(&sink, &response.text, &response).await });
    }
    let Some(reply) = pending.reply.take() else {
        return;
    };
    match journaled {
        // The caller hears of the answer only once its record is on disk.
        Some((Ok(()), persistence)) => {
            tokio::spawn(async move {
                let result = match persistence.store.durable().await {
                    Ok(()) => result,
                    Err(error) => Err(AskError::Store(format!(
                        "the answer was not acknowledged: the journal could not make it durable: {error}"
                    ))),
                };
                let _ = reply.send(result);
            });
        }
        Some((Err(error), _)) => {
            let _ = reply.send(Err(AskError::Store(format!(
                "the answer was not acknowledged: cannot write the journal: {error}"
            ))));
        }
        // The caller may have given up waiting; nothing to do then.
        None => {
            let _ = reply.send(result);
        }
    }
}

/// Writes the request's end to the journal.
fn journal_end(
    state: &SupervisorState,
    pending: &mut Pending,
    result: &Result<Answer, AskError>,
    persistence: &Persistence,
) -> Result<(), StoreError> {
    let worker = pending
        .chain
        .last()
        .cloned()
        .unwrap_or_else(|| pending.classification.worker.clone());
    let mut attempts = std::mem::take(&mut pending.attempts);
    let chain: Vec<String> = pending.chain.iter().map(|a| a.0.clone()).collect();
    let ending = match result {
        Ok(answer) => {
            attempts.extend(attempt_entries(
                &state.router,
                Some(&worker),
                &answer.outcome.attempts,
            ));
            Ending::Completed {
                chain,
                attempts,
                served_by: crate::review::served_by_label(&answer.outcome),
                fallback: answer.outcome.fallback,
                degraded: answer.outcome.degraded,
                refusal: answer.outcome.refusal,
                needs_review: answer.needs_review,
                answer: answer.outcome.response.text.clone(),
            }
        }
        Err(error) => {
            if let AskError::Route(route) = error {
                attempts.extend(attempt_entries(
                    &state.router,
                    Some(&worker),
                    route.attempts(),
                ));
            }
            Ending::Failed {
                chain,
                attempts,
                error: error.to_string(),
            }
        }
    };
    let record = persistence
        .journal
        .finish(pending.job.trace_id, None, ending)?;
    // The journal is the record of truth; a telemetry event that could not
    // be written costs a report figure, not the answer.
    if let Err(error) = persistence.telemetry.record_finished(&record) {
        tracing::error!(%error, trace = %record.trace_id, "cannot write the request's telemetry");
    }
    Ok(())
}

fn on_health_change(state: &mut SupervisorState, change: HealthChange) {
    let now = Instant::now();
    if change.to == HealthState::Down {
        state.up_since.remove(&change.provider);
        let detail = format!("{} down: {}", change.provider, change.reason);
        fail_over_from(state, &change.provider, &detail);
        return;
    }
    if change.from == HealthState::Down {
        state.up_since.insert(change.provider.clone(), now);
        // The provider came back within the hold down of a failover away
        // from it: that switch was not needed.
        for switch in state.switches.iter_mut().rev() {
            let Some(when) = switch.when else { continue };
            if now.duration_since(when) > state.hold_down {
                break;
            }
            if switch.reason == SwitchReason::Failover
                && switch.from == change.provider
                && !switch.unnecessary
            {
                switch.unnecessary = true;
                state.unnecessary_count += 1;
                if let Some(persistence) = &state.persistence {
                    let event = switch_event(&state.swarm.name, switch);
                    if let Err(error) = persistence.telemetry.mark_unnecessary(&event, now_ns()) {
                        tracing::error!(%error, "cannot record an unnecessary switch");
                    }
                }
            }
        }
    }
}

/// Moves every worker bound to `provider` to the next provider of its
/// chain that is up.
fn fail_over_from(state: &mut SupervisorState, provider: &ProviderId, detail: &str) {
    let now = Instant::now();
    let mut moves = Vec::new();
    for (agent, binding) in &state.bindings {
        if &binding.chain[binding.current] != provider {
            continue;
        }
        if binding
            .last_switch
            .is_some_and(|t| now.duration_since(t) < state.hold_down)
        {
            // Hysteresis: the routing layer still skips the down provider
            // per request; the binding follows after the hold down.
            continue;
        }
        if let Some(next) = binding.next_up(&state.router) {
            moves.push((agent.clone(), next));
        }
    }
    for (agent, next) in moves {
        switch(
            state,
            &agent,
            next,
            SwitchReason::Failover,
            detail.to_owned(),
        );
    }
}

/// Moves workers back to an earlier provider of their chain that has been
/// up for the hold down; also retries failovers the hold down deferred.
fn fail_back(state: &mut SupervisorState) {
    let now = Instant::now();
    // Health changes come through a bounded port that drops what a slow
    // subscriber missed: the handles' published state is the truth.
    let providers: Vec<ProviderId> = state
        .bindings
        .values()
        .flat_map(|b| b.chain.iter().cloned())
        .collect();
    for provider in providers {
        if health_of(&state.router, &provider).is_up() {
            state.up_since.entry(provider).or_insert(now);
        } else {
            state.up_since.remove(&provider);
        }
    }
    let mut moves = Vec::new();
    for (agent, binding) in &state.bindings {
        if binding
            .last_switch
            .is_some_and(|t| now.duration_since(t) < state.hold_down)
        {
            continue;
        }
        let stable = |id: &ProviderId| {
            state
                .up_since
                .get(id)
                .is_some_and(|since| now.duration_since(*since) >= state.hold_down)
                && health_of(&state.router, id).is_up()
        };
        let earlier = (0..binding.current).find(|&i| stable(&binding.chain[i]));
        if let Some(earlier) = earlier {
            moves.push((agent.clone(), earlier, SwitchReason::FailBack));
            continue;
        }
        let current = &binding.chain[binding.current];
        if !health_of(&state.router, current).is_up() {
            if let Some(next) = binding.next_up(&state.router) {
                moves.push((agent.clone(), next, SwitchReason::Failover));
            }
        }
    }
    for (agent, to, reason) in moves {
        let detail = match reason {
            SwitchReason::FailBack => format!("up for the hold down of {:?}", state.hold_down),
            SwitchReason::Failover => "still down after the hold down".to_owned(),
        };
        switch(state, &agent, to, reason, detail);
    }
}

fn switch(
    state: &mut SupervisorState,
    agent: &AgentId,
    to: usize,
    reason: SwitchReason,
    detail: String,
) {
    let Some(binding) = state.bindings.get_mut(agent) else {
        return;
    };
    let from = binding.chain[binding.current].clone();
    binding.current = to;
    let now = Instant::now();
    binding.last_switch = Some(now);
    let to = binding.chain[to].clone();
    tracing::warn!(worker = %agent, %from, %to, ?reason, %detail, "worker rebound");
    state.switch_count += 1;
    if state.switches.len() == SWITCH_LOG {
        state.switches.remove(0);
    }
    let switch = Switch {
        worker: agent.clone(),
        from,
        to,
        reason,
        detail,
        at: SystemTime::now(),
        unnecessary: false,
        when: Some(now),
    };
    if let Some(persistence) = &state.persistence
        && let Err(error) = persistence
            .telemetry
            .record_switch(&switch_event(&state.swarm.name, &switch))
    {
        tracing::error!(%error, "cannot record a switch");
    }
    state.switches.push(switch);
}

/// A switch as telemetry keeps it.
fn switch_event(swarm: &str, switch: &Switch) -> SwitchEvent {
    SwitchEvent {
        swarm: swarm.to_owned(),
        worker: switch.worker.0.clone(),
        from: switch.from.0.clone(),
        to: switch.to.0.clone(),
        reason: match switch.reason {
            SwitchReason::Failover => "failover",
            SwitchReason::FailBack => "fail_back",
        }
        .to_owned(),
        unnecessary: switch.unnecessary,
        at_ns: switch
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG};
    use crate::template::load_swarm;

    fn agent(swarm: &str, name: &str) -> AgentSpec {
        let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).unwrap();
        let swarm = load_swarm(&Path::new("agents").join(swarm), &config)
            .unwrap()
            .swarm;
        swarm.agent(name).unwrap().clone()
    }

    #[test]
    fn a_pipeline_step_always_hands_on_its_whole_answer() {
        let researcher = agent("knowledge-qa", "researcher");
        let (next, brief) = next_step(&researcher, "[a.md#x] passage").unwrap();
        assert_eq!(next.0, "answerer");
        assert_eq!(brief, "[a.md#x] passage");
    }

    #[test]
    fn a_specialist_hands_off_only_when_its_answer_names_a_delegate() {
        let refunds = agent("support-bot", "refunds");
        assert_eq!(next_step(&refunds, "Refunds take 5-10 days."), None);
        assert_eq!(
            next_step(&refunds, "handoff: technical"),
            None,
            "not a delegate"
        );
        let (next, brief) =
            next_step(&refunds, "That is an invoice question.\nHandoff: Billing\n").unwrap();
        assert_eq!(next.0, "billing");
        assert_eq!(brief, "That is an invoice question.\n");
    }
}
