//! The OpenAI Chat Completions wire format, as Baton's gateway speaks it:
//! requests read into a [`ChatRequest`], answers and stream chunks written
//! back, errors in OpenAI's error shape.

use serde_json::{Map, Value, json};

use crate::provider::{
    ChatRequest, ChatResponse, FinishReason, Message, MessageRole, ToolCall, ToolSpec, Usage,
};

/// A request's fields that say how to answer, beside the chat itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// A route name, or `swarm:NAME`.
    pub model: String,
    pub request: ChatRequest,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carries the usage.
    pub include_usage: bool,
}

/// A request the gateway cannot take, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub param: Option<String>,
    pub message: String,
}

pub(super) fn invalid(param: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        param: Some(param.to_owned()),
        message: message.into(),
    }
}

/// The text of a message's `content`: a string, or an array of parts of
/// which the `text` ones are joined (images are not passed on).
fn content_text(value: &Value, param: &str) -> Result<String, Invalid> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let piece = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                            invalid(
                                &format!("{param}[{i}].text"),
                                "a text part needs a string `text`",
                            )
                        })?;
                        text.push_str(piece);
                    }
                    Some(other) => {
                        return Err(invalid(
                            &format!("{param}[{i}].type"),
                            format!("content parts of type `{other}` are not supported; send text"),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            &format!("{param}[{i}].type"),
                            "a content part needs a `type`",
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            param,
            "expected a string or an array of content parts",
        )),
    }
}

fn tool_calls(value: &Value, param: &str) -> Result<Vec<ToolCall>, Invalid> {
    let Some(calls) = value.as_array() else {
        return Err(invalid(param, "expected an array of tool calls"));
    };
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let at = |field: &str| format!("{param}[{i}].{field}");
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&at("id"), "a tool call needs an `id`"))?;
            let function = call
                .get("function")
                .ok_or_else(|| invalid(&at("function"), "a tool call needs a `function`"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(&at("function.name"), "a tool call needs a function `name`")
                })?;
            let arguments = match function.get("arguments") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => "{}".to_owned(),
                Some(other) => other.to_string(),
            };
            Ok(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments,
            })
        })
        .collect()
}

fn message(value: &Value, index: usize) -> Result<Message, Invalid> {
    let param = format!("messages[{index}]");
    let Some(object) = value.as_object() else {
        return Err(invalid(
            &param,
            "expected an object with `role` and `content`",
        ));
    };
    let role = object
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{param}.role"), "a message needs a `role`"))?;
    let role = match role {
        "system" | "developer" => MessageRole::System,
        "user" => MessageRole::User,
        "assistant" => MessageRole::Assistant,
        "tool" => MessageRole::Tool,
        other => {
            return Err(invalid(
                &format!("{param}.role"),
                format!(
                    "unknown role `{other}`; expected system, developer, user, assistant or tool"
                ),
            ));
        }
    };
    let content = content_text(
        object.get("content").unwrap_or(&Value::Null),
        &format!("{param}.content"),
    )?;
    let mut message = Message::new(role, content);
    if let Some(calls) = object.get("tool_calls").filter(|v| !v.is_null()) {
        message.tool_calls = tool_calls(calls, &format!("{param}.tool_calls"))?;
    }
    if role == MessageRole::Tool {
        let id = object
            .get("tool_call_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(
                    &format!("{param}.tool_call_id"),
                    "a tool message needs the `tool_call_id` it answers",
                )
            })?;
        message.tool_call_id = Some(id.to_owned());
    }
    Ok(message)
}

fn tools(value: &Value) -> Result<Vec<ToolSpec>, Invalid> {
    let Some(tools) = value.as_array() else {
        return Err(invalid("tools", "expected an array of tools"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = |field: &str| format!("tools[{i}].{field}");
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    &at("type"),
                    "only tools of type `function` are supported",
                ));
            }
            let function = tool
                .get("function")
                .ok_or_else(|| invalid(&at("function"), "a tool needs a `function`"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&at("function.name"), "a function needs a `name`"))?;
            Ok(ToolSpec {
                name: name.to_owned(),
                description: function
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                parameters: function
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
            })
        })
        .collect()
}

/// A request body as a JSON object, with its `model`: what both wire
/// formats start with.
pub(super) fn object_with_model(body: &[u8]) -> Result<(Map<String, Value>, String), Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|error| Invalid {
        param: None,
        message: format!("the body is not valid JSON: {error}"),
    })?;
    let Value::Object(object) = value else {
        return Err(Invalid {
            param: None,
            message: "the body must be a JSON object".to_owned(),
        });
    };
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            invalid(
                "model",
                "`model` is required: a route name, or `swarm:NAME`",
            )
        })?
        .to_owned();
    Ok((object, model))
}

/// Reads a Chat Completions request body.
pub fn parse_request(body: &[u8]) -> Result<Incoming, Invalid> {
    let (object, model) = object_with_model(body)?;
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "`messages` is required: an array of messages"))?;
    if messages.is_empty() {
        return Err(invalid("messages", "`messages` must not be empty"));
    }
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let max_tokens = match object
        .get("max_completion_tokens")
        .or_else(|| object.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid("max_tokens", "expected a positive integer"))?,
        ),
    };
    let temperature = match object.get("temperature") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_f64()
                .filter(|t| (0.0..=2.0).contains(t))
                .ok_or_else(|| invalid("temperature", "expected a number from 0 to 2"))?
                as f32,
        ),
    };
    let stop = match object.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop", "expected a string or an array of strings"))?,
        Some(_) => return Err(invalid("stop", "expected a string or an array of strings")),
    };
    let tools = match object.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => tools(value)?,
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(invalid("stream", "expected true or false")),
    };
    let include_usage = object
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Incoming {
        model,
        request: ChatRequest {
            messages,
            max_tokens,
            temperature,
            stop,
            tools,
        },
        stream,
        include_usage,
    })
}

pub fn finish_reason(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Stop | FinishReason::NoAnswer | FinishReason::Other(_) => "stop",
    }
}

fn tool_call_json(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": { "name": call.name, "arguments": call.arguments },
    })
}

pub fn usage_json(usage: Option<&Usage>) -> Value {
    let usage = usage.copied().unwrap_or_default();
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    })
}

/// The ids and names every object of one answer shares.
#[derive(Debug, Clone)]
pub struct Ids {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// A whole `chat.completion`, with Baton's facts under `baton`.
pub fn completion(ids: &Ids, response: &ChatResponse, baton: Value) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if response.text.is_empty() && !response.tool_calls.is_empty() {
            Value::Null
        } else {
            json!(response.text)
        },
    );
    if !response.tool_calls.is_empty() {
        message.insert(
            "tool_calls".into(),
            Value::Array(response.tool_calls.iter().map(tool_call_json).collect()),
        );
    }
    json!({
        "id": ids.id,
        "object": "chat.completion",
        "created": ids.created,
        "model": ids.model,
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "logprobs": null,
            "finish_reason": finish_reason(&response.finish_reason),
        }],
        "usage": usage_json(response.usage.as_ref()),
        "baton": baton,
    })
}

/// One `chat.completion.chunk` with `delta` and, on the last, its finish.
pub fn chunk(ids: &Ids, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": ids.id,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": ids.model,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
    })
}

/// A tool call's part as a chunk delta.
pub fn tool_call_delta(
    index: usize,
    id: Option<&str>,
    name: Option<&str>,
    arguments: &str,
) -> Value {
    let mut call = Map::new();
    call.insert("index".into(), json!(index));
    if let Some(id) = id {
        call.insert("id".into(), json!(id));
        call.insert("type".into(), json!("function"));
    }
    let mut function = Map::new();
    if let Some(name) = name {
        function.insert("name".into(), json!(name));
    }
    function.insert("arguments".into(), json!(arguments));
    call.insert("function".into(), Value::Object(function));
    json!({ "tool_calls": [Value::Object(call)] })
}

/// The last chunk of `stream_options.include_usage`: no choices, the usage.
pub fn usage_chunk(ids: &Ids, usage: Option<&Usage>, baton: Value) -> Value {
    json!({
        "id": ids.id,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": ids.model,
        "choices": [],
        "usage": usage_json(usage),
        "baton": baton,
    })
}

/// OpenAI's error object.
pub fn error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_reads_with_tools_parts_and_options() {
        let body = br#"{
            "model": "support",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Where is "}, {"type": "text", "text": "my parcel?"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{\"id\":7}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "in transit"}
            ],
            "tools": [{"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}],
            "max_completion_tokens": 64, "temperature": 0.2, "stop": "END",
            "stream": true, "stream_options": {"include_usage": true}
        }"#;
        let incoming = parse_request(body).unwrap();
        assert_eq!(incoming.model, "support");
        assert!(incoming.stream && incoming.include_usage);
        let request = incoming.request;
        assert_eq!(request.messages.len(), 4);
        assert_eq!(request.messages[0].role, MessageRole::System);
        assert_eq!(request.messages[1].content, "Where is my parcel?");
        assert_eq!(request.messages[2].tool_calls[0].arguments, "{\"id\":7}");
        assert_eq!(request.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(request.tools[0].name, "track");
        assert_eq!(request.max_tokens, Some(64));
        assert_eq!(request.stop, vec!["END".to_owned()]);
    }

    #[test]
    fn a_bad_field_is_named() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"not json", None),
            (br#"{"messages": [{"role": "user", "content": "hi"}]}"#, Some("model")),
            (br#"{"model": "m", "messages": []}"#, Some("messages")),
            (br#"{"model": "m", "messages": [{"role": "robot", "content": "hi"}]}"#, Some("messages[0].role")),
            (br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}"#, Some("max_tokens")),
            (br#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#, Some("messages[0].tool_call_id")),
        ];
        for (body, param) in cases {
            let error = parse_request(body).unwrap_err();
            assert_eq!(error.param.as_deref(), param, "{}", error.message);
        }
    }
}
