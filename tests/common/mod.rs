//! What several test binaries share: a test's own directory ([`Workdir`])
//! for running the binary on real files, and `baton serve` as a child
//! process on a free port over it ([`Serve`]).

// Each test binary uses part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A test's directory: `baton.toml`, the state directory `state/`, and
/// whatever else the test writes. Removed when dropped.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A directory whose `baton.toml` is `config`.
    pub fn with_config(config: &str) -> Workdir {
        let workdir = Workdir::new();
        workdir.write("baton.toml", config);
        workdir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` (creating its directories); its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `baton --config baton.toml --state state ARGS...` in this directory,
    /// untouched by the environment the tests run in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .arg("--config")
            .arg(self.path("baton.toml"))
            .arg("--state")
            .arg(self.path("state"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("BATON_CONFIG")
            .env_remove("BATON_STATE")
            .env_remove("BATON_LOG")
            .env("BATON_AUTHOR", "tester");
        command
    }

    /// Runs baton to completion, off the async runtime so that in-process
    /// mocks keep serving.
    pub async fn baton(&self, args: &[&str]) -> Output {
        self.baton_with_input(args, None).await
    }

    /// [`Workdir::baton`] with `stdin` piped in, then closed (the end of
    /// input for `chat`).
    pub async fn baton_with_input(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.command(args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("the baton binary runs");
            let mut pipe = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).unwrap();
            }
            drop(pipe);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    /// `baton ARGS`, which must succeed; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.baton(args).await;
        assert!(
            output.status.success(),
            "baton {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `baton ARGS`, which must succeed and print JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
    }

    /// Starts `baton serve` over this directory's config and store.
    pub fn serve(self, args: &[&str]) -> Serve {
        let (child, port) = spawn(&self, args);
        Serve {
            child,
            port,
            workdir: self,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub workdir: Workdir,
    args: Vec<String>,
}

impl Serve {
    /// Writes `config` to a temporary `baton.toml` (and `files` beside it)
    /// and starts `baton serve` on it.
    pub fn start(config: &str, files: &[(&str, &str)], args: &[&str]) -> Serve {
        let workdir = Workdir::with_config(config);
        for (name, text) in files {
            workdir.write(name, text);
        }
        workdir.serve(args)
    }

    /// SIGKILLs the server and starts another on the same config and
    /// store (on a new port).
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (child, port) = spawn(&self.workdir, &args);
        self.child = child;
        self.port = port;
    }

    /// Stops like Ctrl-C would (SIGTERM: requests finish, the store is
    /// flushed); the directory stays for the next process.
    pub fn stop(mut self) -> Workdir {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "baton serve stopped with {status}");
        // Drop (which kills) cannot give up a field: swap in an empty one.
        std::mem::replace(&mut self.workdir, Workdir::new())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn state(&self) -> PathBuf {
        self.workdir.path("state")
    }

    /// `baton trace ID --json` against the store this server holds.
    pub fn trace(&self, id: &str) -> Value {
        let output = self
            .workdir
            .command(&["trace", id, "--json"])
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

/// `baton serve` over the directory's config and store; returns its port.
fn spawn(workdir: &Workdir, args: &[&str]) -> (Child, u16) {
    let mut serve = vec!["serve", "--addr", "127.0.0.1:0"];
    serve.extend_from_slice(args);
    let mut child = workdir
        .command(&serve)
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
