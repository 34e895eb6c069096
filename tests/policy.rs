//! Versioned routing policies through the real binary, on real files in a
//! temporary directory:
//!
//! - apply, history, show, diff and rollback round-trip: a changed prompt
//!   line is exactly the diff, and a rollback is a new version whose files
//!   and hash are the old one's;
//! - a policy that does not load is refused with its file and line, and
//!   nothing is stored;
//! - a rollback made from another process reaches a running `baton chat`
//!   through its admin socket, and the chat's next request upstream (a
//!   loopback mock) carries the rolled-back system prompt, in the same
//!   session; a process that cannot open the store serves the newest
//!   version too;
//! - a question in flight during the switch is answered by the version it
//!   was asked under, whose engine stops only after it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use baton::provider::mock::{MockHandle, MockServer, Script};
use serde_json::Value;

mod common;

use common::Workdir;

/// The log's colours removed (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn mock() -> MockHandle {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml("", Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap()
}

/// One provider (the mock, or an unreachable address when none is given:
/// a policy is only stored, never called, in the round-trip tests).
fn config(upstream: Option<&MockHandle>) -> String {
    let base_url = upstream.map_or_else(
        || "http://127.0.0.1:9/v1".to_owned(),
        |u| format!("{}/v1", u.base_url()),
    );
    format!(
        "default_route = \"main\"\n\
         [defaults]\nretries = 0\nfirst_token_timeout = \"2s\"\nattempt_timeout = \"5s\"\ntotal_timeout = \"10s\"\n\
         [breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n\
         [providers.upstream]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{base_url}\"\n\
         capabilities = [\"chat\", \"tools\", \"json\", \"long-context\", \"streaming\"]\n\
         [routes.main]\nchain = [\"upstream\"]\n"
    )
}

const MEMORY: &str = "# Desk\n\nEvery answer is short.\nHouse marker: ALPHA.\nSign off politely.\n";

/// A small swarm under `agents/desk/` beside baton.toml.
fn write_swarm(scratch: &Workdir) {
    scratch.write("agents/desk/CLAUDE.md", MEMORY);
    scratch.write(
        "agents/desk/lead.md",
        "---\nname: lead\nrole: supervisor\ndescription: Front desk.\n---\nPick the specialist.\n",
    );
    scratch.write(
        "agents/desk/orders.md",
        "---\nname: orders\ndescription: Handles order and parcel questions.\nintents: [order, parcel]\n---\nAnswer order questions.\n",
    );
    scratch.write(
        "agents/desk/rules/tone.mdc",
        "---\ndescription: Tone\nalwaysApply: true\n---\nBe warm.\n",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_history_show_diff_and_rollback_round_trip() {
    let scratch = Workdir::new();
    scratch.write("baton.toml", &config(None));
    write_swarm(&scratch);

    let applied = scratch.ok(&["policy", "apply", "-m", "first"]).await;
    assert!(applied.starts_with("v1 is active"), "{applied}");
    assert!(applied.contains("swarms: desk"), "{applied}");

    scratch.write(
        "agents/desk/CLAUDE.md",
        &MEMORY.replace("House marker: ALPHA.", "House marker: BETA."),
    );
    let applied = scratch.ok(&["policy", "apply", "-m", "beta marker"]).await;
    assert!(applied.starts_with("v2 is active"), "{applied}");
    assert!(
        applied.contains("1 file(s) changed against v1 (+1 -1)"),
        "{applied}"
    );

    // The diff is exactly the changed line, with its context.
    let diff = scratch.ok(&["policy", "diff", "1", "2"]).await;
    assert_eq!(
        diff,
        "--- v1/agents/desk/CLAUDE.md\n+++ v2/agents/desk/CLAUDE.md\n@@ -1,5 +1,5 @@\n \
         # Desk\n \n Every answer is short.\n-House marker: ALPHA.\n+House marker: BETA.\n \
         Sign off politely.\n"
    );
    // Version 2 stored the same diff against its parent.
    let v2 = scratch.json(&["policy", "show", "v2", "--json"]).await;
    assert_eq!(v2["diff"], diff.as_str());
    assert_eq!(v2["parent"], 1);
    assert_eq!(v2["author"], "tester");
    assert_eq!(v2["message"], "beta marker");

    let rolled = scratch.ok(&["policy", "rollback", "1"]).await;
    assert!(
        rolled.starts_with("v3 is active: the files of v1 again"),
        "{rolled}"
    );

    let v1 = scratch.json(&["policy", "show", "1", "--json"]).await;
    let v3 = scratch.json(&["policy", "show", "3", "--json"]).await;
    assert_eq!(v3["files"], v1["files"]);
    assert_eq!(v3["hash"], v1["hash"]);
    assert_ne!(v3["hash"], v2["hash"]);
    assert_eq!(v3["rollback_of"], 1);
    assert_eq!(v3["parent"], 2);
    assert_eq!(v3["active"], true);
    assert_eq!(v1["active"], false);
    // Every file the swarm serves is in the version, with its content.
    let files: Vec<&str> = v1["files"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        files,
        [
            "agents/desk/CLAUDE.md",
            "agents/desk/lead.md",
            "agents/desk/orders.md",
            "agents/desk/rules/tone.mdc",
            "baton.toml",
        ]
    );
    assert_eq!(
        scratch
            .ok(&["policy", "show", "3", "--file", "agents/desk/CLAUDE.md"])
            .await,
        MEMORY
    );
    // The diff from v2 to the rollback undoes the change.
    let back = scratch.ok(&["policy", "diff", "2", "3"]).await;
    assert!(
        back.contains("-House marker: BETA.\n+House marker: ALPHA.\n"),
        "{back}"
    );

    let history = scratch.json(&["policy", "history", "--json"]).await;
    let rows: Vec<(u64, bool, Option<u64>, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["number"].as_u64().unwrap(),
                v["active"].as_bool().unwrap(),
                v["rollback_of"].as_u64(),
                v["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, false, None, "first"),
            (2, false, None, "beta marker"),
            (3, true, Some(1), "rollback to v1"),
        ]
    );
    let table = scratch.ok(&["policy", "history"]).await;
    assert!(table.lines().nth(2).unwrap().starts_with("* v3"), "{table}");

    // The files on disk are v2's: applying them again is a new version;
    // applying the active files again is not.
    let output = scratch.baton(&["policy", "rollback", "3"]).await;
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        "nothing changed since v3: v3's files are the active ones; no version made\n"
    );
    let output = scratch.baton(&["policy", "apply"]).await;
    assert!(text(&output.stdout).starts_with("v4 is active"));
    let output = scratch.baton(&["policy", "apply"]).await;
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        "nothing changed since v4; no version made\n"
    );

    // Unknown versions are clear errors.
    let output = scratch.baton(&["policy", "show", "9"]).await;
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("no policy version 9 (the store has v1 to v4)"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_does_not_load_is_refused_with_its_file_and_line() {
    let scratch = Workdir::new();
    let config_path = scratch.write(
        "baton.toml",
        &config(None).replace("chain = [\"upstream\"]", "chain = [\"nowhere\"]"),
    );
    write_swarm(&scratch);
    let output = scratch.baton(&["policy", "apply"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let line = config(None)
        .lines()
        .position(|l| l.starts_with("chain ="))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("{}:{line}:", config_path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(
        stderr.contains("policy not applied: 1 error(s)"),
        "{stderr}"
    );

    // A swarm error is named by its file and line as well.
    scratch.write("baton.toml", &config(None));
    let agent = scratch.write(
        "agents/desk/orders.md",
        "---\nname: orders\ndescription: Orders.\nroute: missing\n---\nAnswer.\n",
    );
    let output = scratch.baton(&["policy", "apply"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:4:", agent.display())),
        "{stderr}"
    );
    assert!(stderr.contains("no route `missing`"), "{stderr}");

    // Nothing was stored.
    let history = scratch.ok(&["policy", "history"]).await;
    assert!(
        history.starts_with("no policy has been applied"),
        "{history}"
    );
}

/// A running `baton chat`: its stdin, its answers, and its stderr lines
/// as they come.
struct Chat {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    answers: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Chat {
    fn start(scratch: &Workdir, swarm: &str) -> Chat {
        Chat::start_logging(scratch, swarm, "warn")
    }

    fn start_logging(scratch: &Workdir, swarm: &str, log: &str) -> Chat {
        let mut child = scratch
            .command(&["chat", swarm, "--json", "--session", "s1"])
            .env("BATON_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if sender.send(strip_ansi(&line)).is_err() {
                        return;
                    }
                }
            });
            receiver
        };
        let answers = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Chat {
            child,
            stdin,
            answers,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Asks one question and waits for its answer (as JSON).
    async fn ask(&mut self, question: &str) -> Value {
        self.send(question);
        self.answer()
    }

    fn send(&mut self, question: &str) {
        self.stdin
            .write_all(format!("{question}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for the next answer (as JSON).
    fn answer(&mut self) -> Value {
        let line =
            tokio::task::block_in_place(|| self.answers.recv_timeout(Duration::from_secs(30)));
        match line {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(_) => panic!("no answer within 30 s; stderr so far:\n{}", self.drain()),
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                self.seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("no `{needle}` on stderr within 30 s:\n{}", self.drain());
    }

    fn drain(&mut self) -> String {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    fn finish(mut self) -> String {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let stderr = {
            while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
            self.seen.join("\n")
        };
        assert!(status.success(), "chat failed:\n{stderr}");
        stderr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_from_another_process_is_visible_to_a_running_chat() {
    let upstream = mock().await;
    let scratch = Workdir::new();
    scratch.write("baton.toml", &config(Some(&upstream)));
    write_swarm(&scratch);
    scratch.ok(&["policy", "apply", "-m", "alpha"]).await;
    scratch.write(
        "agents/desk/CLAUDE.md",
        &MEMORY.replace("House marker: ALPHA.", "House marker: BETA."),
    );
    scratch.ok(&["policy", "apply", "-m", "beta"]).await;
    // The files on disk change again but are not applied: the store's
    // active version is what serves, not the files.
    scratch.write(
        "agents/desk/CLAUDE.md",
        &MEMORY.replace("House marker: ALPHA.", "House marker: GAMMA."),
    );

    let mut chat = Chat::start(&scratch, "desk");
    chat.wait_for("policy v2 serves");
    let first = chat.ask("Where is my parcel, order 1234?").await;
    assert_eq!(first["outcome"]["served_by"]["id"], "upstream", "{first}");
    let system = upstream.stats().last_system;
    assert!(system.contains("House marker: BETA."), "{system}");
    assert!(!system.contains("GAMMA"), "{system}");

    // Another process rolls back; the chat holds the store, so the command
    // runs inside it through its admin socket.
    let rolled = scratch
        .ok(&["policy", "rollback", "1", "-m", "beta was wrong"])
        .await;
    assert!(rolled.starts_with("v3 is active"), "{rolled}");
    chat.wait_for("policy v3 serves desk now (was v2)");

    let second = chat.ask("And my other parcel, order 5678?").await;
    assert_eq!(second["outcome"]["served_by"]["id"], "upstream", "{second}");
    let stats = upstream.stats();
    assert!(
        stats.last_system.contains("House marker: ALPHA."),
        "{}",
        stats.last_system
    );
    assert!(!stats.last_system.contains("BETA"), "{}", stats.last_system);
    // Same session across the switch: the first exchange was replayed.
    assert_eq!(stats.last_turns.len(), 3, "{:?}", stats.last_turns);
    assert!(
        stats.last_turns[0].contains("order 1234"),
        "{:?}",
        stats.last_turns
    );

    // A process that cannot open the store (the chat holds it) serves the
    // newest version as well.
    let asked = scratch
        .baton(&["ask", "desk", "Is order 42 on its way?"])
        .await;
    assert!(asked.status.success(), "{}", text(&asked.stderr));
    assert!(
        text(&asked.stderr).contains("policy v3 serves"),
        "{}",
        text(&asked.stderr)
    );
    let system = upstream.stats().last_system;
    assert!(system.contains("House marker: ALPHA."), "{system}");

    let history = scratch.json(&["policy", "history", "--json"]).await;
    assert_eq!(history[2]["message"], "beta was wrong");
    assert_eq!(history[2]["author"], "tester");
    chat.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_during_a_switch_finishes_on_the_old_version() {
    let upstream = mock().await;
    let scratch = Workdir::new();
    scratch.write(
        "baton.toml",
        &config(Some(&upstream))
            .replace(
                "first_token_timeout = \"2s\"",
                "first_token_timeout = \"15s\"",
            )
            .replace("attempt_timeout = \"5s\"", "attempt_timeout = \"20s\"")
            .replace("total_timeout = \"10s\"", "total_timeout = \"25s\""),
    );
    write_swarm(&scratch);
    scratch.ok(&["policy", "apply", "-m", "alpha"]).await;
    scratch.write(
        "agents/desk/CLAUDE.md",
        &MEMORY.replace("House marker: ALPHA.", "House marker: BETA."),
    );
    scratch.ok(&["policy", "apply", "-m", "beta"]).await;

    // Every answer takes 4 s to start: the switch happens while the first
    // question waits upstream.
    upstream.set_script(
        Script::from_toml("[server]\nlatency = \"4s\"\n", Path::new("t.toml")).unwrap(),
    );
    let mut chat = Chat::start_logging(&scratch, "desk", "baton=info");
    chat.wait_for("policy v2 serves");
    chat.send("Where is my parcel, order 1234?");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while upstream.stats().requests == 0 {
        assert!(std::time::Instant::now() < deadline, "no request upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scratch.ok(&["policy", "rollback", "1"]).await;
    chat.wait_for("policy v3 serves desk now (was v2)");
    assert!(
        chat.answers.try_recv().is_err(),
        "the first question was meant to be still waiting upstream at the switch"
    );

    // The old engine was not stopped under it: the answer arrives, made
    // with the prompt it was asked with; the old engine stops after it.
    let first = tokio::task::block_in_place(|| chat.answer());
    assert_eq!(first["outcome"]["served_by"]["id"], "upstream", "{first}");
    assert!(upstream.stats().last_system.contains("BETA"));
    chat.wait_for("the engine of an earlier policy version stopped");
    assert!(
        chat.seen.last().unwrap().contains("drained=true"),
        "{}",
        chat.seen.last().unwrap()
    );

    upstream.set_script(Script::from_toml("", Path::new("t.toml")).unwrap());
    let second = chat.ask("And order 5678?").await;
    assert_eq!(second["outcome"]["served_by"]["id"], "upstream", "{second}");
    let system = upstream.stats().last_system;
    assert!(system.contains("House marker: ALPHA."), "{system}");
    assert_eq!(upstream.stats().requests, 2);
    chat.finish();
}
