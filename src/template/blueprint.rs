//! Blueprints: whole swarm directories under `templates/`, embedded in the
//! binary so an installed `baton` has them.
//!
//! They serve twice: `baton init DIR --template NAME` copies one out as a
//! new swarm, and an agent's `template: <blueprint>/<agent>` inherits from
//! one of their agents. Inheritance merges front matter field by field (the
//! agent wins) and the body section by section: the body is split at its
//! level-1 and level-2 headings (found by pulldown-cmark, so a `#` line in a
//! code block is not a heading); an agent's section replaces the blueprint's
//! section of the same title, a section with a title but no text removes
//! it, new sections are appended, and text before the first heading replaces
//! the blueprint's when the agent has any.

use std::path::{Path, PathBuf};

use include_dir::{Dir, DirEntry, include_dir};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

static BLUEPRINTS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// Where embedded blueprint files say they are in diagnostics.
pub const EMBEDDED_ROOT: &str = "<embedded>/templates";

/// The names of the embedded blueprints, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = BLUEPRINTS
        .dirs()
        .filter_map(|d| d.path().file_name().and_then(|n| n.to_str()))
        .collect();
    names.sort_unstable();
    names
}

/// The text of an agent of a blueprint, with the path to report it by.
/// `spec` is `<blueprint>/<agent>`.
pub fn agent_source(spec: &str) -> Option<(PathBuf, &'static str)> {
    let (blueprint, agent) = spec.split_once('/')?;
    let file = BLUEPRINTS.get_file(format!("{blueprint}/{agent}.md"))?;
    let text = file.contents_utf8()?;
    Some((Path::new(EMBEDDED_ROOT).join(file.path()), text))
}

/// The agents a blueprint offers, for messages.
pub fn agent_names(blueprint: &str) -> Vec<String> {
    let Some(dir) = BLUEPRINTS.get_dir(blueprint) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "md"))
        .filter_map(|f| {
            f.path()
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_owned)
        })
        .filter(|n| n != "CLAUDE" && n != "AGENTS" && n != "README")
        .collect();
    names.sort();
    names
}

/// Why a blueprint could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("no blueprint `{name}` (available: {available})")]
    Unknown { name: String, available: String },
    #[error("{path} exists and is not empty; choose a new directory")]
    NotEmpty { path: PathBuf },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes blueprint `name` into `dest` (created; must be absent or empty).
/// Returns the files written.
pub fn scaffold(name: &str, dest: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let dir = BLUEPRINTS
        .get_dir(name)
        .ok_or_else(|| ScaffoldError::Unknown {
            name: name.to_owned(),
            available: names().join(", "),
        })?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    if dest.exists() {
        let mut entries = std::fs::read_dir(dest).map_err(io(dest))?;
        if entries.next().is_some() {
            return Err(ScaffoldError::NotEmpty {
                path: dest.to_owned(),
            });
        }
    }
    let mut written = Vec::new();
    let mut pending: Vec<&Dir<'_>> = vec![dir];
    while let Some(current) = pending.pop() {
        for entry in current.entries() {
            match entry {
                DirEntry::Dir(sub) => pending.push(sub),
                DirEntry::File(file) => {
                    let relative = file.path().strip_prefix(name).unwrap_or(file.path());
                    let target = dest.join(relative);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                    std::fs::write(&target, file.contents()).map_err(io(&target))?;
                    written.push(target);
                }
            }
        }
    }
    written.sort();
    Ok(written)
}

/// One part of a body: the text before the first heading has no title.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    title: Option<String>,
    /// The section's text including its heading line.
    text: String,
    /// True when there is nothing but the heading.
    empty: bool,
}

fn sections(body: &str) -> Vec<Section> {
    let mut starts: Vec<(usize, String)> = Vec::new();
    let mut in_heading: Option<(usize, String)> = None;
    // Only top-level headings split: one inside a quote or a list item is
    // part of that block.
    let mut nesting = 0usize;
    for (event, range) in Parser::new_ext(body, Options::empty()).into_offset_iter() {
        match event {
            Event::Start(
                Tag::BlockQuote(_) | Tag::List(_) | Tag::Item | Tag::FootnoteDefinition(_),
            ) => {
                nesting += 1;
            }
            Event::End(
                TagEnd::BlockQuote(_) | TagEnd::List(_) | TagEnd::Item | TagEnd::FootnoteDefinition,
            ) => {
                nesting = nesting.saturating_sub(1);
            }
            Event::Start(Tag::Heading { level, .. })
                if level <= HeadingLevel::H2 && nesting == 0 =>
            {
                in_heading = Some((range.start, String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, title)) = in_heading.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(heading) = in_heading.take() {
                    starts.push(heading);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let first = starts.first().map_or(body.len(), |(s, _)| *s);
    out.push(Section {
        title: None,
        text: body[..first].to_owned(),
        empty: body[..first].trim().is_empty(),
    });
    for (i, (start, title)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(body.len(), |(s, _)| *s);
        let text = &body[*start..end];
        let after_heading = text.split_once('\n').map_or("", |(_, rest)| rest);
        out.push(Section {
            title: Some(title.trim().to_lowercase()),
            text: text.to_owned(),
            empty: after_heading.trim().is_empty(),
        });
    }
    out
}

/// Merges an agent's body over its blueprint's, section by section.
pub fn merge_bodies(blueprint: &str, agent: &str) -> String {
    let parent = sections(blueprint);
    let child = sections(agent);
    let mut merged: Vec<String> = Vec::new();
    let preamble = if child[0].empty {
        &parent[0]
    } else {
        &child[0]
    };
    if !preamble.empty {
        merged.push(preamble.text.trim().to_owned());
    }
    for section in &parent[1..] {
        match child[1..].iter().find(|c| c.title == section.title) {
            Some(own) if own.empty => {}
            Some(own) => merged.push(own.text.trim().to_owned()),
            None => merged.push(section.text.trim().to_owned()),
        }
    }
    for section in &child[1..] {
        if !section.empty && !parent[1..].iter().any(|p| p.title == section.title) {
            merged.push(section.text.trim().to_owned());
        }
    }
    let mut text = merged.join("\n\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_sections_replace_remove_and_extend_the_blueprint() {
        let blueprint = "You are a worker.\n\n## Role\nGeneric role.\n\n## Boundaries\nNo guessing.\n\n## Style\nShort.\n";
        let agent = "## Role\nBilling specialist.\n\n## Style\n\n## Refunds\nCheck the window.\n";
        let merged = merge_bodies(blueprint, agent);
        assert_eq!(
            merged,
            "You are a worker.\n\n## Role\nBilling specialist.\n\n## Boundaries\nNo guessing.\n\n## Refunds\nCheck the window.\n"
        );
    }

    #[test]
    fn headings_inside_quotes_do_not_split() {
        let s = sections("## A\n> ## quoted\n> text\n");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn headings_inside_code_blocks_do_not_split() {
        let s = sections("## A\n```\n## not a heading\n```\n");
        assert_eq!(s.len(), 2);
        assert!(s[1].text.contains("not a heading"));
    }

    #[test]
    fn shipped_blueprints_are_embedded() {
        let names = names();
        assert!(names.contains(&"supervisor-worker"), "{names:?}");
        assert!(names.contains(&"incident-response"), "{names:?}");
        assert!(agent_source("supervisor-worker/worker").is_some());
        assert!(agent_source("supervisor-worker/nobody").is_none());
    }
}
