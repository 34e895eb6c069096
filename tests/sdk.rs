//! The official OpenAI and Anthropic Python SDKs call the mock provider
//! (`tests/sdk/check_sdks.py`): proof that its wire format is the real one,
//! not merely one Baton's own clients agree with.
//!
//! Needs `.venv-sdk/` (run `scripts/setup-sdk-venv.sh` once). Without it the
//! test fails rather than passing silently.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton::provider::mock::{MockServer, Script};

/// The SDKs' checks take about a second; this bounds a wedged interpreter.
const SDK_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_parse_plain_and_streamed_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-sdk/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup-sdk-venv.sh to install the openai and anthropic SDKs",
        python.display()
    );
    let script = Script::from_toml("[server]\nanswer_tokens = 6\n", Path::new("sdk.toml")).unwrap();
    let mock = MockServer::start("127.0.0.1:0".parse().unwrap(), script)
        .await
        .expect("the mock starts");
    let base_url = mock.base_url();
    let checker = root.join("tests/sdk/check_sdks.py");
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(checker)
            .arg("--base-url")
            .arg(base_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the venv's python starts");
        let deadline = Instant::now() + SDK_DEADLINE;
        loop {
            if child.try_wait().expect("the child can be polled").is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
            .wait_with_output()
            .expect("the child's output can be read")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the SDK checks failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("openai") && stdout.contains("anthropic") && stdout.contains("errors: ok"),
        "{stdout}"
    );
    let stats = mock.stats();
    assert!(stats.by_outcome["ok"] >= 12, "{stats:?}");
    assert_eq!(stats.by_outcome["status"], 2, "{stats:?}");
    mock.shutdown().await;
}
