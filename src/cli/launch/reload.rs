//! Serving the store's active policy, and switching to a new one without a
//! restart.
//!
//! Where a swarm comes from: once a policy has been applied, the store's
//! active version serves (written out under `<state>/policies/v<N>/`), and
//! the config file and swarm directory are not read; before that, they
//! are. `[store]` is the exception: it is needed to open the store, before
//! the active version can be known, so it always comes from the config file
//! (or the defaults, when the file does not load). A process that finds
//! the store held by another one serves the newest version written out in
//! the state directory (`policy apply` and `rollback` write the version
//! they activate, and only ever the newest version is active).
//!
//! Switching: an [`Engine`] is everything built from one version — router
//! and provider pool, root actor, swarm supervisor, knowledge index. A
//! process holding the store follows the active version
//! ([`baton::store::policy::watch_active`]); on a change it builds a whole
//! new engine beside the running one, and only when that succeeded sends
//! new requests to it. Requests already in the old engine finish there;
//! the old engine is stopped once it has none left, or after its longest
//! deadline (after which no request of it can still be waiting for an
//! answer). A version that does not load is reported and the running one
//! keeps serving. Sessions continue across the switch: the new supervisor
//! reads their history from the store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use baton::actor::baton::{Baton, BatonArgs, BatonMsg, HealthListener, start_swarm};
use baton::actor::supervisor::SupervisorMsg;
use baton::config::{Config, ConfigError};
use baton::knowledge::KnowledgeIndex;
use baton::policy::{self, ActiveSources};
use baton::routing::pool::Pool;
use baton::routing::router::Router;
use baton::store::cache::DurableCache;
use baton::store::{Store, StoreSettings};
use baton::swarm::Swarm;
use baton::template;
use ractor::ActorRef;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::CALL_SLACK;

/// Where the swarms and their config come from.
pub struct Source {
    pub config: Config,
    /// One directory per swarm served.
    pub dirs: Vec<PathBuf>,
    /// The policy version serving, if one does.
    pub version: Option<u64>,
}

/// The `[store]` settings to open the store with: the config file's, or
/// the defaults when it does not load (that error is only fatal later,
/// when no policy is active to serve instead).
pub fn store_settings(config: &anyhow::Result<Config>) -> StoreSettings {
    config.as_ref().map(|c| c.store.clone()).unwrap_or_default()
}

/// Finds what serves `swarms` (every swarm when empty): the active policy
/// of `store` (or, without the store, the newest version written out in
/// the state directory), else the config file and the swarm directories
/// (every one under `./agents/` when none is named).
pub fn source(
    state_dir: &Path,
    file_config: anyhow::Result<Config>,
    store: Option<&Store>,
    swarms: &[String],
) -> anyhow::Result<Source> {
    let active = match store {
        Some(store) => policy::active_sources(store, state_dir)
            .context("cannot read the active policy from the store")?,
        None => policy::newest_written(state_dir),
    };
    let Some(active) = active else {
        let config = file_config?;
        eprint!("{}", config.warnings);
        let dirs = if swarms.is_empty() {
            // Routes alone can be served: no ./agents/ is no swarm.
            let agents = Path::new("agents");
            if agents.is_dir() {
                template::swarm_dirs(agents)
            } else {
                Vec::new()
            }
        } else {
            swarms
                .iter()
                .map(|swarm| template::resolve_swarm_dir(swarm))
                .collect()
        };
        return Ok(Source {
            config,
            dirs,
            version: None,
        });
    };
    if let Err(error) = &file_config {
        eprintln!(
            "warning: the config file does not load ({error:#}); policy v{} serves, with default [store] settings",
            active.version
        );
    }
    eprintln!(
        "-- policy v{} serves ({}); the config file and swarm directories are read only by `policy apply` and `validate`",
        active.version,
        &active.hash[..active.hash.len().min(12)]
    );
    Ok(Source {
        config: load_version_config(&active)?,
        dirs: version_swarm_dirs(&active, swarms)?,
        version: Some(active.version),
    })
}

fn load_version_config(active: &ActiveSources) -> anyhow::Result<Config> {
    match Config::load(&active.config) {
        Ok(config) => {
            eprint!("{}", config.warnings);
            Ok(config)
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            eprint!("{diagnostics}");
            anyhow::bail!(
                "the config of policy v{} does not load (see above)",
                active.version
            )
        }
        Err(error) => Err(error.into()),
    }
}

/// The stored directories of `swarms`, or of every swarm of the version.
fn version_swarm_dirs(active: &ActiveSources, swarms: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if swarms.is_empty() {
        return Ok(active
            .swarms()
            .iter()
            .map(|name| active.agents.join(name))
            .collect());
    }
    swarms
        .iter()
        .map(|swarm| version_swarm_dir(active, swarm))
        .collect()
}

fn version_swarm_dir(active: &ActiveSources, swarm: &str) -> anyhow::Result<PathBuf> {
    let dir = active.swarm_dir(swarm);
    if !dir.is_dir() {
        anyhow::bail!(
            "swarm `{swarm}` is not in the active policy v{} (it serves: {}); `baton policy apply --swarm DIR` adds a swarm",
            active.version,
            active.swarms().join(", ")
        );
    }
    Ok(dir)
}

/// Told about each engine's router and config once its root has started.
pub type Started = Arc<dyn Fn(&Router, &Config) + Send + Sync>;

/// What every engine of a process is wired to (the process's alerts).
#[derive(Clone, Default)]
pub struct Hooks {
    /// Hears every health change of the engine's providers.
    pub health_listener: Option<HealthListener>,
    pub started: Option<Started>,
}

/// One swarm of an engine.
struct Slot {
    swarm: Arc<Swarm>,
    knowledge: Option<Arc<KnowledgeIndex>>,
    /// Replaced when the root has restarted it.
    supervisor: Mutex<ActorRef<SupervisorMsg>>,
}

/// Everything built from one version of the config and swarms.
pub struct Engine {
    pub version: Option<u64>,
    /// In the order of the source's directories; the first is the swarm
    /// of the commands that talk to one.
    slots: Vec<Slot>,
    pub root: ActorRef<BatonMsg>,
    pub router: Arc<Router>,
    /// The dependency graph of the config and swarms, for the dashboard.
    graph: baton::graph::DependencyGraph,
    handle: Mutex<Option<JoinHandle<()>>>,
    /// The longest a request can take: every step of the longest possible
    /// delegation chain (each worker once), plus one hand-over to a
    /// restarted worker, each at most the longest route deadline.
    pub longest_deadline: Duration,
    /// Requests inside this engine, and a bell rung when it drops to zero.
    busy: AtomicUsize,
    idle: Notify,
}

/// Loads the swarms of `source` and starts an engine for them.
pub async fn start(
    source: &Source,
    store: Option<&Store>,
    hooks: &Hooks,
) -> anyhow::Result<Engine> {
    let Source {
        config,
        dirs,
        version,
    } = source;
    let mut loaded_swarms = Vec::new();
    for dir in dirs {
        let loaded = match template::load_swarm(dir, config) {
            Ok(loaded) => loaded.swarm,
            Err(error) => {
                eprint!("{}", error.diagnostics());
                anyhow::bail!("swarm {} did not load (see above)", dir.display());
            }
        };
        let knowledge = if loaded.knowledge.is_empty() {
            None
        } else {
            let index = KnowledgeIndex::build(&dir.join("knowledge"), &loaded.knowledge)
                .with_context(|| format!("cannot index the knowledge base of {}", loaded.name))?;
            Some(Arc::new(index))
        };
        loaded_swarms.push((Arc::new(loaded), knowledge));
    }
    let most_workers = loaded_swarms
        .iter()
        .map(|(swarm, _)| swarm.workers().count())
        .max()
        .unwrap_or(0);
    let longest_deadline = config
        .routes
        .values()
        .map(|r| r.deadlines.total)
        .max()
        .unwrap_or(Duration::from_secs(120))
        * (most_workers as u32 + 1);
    let pool = Pool::from_config(config).context("cannot build the provider pool")?;
    let router = Arc::new(Router::new(config, pool).context("cannot build the router")?);
    if let Some(store) = store {
        let durable = DurableCache::new(store)?;
        let pruned = durable.prune(router.cache().ttl())?;
        tracing::debug!(pruned, "expired cached responses dropped");
        router.cache().attach(Arc::new(durable));
    }
    let (root, handle) = Baton::start_with(BatonArgs {
        router: router.clone(),
        health: config.health.clone(),
        store: store.cloned(),
        health_listener: hooks.health_listener.clone(),
    })
    .await
    .context("cannot start the root actor")?;
    if let Some(started) = &hooks.started {
        started(&router, config);
    }
    let swarms: Vec<Swarm> = loaded_swarms.iter().map(|(s, _)| (**s).clone()).collect();
    let graph = baton::graph::build(config, &swarms);
    let mut slots = Vec::new();
    for (swarm, knowledge) in loaded_swarms {
        match start_swarm(&root, swarm.clone(), knowledge.clone()).await {
            Ok(supervisor) => slots.push(Slot {
                swarm,
                knowledge,
                supervisor: Mutex::new(supervisor),
            }),
            Err(error) => {
                root.stop(None);
                let _ = handle.await;
                return Err(anyhow::Error::msg(error)
                    .context(format!("cannot start the supervisor of {}", swarm.name)));
            }
        }
    }
    Ok(Engine {
        version: *version,
        slots,
        root,
        router,
        graph,
        handle: Mutex::new(Some(handle)),
        longest_deadline,
        busy: AtomicUsize::new(0),
        idle: Notify::new(),
    })
}

impl Engine {
    /// The first swarm's supervisor (the swarm of `ask`, `chat`, `run`).
    pub fn supervisor(&self) -> ActorRef<SupervisorMsg> {
        self.slots
            .first()
            .expect("ask, chat and run start an engine with their one swarm")
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The supervisor of the swarm named `name`, if this engine serves it.
    pub fn supervisor_of(&self, name: &str) -> Option<ActorRef<SupervisorMsg>> {
        self.slots
            .iter()
            .find(|slot| slot.swarm.name == name)
            .map(|slot| {
                slot.supervisor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
    }

    /// The names of the swarms served, in order.
    pub fn swarm_names(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|slot| slot.swarm.name.clone())
            .collect()
    }

    /// Points later questions at the supervisors the root restarted, if it
    /// did (after too many failures it does not, and they fail clearly).
    pub async fn refresh(&self) {
        for slot in &self.slots {
            if let Ok(restarted) =
                start_swarm(&self.root, slot.swarm.clone(), slot.knowledge.clone()).await
            {
                *slot.supervisor.lock().unwrap_or_else(|p| p.into_inner()) = restarted;
            }
        }
    }

    /// Counts a request in until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Stops the root (every actor is linked under it and stops with it)
    /// and waits until it has.
    pub async fn stop(&self) {
        self.root.stop(None);
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && let Err(error) = handle.await
        {
            tracing::warn!(%error, "the root actor ended abnormally");
        }
    }

    /// Waits until no request is inside, or `limit` has passed; whether
    /// it drained.
    async fn drained(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                // Registered before the count is read, so a request that
                // leaves in between still wakes this.
                let notified = self.idle.notified();
                if self.busy.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

impl baton::gateway::Engine for Engine {
    fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn supervisor(&self, name: &str) -> Option<ActorRef<SupervisorMsg>> {
        self.supervisor_of(name)
    }

    fn swarms(&self) -> Vec<String> {
        self.swarm_names()
    }

    fn deadline(&self) -> Duration {
        self.longest_deadline + CALL_SLACK
    }

    fn graph(&self) -> Option<&baton::graph::DependencyGraph> {
        Some(&self.graph)
    }
}

impl baton::gateway::Engines for Engines {
    fn enter(&self) -> baton::gateway::Entered {
        let engine = self.current();
        let busy = engine.enter();
        baton::gateway::Entered {
            engine,
            guard: Box::new(busy),
        }
    }
}

/// A request inside an engine.
pub struct Busy(Arc<Engine>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The engine serving new requests, and those being retired.
pub struct Engines {
    current: RwLock<Arc<Engine>>,
    hooks: Hooks,
    retiring: Mutex<Vec<JoinHandle<()>>>,
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl Engines {
    pub fn new(engine: Engine, hooks: Hooks) -> Arc<Engines> {
        Arc::new(Engines {
            current: RwLock::new(Arc::new(engine)),
            hooks,
            retiring: Mutex::new(Vec::new()),
            follower: Mutex::new(None),
        })
    }

    pub fn current(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends new requests to `engine`; the one it replaces is stopped once
    /// idle, or after its longest deadline.
    fn switch(&self, engine: Engine) -> Option<u64> {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(engine),
        );
        let version = old.version;
        let retire = tokio::spawn(async move {
            let drained = old.drained(old.longest_deadline + CALL_SLACK).await;
            old.stop().await;
            tracing::info!(
                version = ?old.version,
                drained,
                "the engine of an earlier policy version stopped"
            );
        });
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|task| !task.is_finished());
        retiring.push(retire);
        version
    }

    /// Follows the store's active policy version: each new one is built
    /// and switched to. Must be called inside a Tokio runtime.
    pub fn follow(self: &Arc<Self>, store: &Store, state_dir: &Path, swarms: &[String]) {
        let mut active = match baton::store::policy::watch_active(store) {
            Ok(active) => active,
            Err(error) => {
                eprintln!(
                    "warning: cannot follow the active policy ({error}); a new version serves after a restart"
                );
                return;
            }
        };
        let engines = Arc::downgrade(self);
        let (store, state_dir, swarms) = (store.clone(), state_dir.to_owned(), swarms.to_vec());
        let task = tokio::spawn(async move {
            while active.changed().await.is_ok() {
                let number = *active.borrow_and_update();
                let Some(engines) = engines.upgrade() else {
                    return;
                };
                let serving = engines.current().version;
                if number == 0 || serving == Some(number) {
                    continue;
                }
                match build(&store, &state_dir, &swarms, &engines.hooks).await {
                    Ok(engine) => {
                        let version = engine.version;
                        let name = engine.swarm_names().join(", ");
                        engines.switch(engine);
                        eprintln!(
                            "-- policy v{} serves {name} now (was {}); requests already asked finish on the old one",
                            version.unwrap_or(number),
                            serving
                                .map_or_else(|| "the config file".to_owned(), |v| format!("v{v}"))
                        );
                    }
                    Err(error) => eprintln!(
                        "warning: policy v{number} cannot serve: {error:#}; {} keeps serving",
                        serving.map_or_else(|| "the config file".to_owned(), |v| format!("v{v}"))
                    ),
                }
            }
        });
        *self.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Stops following, then every engine: retiring ones once idle (they
    /// are, when the caller has its answers), then the current one.
    pub async fn stop(&self) {
        let follower = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(follower) = follower {
            follower.abort();
            let _ = follower.await;
        }
        let retiring =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        for task in retiring {
            let _ = task.await;
        }
        self.current().stop().await;
    }
}

/// An engine for the active version of `store`.
async fn build(
    store: &Store,
    state_dir: &Path,
    swarms: &[String],
    hooks: &Hooks,
) -> anyhow::Result<Engine> {
    let active =
        policy::active_sources(store, state_dir)?.context("the store has no active policy")?;
    let source = Source {
        config: load_version_config(&active)?,
        dirs: version_swarm_dirs(&active, swarms)?,
        version: Some(active.version),
    };
    start(&source, Some(store), hooks).await
}
