//! What several test binaries share: `baton serve` as a child process on a
//! free port, over a config written to a temporary directory.

// Each test binary uses part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Serve {
    /// Writes `config` to a temporary `baton.toml` (and `files` beside it)
    /// and starts `baton serve` on it.
    pub fn start(config: &str, files: &[(&str, &str)], args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("baton.toml"), config).unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let (child, port) = spawn(dir.path(), args);
        Serve {
            child,
            port,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// SIGKILLs the server and starts another on the same config and
    /// store (on a new port).
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (child, port) = spawn(self.dir.path(), &args);
        self.child = child;
        self.port = port;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `baton trace ID --json` against the store this server holds.
    pub fn trace(&self, id: &str) -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("--state")
            .arg(self.state())
            .args(["trace", id, "--json"])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let value: Value = serde_json::from_slice(&output.stdout).unwrap();
        match value {
            Value::Array(mut items) => items.remove(0),
            other => other,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `baton serve` over `dir/baton.toml` and `dir/state`; returns its port.
fn spawn(dir: &Path, args: &[&str]) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("--config")
        .arg(dir.join("baton.toml"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STATE")
        .env_remove("BATON_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Keeps reading stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("baton serve did not start:\n{}", seen.join("\n")));
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap();
        }
        seen.push(line);
    };
    (child, port)
}

/// Opens the store at `state` as the next process would, waiting out the
/// lock a killed process leaves for a moment.
pub fn open_store(state: &Path) -> Result<baton::store::Store, baton::store::StoreError> {
    let started = std::time::Instant::now();
    loop {
        match baton::store::Store::open(state, &baton::store::StoreSettings::default()) {
            Err(baton::store::StoreError::Locked(_))
                if started.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}
