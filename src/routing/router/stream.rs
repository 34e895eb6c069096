//! Streaming through the router, with mid-stream failover.
//!
//! [`Router::stream_to`] walks the chain like [`Router::complete`] but
//! forwards text to the caller as it arrives. When a provider dies after
//! some text went out, the next provider is asked to continue it: the
//! request is sent again with the text so far as a trailing assistant
//! message (a prefill), and the caller sees one continuous answer. Two ways
//! providers differ are handled:
//! - a provider that refuses a prefill (HTTP 400) is asked once more, on
//!   the spot, without it, and its answer is trimmed of the text already
//!   sent when it starts with it;
//! - a provider that restarts from the beginning instead of continuing is
//!   trimmed the same way: the first bytes of every continuation are held
//!   back until they can be compared with what was sent.
//!
//! Tool calls are never spliced: their parts are held until the stream
//! finishes, so a stream cut inside a tool call sends nothing of it and the
//! next provider is asked for the whole call.
//!
//! Limits, by nature: a continuation is written by another model, whose
//! style may differ; a provider that neither continues nor restarts word
//! for word (it paraphrases) cannot be trimmed, and its text follows what
//! was sent.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    AttemptReason, AttemptRecord, Outcome, RouteError, RouteRequest, Router, ServedBy, Step, Walk,
    fails_over,
};
use crate::provider::{
    AttemptDeadline, ChatRequest, ChatResponse, Message, ProviderError, StreamEvent, ToolCall,
    ToolCallParts, Usage,
};
use crate::routing::decision::ErrorKind;

/// What the caller has been sent so far, and how to join what comes next.
#[derive(Debug, Default)]
struct Splice {
    /// Text already forwarded.
    sent: String,
}

impl Splice {
    /// The request for the next attempt: a prefill with the text so far,
    /// unless nothing was sent or `prefill` is off.
    fn request(&self, original: &ChatRequest, prefill: bool) -> ChatRequest {
        let mut request = original.clone();
        if prefill && !self.sent.is_empty() {
            // The Anthropic API refuses trailing whitespace in a prefill;
            // the caller already has it, so the continuation needs none.
            request
                .messages
                .push(Message::assistant(self.sent.trim_end()));
        }
        request
    }
}

/// Joins one attempt's text onto what was sent.
struct Joiner<'a> {
    splice: &'a mut Splice,
    /// Text of this attempt held back until it can be compared with `sent`.
    held: String,
    /// Whether the comparison is done and text now flows through.
    flowing: bool,
    /// Text this attempt forwarded.
    forwarded: String,
}

impl<'a> Joiner<'a> {
    fn new(splice: &'a mut Splice) -> Self {
        let flowing = splice.sent.is_empty();
        Self {
            splice,
            held: String::new(),
            flowing,
            forwarded: String::new(),
        }
    }

    /// Takes a delta; returns the text to forward now.
    fn push(&mut self, delta: &str) -> String {
        if self.flowing {
            return self.forward(delta.to_owned());
        }
        self.held.push_str(delta);
        if self.held.len() < self.splice.sent.len()
            && self.splice.sent.starts_with(self.held.as_str())
        {
            // Still possibly a restart from the beginning: keep holding.
            return String::new();
        }
        self.release()
    }

    /// Ends the hold: drops a repeated beginning, joins whitespace.
    fn release(&mut self) -> String {
        self.flowing = true;
        let held = std::mem::take(&mut self.held);
        let text = match held.strip_prefix(self.splice.sent.as_str()) {
            // The provider restarted from the beginning: skip what was sent.
            Some(rest) => rest.to_owned(),
            None if held.len() < self.splice.sent.len()
                && self.splice.sent.starts_with(held.as_str()) =>
            {
                String::new()
            }
            None => {
                // A continuation. The caller already has the whitespace
                // that ended the text so far.
                if self.splice.sent.ends_with(char::is_whitespace) {
                    held.trim_start().to_owned()
                } else {
                    held
                }
            }
        };
        self.forward(text)
    }

    /// Ends the attempt's text: anything still held back is released.
    fn finish(&mut self) -> String {
        if self.flowing {
            String::new()
        } else {
            self.release()
        }
    }

    fn forward(&mut self, text: String) -> String {
        self.splice.sent.push_str(&text);
        self.forwarded.push_str(&text);
        text
    }
}

impl Router {
    /// Routes one request, sending its answer to `sink` as it arrives (text
    /// deltas, whole tool calls, then `Finished`), and returns the outcome
    /// with the whole text. A caller that hangs up (drops the receiver)
    /// ends the upstream call.
    pub async fn stream_to(
        &self,
        request: RouteRequest,
        sink: mpsc::Sender<StreamEvent>,
    ) -> Result<Outcome, RouteError> {
        let request = self.capped(request);
        if request.contract.is_some() {
            // An answer under a data contract is checked whole before any
            // of it goes out: a broken one moves to the next provider, and
            // the caller must not have seen it.
            let outcome = self.complete(request).await?;
            send_tool_calls(&sink, &outcome.response.tool_calls).await;
            send_whole(&sink, &outcome.response.text, &outcome.response).await;
            return Ok(outcome);
        }
        let Walk {
            route,
            started,
            total_end,
            fingerprint,
            policy,
            mut state,
            mut attempts,
            mut snapshots,
            first_choice,
            chain,
        } = self.walk(&request)?;
        let mut splice = Splice::default();

        loop {
            let (position, reason) = match self
                .next_step(
                    route,
                    &chain,
                    &request,
                    &policy,
                    &mut state,
                    &mut snapshots,
                    total_end,
                )
                .await
            {
                Step::Again => continue,
                Step::Attempt { position, reason } => (position, reason),
                Step::Fallback(fallback) => {
                    let answer = self
                        .final_answer(fallback, &fingerprint, &request, started, &mut attempts)
                        .await;
                    if let Some((mut response, served_by)) = answer {
                        let mut joiner = Joiner::new(&mut splice);
                        let mut text = joiner.push(&response.text);
                        text.push_str(&joiner.finish());
                        send_whole(&sink, &text, &response).await;
                        response.text = splice.sent.clone();
                        return Ok(Outcome::from_final_fallback(
                            request.trace_id,
                            response,
                            served_by,
                            attempts,
                        ));
                    }
                    continue;
                }
                Step::Exhausted => return Err(RouteError::exhausted(&request, attempts)),
            };
            let index = chain[usize::from(position)];
            let handle = self.pool.get(index);
            let mut result = self
                .stream_attempt(
                    handle,
                    &request,
                    route,
                    reason,
                    started,
                    total_end,
                    &mut splice,
                    true,
                    &sink,
                )
                .await;
            if let (_, Err(ProviderError::PrefillRejected(_))) = &result {
                // This provider cannot continue a prefill: ask it again for
                // the whole answer and trim what was already sent.
                attempts.push(result.0);
                result = self
                    .stream_attempt(
                        handle,
                        &request,
                        route,
                        reason,
                        started,
                        total_end,
                        &mut splice,
                        false,
                        &sink,
                    )
                    .await;
            }
            let (record, outcome) = result;
            attempts.push(record);
            match outcome {
                Ok(mut response) => {
                    response.text = splice.sent.clone();
                    self.cache
                        .put(fingerprint, response.clone(), Instant::now());
                    return Ok(Outcome {
                        trace_id: request.trace_id,
                        refusal: false,
                        response,
                        served_by: ServedBy::Provider {
                            id: handle.id().clone(),
                        },
                        fallback: Some(index) != first_choice,
                        degraded: false,
                        attempts,
                    });
                }
                Err(error) => {
                    if sink.is_closed() {
                        // The caller hung up: nobody is left to answer.
                        return Err(RouteError::exhausted(&request, attempts));
                    }
                    if !fails_over(&route.spec, &error) {
                        return Err(RouteError::Refused {
                            trace_id: request.trace_id,
                            provider: handle.id().clone(),
                            error,
                            attempts,
                        });
                    }
                    state.record_failure(position, ErrorKind::from(&error));
                }
            }
        }
    }

    /// One streamed attempt, forwarding joined text to `sink`.
    #[allow(clippy::too_many_arguments)]
    async fn stream_attempt(
        &self,
        handle: &crate::routing::pool::ProviderHandle,
        request: &RouteRequest,
        route: &super::CompiledRoute,
        reason: AttemptReason,
        started: Instant,
        total_end: Instant,
        splice: &mut Splice,
        prefill: bool,
        sink: &mpsc::Sender<StreamEvent>,
    ) -> (AttemptRecord, Result<ChatResponse, ProviderError>) {
        use futures_util::StreamExt;
        let begin = Instant::now();
        let deadline = AttemptDeadline {
            first_token: route.spec.deadlines.first_token,
            end: (begin + route.spec.deadlines.attempt).min(total_end),
        };
        let record = |latency, error: Option<&ProviderError>, usage| AttemptRecord {
            provider: handle.id().clone(),
            reason,
            started: begin.saturating_duration_since(started),
            latency,
            error: error.map(|e| (e.label().to_owned(), e.to_string())),
            status: error.and_then(ProviderError::status),
            usage,
            cancelled: false,
        };
        // The slot before the breaker: see `Router::attempt`.
        let _slot = match handle.slot(deadline.end).await {
            Ok(slot) => slot,
            Err(error) => return (record(begin.elapsed(), Some(&error), None), Err(error)),
        };
        let admission = handle.admit(Instant::now());
        if let crate::routing::breaker::Admission::Rejected { .. } = admission {
            let error = ProviderError::BreakerOpen;
            return (record(begin.elapsed(), Some(&error), None), Err(error));
        }
        let guard = handle.begin(begin, admission);
        let upstream = splice.request(&request.request, prefill);
        let mut joiner = Joiner::new(splice);
        let mut calls = ToolCallParts::default();
        let result: Result<ChatResponse, ProviderError> = async {
            let mut stream = handle.backend.stream(&upstream, deadline).await?;
            while let Some(event) = stream.next().await {
                match event? {
                    StreamEvent::Delta(delta) => {
                        let text = joiner.push(&delta);
                        if !text.is_empty()
                            && !forward(sink, StreamEvent::Delta(text), deadline.end).await
                        {
                            return Err(ProviderError::Unavailable(
                                "the caller hung up or stopped reading".into(),
                            ));
                        }
                    }
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
                        let text = joiner.finish();
                        if !text.is_empty() {
                            let _ = sink.send(StreamEvent::Delta(text)).await;
                        }
                        // Tool calls go out whole, only once the stream
                        // ended properly.
                        send_tool_calls(sink, calls.calls()).await;
                        let mut response = ChatResponse {
                            text: joiner.forwarded.clone(),
                            tool_calls: calls.calls().to_vec(),
                            finish_reason,
                            usage,
                            request_id,
                            model,
                        };
                        if response.usage.is_none() {
                            response.usage = Some(Usage::estimate(&upstream, &response));
                        }
                        let _ = sink
                            .send(StreamEvent::Finished {
                                finish_reason: response.finish_reason.clone(),
                                usage: response.usage,
                                request_id: response.request_id.clone(),
                                model: response.model.clone(),
                            })
                            .await;
                        return Ok(response);
                    }
                }
            }
            Err(ProviderError::StreamCut {
                tokens: 0,
                partial: joiner.forwarded.clone(),
            })
        }
        .await;
        let latency = begin.elapsed();
        guard.finish(Instant::now(), latency, result.as_ref().map(|_| ()));
        let usage = result.as_ref().ok().and_then(|r| r.usage);
        (record(latency, result.as_ref().err(), usage), result)
    }
}

/// Hands an event to the caller, waiting no later than `until`: a caller
/// that stopped reading must not hold an attempt (its connection, its
/// concurrency slot, perhaps a breaker trial) forever. False when the
/// caller hung up or did not read in time.
async fn forward(sink: &mpsc::Sender<StreamEvent>, event: StreamEvent, until: Instant) -> bool {
    matches!(
        tokio::time::timeout_at(until, sink.send(event)).await,
        Ok(Ok(()))
    )
}

/// Sends tool calls, each whole in one event.
async fn send_tool_calls(sink: &mpsc::Sender<StreamEvent>, calls: &[ToolCall]) {
    for (index, call) in calls.iter().enumerate() {
        let _ = sink
            .send(StreamEvent::ToolCallDelta {
                index,
                id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                arguments: call.arguments.clone(),
            })
            .await;
    }
}

/// Sends a whole answer (a final fallback's, or one checked before it
/// could be streamed) as one delta and a finish.
pub async fn send_whole(sink: &mpsc::Sender<StreamEvent>, text: &str, response: &ChatResponse) {
    if !text.is_empty() {
        let _ = sink.send(StreamEvent::Delta(text.to_owned())).await;
    }
    let _ = sink
        .send(StreamEvent::Finished {
            finish_reason: response.finish_reason.clone(),
            usage: response.usage,
            request_id: response.request_id.clone(),
            model: response.model.clone(),
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::MessageRole;

    fn joined(sent: &str, deltas: &[&str]) -> String {
        let mut splice = Splice {
            sent: sent.to_owned(),
        };
        let mut joiner = Joiner::new(&mut splice);
        let mut out = String::new();
        for delta in deltas {
            out.push_str(&joiner.push(delta));
        }
        out.push_str(&joiner.finish());
        format!("{sent}{out}")
    }

    #[test]
    fn a_continuation_is_appended() {
        assert_eq!(
            joined("one two ", &["three ", "four"]),
            "one two three four"
        );
    }

    #[test]
    fn a_restart_from_the_beginning_is_trimmed() {
        assert_eq!(
            joined("one two ", &["one ", "two ", "three ", "four"]),
            "one two three four"
        );
        assert_eq!(joined("one two ", &["one two three"]), "one two three");
    }

    #[test]
    fn a_continuation_starting_with_a_space_does_not_double_it() {
        assert_eq!(joined("one two ", &[" three"]), "one two three");
    }

    #[test]
    fn nothing_sent_means_nothing_held() {
        assert_eq!(joined("", &["a ", "b"]), "a b");
    }

    #[test]
    fn the_prefill_request_ends_with_the_text_so_far_without_trailing_space() {
        let splice = Splice {
            sent: "one two ".into(),
        };
        let original = ChatRequest {
            messages: vec![Message::user("q")],
            ..ChatRequest::default()
        };
        let request = splice.request(&original, true);
        let last = request.messages.last().unwrap();
        assert_eq!(
            (last.role, last.content.as_str()),
            (MessageRole::Assistant, "one two")
        );
        assert_eq!(splice.request(&original, false).messages.len(), 1);
    }
}
