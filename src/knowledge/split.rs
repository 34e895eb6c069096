//! Cutting a markdown document into passages.
//!
//! A passage is the unit retrieval ranks and the extractive answer cites, so
//! it should be about one thing. Headings H1–H3 are the author's own topic
//! boundaries: each one starts a section whose heading path ("Refunds and
//! cancellations > Refund rules") says where it sits. H4–H6 stay inside their
//! section, since they usually label a detail of it. Headings are found by
//! pulldown-cmark, not by looking for `#` at the start of a line, so a `#`
//! comment in a fenced shell block is text and setext headings count. A YAML
//! front-matter block is metadata, not text, and is left out.
//!
//! A section longer than [`CHUNK_WORDS`] is cut into windows of whole lines
//! that overlap by about [`OVERLAP_WORDS`], so a long section does not drown
//! its few relevant lines in length normalisation, and a fact sitting on a
//! window boundary is whole in at least one window. Passage text is the
//! markdown source itself (trimmed), which keeps list items and table rows
//! one per line for the sentence picker.

use std::ops::Range;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Sections longer than this many words are cut into windows.
pub const CHUNK_WORDS: usize = 220;
/// How many words consecutive windows of a long section share, at most.
pub const OVERLAP_WORDS: usize = 40;

/// One passage of a document before indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Heading texts from the outermost to the passage's own; the document
    /// title alone for text before the first heading.
    pub path: Vec<String>,
    /// 1-based line of the heading (1 for text before the first heading).
    pub line: usize,
    pub text: String,
}

struct Heading {
    level: usize,
    text: String,
    /// Byte range of the whole heading (for a setext heading, both lines).
    range: Range<usize>,
}

/// Splits `source` into passages. `title` names text before the first
/// heading.
pub fn split(source: &str, title: &str) -> Vec<Piece> {
    let (headings, body_start) = scan(source);
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(source.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let line_of = |offset: usize| line_starts.partition_point(|&s| s <= offset);

    let mut pieces = Vec::new();
    let first_heading = headings.first().map_or(source.len(), |h| h.range.start);
    if body_start < first_heading {
        push_chunks(
            &mut pieces,
            vec![title.to_owned()],
            1,
            &source[body_start..first_heading],
        );
    }
    let mut path: Vec<(usize, String)> = Vec::new();
    for (i, heading) in headings.iter().enumerate() {
        while path
            .last()
            .is_some_and(|(level, _)| *level >= heading.level)
        {
            path.pop();
        }
        path.push((heading.level, heading.text.clone()));
        let end = headings.get(i + 1).map_or(source.len(), |h| h.range.start);
        let body = &source[heading.range.end.min(end)..end];
        push_chunks(
            &mut pieces,
            path.iter().map(|(_, text)| text.clone()).collect(),
            line_of(heading.range.start),
            body,
        );
    }
    pieces
}

/// The H1–H3 headings of `source`, and where text starts after any front
/// matter.
fn scan(source: &str) -> (Vec<Heading>, usize) {
    let options = Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS
        | Options::ENABLE_TABLES;
    let mut headings = Vec::new();
    let mut body_start = 0;
    let mut open: Option<Heading> = None;
    for (event, range) in Parser::new_ext(source, options).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) if level <= HeadingLevel::H3 => {
                open = Some(Heading {
                    level: level as usize,
                    text: String::new(),
                    range,
                });
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(mut heading) = open.take() {
                    heading.text = heading.text.trim().to_owned();
                    headings.push(heading);
                }
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = open.as_mut() {
                    heading.text.push_str(&text);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(heading) = open.as_mut() {
                    heading.text.push(' ');
                }
            }
            Event::End(TagEnd::MetadataBlock(_)) => body_start = range.end,
            _ => {}
        }
    }
    (headings, body_start)
}

/// Adds `body` as one passage, or as overlapping windows if it is long.
/// Blank bodies (a title directly followed by a subheading) add nothing:
/// their heading text still reaches the index through the subsections'
/// paths.
fn push_chunks(pieces: &mut Vec<Piece>, path: Vec<String>, line: usize, body: &str) {
    let body = body.trim();
    if body.is_empty() {
        return;
    }
    let units = units(body);
    let total: usize = units.iter().map(|u| u.words).sum();
    if total <= CHUNK_WORDS {
        pieces.push(Piece {
            path,
            line,
            text: body.to_owned(),
        });
        return;
    }
    let mut start = 0;
    loop {
        let mut end = start;
        let mut words = 0;
        while end < units.len() && (end == start || words + units[end].words <= CHUNK_WORDS) {
            words += units[end].words;
            end += 1;
        }
        let text = body[units[start].range.start..units[end - 1].range.end].trim();
        pieces.push(Piece {
            path: path.clone(),
            line,
            text: text.to_owned(),
        });
        if end == units.len() {
            break;
        }
        // Step back over whole trailing units for the overlap, but always
        // move forward by at least one unit so the loop ends.
        let mut next = end;
        let mut shared = 0;
        while next > start + 1 && shared + units[next - 1].words <= OVERLAP_WORDS {
            next -= 1;
            shared += units[next].words;
        }
        start = next;
    }
}

struct Unit {
    range: Range<usize>,
    words: usize,
}

/// The lines of `body`, with any line longer than a window cut into
/// window-sized runs of words, so a one-line paragraph can still be split.
fn units(body: &str) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let words = line.split_whitespace().count();
        if words <= CHUNK_WORDS {
            units.push(Unit {
                range: offset..offset + line.len(),
                words,
            });
        } else {
            let mut run_start = offset;
            let mut count = 0;
            for i in word_starts(line) {
                if count == CHUNK_WORDS {
                    units.push(Unit {
                        range: run_start..offset + i,
                        words: count,
                    });
                    run_start = offset + i;
                    count = 0;
                }
                count += 1;
            }
            units.push(Unit {
                range: run_start..offset + line.len(),
                words: count,
            });
        }
        offset += line.len();
    }
    units
}

/// The byte offset of each whitespace-separated word of `line`.
fn word_starts(line: &str) -> impl Iterator<Item = usize> + '_ {
    line.char_indices()
        .zip(std::iter::once(None).chain(line.chars().map(Some)))
        .filter(|((_, c), before)| !c.is_whitespace() && before.is_none_or(char::is_whitespace))
        .map(|((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(pieces: &[Piece]) -> Vec<String> {
        pieces.iter().map(|p| p.path.join(" > ")).collect()
    }

    #[test]
    fn splits_by_h1_to_h3_with_heading_paths_and_lines() {
        let doc = "Intro text.\n\n# Refunds\n\nGeneral.\n\n## Yearly plans\nFull refund within 14 days.\n\n### Edge case\nDetail.\n\n#### Deeper\nStays inside.\n\n## Monthly plans\nNo refund.\n";
        let pieces = split(doc, "refunds.md");
        assert_eq!(
            paths(&pieces),
            [
                "refunds.md",
                "Refunds",
                "Refunds > Yearly plans",
                "Refunds > Yearly plans > Edge case",
                "Refunds > Monthly plans"
            ]
        );
        let lines: Vec<usize> = pieces.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 3, 7, 10, 16]);
        assert_eq!(pieces[2].text, "Full refund within 14 days.");
        assert!(pieces[3].text.contains("#### Deeper\nStays inside."));
    }

    #[test]
    fn hash_lines_in_code_blocks_are_not_headings() {
        let doc = "# Setup\n\n```sh\n# install it\napt-get install tidewater\n```\n\n    # indented code\n\nAfter.\n";
        let pieces = split(doc, "setup");
        assert_eq!(paths(&pieces), ["Setup"]);
        assert!(pieces[0].text.contains("# install it"));
        assert!(pieces[0].text.contains("After."));
    }

    #[test]
    fn empty_sections_are_skipped_and_setext_headings_count() {
        let doc = "Title\n=====\n\nSub\n---\nBody here.\n";
        let pieces = split(doc, "t");
        assert_eq!(paths(&pieces), ["Title > Sub"]);
        assert_eq!(pieces[0].line, 4);
        assert_eq!(pieces[0].text, "Body here.");
    }

    #[test]
    fn front_matter_is_not_text() {
        let doc = "---\ntitle: x\n---\nHello there.\n";
        let pieces = split(doc, "doc");
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].text, "Hello there.");
    }

    #[test]
    fn inline_code_in_headings_is_kept() {
        let pieces = split("## The `[server]` table\nport = 7420\n", "c");
        assert_eq!(paths(&pieces), ["The [server] table"]);
    }

    #[test]
    fn long_sections_become_overlapping_windows() {
        let lines: Vec<String> = (0..60)
            .map(|i| format!("line{i} alpha beta gamma delta epsilon zeta eta theta iota"))
            .collect();
        let doc = format!("## Long\n{}\n", lines.join("\n"));
        let pieces = split(&doc, "long");
        assert!(pieces.len() >= 3, "{} pieces", pieces.len());
        for piece in &pieces {
            assert_eq!(piece.path, ["Long"]);
            assert_eq!(piece.line, 1);
            assert!(piece.text.split_whitespace().count() <= CHUNK_WORDS);
        }
        // Every line is in some window, and consecutive windows share lines.
        for line in &lines {
            assert!(pieces.iter().any(|p| p.text.contains(line.as_str())));
        }
        let last_of_first = pieces[0].text.lines().last().unwrap_or_default();
        assert!(pieces[1].text.contains(last_of_first));
    }

    #[test]
    fn a_single_long_paragraph_is_still_cut() {
        let para = vec!["word"; 500].join(" ");
        let pieces = split(&format!("# P\n{para}\n"), "p");
        assert!(pieces.len() >= 3);
        assert!(
            pieces
                .iter()
                .all(|p| p.text.split_whitespace().count() <= CHUNK_WORDS)
        );
    }
}
