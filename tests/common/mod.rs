//! What several test binaries share: `baton serve` as a child process on a
//! free port, over a config written to a temporary directory.

// Each test binary uses part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("--config")
            .arg(dir.path().join("baton.toml"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir.path())
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
        Serve { child, port, dir }
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
