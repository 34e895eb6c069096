//! Conversation scripts for `baton run`: JSON Lines, one conversation a
//! line.
//!
//! ```text
//! # A comment: blank lines and lines starting with `#` are skipped.
//! {"id": "refund-yearly", "turns": ["I paid for a yearly plan last week.", "Can I get my money back?"]}
//! ```
//!
//! `id` names the conversation (unique in the file); `turns` are the user's
//! messages, asked in order in one session. No other field is allowed: the
//! format is ours, and a misspelt field should stop the run, not be ignored.
//! Every problem in the file is reported at once, compiler-style, with file,
//! line and column.

use std::collections::HashMap;
use std::path::Path;

use baton::diagnostic::{Diagnostic, Diagnostics};
use serde::Deserialize;

/// One scripted conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub turns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConversation {
    id: String,
    turns: Vec<String>,
}

/// Reads and checks the script at `path` (`-`: standard input, read to
/// its end, so that a client process can feed a running batch).
pub fn load(path: &Path) -> Result<Vec<Conversation>, Diagnostics> {
    let read = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    match read {
        Ok(text) => parse(&text, path),
        Err(error) => {
            let mut diagnostics = Diagnostics::new();
            diagnostics.push(Diagnostic::error(
                path,
                format!("cannot read the script: {error}"),
            ));
            Err(diagnostics)
        }
    }
}

/// Parses a script's text; `path` is for the diagnostics.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Conversation>, Diagnostics> {
    let mut diagnostics = Diagnostics::new();
    let mut conversations = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let raw: RawConversation = match serde_json::from_str(line) {
            Ok(raw) => raw,
            Err(error) => {
                diagnostics
                    .push(Diagnostic::error(path, json_message(&error)).at(number, error.column()));
                continue;
            }
        };
        let id = raw.id.trim().to_owned();
        if id.is_empty() {
            diagnostics.push(
                Diagnostic::error(path, "expected a non-empty conversation id")
                    .at_line(number)
                    .field("id"),
            );
            continue;
        }
        if let Some(first) = seen.get(&id) {
            diagnostics.push(
                Diagnostic::error(
                    path,
                    format!("conversation `{id}` is already defined on line {first}"),
                )
                .at_line(number)
                .field("id"),
            );
            continue;
        }
        seen.insert(id.clone(), number);
        if raw.turns.is_empty() {
            diagnostics.push(
                Diagnostic::error(
                    path,
                    format!("conversation `{id}`: expected at least one turn"),
                )
                .at_line(number)
                .field("turns"),
            );
            continue;
        }
        if let Some(blank) = raw.turns.iter().position(|t| t.trim().is_empty()) {
            diagnostics.push(
                Diagnostic::error(
                    path,
                    format!(
                        "conversation `{id}`: turn {} is empty; expected a user message",
                        blank + 1
                    ),
                )
                .at_line(number)
                .field("turns"),
            );
            continue;
        }
        conversations.push(Conversation {
            id,
            turns: raw.turns,
        });
    }
    if conversations.is_empty() && diagnostics.error_count() == 0 {
        diagnostics.push(Diagnostic::error(
            path,
            "the script has no conversation; expected lines such as {\"id\": \"c1\", \"turns\": [\"Hello\"]}",
        ));
    }
    if diagnostics.error_count() > 0 {
        Err(diagnostics)
    } else {
        Ok(conversations)
    }
}

/// serde_json's message without its own "at line L column C" (the
/// diagnostic carries the position, and serde_json's line is within the
/// one JSON value, not the file).
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let message = match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    format!("expected a JSON object {{\"id\": ..., \"turns\": [...]}}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_are_read_in_order_and_comments_skipped() {
        let text = "# support\n\n{\"id\": \"a\", \"turns\": [\"hi\", \"bye\"]}\n{\"id\": \"b\", \"turns\": [\"x\"]}\n";
        let script = parse(text, Path::new("s.jsonl")).unwrap();
        assert_eq!(script.len(), 2);
        assert_eq!(script[0].turns, ["hi", "bye"]);
        assert_eq!(script[1].id, "b");
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = "{\"id\": \"a\", \"turns\": [\"hi\"]}\n\
                    {\"id\": \"a\", \"turns\": [\"again\"]}\n\
                    {\"id\": \"b\", \"turn\": [\"typo\"]}\n\
                    {\"id\": \"c\", \"turns\": []}\n\
                    not json\n\
                    {\"id\": \"d\", \"turns\": [\"ok\", \"  \"]}\n";
        let out = parse(text, Path::new("s.jsonl")).unwrap_err().to_string();
        assert!(
            out.contains(
                "s.jsonl:2: error: field `id`: conversation `a` is already defined on line 1"
            ),
            "{out}"
        );
        assert!(out.contains("s.jsonl:3:"), "{out}");
        assert!(out.contains("unknown field `turn`"), "{out}");
        assert!(
            out.contains(
                "s.jsonl:4: error: field `turns`: conversation `c`: expected at least one turn"
            ),
            "{out}"
        );
        assert!(
            out.contains("s.jsonl:5:2: error: expected a JSON object"),
            "{out}"
        );
        assert!(
            out.contains("s.jsonl:6: error: field `turns`: conversation `d`: turn 2 is empty"),
            "{out}"
        );
    }

    #[test]
    fn an_empty_script_is_an_error() {
        assert!(parse("# nothing\n", Path::new("s.jsonl")).is_err());
    }
}
