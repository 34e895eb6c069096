//! `baton serve`: the OpenAI-compatible gateway over every swarm and route
//! of the policy (see `baton::gateway`). It holds the store like `chat`
//! and `run` (journal, admin socket, recovery, the active policy followed)
//! and stops cleanly on Ctrl-C or SIGTERM: requests in progress finish,
//! then the actors stop and the store is flushed.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use baton::gateway::{self, Gateway, Limits};

use super::Cli;
use super::launch::launch_swarms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; loopback only (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// A swarm to serve as `swarm:NAME` (repeatable; default: every swarm
    /// of the active policy, or under ./agents/).
    #[arg(long = "swarm", value_name = "SWARM")]
    swarms: Vec<String>,
    /// Largest request body in bytes; larger ones get 413 unread.
    #[arg(long, default_value_t = Limits::default().body_limit)]
    body_limit: usize,
    /// Requests in progress at most; more get 503 with Retry-After.
    #[arg(long, default_value_t = Limits::default().max_in_flight)]
    max_in_flight: usize,
    /// How long the answer to an `Idempotency-Key` is replayed (e.g. `10m`).
    #[arg(long, default_value = "24h", value_parser = baton::config::duration::parse_duration)]
    idempotency_window: std::time::Duration,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    if !args.addr.ip().is_loopback() {
        anyhow::bail!(
            "--addr {}: baton serve binds loopback addresses only (127.0.0.1 or ::1); put a proxy in front to expose it",
            args.addr
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(cli, args))
}

async fn serve(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let running = launch_swarms(cli, &args.swarms).await?;
    let limits = Limits {
        body_limit: args.body_limit,
        max_in_flight: args.max_in_flight.max(1),
        idempotency_window: args.idempotency_window,
    };
    let gateway = Gateway::new(running.engines(), running.store(), limits)?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let swarms = running.engines().enter().engine.swarms();
    eprintln!(
        "baton serve: listening on http://{addr} (swarms: {}; POST /v1/chat/completions, GET /v1/models, /healthz, /readyz, /metrics)",
        if swarms.is_empty() {
            "none".to_owned()
        } else {
            swarms.join(", ")
        }
    );
    let served = gateway::serve(listener, gateway, shutdown_signal()).await;
    running.stop().await;
    served.context("the gateway stopped with an error")?;
    eprintln!("baton serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}
