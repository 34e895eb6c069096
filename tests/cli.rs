//! The `baton` binary end to end: `validate`, `agents`, `init`, and config
//! discovery, run as a user runs them (a real process, real files).

use std::path::Path;
use std::process::{Command, Output};

fn baton(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BATON_CONFIG")
        .output()
        .expect("the baton binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_with_no_argument_checks_every_shipped_swarm() {
    let output = baton(&["validate"], repo());
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("ok: agents/knowledge-qa"), "{out}");
    assert!(out.contains("ok: agents/support-bot"), "{out}");
}

#[test]
fn validate_prints_compiler_style_errors_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boss.md"),
        "---\nname: boss\ndescription: d\nrole: supervisor\n---\nDelegate.\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.md"),
        "---\nname: a\ndescription: d\nstakes: maybe\nroute: turbo\n---\nBody\n",
    )
    .unwrap();
    let output = baton(&["validate", "."], dir.path());
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("./a.md:4:9: error: field `stakes`: expected `low` or `high`, found `maybe`"),
        "{out}"
    );
    assert!(
        out.contains("./a.md:5:8: error: field `route`: no route `turbo`"),
        "{out}"
    );
    assert!(out.contains("failed: .: 2 error(s), 0 warning(s)"), "{out}");
}

#[test]
fn init_scaffolds_a_blueprint_that_validates_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let output = baton(
        &["init", "oncall", "--template", "incident-response"],
        dir.path(),
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("validates clean"), "{out}");

    let output = baton(&["agents", "oncall"], dir.path());
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("supervisor\n  commander"), "{out}");
    assert!(out.contains("remediation"), "{out}");

    let again = baton(&["init", "oncall"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn agents_finds_a_swarm_by_name_and_shows_rule_reach() {
    let output = baton(&["agents", "support-bot"], repo());
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("billing-policy     globs billing,refunds -> billing, refunds"),
        "{out}"
    );
    assert!(out.contains("on request: escalation"), "{out}");

    let json = baton(&["agents", "support-bot", "--json"], repo());
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(parsed["name"], "support-bot");
    assert!(parsed["agents"].as_array().unwrap().len() >= 5);
}

#[test]
fn a_broken_config_is_reported_with_its_line_before_any_swarm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "default_route = \"main\"\n[routes.main]\nchain = [\"ghost\"]\n",
    )
    .unwrap();
    let output = baton(
        &[
            "validate",
            "--config",
            config.to_str().unwrap(),
            "agents/support-bot",
        ],
        repo(),
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("broken.toml:3:10: error: field `chain`: route `main`: no provider `ghost`"),
        "{out}"
    );
}

#[test]
fn config_comes_from_baton_config_when_no_flag_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("only-default.toml");
    std::fs::write(
        &config,
        "default_route = \"main\"\n[providers.local]\nkind = \"extractive\"\n[routes.main]\nchain = [\"local\"]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["validate", "agents/support-bot"])
        .current_dir(repo())
        .env("BATON_CONFIG", &config)
        .output()
        .unwrap();
    let out = stdout(&output);
    // The shipped swarm names routes this config lacks.
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("no route `support` in"), "{out}");
    assert!(out.contains("only-default.toml"), "{out}");
}
