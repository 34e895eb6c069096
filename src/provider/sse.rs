//! An incremental Server-Sent Events parser for streamed completions.
//!
//! Bytes arrive in arbitrary chunks (a chunk may end mid-line or mid-UTF-8
//! character); the parser buffers until a blank line ends an event, then
//! yields it. It follows the parts of the SSE format that LLM APIs use:
//! `event:` and `data:` fields (several `data:` lines join with `\n`),
//! comments (`:` lines, used as keep-alives) ignored, `\n` or `\r\n` line
//! ends, and an optional space after the colon.

use std::collections::VecDeque;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::http::first_token_until;
use super::{AttemptDeadline, EventStream, ProviderError, StreamEvent};

/// A protocol's reading of SSE events (OpenAI chunks, Anthropic events).
pub trait Decoder: Send + 'static {
    /// Turns one SSE event into stream events pushed to `out`; returns true
    /// when the protocol's end marker was seen (the stream is complete).
    fn decode(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, ProviderError>;
}

/// Turns an HTTP response whose headers arrived into an [`EventStream`].
///
/// Deadlines: until the first token (text or tool-call part) arrives, the
/// first-token deadline applies; after it, the attempt's end. A body that
/// ends or breaks before the protocol's end marker is a cut stream, carrying
/// the text received so far so that a fallback can continue it.
pub fn event_stream<D: Decoder>(
    response: reqwest::Response,
    deadline: AttemptDeadline,
    started: Instant,
    decoder: D,
) -> EventStream {
    let state = Driver {
        body: response.bytes_stream().boxed(),
        parser: SseParser::new(),
        queue: VecDeque::new(),
        decoder,
        first_until: first_token_until(&deadline, started),
        end: deadline.end,
        started,
        got_first: false,
        tokens: 0,
        partial: String::new(),
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.queue.pop_front() {
                return Some((item, s));
            }
            if s.finished {
                return None;
            }
            let until = if s.got_first { s.end } else { s.first_until };
            let next = tokio::time::timeout_at(until, s.body.next()).await;
            match next {
                Err(_) => {
                    s.finished = true;
                    let error = if s.got_first {
                        ProviderError::Timeout(s.started.elapsed())
                    } else {
                        ProviderError::FirstTokenTimeout(s.started.elapsed())
                    };
                    return Some((Err(error), s));
                }
                Ok(None) | Ok(Some(Err(_))) => {
                    s.finished = true;
                    let error = ProviderError::StreamCut {
                        tokens: s.tokens,
                        partial: std::mem::take(&mut s.partial),
                    };
                    return Some((Err(error), s));
                }
                Ok(Some(Ok(bytes))) => s.absorb(&bytes),
            }
        }
    }))
}

struct Driver<D> {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    queue: VecDeque<Result<StreamEvent, ProviderError>>,
    decoder: D,
    first_until: Instant,
    end: Instant,
    started: Instant,
    got_first: bool,
    tokens: usize,
    partial: String,
    finished: bool,
}

impl<D: Decoder> Driver<D> {
    fn absorb(&mut self, bytes: &[u8]) {
        let mut out = Vec::new();
        for event in self.parser.feed(bytes) {
            match self.decoder.decode(&event, &mut out) {
                Ok(done) => {
                    for item in out.drain(..) {
                        match &item {
                            StreamEvent::Delta(text) => {
                                self.got_first = true;
                                self.tokens += 1;
                                self.partial.push_str(text);
                            }
                            StreamEvent::ToolCallDelta { .. } => self.got_first = true,
                            StreamEvent::Finished { .. } => {}
                        }
                        self.queue.push_back(Ok(item));
                    }
                    if done {
                        self.finished = true;
                        return;
                    }
                }
                Err(error) => {
                    self.queue.push_back(Err(error));
                    self.finished = true;
                    return;
                }
            }
        }
        if self.parser.overflowed() {
            self.queue.push_back(Err(ProviderError::Malformed(format!(
                "stream event larger than {MAX_EVENT_BYTES} bytes"
            ))));
            self.finished = true;
        }
    }
}

/// The largest event (or unfinished line) accepted.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Buffers bytes and yields complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the unfinished line or event is past [`MAX_EVENT_BYTES`]:
    /// an upstream sending an endless line is broken, not slow.
    pub fn overflowed(&self) -> bool {
        self.buffer.len() + self.current.data.len() > MAX_EVENT_BYTES
    }

    /// Adds bytes and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some(offset) = self.buffer[consumed..].iter().position(|&b| b == b'\n') {
            let end = consumed + offset;
            let mut line = &self.buffer[consumed..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            consumed = end + 1;
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    events.push(std::mem::take(&mut self.current));
                    self.has_data = false;
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        self.buffer.drain(..consumed);
        events
    }

    /// Whether bytes of an unfinished event are pending.
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty() || self.has_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_crlf() {
        let mut parser = SseParser::new();
        assert!(
            parser
                .feed(b"event: message_start\r\ndata: {\"a\"")
                .is_empty()
        );
        let events = parser.feed(b":1}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n");
        assert_eq!(
            events,
            [
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                }
            ]
        );
        assert!(!parser.has_partial());
    }

    #[test]
    fn multi_line_data_joins_with_newlines_and_utf8_split_is_safe() {
        let mut parser = SseParser::new();
        let text = "data: caf\u{e9}\ndata: second\n\n".as_bytes();
        let (a, b) = text.split_at(9); // inside the two bytes of é
        assert!(parser.feed(a).is_empty());
        let events = parser.feed(b);
        assert_eq!(events[0].data, "caf\u{e9}\nsecond");
    }
}
