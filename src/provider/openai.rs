//! OpenAI Chat Completions client, for OpenAI and every compatible server
//! (OpenRouter, vLLM, llama.cpp's server, Ollama's `/v1`, LM Studio).
//!
//! `base_url` is the API root including the version (`https://api.openai.com/v1`,
//! `http://127.0.0.1:11434/v1`); requests go to `{base_url}/chat/completions`.
//! The request uses `max_tokens` (not `max_completion_tokens`) because that is
//! what compatible servers understand. Streams ask for usage with
//! `stream_options.include_usage` and end at `data: [DONE]`; one that stops
//! before it was cut. A `content_filter` finish is reported as
//! [`ProviderError::ContentFilter`] so that routing can try another provider;
//! an error whose code is `context_length_exceeded` as
//! [`ProviderError::ContextLength`].

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{self, excerpt};
use super::sse::{Decoder, SseEvent, event_stream};
use super::{
    AttemptDeadline, Backend, ChatRequest, ChatResponse, EventStream, FinishReason, MessageRole,
    ProviderError, StreamEvent, ToolCall, Usage,
};
use crate::config::ProviderId;
use crate::secret::Secret;

/// A provider speaking OpenAI Chat Completions.
#[derive(Debug)]
pub struct OpenAi {
    id: ProviderId,
    client: reqwest::Client,
    endpoint: String,
    models_endpoint: String,
    model: String,
    key: Option<Secret>,
}

impl OpenAi {
    /// A client for `model` at `base_url`; `key` is sent as a bearer token
    /// (local servers need none).
    pub fn new(
        id: ProviderId,
        base_url: &str,
        model: impl Into<String>,
        key: Option<Secret>,
        connect_timeout: Duration,
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            id,
            client: http::client(connect_timeout)?,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            models_endpoint: format!("{}/models", base_url.trim_end_matches('/')),
            model: model.into(),
            key,
        })
    }

    fn post(&self, body: &OutRequest<'_>) -> reqwest::RequestBuilder {
        self.authorized(self.client.post(&self.endpoint).json(body))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    fn body<'a>(&'a self, request: &'a ChatRequest, stream: bool) -> OutRequest<'a> {
        OutRequest {
            model: &self.model,
            messages: request.messages.iter().map(OutMessage::from).collect(),
            stream,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stop: &request.stop,
            tools: request
                .tools
                .iter()
                .map(|t| OutTool {
                    kind: "function",
                    function: OutFunction {
                        name: &t.name,
                        description: &t.description,
                        parameters: &t.parameters,
                    },
                })
                .collect(),
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }
}

/// The Chat Completions request body, borrowing from the request: a prompt
/// of many kilobytes is serialised once, not copied into a JSON tree first.
#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> From<&'a super::Message> for OutMessage<'a> {
    fn from(m: &'a super::Message) -> Self {
        OutMessage {
            role: match m.role {
                MessageRole::System => "system",
                MessageRole::User => "user",
                MessageRole::Assistant => "assistant",
                MessageRole::Tool => "tool",
            },
            content: &m.content,
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| OutToolCall {
                    id: &c.id,
                    kind: "function",
                    function: OutCall {
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                })
                .collect(),
            tool_call_id: m.tool_call_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutCall<'a>,
}

#[derive(Serialize)]
struct OutCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

impl Backend for OpenAi {
    fn id(&self) -> &ProviderId {
        &self.id
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let post = self.post(&self.body(request, false));
            let (headers, body) = http::send_whole(post, deadline, error_from).await?;
            parse_completion(&body, http::header_str(&headers, "x-request-id"))
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
        deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let post = self.post(&self.body(request, true));
            let (response, started) = http::post_stream(post, deadline, error_from).await?;
            let decoder = ChunkDecoder {
                request_id: http::header_str(response.headers(), "x-request-id").map(str::to_owned),
                ..ChunkDecoder::default()
            };
            Ok(event_stream(response, deadline, started, decoder))
        })
    }

    fn probe(&self, deadline: AttemptDeadline) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let get = self.authorized(self.client.get(&self.models_endpoint));
            http::send_whole(get, deadline, error_from)
                .await
                .map(|_| ())
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    code: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Maps a non-2xx answer to its kind.
pub(crate) fn error_from(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> ProviderError {
    if (300..400).contains(&status) {
        return http::redirect_refused(status);
    }
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error);
    let message = detail
        .as_ref()
        .and_then(|d| d.message.clone())
        .unwrap_or_else(|| excerpt(body));
    let code = detail
        .as_ref()
        .and_then(|d| d.code.as_ref())
        .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
        .unwrap_or_default();
    let kind = detail.and_then(|d| d.kind).unwrap_or_default();
    let retry_after = http::retry_after(headers);
    if code == "context_length_exceeded" || message.contains("maximum context length") {
        return ProviderError::ContextLength(message);
    }
    if status == 429 {
        return ProviderError::RateLimited {
            retry_after,
            message,
        };
    }
    // Compatible servers that refuse a trailing assistant message say so.
    if status == 400 && message.to_lowercase().contains("prefill") {
        return ProviderError::PrefillRejected(message);
    }
    let message = if kind.is_empty() {
        message
    } else {
        format!("{kind}: {message}")
    };
    ProviderError::Status {
        status,
        retry_after,
        message,
    }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: String,
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }
    }
}

fn finish_reason(text: &str) -> FinishReason {
    match text {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn parse_completion(
    body: &[u8],
    header_id: Option<&str>,
) -> Result<ChatResponse, ProviderError> {
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("chat completion is not valid JSON: {e}")))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("chat completion has no choices".into()))?;
    let finish = finish_reason(choice.finish_reason.as_deref().unwrap_or("stop"));
    if finish == FinishReason::ContentFilter {
        return Err(ProviderError::ContentFilter);
    }
    let tool_calls = choice
        .message
        .tool_calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name.unwrap_or_default(),
            arguments: c.function.arguments.unwrap_or_default(),
        })
        .collect();
    Ok(ChatResponse {
        text: choice.message.content.unwrap_or_default(),
        tool_calls,
        finish_reason: finish,
        usage: completion.usage.map(Usage::from),
        request_id: header_id.map(str::to_owned).or(completion.id),
        model: completion.model,
    })
}

#[derive(Deserialize)]
struct Chunk {
    /// vLLM and OpenRouter report a failure inside the stream this way.
    error: Option<ErrorDetail>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ChunkToolCall>,
}

#[derive(Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    #[serde(default)]
    function: WireFunction,
}

/// Reads `chat.completion.chunk` events up to `[DONE]`.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    request_id: Option<String>,
    model: String,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl Decoder for ChunkDecoder {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push(StreamEvent::Finished {
                finish_reason: self.finish.clone().unwrap_or(FinishReason::Stop),
                usage: self.usage,
                request_id: self.request_id.clone(),
                model: std::mem::take(&mut self.model),
            });
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            ProviderError::Malformed(format!("stream chunk is not valid JSON: {e}"))
        })?;
        if let Some(error) = chunk.error {
            let message = error.message.unwrap_or_else(|| "error in stream".into());
            if message.contains("maximum context length") {
                return Err(ProviderError::ContextLength(message));
            }
            return Err(ProviderError::Status {
                status: 500,
                retry_after: None,
                message: format!("error in stream: {message}"),
            });
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if self.request_id.is_none() {
            self.request_id = chunk.id;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Delta(text));
            }
            for call in choice.delta.tool_calls {
                out.push(StreamEvent::ToolCallDelta {
                    index: call.index,
                    id: call.id,
                    name: call.function.name,
                    arguments: call.function.arguments.unwrap_or_default(),
                });
            }
            if let Some(reason) = choice.finish_reason {
                let reason = finish_reason(&reason);
                match reason {
                    FinishReason::ContentFilter => return Err(ProviderError::ContentFilter),
                    // OpenRouter ends a failed generation this way: a
                    // failure, not a short answer.
                    FinishReason::Other(ref other) if other == "error" => {
                        return Err(ProviderError::Status {
                            status: 502,
                            retry_after: None,
                            message: "the upstream model failed mid-stream (finish_reason: error)"
                                .into(),
                        });
                    }
                    _ => self.finish = Some(reason),
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_completion_with_tool_calls_and_usage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_a","type":"function","function":{"name":"lookup","arguments":"{\"q\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        let response = parse_completion(body, Some("req-9")).unwrap();
        assert_eq!(response.finish_reason, FinishReason::ToolCalls);
        assert_eq!(response.tool_calls[0].name, "lookup");
        assert_eq!(response.tool_calls[0].arguments, "{\"q\":1}");
        assert_eq!(
            response.usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 5
            })
        );
        assert_eq!(response.request_id.as_deref(), Some("req-9"));
    }

    #[test]
    fn error_bodies_map_to_kinds() {
        let headers = reqwest::header::HeaderMap::new();
        let context = br#"{"error":{"message":"too long","type":"invalid_request_error","param":null,"code":"context_length_exceeded"}}"#;
        assert!(matches!(
            error_from(400, &headers, context),
            ProviderError::ContextLength(_)
        ));
        let mut limited = reqwest::header::HeaderMap::new();
        limited.insert("retry-after", "3".parse().unwrap());
        let error = error_from(
            429,
            &limited,
            br#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
        );
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(error.label(), "429");
        assert_eq!(
            error_from(502, &headers, b"<html>bad gateway</html>").label(),
            "5xx"
        );
        assert_eq!(error_from(307, &headers, b"").status(), Some(307));
    }

    #[test]
    fn chunk_decoder_streams_text_and_tool_parts_then_finishes_at_done() {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        let event = |data: &str| SseEvent {
            event: None,
            data: data.into(),
        };
        assert!(!decoder.decode(&event(r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#), &mut out).unwrap());
        decoder.decode(&event(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a"}}]}}]}"#), &mut out).unwrap();
        decoder
            .decode(
                &event(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
                &mut out,
            )
            .unwrap();
        decoder.decode(&event(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#), &mut out).unwrap();
        assert!(decoder.decode(&event("[DONE]"), &mut out).unwrap());
        assert_eq!(out[0], StreamEvent::Delta("Hel".into()));
        assert!(matches!(&out[1], StreamEvent::ToolCallDelta { name: Some(n), .. } if n == "f"));
        assert_eq!(
            out[2],
            StreamEvent::Finished {
                finish_reason: FinishReason::Stop,
                usage: Some(Usage {
                    input_tokens: 3,
                    output_tokens: 2
                }),
                request_id: Some("c1".into()),
                model: "m".into(),
            }
        );
    }

    #[test]
    fn errors_inside_a_stream_are_failures_not_short_answers() {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        let error = SseEvent {
            event: None,
            data: r#"{"error":{"message":"engine crashed","type":"server_error"}}"#.into(),
        };
        assert_eq!(decoder.decode(&error, &mut out).unwrap_err().label(), "5xx");
        let finished = SseEvent {
            event: None,
            data: r#"{"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}"#.into(),
        };
        assert_eq!(
            decoder.decode(&finished, &mut out).unwrap_err().label(),
            "5xx"
        );
    }

    #[test]
    fn malformed_chunk_and_content_filter_are_errors() {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        let bad = SseEvent {
            event: None,
            data: "{not json".into(),
        };
        assert!(matches!(
            decoder.decode(&bad, &mut out),
            Err(ProviderError::Malformed(_))
        ));
        let filtered = SseEvent {
            event: None,
            data: r#"{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}"#.into(),
        };
        assert_eq!(
            decoder.decode(&filtered, &mut out),
            Err(ProviderError::ContentFilter)
        );
    }
}
