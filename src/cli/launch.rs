//! Starting a swarm for the commands that talk to one (`ask`, `chat`,
//! `run`): the config and the swarm loaded, its knowledge indexed, the
//! provider pool and router built, the root actor started (with a Provider
//! and Health actor per provider) and the swarm's supervisor under it.
//!
//! The interface is deliberately small — the supervisor's address, a
//! deadline for calls, `ask` and `stop` — so that the commands do not
//! depend on how the actor tree is laid out.
//!
//! What is built from the config and the swarm is an engine
//! ([`reload::Engine`]); once a policy is active the store's version is
//! what serves, and a process holding the store switches to a new active
//! version as soon as it is applied (see [`reload`]).

mod reload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton::actor::baton::HealthListener;
use baton::actor::health::HealthChange;
use baton::actor::supervisor::{BindingReport, SupervisorMsg};
use baton::actor::{Answer, AskError};
use baton::alerts::AlertHandle;
use baton::review::{NewReview, ReviewId, ReviewQueue};
use baton::routing::router::Router;
use baton::store::journal::{Journal, OnInterrupt};
use baton::store::telemetry::{Telemetry, spawn_compactor};
use baton::store::{Store, StoreError};
use ractor::rpc::CallResult;
use tokio::task::JoinHandle;

use super::Cli;
use super::admin::{AdminServer, serve};

/// Slack on top of the longest route deadline before a caller stops
/// waiting for the supervisor: the router itself gives up at the route's
/// deadline and answers with an error, so this only fires if an actor is
/// stuck.
const CALL_SLACK: Duration = Duration::from_secs(5);

/// How often a running process folds raw telemetry past `[store] keep`
/// into aggregates; the first pass runs at start-up.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// A running swarm.
pub struct Running {
    /// The swarm's name (its directory's name), for reviews and output.
    pub name: String,
    /// The engine serving new requests (and old ones finishing).
    engines: Arc<reload::Engines>,
    /// The store this process holds, when it could open it.
    store: Option<Store>,
    reviews: Option<ReviewQueue>,
    /// Serves store commands of other processes while this one holds it.
    _admin: Option<AdminServer>,
    /// Interrupted requests being asked again; `stop` waits for them.
    resuming: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Folds old raw telemetry into per-minute aggregates while it runs.
    compactor: Option<JoinHandle<()>>,
    /// The `[alerts]` rules watched while it runs.
    alerts: Option<(AlertHandle, JoinHandle<()>)>,
}

/// Tells the alerts each provider's state as this process starts (breakers
/// restored from the store included), so that an episode a previous
/// process left open is resolved if the provider recovered meanwhile.
fn report_start_health(alerts: &AlertHandle, router: &Router) {
    let now = std::time::SystemTime::now();
    for handle in router.pool().handles() {
        alerts.on_health(&handle.id().0, !handle.health().is_up(), now);
    }
}

/// Opens the store of the state directory for a process that will hold it.
/// When another process holds it, this one goes on without (said once on
/// stderr): its requests are not journaled and its sessions not kept.
pub fn hold_store(
    cli: &Cli,
    settings: &baton::store::StoreSettings,
) -> anyhow::Result<Option<Store>> {
    match Store::open(&cli.state, settings) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked(path)) => {
            eprintln!(
                "warning: the store {} is held by another Baton process: these requests are not journaled, sessions are not kept and answers needing review are not queued (give this process its own store with --state DIR)",
                path.display()
            );
            Ok(None)
        }
        Err(error) => Err(error).context("cannot open the store"),
    }
}

/// Loads `swarm` (a path, or a name under `./agents/`) with the config the
/// command line names, and starts it. Config warnings and the swarm's
/// diagnostics go to stderr. Must be called inside a Tokio runtime.
pub async fn launch(cli: &Cli, swarm: &str) -> anyhow::Result<Running> {
    launch_swarms(cli, &[swarm.to_owned()]).await
}

/// Starts `swarms` (every swarm of the policy, or under `./agents/`, when
/// empty) in one engine, as [`launch`] does one.
pub async fn launch_swarms(cli: &Cli, swarms: &[String]) -> anyhow::Result<Running> {
    let file_config = cli.config();
    let store = hold_store(cli, &reload::store_settings(&file_config))?;
    let source = reload::source(&cli.state, file_config, store.as_ref(), swarms)?;
    // One alert task for the process: every engine reports to it, and a
    // new policy version brings its `[alerts]` rules with it.
    let alerts = match &store {
        Some(store) => Some(
            baton::alerts::spawn(store.clone(), Arc::new(source.config.clone()))
                .context("cannot start the alerts")?,
        ),
        None => None,
    };
    let hooks = reload::Hooks {
        health_listener: alerts.as_ref().map(|(alerts, _)| {
            let alerts = alerts.clone();
            Arc::new(move |change: &HealthChange| alerts.on_change(change)) as HealthListener
        }),
        started: alerts.as_ref().map(|(alerts, _)| {
            let alerts = alerts.clone();
            Arc::new(move |router: &Router, config: &baton::config::Config| {
                alerts.reload(Arc::new(config.clone()));
                report_start_health(&alerts, router);
            }) as reload::Started
        }),
    };
    let engine = reload::start(&source, store.as_ref(), &hooks).await?;
    let name = engine.swarm_names().first().cloned().unwrap_or_default();
    let engines = reload::Engines::new(engine, hooks);
    if let Some(store) = &store {
        // A newer version serves the same swarms: those named, or all of it.
        let names = if swarms.is_empty() {
            Vec::new()
        } else {
            engines.current().swarm_names()
        };
        engines.follow(store, &cli.state, &names);
    }
    let (reviews, admin) = match &store {
        Some(store) => (
            Some(ReviewQueue::new(store)?),
            Some(serve(&cli.state, store.clone())?),
        ),
        None => (None, None),
    };
    let compactor = store
        .clone()
        .map(|store| spawn_compactor(store.clone(), store.settings().keep.0, COMPACT_EVERY));
    let running = Running {
        name,
        engines,
        store,
        reviews,
        _admin: admin,
        resuming: std::sync::Mutex::new(Vec::new()),
        compactor,
        alerts,
    };
    running.recover()?;
    Ok(running)
}

impl Running {
    /// Asks the swarm one question, in `session` when given. The outer
    /// error is the actor system failing; the inner one is the swarm's
    /// answer that there is no answer (every provider failed, ...).
    pub async fn ask(
        &self,
        text: &str,
        session: Option<&str>,
    ) -> anyhow::Result<Result<Answer, AskError>> {
        self.ask_into(text, session, None).await
    }

    /// As [`Running::ask`], with the answer's text streamed to `sink` as it
    /// arrives.
    pub async fn ask_streaming(
        &self,
        text: &str,
        session: Option<&str>,
        sink: tokio::sync::mpsc::Sender<baton::provider::StreamEvent>,
    ) -> anyhow::Result<Result<Answer, AskError>> {
        self.ask_into(text, session, Some(sink)).await
    }

    async fn ask_into(
        &self,
        text: &str,
        session: Option<&str>,
        sink: Option<tokio::sync::mpsc::Sender<baton::provider::StreamEvent>>,
    ) -> anyhow::Result<Result<Answer, AskError>> {
        let engine = self.engines.current();
        let _busy = engine.enter();
        let supervisor = engine.supervisor();
        let text = text.to_owned();
        let session = session.map(str::to_owned);
        let result = supervisor
            .call(
                |reply| match sink {
                    Some(sink) => SupervisorMsg::AskStream {
                        text,
                        session,
                        sink,
                        reply,
                    },
                    None => SupervisorMsg::Ask {
                        text,
                        session,
                        reply,
                    },
                },
                Some(engine.longest_deadline + CALL_SLACK),
            )
            .await;
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                engine.refresh().await;
                return Err(anyhow::Error::new(error).context("cannot reach the swarm supervisor"));
            }
        };
        match result {
            CallResult::Success(answer) => Ok(answer),
            CallResult::Timeout => anyhow::bail!(
                "the swarm did not answer within {:?}",
                engine.longest_deadline + CALL_SLACK
            ),
            CallResult::SenderError => {
                // The request died with the supervisor: it is reported, not
                // sent again. Later questions go to the one the root
                // restarted, if it did.
                engine.refresh().await;
                anyhow::bail!("the swarm supervisor stopped before answering")
            }
        }
    }

    /// Settles the requests a crash left open, before any new one is
    /// accepted: each is resumed (its route says `on_interrupt = "resume"`
    /// and it belongs to this swarm) or marked `failed: interrupted`.
    /// Requests of other swarms cannot be resumed here and are failed too:
    /// nothing is left dangling for a process that may never come.
    fn recover(&self) -> anyhow::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let journal = Journal::new(store)?;
        let telemetry = Telemetry::new(store)?;
        let open = journal.open()?;
        if open.is_empty() {
            return Ok(());
        }
        let (mut failed, mut resumed) = (0, 0);
        let engine = self.engines.current();
        for record in open {
            let supervisor = record
                .swarm
                .as_deref()
                .and_then(|swarm| engine.supervisor_of(swarm));
            if let (Some(supervisor), OnInterrupt::Resume) = (supervisor, record.on_interrupt) {
                resumed += 1;
                let trace_id = record.trace_id;
                let deadline = engine.longest_deadline + CALL_SLACK;
                let task = tokio::spawn(async move {
                    let asked = supervisor
                        .call(
                            |reply| SupervisorMsg::Resume {
                                record: Box::new(record),
                                reply,
                            },
                            Some(deadline),
                        )
                        .await;
                    match asked {
                        Ok(CallResult::Success(Ok(_))) => {
                            tracing::info!(trace = %trace_id, "interrupted request resumed and answered");
                        }
                        Ok(CallResult::Success(Err(error))) => {
                            tracing::warn!(trace = %trace_id, %error, "interrupted request resumed and failed");
                        }
                        Ok(CallResult::Timeout) => {
                            tracing::warn!(trace = %trace_id, "interrupted request resumed; no answer before the deadline")
                        }
                        Ok(CallResult::SenderError) => {
                            tracing::warn!(trace = %trace_id, "interrupted request resumed; the supervisor stopped before answering")
                        }
                        Err(error) => {
                            tracing::warn!(trace = %trace_id, %error, "interrupted request resumed; the supervisor cannot be reached")
                        }
                    }
                });
                self.resuming
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(task);
            } else {
                failed += 1;
                let record = journal.fail_interrupted(&record)?;
                telemetry.record_finished(&record)?;
            }
        }
        store.flush()?;
        eprintln!(
            "-- recovered {} request(s) a stop interrupted: {failed} marked failed (interrupted), {resumed} resumed",
            failed + resumed
        );
        Ok(())
    }

    /// Queues `answer` for review when it needs review.
    pub fn queue_for_review(
        &self,
        question: &str,
        answer: &Answer,
    ) -> anyhow::Result<Option<ReviewId>> {
        if !answer.needs_review {
            return Ok(None);
        }
        let Some(reviews) = &self.reviews else {
            anyhow::bail!("no store held by this process to queue it in");
        };
        let item = reviews.add(NewReview::from_answer(&self.name, question, answer))?;
        Ok(Some(item.id))
    }

    /// The swarm's worker bindings and its switches so far.
    pub async fn bindings(&self) -> anyhow::Result<BindingReport> {
        let supervisor = self.engines.current().supervisor();
        match supervisor
            .call(SupervisorMsg::Bindings, Some(CALL_SLACK))
            .await
            .context("cannot reach the swarm supervisor")?
        {
            CallResult::Success(report) => Ok(report),
            CallResult::Timeout => {
                anyhow::bail!("the swarm supervisor did not report its bindings")
            }
            CallResult::SenderError => anyhow::bail!("the swarm supervisor stopped"),
        }
    }

    /// The engines serving, for the gateway.
    pub fn engines(&self) -> Arc<dyn baton::gateway::Engines> {
        self.engines.clone()
    }

    /// The store this process holds, if it could open it.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Drops a finished conversation's history.
    pub fn forget(&self, session: &str) {
        let _ = self
            .engines
            .current()
            .supervisor()
            .send_message(SupervisorMsg::Forget {
                session: session.to_owned(),
            });
    }

    /// Stops the root of every engine (every actor is linked under it and
    /// stops with it) and waits until they have.
    pub async fn stop(self) {
        // A resumed request's caller is gone; its answer still belongs in
        // the journal before the actors go.
        let resuming =
            std::mem::take(&mut *self.resuming.lock().unwrap_or_else(|p| p.into_inner()));
        for task in resuming {
            let _ = task.await;
        }
        if let Some(compactor) = &self.compactor {
            compactor.abort();
        }
        self.engines.stop().await;
        if let Some((alerts, task)) = self.alerts {
            // Notifications of this run go out before the process ends.
            alerts.flush().await;
            alerts.shutdown();
            let _ = task.await;
        }
        if let Some(store) = &self.store
            && let Err(error) = store.flush()
        {
            tracing::error!(%error, "cannot flush the store on the way out");
        }
    }
}
