//! Front matter: the YAML block at the top of agent and rule files.
//!
//! The files are users', written for Claude Code and Cursor, whose readers
//! are far more forgiving than a YAML parser: in public collections most
//! files are not valid YAML (`globs: **/*.ts` reads as an alias, a
//! description with `user: "..."` inside an `<example>` is a nested mapping,
//! `\n` escapes sit in plain scalars). So this module reads front matter in
//! two layers:
//!
//! 1. The block is split into top-level fields: a field starts at a line in
//!    column 0 of the form `key:`; the lines after it (indented lines, list
//!    items, and prose lines of a multi-line description) belong to it. This
//!    gives every field its own line number and lets one bad value not spoil
//!    the others.
//! 2. Each field is parsed as YAML on its own (saphyr, a YAML 1.2 parser).
//!    When that fails and the value is a plain scalar, the raw text is taken
//!    as the string the author meant, with a warning. When it fails and the
//!    value is structured (a flow list or map, a quoted string), the author
//!    meant YAML and got it wrong: that is an error with its line and column.
//!
//! The delimiters are forgiving too: blank lines may come before the opening
//! `---`, and the closing line may be a longer run of dashes or `...`.
//! pulldown-cmark's own metadata-block scanner requires the block at byte 0
//! and a closing line of exactly `---`/`...`, which real files do not always
//! meet, so the split is done here and pulldown-cmark reads the body.

use serde_json::{Map, Number, Value};

use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};

/// One top-level front-matter field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: String,
    /// 1-based line of the `key:` line.
    pub line: usize,
    /// 1-based column where the value starts on the key line.
    pub value_column: usize,
    pub value: Value,
    /// True when the value was not valid YAML and was read as plain text.
    pub lenient: bool,
    /// True when the value was written as a plain (unquoted, non-block)
    /// scalar, where `\n` is a literal backslash-n.
    pub plain: bool,
}

/// A finding while reading front matter, positioned in the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub error: bool,
    pub line: usize,
    pub column: usize,
    pub field: Option<String>,
    pub message: String,
}

/// A file split into its front matter fields and body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// False when the file has no front matter at all.
    pub has_front_matter: bool,
    pub fields: Vec<Field>,
    pub body: String,
    /// 1-based line where the body starts.
    pub body_line: usize,
    pub findings: Vec<Finding>,
}

impl Document {
    /// The field named `key` (each key occurs once after parsing).
    pub fn get(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.error)
    }
}

/// Keys some tool gives meaning to. A line `Key:` inside a prose value is
/// taken as a new field only when it is one of these or looks like a field
/// name (lowercase, no spaces).
const KNOWN_KEYS: &[&str] = &[
    // Claude Code subagents
    "name",
    "description",
    "tools",
    "disallowedTools",
    "model",
    "color",
    "permissionMode",
    "skills",
    "hooks",
    "mcpServers",
    "maxTurns",
    "memory",
    // Cursor rules and Copilot instructions
    "globs",
    "alwaysApply",
    "applyTo",
    // Baton
    "role",
    "route",
    "intents",
    "examples",
    "requires",
    "stakes",
    "template",
    "output_schema",
    "delegates",
    "rules",
    "default_worker",
];

/// Fields whose plain-text reading is the documented form, not a slip.
const QUIET_WHEN_LENIENT: &[&str] = &["globs", "applyTo"];

/// Splits `text` (already decoded and normalised to `\n`) into front matter
/// and body, and parses the fields.
pub fn parse(text: &str) -> Document {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(open) = lines.iter().position(|l| !l.trim().is_empty()) else {
        return Document {
            body: String::new(),
            body_line: 1,
            ..Document::default()
        };
    };
    if !is_dash_line(lines[open]) {
        return Document {
            body: text.to_owned(),
            body_line: 1,
            ..Document::default()
        };
    }
    let close = lines[open + 1..]
        .iter()
        .position(|l| is_dash_line(l) || l.trim_end() == "...")
        .map(|i| i + open + 1);
    let Some(close) = close else {
        return Document {
            has_front_matter: true,
            body: String::new(),
            body_line: lines.len(),
            findings: vec![Finding {
                error: true,
                line: open + 1,
                column: 1,
                field: None,
                message: "unterminated front matter: opened with `---` here but no closing `---` line follows".into(),
            }],
            ..Document::default()
        };
    };
    let mut document = Document {
        has_front_matter: true,
        body: lines[close + 1..].join("\n"),
        body_line: close + 2,
        ..Document::default()
    };
    read_fields(&lines[open + 1..close], open + 2, &mut document);
    keep_last_of_each_key(&mut document);
    document
}

/// The last occurrence of a key wins, as in the YAML readers of the tools
/// these files were written for; earlier ones are dropped with a warning.
fn keep_last_of_each_key(document: &mut Document) {
    let mut kept: Vec<Field> = Vec::with_capacity(document.fields.len());
    for field in std::mem::take(&mut document.fields).into_iter().rev() {
        if kept.iter().any(|k| k.key == field.key) {
            document.findings.push(Finding {
                error: false,
                line: field.line,
                column: 1,
                field: Some(field.key),
                message:
                    "this field is given again later in the front matter; the later value is used"
                        .into(),
            });
        } else {
            kept.push(field);
        }
    }
    kept.reverse();
    document.fields = kept;
}

fn is_dash_line(line: &str) -> bool {
    let trimmed = line.trim_end();
    trimmed.len() >= 3 && trimmed.bytes().all(|b| b == b'-')
}

/// A field's lines before parsing: the key line and what belongs to it.
struct RawField<'a> {
    key: String,
    line: usize,
    /// Byte offset of the value in the key line (just past `key:`).
    value_start: usize,
    lines: Vec<&'a str>,
}

fn read_fields(lines: &[&str], first_line: usize, document: &mut Document) {
    let mut raw: Vec<RawField<'_>> = Vec::new();
    for (i, &line) in lines.iter().enumerate() {
        let line_no = first_line + i;
        if let Some(current) = raw.last_mut()
            && belongs_to(current, line)
        {
            current.lines.push(line);
            continue;
        }
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            if let Some(current) = raw.last_mut() {
                current.lines.push(line);
            }
            continue;
        }
        match split_key(line) {
            Some((key, value_start)) => raw.push(RawField {
                key,
                line: line_no,
                value_start,
                lines: vec![line],
            }),
            None => document.findings.push(Finding {
                error: true,
                line: line_no,
                column: 1,
                field: None,
                message: format!(
                    "expected a `key: value` line in the front matter, found `{}`",
                    shorten(line.trim())
                ),
            }),
        }
    }
    for field in raw {
        parse_field(field, document);
    }
}

/// Whether `line` continues the field `current` rather than starting a new one.
fn belongs_to(current: &RawField<'_>, line: &str) -> bool {
    let starts_indented = line.starts_with([' ', '\t']);
    if starts_indented || line.starts_with('-') && !is_dash_line(line) {
        return true;
    }
    if line.trim().is_empty() {
        return false;
    }
    // A flow list or map spread over lines (`tools: [` ... `]`) may close in
    // column 0; YAML readers accept that, since flow content ignores
    // indentation.
    if open_brackets(&current.lines) > 0 {
        return true;
    }
    let value_on_key_line = current.lines[0][current.value_start..].trim();
    let is_prose = !value_on_key_line.is_empty()
        && !value_on_key_line.starts_with(['[', '{', '"', '\'', '|', '>']);
    if !is_prose {
        return false;
    }
    let candidate = split_key(line);
    if let Some((key, _)) = &candidate
        && KNOWN_KEYS.contains(&key.as_str())
    {
        return false;
    }
    // Inside an open <example> block every line is prose. Only tags that
    // open a line count: a description may mention `<example>` in passing.
    let opened = current
        .lines
        .iter()
        .filter(|l| l.trim_start().starts_with("<example>"))
        .count();
    let closed = current
        .lines
        .iter()
        .filter(|l| l.contains("</example>"))
        .count();
    if opened > closed {
        return true;
    }
    match candidate {
        None => true,
        Some((key, _)) => {
            key.contains(' ')
                || key.starts_with(|c: char| c.is_uppercase())
                || matches!(key.as_str(), "user" | "assistant" | "human")
        }
    }
}

/// How many `[`/`{` are open at the end of `lines`, outside quotes.
fn open_brackets(lines: &[&str]) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, line) in lines.iter().enumerate() {
        // The key line's brackets count only after the key.
        let text = if i == 0 {
            line.split_once(':').map_or(*line, |(_, v)| v)
        } else {
            line
        };
        for c in text.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '[' | '{') => depth += 1,
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                (None, '#') if depth == 0 => break,
                _ => {}
            }
        }
        // Quotes do not span lines in the flow values this is for.
        quote = None;
    }
    depth
}

/// Splits `key: value` at column 0. Returns the key and the byte offset just
/// past the colon.
fn split_key(line: &str) -> Option<(String, usize)> {
    if line.starts_with([' ', '\t', '#', '-', '[', '{']) {
        return None;
    }
    let bytes = line.as_bytes();
    let mut search_from = 0;
    // A quoted key may contain colons.
    if let Some(quote @ (b'"' | b'\'')) = bytes.first().copied() {
        let end = line[1..].find(quote as char)? + 1;
        search_from = end + 1;
    }
    let colon = line[search_from..]
        .char_indices()
        .find(|&(i, c)| {
            c == ':'
                && line[search_from + i + 1..]
                    .chars()
                    .next()
                    .is_none_or(|n| n == ' ' || n == '\t')
        })
        .map(|(i, _)| search_from + i)?;
    let key = line[..colon]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_owned();
    if key.is_empty() {
        return None;
    }
    Some((key, colon + 1))
}

/// Why a field's YAML could not be read, positioned in the field's chunk.
struct YamlFailure {
    info: String,
    /// 1-based line in the chunk and 0-based column, when known.
    at: Option<(usize, usize)>,
}

/// Parses a one-field chunk `key: value...` strictly, returning the value.
fn strict_value(lines: &[&str]) -> Result<Value, YamlFailure> {
    let chunk = lines.join("\n");
    let parsed = YamlOwned::load_from_str(&chunk).or_else(|error| {
        // Lenient YAML readers (js-yaml, which Cursor and VS Code use) accept
        // a continuation in column 0, such as the `]` closing a flow list;
        // YAML 1.2 wants it indented. Indenting every continuation line by
        // one space keeps their relative layout and gives the same value.
        if lines[1..]
            .iter()
            .any(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        {
            let mut indented = lines[0].to_owned();
            for line in &lines[1..] {
                indented.push_str("\n ");
                indented.push_str(line);
            }
            YamlOwned::load_from_str(&indented).map_err(|_| error)
        } else {
            Err(error)
        }
    });
    let docs = parsed.map_err(|error| YamlFailure {
        info: error.info().to_owned(),
        at: Some((error.marker().line(), error.marker().col())),
    })?;
    match docs.into_iter().next() {
        Some(YamlOwned::Mapping(map)) if map.len() == 1 => Ok(map
            .into_iter()
            .next()
            .map(|(_, v)| to_json(v))
            .unwrap_or(Value::Null)),
        // Prose lines such as `user: "..."` joined to a description parse as
        // more keys; the author meant one text, so read it as text.
        Some(YamlOwned::Mapping(_)) => Err(YamlFailure {
            info: "its continuation lines read as further keys".into(),
            at: None,
        }),
        _ => Ok(Value::Null),
    }
}

fn parse_field(raw: RawField<'_>, document: &mut Document) {
    let key_line = raw.lines[0];
    let value_text = &key_line[raw.value_start..];
    let value_column = key_line[..raw.value_start].chars().count()
        + value_text.chars().take_while(|c| c.is_whitespace()).count()
        + 1;
    let head = value_text.trim();
    let plain = !head.is_empty() && !head.starts_with(['[', '{', '"', '\'', '|', '>', '&', '!']);
    let failure = match strict_value(&raw.lines) {
        Ok(value) => {
            document.fields.push(Field {
                key: raw.key,
                line: raw.line,
                value_column,
                value,
                lenient: false,
                plain,
            });
            return;
        }
        Err(failure) => failure,
    };
    let text = lenient_text(value_text, &raw.lines[1..]);
    let structured = head.starts_with(['[', '{', '"', '\'', '|', '>']);
    let broken = structured || head.is_empty() && !looks_like_prose(&raw.lines[1..]);
    let key = raw.key.as_str();
    let warning = |message: String| Finding {
        error: false,
        line: raw.line,
        column: value_column,
        field: Some(raw.key.clone()),
        message,
    };
    let value = if QUIET_WHEN_LENIENT.contains(&key) {
        // Cursor reads globs as raw text: `{src,lib}/**` and `[a, b]` too.
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(&text);
        Value::String(inner.to_owned())
    } else if broken && !KNOWN_KEYS.contains(&key) {
        // A field no tool here interprets: keep its text and go on, as the
        // tool it was written for would have parsed it.
        document.findings.push(warning(format!(
            "value is not valid YAML ({}); kept as text since Baton does not use this field",
            failure.info
        )));
        Value::String(text)
    } else if broken {
        // An error at the end of the chunk (an unclosed list or quote) is
        // reported where the field's text ends, not on the closing `---`.
        let (line, column) = match failure.at {
            Some((chunk_line, col)) if chunk_line.max(1) <= raw.lines.len() => {
                (raw.line + chunk_line.max(1) - 1, col + 1)
            }
            _ => {
                let last = raw
                    .lines
                    .iter()
                    .rposition(|l| !l.trim().is_empty())
                    .unwrap_or(0);
                (raw.line + last, raw.lines[last].chars().count() + 1)
            }
        };
        document.findings.push(Finding {
            error: true,
            line,
            column,
            field: Some(raw.key),
            message: format!("YAML syntax error: {}", failure.info),
        });
        return;
    } else {
        document.findings.push(warning(format!(
            "value is not valid YAML ({}); read as plain text, as Claude Code and Cursor do",
            failure.info
        )));
        Value::String(text)
    };
    document.fields.push(Field {
        key: raw.key,
        line: raw.line,
        value_column,
        value,
        lenient: true,
        plain: true,
    });
}

/// Continuation lines of a value with nothing on the key line: prose unless
/// they look like a YAML list or mapping.
fn looks_like_prose(lines: &[&str]) -> bool {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .is_some_and(|l| !l.starts_with('-') && split_key(l).is_none())
}

fn lenient_text(first: &str, rest: &[&str]) -> String {
    let mut text = first.trim().to_owned();
    for line in rest {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line.trim());
    }
    text.trim().to_owned()
}

/// Converts a YAML node to JSON; front matter is data, and JSON is what
/// output schemas and the rest of Baton speak.
fn to_json(node: YamlOwned) -> Value {
    match node {
        YamlOwned::Value(scalar) => scalar_to_json(scalar),
        YamlOwned::Representation(text, _, _) => Value::String(text),
        YamlOwned::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        YamlOwned::Mapping(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                object.insert(key_string(key), to_json(value));
            }
            Value::Object(object)
        }
        YamlOwned::Tagged(_, inner) => to_json(*inner),
        YamlOwned::Alias(_) | YamlOwned::BadValue => Value::Null,
    }
}

fn scalar_to_json(scalar: ScalarOwned) -> Value {
    match scalar {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(b),
        ScalarOwned::Integer(i) => Value::Number(i.into()),
        ScalarOwned::FloatingPoint(f) => {
            Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
        }
        ScalarOwned::String(s) => Value::String(s),
    }
}

fn key_string(key: YamlOwned) -> String {
    match to_json(key) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(doc: &'a Document, key: &str) -> &'a Value {
        &doc.get(key)
            .unwrap_or_else(|| panic!("no field {key}: {doc:?}"))
            .value
    }

    #[test]
    fn reads_plain_front_matter_with_line_numbers() {
        let doc = parse("---\nname: a\ntools: [Read, Grep]\n---\nBody\n");
        assert!(doc.findings.is_empty(), "{:?}", doc.findings);
        assert_eq!(field(&doc, "name"), "a");
        assert_eq!(field(&doc, "tools"), &serde_json::json!(["Read", "Grep"]));
        assert_eq!(doc.get("tools").unwrap().line, 3);
        assert_eq!(doc.body, "Body\n");
        assert_eq!(doc.body_line, 5);
    }

    #[test]
    fn unquoted_star_glob_reads_as_text_with_a_warning() {
        let doc = parse("---\nglobs: **/*.ts\nalwaysApply: false\n---\nx");
        assert_eq!(field(&doc, "globs"), "**/*.ts");
        assert_eq!(field(&doc, "alwaysApply"), false);
        assert!(doc.findings.is_empty(), "{:?}", doc.findings);
        assert!(doc.get("globs").unwrap().lenient);
    }

    #[test]
    fn multi_line_description_with_examples_stays_one_field() {
        let text = "---\nname: reviewer\ndescription: Use this agent when code changes. Examples:\n<example>\nContext: the user wrote code\nuser: \"Review this\"\nassistant: \"I will use the agent\"\n</example>\nmodel: sonnet\n---\nPrompt";
        let doc = parse(text);
        let description = field(&doc, "description").as_str().unwrap();
        assert!(
            description.contains("user: \"Review this\""),
            "{description}"
        );
        assert!(description.ends_with("</example>"));
        assert_eq!(field(&doc, "model"), "sonnet");
        assert!(doc.findings.iter().all(|f| !f.error));
    }

    #[test]
    fn prose_lines_that_parse_as_more_keys_stay_in_the_description() {
        let doc = parse(
            "---\nname: rev\ndescription: Use this agent after code changes.\nContext: the user wrote a function\nuser: \"Review it\"\nmodel: sonnet\n---\nb",
        );
        let description = field(&doc, "description").as_str().unwrap();
        assert!(
            description.ends_with("user: \"Review it\""),
            "{description}"
        );
        assert_eq!(field(&doc, "model"), "sonnet");
        assert_eq!(
            doc.findings.len(),
            1,
            "one warning for the lenient read: {:?}",
            doc.findings
        );
    }

    #[test]
    fn example_mentioned_mid_sentence_does_not_swallow_later_fields() {
        let doc = parse(
            "---\ndescription: Reviews <example> tags in XML\nmodel: opus\ntools: Read\n---\nb",
        );
        assert_eq!(field(&doc, "model"), "opus");
        assert_eq!(field(&doc, "tools"), "Read");
    }

    #[test]
    fn globs_in_braces_or_brackets_read_as_cursor_reads_them() {
        let doc = parse("---\nglobs: {src,lib}/**/*.ts\n---\nb");
        assert_eq!(field(&doc, "globs"), "{src,lib}/**/*.ts");
        let doc = parse("---\nglobs: [src/**/*.ts, *.md]\n---\nb");
        assert_eq!(field(&doc, "globs"), "src/**/*.ts, *.md");
        assert!(!doc.has_errors());
    }

    #[test]
    fn repeated_key_keeps_the_last_with_a_warning() {
        let doc = parse("---\nglobs: a\nglobs: b\n---\nx");
        assert_eq!(doc.fields.len(), 1);
        assert_eq!(field(&doc, "globs"), "b");
        assert_eq!(doc.findings[0].line, 2);
    }

    #[test]
    fn broken_flow_list_is_an_error_at_its_line() {
        let doc = parse("---\nname: a\ntools: [Read, Grep\n---\nBody");
        let error = doc.findings.iter().find(|f| f.error).expect("an error");
        assert_eq!(error.field.as_deref(), Some("tools"));
        assert_eq!(error.line, 3);
        assert!(error.message.contains("YAML syntax error"));
    }

    #[test]
    fn flow_list_spread_over_lines_closing_in_column_zero() {
        let doc = parse("---\ntools: [\n  'agent',\n  'search/usages'\n]\nname: x\n---\nb");
        assert!(doc.findings.is_empty(), "{:?}", doc.findings);
        assert_eq!(
            field(&doc, "tools"),
            &serde_json::json!(["agent", "search/usages"])
        );
        assert_eq!(field(&doc, "name"), "x");
    }

    #[test]
    fn broken_value_of_a_field_no_one_reads_is_a_warning() {
        let doc = parse(
            "---\nname: x\nmcp-servers:\n  a:\n    args: [\n      'run'\n    ]\n    env:\n      K: v\n---\nb",
        );
        assert!(!doc.has_errors(), "{:?}", doc.findings);
        assert_eq!(doc.findings.len(), 1);
        assert!(
            doc.get("mcp-servers")
                .unwrap()
                .value
                .as_str()
                .unwrap()
                .contains("'run'")
        );
    }

    #[test]
    fn opening_after_blank_lines_and_long_closing_line() {
        let doc = parse("\n\n---\nname: a\n------\nBody");
        assert_eq!(field(&doc, "name"), "a");
        assert_eq!(doc.body, "Body");
        assert_eq!(doc.body_line, 6);
    }

    #[test]
    fn unterminated_front_matter_is_an_error_at_the_opening_line() {
        let doc = parse("---\nname: a\nBody without a close");
        assert!(doc.has_errors());
        assert_eq!(doc.findings[0].line, 1);
        assert!(
            doc.findings[0]
                .message
                .contains("unterminated front matter")
        );
    }

    #[test]
    fn no_front_matter_keeps_the_whole_text_as_body() {
        let doc = parse("# Title\ntext");
        assert!(!doc.has_front_matter);
        assert_eq!(doc.body, "# Title\ntext");
    }

    #[test]
    fn block_scalars_lists_and_nested_maps() {
        let doc = parse(
            "---\ndescription: |\n  line one\n  line two\ntools:\n- Read\n- Grep\nextra:\n  depth: 3\n  nested: {a: 1}\n---\nb",
        );
        assert_eq!(field(&doc, "description"), "line one\nline two\n");
        assert_eq!(field(&doc, "tools"), &serde_json::json!(["Read", "Grep"]));
        assert_eq!(
            field(&doc, "extra"),
            &serde_json::json!({"depth": 3, "nested": {"a": 1}})
        );
        assert!(doc.findings.is_empty(), "{:?}", doc.findings);
    }
}
