//! Agent files: Claude Code subagent front matter plus Baton's fields.
//!
//! A file is read into an [`AgentDraft`]: every field optional, as written,
//! with its position. Drafts are merged with their blueprint (`template:`)
//! before the swarm-level checks (names, routes, delegates) turn them into
//! [`crate::swarm::AgentSpec`]s. Claude Code's own fields that Baton does not
//! use (`color`, `permissionMode`, ...) are kept quietly; anything else
//! unknown is kept with a warning.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::fields::{self, Located, error_at, located, warning_at};
use super::frontmatter::{self, Document};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::swarm::{Capability, Handoff, Role, Stakes};

/// Fields kept quietly in `extra`: Claude Code's that Baton does not use,
/// and Baton's own that are read where they are used.
const CLAUDE_CODE_FIELDS: &[&str] = &[
    // Baton's own, read where it is used (the supervisor's classifier).
    "default_worker",
    "color",
    "permissionMode",
    "disallowedTools",
    "skills",
    "hooks",
    "mcpServers",
    "maxTurns",
    "memory",
];

/// An agent file as written, before inheritance and swarm-level checks.
#[derive(Debug, Clone, Default)]
pub struct AgentDraft {
    pub path: PathBuf,
    pub name: Option<Located<String>>,
    pub description: Option<String>,
    pub role: Option<Located<Role>>,
    pub tools: Option<Vec<String>>,
    /// Claude Code's `model` (one), or VS Code's list of models in order.
    pub model: Option<Located<Vec<String>>>,
    pub route: Option<Located<String>>,
    pub intents: Option<Vec<String>>,
    pub examples: Option<Vec<String>>,
    pub requires: Option<Vec<Capability>>,
    pub stakes: Option<Stakes>,
    pub template: Option<Located<String>>,
    pub output_schema: Option<Value>,
    pub delegates: Option<Vec<Located<String>>>,
    pub handoff: Option<Handoff>,
    pub rules: Option<Vec<Located<String>>>,
    pub extra: Map<String, Value>,
    pub body: String,
    pub body_line: usize,
}

/// Reads an agent from decoded text. Returns `None` when the file is not an
/// agent at all (no front matter) or its front matter is unreadable; the
/// reasons are in `diagnostics`.
pub fn read(path: &Path, text: &str, diagnostics: &mut Diagnostics) -> Option<AgentDraft> {
    let document = frontmatter::parse(text);
    fields::report_findings(path, &document.findings, diagnostics);
    if !document.has_front_matter {
        diagnostics.push(
            Diagnostic::warning(
                path,
                "no front matter: not read as an agent (an agent file starts with `---`, `name:`, `description:`); skipped",
            )
            .at_line(1),
        );
        return None;
    }
    if document.has_errors() && document.fields.is_empty() {
        return None;
    }
    Some(interpret(path, document, diagnostics))
}

fn interpret(path: &Path, document: Document, diagnostics: &mut Diagnostics) -> AgentDraft {
    let mut draft = AgentDraft {
        path: path.to_owned(),
        body: document.body,
        body_line: document.body_line,
        ..AgentDraft::default()
    };
    for field in &document.fields {
        let outcome: Result<(), Diagnostic> = (|| {
            match field.key.as_str() {
                "name" => {
                    draft.name =
                        fields::text(path, field)?.map(|n| located(field, n.trim().to_owned()))
                }
                "description" => {
                    draft.description =
                        fields::text(path, field)?.map(|d| unescape_newlines(&d, field.plain))
                }
                "role" => {
                    draft.role = fields::one_of(
                        path,
                        field,
                        &[("supervisor", Role::Supervisor), ("worker", Role::Worker)],
                    )?
                    .map(|r| located(field, r))
                }
                "tools" => draft.tools = Some(fields::list(path, field)?),
                "model" => {
                    let models = fields::list(path, field)?;
                    draft.model = (!models.is_empty()).then(|| located(field, models));
                }
                "route" => {
                    draft.route =
                        fields::text(path, field)?.map(|r| located(field, r.trim().to_owned()))
                }
                "intents" => {
                    draft.intents = Some(
                        fields::list(path, field)?
                            .into_iter()
                            .map(|i| i.to_lowercase())
                            .collect(),
                    )
                }
                "examples" => draft.examples = Some(fields::text_list(path, field)?),
                "requires" => draft.requires = Some(capabilities(path, field)?),
                "stakes" => {
                    draft.stakes = fields::one_of(
                        path,
                        field,
                        &[("low", Stakes::Low), ("high", Stakes::High)],
                    )?
                }
                "handoff" => {
                    draft.handoff = fields::one_of(
                        path,
                        field,
                        &[
                            ("when-asked", Handoff::WhenAsked),
                            ("always", Handoff::Always),
                        ],
                    )?
                }
                "template" => draft.template = template_ref(path, field)?,
                "output_schema" => draft.output_schema = Some(output_schema(path, field)?),
                "delegates" => {
                    draft.delegates = Some(
                        fields::list(path, field)?
                            .into_iter()
                            .map(|d| located(field, d))
                            .collect(),
                    )
                }
                "rules" => {
                    draft.rules = Some(
                        fields::list(path, field)?
                            .into_iter()
                            .map(|r| located(field, r))
                            .collect(),
                    )
                }
                key => {
                    if !CLAUDE_CODE_FIELDS.contains(&key) {
                        diagnostics.push(warning_at(
                            path,
                            field,
                            "unknown field kept as written; Baton does not use it",
                        ));
                    }
                    draft.extra.insert(key.to_owned(), field.value.clone());
                }
            }
            Ok(())
        })();
        if let Err(d) = outcome {
            diagnostics.push(d);
        }
    }
    draft
}

/// Claude Code descriptions are often written by tools as one plain line
/// with `\n` escapes; in a plain scalar those are a literal backslash-n, but
/// the author meant line breaks.
fn unescape_newlines(text: &str, plain: bool) -> String {
    if plain && !text.contains('\n') && text.contains("\\n") {
        text.replace("\\n", "\n")
    } else {
        text.to_owned()
    }
}

fn capabilities(path: &Path, field: &frontmatter::Field) -> Result<Vec<Capability>, Diagnostic> {
    let mut out = Vec::new();
    for word in fields::list(path, field)? {
        match Capability::parse(&word.to_lowercase()) {
            Some(c) => out.push(c),
            None => {
                let names: Vec<String> = Capability::ALL.iter().map(|c| format!("`{c}`")).collect();
                return Err(error_at(
                    path,
                    field,
                    format!(
                        "expected capabilities from {}, found `{word}`",
                        fields::join_or(&names)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn template_ref(
    path: &Path,
    field: &frontmatter::Field,
) -> Result<Option<Located<String>>, Diagnostic> {
    let Some(spec) = fields::text(path, field)? else {
        return Ok(None);
    };
    let spec = spec.trim();
    match spec.split_once('/') {
        Some((blueprint, agent))
            if !blueprint.is_empty() && !agent.is_empty() && !agent.contains('/') =>
        {
            Ok(Some(located(field, spec.to_owned())))
        }
        _ => Err(error_at(
            path,
            field,
            format!(
                "expected `<blueprint>/<agent>` (e.g. `supervisor-worker/worker`), found `{spec}`"
            ),
        )),
    }
}

/// An inline JSON Schema, or a path (relative to the agent file) to a JSON
/// file holding one; either way it must compile as a schema.
fn output_schema(path: &Path, field: &frontmatter::Field) -> Result<Value, Diagnostic> {
    let schema = match &field.value {
        Value::String(relative) => {
            let schema_path = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(relative.trim());
            let text = std::fs::read_to_string(&schema_path).map_err(|e| {
                error_at(
                    path,
                    field,
                    format!("cannot read schema file {}: {e}", schema_path.display()),
                )
            })?;
            serde_json::from_str(&text).map_err(|e| {
                error_at(
                    path,
                    field,
                    format!(
                        "schema file {} is not JSON: {e} (line {}, column {})",
                        schema_path.display(),
                        e.line(),
                        e.column()
                    ),
                )
            })?
        }
        Value::Object(_) | Value::Bool(_) => field.value.clone(),
        other => {
            return Err(error_at(
                path,
                field,
                format!(
                    "expected a JSON Schema (a mapping) or a path to a schema file, found {}",
                    fields::describe(other)
                ),
            ));
        }
    };
    jsonschema::validator_for(&schema)
        .map_err(|e| error_at(path, field, format!("not a valid JSON Schema: {e}")))?;
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ok(text: &str) -> (AgentDraft, Diagnostics) {
        let mut d = Diagnostics::new();
        let draft = read(Path::new("a.md"), text, &mut d).expect("an agent");
        (draft, d)
    }

    #[test]
    fn claude_code_fields_are_read_and_kept() {
        let (draft, d) = read_ok(
            "---\nname: code-reviewer\ndescription: Reviews code.\\nUse after edits.\ntools: Read, Grep, Glob\nmodel: sonnet\ncolor: blue\n---\nYou review code.\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(draft.name.unwrap().value, "code-reviewer");
        assert_eq!(
            draft.description.as_deref(),
            Some("Reviews code.\nUse after edits.")
        );
        assert_eq!(draft.tools.unwrap(), ["Read", "Grep", "Glob"]);
        assert_eq!(draft.model.unwrap().value, ["sonnet"]);
        assert_eq!(draft.extra["color"], "blue");
    }

    #[test]
    fn misspelt_role_names_line_field_and_choices() {
        let mut d = Diagnostics::new();
        read(
            Path::new("a.md"),
            "---\nname: a\nrole: superviser\n---\nbody",
            &mut d,
        );
        assert_eq!(
            d.iter().next().unwrap().to_string(),
            "a.md:3:7: error: field `role`: expected `supervisor` or `worker`, found `superviser`"
        );
    }

    #[test]
    fn invalid_inline_schema_is_an_error() {
        let mut d = Diagnostics::new();
        read(
            Path::new("a.md"),
            "---\nname: a\noutput_schema:\n  type: strng\n---\nbody",
            &mut d,
        );
        let message = d.iter().next().expect("an error").to_string();
        assert!(message.starts_with("a.md:3:"), "{message}");
        assert!(
            message.contains("field `output_schema`: not a valid JSON Schema"),
            "{message}"
        );
    }

    #[test]
    fn examples_keep_their_commas_and_must_be_text() {
        let (draft, d) = read_ok(
            "---\nname: billing\nexamples:\n  - \"Hi, where is my invoice?\"\n  - Can I pay by SEPA\n---\nbody",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            draft.examples.unwrap(),
            ["Hi, where is my invoice?", "Can I pay by SEPA"]
        );
        let mut d = Diagnostics::new();
        read(
            Path::new("a.md"),
            "---\nname: a\nexamples:\n  - q: nested\n---\nbody",
            &mut d,
        );
        assert_eq!(
            d.iter().next().expect("an error").to_string(),
            "a.md:3:10: error: field `examples`: expected a list of text items, found a mapping in it"
        );
    }

    #[test]
    fn unknown_fields_warn_and_are_kept() {
        let (draft, d) = read_ok("---\nname: a\npriority: 3\nmeta:\n  owner: ops\n---\nbody");
        assert_eq!(d.warning_count(), 2);
        assert_eq!(draft.extra["priority"], 3);
        assert_eq!(draft.extra["meta"]["owner"], "ops");
    }
}
