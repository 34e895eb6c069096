//! Loading swarms from real files on disk.
//!
//! - shipped swarms and blueprints load clean;
//! - real-shaped Claude Code subagents and Cursor rules load unmodified,
//!   with the messy shapes found in public collections;
//! - every listed bad input gives an error naming file, line and field;
//! - memory imports behave as Claude Code's do.

use std::path::{Path, PathBuf};

use baton::config::{Config, DEFAULT_CONFIG};
use baton::diagnostic::Diagnostics;
use baton::swarm::{Capability, Role, RouteSource, RuleKind, Stakes};
use baton::template::{Loaded, TemplateError, blueprint, load_swarm};
use tempfile::TempDir;

const SUPERVISOR: &str = "---\nname: boss\ndescription: Routes requests.\nrole: supervisor\nroute: fast\n---\nDelegate.\n";

fn config() -> Config {
    Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).expect("shipped config parses")
}

/// A swarm directory with a supervisor plus `files` (path, bytes).
fn swarm_with(files: &[(&str, &[u8])]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "boss.md", SUPERVISOR.as_bytes());
    for (path, bytes) in files {
        write(dir.path(), path, bytes);
    }
    dir
}

fn write(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn load_ok(dir: &Path) -> Loaded {
    match load_swarm(dir, &config()) {
        Ok(loaded) => loaded,
        Err(error) => panic!("expected the swarm to load:\n{}", error.diagnostics()),
    }
}

fn load_err(dir: &Path) -> Diagnostics {
    match load_swarm(dir, &config()) {
        Ok(loaded) => panic!(
            "expected errors, loaded with warnings:\n{}",
            loaded.warnings
        ),
        Err(TemplateError::Invalid(d)) => d,
        Err(other) => panic!("{other}"),
    }
}

/// The error lines only, as `baton validate` prints them.
fn errors(diagnostics: &Diagnostics) -> Vec<String> {
    diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

fn one_error(dir: &TempDir) -> String {
    let errors = errors(&load_err(dir.path()));
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap()
}

fn at(dir: &TempDir, relative: &str) -> String {
    dir.path().join(relative).display().to_string()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/real")
            .join(name),
    )
    .unwrap()
}

// ---- shipped swarms and blueprints -------------------------------------

#[test]
fn support_bot_loads_with_its_workers_rules_and_high_stakes_refunds() {
    let loaded = load_ok(Path::new("agents/support-bot"));
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
    let swarm = &loaded.swarm;
    assert_eq!(swarm.supervisor().id.0, "supervisor");
    for worker in ["billing", "technical", "account", "refunds"] {
        let agent = swarm
            .agent(worker)
            .unwrap_or_else(|| panic!("worker {worker}"));
        assert_eq!(agent.role, Role::Worker);
        assert!(!agent.intents.is_empty());
        assert!(agent.examples.len() >= 100, "{worker} examples");
        assert!(agent.route.0 == "support", "{worker} route {}", agent.route);
    }
    assert_eq!(swarm.agent("refunds").unwrap().stakes, Stakes::High);
    let kinds: Vec<RuleKind> = swarm.rules.iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&RuleKind::Always));
    assert!(kinds.contains(&RuleKind::AutoAttached));
    assert!(kinds.contains(&RuleKind::AgentRequested));
    // The tone rule reaches everyone; the billing policy only billing and refunds.
    let rule_names = |agent: &str| -> Vec<String> {
        let spec = swarm.agent(agent).unwrap();
        spec.rules
            .iter()
            .map(|id| swarm.rule(*id).name.clone())
            .collect()
    };
    for agent in &swarm.agents {
        assert!(
            rule_names(&agent.id.0).contains(&"tone".to_owned()),
            "{}",
            agent.id
        );
    }
    assert!(rule_names("refunds").contains(&"billing-policy".to_owned()));
    assert!(!rule_names("technical").contains(&"billing-policy".to_owned()));
    assert!(!swarm.memory.files.is_empty());
    assert!(!swarm.knowledge.is_empty());
}

#[test]
fn knowledge_qa_loads_with_delegation_and_ten_knowledge_documents() {
    let loaded = load_ok(Path::new("agents/knowledge-qa"));
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
    let swarm = &loaded.swarm;
    let researcher = swarm.agent("researcher").expect("researcher");
    assert_eq!(researcher.delegates[0].0, "answerer");
    assert!(researcher.requires.contains(&Capability::LongContext));
    assert!(swarm.agent("answerer").is_some());
    assert!(swarm.knowledge.len() >= 10, "{}", swarm.knowledge.len());
}

#[test]
fn every_blueprint_scaffolds_a_swarm_that_validates_clean() {
    for name in blueprint::names() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join(name);
        let written = blueprint::scaffold(name, &target).unwrap();
        assert!(
            written.iter().any(|p| p.ends_with("CLAUDE.md")),
            "{name}: {written:?}"
        );
        let loaded = load_ok(&target);
        assert!(loaded.warnings.is_empty(), "{name}: {}", loaded.warnings);
    }
}

#[test]
fn scaffold_refuses_a_non_empty_directory_and_unknown_names() {
    let dir = swarm_with(&[]);
    let error = blueprint::scaffold("supervisor-worker", dir.path()).unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
    let error = blueprint::scaffold("nope", &dir.path().join("x")).unwrap_err();
    assert!(
        error.to_string().contains("available: incident-response"),
        "{error}"
    );
}

#[test]
fn template_inheritance_merges_fields_and_sections_with_the_agent_winning() {
    let dir = swarm_with(&[(
        "billing.md",
        b"---\nname: billing\ntemplate: supervisor-worker/worker\nintents: [invoice]\n---\n## Role\nYou handle invoices.\n\n## Refund window\nFourteen days.\n",
    )]);
    let loaded = load_ok(dir.path());
    let billing = loaded.swarm.agent("billing").unwrap();
    assert_eq!(billing.intents, ["invoice"], "the agent's own intents win");
    assert!(
        billing.description.contains("General-purpose worker"),
        "description inherited"
    );
    assert!(
        billing.prompt.starts_with("## Role\nYou handle invoices."),
        "{}",
        billing.prompt
    );
    assert!(
        billing.prompt.contains("## Boundaries"),
        "blueprint section kept"
    );
    assert!(
        billing.prompt.ends_with("## Refund window\nFourteen days."),
        "{}",
        billing.prompt
    );
    assert!(
        !billing.prompt.contains("You are a worker in this swarm"),
        "replaced section gone"
    );
}

#[test]
fn unknown_template_names_the_available_blueprints() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ntemplate: nosuch/worker\n---\nbody\n",
    )]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:3:11: error: field `template`: no blueprint `nosuch`",
            at(&dir, "a.md")
        )),
        "{error}"
    );
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ntemplate: supervisor-worker/ghost\n---\nbody\n",
    )]);
    let error = one_error(&dir);
    assert!(error.contains("no agent `supervisor-worker/ghost` in blueprint `supervisor-worker` (agents: supervisor, worker)"), "{error}");
}

// ---- real-shaped files from Claude Code and Cursor users ----------------

#[test]
fn real_claude_code_subagent_loads_unmodified() {
    let dir = swarm_with(&[("code-reviewer.md", &fixture("code-reviewer.md"))]);
    let loaded = load_ok(dir.path());
    let reviewer = loaded.swarm.agent("code-reviewer").expect("loaded");
    assert_eq!(
        reviewer.tools.as_deref().unwrap(),
        ["Read", "Grep", "Glob", "Bash"]
    );
    assert_eq!(reviewer.route.0, "sonnet");
    assert_eq!(reviewer.route_source, RouteSource::Model);
    assert!(
        reviewer
            .description
            .contains("user: \"I've added the payment webhook handler")
    );
    assert!(reviewer.description.contains("<commentary>"));
    assert_eq!(reviewer.extra["color"], "purple");
    assert!(reviewer.prompt.starts_with("You are a senior engineer"));
    // Read leniently: one warning for the description that is not valid YAML.
    assert_eq!(loaded.warnings.len(), 1, "{}", loaded.warnings);
    assert!(
        loaded
            .warnings
            .mentions(&dir.path().join("code-reviewer.md"), "field `description`")
    );
}

#[test]
fn escaped_newlines_yaml_list_tools_and_unknown_model_id() {
    let dir = swarm_with(&[("debugger.md", &fixture("debugger.md"))]);
    let loaded = load_ok(dir.path());
    let debugger = loaded.swarm.agent("debugger").unwrap();
    assert!(
        debugger.description.contains("behavior.\nUse proactively"),
        "{}",
        debugger.description
    );
    assert_eq!(debugger.tools.as_deref().unwrap(), ["Read", "Edit", "Bash"]);
    assert_eq!(debugger.route.0, "default");
    let warning = loaded
        .warnings
        .iter()
        .map(ToString::to_string)
        .find(|w| w.contains("field `model`"))
        .expect("a warning about the model");
    assert!(
        warning.contains(
            "debugger.md:8:8: warning: field `model`: `claude-sonnet-4-5-20250929` names no route"
        ),
        "{warning}"
    );
    assert!(warning.contains("the default route `default` serves this agent"));
}

#[test]
fn vs_code_agent_with_multi_line_flow_lists_and_a_model_list() {
    let dir = swarm_with(&[(
        "migration-lead.agent.md",
        &fixture("migration-lead.agent.md"),
    )]);
    let loaded = load_ok(dir.path());
    let lead = loaded.swarm.agent("migration-lead").unwrap();
    assert_eq!(
        lead.tools.as_deref().unwrap(),
        ["agent", "search/usages", "edit/editFiles"]
    );
    assert_eq!(lead.model, ["GPT-4.1", "haiku"]);
    assert_eq!(
        lead.route.0, "haiku",
        "the first listed model that names a route serves"
    );
    assert!(
        lead.extra["mcp-servers"]
            .as_str()
            .unwrap()
            .contains("'--rm'"),
        "kept as text"
    );
    let w = &loaded.warnings;
    assert!(
        w.mentions(
            &dir.path().join("migration-lead.agent.md"),
            "kept as text since Baton does not use this field"
        ),
        "{w}"
    );
    assert_eq!(w.error_count(), 0);
}

#[test]
fn real_cursor_rules_load_with_their_kinds() {
    let dir = swarm_with(&[
        ("rules/typescript.mdc", &fixture("typescript.mdc")),
        ("rules/.NET.mdc", &fixture(".NET.mdc")),
        (
            "rules/style.instructions.md",
            &fixture("style.instructions.md"),
        ),
        ("rules/plain-rule.md", &fixture("plain-rule.md")),
    ]);
    let loaded = load_ok(dir.path());
    let rule = |name: &str| {
        loaded
            .swarm
            .rules
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("rule {name}"))
    };
    let ts = rule("typescript");
    assert_eq!(ts.kind, RuleKind::AutoAttached);
    assert_eq!(ts.globs, ["**/*.ts", "**/*.tsx"]);
    assert!(ts.body.contains("@Component"));
    let dotnet = rule(".NET");
    assert_eq!(
        dotnet.kind,
        RuleKind::AgentRequested,
        "string \"true\" is not always"
    );
    assert_eq!(
        dotnet.description.as_deref(),
        Some("**Bold** claims about .NET style")
    );
    assert_eq!(dotnet.extra["priority"], 2);
    assert_eq!(rule("style.instructions").globs, ["**/*.py"]);
    assert_eq!(rule("plain-rule").kind, RuleKind::Manual);
    let w = &loaded.warnings;
    assert!(
        w.mentions(&dir.path().join("rules/.NET.mdc"), "field `alwaysApply`"),
        "{w}"
    );
    assert!(
        w.mentions(&dir.path().join("rules/plain-rule.md"), "no front matter"),
        "{w}"
    );
    assert!(
        w.mentions(&dir.path().join("rules/typescript.mdc"), "reaches no agent"),
        "{w}"
    );
}

#[test]
fn utf16_crlf_blank_line_before_front_matter_and_long_closing_dashes() {
    let text =
        "\r\n\r\n---\r\nname: helper\r\ndescription: Helps.\r\ntools: []\r\n-----\r\nYou help.\r\n";
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let dir = swarm_with(&[
        ("helper.md", &utf16),
        (
            "plain.md",
            b"---\nname: plain\ndescription: No tools field.\n---\nBody.\n",
        ),
    ]);
    let loaded = load_ok(dir.path());
    let helper = loaded.swarm.agent("helper").unwrap();
    assert_eq!(helper.tools.as_deref(), Some(&[][..]));
    assert_eq!(helper.prompt, "You help.");
    assert_eq!(loaded.swarm.agent("plain").unwrap().tools, None);
    assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
}

#[test]
fn block_scalars_numbers_and_nested_maps_among_extra_keys() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: >\n  Folded text\n  on two lines.\nversion: 3\nmeta:\n  owner: ops\n  limits: {rpm: 60}\n---\nBody.\n",
    )]);
    let loaded = load_ok(dir.path());
    let a = loaded.swarm.agent("a").unwrap();
    assert_eq!(a.description, "Folded text on two lines.");
    assert_eq!(a.extra["version"], 3);
    assert_eq!(a.extra["meta"]["limits"]["rpm"], 60);
    assert_eq!(
        loaded.warnings.warning_count(),
        2,
        "unknown fields warn: {}",
        loaded.warnings
    );
}

#[test]
fn model_inherit_takes_the_supervisors_route() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: d\nmodel: inherit\n---\nBody.\n",
    )]);
    let loaded = load_ok(dir.path());
    let a = loaded.swarm.agent("a").unwrap();
    assert_eq!(a.route.0, "fast");
    assert_eq!(a.route_source, RouteSource::Inherited);
}

// ---- bad input: each names file, line and field --------------------------

#[test]
fn unterminated_front_matter() {
    let dir = swarm_with(&[("a.md", b"---\nname: a\ndescription: d\nno closing line\n")]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:1:1: error: unterminated front matter",
            at(&dir, "a.md")
        )),
        "{error}"
    );
}

#[test]
fn yaml_syntax_error_in_a_structured_value() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: d\ntools: [Read, Grep\n---\nBody\n",
    )]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:4:19: error: field `tools`: YAML syntax error",
            at(&dir, "a.md")
        )),
        "{error}"
    );
}

#[test]
fn misspelt_role() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: d\nrole: superviser\n---\nBody\n",
    )]);
    assert_eq!(
        one_error(&dir),
        format!(
            "{}:4:7: error: field `role`: expected `supervisor` or `worker`, found `superviser`",
            at(&dir, "a.md")
        )
    );
}

#[test]
fn two_agents_with_the_same_name() {
    let dir = swarm_with(&[
        ("a.md", b"---\nname: helper\ndescription: d\n---\nBody\n"),
        ("b.md", b"---\ndescription: d\nname: helper\n---\nBody\n"),
    ]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:3:1: error: field `name`: agent name `helper` is already used by {}:2",
            at(&dir, "b.md"),
            at(&dir, "a.md")
        )),
        "{error}"
    );
}

#[test]
fn a_swarm_without_a_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.md",
        b"---\nname: a\ndescription: d\n---\nBody\n",
    );
    let error = one_error(&dir);
    assert_eq!(
        error,
        format!(
            "{}: error: no supervisor: exactly one agent needs `role: supervisor` (agents: a)",
            dir.path().display()
        )
    );
}

#[test]
fn a_swarm_with_two_supervisors() {
    let dir = swarm_with(&[(
        "zed.md",
        b"---\nname: zed\ndescription: d\nrole: supervisor\n---\nBody\n",
    )]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:4:7: error: field `role`: a second supervisor: `boss` ({}:4) already is one",
            at(&dir, "zed.md"),
            at(&dir, "boss.md")
        )),
        "{error}"
    );
}

#[test]
fn route_not_defined_in_the_config() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: d\nroute: turbo\n---\nBody\n",
    )]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:4:8: error: field `route`: no route `turbo` in baton.toml (routes: default, fast,",
            at(&dir, "a.md")
        )),
        "{error}"
    );
}

#[test]
fn stakes_maybe() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: d\nstakes: maybe\n---\nBody\n",
    )]);
    assert_eq!(
        one_error(&dir),
        format!(
            "{}:4:9: error: field `stakes`: expected `low` or `high`, found `maybe`",
            at(&dir, "a.md")
        )
    );
}

#[test]
fn glob_that_cannot_compile() {
    let dir = swarm_with(&[(
        "rules/r.mdc",
        b"---\ndescription: d\nglobs: \"billing[\"\nalwaysApply: false\n---\nBody\n",
    )]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:3:8: error: field `globs`: glob `billing[` does not compile",
            at(&dir, "rules/r.mdc")
        )),
        "{error}"
    );
}

#[test]
fn file_that_is_not_utf8() {
    let dir = swarm_with(&[("a.md", b"---\nname: a\ndescription: caf\xE9\n---\nBody\n")]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:3:17: error: file is not UTF-8: invalid byte 0xE9",
            at(&dir, "a.md")
        )),
        "{error}"
    );
}

#[test]
fn empty_body() {
    let dir = swarm_with(&[("a.md", b"---\nname: a\ndescription: d\n---\n\n  \n")]);
    assert_eq!(
        one_error(&dir),
        format!(
            "{}:5: error: empty body: the markdown after the front matter is the agent's system prompt",
            at(&dir, "a.md")
        )
    );
}

#[test]
fn unknown_delegate_and_bad_capability() {
    let dir = swarm_with(&[(
        "a.md",
        b"---\nname: a\ndescription: d\ndelegates: [ghost]\nrequires: [chat, telepathy]\n---\nBody\n",
    )]);
    let errors = errors(&load_err(dir.path()));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains(
            "a.md:4:12: error: field `delegates`: no worker `ghost` in this swarm (workers: a)"
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("a.md:5:11: error: field `requires`: expected capabilities from"),
        "{}",
        errors[1]
    );
    assert!(errors[1].ends_with("found `telepathy`"), "{}", errors[1]);
}

#[test]
fn output_schema_inline_and_by_path_are_checked_to_be_schemas() {
    let dir = swarm_with(&[
        ("good.md", b"---\nname: good\ndescription: d\noutput_schema: schemas/answer.json\n---\nBody\n"),
        ("inline.md", b"---\nname: inline\ndescription: d\noutput_schema:\n  type: object\n  required: [answer]\n---\nBody\n"),
        ("schemas/answer.json", br#"{"type": "object", "properties": {"answer": {"type": "string"}}}"#),
    ]);
    let loaded = load_ok(dir.path());
    assert_eq!(
        loaded
            .swarm
            .agent("good")
            .unwrap()
            .output_schema
            .as_ref()
            .unwrap()["type"],
        "object"
    );
    assert_eq!(
        loaded
            .swarm
            .agent("inline")
            .unwrap()
            .output_schema
            .as_ref()
            .unwrap()["required"][0],
        "answer"
    );

    let dir = swarm_with(&[
        (
            "bad.md",
            b"---\nname: bad\ndescription: d\noutput_schema:\n  type: 12\n---\nBody\n",
        ),
        (
            "missing.md",
            b"---\nname: missing\ndescription: d\noutput_schema: nowhere.json\n---\nBody\n",
        ),
    ]);
    let errors = errors(&load_err(dir.path()));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("bad.md:4:")
            && errors[0].contains("field `output_schema`: not a valid JSON Schema"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1]
            .contains("missing.md:4:16: error: field `output_schema`: cannot read schema file"),
        "{}",
        errors[1]
    );
}

#[test]
fn several_errors_in_several_files_are_all_reported() {
    let dir = swarm_with(&[
        (
            "a.md",
            b"---\nname: a\ndescription: d\nrole: superviser\nstakes: maybe\n---\nBody\n",
        ),
        ("b.md", b"---\nname: b\ndescription: d\nroute: turbo\n---\n"),
        ("rules/r.mdc", b"---\nglobs: \"[\"\n---\nx\n"),
    ]);
    let errors = errors(&load_err(dir.path()));
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

// ---- memory --------------------------------------------------------------

#[test]
fn claude_md_symlinked_to_agents_md_with_imports_and_code_annotations() {
    let dir = swarm_with(&[
        (
            "AGENTS.md",
            b"# Shared\nFollow @docs/voice.md and @~/.baton-test-nonexistent/personal.md.\n\n```java\n@Override\n@Deprecated\n```\n",
        ),
        ("docs/voice.md", b"Warm and brief. See @../glossary.md.\n"),
        ("glossary.md", b"SKU: stock keeping unit. Back to @docs/voice.md.\n"),
    ]);
    std::os::unix::fs::symlink("AGENTS.md", dir.path().join("CLAUDE.md")).unwrap();
    let loaded = load_ok(dir.path());
    let memory = &loaded.swarm.memory;
    let names: Vec<String> = memory
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["CLAUDE.md", "voice.md", "glossary.md"]);
    assert!(memory.text().contains("Warm and brief."));
    let w = &loaded.warnings;
    assert!(
        w.mentions(&dir.path().join("CLAUDE.md"), "a personal file, skipped"),
        "{w}"
    );
    assert!(
        w.mentions(
            &dir.path().join("glossary.md"),
            "import cycle: voice.md -> glossary.md -> voice.md"
        ),
        "{w}"
    );
    assert_eq!(w.len(), 2, "{w}");
}

#[test]
fn missing_import_is_an_error_at_its_line() {
    let dir = swarm_with(&[(
        "CLAUDE.md",
        b"# Memory\n\nRead @policies/refunds.md first.\n",
    )]);
    let error = one_error(&dir);
    assert!(
        error.starts_with(&format!(
            "{}:3:6: error: import `@policies/refunds.md`: file not found",
            at(&dir, "CLAUDE.md")
        )),
        "{error}"
    );
}

#[test]
fn memory_names_ignore_case_local_memory_follows_and_package_names_are_not_imports() {
    let dir = swarm_with(&[
        (
            "claude.md",
            b"We use @types/node and @tanstack/react-query.\n",
        ),
        (
            "CLAUDE.local.md",
            b"My sandbox URL is http://127.0.0.1:3000.\n",
        ),
    ]);
    let loaded = load_ok(dir.path());
    let names: Vec<String> = loaded
        .swarm
        .memory
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["claude.md", "CLAUDE.local.md"]);
    assert_eq!(loaded.warnings.warning_count(), 2, "{}", loaded.warnings);
    assert!(loaded.warnings.mentions(
        &dir.path().join("claude.md"),
        "not a file name, read as text"
    ));
}

#[test]
fn symlink_loops_under_rules_and_knowledge_are_read_once() {
    let dir = swarm_with(&[
        ("rules/tone.mdc", b"---\nalwaysApply: true\n---\nBe kind.\n"),
        ("knowledge/faq.md", b"# FAQ\nAnswers.\n"),
    ]);
    std::os::unix::fs::symlink(".", dir.path().join("rules/self")).unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("knowledge/up")).unwrap();
    let loaded = load_ok(dir.path());
    assert_eq!(loaded.swarm.rules.len(), 1);
    let boss = loaded.swarm.agent("boss").unwrap();
    assert_eq!(boss.rules.len(), 1, "the rule reaches once");
    assert!(
        loaded.swarm.knowledge.len() <= 3,
        "{:?}",
        loaded.swarm.knowledge
    );
}

#[test]
fn imports_stop_after_five_hops() {
    let mut files: Vec<(String, Vec<u8>)> = vec![("CLAUDE.md".into(), b"@m1.md\n".to_vec())];
    for i in 1..=6 {
        files.push((
            format!("m{i}.md"),
            format!("level {i} @m{}.md\n", i + 1).into_bytes(),
        ));
    }
    files.push(("m7.md".into(), b"level 7\n".to_vec()));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let dir = swarm_with(&refs);
    let loaded = load_ok(dir.path());
    assert_eq!(
        loaded.swarm.memory.files.len(),
        6,
        "CLAUDE.md and five hops"
    );
    assert!(
        loaded
            .warnings
            .mentions(&dir.path().join("m5.md"), "more than 5 hops"),
        "{}",
        loaded.warnings
    );
}
