//! Cursor rule files (`rules/*.mdc`, and `.md` beside them), read unmodified.
//!
//! Cursor decides a rule's kind from three fields: `alwaysApply: true` is
//! always applied; otherwise `globs` attach it automatically; otherwise a
//! `description` lets the agent request it; with none of them it is manual.
//! Baton keeps those semantics with agents in the place of files: globs
//! match agent names and intents. Copilot's `applyTo` is read as `globs`.
//! Only the boolean `true` makes a rule always-applied, as in Cursor; the
//! string `"true"` is loaded with a warning saying so.

use std::path::Path;

use globset::Glob;
use serde_json::{Map, Value};

use super::fields::{self, warning_at};
use super::frontmatter;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::swarm::{RuleKind, RuleSpec};

/// Reads a rule from decoded text; `None` when its front matter is unusable.
pub fn read(path: &Path, text: &str, diagnostics: &mut Diagnostics) -> Option<RuleSpec> {
    let document = frontmatter::parse(text);
    fields::report_findings(path, &document.findings, diagnostics);
    if document.has_errors() && document.fields.is_empty() {
        return None;
    }
    let name = rule_name(path);
    let mut description = None;
    let mut globs = Vec::new();
    let mut always_apply = false;
    let mut extra = Map::new();
    for field in &document.fields {
        let outcome: Result<(), Diagnostic> = (|| {
            match field.key.as_str() {
                "description" => {
                    description = fields::text(path, field)?
                        .map(|d| d.trim().to_owned())
                        .filter(|d| !d.is_empty())
                }
                "globs" | "applyTo" => {
                    for glob in fields::list(path, field)? {
                        if let Err(e) = Glob::new(&glob) {
                            return Err(fields::error_at(
                                path,
                                field,
                                format!("glob `{glob}` does not compile: {}", e.kind()),
                            ));
                        }
                        globs.push(glob);
                    }
                }
                "alwaysApply" => match &field.value {
                    Value::Bool(b) => always_apply = *b,
                    Value::Null => {}
                    Value::String(s) if s.trim().eq_ignore_ascii_case("true") => {
                        diagnostics.push(warning_at(
                            path,
                            field,
                            "`\"true\"` is a string, not the boolean `true`: Cursor does not treat this rule as always applied, and neither does Baton; write `alwaysApply: true`",
                        ))
                    }
                    other => diagnostics.push(warning_at(
                        path,
                        field,
                        format!("expected `true` or `false`, found {}; read as `false`", fields::describe(other)),
                    )),
                },
                key => {
                    diagnostics.push(warning_at(
                        path,
                        field,
                        "unknown field kept as written; Baton does not use it",
                    ));
                    extra.insert(key.to_owned(), field.value.clone());
                }
            }
            Ok(())
        })();
        if let Err(d) = outcome {
            diagnostics.push(d);
        }
    }
    let kind = if always_apply {
        RuleKind::Always
    } else if !globs.is_empty() {
        RuleKind::AutoAttached
    } else if description.is_some() {
        RuleKind::AgentRequested
    } else {
        RuleKind::Manual
    };
    if !document.has_front_matter {
        diagnostics.push(
            Diagnostic::warning(
                path,
                "no front matter: a manual rule, as in Cursor; it reaches only agents that list it in `rules:`",
            )
            .at_line(1),
        );
    }
    if document.body.trim().is_empty() {
        diagnostics.push(
            Diagnostic::warning(path, "empty body: this rule adds nothing to any prompt")
                .at_line(document.body_line),
        );
    }
    Some(RuleSpec {
        name,
        description,
        globs,
        always_apply,
        kind,
        body: document.body.trim().to_owned(),
        extra,
        source: path.to_owned(),
    })
}

/// The file name without its last extension: `.NET.mdc` is `.NET`.
pub fn rule_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> (RuleSpec, Diagnostics) {
        let mut d = Diagnostics::new();
        let rule = read(Path::new("rules/r.mdc"), text, &mut d).expect("a rule");
        (rule, d)
    }

    #[test]
    fn the_four_kinds() {
        let always = rule("---\ndescription:\nglobs:\nalwaysApply: true\n---\nbe kind").0;
        let auto = rule("---\ndescription:\nglobs: billing,refunds\nalwaysApply: false\n---\nx").0;
        let requested =
            rule("---\ndescription: Use when angry\nglobs:\nalwaysApply: false\n---\nx").0;
        let manual = rule("just text").0;
        assert_eq!(always.kind, RuleKind::Always);
        assert_eq!(auto.kind, RuleKind::AutoAttached);
        assert_eq!(auto.globs, ["billing", "refunds"]);
        assert_eq!(requested.kind, RuleKind::AgentRequested);
        assert_eq!(manual.kind, RuleKind::Manual);
    }

    #[test]
    fn unquoted_star_globs_load() {
        let (r, d) = rule(
            "---\ndescription: TypeScript style\nglobs: **/*.ts\nalwaysApply: false\n---\nUse strict mode.",
        );
        assert_eq!(r.globs, ["**/*.ts"]);
        assert_eq!(d.error_count(), 0);
    }

    #[test]
    fn string_true_loads_with_a_warning_and_is_not_always() {
        let (r, d) = rule("---\ndescription: d\nalwaysApply: \"true\"\n---\nx");
        assert_eq!(r.kind, RuleKind::AgentRequested);
        let warning = d.iter().next().unwrap().to_string();
        assert!(
            warning.contains("r.mdc:3:14: warning: field `alwaysApply`"),
            "{warning}"
        );
    }

    #[test]
    fn glob_that_does_not_compile_is_an_error() {
        let mut d = Diagnostics::new();
        read(
            Path::new("rules/r.mdc"),
            "---\nglobs: \"a[b\"\n---\nx",
            &mut d,
        );
        let error = d
            .iter()
            .find(|d| d.is_error())
            .expect("an error")
            .to_string();
        assert!(
            error.starts_with("rules/r.mdc:2:8: error: field `globs`: glob `a[b` does not compile"),
            "{error}"
        );
    }

    #[test]
    fn dotted_names_keep_their_leading_dot() {
        assert_eq!(rule_name(Path::new("rules/.NET.mdc")), ".NET");
        assert_eq!(rule_name(Path::new("rules/tone.mdc")), "tone");
    }
}
