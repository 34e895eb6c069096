//! `baton mock-provider --addr 127.0.0.1:PORT --script FILE`: runs the
//! scripted-fault upstream until Ctrl-C.
//!
//! The first line on stdout is `listening on ADDR`, flushed at once, so a
//! parent process (a test, the demo) started with port 0 can read the real
//! port before it sends anything.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use baton::provider::mock::{MockServer, Script};

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// TOML fault script; without one the server answers every request.
    #[arg(long)]
    pub script: Option<PathBuf>,
}

pub fn run(_cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let script = match &args.script {
        Some(path) => Script::from_file(path)?,
        None => Script::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let handle = MockServer::start(args.addr, script).await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", handle.addr())?;
        stdout.flush()?;
        drop(stdout);
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        handle.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
