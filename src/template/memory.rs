//! Swarm memory: `CLAUDE.md` (or `AGENTS.md`) and its `@path` imports,
//! read the way Claude Code reads memory files.
//!
//! - An import is `@` at the start of a word followed by a path: relative
//!   (to the importing file), absolute, or `~/` (the user's home). A word
//!   like `@Annotation` or `@user` with neither a `/` nor an extension is
//!   not a path and is left alone, as is an e-mail address.
//! - Imports inside code spans and fenced or indented code blocks are not
//!   evaluated (pulldown-cmark tells where code is).
//! - Imports nest at most five hops deep; a deeper one is reported and not
//!   followed. A cycle is reported and broken. A file imported twice is
//!   read once.
//! - A missing relative import is an error at its line. A missing `~/`
//!   import is a warning: those are personal files that another machine
//!   (CI, a colleague) does not have, and Claude Code goes on without them.

use std::ops::Range;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag};

use crate::diagnostic::{Diagnostic, Diagnostics, position};
use crate::swarm::{Memory, MemoryFile};

/// How many hops of imports are followed, as in Claude Code.
pub const MAX_IMPORT_DEPTH: usize = 5;

/// Finds and loads the memory of the swarm in `dir`: `CLAUDE.md`, else
/// `AGENTS.md`, else none.
pub fn load(dir: &Path, diagnostics: &mut Diagnostics) -> Memory {
    let mut memory = Memory::default();
    let mut stack = Vec::new();
    // File names are matched without case (`claude.md` on a case-sensitive
    // disk is still the memory). CLAUDE.local.md, a user's personal memory,
    // follows the shared one, as in Claude Code.
    let main =
        find_ignoring_case(dir, "CLAUDE.md").or_else(|| find_ignoring_case(dir, "AGENTS.md"));
    for root in main
        .into_iter()
        .chain(find_ignoring_case(dir, "CLAUDE.local.md"))
    {
        load_file(&root, 0, &mut stack, &mut memory, diagnostics);
    }
    memory
}

fn find_ignoring_case(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.is_file() {
        return Some(exact);
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|f| f.to_string_lossy().eq_ignore_ascii_case(name))
        })
}

fn load_file(
    path: &Path,
    depth: usize,
    stack: &mut Vec<PathBuf>,
    memory: &mut Memory,
    diagnostics: &mut Diagnostics,
) {
    let Some(text) = super::read_text(path, diagnostics) else {
        return;
    };
    let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    stack.push(identity);
    let imports = find_imports(&text);
    memory.files.push(MemoryFile {
        path: path.to_owned(),
        text,
    });
    let base = path.parent().unwrap_or(Path::new("."));
    for import in imports {
        let target = resolve(base, &import.path);
        let Some(target) = target else {
            diagnostics.push(
                Diagnostic::warning(
                    path,
                    format!(
                        "import `@{}`: no home directory is set; not followed",
                        import.path
                    ),
                )
                .at(import.line, import.column),
            );
            continue;
        };
        let personal = import.path.starts_with("~/");
        if !target.is_file() {
            let message = format!(
                "import `@{}`: file not found (looked for {})",
                import.path,
                target.display()
            );
            // `@types/node` or `@scope/package` in prose is a package name,
            // not an import: only a path ending in a file name with an
            // extension is surely meant as one.
            let surely_a_file = Path::new(&import.path).extension().is_some();
            let d = if personal {
                Diagnostic::warning(path, format!("{message}; a personal file, skipped"))
            } else if !surely_a_file {
                Diagnostic::warning(path, format!("{message}; not a file name, read as text"))
            } else {
                Diagnostic::error(path, message)
            };
            diagnostics.push(d.at(import.line, import.column));
            continue;
        }
        let identity = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
        if let Some(start) = stack.iter().position(|p| *p == identity) {
            let mut chain: Vec<String> = stack[start..].iter().map(|p| short_name(p)).collect();
            chain.push(short_name(&identity));
            diagnostics.push(
                Diagnostic::warning(
                    path,
                    format!("import cycle: {}; not followed again", chain.join(" -> ")),
                )
                .at(import.line, import.column),
            );
            continue;
        }
        let already = memory
            .files
            .iter()
            .any(|f| std::fs::canonicalize(&f.path).is_ok_and(|p| p == identity));
        if already {
            continue;
        }
        if depth + 1 > MAX_IMPORT_DEPTH {
            diagnostics.push(
                Diagnostic::warning(
                    path,
                    format!(
                        "import `@{}` is more than {MAX_IMPORT_DEPTH} hops from the swarm's memory file; not followed",
                        import.path
                    ),
                )
                .at(import.line, import.column),
            );
            continue;
        }
        load_file(&target, depth + 1, stack, memory, diagnostics);
    }
    stack.pop();
}

fn short_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn resolve(base: &Path, import: &str) -> Option<PathBuf> {
    if let Some(rest) = import.strip_prefix("~/") {
        return std::env::var_os("HOME").map(|home| PathBuf::from(home).join(rest));
    }
    let path = Path::new(import);
    Some(if path.is_absolute() {
        path.to_owned()
    } else {
        lexical_join(base, path)
    })
}

/// `base/relative` with `.` and `..` folded, so that messages show
/// `glossary.md`, not `docs/../glossary.md`. Lexical on purpose: symlinks
/// are followed when the file is read, not when its name is shown.
fn lexical_join(base: &Path, relative: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = base.to_path_buf();
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// One `@path` mention outside code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// Finds the imports in a memory file's text.
pub fn find_imports(text: &str) -> Vec<Import> {
    let code = code_ranges(text);
    let mut imports = Vec::new();
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices('@') {
        let starts_word = at == 0 || matches!(bytes[at - 1], b' ' | b'\t' | b'\n' | b'(' | b'[');
        if !starts_word || code.iter().any(|r| r.contains(&at)) {
            continue;
        }
        let rest = &text[at + 1..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | ']' | '`' | '"' | '<' | '>'))
            .unwrap_or(rest.len());
        let candidate = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', '\'']);
        if is_path_like(candidate) {
            let (line, column) = position(text, at);
            imports.push(Import {
                path: candidate.to_owned(),
                line,
                column,
            });
        }
    }
    imports
}

/// A path has a directory part or a file extension; `@Annotation` has neither.
fn is_path_like(candidate: &str) -> bool {
    if candidate.is_empty() {
        return false;
    }
    if candidate.contains('/') {
        return true;
    }
    candidate.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// Byte ranges of code spans, code blocks and raw HTML, where `@` is text.
fn code_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    for (event, range) in Parser::new_ext(text, Options::empty()).into_offset_iter() {
        match event {
            Event::Code(_) | Event::Html(_) | Event::InlineHtml(_) => ranges.push(range),
            Event::Start(Tag::CodeBlock(_)) => ranges.push(range),
            _ => {}
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        find_imports(text).into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn finds_imports_in_prose_with_positions() {
        let found = find_imports("See @docs/style.md for style.\nAlso @AGENTS.md.\n");
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].path.as_str(), found[0].line, found[0].column),
            ("docs/style.md", 1, 5)
        );
        assert_eq!((found[1].path.as_str(), found[1].line), ("AGENTS.md", 2));
    }

    #[test]
    fn ignores_code_annotations_emails_and_bare_words() {
        let text = "```java\n@Override\n@see/path.md\n```\nUse `@inline/code.md` and mail a@b.com, ping @team.\n\n    @indented/block.md\n";
        assert!(paths(text).is_empty(), "{:?}", paths(text));
    }

    #[test]
    fn home_imports_are_recognised() {
        assert_eq!(
            paths("- @~/.claude/my-project.md"),
            ["~/.claude/my-project.md"]
        );
    }
}
