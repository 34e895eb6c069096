//! Anthropic Messages client.
//!
//! `base_url` is the API root (`https://api.anthropic.com`); requests go to
//! `{base_url}/v1/messages` with `x-api-key` and `anthropic-version`.
//! Mapping from Baton's neutral messages: system messages join into the
//! top-level `system` field; tool results become `tool_result` blocks in a
//! user turn; an assistant's tool calls become `tool_use` blocks; a trailing
//! assistant message is sent as is (prefill), and a model that refuses it is
//! reported as [`ProviderError::PrefillRejected`]. Streams are read event by
//! event (`message_start` … `message_stop`); one that ends before
//! `message_stop` was cut. A `refusal` stop reason is a content-filter
//! failure; "prompt is too long" a context-length failure; HTTP 529
//! (overloaded) a retryable 5xx.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, excerpt};
use super::sse::{Decoder, SseEvent, event_stream};
use super::{
    AttemptDeadline, Backend, ChatRequest, ChatResponse, EventStream, FinishReason, MessageRole,
    ProviderError, StreamEvent, ToolCall, Usage,
};
use crate::config::ProviderId;
use crate::secret::Secret;

/// The API version Baton speaks.
pub const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; this serves requests that set none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// A provider speaking Anthropic Messages.
#[derive(Debug)]
pub struct Anthropic {
    id: ProviderId,
    client: reqwest::Client,
    endpoint: String,
    models_endpoint: String,
    model: String,
    key: Option<Secret>,
}

impl Anthropic {
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
            endpoint: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            models_endpoint: format!("{}/v1/models", base_url.trim_end_matches('/')),
            model: model.into(),
            key,
        })
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        self.authorized(self.client.post(&self.endpoint).json(body))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header("anthropic-version", API_VERSION);
        match &self.key {
            Some(key) => match reqwest::header::HeaderValue::from_str(key.expose()) {
                Ok(mut value) => {
                    // Kept out of HTTP/2 header compression tables and
                    // header Debug output.
                    value.set_sensitive(true);
                    request.header("x-api-key", value)
                }
                // A key that is not a valid header value cannot be sent;
                // the upstream answers 401, and the key is not echoed.
                Err(_) => request,
            },
            None => request,
        }
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut system = Vec::new();
        let mut messages: Vec<Value> = Vec::new();
        for m in &request.messages {
            let (role, blocks) = match m.role {
                MessageRole::System => {
                    system.push(m.content.as_str());
                    continue;
                }
                MessageRole::User => ("user", vec![json!({ "type": "text", "text": m.content })]),
                MessageRole::Tool => (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                        "content": m.content,
                    })],
                ),
                MessageRole::Assistant => {
                    let mut blocks = Vec::new();
                    if !m.content.is_empty() {
                        blocks.push(json!({ "type": "text", "text": m.content }));
                    }
                    for call in &m.tool_calls {
                        let input: Value =
                            serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                        blocks.push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input }));
                    }
                    ("assistant", blocks)
                }
            };
            // The API wants user and assistant turns to alternate; merge
            // consecutive turns of one role (e.g. several tool results).
            match messages.last_mut() {
                Some(last) if last["role"] == role => {
                    if let Some(content) = last["content"].as_array_mut() {
                        content.extend(blocks);
                    }
                }
                _ => messages.push(json!({ "role": role, "content": blocks })),
            }
        }
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(t) = request.temperature {
            // Anthropic takes 0–1 where OpenAI takes 0–2; a request that
            // failed over from an OpenAI provider must not become a 400.
            body["temperature"] = json!(t.clamp(0.0, 1.0));
        }
        if !request.stop.is_empty() {
            body["stop_sequences"] = json!(request.stop);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
                .collect();
        }
        if stream {
            body["stream"] = json!(true);
        }
        body
    }
}

impl Backend for Anthropic {
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
            parse_message(&body, http::header_str(&headers, "request-id"))
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
            let decoder = EventDecoder {
                request_id: http::header_str(response.headers(), "request-id").map(str::to_owned),
                ..EventDecoder::default()
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
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

fn error_kind(
    kind: &str,
    message: String,
    status: u16,
    retry_after: Option<Duration>,
) -> ProviderError {
    let lower = message.to_lowercase();
    if lower.contains("prompt is too long")
        || lower.contains("context window")
        || lower.contains("context limit")
        || kind == "request_too_large"
    {
        return ProviderError::ContextLength(message);
    }
    if lower.contains("prefill") || lower.contains("final assistant content") {
        return ProviderError::PrefillRejected(message);
    }
    if status == 429 || kind == "rate_limit_error" {
        return ProviderError::RateLimited {
            retry_after,
            message,
        };
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
    let kind = detail
        .as_ref()
        .and_then(|d| d.kind.clone())
        .unwrap_or_default();
    let message = detail
        .and_then(|d| d.message)
        .unwrap_or_else(|| excerpt(body));
    error_kind(&kind, message, status, http::retry_after(headers))
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

fn stop_reason(text: &str) -> Result<FinishReason, ProviderError> {
    Ok(match text {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        // An unfinished turn is not a whole answer.
        "pause_turn" => FinishReason::Other("pause_turn".into()),
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => return Err(ProviderError::ContentFilter),
        other => FinishReason::Other(other.to_owned()),
    })
}

pub(crate) fn parse_message(
    body: &[u8],
    header_id: Option<&str>,
) -> Result<ChatResponse, ProviderError> {
    let message: Message = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("message is not valid JSON: {e}")))?;
    let finish = stop_reason(message.stop_reason.as_deref().unwrap_or("end_turn"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: input.to_string(),
            }),
            Block::Other => {}
        }
    }
    Ok(ChatResponse {
        text,
        tool_calls,
        finish_reason: finish,
        usage: message.usage.map(|u| Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }),
        request_id: header_id.map(str::to_owned).or(message.id),
        model: message.model,
    })
}

/// Reads Messages stream events up to `message_stop`.
#[derive(Debug, Default)]
pub(crate) struct EventDecoder {
    request_id: Option<String>,
    model: String,
    finish: Option<FinishReason>,
    usage: Usage,
    /// Content block index -> tool-call index, for tool_use blocks.
    tool_blocks: HashMap<usize, usize>,
}

impl Decoder for EventDecoder {
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, ProviderError> {
        let name = event.event.as_deref().unwrap_or("");
        if name == "ping" || event.data.trim().is_empty() {
            return Ok(false);
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::Malformed(format!("stream event is not valid JSON: {e}"))
        })?;
        let kind = data["type"].as_str().unwrap_or(name);
        match kind {
            "message_start" => {
                let message = &data["message"];
                if let Some(model) = message["model"].as_str() {
                    self.model = model.to_owned();
                }
                if self.request_id.is_none() {
                    self.request_id = message["id"].as_str().map(str::to_owned);
                }
                self.usage.input_tokens =
                    message["usage"]["input_tokens"].as_u64().unwrap_or(0) as u32;
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0) as usize;
                let block = &data["content_block"];
                if block["type"] == "tool_use" {
                    let call = self.tool_blocks.len();
                    self.tool_blocks.insert(index, call);
                    out.push(StreamEvent::ToolCallDelta {
                        index: call,
                        id: block["id"].as_str().map(str::to_owned),
                        name: block["name"].as_str().map(str::to_owned),
                        arguments: String::new(),
                    });
                }
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0) as usize;
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            out.push(StreamEvent::Delta(text.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let call = self.tool_blocks.get(&index).copied().unwrap_or(index);
                        out.push(StreamEvent::ToolCallDelta {
                            index: call,
                            id: None,
                            name: None,
                            arguments: delta["partial_json"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.finish = Some(stop_reason(reason)?);
                }
                if let Some(output) = data["usage"]["output_tokens"].as_u64() {
                    self.usage.output_tokens = output as u32;
                }
            }
            "message_stop" => {
                out.push(StreamEvent::Finished {
                    finish_reason: self.finish.clone().unwrap_or(FinishReason::Stop),
                    usage: Some(self.usage),
                    request_id: self.request_id.clone(),
                    model: std::mem::take(&mut self.model),
                });
                return Ok(true);
            }
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("error");
                let message = data["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let status = match kind {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "invalid_request_error" => 400,
                    _ => 500,
                };
                return Err(error_kind(kind, message, status, None));
            }
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message as ChatMessage;

    fn client() -> Anthropic {
        Anthropic::new(
            ProviderId("a".into()),
            "http://127.0.0.1:9",
            "claude-x",
            None,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn system_messages_lift_out_and_turns_alternate() {
        let mut tool = ChatMessage::new(MessageRole::Tool, "42");
        tool.tool_call_id = Some("toolu_1".into());
        let mut call = ChatMessage::assistant("");
        call.tool_calls.push(ToolCall {
            id: "toolu_1".into(),
            name: "calc".into(),
            arguments: "{\"x\":1}".into(),
        });
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system("Be brief."),
                ChatMessage::user("Add"),
                call,
                tool,
                ChatMessage::user("thanks"),
            ],
            ..ChatRequest::default()
        };
        let body = client().body(&request, false);
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[1]["content"][0]["input"]["x"], 1);
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["text"], "thanks");
    }

    #[test]
    fn parses_text_and_tool_use() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"a"}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":4}}"#;
        let response = parse_message(body, None).unwrap();
        assert_eq!(response.text, "Let me check.");
        assert_eq!(response.tool_calls[0].arguments, r#"{"q":"a"}"#);
        assert_eq!(response.finish_reason, FinishReason::ToolCalls);
        assert_eq!(response.request_id.as_deref(), Some("msg_1"));
    }

    #[test]
    fn errors_map_to_kinds() {
        let headers = reqwest::header::HeaderMap::new();
        let overloaded =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let error = error_from(529, &headers, overloaded);
        assert!(error.is_retryable());
        assert_eq!(error.label(), "5xx");
        let long = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert!(matches!(
            error_from(400, &headers, long),
            ProviderError::ContextLength(_)
        ));
        let refusal = br#"{"id":"m","model":"c","content":[],"stop_reason":"refusal"}"#;
        assert_eq!(
            parse_message(refusal, None),
            Err(ProviderError::ContentFilter)
        );
    }

    #[test]
    fn event_decoder_reads_a_whole_stream() {
        let mut decoder = EventDecoder::default();
        let mut out = Vec::new();
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":7,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
            ),
        ];
        for (name, data) in events {
            let done = decoder
                .decode(
                    &SseEvent {
                        event: Some(name.into()),
                        data: data.into(),
                    },
                    &mut out,
                )
                .unwrap();
            assert!(!done);
        }
        let stop = SseEvent {
            event: Some("message_stop".into()),
            data: r#"{"type":"message_stop"}"#.into(),
        };
        assert!(decoder.decode(&stop, &mut out).unwrap());
        assert_eq!(out[0], StreamEvent::Delta("Hi".into()));
        assert!(
            matches!(&out[1], StreamEvent::ToolCallDelta { index: 0, id: Some(id), .. } if id == "toolu_1")
        );
        assert!(
            matches!(&out[2], StreamEvent::ToolCallDelta { index: 0, arguments, .. } if arguments == "{\"a\":")
        );
        assert_eq!(
            out[3],
            StreamEvent::Finished {
                finish_reason: FinishReason::ToolCalls,
                usage: Some(Usage {
                    input_tokens: 7,
                    output_tokens: 9
                }),
                request_id: Some("msg_1".into()),
                model: "claude-x".into(),
            }
        );
    }
}
