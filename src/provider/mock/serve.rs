//! The accept loop, the connections, and the decision each chat request
//! gets: read the request, pick the fault that applies, then answer, fail,
//! hang or drop the connection.
//!
//! Decisions are made per request after its body is read, never per
//! connection: a client reuses keep-alive connections, and `reset` or
//! `hang` must hit the request the script says, not whichever connection
//! happens to be new. A decision is made under one lock (the seeded RNG
//! lives with the script) and acted on after the lock is released, so a
//! slow stream never blocks other requests.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::answer::{self, Conversation, Reply, ToolCallReply};
use super::script::{Endpoint, Fault, FaultKind, HANG_CAP, Script, ServerSettings};
use super::wire::{self, Finish};
use super::{Shared, Stats};

/// Request bodies larger than this are refused (the real APIs cap them too).
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// How long to wait before binding again when the port is taken.
const REBIND_RETRY: Duration = Duration::from_millis(100);

/// A pause before cutting a stream, so the bytes already produced leave
/// the socket before it closes instead of being dropped with it.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(15);

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
) {
    let mut connections = JoinSet::new();
    let mut generation = shared.generation.subscribe();
    let mut retry_bind_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let refusal = shared.refusal(now);
        if refusal.active && listener.is_some() {
            // Dropping the socket is what makes the kernel answer new
            // connections with RST (ECONNREFUSED) and reset queued ones.
            listener = None;
            shared.refusing.send_replace(true);
            tracing::info!(%addr, "refusing connections");
        } else if !refusal.active && listener.is_none() && retry_bind_at.is_none_or(|t| t <= now) {
            match TcpListener::bind(addr).await {
                Ok(bound) => {
                    listener = Some(bound);
                    retry_bind_at = None;
                    shared.refusing.send_replace(false);
                    tracing::info!(%addr, "accepting connections again");
                }
                Err(error) => {
                    tracing::warn!(%addr, %error, "cannot listen again; retrying");
                    retry_bind_at = Some(now + REBIND_RETRY);
                }
            }
        }
        let wake = [refusal.until, retry_bind_at.filter(|_| listener.is_none())]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            _ = generation.changed() => {}
            () = sleep_until(wake) => {}
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(shared.clone(), stream));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin on an error that persists.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnIo {
        stream,
        reset: reset.clone(),
    });
    let service_shared = shared.clone();
    let service = service_fn(move |request| handle(service_shared.clone(), reset.clone(), request));
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, service)
    );
    let mut refusing = shared.refusing.subscribe();
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "mock connection ended");
                }
                break;
            }
            () = shared.cancel.cancelled() => break,
            // A refusing port has no open connections either, or clients
            // would keep reaching the server through their pools.
            _ = refusing.wait_for(|r| *r), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The connection's socket, able to end with RST instead of FIN.
struct ConnIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst)
            && let Err(error) = self.stream.set_zero_linger()
        {
            tracing::warn!(%error, "cannot set SO_LINGER 0; the connection closes with FIN");
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.load(Ordering::SeqCst) {
            // A FIN now would let the peer see an orderly close before the
            // RST that dropping the socket sends.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Hyper closes the connection without a response when the service fails.
fn close(why: &str) -> io::Error {
    io::Error::other(why.to_owned())
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    request: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::POST, "/v1/chat/completions") => {
            chat(shared, reset, Endpoint::Openai, request).await
        }
        (Method::POST, "/v1/messages") => chat(shared, reset, Endpoint::Anthropic, request).await,
        (Method::GET, "/v1/models") => {
            shared.stats().models_requests += 1;
            if *shared.refusing.borrow() {
                return Err(close("the script refuses connections"));
            }
            let model = shared.state().script.server.model.clone();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "object": "list",
                    "data": [{ "id": model, "object": "model", "created": 0, "owned_by": "baton-mock" }],
                }),
            ))
        }
        (Method::GET, "/stats") => Ok(json_response(StatusCode::OK, &json!(shared.snapshot()))),
        (Method::POST, "/stats/reset") => {
            let before = shared.snapshot();
            *shared.stats() = Stats::default();
            *shared.last_conversation() = None;
            Ok(json_response(StatusCode::OK, &json!(before)))
        }
        (Method::PUT, "/script") => {
            let body = read_body(request).await?;
            let text = String::from_utf8_lossy(&body);
            match Script::from_toml(&text, Path::new("PUT /script")) {
                Ok(script) => {
                    let faults = script.faults.len();
                    shared.set_script(script);
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({ "ok": true, "faults": faults }),
                    ))
                }
                Err(error) => Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    &wire::openai_error(&error.to_string(), "invalid_request_error", None),
                )),
            }
        }
        (_, path) => Ok(json_response(
            StatusCode::NOT_FOUND,
            &wire::openai_error(
                &format!("Invalid URL ({path})"),
                "invalid_request_error",
                None,
            ),
        )),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, io::Error> {
    axum::body::to_bytes(Body::new(request.into_body()), BODY_LIMIT)
        .await
        .map_err(|e| close(&format!("cannot read the request body: {e}")))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What a chat request gets.
enum Decision {
    Reset,
    Hang(Duration),
    Error(ErrorReply),
    Answer(AnswerPlan),
}

enum ErrorReply {
    BadRequest(String),
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    ContextLength {
        prompt: u32,
        limit: u32,
    },
    Prefill,
}

/// An answer and how to deliver it.
struct AnswerPlan {
    tokens: Vec<String>,
    tool_call: Option<ToolCallReply>,
    finish: Finish,
    /// Extra wait before the response starts (`latency` faults).
    delay: Duration,
    interval: Duration,
    /// Tokens (or argument pieces) sent before the connection is cut.
    cut_after: Option<usize>,
    malformed: bool,
}

async fn chat(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    endpoint: Endpoint,
    request: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let body = read_body(request).await?;
    let id = shared.next_id();
    {
        let mut stats = shared.stats();
        stats.requests += 1;
        *stats
            .by_endpoint
            .entry(endpoint.as_str().to_owned())
            .or_default() += 1;
    }
    let outcome = |label: &str| {
        *shared
            .stats()
            .by_outcome
            .entry(label.to_owned())
            .or_default() += 1;
    };
    if *shared.refusing.borrow() {
        outcome("refuse");
        return Err(close("the script refuses connections"));
    }
    let parsed = match endpoint {
        Endpoint::Openai => wire::parse_openai(&body),
        Endpoint::Anthropic => wire::parse_anthropic(&body),
    };
    let (script, elapsed) = {
        let state = shared.state();
        (state.script.clone(), state.started.elapsed())
    };
    let settings = &script.server;
    let prompt_tokens = parsed.as_ref().map_or(0, Conversation::prompt_tokens);
    let (label, decision, jitter) = match &parsed {
        Err(bad) => (
            "bad_request",
            Decision::Error(ErrorReply::BadRequest(bad.0.clone())),
            Duration::ZERO,
        ),
        Ok(conversation) => {
            {
                let mut stats = shared.stats();
                *stats.prompts.entry(conversation.fingerprint()).or_default() += 1;
            }
            let (fault, jitter) = {
                let mut guard = shared.state();
                let state = &mut *guard;
                let fault = choose_fault(
                    &script,
                    endpoint,
                    elapsed,
                    conversation,
                    &mut state.rng,
                    &mut state.applied,
                );
                (fault, draw_jitter(settings.jitter, &mut state.rng))
            };
            let (label, decision) = decide(conversation, fault, settings, elapsed, prompt_tokens);
            (label, decision, jitter)
        }
    };
    outcome(label);
    let conversation_for_reply = parsed.unwrap_or_default();
    let (stream, include_usage) = (
        conversation_for_reply.stream,
        conversation_for_reply.include_usage,
    );
    // Kept whole for `/stats` (`last_turns`), which formats it only when
    // asked: a benchmark's mock should not pay for it per request.
    *shared.last_conversation() = Some(conversation_for_reply);
    let replier = Replier {
        shared: shared.clone(),
        endpoint,
        request_id: format!("req_mock{id:012x}"),
        message_id: match endpoint {
            Endpoint::Openai => format!("chatcmpl-mock{id:012x}"),
            Endpoint::Anthropic => format!("msg_mock{id:012x}"),
        },
        model: settings.model.clone(),
        prompt_tokens,
        stream,
        include_usage,
    };
    match decision {
        Decision::Reset => {
            reset.store(true, Ordering::SeqCst);
            Err(close("the script resets this request"))
        }
        Decision::Hang(for_how_long) => {
            tokio::select! {
                () = tokio::time::sleep(for_how_long) => {}
                () = shared.cancel.cancelled() => {}
            }
            Err(close("the script hangs this request"))
        }
        Decision::Error(error) => {
            wait(&shared, settings.latency + jitter).await?;
            Ok(replier.error(error))
        }
        Decision::Answer(plan) => {
            let mut before = settings.latency + jitter + plan.delay;
            if !replier.stream {
                // A whole answer arrives when the last token is generated.
                let tokens = plan.tool_call.as_ref().map_or(plan.tokens.len(), |c| {
                    answer::argument_pieces(&c.arguments).len()
                });
                before += plan.interval * u32::try_from(tokens.saturating_sub(1)).unwrap_or(0);
            }
            wait(&shared, before).await?;
            Ok(replier.answer(plan))
        }
    }
}

async fn wait(shared: &Shared, duration: Duration) -> Result<(), io::Error> {
    if duration.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        () = shared.cancel.cancelled() => Err(close("the server is shutting down")),
    }
}

fn draw_jitter(jitter: Duration, rng: &mut impl Rng) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The first fault that is active now, fits the request and wins its draw.
fn choose_fault<'s>(
    script: &'s Script,
    endpoint: Endpoint,
    elapsed: Duration,
    conversation: &Conversation,
    rng: &mut impl Rng,
    applied: &mut Vec<usize>,
) -> Option<&'s Fault> {
    applied.resize(script.faults.len(), 0);
    let (index, fault) = script.faults.iter().enumerate().find(|(index, fault)| {
        let fits = match fault.kind {
            // Handled by the accept loop, below HTTP.
            FaultKind::Refuse => false,
            FaultKind::RejectPrefill | FaultKind::RestartContinuation => {
                conversation.prefill().is_some()
            }
            FaultKind::CutToolCall { .. } => !conversation.tools.is_empty(),
            _ => true,
        };
        fits && fault.endpoint.is_none_or(|e| e == endpoint)
            && fault.window.contains(elapsed)
            && fault.limit.is_none_or(|limit| applied[*index] < limit)
            && (fault.rate >= 1.0 || rng.random::<f64>() < fault.rate)
    })?;
    applied[index] += 1;
    Some(fault)
}

fn decide(
    conversation: &Conversation,
    fault: Option<&Fault>,
    settings: &ServerSettings,
    elapsed: Duration,
    prompt: u32,
) -> (&'static str, Decision) {
    let label = fault.map_or("ok", |f| f.kind.label());
    let context_error = |limit: u32| {
        (
            "context_length",
            Decision::Error(ErrorReply::ContextLength { prompt, limit }),
        )
    };
    let kind = fault.map(|f| &f.kind);
    match kind {
        Some(FaultKind::Reset) => return (label, Decision::Reset),
        Some(FaultKind::Hang) => {
            let window_left = fault
                .and_then(|f| f.window.to)
                .map_or(HANG_CAP, |to| to.saturating_sub(elapsed));
            return (label, Decision::Hang(window_left.min(HANG_CAP)));
        }
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => {
            return (
                label,
                Decision::Error(ErrorReply::Status {
                    status: *status,
                    retry_after: *retry_after,
                }),
            );
        }
        Some(FaultKind::RejectPrefill) => return (label, Decision::Error(ErrorReply::Prefill)),
        Some(FaultKind::ContextLength) => {
            let limit = settings
                .max_context_tokens
                .unwrap_or(prompt.saturating_sub(1))
                .min(prompt.saturating_sub(1));
            return context_error(limit);
        }
        _ => {}
    }
    // Every fault below still answers, so the real limit applies first.
    if let Some(limit) = settings.max_context_tokens
        && prompt > limit
    {
        return context_error(limit);
    }
    let mut plan = AnswerPlan {
        tokens: Vec::new(),
        tool_call: None,
        finish: Finish::Stop,
        delay: Duration::ZERO,
        interval: settings.token_interval,
        cut_after: None,
        malformed: false,
    };
    let continue_prefill = !matches!(kind, Some(FaultKind::RestartContinuation));
    match answer::reply(
        conversation,
        settings.answer_tokens,
        settings.cite,
        continue_prefill,
    ) {
        Reply::Text { tokens, truncated } => {
            plan.tokens = tokens;
            plan.finish = if truncated {
                Finish::Length
            } else {
                Finish::Stop
            };
        }
        Reply::ToolCall(call) => {
            plan.tool_call = Some(call);
            plan.finish = Finish::ToolCalls;
        }
    }
    match kind {
        Some(FaultKind::Malformed) => plan.malformed = true,
        Some(FaultKind::CutStream { after_tokens }) => plan.cut_after = Some(*after_tokens),
        Some(FaultKind::SlowStream { token_interval }) => plan.interval = *token_interval,
        Some(FaultKind::CutToolCall { after_tokens }) => {
            let name = conversation
                .requested_tool()
                .or(conversation.tools.first().map(String::as_str))
                .unwrap_or("tool");
            let call = answer::tool_call(conversation, name);
            // Always inside the arguments: at least one piece sent, at least
            // one withheld.
            let pieces = answer::argument_pieces(&call.arguments).len();
            plan.cut_after = Some((*after_tokens).clamp(1, pieces.saturating_sub(1).max(1)));
            plan.tool_call = Some(call);
            plan.tokens.clear();
            plan.finish = Finish::ToolCalls;
        }
        Some(FaultKind::ContentFilter { after_tokens }) => {
            plan.tool_call = None;
            if plan.tokens.is_empty() {
                plan.tokens =
                    answer::settled_answer(conversation, settings.answer_tokens, settings.cite);
            }
            plan.tokens.truncate(*after_tokens);
            plan.finish = Finish::ContentFilter;
        }
        Some(FaultKind::Latency { delay }) => plan.delay = *delay,
        _ => {}
    }
    (label, Decision::Answer(plan))
}

/// Builds the responses of one request in its endpoint's shapes.
struct Replier {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    request_id: String,
    message_id: String,
    model: String,
    prompt_tokens: u32,
    stream: bool,
    include_usage: bool,
}

impl Replier {
    fn with_headers(&self, mut response: Response<Body>) -> Response<Body> {
        let header = match self.endpoint {
            Endpoint::Openai => "x-request-id",
            Endpoint::Anthropic => "request-id",
        };
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert(header, value);
        }
        response
    }

    fn error(&self, error: ErrorReply) -> Response<Body> {
        let (status, message, retry_after, openai_code) = match error {
            ErrorReply::BadRequest(message) => (400, message, None, None),
            ErrorReply::Status {
                status,
                retry_after,
            } => (status, status_message(self.endpoint, status), retry_after, None),
            ErrorReply::ContextLength { prompt, limit } => {
                let message = match self.endpoint {
                    Endpoint::Openai => format!(
                        "This model's maximum context length is {limit} tokens. However, your messages resulted in {prompt} tokens. Please reduce the length of the messages."
                    ),
                    Endpoint::Anthropic => {
                        format!("prompt is too long: {prompt} tokens > {limit} maximum")
                    }
                };
                (400, message, None, Some("context_length_exceeded"))
            }
            ErrorReply::Prefill => (
                400,
                "This model does not support assistant message prefill. The conversation must end with a user message.".to_owned(),
                None,
                None,
            ),
        };
        let body = match self.endpoint {
            Endpoint::Openai => {
                let (kind, code) = wire::openai_error_kind(status);
                wire::openai_error(&message, kind, openai_code.or(code))
            }
            Endpoint::Anthropic => wire::anthropic_error(
                wire::anthropic_error_kind(status),
                &message,
                &self.request_id,
            ),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, &body);
        if let Some(after) = retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        self.with_headers(response)
    }

    fn answer(&self, plan: AnswerPlan) -> Response<Body> {
        let response = if self.stream {
            let frames = match self.endpoint {
                Endpoint::Openai => self.openai_frames(&plan),
                Endpoint::Anthropic => self.anthropic_frames(&plan),
            };
            let mut response = Response::new(frames_body(self.shared.clone(), frames));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        } else {
            self.whole(&plan)
        };
        self.with_headers(response)
    }

    fn completion_tokens(plan: &AnswerPlan) -> u32 {
        let n = match &plan.tool_call {
            Some(call) => answer::argument_pieces(&call.arguments).len(),
            None => plan.tokens.len(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// A non-streamed answer; cut and malformed ones are broken JSON.
    fn whole(&self, plan: &AnswerPlan) -> Response<Body> {
        let text = plan.tokens.concat();
        let completion = Self::completion_tokens(plan);
        let value = match self.endpoint {
            Endpoint::Openai => wire::openai_completion(
                &self.openai_ids(),
                &text,
                plan.tool_call.as_ref(),
                plan.finish,
                wire::openai_usage(self.prompt_tokens, completion),
            ),
            Endpoint::Anthropic => wire::anthropic_message(
                &self.message_id,
                &self.model,
                &text,
                plan.tool_call.as_ref(),
                plan.finish,
                self.prompt_tokens,
                completion,
            ),
        };
        let full = value.to_string();
        if plan.malformed || plan.cut_after.is_some() {
            // Half a document: valid JSON up to the break, then nothing.
            let mut half = full.len() / 2;
            while !full.is_char_boundary(half) {
                half -= 1;
            }
            let frames = Frames {
                items: VecDeque::from([Frame::immediate(full[..half].to_owned())]),
                cut: plan.cut_after.is_some(),
            };
            let mut response = Response::new(frames_body(self.shared.clone(), frames));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return response;
        }
        json_response(StatusCode::OK, &value)
    }

    fn openai_ids(&self) -> wire::OpenaiIds {
        wire::OpenaiIds {
            id: self.message_id.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: self.model.clone(),
        }
    }

    fn openai_frames(&self, plan: &AnswerPlan) -> Frames {
        let ids = self.openai_ids();
        let data = |value: Value| wire::sse(None, &value.to_string());
        let mut frames = Frames::default();
        let first_delta = match &plan.tool_call {
            Some(call) => wire::openai_tool_call_start(call),
            None => json!({ "role": "assistant", "content": "", "refusal": null }),
        };
        frames.push(Frame::immediate(data(wire::openai_chunk(
            &ids,
            first_delta,
            None,
        ))));
        if plan.malformed {
            frames.push(Frame::immediate(format!(
                "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\n\n",
                ids.id
            )));
            frames.push(Frame::immediate(wire::sse(None, "[DONE]")));
            return frames;
        }
        let cut = match &plan.tool_call {
            Some(call) => frames.tokens(
                answer::argument_pieces(&call.arguments).iter().map(|p| {
                    data(wire::openai_chunk(
                        &ids,
                        wire::openai_tool_call_piece(p),
                        None,
                    ))
                }),
                plan,
            ),
            None => {
                // Every text chunk is the same JSON around its token: built
                // once, so a benchmark's mock spends next to nothing per token.
                let template = wire::ChunkTemplate::new(&ids);
                frames.tokens(
                    plan.tokens
                        .iter()
                        .map(|t| wire::sse(None, &template.with(t))),
                    plan,
                )
            }
        };
        if cut {
            return frames;
        }
        frames.push(Frame::immediate(data(wire::openai_chunk(
            &ids,
            json!({}),
            Some(plan.finish),
        ))));
        if self.include_usage {
            let usage = wire::openai_usage(self.prompt_tokens, Self::completion_tokens(plan));
            frames.push(Frame::immediate(data(wire::openai_usage_chunk(
                &ids, usage,
            ))));
        }
        frames.push(Frame::immediate(wire::sse(None, "[DONE]")));
        frames
    }

    fn anthropic_frames(&self, plan: &AnswerPlan) -> Frames {
        let event = |name: &str, value: Value| wire::sse(Some(name), &value.to_string());
        let mut frames = Frames::default();
        frames.push(Frame::immediate(event(
            "message_start",
            wire::anthropic_message_start(&self.message_id, &self.model, self.prompt_tokens),
        )));
        frames.push(Frame::immediate(event(
            "content_block_start",
            wire::anthropic_block_start(plan.tool_call.as_ref()),
        )));
        frames.push(Frame::immediate(event("ping", json!({ "type": "ping" }))));
        if plan.malformed {
            frames.push(Frame::immediate(
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\n\n".to_owned(),
            ));
            frames.push(Frame::immediate(event(
                "message_stop",
                json!({ "type": "message_stop" }),
            )));
            return frames;
        }
        let units: Vec<Value> = match &plan.tool_call {
            Some(call) => answer::argument_pieces(&call.arguments)
                .iter()
                .map(|p| wire::anthropic_json_delta(p))
                .collect(),
            None => plan
                .tokens
                .iter()
                .map(|t| wire::anthropic_text_delta(t))
                .collect(),
        };
        if frames.tokens(
            units.into_iter().map(|u| event("content_block_delta", u)),
            plan,
        ) {
            return frames;
        }
        frames.push(Frame::immediate(event(
            "content_block_stop",
            wire::anthropic_block_stop(),
        )));
        frames.push(Frame::immediate(event(
            "message_delta",
            wire::anthropic_message_delta(plan.finish, Self::completion_tokens(plan)),
        )));
        frames.push(Frame::immediate(event(
            "message_stop",
            json!({ "type": "message_stop" }),
        )));
        frames
    }
}

fn status_message(endpoint: Endpoint, status: u16) -> String {
    match (endpoint, status) {
        (Endpoint::Openai, 429) => {
            "Rate limit reached for requests. Please try again later.".to_owned()
        }
        (Endpoint::Anthropic, 429) => {
            "Number of requests has exceeded your rate limit. Please try again later.".to_owned()
        }
        (_, 503 | 529) => "Overloaded".to_owned(),
        (Endpoint::Openai, 500) => {
            "The server had an error while processing your request. Sorry about that!".to_owned()
        }
        (_, 500) => "Internal server error".to_owned(),
        (_, status) => format!("mock fault: HTTP {status}"),
    }
}

/// One piece of a response body.
struct Frame {
    delay: Duration,
    bytes: Bytes,
    token: bool,
}

impl Frame {
    fn immediate(text: String) -> Self {
        Frame {
            delay: Duration::ZERO,
            bytes: Bytes::from(text),
            token: false,
        }
    }
}

/// A response body as timed pieces; `cut` ends it by closing the
/// connection instead of finishing the body.
#[derive(Default)]
struct Frames {
    items: VecDeque<Frame>,
    cut: bool,
}

impl Frames {
    fn push(&mut self, frame: Frame) {
        self.items.push_back(frame);
    }

    /// Adds the token events, spaced by the plan's interval; returns true
    /// when the plan cuts the stream among them (nothing may follow).
    fn tokens(&mut self, events: impl Iterator<Item = String>, plan: &AnswerPlan) -> bool {
        for (index, text) in events.enumerate() {
            if plan.cut_after == Some(index) {
                self.cut = true;
                return true;
            }
            self.push(Frame {
                delay: if index == 0 {
                    Duration::ZERO
                } else {
                    plan.interval
                },
                bytes: Bytes::from(text),
                token: true,
            });
        }
        if plan.cut_after.is_some() {
            self.cut = true;
            return true;
        }
        false
    }
}

fn frames_body(shared: Arc<Shared>, frames: Frames) -> Body {
    let stream = futures_util::stream::unfold(
        (frames, shared, false),
        |(mut frames, shared, done)| async move {
            if done {
                return None;
            }
            match frames.items.pop_front() {
                Some(frame) => {
                    if !frame.delay.is_zero() {
                        tokio::time::sleep(frame.delay).await;
                    }
                    // Frames due at once go out in one write, as a server
                    // with no wait between tokens would send them.
                    let mut tokens = u64::from(frame.token);
                    let mut bytes = frame.bytes;
                    if frames.items.front().is_some_and(|f| f.delay.is_zero()) {
                        let mut joined = bytes::BytesMut::from(&bytes[..]);
                        while frames.items.front().is_some_and(|f| f.delay.is_zero()) {
                            let Some(next) = frames.items.pop_front() else {
                                break;
                            };
                            tokens += u64::from(next.token);
                            joined.extend_from_slice(&next.bytes);
                        }
                        bytes = joined.freeze();
                    }
                    shared.stats().streamed_tokens += tokens;
                    Some((Ok(bytes), (frames, shared, false)))
                }
                None if frames.cut => {
                    tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                    Some((
                        Err(close("the script cuts this stream")),
                        (frames, shared, true),
                    ))
                }
                None => None,
            }
        },
    );
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::mock::answer::{Role, Turn};

    fn conversation(turns: &[(Role, &str)], tools: &[&str]) -> Conversation {
        Conversation {
            turns: turns
                .iter()
                .map(|(role, text)| Turn {
                    role: *role,
                    text: (*text).to_owned(),
                    tool_result: false,
                })
                .collect(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            ..Conversation::default()
        }
    }

    #[test]
    fn cut_tool_call_always_cuts_inside_the_arguments() {
        let script = Script::from_toml(
            "[[fault]]\nkind = \"cut_tool_call\"\nafter_tokens = 99\n",
            Path::new("t"),
        )
        .unwrap();
        let c = conversation(&[(Role::User, "hello")], &["search"]);
        let (label, decision) = decide(
            &c,
            script.faults.first(),
            &script.server,
            Duration::ZERO,
            c.prompt_tokens(),
        );
        assert_eq!(label, "cut_tool_call");
        let Decision::Answer(plan) = decision else {
            panic!("expected an answer")
        };
        let pieces = answer::argument_pieces(&plan.tool_call.unwrap().arguments).len();
        assert!(plan.cut_after.unwrap() < pieces);
    }

    #[test]
    fn the_context_limit_applies_before_answering_faults() {
        let script = Script::from_toml(
            "[server]\nmax_context_tokens = 2\n[[fault]]\nkind = \"slow_stream\"\ntoken_interval = \"1ms\"\n",
            Path::new("t"),
        )
        .unwrap();
        let c = conversation(&[(Role::User, "one two three")], &[]);
        let (label, decision) = decide(
            &c,
            script.faults.first(),
            &script.server,
            Duration::ZERO,
            c.prompt_tokens(),
        );
        assert_eq!(label, "context_length");
        assert!(matches!(
            decision,
            Decision::Error(ErrorReply::ContextLength {
                prompt: 3,
                limit: 2
            })
        ));
    }
}
