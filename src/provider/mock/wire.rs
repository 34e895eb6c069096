//! The server side of the two wire protocols: request bodies parsed into a
//! [`Conversation`], and responses, stream events and errors in the shapes
//! the real OpenAI Chat Completions and Anthropic Messages APIs use.
//!
//! These types are the mock's own, written from the public API references
//! and kept apart from Baton's clients on purpose: if both sides shared one
//! misreading of a protocol, tests against the mock would pass and real
//! providers would fail. The official Python SDKs parse what this module
//! produces (`tests/sdk.rs`). Requests are read leniently (unknown fields
//! are ignored); what a real API requires, the mock requires too.

use serde::Deserialize;
use serde_json::{Value, json};

use super::answer::{Conversation, Role, ToolCallReply, Turn};

/// A request the real API would refuse with 400.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub String);

/// Why a response ended, as each protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl Finish {
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            Finish::ContentFilter => "content_filter",
        }
    }

    pub fn anthropic(self) -> &'static str {
        match self {
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::ToolCalls => "tool_use",
            Finish::ContentFilter => "refusal",
        }
    }
}

// ---- OpenAI Chat Completions ----------------------------------------------

#[derive(Debug, Deserialize)]
struct OpenaiRequest {
    model: Option<String>,
    messages: Option<Vec<OpenaiMessage>>,
    stream: Option<bool>,
    stream_options: Option<OpenaiStreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    tools: Option<Vec<OpenaiTool>>,
}

#[derive(Debug, Deserialize)]
struct OpenaiStreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct OpenaiMessage {
    role: String,
    content: Option<TextOrParts>,
}

#[derive(Debug, Deserialize)]
struct OpenaiTool {
    function: Option<OpenaiFunction>,
}

#[derive(Debug, Deserialize)]
struct OpenaiFunction {
    name: String,
}

/// Message content: a string or a list of typed parts (both protocols).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TextOrParts {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    /// Anthropic `tool_result` content: a string or text blocks.
    content: Option<Value>,
}

impl TextOrParts {
    fn text(&self) -> String {
        match self {
            TextOrParts::Text(text) => text.clone(),
            TextOrParts::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p.kind.as_str() {
                    "text" => p.text.clone(),
                    "tool_result" => p.content.as_ref().map(value_text),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn only_tool_results(&self) -> bool {
        matches!(self, TextOrParts::Parts(parts)
            if !parts.is_empty() && parts.iter().all(|p| p.kind == "tool_result"))
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// Reads a Chat Completions request body.
pub fn parse_openai(body: &[u8]) -> Result<Conversation, BadRequest> {
    let request: OpenaiRequest = serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "We could not parse the JSON body of your request. ({e})"
        ))
    })?;
    if request.model.as_deref().is_none_or(str::is_empty) {
        return Err(BadRequest("you must provide a model parameter".to_owned()));
    }
    let Some(messages) = request.messages else {
        return Err(BadRequest(
            "Missing required parameter: 'messages'.".to_owned(),
        ));
    };
    if messages.is_empty() {
        return Err(BadRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".to_owned(),
        ));
    }
    let mut conversation = Conversation {
        stream: request.stream.unwrap_or(false),
        include_usage: request
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        tools: request
            .tools
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.function.map(|f| f.name))
            .collect(),
        ..Conversation::default()
    };
    let mut system = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let text = message
            .content
            .as_ref()
            .map_or_else(String::new, TextOrParts::text);
        let (role, tool_result) = match message.role.as_str() {
            "system" | "developer" => {
                system.push(text);
                continue;
            }
            "user" => (Role::User, false),
            "assistant" => (Role::Assistant, false),
            "tool" | "function" => (Role::User, true),
            other => {
                return Err(BadRequest(format!(
                    "Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'. (messages[{index}].role)"
                )));
            }
        };
        conversation.turns.push(Turn {
            role,
            text,
            tool_result,
        });
    }
    conversation.system = system.join("\n");
    Ok(conversation)
}

/// Usage as OpenAI reports it.
pub fn openai_usage(prompt: u32, completion: u32) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn openai_tool_call(call: &ToolCallReply, arguments: &str) -> Value {
    json!({
        "id": format!("call_{}", call.id_suffix),
        "type": "function",
        "function": { "name": call.name, "arguments": arguments },
    })
}

/// Identity fields every OpenAI response and chunk carries.
#[derive(Debug, Clone)]
pub struct OpenaiIds {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// A whole `chat.completion`.
pub fn openai_completion(
    ids: &OpenaiIds,
    text: &str,
    tool_call: Option<&ToolCallReply>,
    finish: Finish,
    usage: Value,
) -> Value {
    let message = match tool_call {
        Some(call) => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "tool_calls": [openai_tool_call(call, &call.arguments)],
        }),
        None => json!({ "role": "assistant", "content": text, "refusal": null }),
    };
    json!({
        "id": ids.id,
        "object": "chat.completion",
        "created": ids.created,
        "model": ids.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish.openai(),
        }],
        "usage": usage,
        "system_fingerprint": "fp_mock",
    })
}

/// One `chat.completion.chunk` with a single choice.
pub fn openai_chunk(ids: &OpenaiIds, delta: Value, finish: Option<Finish>) -> Value {
    json!({
        "id": ids.id,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": ids.model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish.map(Finish::openai),
        }],
    })
}

/// [`openai_chunk`] for a text delta, with the JSON around the token
/// serialised once.
pub struct ChunkTemplate {
    before: String,
    after: String,
}

impl ChunkTemplate {
    const MARK: &'static str = "@@token@@";

    pub fn new(ids: &OpenaiIds) -> ChunkTemplate {
        let whole = openai_chunk(ids, json!({ "content": Self::MARK }), None).to_string();
        let quoted = format!("\"{}\"", Self::MARK);
        let (before, after) = whole.split_once(&quoted).expect("the mark is in the chunk");
        ChunkTemplate {
            before: before.to_owned(),
            after: after.to_owned(),
        }
    }

    pub fn with(&self, token: &str) -> String {
        let mut chunk =
            String::with_capacity(self.before.len() + token.len() + 2 + self.after.len());
        chunk.push_str(&self.before);
        chunk.push_str(&Value::from(token).to_string());
        chunk.push_str(&self.after);
        chunk
    }
}

/// The chunk that opens a streamed tool call: id, name, empty arguments.
pub fn openai_tool_call_start(call: &ToolCallReply) -> Value {
    let mut first = openai_tool_call(call, "");
    first["index"] = json!(0);
    json!({ "role": "assistant", "content": null, "tool_calls": [first] })
}

/// A delta carrying more of the tool call's arguments.
pub fn openai_tool_call_piece(piece: &str) -> Value {
    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] })
}

/// The final chunk of `stream_options.include_usage`: no choices, usage.
pub fn openai_usage_chunk(ids: &OpenaiIds, usage: Value) -> Value {
    json!({
        "id": ids.id,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": ids.model,
        "system_fingerprint": "fp_mock",
        "choices": [],
        "usage": usage,
    })
}

/// `type` and `code` of an OpenAI error for a status.
pub fn openai_error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    }
}

/// `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

// ---- Anthropic Messages ----------------------------------------------------

#[derive(Debug, Deserialize)]
struct AnthropicRequest {
    model: Option<String>,
    messages: Option<Vec<AnthropicMessage>>,
    max_tokens: Option<u32>,
    system: Option<TextOrParts>,
    stream: Option<bool>,
    tools: Option<Vec<AnthropicTool>>,
}

#[derive(Debug, Deserialize)]
struct AnthropicMessage {
    role: String,
    content: TextOrParts,
}

#[derive(Debug, Deserialize)]
struct AnthropicTool {
    name: Option<String>,
}

/// Reads a Messages request body.
pub fn parse_anthropic(body: &[u8]) -> Result<Conversation, BadRequest> {
    let request: AnthropicRequest =
        serde_json::from_slice(body).map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
    if request.model.as_deref().is_none_or(str::is_empty) {
        return Err(BadRequest("model: Field required".to_owned()));
    }
    let Some(max_tokens) = request.max_tokens else {
        return Err(BadRequest("max_tokens: Field required".to_owned()));
    };
    let Some(messages) = request.messages else {
        return Err(BadRequest("messages: Field required".to_owned()));
    };
    if messages.is_empty() {
        return Err(BadRequest(
            "messages: at least one message is required".to_owned(),
        ));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let role = match message.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(BadRequest(format!(
                    "messages.{index}.role: Input should be 'user' or 'assistant', found '{other}'"
                )));
            }
        };
        turns.push(Turn {
            role,
            text: message.content.text(),
            tool_result: message.content.only_tool_results(),
        });
    }
    if turns
        .last()
        .is_some_and(|t| t.role == Role::Assistant && t.text.ends_with(char::is_whitespace))
    {
        return Err(BadRequest(
            "messages: final assistant content cannot end with trailing whitespace".to_owned(),
        ));
    }
    Ok(Conversation {
        system: request
            .system
            .as_ref()
            .map_or_else(String::new, TextOrParts::text),
        turns,
        tools: request
            .tools
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.name)
            .collect(),
        stream: request.stream.unwrap_or(false),
        include_usage: false,
        max_tokens: Some(max_tokens),
    })
}

/// A whole `message`.
pub fn anthropic_message(
    id: &str,
    model: &str,
    text: &str,
    tool_call: Option<&ToolCallReply>,
    finish: Finish,
    input_tokens: u32,
    output_tokens: u32,
) -> Value {
    let content = match tool_call {
        Some(call) => {
            let input: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
            json!([{
                "type": "tool_use",
                "id": format!("toolu_{}", call.id_suffix),
                "name": call.name,
                "input": input,
            }])
        }
        None if text.is_empty() => json!([]),
        None => json!([{ "type": "text", "text": text }]),
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": finish.anthropic(),
        "stop_sequence": null,
        "usage": { "input_tokens": input_tokens, "output_tokens": output_tokens },
    })
}

/// `message_start`: the message with no content yet.
pub fn anthropic_message_start(id: &str, model: &str, input_tokens: u32) -> Value {
    json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": { "input_tokens": input_tokens, "output_tokens": 1 },
        },
    })
}

/// `content_block_start` of a text block or a tool-use block.
pub fn anthropic_block_start(tool_call: Option<&ToolCallReply>) -> Value {
    let block = match tool_call {
        Some(call) => json!({
            "type": "tool_use",
            "id": format!("toolu_{}", call.id_suffix),
            "name": call.name,
            "input": {},
        }),
        None => json!({ "type": "text", "text": "" }),
    };
    json!({ "type": "content_block_start", "index": 0, "content_block": block })
}

pub fn anthropic_text_delta(text: &str) -> Value {
    json!({ "type": "content_block_delta", "index": 0,
            "delta": { "type": "text_delta", "text": text } })
}

pub fn anthropic_json_delta(partial: &str) -> Value {
    json!({ "type": "content_block_delta", "index": 0,
            "delta": { "type": "input_json_delta", "partial_json": partial } })
}

pub fn anthropic_block_stop() -> Value {
    json!({ "type": "content_block_stop", "index": 0 })
}

pub fn anthropic_message_delta(finish: Finish, output_tokens: u32) -> Value {
    json!({
        "type": "message_delta",
        "delta": { "stop_reason": finish.anthropic(), "stop_sequence": null },
        "usage": { "output_tokens": output_tokens },
    })
}

/// The error `type` Anthropic uses for a status.
pub fn anthropic_error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn anthropic_error(kind: &str, message: &str, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": { "type": kind, "message": message },
        "request_id": request_id,
    })
}

/// One SSE event; `event` is `None` for OpenAI's bare `data:` lines.
pub fn sse(event: Option<&str>, data: &str) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunk_from_the_template_is_the_chunk_built_whole() {
        let ids = OpenaiIds {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        };
        let template = ChunkTemplate::new(&ids);
        for token in ["plain ", "quote \" and \\ back", "new\nline", "ünï"] {
            let built: Value = serde_json::from_str(&template.with(token)).unwrap();
            assert_eq!(built, openai_chunk(&ids, json!({ "content": token }), None));
        }
    }

    use super::*;

    #[test]
    fn openai_requests_reduce_to_a_conversation() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"system","content":"be brief"},
                        {"role":"user","content":[{"type":"text","text":"hi"}]},
                        {"role":"assistant","content":null,"tool_calls":[]},
                        {"role":"tool","tool_call_id":"x","content":"42"}],
            "tools":[{"type":"function","function":{"name":"search","parameters":{}}}]}"#;
        let c = parse_openai(body).unwrap();
        assert_eq!(c.system, "be brief");
        assert_eq!(c.turns.len(), 3);
        assert!(c.turns[2].tool_result);
        assert!(c.stream && c.include_usage);
        assert_eq!(c.tools, vec!["search".to_owned()]);
        assert!(parse_openai(br#"{"messages":[]}"#).is_err());
    }

    #[test]
    fn anthropic_requests_need_max_tokens_and_no_trailing_space_in_prefill() {
        let c = parse_anthropic(
            br#"{"model":"m","max_tokens":9,"system":[{"type":"text","text":"s"}],
                "messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(c.prefill(), Some("a"));
        assert_eq!(c.system, "s");
        let e = parse_anthropic(br#"{"model":"m","messages":[{"role":"user","content":"q"}]}"#);
        assert_eq!(e.unwrap_err().0, "max_tokens: Field required");
        let e = parse_anthropic(
            br#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a "}]}"#,
        );
        assert!(e.unwrap_err().0.contains("trailing whitespace"));
    }
}
