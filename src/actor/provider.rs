//! The Provider actor: one per remote provider of the process, shared by
//! every swarm and bare route.
//!
//! It owns the provider's handle (client, breaker, budget, concurrency
//! limit) and supervises the provider's Health actor, restarting it when it
//! fails. Attempts do not pass through its mailbox: routing calls the
//! handle directly, because a mailbox hop per attempt would put a queue in
//! front of every upstream call for nothing — the handle's state is already
//! shared and lock-light. What the actor adds is lifetime and supervision:
//! the Health actor it keeps alive hears every outcome through the
//! forwarder registered on the handle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use super::health::{Health, HealthArgs, HealthMsg, HealthPort, HealthReport};
use crate::config::HealthSettings;
use crate::routing::pool::ProviderHandle;

/// Restarts of a Health actor allowed per window; past that the provider
/// is left without active probes (passive outcomes still open its breaker).
const MAX_HEALTH_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

pub struct Provider;

pub struct ProviderArgs {
    pub handle: Arc<ProviderHandle>,
    pub settings: HealthSettings,
    pub port: HealthPort,
}

pub struct ProviderState {
    handle: Arc<ProviderHandle>,
    settings: HealthSettings,
    port: HealthPort,
    /// Where the handle's outcome forwarder sends: the current Health actor.
    health: Arc<Mutex<Option<ActorRef<HealthMsg>>>>,
    restarts: Vec<Instant>,
}

pub enum ProviderMsg {
    Status(RpcReplyPort<Option<HealthReport>>),
    /// The Health actor, for tests.
    Health(RpcReplyPort<Option<ActorRef<HealthMsg>>>),
}

impl Provider {
    async fn spawn_health(
        myself: &ActorRef<ProviderMsg>,
        state: &ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        let (health, _) = Actor::spawn_linked(
            None,
            Health,
            HealthArgs {
                handle: state.handle.clone(),
                settings: state.settings.clone(),
                port: state.port.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        *state.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(health);
        Ok(())
    }
}

impl Actor for Provider {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ProviderMsg>,
        args: ProviderArgs,
    ) -> Result<ProviderState, ActorProcessingErr> {
        let state = ProviderState {
            handle: args.handle,
            settings: args.settings,
            port: args.port,
            health: Arc::new(Mutex::new(None)),
            restarts: Vec::new(),
        };
        let slot = state.health.clone();
        state.handle.observe(move |observed| {
            if let Some(health) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = health.send_message(HealthMsg::Observed(observed));
            }
        });
        Self::spawn_health(&myself, &state).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ProviderMsg>,
        message: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        let health = state
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match message {
            ProviderMsg::Status(reply) => {
                let report = match health {
                    Some(health) => match health
                        .call(HealthMsg::Status, Some(Duration::from_secs(2)))
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(report)) => Some(report),
                        _ => None,
                    },
                    None => None,
                };
                let _ = reply.send(report);
            }
            ProviderMsg::Health(reply) => {
                let _ = reply.send(health);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ProviderMsg>,
        event: SupervisionEvent,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(_, error) = event else {
            return Ok(());
        };
        *state.health.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let now = Instant::now();
        state
            .restarts
            .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if state.restarts.len() >= MAX_HEALTH_RESTARTS {
            tracing::error!(provider = %state.handle.id(), %error, "health actor failed too often; probes stopped");
            return Ok(());
        }
        state.restarts.push(now);
        tracing::warn!(provider = %state.handle.id(), %error, "health actor failed; restarting");
        Self::spawn_health(&myself, state).await
    }
}
