//! The Anthropic Messages wire format, for clients written against the
//! Anthropic SDK: `POST /v1/messages` read into a [`ChatRequest`], answers
//! written back as a `message` or as its event stream, errors in
//! Anthropic's error shape.

use serde_json::{Value, json};

use super::openai::{Incoming, Invalid, invalid, object_with_model};
use crate::provider::{
    ChatRequest, ChatResponse, FinishReason, Message, MessageRole, ToolCall, ToolSpec, Usage,
};

/// A `tool_result` block's content: a string or text blocks.
fn result_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// One Anthropic message as Baton's messages: text and tool calls stay in
/// one message; each `tool_result` block becomes a tool message.
fn messages_of(value: &Value, index: usize, out: &mut Vec<Message>) -> Result<(), Invalid> {
    let param = format!("messages[{index}]");
    let role = match value.get("role").and_then(Value::as_str) {
        Some("user") => MessageRole::User,
        Some("assistant") => MessageRole::Assistant,
        Some(other) => {
            return Err(invalid(
                &format!("{param}.role"),
                format!("unknown role `{other}`; expected user or assistant"),
            ));
        }
        None => {
            return Err(invalid(
                &format!("{param}.role"),
                "a message needs a `role`",
            ));
        }
    };
    match value.get("content") {
        Some(Value::String(text)) => out.push(Message::new(role, text.clone())),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            let mut calls = Vec::new();
            let mut results = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let at = |field: &str| format!("{param}.content[{i}].{field}");
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(
                        block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ),
                    Some("tool_use") => {
                        let id = block
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(&at("id"), "a tool_use block needs an `id`"))?;
                        let name = block.get("name").and_then(Value::as_str).ok_or_else(|| {
                            invalid(&at("name"), "a tool_use block needs a `name`")
                        })?;
                        calls.push(ToolCall {
                            id: id.to_owned(),
                            name: name.to_owned(),
                            arguments: block
                                .get("input")
                                .cloned()
                                .unwrap_or_else(|| json!({}))
                                .to_string(),
                        });
                    }
                    Some("tool_result") => {
                        let id = block
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                invalid(
                                    &at("tool_use_id"),
                                    "a tool_result block needs the `tool_use_id` it answers",
                                )
                            })?;
                        let mut message = Message::new(
                            MessageRole::Tool,
                            result_text(block.get("content").unwrap_or(&Value::Null)),
                        );
                        message.tool_call_id = Some(id.to_owned());
                        results.push(message);
                    }
                    Some(other) => {
                        return Err(invalid(
                            &at("type"),
                            format!("content blocks of type `{other}` are not supported"),
                        ));
                    }
                    None => return Err(invalid(&at("type"), "a content block needs a `type`")),
                }
            }
            out.extend(results);
            if !text.is_empty() || !calls.is_empty() {
                let mut message = Message::new(role, text);
                message.tool_calls = calls;
                out.push(message);
            }
        }
        _ => {
            return Err(invalid(
                &format!("{param}.content"),
                "expected a string or an array of content blocks",
            ));
        }
    }
    Ok(())
}

/// Reads a Messages request body.
pub fn parse_request(body: &[u8]) -> Result<Incoming, Invalid> {
    let (object, model) = object_with_model(body)?;
    let max_tokens = object
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid("max_tokens", "`max_tokens` is required: a positive integer"))?;
    let mut messages = Vec::new();
    match object.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            let text = result_text(system);
            if !text.is_empty() {
                messages.push(Message::system(text));
            }
        }
    }
    let list = object
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("messages", "`messages` is required: a non-empty array"))?;
    for (i, message) in list.iter().enumerate() {
        messages_of(message, i, &mut messages)?;
    }
    let tools = match object.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, tool)| {
                let name = tool
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("tools[{i}].name"), "a tool needs a `name`"))?;
                Ok(ToolSpec {
                    name: name.to_owned(),
                    description: tool
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    parameters: tool
                        .get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({ "type": "object" })),
                })
            })
            .collect::<Result<_, Invalid>>()?,
        Some(_) => return Err(invalid("tools", "expected an array of tools")),
    };
    let stop = match object.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop_sequences", "expected an array of strings"))?,
        Some(_) => return Err(invalid("stop_sequences", "expected an array of strings")),
    };
    let temperature = match object.get("temperature") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| invalid("temperature", "expected a number from 0 to 1"))?
                as f32,
        ),
    };
    let stream = object
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Incoming {
        model,
        request: ChatRequest {
            messages,
            max_tokens: Some(max_tokens),
            temperature,
            stop,
            tools,
        },
        stream,
        include_usage: true,
    })
}

pub fn stop_reason(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Stop
        | FinishReason::NoAnswer
        | FinishReason::ContentFilter
        | FinishReason::Other(_) => "end_turn",
    }
}

fn input_of(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| json!({}))
}

/// A whole `message`, with Baton's facts under `baton`.
pub fn message(id: &str, model: &str, response: &ChatResponse, baton: Value) -> Value {
    let mut content = Vec::new();
    if !response.text.is_empty() {
        content.push(json!({ "type": "text", "text": response.text }));
    }
    for call in &response.tool_calls {
        content.push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input_of(&call.arguments) }));
    }
    let usage = response.usage.unwrap_or_default();
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(&response.finish_reason),
        "stop_sequence": null,
        "usage": { "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens },
        "baton": baton,
    })
}

/// An event of the stream, as SSE text.
pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Anthropic's error object.
pub fn error(kind: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}

/// The error type Anthropic uses for a status.
pub fn error_kind(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Turns stream events into Messages events: text and tool calls become
/// numbered content blocks, opened and closed in order.
#[derive(Debug)]
pub struct Blocks {
    id: String,
    model: String,
    /// The block open now: its index, and the tool call it carries.
    open: Option<(usize, Option<usize>)>,
    next: usize,
}

impl Blocks {
    pub fn new(id: String, model: String) -> Blocks {
        Blocks {
            id,
            model,
            open: None,
            next: 0,
        }
    }

    pub fn start(&self, input_tokens: u32) -> String {
        let start = json!({
            "type": "message_start",
            "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": input_tokens, "output_tokens": 0 },
            },
        });
        event("message_start", &start)
    }

    fn close(&mut self) -> String {
        match self.open.take() {
            Some((index, _)) => event(
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": index }),
            ),
            None => String::new(),
        }
    }

    fn open(&mut self, block: Value, tool: Option<usize>) -> String {
        let index = self.next;
        self.next += 1;
        self.open = Some((index, tool));
        event(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": index, "content_block": block }),
        )
    }

    pub fn text(&mut self, text: &str) -> String {
        let mut out = String::new();
        let index = match self.open {
            Some((index, None)) => index,
            _ => {
                out.push_str(&self.close());
                out.push_str(&self.open(json!({ "type": "text", "text": "" }), None));
                self.next - 1
            }
        };
        out.push_str(&event(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": text } }),
        ));
        out
    }

    pub fn tool(
        &mut self,
        call: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) -> String {
        let mut out = String::new();
        let index = match self.open {
            Some((index, Some(open_call))) if open_call == call => index,
            _ => {
                out.push_str(&self.close());
                out.push_str(&self.open(
                    json!({ "type": "tool_use", "id": id.unwrap_or_default(), "name": name.unwrap_or_default(), "input": {} }),
                    Some(call),
                ));
                self.next - 1
            }
        };
        if !arguments.is_empty() {
            out.push_str(&event(
                "content_block_delta",
                &json!({ "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": arguments } }),
            ));
        }
        out
    }

    pub fn finish(&mut self, reason: &FinishReason, usage: Option<&Usage>, baton: Value) -> String {
        let mut out = self.close();
        let output_tokens = usage.map_or(0, |u| u.output_tokens);
        out.push_str(&event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": { "stop_reason": stop_reason(reason), "stop_sequence": null },
                "usage": { "output_tokens": output_tokens },
                "baton": baton,
            }),
        ));
        out.push_str(&event("message_stop", &json!({ "type": "message_stop" })));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_system_tools_and_results_reads() {
        let body = br#"{
            "model": "main", "max_tokens": 100, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "track 7"},
                {"role": "assistant", "content": [{"type": "text", "text": "Looking."}, {"type": "tool_use", "id": "t1", "name": "track", "input": {"id": 7}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "in transit"}]}
            ],
            "tools": [{"name": "track", "input_schema": {"type": "object"}}],
            "stream": true
        }"#;
        let incoming = parse_request(body).unwrap();
        let messages = &incoming.request.messages;
        assert_eq!(messages[0].role, MessageRole::System);
        assert_eq!(messages[2].tool_calls[0].arguments, "{\"id\":7}");
        assert_eq!(messages[3].role, MessageRole::Tool);
        assert_eq!(messages[3].tool_call_id.as_deref(), Some("t1"));
        assert_eq!(incoming.request.tools[0].name, "track");
        assert!(incoming.stream);
    }

    #[test]
    fn max_tokens_is_required_as_anthropic_requires_it() {
        let error =
            parse_request(br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#)
                .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn blocks_open_and_close_in_order() {
        let mut blocks = Blocks::new("msg_1".into(), "main".into());
        let text = blocks.text("Hi")
            + &blocks.text(" there")
            + &blocks.tool(0, Some("t1"), Some("track"), "{\"id\"")
            + &blocks.tool(0, None, None, ":7}");
        let finish = blocks.finish(&FinishReason::ToolCalls, None, Value::Null);
        let all = text + &finish;
        let names: Vec<&str> = all
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            vec![
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(finish.contains("\"stop_reason\":\"tool_use\""));
    }
}
