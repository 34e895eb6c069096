//! The scripted-fault upstream server (`baton mock-provider`): an OpenAI-
//! and Anthropic-compatible endpoint whose failures follow a TOML script
//! over time, to rehearse outages the way toxiproxy rehearses network ones.
//! Tests, examples and benchmarks call it through Baton's real clients, and
//! the official Python SDKs call it in `tests/sdk.rs`, so its wire format
//! (the `wire` submodule) is written from the public API references, not
//! from Baton's clients.
//!
//! # Endpoints
//! - `POST /v1/chat/completions` (OpenAI, JSON or SSE) and `POST /v1/messages`
//!   (Anthropic, JSON or SSE); any API key is accepted and none is recorded.
//! - `GET /v1/models`: the script's model, as an OpenAI list.
//! - `GET /stats`, `POST /stats/reset`: the [`Stats`] as JSON.
//! - `PUT /script`: a TOML body replaces the script and restarts its clock.
//!
//! # Answers
//! Deterministic ([`answer`]): `answer_tokens` words picked by a hash of the
//! last user message, each word and its space one token. A request ending
//! with an assistant message that starts the answer (prefill) gets only the
//! rest. When the request offers tools and the last user message names one,
//! the answer is a call to it with arguments `{"query": <that message>}`.
//! With `cite`, a text answer ends with the first `[file#heading]` line of
//! the system prompt (the knowledge passages Baton put there), so a demo
//! shows cited answers without a model.
//!
//! # Script
//! ```toml
//! [server]                 # every key optional
//! model = "mock-1"
//! answer_tokens = 24
//! latency = "20ms"         # before each response starts
//! jitter = "5ms"           # up to this much more, from the seeded RNG
//! token_interval = "0ms"   # between streamed tokens
//! max_context_tokens = 0   # 0 = unlimited; else longer prompts get the real error
//! seed = 7                 # RNG for `rate` and `jitter`
//! cite = false             # end answers with the prompt's first `[file#heading]`
//!
//! [[fault]]                # checked in order: the first active one that fits applies
//! kind = "status"
//! status = 503
//! retry_after = "2s"       # Retry-After, whole seconds rounded up
//! from = "5s"              # window relative to the script's start; default: always
//! to = "15s"
//! rate = 0.3               # probability per request; default 1.0
//! limit = 1                # applies to at most this many requests; default no bound
//! endpoint = "openai"      # openai | anthropic; default both
//! ```
//! Kinds and their own fields: `status` (`status`, `retry_after`); `refuse`
//! (the listener is closed during the window, so connections get
//! ECONNREFUSED; it ignores order and takes no `rate` or `endpoint`);
//! `reset` (the request is read, then the connection is reset with RST);
//! `hang` (read, never answered; closed when the window ends, at most after
//! 120 s); `malformed` (200 whose body, or one SSE data line, is not JSON);
//! `cut_stream` (`after_tokens`, default 0: that many tokens, then the
//! connection closes with no final event); `slow_stream` (`token_interval`);
//! `cut_tool_call` (`after_tokens` argument pieces, default 1: a tool call
//! cut inside its arguments; only requests offering tools);
//! `reject_prefill` (400 when the request ends with an assistant message);
//! `restart_continuation` (a prefill request gets the whole answer again);
//! `content_filter` (`after_tokens`, default 0: finish reason
//! `content_filter` / stop reason `refusal` after that much text);
//! `context_length` (the real 400 context-length error); `latency`
//! (`delay`: more wait, then a normal answer). A fault whose condition does
//! not fit the request (no prefill, no tools) is skipped, as is one whose
//! `rate` draw fails. Unknown keys and fields foreign to a kind are errors.
//!
//! # Connections
//! The server runs its own accept loop and hands each connection to hyper,
//! so that faults can act below HTTP: closing the listener (`refuse`), or
//! dropping a connection with `SO_LINGER` 0 (`reset`). It binds loopback
//! addresses only: it is a rehearsal tool, never a service.

mod answer;
mod script;
mod serve;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use script::{
    Endpoint, Fault, FaultKind, HANG_CAP, Script, ScriptError, ServerSettings, Window,
    parse_duration,
};

/// Why the mock server could not start or a script could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("the mock provider listens on loopback only, found {0}: use 127.0.0.1 or [::1]")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read fault script {path}: {source}")]
    ReadScript {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid fault script {0}")]
    Script(ScriptError),
}

/// What the server has seen since it started or the stats were reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Chat requests (both endpoints), whatever their outcome.
    pub requests: u64,
    /// Chat requests per endpoint: `openai`, `anthropic`.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Chat requests per outcome: `ok`, `bad_request`, or a fault kind.
    pub by_outcome: BTreeMap<String, u64>,
    /// Stream events carrying a token (text or tool-call arguments) handed
    /// to the connection.
    pub streamed_tokens: u64,
    /// Prompt fingerprint (a hash of the messages, the same over both
    /// protocols) to the number of requests that carried it.
    pub prompts: BTreeMap<String, u64>,
    /// `GET /v1/models` requests: health probes land here, and cost no
    /// tokens.
    pub models_requests: u64,
    /// The turns of the last chat request, as `user: text` and
    /// `assistant: text`: what a failover replayed can be read here.
    pub last_turns: Vec<String>,
    /// The system prompt of the last chat request (all system messages,
    /// joined): which prompt a swarm sent can be read here.
    #[serde(default)]
    pub last_system: String,
}

/// The full answer the mock gives to `prompt` as the last user message,
/// with `answer_tokens` words: what a client should end up with whatever
/// failovers and continuations happened on the way.
pub fn expected_answer(prompt: &str, answer_tokens: usize) -> String {
    let conversation = answer::Conversation {
        turns: vec![answer::Turn {
            role: answer::Role::User,
            text: prompt.to_owned(),
            tool_result: false,
        }],
        ..answer::Conversation::default()
    };
    answer::full_answer(&conversation, answer_tokens).concat()
}

/// The scripted-fault server.
pub struct MockServer;

impl MockServer {
    /// Binds `addr` (loopback only; port 0 picks a free port) and serves
    /// `script` from now on. The script's clock starts here.
    pub async fn start(addr: SocketAddr, script: Script) -> Result<MockHandle, MockError> {
        if !addr.ip().is_loopback() {
            return Err(MockError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MockError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MockError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(script));
        // Decide before returning, so that a script refusing from the start
        // refuses the caller's very first connection.
        let listener = if shared.refusal(Instant::now()).active {
            shared.refusing.send_replace(true);
            None
        } else {
            Some(listener)
        };
        let task = tokio::spawn(serve::accept_loop(shared.clone(), addr, listener));
        tracing::info!(%addr, "mock provider listening");
        Ok(MockHandle {
            addr,
            shared,
            task: Some(task),
        })
    }
}

/// A running mock server. Dropping it stops the server without waiting;
/// [`MockHandle::shutdown`] waits until every connection is closed.
pub struct MockHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl MockHandle {
    /// The bound address (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL clients are given.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.shared.snapshot()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats() = Stats::default();
        *self.shared.last_conversation() = None;
    }

    /// Replaces the script and restarts its clock.
    pub fn set_script(&self, script: Script) {
        self.shared.set_script(script);
    }

    /// Stops accepting, closes every connection and waits for the server's
    /// tasks to end.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "mock provider accept loop ended abnormally");
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// State shared by the accept loop, every connection and the handle.
struct Shared {
    script: Mutex<ScriptState>,
    stats: Mutex<Stats>,
    /// Bumped on every script change so the accept loop re-plans refusals.
    generation: watch::Sender<u64>,
    /// Whether the listener is closed; open connections close too.
    refusing: watch::Sender<bool>,
    cancel: CancellationToken,
    next_id: std::sync::atomic::AtomicU64,
    last_conversation: Mutex<Option<answer::Conversation>>,
}

struct ScriptState {
    script: Arc<Script>,
    started: Instant,
    rng: StdRng,
    /// Requests each fault (by index) has applied to since the script
    /// started, for `limit`.
    applied: Vec<usize>,
}

/// Whether a `refuse` window is active, and when that changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    active: bool,
    /// When `active` next flips; `None`: not before the script changes.
    until: Option<Instant>,
}

impl Shared {
    fn new(script: Script) -> Self {
        let rng = StdRng::seed_from_u64(script.server.seed);
        Self {
            script: Mutex::new(ScriptState {
                script: Arc::new(script),
                started: Instant::now(),
                rng,
                applied: Vec::new(),
            }),
            stats: Mutex::new(Stats::default()),
            generation: watch::Sender::new(0),
            refusing: watch::Sender::new(false),
            cancel: CancellationToken::new(),
            next_id: std::sync::atomic::AtomicU64::new(1),
            last_conversation: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, ScriptState> {
        // A panic while holding the lock cannot leave the script half
        // written (every write is a whole replacement), so a poisoned lock
        // is still safe to use.
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        // Counters only: a poisoned lock at worst lost one increment.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_conversation(&self) -> MutexGuard<'_, Option<answer::Conversation>> {
        self.last_conversation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The counters, with the last conversation's turns written out.
    fn snapshot(&self) -> Stats {
        let mut stats = self.stats().clone();
        if let Some(conversation) = self.last_conversation().as_ref() {
            stats.last_turns = conversation
                .turns
                .iter()
                .map(|turn| {
                    let role = match turn.role {
                        answer::Role::User => "user",
                        answer::Role::Assistant => "assistant",
                    };
                    format!("{role}: {}", turn.text)
                })
                .collect();
            stats.last_system = conversation.system.clone();
        }
        stats
    }

    fn set_script(&self, script: Script) {
        {
            let mut state = self.state();
            state.rng = StdRng::seed_from_u64(script.server.seed);
            state.script = Arc::new(script);
            state.started = Instant::now();
            state.applied.clear();
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Where `now` falls among the script's `refuse` windows.
    fn refusal(&self, now: Instant) -> Refusal {
        let state = self.state();
        let elapsed = now.saturating_duration_since(state.started);
        let windows = state
            .script
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Refuse)
            .map(|f| f.window);
        refusal_at(windows, elapsed, state.started)
    }
}

fn refusal_at(
    windows: impl Iterator<Item = Window> + Clone,
    elapsed: Duration,
    started: Instant,
) -> Refusal {
    if windows.clone().any(|w| w.contains(elapsed)) {
        // Overlapping windows: refuse until no window holds the moment.
        let mut end = elapsed;
        loop {
            let next = windows
                .clone()
                .filter(|w| w.contains(end))
                .map(|w| w.to)
                .try_fold(end, |acc, to| to.map(|to| acc.max(to)));
            match next {
                None => {
                    return Refusal {
                        active: true,
                        until: None,
                    };
                }
                Some(next) if next == end => {
                    return Refusal {
                        active: true,
                        until: Some(started + end),
                    };
                }
                Some(next) => end = next,
            }
        }
    }
    let next_start = windows.filter(|w| w.from > elapsed).map(|w| w.from).min();
    Refusal {
        active: false,
        until: next_start.map(|from| started + from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(from: u64, to: Option<u64>) -> Window {
        Window {
            from: Duration::from_millis(from),
            to: to.map(Duration::from_millis),
        }
    }

    #[test]
    fn refusal_spans_overlapping_windows_and_finds_the_next_start() {
        let t0 = Instant::now();
        let windows = [
            window(100, Some(200)),
            window(150, Some(300)),
            window(500, None),
        ];
        let at = |ms| refusal_at(windows.iter().copied(), Duration::from_millis(ms), t0);
        assert_eq!(
            at(0),
            Refusal {
                active: false,
                until: Some(t0 + Duration::from_millis(100))
            }
        );
        assert_eq!(
            at(120),
            Refusal {
                active: true,
                until: Some(t0 + Duration::from_millis(300))
            }
        );
        assert_eq!(
            at(300),
            Refusal {
                active: false,
                until: Some(t0 + Duration::from_millis(500))
            }
        );
        assert_eq!(
            at(600),
            Refusal {
                active: true,
                until: None
            }
        );
    }
}
