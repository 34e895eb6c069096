//! The alert engine as a task of a long-running process.
//!
//! One task owns the [`AlertEngine`]; everything else talks to it through
//! an [`AlertHandle`], whose messages are handled in the order they were
//! sent (a health change reported before an `evaluate` is seen by it). The
//! task evaluates the windowed rules every `evaluate_every`.
//! Notifications leave only after the episode writes behind them are
//! durable, then go to the log and the webhook queue.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::deliver::Delivery;
use super::{AlertEngine, Notification};
use crate::actor::health::HealthChange;
use crate::config::Config;
use crate::routing::pool::HealthState;
use crate::store::{Store, StoreError};

enum Command {
    Health {
        provider: String,
        down: bool,
        at: SystemTime,
        reason: Option<String>,
    },
    Evaluate(oneshot::Sender<()>),
    Flush(oneshot::Sender<()>),
    Reload(Arc<Config>),
    Shutdown,
}

/// How a process talks to its alert task. Cheap to clone; the task stops
/// when every handle is dropped or one calls [`AlertHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct AlertHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Health { .. } => "Health",
            Command::Evaluate(_) => "Evaluate",
            Command::Flush(_) => "Flush",
            Command::Reload(_) => "Reload",
            Command::Shutdown => "Shutdown",
        })
    }
}

impl AlertHandle {
    /// A provider went down (`down`) or came back, at `at`.
    pub fn on_health(&self, provider: &str, down: bool, at: SystemTime) {
        self.send(Command::Health {
            provider: provider.to_owned(),
            down,
            at,
            reason: None,
        });
    }

    /// A change published on the actor system's health port: Down is
    /// down, Degraded and Healthy are not.
    pub fn on_change(&self, change: &HealthChange) {
        self.send(Command::Health {
            provider: change.provider.0.clone(),
            down: change.to == HealthState::Down,
            at: change.at,
            reason: Some(change.reason.clone()),
        });
    }

    /// Evaluates the windowed rules now; resolves once the resulting
    /// notifications are logged and queued for the webhook.
    pub async fn evaluate(&self) {
        let (done, heard) = oneshot::channel();
        self.send(Command::Evaluate(done));
        let _ = heard.await;
    }

    /// Resolves once every notification caused by messages sent before
    /// the call has been delivered to the webhook (or given up on).
    pub async fn flush(&self) {
        let (done, heard) = oneshot::channel();
        self.send(Command::Flush(done));
        let _ = heard.await;
    }

    /// Takes a new config (a policy change).
    pub fn reload(&self, config: Arc<Config>) {
        self.send(Command::Reload(config));
    }

    /// Stops the task once the messages sent before are handled; queued
    /// webhook deliveries get a short grace to go out.
    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }

    fn send(&self, command: Command) {
        // A stopped task has no one to tell; the caller is stopping too.
        let _ = self.commands.send(command);
    }
}

/// Starts the alert task of a process over `store` with `config`'s
/// `[alerts]`. Fails when the open episodes in the store cannot be read.
pub fn spawn(
    store: Store,
    config: Arc<Config>,
) -> Result<(AlertHandle, JoinHandle<()>), StoreError> {
    let engine = AlertEngine::new(&store, &config)?;
    let (commands, inbox) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(engine, store, config, inbox));
    Ok((AlertHandle { commands }, task))
}

async fn run(
    mut engine: AlertEngine,
    store: Store,
    config: Arc<Config>,
    mut inbox: mpsc::UnboundedReceiver<Command>,
) {
    let mut settings = config.alerts.clone();
    let mut delivery = Delivery::start(settings.webhook.clone(), settings.webhook_timeout);
    if settings.webhook.is_some() || !settings.rules.is_empty() {
        tracing::info!(
            rules = settings.rules.len(),
            webhook = %settings.webhook.as_ref().map_or("none", |w| w.origin()),
            "alerts armed"
        );
    }
    let mut tick = ticker(settings.evaluate_every);
    let reconciled = engine.reconcile(SystemTime::now());
    settle(&store, Ok(reconciled), &delivery).await;

    loop {
        let windowed = engine.has_windowed_rules();
        let command = tokio::select! {
            command = inbox.recv() => command,
            _ = tick.tick(), if windowed => {
                evaluate(&mut engine, &store, &delivery).await;
                continue;
            }
        };
        let Some(command) = command else { break };
        match command {
            Command::Health {
                provider,
                down,
                at,
                reason,
            } => {
                let changed = engine.health(&provider, down, at, reason.as_deref());
                settle(&store, Ok(changed), &delivery).await;
            }
            Command::Evaluate(done) => {
                evaluate(&mut engine, &store, &delivery).await;
                let _ = done.send(());
            }
            Command::Flush(done) => {
                // Waited for on its own task: a webhook retrying must not
                // hold up the health changes behind the flush.
                let delivered = delivery.flush();
                tokio::spawn(async move {
                    let _ = delivered.await;
                    let _ = done.send(());
                });
            }
            Command::Reload(config) => {
                let reconciled = engine.reconfigure(&config, SystemTime::now());
                settle(&store, Ok(reconciled), &delivery).await;
                let next = config.alerts.clone();
                if next.webhook != settings.webhook
                    || next.webhook_timeout != settings.webhook_timeout
                {
                    let old = std::mem::replace(
                        &mut delivery,
                        Delivery::start(next.webhook.clone(), next.webhook_timeout),
                    );
                    // The old queue drains on its own task.
                    let grace = settings.webhook_timeout * super::deliver::ATTEMPTS;
                    tokio::spawn(old.close(grace));
                }
                if next.evaluate_every != settings.evaluate_every {
                    tick = ticker(next.evaluate_every);
                }
                settings = next;
            }
            Command::Shutdown => break,
        }
    }
    delivery.close(settings.webhook_timeout * 2).await;
}

fn ticker(every: Duration) -> tokio::time::Interval {
    // A zero period panics in tokio; validation refuses it, but a
    // hand-built config could still carry one.
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Runs one evaluation and settles its result. The journal scan is
/// synchronous: on a multi-threaded runtime the worker hands its other
/// tasks off while it reads; on a current-thread runtime (tests) it runs
/// inline, which also keeps a paused clock from jumping while it reads.
async fn evaluate(engine: &mut AlertEngine, store: &Store, delivery: &Delivery) {
    let now = SystemTime::now();
    let result = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| engine.evaluate(now))
        }
        _ => engine.evaluate(now),
    };
    settle(store, result, delivery).await;
}

/// Makes the episode writes durable, then logs and queues the notifications.
async fn settle(store: &Store, result: Result<Vec<Notification>, StoreError>, delivery: &Delivery) {
    let notifications = match result {
        Ok(notifications) => notifications,
        Err(error) => {
            tracing::warn!(%error, "alert evaluation cannot read the journal; retrying on the next tick");
            return;
        }
    };
    if notifications.is_empty() {
        return;
    }
    if let Err(error) = store.durable().await {
        // Telling is still right: a restart may repeat these, which beats
        // staying silent about an outage.
        tracing::warn!(%error, "alert episodes may not survive a restart");
    }
    for notification in notifications {
        notification.log();
        delivery.send(notification);
    }
}
