//! `baton mock-provider --addr 127.0.0.1:PORT --script FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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

pub fn run(_cli: &Cli, _args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the mock provider is being built in issue 2/7")
}
