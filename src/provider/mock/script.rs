//! The fault script: raw TOML parsed into [`RawScript`], then validated into
//! a [`Script`] whose faults carry only the fields their kind uses.
//!
//! Every error names the file, the line and the field, and says what was
//! expected. A field that does not belong to a fault's kind is an error, not
//! silently ignored: a script that says `after_tokens = 5` on a `status`
//! fault was meant to do something else, and rehearsing the wrong outage
//! is worse than refusing to start.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::MockError;

/// The longest a `hang` keeps a request open when its window has no end.
pub const HANG_CAP: Duration = Duration::from_secs(120);

/// A validated fault script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub server: ServerSettings,
    /// Checked in order; the first one that is active and fits the request
    /// applies.
    pub faults: Vec<Fault>,
}

impl Default for Script {
    /// A healthy upstream: default settings, no faults.
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            faults: Vec::new(),
        }
    }
}

/// How the server answers when no fault applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// The model name reported in answers and `/v1/models`.
    pub model: String,
    /// Words in a full answer (one word and its space is one token).
    pub answer_tokens: usize,
    /// Wait before a response starts.
    pub latency: Duration,
    /// Up to this much more wait, drawn from the seeded RNG.
    pub jitter: Duration,
    /// Wait between streamed tokens.
    pub token_interval: Duration,
    /// Prompts longer than this get the real context-length error.
    pub max_context_tokens: Option<u32>,
    /// Seeds the RNG behind `rate` and `jitter`; answers do not depend on it.
    pub seed: u64,
    /// End answers with the first `[file#heading]` citation of the system
    /// prompt's knowledge passages.
    pub cite: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            model: "mock-1".to_owned(),
            answer_tokens: 24,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            token_interval: Duration::ZERO,
            max_context_tokens: None,
            seed: 0,
            cite: false,
        }
    }
}

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Openai,
    /// `POST /v1/messages`.
    Anthropic,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Openai => "openai",
            Endpoint::Anthropic => "anthropic",
        }
    }
}

/// When a fault is active, relative to the script's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    /// `None`: until the script is replaced.
    pub to: Option<Duration>,
}

impl Window {
    pub fn contains(&self, elapsed: Duration) -> bool {
        elapsed >= self.from && self.to.is_none_or(|to| elapsed < to)
    }
}

/// One scripted fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub window: Window,
    /// Probability that an active fault applies to a request.
    pub rate: f64,
    /// `None`: both endpoints.
    pub endpoint: Option<Endpoint>,
    /// Applies to at most this many requests (`None`: no bound), so that a
    /// script can cut exactly one stream whatever the traffic.
    pub limit: Option<usize>,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// An HTTP error status with the endpoint's real error body.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// The port refuses connections (the listener is closed).
    Refuse,
    /// The request is read, then the connection is reset (RST).
    Reset,
    /// The request is read and never answered.
    Hang,
    /// 200 with a body (or an SSE data line) that is not JSON.
    Malformed,
    /// `after_tokens` tokens, then the connection closes without an end.
    CutStream { after_tokens: usize },
    /// A stream with this wait between tokens.
    SlowStream { token_interval: Duration },
    /// A tool call cut in the middle of its arguments.
    CutToolCall { after_tokens: usize },
    /// 400 when the last message is the assistant's (prefill).
    RejectPrefill,
    /// A prefill request gets the whole answer again, not the remainder.
    RestartContinuation,
    /// The answer is withheld after `after_tokens` tokens.
    ContentFilter { after_tokens: usize },
    /// 400 context-length error whatever the prompt's length.
    ContextLength,
    /// This much more wait before the response starts, then a normal answer.
    Latency { delay: Duration },
}

impl FaultKind {
    /// The outcome label counted in the stats.
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Status { .. } => "status",
            FaultKind::Refuse => "refuse",
            FaultKind::Reset => "reset",
            FaultKind::Hang => "hang",
            FaultKind::Malformed => "malformed",
            FaultKind::CutStream { .. } => "cut_stream",
            FaultKind::SlowStream { .. } => "slow_stream",
            FaultKind::CutToolCall { .. } => "cut_tool_call",
            FaultKind::RejectPrefill => "reject_prefill",
            FaultKind::RestartContinuation => "restart_continuation",
            FaultKind::ContentFilter { .. } => "content_filter",
            FaultKind::ContextLength => "context_length",
            FaultKind::Latency { .. } => "latency",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    server: Option<Spanned<RawServer>>,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    model: Option<String>,
    answer_tokens: Option<Spanned<i64>>,
    latency: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    token_interval: Option<Spanned<String>>,
    max_context_tokens: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    cite: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: Spanned<String>,
    status: Option<Spanned<i64>>,
    retry_after: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    limit: Option<Spanned<i64>>,
    after_tokens: Option<Spanned<i64>>,
    token_interval: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    endpoint: Option<Spanned<Endpoint>>,
}

/// Where a script error was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> MockError {
        let (line, column) = position(self.text, span.start);
        MockError::Script(ScriptError {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
        })
    }

    fn duration(&self, field: &str, value: &Spanned<String>) -> Result<Duration, MockError> {
        parse_duration(value.get_ref()).ok_or_else(|| {
            self.error(
                value.span(),
                format!(
                    "`{field}`: expected a duration like \"250ms\" or \"2s\", found {:?}",
                    value.get_ref()
                ),
            )
        })
    }

    fn count(&self, field: &str, value: &Spanned<i64>) -> Result<usize, MockError> {
        usize::try_from(*value.get_ref()).map_err(|_| {
            self.error(
                value.span(),
                format!(
                    "`{field}`: expected a count of zero or more, found {}",
                    value.get_ref()
                ),
            )
        })
    }
}

impl Script {
    /// Parses and validates a script; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Script, MockError> {
        let checker = Checker { text, path };
        let raw: RawScript = toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            checker.error(span, error.message().trim().to_owned())
        })?;
        let server = match raw.server {
            Some(server) => {
                let span = server.span();
                validate_server(&checker, server.into_inner(), span)?
            }
            None => ServerSettings::default(),
        };
        let faults = raw
            .fault
            .into_iter()
            .enumerate()
            .map(|(index, fault)| {
                let span = fault.span();
                validate_fault(&checker, index + 1, fault.into_inner(), span)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script { server, faults })
    }

    /// Reads and parses a script file.
    pub fn from_file(path: &Path) -> Result<Script, MockError> {
        let text = std::fs::read_to_string(path).map_err(|source| MockError::ReadScript {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }
}

fn validate_server(
    checker: &Checker<'_>,
    raw: RawServer,
    span: Range<usize>,
) -> Result<ServerSettings, MockError> {
    let defaults = ServerSettings::default();
    let model = raw.model.unwrap_or(defaults.model);
    if model.trim().is_empty() {
        return Err(checker.error(span, "[server] `model`: expected a model name, found \"\""));
    }
    let answer_tokens = match &raw.answer_tokens {
        Some(v) => checker.count("answer_tokens", v)?,
        None => defaults.answer_tokens,
    };
    let duration = |field: &str, value: &Option<Spanned<String>>| match value {
        Some(v) => checker.duration(field, v),
        None => Ok(Duration::ZERO),
    };
    let max_context_tokens = match &raw.max_context_tokens {
        Some(v) => {
            let n = u32::try_from(*v.get_ref()).map_err(|_| {
                checker.error(
                    v.span(),
                    format!(
                        "`max_context_tokens`: expected 0 (unlimited) or a positive count, found {}",
                        v.get_ref()
                    ),
                )
            })?;
            (n > 0).then_some(n)
        }
        None => None,
    };
    let seed = match &raw.seed {
        Some(v) => u64::try_from(*v.get_ref()).map_err(|_| {
            checker.error(
                v.span(),
                format!("`seed`: expected zero or more, found {}", v.get_ref()),
            )
        })?,
        None => defaults.seed,
    };
    Ok(ServerSettings {
        model,
        answer_tokens,
        latency: duration("latency", &raw.latency)?,
        jitter: duration("jitter", &raw.jitter)?,
        token_interval: duration("token_interval", &raw.token_interval)?,
        max_context_tokens,
        seed,
        cite: raw.cite.unwrap_or(defaults.cite),
    })
}

const KINDS: &str = "status, refuse, reset, hang, malformed, cut_stream, slow_stream, \
                     cut_tool_call, reject_prefill, restart_continuation, content_filter, \
                     context_length, latency";

fn validate_fault(
    checker: &Checker<'_>,
    number: usize,
    raw: RawFault,
    span: Range<usize>,
) -> Result<Fault, MockError> {
    let kind_name = raw.kind.get_ref().as_str();
    let here = |message: String| checker.error(span.clone(), format!("fault #{number}: {message}"));
    // Fields each kind may carry; any other kind-specific field is an error.
    let allowed: &[&str] = match kind_name {
        "status" => &["status", "retry_after"],
        "cut_stream" | "cut_tool_call" | "content_filter" => &["after_tokens"],
        "slow_stream" => &["token_interval"],
        "latency" => &["delay"],
        "refuse"
        | "reset"
        | "hang"
        | "malformed"
        | "reject_prefill"
        | "restart_continuation"
        | "context_length" => &[],
        other => {
            return Err(checker.error(
                raw.kind.span(),
                format!("fault #{number}: `kind`: expected one of {KINDS}, found {other:?}"),
            ));
        }
    };
    let present = [
        ("status", raw.status.as_ref().map(Spanned::span)),
        ("retry_after", raw.retry_after.as_ref().map(Spanned::span)),
        ("after_tokens", raw.after_tokens.as_ref().map(Spanned::span)),
        (
            "token_interval",
            raw.token_interval.as_ref().map(Spanned::span),
        ),
        ("delay", raw.delay.as_ref().map(Spanned::span)),
    ];
    for (field, field_span) in present {
        if let Some(field_span) = field_span
            && !allowed.contains(&field)
        {
            return Err(checker.error(
                field_span,
                format!("fault #{number}: `{field}` does not apply to kind = {kind_name:?}"),
            ));
        }
    }
    let duration = |field: &str, value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map(|v| checker.duration(field, v))
            .transpose()
    };
    let from = duration("from", &raw.from)?.unwrap_or(Duration::ZERO);
    let to = duration("to", &raw.to)?;
    if let (Some(to), Some(to_span)) = (to, raw.to.as_ref().map(Spanned::span))
        && to <= from
    {
        return Err(checker.error(
            to_span,
            format!("fault #{number}: `to` must come after `from` ({from:?}), found {to:?}"),
        ));
    }
    let rate = match &raw.rate {
        Some(v) if (0.0..=1.0).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return Err(checker.error(
                v.span(),
                format!(
                    "fault #{number}: `rate`: expected a probability from 0.0 to 1.0, found {}",
                    v.get_ref()
                ),
            ));
        }
        None => 1.0,
    };
    let endpoint = raw.endpoint.as_ref().map(|e| *e.get_ref());
    let limit = raw
        .limit
        .as_ref()
        .map(|v| checker.count("limit", v))
        .transpose()?;
    let after_tokens = raw
        .after_tokens
        .as_ref()
        .map(|v| checker.count("after_tokens", v))
        .transpose()?;
    let kind = match kind_name {
        "status" => {
            let Some(status) = &raw.status else {
                return Err(here(
                    "kind = \"status\" needs `status`, an HTTP status from 400 to 599".to_owned(),
                ));
            };
            let code = *status.get_ref();
            if !(400..=599).contains(&code) {
                return Err(checker.error(
                    status.span(),
                    format!(
                        "fault #{number}: `status`: expected an HTTP error status from 400 to 599, found {code}"
                    ),
                ));
            }
            FaultKind::Status {
                status: u16::try_from(code).unwrap_or(500),
                retry_after: duration("retry_after", &raw.retry_after)?,
            }
        }
        "refuse" => {
            // The listener is closed for everyone, so neither a per-request
            // probability nor a per-endpoint filter can mean anything.
            if let Some(rate) = &raw.rate {
                return Err(checker.error(
                    rate.span(),
                    format!("fault #{number}: `rate` does not apply to kind = \"refuse\": the port is closed for every connection"),
                ));
            }
            if let Some(limit) = &raw.limit {
                return Err(checker.error(
                    limit.span(),
                    format!("fault #{number}: `limit` does not apply to kind = \"refuse\": the port is closed for every connection"),
                ));
            }
            if let Some(endpoint) = &raw.endpoint {
                return Err(checker.error(
                    endpoint.span(),
                    format!("fault #{number}: `endpoint` does not apply to kind = \"refuse\": the port serves both endpoints"),
                ));
            }
            FaultKind::Refuse
        }
        "reset" => FaultKind::Reset,
        "hang" => FaultKind::Hang,
        "malformed" => FaultKind::Malformed,
        "cut_stream" => FaultKind::CutStream {
            after_tokens: after_tokens.unwrap_or(0),
        },
        "slow_stream" => FaultKind::SlowStream {
            token_interval: duration("token_interval", &raw.token_interval)?.ok_or_else(|| {
                here("kind = \"slow_stream\" needs `token_interval`, like \"200ms\"".to_owned())
            })?,
        },
        "cut_tool_call" => FaultKind::CutToolCall {
            after_tokens: after_tokens.unwrap_or(1),
        },
        "reject_prefill" => FaultKind::RejectPrefill,
        "restart_continuation" => FaultKind::RestartContinuation,
        "content_filter" => FaultKind::ContentFilter {
            after_tokens: after_tokens.unwrap_or(0),
        },
        "context_length" => FaultKind::ContextLength,
        "latency" => FaultKind::Latency {
            delay: duration("delay", &raw.delay)?.ok_or_else(|| {
                here("kind = \"latency\" needs `delay`, like \"500ms\"".to_owned())
            })?,
        },
        _ => unreachable!("every kind name was matched when the allowed fields were chosen"),
    };
    Ok(Fault {
        kind,
        window: Window { from, to },
        rate,
        endpoint,
        limit,
    })
}

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"500us"`, `"2m"`, `"0"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "us" | "µs" => number / 1_000_000.0,
        "ms" => number / 1_000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Script, String> {
        Script::from_toml(text, Path::new("faults.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_script_parses_into_validated_faults() {
        let script = parse(
            r#"
[server]
model = "m"
answer_tokens = 3
latency = "20ms"
max_context_tokens = 0
seed = 7
cite = true

[[fault]]
kind = "status"
status = 503
retry_after = "2s"
from = "5s"
to = "15s"
rate = 0.3
endpoint = "anthropic"

[[fault]]
kind = "cut_stream"
after_tokens = 5
"#,
        )
        .unwrap();
        assert_eq!(script.server.answer_tokens, 3);
        assert_eq!(script.server.latency, Duration::from_millis(20));
        assert_eq!(script.server.max_context_tokens, None);
        assert!(script.server.cite);
        assert_eq!(
            script.faults[0].kind,
            FaultKind::Status {
                status: 503,
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(script.faults[0].endpoint, Some(Endpoint::Anthropic));
        assert!(script.faults[0].window.contains(Duration::from_secs(5)));
        assert!(!script.faults[0].window.contains(Duration::from_secs(15)));
        assert_eq!(
            script.faults[1].kind,
            FaultKind::CutStream { after_tokens: 5 }
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse("[[fault]]\nkind = \"status\"\nstatus = 200\n").unwrap_err();
        assert!(e.contains("faults.toml:3:"), "{e}");
        assert!(e.contains("`status`"), "{e}");
        let e = parse("[[fault]]\nkind = \"explode\"\n").unwrap_err();
        assert!(
            e.contains("faults.toml:2:") && e.contains("found \"explode\""),
            "{e}"
        );
        let e = parse("[server]\nlatency = \"fast\"\n").unwrap_err();
        assert!(
            e.contains("faults.toml:2:") && e.contains("`latency`"),
            "{e}"
        );
        let e =
            parse("[[fault]]\nkind = \"status\"\nstatus = 503\nafter_tokens = 2\n").unwrap_err();
        assert!(e.contains("`after_tokens` does not apply"), "{e}");
        let e = parse("[[fault]]\nkind = \"refuse\"\nrate = 0.5\n").unwrap_err();
        assert!(e.contains("`rate` does not apply"), "{e}");
        let e = parse("[[fault]]\nkind = \"hang\"\nfrom = \"2s\"\nto = \"1s\"\n").unwrap_err();
        assert!(e.contains("faults.toml:4:"), "{e}");
        let e = parse("[[fault]]\nkind = \"hang\"\nsurprise = 1\n").unwrap_err();
        assert!(e.contains("surprise"), "{e}");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("500us"), Some(Duration::from_micros(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("ms"), None);
    }
}
