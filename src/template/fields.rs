//! Reading typed values out of front-matter fields, with diagnostics that
//! point at the field. Shared by agent and rule files.

use std::path::Path;

use serde_json::Value;

use super::frontmatter::{Field, Finding};
use crate::diagnostic::{Diagnostic, Diagnostics};

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
    pub column: usize,
}

impl<T> Located<T> {
    pub fn error(&self, path: &Path, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(path, message)
            .at(self.line, self.column)
            .field(field)
    }
}

/// Turns the front-matter reader's findings into diagnostics for `path`.
pub fn report_findings(path: &Path, findings: &[Finding], diagnostics: &mut Diagnostics) {
    for finding in findings {
        let mut d = if finding.error {
            Diagnostic::error(path, &finding.message)
        } else {
            Diagnostic::warning(path, &finding.message)
        }
        .at(finding.line, finding.column);
        if let Some(field) = &finding.field {
            d = d.field(field);
        }
        diagnostics.push(d);
    }
}

pub fn error_at(path: &Path, field: &Field, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(path, message)
        .at(field.line, field.value_column)
        .field(&field.key)
}

pub fn warning_at(path: &Path, field: &Field, message: impl Into<String>) -> Diagnostic {
    Diagnostic::warning(path, message)
        .at(field.line, field.value_column)
        .field(&field.key)
}

pub fn located<T>(field: &Field, value: T) -> Located<T> {
    Located {
        value,
        line: field.line,
        column: field.value_column,
    }
}

/// What a JSON value is, for "found ..." in messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("`{}`", short(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn short(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// A scalar as text: strings as they are, numbers and booleans spelled out
/// (a YAML `name: 2024` is still a name). `None` for null; an error for lists
/// and mappings.
pub fn text(path: &Path, field: &Field) -> Result<Option<String>, Diagnostic> {
    match &field.value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(error_at(
            path,
            field,
            format!("expected text, found {}", describe(other)),
        )),
    }
}

/// A list written either as a YAML list or as one comma-separated string
/// (Claude Code's `tools: Read, Grep`, Cursor's `globs: a,b`). Null and the
/// empty string are the empty list.
pub fn list(path: &Path, field: &Field) -> Result<Vec<String>, Diagnostic> {
    match &field.value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(split_commas(s)),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.extend(split_commas(s)),
                    Value::Number(n) => out.push(n.to_string()),
                    Value::Bool(b) => out.push(b.to_string()),
                    Value::Null => {}
                    other => {
                        return Err(error_at(
                            path,
                            field,
                            format!(
                                "expected a list of text items, found {} in it",
                                describe(other)
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(error_at(
            path,
            field,
            format!(
                "expected a list or a comma-separated string, found {}",
                describe(other)
            ),
        )),
    }
}

/// A list of prose items, each kept whole: unlike [`list`], commas belong
/// to the text (an example request is a sentence). One string is a list of
/// one; null is the empty list; blank items are dropped.
pub fn text_list(path: &Path, field: &Field) -> Result<Vec<String>, Diagnostic> {
    let items = match &field.value {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        single => std::slice::from_ref(single),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = match item {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            other => {
                return Err(error_at(
                    path,
                    field,
                    format!(
                        "expected a list of text items, found {} in it",
                        describe(other)
                    ),
                ));
            }
        };
        if !text.is_empty() {
            out.push(text);
        }
    }
    Ok(out)
}

/// Splits at commas outside braces and parentheses, so that a glob such as
/// `**/*.{ts,tsx}` and a tool such as `Bash(git add:*, git commit:*)` stay
/// whole.
fn split_commas(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One of a fixed set of words; the message lists them.
pub fn one_of<T: Copy>(
    path: &Path,
    field: &Field,
    choices: &[(&str, T)],
) -> Result<Option<T>, Diagnostic> {
    let Some(word) = text(path, field)? else {
        return Ok(None);
    };
    let wanted = word.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        .map(|(_, value)| Some(*value))
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("`{n}`")).collect();
            error_at(
                path,
                field,
                format!("expected {}, found `{wanted}`", join_or(&names)),
            )
        })
}

/// `a`, `a or b`, `a, b or c`.
pub fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: Value) -> Field {
        Field {
            key: "tools".into(),
            line: 3,
            value_column: 8,
            value,
            lenient: false,
            plain: false,
        }
    }

    #[test]
    fn lists_accept_comma_strings_yaml_lists_and_empty() {
        let p = Path::new("a.md");
        assert_eq!(
            list(p, &field("Read, Grep".into())).unwrap(),
            ["Read", "Grep"]
        );
        assert_eq!(
            list(p, &field(serde_json::json!(["Read", "Grep"]))).unwrap(),
            ["Read", "Grep"]
        );
        assert!(list(p, &field(serde_json::json!([]))).unwrap().is_empty());
        assert!(list(p, &field(Value::Null)).unwrap().is_empty());
        assert_eq!(
            list(p, &field("**/*.{ts,tsx}, docs/*.md".into())).unwrap(),
            ["**/*.{ts,tsx}", "docs/*.md"]
        );
        assert_eq!(
            list(p, &field("Read, Bash(git add:*, git commit:*)".into())).unwrap(),
            ["Read", "Bash(git add:*, git commit:*)"]
        );
    }

    #[test]
    fn text_lists_keep_commas_inside_items() {
        let p = Path::new("a.md");
        assert_eq!(
            text_list(
                p,
                &field(serde_json::json!(["Hi, I was charged twice", " ", "2"]))
            )
            .unwrap(),
            ["Hi, I was charged twice", "2"]
        );
        assert_eq!(
            text_list(p, &field("Where is my invoice, please?".into())).unwrap(),
            ["Where is my invoice, please?"]
        );
        assert!(text_list(p, &field(Value::Null)).unwrap().is_empty());
        let error = text_list(p, &field(serde_json::json!([{"q": "a"}]))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a.md:3:8: error: field `tools`: expected a list of text items, found a mapping in it"
        );
    }

    #[test]
    fn one_of_names_the_choices() {
        let error = one_of(
            Path::new("a.md"),
            &field("maybe".into()),
            &[("low", 0), ("high", 1)],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "a.md:3:8: error: field `tools`: expected `low` or `high`, found `maybe`"
        );
    }
}
