//! Starting a swarm for the commands that talk to one (`ask`, `chat`,
//! `run`): the config and the swarm loaded, its knowledge indexed, the
//! provider pool and router built, the root actor started (with a Provider
//! and Health actor per provider) and the swarm's supervisor under it.
//!
//! The interface is deliberately small — the supervisor's address, a
//! deadline for calls, `ask` and `stop` — so that the commands do not
//! depend on how the actor tree is laid out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton::actor::baton::{Baton, BatonMsg, start_swarm};
use baton::actor::supervisor::SupervisorMsg;
use baton::actor::{Answer, AskError};
use baton::knowledge::KnowledgeIndex;
use baton::routing::pool::Pool;
use baton::routing::router::Router;
use baton::template;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::task::JoinHandle;

use super::Cli;

/// Slack on top of the longest route deadline before a caller stops
/// waiting for the supervisor: the router itself gives up at the route's
/// deadline and answers with an error, so this only fires if an actor is
/// stuck.
const CALL_SLACK: Duration = Duration::from_secs(5);

/// A running swarm.
pub struct Running {
    /// The swarm's name (its directory's name), for reviews and output.
    pub name: String,
    /// The swarm's supervisor; replaced when the root has restarted it.
    supervisor: std::sync::Mutex<ActorRef<SupervisorMsg>>,
    root: ActorRef<BatonMsg>,
    swarm: Arc<baton::swarm::Swarm>,
    knowledge: Option<Arc<KnowledgeIndex>>,
    handle: JoinHandle<()>,
    /// The longest a request can take: every step of the longest possible
    /// delegation chain (each worker once), plus one hand-over to a
    /// restarted worker, each at most the longest route deadline.
    pub longest_deadline: Duration,
}

/// Loads `swarm` (a path, or a name under `./agents/`) with the config the
/// command line names, and starts it. Config warnings and the swarm's
/// diagnostics go to stderr. Must be called inside a Tokio runtime.
pub async fn launch(cli: &Cli, swarm: &str) -> anyhow::Result<Running> {
    let config = cli.config()?;
    eprint!("{}", config.warnings);
    let dir = template::resolve_swarm_dir(swarm);
    let loaded = match template::load_swarm(&dir, &config) {
        Ok(loaded) => loaded.swarm,
        Err(error) => {
            eprint!("{}", error.diagnostics());
            anyhow::bail!("swarm {} did not load (see above)", dir.display());
        }
    };
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.clone())
        .file_name()
        .map_or_else(|| swarm.to_owned(), |n| n.to_string_lossy().into_owned());
    let knowledge = if loaded.knowledge.is_empty() {
        None
    } else {
        let index = KnowledgeIndex::build(&dir.join("knowledge"), &loaded.knowledge)
            .context("cannot index the swarm's knowledge base")?;
        Some(Arc::new(index))
    };
    let longest_deadline = config
        .routes
        .values()
        .map(|r| r.deadlines.total)
        .max()
        .unwrap_or(Duration::from_secs(120))
        * (loaded.workers().count() as u32 + 1);
    let pool = Pool::from_config(&config).context("cannot build the provider pool")?;
    let router = Arc::new(Router::new(&config, pool).context("cannot build the router")?);
    let (root, handle) = Baton::start(router, config.health.clone())
        .await
        .context("cannot start the root actor")?;
    let loaded = Arc::new(loaded);
    let supervisor = start_swarm(&root, loaded.clone(), knowledge.clone())
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot start the swarm supervisor")?;
    Ok(Running {
        name,
        supervisor: std::sync::Mutex::new(supervisor),
        root,
        swarm: loaded,
        knowledge,
        handle,
        longest_deadline,
    })
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
        let supervisor = self.supervisor();
        let result = supervisor
            .call(
                |reply| SupervisorMsg::Ask {
                    text: text.to_owned(),
                    session: session.map(str::to_owned),
                    reply,
                },
                Some(self.longest_deadline + CALL_SLACK),
            )
            .await;
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                self.refresh().await;
                return Err(anyhow::Error::new(error).context("cannot reach the swarm supervisor"));
            }
        };
        match result {
            CallResult::Success(answer) => Ok(answer),
            CallResult::Timeout => anyhow::bail!(
                "the swarm did not answer within {:?}",
                self.longest_deadline + CALL_SLACK
            ),
            CallResult::SenderError => {
                // The request died with the supervisor: it is reported, not
                // sent again. Later questions go to the one the root
                // restarted, if it did.
                self.refresh().await;
                anyhow::bail!("the swarm supervisor stopped before answering")
            }
        }
    }

    /// Points later questions at the supervisor the root restarted, if it
    /// did (after too many failures it does not, and they fail clearly).
    async fn refresh(&self) {
        if let Ok(restarted) =
            start_swarm(&self.root, self.swarm.clone(), self.knowledge.clone()).await
        {
            *self.supervisor.lock().unwrap_or_else(|p| p.into_inner()) = restarted;
        }
    }

    fn supervisor(&self) -> ActorRef<SupervisorMsg> {
        self.supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops a finished conversation's history.
    pub fn forget(&self, session: &str) {
        let _ = self.supervisor().send_message(SupervisorMsg::Forget {
            session: session.to_owned(),
        });
    }

    /// Stops the root (every actor is linked under it and stops with it)
    /// and waits until it has.
    pub async fn stop(self) {
        self.root.stop(None);
        if let Err(error) = self.handle.await {
            tracing::warn!(%error, "the root actor ended abnormally");
        }
    }
}
