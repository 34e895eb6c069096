//! The supervised local model server (`kind = "local"`): Baton starts an
//! OpenAI-compatible server as a child process — llama.cpp's
//! `llama-server -m model.gguf`, `python -m llama_cpp.server`, or anything
//! that serves `/v1/chat/completions` and `/v1/models` on the port it is
//! given — waits until it answers, restarts it when it dies, and stops it
//! when the provider is dropped.
//!
//! The port is chosen when the provider is built (a free loopback port), so
//! the backend's address is known before the server runs; requests wait
//! for the server to be ready within their own deadline, and fail as
//! `unavailable` while it is starting or given up on, so that routing
//! moves on. Restarts back off (1 s doubling to 30 s) and stop after
//! `max_restarts` exits within ten minutes: a server that cannot stay up
//! is left down, and the provider's health says so.
//!
//! No orphans: the child is killed when its supervisor task ends or is
//! dropped (`kill_on_drop`), and on Linux it is also asked to die with the
//! thread that started it (`PR_SET_PDEATHSIG`), which covers a Baton that
//! was killed outright — the thread is a Tokio worker, which lives as long
//! as the runtime.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::openai::OpenAi;
use super::{AttemptDeadline, Backend, ChatRequest, ChatResponse, EventStream, ProviderError};
use crate::config::{LocalServerSpec, ProviderId};

/// Lines of the server's stderr kept to explain an exit.
const STDERR_TAIL: usize = 20;

/// The last lines the server wrote to stderr.
type Tail = Arc<Mutex<VecDeque<String>>>;
const READY_POLL: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the server is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    Starting,
    Ready {
        pid: u32,
    },
    /// It exited too often, or could not be started: left down.
    GaveUp(String),
}

/// A running local server's supervisor; dropping it stops the server.
#[derive(Debug)]
pub struct LocalServer {
    port: u16,
    state: watch::Receiver<ServerState>,
    _stop: DropGuard,
}

impl LocalServer {
    /// Starts supervising `spec` for provider `id` on a free loopback port.
    /// Must be called inside a Tokio runtime.
    pub fn start(id: &ProviderId, spec: &LocalServerSpec) -> Result<LocalServer, ProviderError> {
        let port = free_port().map_err(|e| {
            ProviderError::Unavailable(format!("no free port for the local server: {e}"))
        })?;
        let args = fill(&spec.command, port, spec.model_path.as_deref());
        let (state_tx, state) = watch::channel(ServerState::Starting);
        let stop = CancellationToken::new();
        let supervisor = Supervisor {
            id: id.clone(),
            args,
            port,
            ready_timeout: spec.ready_timeout,
            max_restarts: spec.max_restarts,
            state: state_tx,
            stop: stop.clone(),
        };
        tokio::spawn(supervisor.run());
        Ok(LocalServer {
            port,
            state,
            _stop: stop.drop_guard(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> ServerState {
        self.state.borrow().clone()
    }

    /// Waits until a server other than `not_pid` is ready, at most until
    /// `until`; returns its pid.
    async fn ready(
        &self,
        until: tokio::time::Instant,
        not_pid: Option<u32>,
    ) -> Result<u32, ProviderError> {
        let mut state = self.state.clone();
        let wait = state.wait_for(|s| match s {
            ServerState::Starting => false,
            ServerState::Ready { pid } => Some(*pid) != not_pid,
            ServerState::GaveUp(_) => true,
        });
        match tokio::time::timeout_at(until, wait).await {
            Ok(Ok(guard)) => match &*guard {
                ServerState::Ready { pid } => Ok(*pid),
                ServerState::GaveUp(why) => Err(ProviderError::Unavailable(format!(
                    "the local model server is down: {why}"
                ))),
                ServerState::Starting => unreachable!("waited for another state"),
            },
            Ok(Err(_)) => Err(ProviderError::Unavailable(
                "the local model server's supervisor stopped".into(),
            )),
            Err(_) => Err(ProviderError::Unavailable(
                "the local model server is still starting".into(),
            )),
        }
    }
}

/// Fills `{port}` and `{model_path}` into the command line.
fn fill(command: &[String], port: u16, model_path: Option<&std::path::Path>) -> Vec<String> {
    let model = model_path
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    command
        .iter()
        .map(|arg| {
            arg.replace("{port}", &port.to_string())
                .replace("{model_path}", &model)
        })
        .collect()
}

fn free_port() -> std::io::Result<u16> {
    // Bound and released at once: another process could take it in
    // between, which shows as a failed start and a restart on a new try.
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

struct Supervisor {
    id: ProviderId,
    args: Vec<String>,
    port: u16,
    ready_timeout: Duration,
    max_restarts: u32,
    state: watch::Sender<ServerState>,
    stop: CancellationToken,
}

impl Supervisor {
    async fn run(self) {
        let mut exits: VecDeque<Instant> = VecDeque::new();
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.state.send_replace(ServerState::Starting);
            let why = match self.spawn() {
                Ok((child, tail)) => match self.serve(child, &tail).await {
                    Ended::Stopped => return,
                    Ended::Failed(why) => why,
                },
                Err(why) => why,
            };
            let now = Instant::now();
            exits.push_back(now);
            while exits
                .front()
                .is_some_and(|t| now.duration_since(*t) > LocalServerSpec::RESTART_WINDOW)
            {
                exits.pop_front();
            }
            if exits.len() > self.max_restarts as usize {
                tracing::error!(provider = %self.id, %why, restarts = self.max_restarts, "the local model server keeps failing; left down");
                self.state.send_replace(ServerState::GaveUp(why));
                return;
            }
            tracing::warn!(provider = %self.id, %why, ?backoff, "the local model server failed; restarting");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn spawn(&self) -> Result<(Child, Tail), String> {
        let (program, rest) = self
            .args
            .split_first()
            .ok_or_else(|| "the command is empty".to_owned())?;
        let mut command = Command::new(program);
        command
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and
        // only calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start `{program}`: {e}"))?;
        let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            let id = self.id.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(provider = %id, "local server: {line}");
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        Ok((child, tail))
    }

    /// Waits for the server to answer, then for it to exit or be stopped.
    async fn serve(&self, mut child: Child, tail: &Mutex<VecDeque<String>>) -> Ended {
        let pid = child.id().unwrap_or(0);
        let started = Instant::now();
        let client = reqwest::Client::new();
        let models = format!("http://127.0.0.1:{}/v1/models", self.port);
        let exited = |status: std::io::Result<std::process::ExitStatus>| {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            let last: Vec<&str> = tail
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(String::as_str)
                .collect();
            Ended::Failed(format!(
                "exited ({status}); last output: {}",
                last.join(" | ")
            ))
        };
        loop {
            tokio::select! {
                status = child.wait() => return exited(status),
                () = self.stop.cancelled() => return stop(child).await,
                () = tokio::time::sleep(READY_POLL) => {}
            }
            let answered = client
                .get(&models)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                break;
            }
            if started.elapsed() > self.ready_timeout {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Ended::Failed(format!(
                    "not ready within {:?} (no answer on {models})",
                    self.ready_timeout
                ));
            }
        }
        tracing::info!(provider = %self.id, pid, port = self.port, after = ?started.elapsed(), "local model server ready");
        self.state.send_replace(ServerState::Ready { pid });
        tokio::select! {
            status = child.wait() => exited(status),
            () = self.stop.cancelled() => stop(child).await,
        }
    }
}

enum Ended {
    Stopped,
    Failed(String),
}

async fn stop(mut child: Child) -> Ended {
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ended::Stopped
}

/// The provider's backend: the OpenAI protocol to the supervised server,
/// once it is ready.
#[derive(Debug)]
pub struct Local {
    server: LocalServer,
    client: OpenAi,
}

impl Local {
    pub fn start(
        id: ProviderId,
        spec: &LocalServerSpec,
        model: String,
        connect_timeout: Duration,
    ) -> Result<Local, ProviderError> {
        let server = LocalServer::start(&id, spec)?;
        let base_url = format!("http://127.0.0.1:{}/v1", server.port());
        let client = OpenAi::new(id, &base_url, model, None, connect_timeout)?;
        Ok(Local { server, client })
    }

    pub fn server(&self) -> &LocalServer {
        &self.server
    }
}

impl Backend for Local {
    fn id(&self) -> &ProviderId {
        self.client.id()
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let pid = self.server.ready(deadline.end, None).await?;
            match self.client.complete(request, deadline).await {
                // It died after it was last seen ready: wait for the one
                // its supervisor starts instead.
                Err(ProviderError::Connect(_)) => {
                    self.server.ready(deadline.end, Some(pid)).await?;
                    self.client.complete(request, deadline).await
                }
                other => other,
            }
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
        deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let pid = self.server.ready(deadline.end, None).await?;
            match self.client.stream(request, deadline).await {
                Err(ProviderError::Connect(_)) => {
                    self.server.ready(deadline.end, Some(pid)).await?;
                    self.client.stream(request, deadline).await
                }
                other => other,
            }
        })
    }

    fn probe(&self, deadline: AttemptDeadline) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            // A server that is starting is not up yet; the probe does not
            // wait for it.
            match self.server.state() {
                ServerState::Ready { .. } => self.client.probe(deadline).await,
                ServerState::Starting => Err(ProviderError::Unavailable(
                    "the local model server is starting".into(),
                )),
                ServerState::GaveUp(why) => Err(ProviderError::Unavailable(why)),
            }
        })
    }
}
