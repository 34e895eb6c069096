//! Providers: one [`Backend`] per upstream, speaking its real wire protocol.
//!
//! A backend turns a [`ChatRequest`] into a [`ChatResponse`] (or a stream of
//! [`StreamEvent`]s) under an [`AttemptDeadline`], and reports every failure
//! as a [`ProviderError`] whose kind decides what the routing layer does
//! next (retry, fail over, give up). Backends never retry: retries live in
//! `routing/` only, so that one layer owns the budget.
//!
//! Kinds of backend:
//! - [`openai`]: OpenAI Chat Completions and every compatible server;
//! - [`anthropic`]: Anthropic Messages;
//! - [`extractive`]: answers from the swarm's knowledge base, needs no model;
//! - [`mock`]: not a backend but the scripted-fault upstream server that
//!   tests, examples and benchmarks call through the two real clients.

pub mod anthropic;
pub mod extractive;
pub mod http;
pub mod local;
pub mod mock;
pub mod openai;
pub mod sse;

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::ProviderId;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering an assistant's `tool_calls`.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: MessageRole,
    pub content: String,
    /// Tool calls the assistant made in this message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `Tool` message: which call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: MessageRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(MessageRole::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(MessageRole::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(MessageRole::Assistant, content)
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the JSON text the model produced.
    pub arguments: String,
}

/// What is asked of a provider in one attempt.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
}

/// Why a model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// The backend could not answer and said so plainly (the extractive
    /// surrogate with no matching passage); counted apart from answers.
    NoAnswer,
    Other(String),
}

/// Tokens counted by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// Characters per token for an estimate: about right for English text
/// under the common BPE vocabularies.
const CHARS_PER_TOKEN: usize = 4;

impl Usage {
    /// An estimate for a provider that reported no usage (some local
    /// servers send none in a stream): key limits, budgets and costs would
    /// otherwise count such answers as free.
    pub fn estimate(request: &ChatRequest, response: &ChatResponse) -> Usage {
        let tokens =
            |chars: usize| u32::try_from(chars.div_ceil(CHARS_PER_TOKEN)).unwrap_or(u32::MAX);
        let input: usize = request
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        let output = response.text.chars().count()
            + response
                .tool_calls
                .iter()
                .map(|c| c.name.chars().count() + c.arguments.chars().count())
                .sum::<usize>();
        Usage {
            input_tokens: tokens(input),
            output_tokens: tokens(output),
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Option<Usage>,
    /// The provider's own id for the request (for support tickets).
    pub request_id: Option<String>,
    /// The model that answered, as the provider named it.
    pub model: String,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// More answer text.
    Delta(String),
    /// Part of a tool call; `index` says which call, `id` and `name` come
    /// with its first part, `arguments` accumulate.
    ToolCallDelta {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The stream ended properly. A stream that ends without this event was
    /// cut: the backend reports [`ProviderError::StreamCut`] instead.
    Finished {
        finish_reason: FinishReason,
        usage: Option<Usage>,
        request_id: Option<String>,
        model: String,
    },
}

/// A streamed answer.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// Tool calls one answer may carry; more is treated as malformed.
pub const MAX_TOOL_CALLS: usize = 128;

/// Tool calls assembled from streamed parts, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallParts(Vec<ToolCall>);

impl ToolCallParts {
    /// Adds one part: `id` and `name` come with a call's first part, the
    /// argument text accumulates.
    pub fn push(
        &mut self,
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: &str,
    ) -> Result<(), ProviderError> {
        // The index is upstream text: a call index far past the calls seen
        // so far is malformed, not a reason to allocate.
        if index > self.0.len() + MAX_TOOL_CALLS {
            return Err(ProviderError::Malformed(format!(
                "tool call index {index} out of range"
            )));
        }
        while self.0.len() <= index {
            self.0.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut self.0[index];
        if let Some(id) = id {
            call.id = id;
        }
        if let Some(name) = name {
            call.name = name;
        }
        call.arguments.push_str(arguments);
        Ok(())
    }

    pub fn calls(&self) -> &[ToolCall] {
        &self.0
    }

    pub fn into_calls(self) -> Vec<ToolCall> {
        self.0
    }
}

/// Reads a whole stream into one response: text joined, tool-call parts
/// assembled by index. A stream that fails part-way returns its error (a
/// cut stream carries the partial text).
pub async fn collect(mut stream: EventStream) -> Result<ChatResponse, ProviderError> {
    use futures_util::StreamExt;
    let mut text = String::new();
    let mut calls = ToolCallParts::default();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta(delta) => text.push_str(&delta),
            StreamEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            } => calls.push(index, id, name, &arguments)?,
            StreamEvent::Finished {
                finish_reason,
                usage,
                request_id,
                model,
            } => {
                return Ok(ChatResponse {
                    text,
                    tool_calls: calls.into_calls(),
                    finish_reason,
                    usage,
                    request_id,
                    model,
                });
            }
        }
    }
    // The backends end every stream with `Finished` or an error; a stream
    // that simply stops was cut.
    Err(ProviderError::StreamCut {
        tokens: 0,
        partial: text,
    })
}

/// Time limits of one attempt. The first-token limit catches the most
/// common real outage: a provider that accepts the connection and stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptDeadline {
    /// Until the response headers (non-streaming: the whole body) or the
    /// first streamed token.
    pub first_token: Duration,
    /// When the attempt must be over, whatever happens.
    pub end: Instant,
}

impl AttemptDeadline {
    pub fn new(first_token: Duration, total: Duration) -> Self {
        Self {
            first_token,
            end: Instant::now() + total,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }
}

/// One upstream that can answer chat requests.
///
/// Methods return boxed futures so that backends can live behind
/// `Arc<dyn Backend>` in the provider pool.
pub trait Backend: Send + Sync + fmt::Debug {
    fn id(&self) -> &ProviderId;

    /// A whole answer at once.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;

    /// An answer as it is produced. The future resolves when the stream is
    /// open (headers received); the first-token deadline keeps running
    /// until the first event.
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
        deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>>;

    /// A liveness check that spends no tokens: the models list. Backends
    /// with nothing remote to check are always up.
    fn probe(&self, deadline: AttemptDeadline) -> BoxFuture<'_, Result<(), ProviderError>> {
        let _ = deadline;
        Box::pin(async { Ok(()) })
    }
}

/// Why an attempt failed. The variant is the failure's kind; routing decides
/// from it whether to retry, fail over, or stop.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection reset or closed: {0}")]
    Reset(String),
    #[error("no first token within {0:?}")]
    FirstTokenTimeout(Duration),
    #[error("attempt deadline passed after {0:?}")]
    Timeout(Duration),
    #[error("rate limited (HTTP 429){}: {message}", retry_after_text(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("HTTP {status}{}: {message}", retry_after_text(.retry_after))]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("prompt too long for the model's context: {0}")]
    ContextLength(String),
    #[error("answer withheld by the provider's content filter")]
    ContentFilter,
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("stream cut after {tokens} token(s) without an end")]
    StreamCut {
        tokens: usize,
        /// The text received before the cut, so a fallback can continue.
        partial: String,
    },
    #[error("provider refuses a trailing assistant message (prefill): {0}")]
    PrefillRejected(String),
    #[error("answer broke the agent's output schema: {0}")]
    Contract(String),
    #[error("no API key: environment variable {0} is not set")]
    MissingKey(String),
    #[error("cannot answer: {0}")]
    Unavailable(String),
    /// Refused inside Baton, before any call: the provider's concurrency
    /// slots and queue are full. Not the provider's failure, so its health
    /// is not charged, and the route moves on as a spill-over.
    #[error("saturated: {0}")]
    Saturated(String),
    /// Refused inside Baton, before any call: the breaker opened (or its
    /// one half-open trial was taken) after the router chose the provider.
    #[error("circuit breaker open")]
    BreakerOpen,
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| format!(", retry after {d:?}"))
}

impl ProviderError {
    /// Whether trying the same provider again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect(_)
            | ProviderError::Reset(_)
            | ProviderError::FirstTokenTimeout(_)
            | ProviderError::Timeout(_)
            | ProviderError::RateLimited { .. }
            | ProviderError::Malformed(_)
            | ProviderError::StreamCut { .. } => true,
            ProviderError::Status { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }

    /// The HTTP status the provider answered with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::RateLimited { .. } => Some(429),
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the provider asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A low-cardinality label for metrics and the journal.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::Connect(_) => "connect",
            ProviderError::Reset(_) => "reset",
            ProviderError::FirstTokenTimeout(_) => "first_token_timeout",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::RateLimited { .. } => "429",
            ProviderError::Status { status, .. } if *status >= 500 => "5xx",
            ProviderError::Status { status, .. } if *status < 400 => "redirect",
            ProviderError::Status { .. } => "4xx",
            ProviderError::ContextLength(_) => "context_length",
            ProviderError::ContentFilter => "content_filter",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::StreamCut { .. } => "cut_stream",
            ProviderError::PrefillRejected(_) => "prefill_rejected",
            ProviderError::Contract(_) => "contract",
            ProviderError::MissingKey(_) => "missing_key",
            ProviderError::Unavailable(_) => "unavailable",
            ProviderError::Saturated(_) => "saturated",
            ProviderError::BreakerOpen => "breaker_open",
        }
    }

    /// The labels of the errors that end an attempt inside Baton, before
    /// the provider is called: they say nothing of its errors or latency.
    pub const NEVER_SENT: [&'static str; 2] = ["saturated", "breaker_open"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_estimated_from_characters_when_a_provider_reports_none() {
        let request = ChatRequest {
            messages: vec![
                Message::system("Be brief."),
                Message::user("Where is my parcel?"),
            ],
            ..ChatRequest::default()
        };
        let response = ChatResponse {
            text: "It left the depot this morning.".into(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "track".into(),
                arguments: r#"{"id":"42"}"#.into(),
            }],
            finish_reason: FinishReason::Stop,
            usage: None,
            request_id: None,
            model: "m".into(),
        };
        // 9 + 19 characters in; 31 of text, 5 + 11 of the call out.
        assert_eq!(
            Usage::estimate(&request, &response),
            Usage {
                input_tokens: 7,
                output_tokens: 12
            }
        );
        let silent = ChatRequest::default();
        let empty = ChatResponse {
            text: String::new(),
            tool_calls: Vec::new(),
            ..response
        };
        assert_eq!(Usage::estimate(&silent, &empty), Usage::default());
    }

    #[test]
    fn labels_and_retryability_follow_the_kind() {
        let e = ProviderError::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(1)),
            message: "overloaded".into(),
        };
        assert_eq!(e.label(), "5xx");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(e.to_string(), "HTTP 503, retry after 1s: overloaded");
        let bad_request = ProviderError::Status {
            status: 400,
            retry_after: None,
            message: "bad".into(),
        };
        assert!(!bad_request.is_retryable());
        assert_eq!(ProviderError::ContentFilter.label(), "content_filter");
    }
}
