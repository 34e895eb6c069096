//! The root supervisor: one per process.
//!
//! It owns the provider pool's actors (a Provider per remote provider, each
//! with its Health actor) and one SwarmSupervisor per loaded swarm, and
//! restarts any of them that fails (bounded per window). Provider state —
//! breakers, budgets, limits — lives in the router's pool, so it is per
//! provider per process and shared by every swarm and bare route.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, OutputPort, RpcReplyPort, SupervisionEvent,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::health::HealthChange;
use super::health::{HealthPort, HealthReport};
use super::provider::{Provider, ProviderArgs, ProviderMsg};
use super::supervisor::Persistence;
use super::supervisor::{SupervisorArgs, SupervisorMsg, SwarmSupervisor};
use crate::config::{HealthSettings, ProviderId};
use crate::knowledge::KnowledgeIndex;
use crate::routing::breaker::BreakerState;
use crate::routing::pool::ProviderHandle;
use crate::routing::router::Router;
use crate::store::Store;
use crate::store::health::{BreakerRecord, HealthLog, HealthRecord};
use crate::store::journal::now_ms;
use crate::swarm::Swarm;
use std::time::{SystemTime, UNIX_EPOCH};

const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

pub struct Baton;

pub struct BatonArgs {
    pub router: Arc<Router>,
    pub health: HealthSettings,
    /// Where breaker state, health history, the journal and sessions go;
    /// `None` keeps everything in memory.
    pub store: Option<Store>,
    /// Told of every health change after it is stored (alerts).
    pub health_listener: Option<HealthListener>,
}

/// A callback for health changes.
pub type HealthListener = Arc<dyn Fn(&HealthChange) + Send + Sync>;

/// What the root restarts, and with what.
enum Child {
    Provider(usize),
    Swarm(Arc<Swarm>, Option<Arc<KnowledgeIndex>>),
}

pub struct BatonState {
    router: Arc<Router>,
    health: HealthSettings,
    store: Option<Store>,
    health_log: Option<HealthLog>,
    health_listener: Option<HealthListener>,
    /// When this root started, and when it last saved each breaker: on the
    /// way out it does not overwrite a breaker another root saved since.
    started_ms: u64,
    saved: HashMap<ProviderId, u64>,
    port: HealthPort,
    providers: HashMap<ProviderId, ActorRef<ProviderMsg>>,
    swarms: HashMap<String, ActorRef<SupervisorMsg>>,
    children: HashMap<ActorId, Child>,
    restarts: HashMap<String, Vec<Instant>>,
    /// Swarms that failed past their restart limit.
    left_down: std::collections::HashSet<String>,
}

pub enum BatonMsg {
    /// Starts a supervisor for a loaded swarm (or returns the running one).
    StartSwarm {
        swarm: Arc<Swarm>,
        knowledge: Option<Arc<KnowledgeIndex>>,
        reply: RpcReplyPort<Result<ActorRef<SupervisorMsg>, String>>,
    },
    /// Every provider's health.
    Health(RpcReplyPort<Vec<HealthReport>>),
    /// A provider's actor, for tests.
    Provider {
        id: ProviderId,
        reply: RpcReplyPort<Option<ActorRef<ProviderMsg>>>,
    },
    /// A Health actor published a change (the root stores it).
    HealthChanged(HealthChange),
}

impl Baton {
    /// Starts the root with a Provider actor per provider of the router's
    /// pool.
    pub async fn start(
        router: Arc<Router>,
        health: HealthSettings,
    ) -> Result<(ActorRef<BatonMsg>, JoinHandle<()>), ractor::SpawnErr> {
        Self::start_with(BatonArgs {
            router,
            health,
            store: None,
            health_listener: None,
        })
        .await
    }

    /// Starts the root with a store and listeners.
    pub async fn start_with(
        args: BatonArgs,
    ) -> Result<(ActorRef<BatonMsg>, JoinHandle<()>), ractor::SpawnErr> {
        Actor::spawn(None, Baton, args).await
    }

    async fn spawn_provider(
        myself: &ActorRef<BatonMsg>,
        state: &mut BatonState,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        let handle = state.router.pool().get(index).clone();
        let id = handle.id().clone();
        let (actor, _) = Actor::spawn_linked(
            None,
            Provider,
            ProviderArgs {
                handle,
                settings: state.health.clone(),
                port: state.port.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        state
            .children
            .insert(actor.get_id(), Child::Provider(index));
        state.providers.insert(id, actor);
        Ok(())
    }

    async fn spawn_swarm(
        myself: &ActorRef<BatonMsg>,
        state: &mut BatonState,
        swarm: Arc<Swarm>,
        knowledge: Option<Arc<KnowledgeIndex>>,
    ) -> Result<ActorRef<SupervisorMsg>, ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            SwarmSupervisor,
            SupervisorArgs {
                swarm: swarm.clone(),
                router: state.router.clone(),
                knowledge: knowledge.clone(),
                hold_down: state.health.hold_down.0,
                persistence: state.store.as_ref().and_then(|store| {
                    Persistence::new(store)
                        .inspect_err(
                            |error| tracing::error!(%error, "cannot open the store's trees"),
                        )
                        .ok()
                }),
            },
            myself.get_cell(),
        )
        .await?;
        state
            .port
            .subscribe(actor.clone(), |change| Some(SupervisorMsg::Health(change)));
        state.swarms.insert(swarm.name.clone(), actor.clone());
        state
            .children
            .insert(actor.get_id(), Child::Swarm(swarm, knowledge));
        Ok(actor)
    }
}

impl Actor for Baton {
    type Msg = BatonMsg;
    type State = BatonState;
    type Arguments = BatonArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BatonMsg>,
        args: BatonArgs,
    ) -> Result<BatonState, ActorProcessingErr> {
        let health_log = match &args.store {
            Some(store) => Some(HealthLog::new(store)?),
            None => None,
        };
        if let Some(log) = &health_log {
            restore_breakers(&args.router, log);
        }
        let mut state = BatonState {
            router: args.router,
            health: args.health,
            store: args.store,
            health_log,
            health_listener: args.health_listener,
            started_ms: now_ms(),
            saved: HashMap::new(),
            port: Arc::new(OutputPort::default()),
            providers: HashMap::new(),
            swarms: HashMap::new(),
            children: HashMap::new(),
            restarts: HashMap::new(),
            left_down: std::collections::HashSet::new(),
        };
        state.port.subscribe(myself.clone(), |change| {
            Some(BatonMsg::HealthChanged(change))
        });
        for index in 0..state.router.pool().handles().len() {
            Self::spawn_provider(&myself, &mut state, index).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<BatonMsg>,
        message: BatonMsg,
        state: &mut BatonState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BatonMsg::StartSwarm {
                swarm,
                knowledge,
                reply,
            } => {
                let result = match state.swarms.get(&swarm.name) {
                    Some(running) => Ok(running.clone()),
                    None if state.left_down.contains(&swarm.name) => Err(format!(
                        "swarm `{}` failed {MAX_RESTARTS} times within {RESTART_WINDOW:?} and is left down",
                        swarm.name
                    )),
                    None => Self::spawn_swarm(&myself, state, swarm, knowledge)
                        .await
                        .map_err(|e| e.to_string()),
                };
                let _ = reply.send(result);
            }
            BatonMsg::Health(reply) => {
                let providers: Vec<ActorRef<ProviderMsg>> =
                    state.providers.values().cloned().collect();
                // Asked off the mailbox: a slow provider actor must not
                // hold the root.
                tokio::spawn(async move {
                    let mut reports = Vec::new();
                    for provider in providers {
                        if let Ok(ractor::rpc::CallResult::Success(Some(report))) = provider
                            .call(ProviderMsg::Status, Some(Duration::from_secs(3)))
                            .await
                        {
                            reports.push(report);
                        }
                    }
                    reports.sort_by(|a, b| a.provider.cmp(&b.provider));
                    let _ = reply.send(reports);
                });
            }
            BatonMsg::Provider { id, reply } => {
                let _ = reply.send(state.providers.get(&id).cloned());
            }
            BatonMsg::HealthChanged(change) => {
                if let Some(log) = &state.health_log {
                    store_health_change(&state.router, log, &change, &mut state.saved);
                }
                if let Some(listener) = &state.health_listener {
                    listener(&change);
                }
            }
        }
        Ok(())
    }

    /// Every breaker as it stands goes to the store on the way out, so the
    /// next process starts from what this one knew.
    async fn post_stop(
        &self,
        _myself: ActorRef<BatonMsg>,
        state: &mut BatonState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(log) = &state.health_log {
            for handle in state.router.pool().handles() {
                // A newer root of this process (a policy switch) may have
                // saved a fresher state since this one started: keep it.
                let newer = log
                    .breaker(&handle.id().0)
                    .ok()
                    .flatten()
                    .is_some_and(|stored| {
                        stored.at_ms > state.started_ms
                            && state.saved.get(handle.id()) != Some(&stored.at_ms)
                    });
                if !newer {
                    save_breaker(handle, log);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<BatonMsg>,
        event: SupervisionEvent,
        state: &mut BatonState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        let name = match &child {
            Child::Provider(index) => format!("provider {}", state.router.pool().get(*index).id()),
            Child::Swarm(swarm, _) => format!("swarm {}", swarm.name),
        };
        if !allow_restart(&mut state.restarts, &name) {
            tracing::error!(%name, %error, "failed too often; left down");
            if let Child::Swarm(swarm, _) = &child {
                // A later StartSwarm must not hand out the dead supervisor,
                // nor quietly start a new one past the restart limit.
                state.swarms.remove(&swarm.name);
                state.left_down.insert(swarm.name.clone());
            }
            return Ok(());
        }
        tracing::warn!(%name, %error, "failed; restarting");
        match child {
            Child::Provider(index) => Self::spawn_provider(&myself, state, index).await?,
            Child::Swarm(swarm, knowledge) => {
                state.swarms.remove(&swarm.name);
                Self::spawn_swarm(&myself, state, swarm, knowledge).await?;
            }
        }
        Ok(())
    }
}

/// Writes a health change and the provider's breaker as it now stands.
fn store_health_change(
    router: &Router,
    log: &HealthLog,
    change: &HealthChange,
    saved: &mut HashMap<ProviderId, u64>,
) {
    let at_ns = change
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let record = HealthRecord {
        provider: change.provider.0.clone(),
        from: change.from.to_string(),
        to: change.to.to_string(),
        reason: change.reason.clone(),
        at_ns,
    };
    if let Err(error) = log.record_change(&record) {
        tracing::error!(%error, provider = %change.provider, "cannot store a health change");
    }
    if let Some(index) = router.pool().index_of(&change.provider) {
        let at_ms = save_breaker(router.pool().get(index), log);
        saved.insert(change.provider.clone(), at_ms);
    }
}

/// Writes a provider's breaker as it stands now.
fn save_breaker(handle: &ProviderHandle, log: &HealthLog) -> u64 {
    let breaker = handle.breaker(Instant::now());
    let open_until_ms = breaker.retry_at.map(|wait| {
        (SystemTime::now() + wait)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    });
    let record = BreakerRecord {
        state: breaker.state.label().to_owned(),
        ejections: breaker.ejections,
        open_until_ms,
        at_ms: now_ms(),
    };
    if let Err(error) = log.save_breaker(&handle.id().0, &record) {
        tracing::error!(%error, provider = %handle.id(), "cannot store a breaker");
    }
    record.at_ms
}

/// Re-opens the breakers a previous process left open or half-open.
fn restore_breakers(router: &Router, log: &HealthLog) {
    let now = Instant::now();
    let wall_ms = now_ms();
    for handle in router.pool().handles() {
        let record = match log.breaker(&handle.id().0) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(%error, provider = %handle.id(), "cannot read the stored breaker");
                continue;
            }
        };
        if record.state == BreakerState::Closed.label() {
            continue;
        }
        let remaining = Duration::from_millis(
            record
                .open_until_ms
                .map_or(0, |until| until.saturating_sub(wall_ms)),
        );
        tracing::warn!(provider = %handle.id(), state = %record.state, ?remaining, "breaker restored from the store: the provider was not up when the last process stopped");
        handle.restore_open(record.ejections, remaining, now);
    }
}

fn allow_restart(restarts: &mut HashMap<String, Vec<Instant>>, name: &str) -> bool {
    let now = Instant::now();
    let recent = restarts.entry(name.to_owned()).or_default();
    recent.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
    if recent.len() >= MAX_RESTARTS {
        return false;
    }
    recent.push(now);
    true
}

/// Asks the root to start (or find) a swarm's supervisor.
pub async fn start_swarm(
    baton: &ActorRef<BatonMsg>,
    swarm: Arc<Swarm>,
    knowledge: Option<Arc<KnowledgeIndex>>,
) -> Result<ActorRef<SupervisorMsg>, String> {
    match baton
        .call(
            |reply| BatonMsg::StartSwarm {
                swarm,
                knowledge,
                reply,
            },
            Some(Duration::from_secs(30)),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(other) => Err(format!("the root supervisor did not answer: {other:?}")),
        Err(error) => Err(error.to_string()),
    }
}
