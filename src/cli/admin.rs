//! The admin socket: store commands for a store another process holds.
//!
//! sled lets one process open a database. The process that holds the store
//! (`chat`, `run`, later `serve`) listens on `<state dir>/admin.sock`
//! (owner-only, like the directory). A store command (`policy`, `trace`,
//! `report`, `review`, `status`, `store`) first tries to open the store
//! itself; when it is locked, it sends its command line to the socket and
//! the holder runs the very same code against its open store and sends
//! back what it printed and its exit code. The output is the same either
//! way because it is produced by the same function: each store command is
//! written as `exec(args, &Store, &mut Output)` and never prints directly.
//!
//! Protocol: one JSON line each way per connection.
//! Request `{"argv": [...], "cwd": "...", "author": "..."}`; reply
//! `{"stdout": "...", "stderr": "...", "code": N}`. Relative paths in the
//! arguments mean the client's directory (`Output::cwd`), and the author
//! of a policy change is the client's user, not the server's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use baton::store::{ADMIN_SOCKET, Store, StoreError, StoreSettings};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Cli;

/// Longest a client waits for a holder's socket to come up (it opens the
/// store a moment before it listens) and for its answer.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);
const ANSWER_PATIENCE: Duration = Duration::from_secs(120);

/// What a store command prints, and where it runs from.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The directory relative paths in the arguments are relative to.
    pub cwd: PathBuf,
    /// Who ran the command (for policy changes).
    pub author: String,
}

impl Output {
    pub fn local() -> Output {
        Output {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            author: author_from_env(),
            ..Output::default()
        }
    }

    /// `path` as the user meant it.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.cwd.join(path)
        }
    }

    pub fn print(self, code: ExitCode) -> anyhow::Result<ExitCode> {
        eprint!("{}", self.stderr);
        super::print_stdout(&self.stdout)?;
        Ok(code)
    }
}

/// `BATON_AUTHOR`, else the login name.
pub fn author_from_env() -> String {
    ["BATON_AUTHOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    argv: Vec<String>,
    cwd: PathBuf,
    author: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    stdout: String,
    stderr: String,
    code: u8,
}

/// The store settings of the config the command line names; the defaults
/// when there is no readable config (a store command must work without).
fn settings(cli: &Cli) -> StoreSettings {
    cli.config().map(|c| c.store).unwrap_or_default()
}

/// Runs a command that reads the store: against the store opened here, or
/// through the admin socket of the process holding it. A state directory
/// with no store yet is an error (reading must not create one).
pub fn with_store(
    cli: &Cli,
    exec: impl FnOnce(&Store, &mut Output) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let database = cli.state.join(baton::store::DATABASE_DIR);
    if !database.exists() {
        anyhow::bail!(
            "no store in {} yet: `ask`, `chat` and `run` create it (or point --state / BATON_STATE at another)",
            cli.state.display()
        );
    }
    with_store_creating(cli, exec)
}

/// As [`with_store`], creating the store if there is none (commands that
/// write: `policy apply`).
pub fn with_store_creating(
    cli: &Cli,
    exec: impl FnOnce(&Store, &mut Output) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    match Store::open(&cli.state, &settings(cli)) {
        Ok(store) => {
            let mut out = Output::local();
            let code = exec(&store, &mut out);
            // Whatever the command wrote is on disk before it exits.
            store.flush()?;
            match code {
                Ok(code) => out.print(code),
                Err(error) => {
                    // What it printed before failing still counts.
                    out.print(ExitCode::FAILURE)?;
                    Err(error)
                }
            }
        }
        Err(StoreError::Locked(_)) => remote(&cli.state),
        Err(error) => Err(error.into()),
    }
}

/// Sends this process's command line to the holder of the store.
fn remote(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let socket = state_dir.join(ADMIN_SOCKET);
    let request = Request {
        argv: portable_argv(std::env::args().collect()),
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        author: author_from_env(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reply = runtime.block_on(async {
        let started = tokio::time::Instant::now();
        let stream = loop {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < CONNECT_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "the store in {} is held by another process, and its admin socket {} does not answer",
                        state_dir.display(),
                        socket.display()
                    )));
                }
            }
        };
        tokio::time::timeout(ANSWER_PATIENCE, exchange(stream, &request))
            .await
            .context("the process holding the store did not answer in time")?
    })?;
    eprint!("{}", reply.stderr);
    super::print_stdout(&reply.stdout)?;
    Ok(ExitCode::from(reply.code))
}

/// The command line as the holder must read it: `--config` and `--state`
/// made absolute (the holder runs elsewhere), and the config that
/// `$BATON_CONFIG` names here passed as `--config` (the holder's
/// environment is not ours).
fn portable_argv(mut argv: Vec<String>) -> Vec<String> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let absolute = |path: &str| cwd.join(path).display().to_string();
    let mut has_config = false;
    let mut index = 1;
    while index < argv.len() {
        let arg = argv[index].clone();
        if arg == "--" {
            break;
        }
        for flag in ["--config", "--state"] {
            if arg == flag && index + 1 < argv.len() {
                argv[index + 1] = absolute(&argv[index + 1]);
                has_config |= flag == "--config";
                index += 1;
            } else if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
                argv[index] = format!("{flag}={}", absolute(value));
                has_config |= flag == "--config";
            }
        }
        index += 1;
    }
    if !has_config && let Some(path) = std::env::var_os("BATON_CONFIG").filter(|p| !p.is_empty()) {
        argv.insert(1, absolute(&path.to_string_lossy()));
        argv.insert(1, "--config".to_owned());
    }
    argv
}

async fn exchange(stream: tokio::net::UnixStream, request: &Request) -> anyhow::Result<Reply> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    serde_json::from_str(&answer).context("the admin socket sent an answer Baton cannot read")
}

/// The admin socket of a process that holds the store; removed on drop.
pub struct AdminServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts serving store commands on `<state_dir>/admin.sock`. A socket file
/// left by a killed process is replaced: holding the store proves it is
/// stale. Must be called inside a Tokio runtime.
pub fn serve(state_dir: &Path, store: Store) -> anyhow::Result<AdminServer> {
    let path = state_dir.join(ADMIN_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    restrict(&path)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, store).await {
                    tracing::debug!(%error, "admin connection ended early");
                }
            });
        }
    });
    Ok(AdminServer { path, task })
}

fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} owner-only", path.display()))
}

async fn answer(stream: tokio::net::UnixStream, store: Store) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request: Request = serde_json::from_str(&line)?;
    let reply = tokio::task::spawn_blocking(move || run_request(request, &store)).await?;
    let mut line = serde_json::to_vec(&reply)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    Ok(())
}

fn run_request(request: Request, store: &Store) -> Reply {
    let mut out = Output {
        cwd: request.cwd,
        author: request.author,
        ..Output::default()
    };
    let cli = match Cli::try_parse_from(&request.argv) {
        Ok(cli) => cli,
        Err(error) => {
            return Reply {
                stdout: String::new(),
                stderr: error.render().to_string(),
                code: 2,
            };
        }
    };
    let code = match super::store_exec(&cli, store, &mut out) {
        Some(Ok(code)) => exit_code_number(code),
        Some(Err(error)) => {
            out.stderr.push_str(&format!("error: {error:#}\n"));
            1
        }
        None => {
            out.stderr
                .push_str("error: this command does not run through the admin socket\n");
            2
        }
    };
    if let Err(error) = store.flush() {
        out.stderr.push_str(&format!("error: {error}\n"));
    }
    Reply {
        stdout: out.stdout,
        stderr: out.stderr,
        code,
    }
}

/// `ExitCode` hides its number; store commands only use these.
fn exit_code_number(code: ExitCode) -> u8 {
    if code == ExitCode::SUCCESS { 0 } else { 1 }
}
