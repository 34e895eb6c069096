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
use crate::routing::router::{Outcome, Router, send_whole};
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
            } => accept(state, text, session, None, reply),
            SupervisorMsg::AskStream {
                text,
                session,
                sink,
                reply,
            } => accept(state, text, session, Some(sink), reply),
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
                        // The next worker gets the question and this step's
                        // result as its brief, with the same history.
                        pending.job.text = format!(
                            "{}\n\n## Handoff from {agent}\n{}",
                            pending.question,
                            brief.trim_end()
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

/// Classifies a new request and sends it to its worker.
fn accept(
    state: &mut SupervisorState,
    text: String,
    session: Option<String>,
    sink: Option<tokio::sync::mpsc::Sender<StreamEvent>>,
    reply: RpcReplyPort<Result<Answer, AskError>>,
) {
    let classification = state.classifier.classify(&text);
    let trace_id = TraceId::new();
    tracing::info!(trace = %trace_id, worker = %classification.worker, score = classification.score, confidence = classification.confidence, decided_by = ?classification.decided_by, "classified");
    let history = session
        .as_ref()
        .and_then(|s| state.sessions.get(s))
        .map(|s| s.history.clone())
        .unwrap_or_default();
    let worker = classification.worker.clone();
    let job = Job {
        trace_id,
        step: 0,
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
        reply: Some(reply),
    };
    dispatch(state, worker, pending);
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

/// Answers the caller and remembers the exchange in its session.
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
        }
        Answer {
            classification: pending.classification.clone(),
            chain: pending.chain.clone(),
            needs_review: pending.needs_review,
            outcome,
            session: pending.session.clone(),
        }
    });
    if let (Ok(answer), Some(sink), false) = (&result, pending.sink.take(), pending.streamed) {
        let response = answer.outcome.response.clone();
        tokio::spawn(async move { send_whole(&sink, &response.text, &response).await });
    }
    if let Some(reply) = pending.reply.take() {
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }
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
    state.switches.push(Switch {
        worker: agent.clone(),
        from,
        to,
        reason,
        detail,
        at: SystemTime::now(),
        unnecessary: false,
        when: Some(now),
    });
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
