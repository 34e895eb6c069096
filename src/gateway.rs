//! `baton serve`: the OpenAI-compatible HTTP gateway (axum).
//!
//! `POST /v1/chat/completions` takes the OpenAI wire format, streaming
//! included. `model` names a route of the policy (plain fallback routing
//! along its chain) or `swarm:NAME` (the swarm's supervisor classifies the
//! last user message and a worker answers, in the session named by the
//! `x-baton-session` header when there is one). `GET /v1/models` lists
//! both; `/healthz` is liveness, `/readyz` readiness (every route has a
//! provider up), `/metrics` the Prometheus exposition.
//!
//! Every answer says who served it: headers `x-baton-trace-id`,
//! `x-baton-served-by`, `x-baton-fallback`, `x-baton-degraded`,
//! `x-baton-cache` and `x-baton-needs-review`, and the same facts under a
//! `baton` field of the body (the last chunk of a stream). Errors are
//! OpenAI's error object with a fitting status.
//!
//! Nothing is lost: a route request is journaled `accepted` (and flushed)
//! before any provider is called, and its end before the client is
//! answered, by a task that outlives the connection. A client that hangs
//! up cancels the upstream call and the request ends in the journal as
//! `failed: client disconnected`. Swarm requests are journaled by their
//! supervisor as `baton ask` ones are.
//!
//! The gateway binds where it is told (the CLI allows only loopback), reads
//! provider addresses from the policy alone (nothing in a request can point
//! it elsewhere), and refuses bodies over the limit before reading them.
//!
//! Once the store holds a live virtual key, `/v1/*` takes only keys, each
//! kept to its routes, swarms and limits ([`keys`]); `Idempotency-Key`
//! makes a retried request ask upstream once ([`idempotency`]).

pub mod anthropic;
pub mod dashboard;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod openai;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::actor::supervisor::{SupervisorMsg, attempt_entries};
use crate::actor::{Answer, AskError};
use crate::provider::{ChatResponse, FinishReason, MessageRole, ProviderError, StreamEvent, Usage};
use crate::review::served_by_label;
use crate::routing::router::{Outcome, RouteError, RouteRequest, Router, ServedBy};
use crate::store::Store;
use crate::store::journal::{Ending, Journal, JournalRecord};
use crate::store::telemetry::Telemetry;
use crate::swarm::RouteName;
use crate::trace::TraceId;

use self::metrics::Metrics;
use self::openai::{Ids, Incoming};

/// What one engine (one policy version) offers the gateway.
pub trait Engine: Send + Sync {
    fn router(&self) -> &Arc<Router>;
    /// The supervisor of swarm `name`, if the engine serves it.
    fn supervisor(&self, name: &str) -> Option<ActorRef<SupervisorMsg>>;
    fn swarms(&self) -> Vec<String>;
    /// The longest a swarm request can take before its caller stops waiting.
    fn deadline(&self) -> Duration;
    /// The dependency graph of the policy it serves, for the dashboard.
    fn graph(&self) -> Option<&crate::graph::DependencyGraph> {
        None
    }
}

/// An engine a request runs on; the guard keeps the engine from being
/// retired until the request is done.
pub struct Entered {
    pub engine: Arc<dyn Engine>,
    pub guard: Box<dyn Send + Sync>,
}

/// The engines of a process: the one new requests go to.
pub trait Engines: Send + Sync {
    fn enter(&self) -> Entered;
}

/// `[gateway]` limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request bodies above this are refused with 413, unread.
    pub body_limit: usize,
    /// Requests in progress at most; more get 503 with Retry-After.
    pub max_in_flight: usize,
    /// How long the answer to an `Idempotency-Key` is kept.
    pub idempotency_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_limit: 2 * 1024 * 1024,
            max_in_flight: 1024,
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// The journal of route requests (swarm requests are journaled by their
/// supervisor).
#[derive(Clone)]
struct RouteJournal {
    store: Store,
    journal: Journal,
    telemetry: Telemetry,
}

/// The gateway's shared state.
pub struct Gateway {
    engines: Arc<dyn Engines>,
    journal: Option<RouteJournal>,
    pub metrics: Arc<Metrics>,
    limits: Limits,
    in_flight: Arc<Semaphore>,
    keys: Arc<self::keys::KeyRing>,
    idempotency: self::idempotency::Gate,
}

impl Gateway {
    pub fn new(
        engines: Arc<dyn Engines>,
        store: Option<&Store>,
        limits: Limits,
    ) -> Result<Arc<Gateway>, crate::store::StoreError> {
        let journal = match store {
            Some(store) => Some(RouteJournal {
                store: store.clone(),
                journal: Journal::new(store)?,
                telemetry: Telemetry::new(store)?,
            }),
            None => None,
        };
        Ok(Arc::new(Gateway {
            keys: self::keys::KeyRing::new(store)?,
            idempotency: self::idempotency::Gate::new(store, limits.idempotency_window)?,
            engines,
            journal,
            metrics: Arc::new(Metrics::default()),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
        }))
    }
}

/// The axum application.
pub fn app(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/v1/keys", post(self::keys::create))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/dashboard", get(dashboard_page))
        .route("/dashboard/state", get(dashboard_state))
        .route("/dashboard/graph.svg", get(dashboard_graph))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint",
            )
            .with_code("not_found")
        })
        .with_state(gateway)
}

/// Serves `app` on `listener` until `shutdown` resolves; requests in
/// progress finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(gateway))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<String>,
    code: Option<String>,
    retry_after: Option<Duration>,
    trace_id: Option<TraceId>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            trace_id: None,
        }
    }

    fn with_code(mut self, code: &str) -> ApiError {
        self.code = Some(code.to_owned());
        self
    }

    fn body(&self) -> Value {
        let mut body = openai::error(
            &self.message,
            self.kind,
            self.param.as_deref(),
            self.code.as_deref(),
        );
        if let Some(trace_id) = self.trace_id {
            body["error"]["trace_id"] = json!(trace_id.to_string());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if let Some(trace_id) = self.trace_id
            && let Ok(value) = HeaderValue::from_str(&trace_id.to_string())
        {
            response.headers_mut().insert(TRACE_HEADER, value);
        }
        response
    }
}

const TRACE_HEADER: HeaderName = HeaderName::from_static("x-baton-trace-id");
const SESSION_HEADER: &str = "x-baton-session";

/// How a routed request failed, as the client hears it.
fn route_error(error: &RouteError) -> ApiError {
    let mut api = match error {
        RouteError::UnknownRoute(route) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no route `{route}`"),
        )
        .with_code("model_not_found"),
        // Every provider was full (none was called): Baton is at the
        // capacity the config gives it, and a retry soon may get through.
        RouteError::Exhausted { attempts, .. }
            if attempts.iter().any(|a| label_of(a) == Some("saturated"))
                && attempts.iter().all(|a| {
                    label_of(a).is_some_and(|l| ProviderError::NEVER_SENT.contains(&l))
                }) =>
        {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                error.to_string(),
            )
            .with_code("providers_saturated");
            api.retry_after = Some(Duration::from_secs(1));
            api
        }
        RouteError::Exhausted { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "api_error", error.to_string())
                .with_code("all_providers_failed")
        }
        RouteError::Refused { error: cause, .. } => refused(cause, error.to_string()),
    };
    api.trace_id = error.trace_id();
    api
}

fn label_of(attempt: &crate::routing::router::AttemptRecord) -> Option<&str> {
    attempt.error.as_ref().map(|(label, _)| label.as_str())
}

/// A provider's own refusal, passed through with its status.
fn refused(cause: &ProviderError, message: String) -> ApiError {
    let status = cause
        .status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = match status {
        StatusCode::BAD_REQUEST => "invalid_request_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        _ => "api_error",
    };
    let mut api = ApiError::new(status, kind, message);
    if let ProviderError::ContextLength(_) = cause {
        api.code = Some("context_length_exceeded".to_owned());
    }
    api.retry_after = cause.retry_after();
    api
}

fn ask_error(error: &AskError) -> ApiError {
    match error {
        AskError::Route(route) => route_error(route),
        AskError::WorkerDown(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            message.clone(),
        )
        .with_code("worker_unavailable"),
        AskError::Store(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            message.clone(),
        )
        .with_code("journal_unavailable"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The facts of an answer: in headers and under the body's `baton`.
#[derive(Debug, Clone)]
struct Facts {
    trace_id: TraceId,
    served_by: String,
    fallback: bool,
    degraded: bool,
    cache: bool,
    needs_review: bool,
    worker: Option<String>,
    attempts: usize,
}

impl Facts {
    fn of(outcome: &Outcome, needs_review: bool, worker: Option<String>) -> Facts {
        Facts {
            trace_id: outcome.trace_id,
            served_by: served_by_label(outcome),
            fallback: outcome.fallback,
            degraded: outcome.degraded,
            cache: matches!(outcome.served_by, ServedBy::Cache { .. }),
            needs_review,
            worker,
            attempts: outcome.attempts.len(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "trace_id": self.trace_id.to_string(),
            "served_by": self.served_by,
            "fallback": self.fallback,
            "degraded": self.degraded,
            "cache": self.cache,
            "needs_review": self.needs_review,
            "worker": self.worker,
            "attempts": self.attempts,
        })
    }

    fn headers(&self, headers: &mut HeaderMap) {
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        put("x-baton-served-by", self.served_by.clone());
        put("x-baton-fallback", self.fallback.to_string());
        put("x-baton-degraded", self.degraded.to_string());
        put(
            "x-baton-cache",
            if self.cache { "hit" } else { "miss" }.to_owned(),
        );
        put("x-baton-needs-review", self.needs_review.to_string());
        if let Some(worker) = &self.worker {
            put("x-baton-worker", worker.clone());
        }
    }
}

async fn models(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = gateway.keys.authenticate(&headers)?;
    let entered = gateway.engines.enter();
    let router = entered.engine.router();
    let mut data: Vec<Value> = router
        .route_names()
        .into_iter()
        .map(|name| json!({ "id": name, "object": "model", "created": 0, "owned_by": "baton" }))
        .collect();
    for swarm in entered.engine.swarms() {
        data.push(json!({ "id": format!("swarm:{swarm}"), "object": "model", "created": 0, "owned_by": "baton" }));
    }
    if let Some(caller) = &caller {
        data.retain(|model| caller.allows(model["id"].as_str().unwrap_or_default()));
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// Ready when every route has a provider up (a route of final fallbacks
/// alone is always ready: that is its design).
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let entered = gateway.engines.enter();
    let router = entered.engine.router();
    let mut routes = serde_json::Map::new();
    let mut ready = true;
    for name in router.route_names() {
        let chain = router.chain(&RouteName(name.clone())).unwrap_or_default();
        let up: Vec<String> = chain
            .iter()
            .filter(|handle| handle.health().is_up())
            .map(|handle| handle.id().0.clone())
            .collect();
        let route_ready = chain.is_empty() || !up.is_empty();
        ready &= route_ready;
        routes.insert(name, json!({ "ready": route_ready, "up": up }));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "routes": routes }))).into_response()
}

async fn metrics_text(State(gateway): State<Arc<Gateway>>) -> Response {
    let entered = gateway.engines.enter();
    let text = gateway.metrics.render(entered.engine.router());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn dashboard_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page loads nothing from anywhere else.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'",
            ),
        ],
        dashboard::PAGE,
    )
        .into_response()
}

async fn dashboard_state(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    let entered = gateway.engines.enter();
    let router = entered.engine.router();
    Json(json!({
        "providers": dashboard::providers(router),
        "failovers": gateway.metrics.recent_failovers(),
        "totals": gateway.metrics.totals(),
        "swarms": entered.engine.swarms(),
    }))
}

async fn dashboard_graph(State(gateway): State<Arc<Gateway>>) -> Response {
    let entered = gateway.engines.enter();
    let Some(graph) = entered.engine.graph() else {
        return (StatusCode::NOT_FOUND, "no graph for this policy").into_response();
    };
    let svg = crate::graph::render::svg::svg(&dashboard::graph_now(graph, entered.engine.router()));
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response()
}

/// Reads the body, refusing one over the limit before reading it when
/// its length is declared, and as soon as it passes the limit otherwise.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the gateway's limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

async fn chat_completions(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    answer(&gateway, Wire::OpenAi, request).await
}

async fn messages(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    answer(&gateway, Wire::Anthropic, request).await
}

async fn answer(gateway: &Arc<Gateway>, wire: Wire, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let result = handle_chat(gateway, wire, &parts.headers, body).await;
    let response = match result {
        Ok(response) => response,
        Err(error) => error.respond(wire),
    };
    gateway
        .metrics
        .observe_request(response.status().as_u16(), started.elapsed());
    response
}

async fn handle_chat(
    gateway: &Arc<Gateway>,
    wire: Wire,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(headers, body, gateway.limits.body_limit).await?;
    let parsed = match wire {
        Wire::OpenAi => openai::parse_request(&body),
        Wire::Anthropic => anthropic::parse_request(&body),
    };
    let incoming = parsed.map_err(|invalid| ApiError {
        param: invalid.param,
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            invalid.message,
        )
    })?;
    let caller = gateway.keys.admit(headers, &incoming.model)?;
    let scope = self::keys::Caller::scope(caller.as_ref());
    let stream = incoming.stream;
    let ask = dispatch(gateway, wire, headers, incoming, caller);
    gateway
        .idempotency
        .once(headers, &scope, &body, stream, ask)
        .await
}

/// Runs a request that passed authentication (once per Idempotency-Key).
async fn dispatch(
    gateway: &Arc<Gateway>,
    wire: Wire,
    headers: &HeaderMap,
    incoming: Incoming,
    caller: Option<self::keys::Caller>,
) -> Result<Response, ApiError> {
    gateway.keys.spend_request(caller.as_ref())?;
    let meter = self::keys::Meter::new(&gateway.keys, caller.as_ref());
    let Ok(permit) = gateway.in_flight.clone().try_acquire_owned() else {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            format!(
                "the gateway is at its limit of {} requests in progress; retry shortly",
                gateway.limits.max_in_flight
            ),
        )
        .with_code("overloaded");
        error.retry_after = Some(Duration::from_secs(1));
        return Err(error);
    };
    let _in_flight = gateway.metrics.enter();
    let entered = gateway.engines.enter();
    let session = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = match incoming.model.strip_prefix("swarm:") {
        Some(swarm) => {
            let supervisor = entered.engine.supervisor(swarm).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!("no swarm `{swarm}` is served here (models: GET /v1/models)"),
                )
                .with_code("model_not_found")
            })?;
            ask_swarm(
                gateway, wire, &entered, supervisor, incoming, session, meter,
            )
            .await
        }
        None => {
            if entered
                .engine
                .router()
                .route_spec(&RouteName(incoming.model.clone()))
                .is_none()
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!(
                        "no route `{}`: `model` names a route or `swarm:NAME` (models: GET /v1/models)",
                        incoming.model
                    ),
                )
                .with_code("model_not_found"));
            }
            ask_route(gateway, wire, &entered, incoming, meter).await
        }
    };
    drop(permit);
    response
}

/// What a routing task reports back.
type Routed = Result<(Outcome, bool), ApiError>;

/// Journals a route request, routes it on its own task (so the journal
/// gets its end whatever the connection does) and answers.
async fn ask_route(
    gateway: &Arc<Gateway>,
    wire: Wire,
    entered: &Entered,
    incoming: Incoming,
    meter: self::keys::Meter,
) -> Result<Response, ApiError> {
    let router = entered.engine.router().clone();
    let question = last_user_text(&incoming);
    let Incoming {
        model,
        request,
        stream,
        include_usage,
    } = incoming;
    let mut route_request = RouteRequest::new(model.clone(), request);
    let trace_id = route_request.trace_id;
    route_request.scope = "gateway".to_owned();
    let accepted = match &gateway.journal {
        Some(journal) => {
            let mut record = JournalRecord::accepted(trace_id, question);
            record.route = Some(model.clone());
            if let Err(error) = journal.journal.accept(&record) {
                return Err(journal_error(trace_id, &error.to_string()));
            }
            if let Err(error) = journal.store.durable().await {
                return Err(journal_error(trace_id, &error.to_string()));
            }
            Some(record)
        }
        None => None,
    };
    let ids = Ids {
        id: format!("chatcmpl-{trace_id}"),
        created: now_secs(),
        model: model.clone(),
    };
    // The task ends the journal record however the client goes; the
    // token cancels the upstream call when the client hangs up first.
    let cancel = CancellationToken::new();
    let hang_up = cancel.clone().drop_guard();
    let (done_tx, done_rx) = oneshot::channel::<Routed>();
    let (events_tx, events_rx) = mpsc::channel::<StreamEvent>(64);
    let journal = gateway.journal.clone();
    let metrics = gateway.metrics.clone();
    let task_router = router.clone();
    tokio::spawn(async move {
        let routed = tokio::select! {
            result = async {
                if stream {
                    task_router.stream_to(route_request, events_tx).await
                } else {
                    drop(events_tx);
                    task_router.complete(route_request).await
                }
            } => Some(result),
            () = cancel.cancelled() => None,
        };
        let ending = match &routed {
            Some(Ok(outcome)) => Ending::Completed {
                chain: Vec::new(),
                attempts: attempt_entries(&task_router, None, &outcome.attempts),
                served_by: served_by_label(outcome),
                fallback: outcome.fallback,
                degraded: outcome.degraded,
                refusal: outcome.refusal,
                needs_review: false,
                answer: outcome.response.text.clone(),
            },
            Some(Err(error)) => Ending::Failed {
                chain: Vec::new(),
                attempts: attempt_entries(&task_router, None, error.attempts()),
                error: error.to_string(),
            },
            None => Ending::Failed {
                chain: Vec::new(),
                attempts: Vec::new(),
                error: "client disconnected".to_owned(),
            },
        };
        if let Some(Ok(outcome)) = &routed {
            metrics.observe_outcome(&model, outcome);
        }
        match &routed {
            Some(Ok(outcome)) => meter.charge(&task_router, &outcome.attempts),
            Some(Err(error)) => meter.charge(&task_router, error.attempts()),
            None => {}
        }
        let durable = match (&journal, accepted) {
            (Some(journal), Some(accepted)) => end_journal(journal, accepted, ending).await,
            _ => Ok(()),
        };
        let reply: Routed = match (routed, durable) {
            (None, _) => return,
            (Some(Err(error)), _) => Err(route_error(&error)),
            (Some(Ok(_)), Err(why)) => Err(journal_error(trace_id, &why)),
            (Some(Ok(outcome)), Ok(())) => Ok((outcome, false)),
        };
        let _ = done_tx.send(reply);
    });
    if stream {
        return Ok(stream_response(
            wire,
            ids,
            include_usage,
            events_rx,
            done_rx,
            Some(trace_id),
            None,
            hang_up,
        )
        .await);
    }
    let routed = done_rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "the routing task ended without an answer",
        )
    })?;
    hang_up.disarm();
    let (outcome, needs_review) = routed?;
    Ok(whole_response(
        wire,
        &ids,
        &outcome,
        Facts::of(&outcome, needs_review, None),
    ))
}

fn journal_error(trace_id: TraceId, why: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!("the request was not acknowledged: the journal could not record it: {why}"),
    )
    .with_code("journal_unavailable");
    error.trace_id = Some(trace_id);
    error
}

async fn end_journal(
    journal: &RouteJournal,
    accepted: JournalRecord,
    ending: Ending,
) -> Result<(), String> {
    let trace_id = accepted.trace_id;
    let record = journal
        .journal
        .end(accepted, None, ending)
        .map_err(|e| e.to_string())?;
    if let Err(error) = journal.telemetry.record_finished(&record) {
        tracing::error!(%error, trace = %trace_id, "cannot write the request's telemetry");
    }
    journal.store.durable().await.map_err(|e| e.to_string())
}

fn last_user_text(incoming: &Incoming) -> String {
    incoming
        .request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == MessageRole::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// Asks a swarm: the supervisor classifies the last user message.
async fn ask_swarm(
    gateway: &Arc<Gateway>,
    wire: Wire,
    entered: &Entered,
    supervisor: ActorRef<SupervisorMsg>,
    incoming: Incoming,
    session: Option<String>,
    meter: self::keys::Meter,
) -> Result<Response, ApiError> {
    let question = last_user_text(&incoming);
    if question.trim().is_empty() {
        return Err(ApiError {
            param: Some("messages".to_owned()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "a swarm answers the last user message, and there is none",
            )
        });
    }
    let deadline = entered.engine.deadline();
    let ids = Ids {
        id: format!("chatcmpl-{}", TraceId::new()),
        created: now_secs(),
        model: incoming.model.clone(),
    };
    let (events_tx, events_rx) = mpsc::channel::<StreamEvent>(64);
    let (done_tx, done_rx) = oneshot::channel::<Result<Answer, ApiError>>();
    let stream = incoming.stream;
    let metrics = gateway.metrics.clone();
    let model = incoming.model.clone();
    let router = entered.engine.router().clone();
    // The supervisor journals the request and finishes it whatever the
    // connection does; this task only relays its answer.
    tokio::spawn(async move {
        let called = if stream {
            supervisor
                .call(
                    |reply| SupervisorMsg::AskStream {
                        text: question,
                        session,
                        sink: events_tx,
                        reply,
                    },
                    Some(deadline),
                )
                .await
        } else {
            drop(events_tx);
            supervisor
                .call(
                    |reply| SupervisorMsg::Ask {
                        text: question,
                        session,
                        reply,
                    },
                    Some(deadline),
                )
                .await
        };
        let result = match called {
            Ok(CallResult::Success(Ok(answer))) => {
                metrics.observe_outcome(&model, &answer.outcome);
                meter.charge(&router, &answer.outcome.attempts);
                Ok(answer)
            }
            Ok(CallResult::Success(Err(error))) => Err(ask_error(&error)),
            Ok(CallResult::Timeout) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                format!("the swarm did not answer within {deadline:?}"),
            )),
            Ok(CallResult::SenderError) | Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "the swarm supervisor stopped before answering",
            )),
        };
        let _ = done_tx.send(result);
    });
    if stream {
        let (routed_tx, routed_rx) = oneshot::channel::<Routed>();
        let (worker_tx, worker_rx) = oneshot::channel::<String>();
        tokio::spawn(async move {
            let relayed = match done_rx.await {
                Ok(Ok(answer)) => {
                    let _ = worker_tx
                        .send(answer.chain.last().map(|a| a.0.clone()).unwrap_or_default());
                    Ok((answer.outcome, answer.needs_review))
                }
                Ok(Err(error)) => Err(error),
                Err(_) => return,
            };
            let _ = routed_tx.send(relayed);
        });
        let disarmed = CancellationToken::new().drop_guard();
        // The supervisor makes the trace id: it comes in the last chunk.
        return Ok(stream_response(
            wire,
            ids,
            incoming.include_usage,
            events_rx,
            routed_rx,
            None,
            Some(worker_rx),
            disarmed,
        )
        .await);
    }
    let answer = done_rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "the swarm task ended without an answer",
        )
    })??;
    let worker = answer.chain.last().map(|a| a.0.clone());
    Ok(whole_response(
        wire,
        &ids,
        &answer.outcome,
        Facts::of(&answer.outcome, answer.needs_review, worker),
    ))
}

/// Which wire format a request came in, and its answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

impl ApiError {
    /// The error as `wire`'s clients expect it.
    fn respond(self, wire: Wire) -> Response {
        match wire {
            Wire::OpenAi => self.into_response(),
            Wire::Anthropic => {
                let body =
                    anthropic::error(anthropic::error_kind(self.status.as_u16()), &self.message);
                let mut response = (self.status, Json(body)).into_response();
                if let Some(wait) = self.retry_after {
                    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                }
                if let Some(value) = self
                    .trace_id
                    .and_then(|t| HeaderValue::from_str(&t.to_string()).ok())
                {
                    response.headers_mut().insert(TRACE_HEADER, value);
                }
                response
            }
        }
    }

    /// The error as a last stream event, once a 200 went out.
    fn event(&self, wire: Wire) -> String {
        match wire {
            Wire::OpenAi => format!("data: {}\n\n", self.body()),
            Wire::Anthropic => anthropic::event(
                "error",
                &anthropic::error(anthropic::error_kind(self.status.as_u16()), &self.message),
            ),
        }
    }
}

fn whole_response(wire: Wire, ids: &Ids, outcome: &Outcome, facts: Facts) -> Response {
    let body = match wire {
        Wire::OpenAi => openai::completion(ids, &outcome.response, facts.json()),
        Wire::Anthropic => anthropic::message(
            &message_id(ids),
            &ids.model,
            &outcome.response,
            facts.json(),
        ),
    };
    let mut response = Json(body).into_response();
    facts.headers(response.headers_mut());
    if let Ok(value) = HeaderValue::from_str(&facts.trace_id.to_string()) {
        response.headers_mut().insert(TRACE_HEADER, value);
    }
    response
}

/// Anthropic's message id from the answer's id.
fn message_id(ids: &Ids) -> String {
    format!("msg_{}", ids.id.trim_start_matches("chatcmpl-"))
}

/// Writes stream events in a wire format.
enum Encoder {
    OpenAi {
        ids: Ids,
        include_usage: bool,
        sent_role: bool,
    },
    Anthropic(anthropic::Blocks),
}

impl Encoder {
    fn new(wire: Wire, ids: Ids, include_usage: bool) -> Encoder {
        match wire {
            Wire::OpenAi => Encoder::OpenAi {
                ids,
                include_usage,
                sent_role: false,
            },
            Wire::Anthropic => {
                Encoder::Anthropic(anthropic::Blocks::new(message_id(&ids), ids.model))
            }
        }
    }

    /// What opens the stream.
    fn start(&self) -> String {
        match self {
            Encoder::OpenAi { .. } => String::new(),
            // The input count is not known before the answer ends; it
            // comes with the usage at the end.
            Encoder::Anthropic(blocks) => blocks.start(0),
        }
    }

    fn event(&mut self, event: &StreamEvent) -> String {
        match (self, event) {
            (Encoder::OpenAi { ids, sent_role, .. }, StreamEvent::Delta(text)) => {
                let mut delta = json!({ "content": text });
                if !*sent_role {
                    delta["role"] = json!("assistant");
                    *sent_role = true;
                }
                format!("data: {}\n\n", openai::chunk(ids, delta, None))
            }
            (
                Encoder::OpenAi { ids, .. },
                StreamEvent::ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments,
                },
            ) => format!(
                "data: {}\n\n",
                openai::chunk(
                    ids,
                    openai::tool_call_delta(*index, id.as_deref(), name.as_deref(), arguments),
                    None
                )
            ),
            (Encoder::Anthropic(blocks), StreamEvent::Delta(text)) => blocks.text(text),
            (
                Encoder::Anthropic(blocks),
                StreamEvent::ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments,
                },
            ) => blocks.tool(*index, id.as_deref(), name.as_deref(), arguments),
            (_, StreamEvent::Finished { .. }) => String::new(),
        }
    }

    /// What ends the stream: the finish, the usage, the facts.
    fn finish(&mut self, reason: &FinishReason, usage: Option<&Usage>, facts: &Facts) -> String {
        match self {
            Encoder::OpenAi {
                ids, include_usage, ..
            } => {
                let mut out = String::new();
                let mut last = openai::chunk(ids, json!({}), Some(openai::finish_reason(reason)));
                last["baton"] = facts.json();
                out.push_str(&format!("data: {last}\n\n"));
                if *include_usage {
                    out.push_str(&format!(
                        "data: {}\n\n",
                        openai::usage_chunk(ids, usage, facts.json())
                    ));
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
            Encoder::Anthropic(blocks) => blocks.finish(reason, usage, facts.json()),
        }
    }
}

/// A streamed answer. The response head waits for the first event or the
/// end, so a request that fails before any text gets a proper error status
/// rather than a 200 with an error inside.
#[allow(clippy::too_many_arguments)]
async fn stream_response(
    wire: Wire,
    ids: Ids,
    include_usage: bool,
    mut events: mpsc::Receiver<StreamEvent>,
    done: oneshot::Receiver<Routed>,
    trace_id: Option<TraceId>,
    worker: Option<oneshot::Receiver<String>>,
    hang_up: tokio_util::sync::DropGuard,
) -> Response {
    let mut encoder = Encoder::new(wire, ids, include_usage);
    let Some(first) = events.recv().await else {
        // No event: the answer failed, or came whole (a contract, a cache).
        return match done.await {
            Ok(Err(error)) => error.respond(wire),
            Ok(Ok((outcome, needs_review))) => {
                // The answer is complete: no upstream call is left to cancel.
                hang_up.disarm();
                let worker = match worker {
                    Some(rx) => rx.await.ok(),
                    None => None,
                };
                let facts = Facts::of(&outcome, needs_review, worker);
                let mut text = encoder.start();
                for event in whole_as_events(&outcome.response) {
                    text.push_str(&encoder.event(&event));
                }
                let response = &outcome.response;
                text.push_str(&encoder.finish(
                    &response.finish_reason,
                    response.usage.as_ref(),
                    &facts,
                ));
                let mut body = Response::new(Body::from(text));
                let headers = body.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                facts.headers(headers);
                if let Ok(value) = HeaderValue::from_str(&facts.trace_id.to_string()) {
                    headers.insert(TRACE_HEADER, value);
                }
                body
            }
            Err(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "the routing task ended without an answer",
            )
            .respond(wire),
        };
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _hang_up = hang_up;
        let mut finish: Option<(FinishReason, Option<Usage>)> = None;
        let start = encoder.start();
        if !start.is_empty() && tx.send(Bytes::from(start)).await.is_err() {
            return;
        }
        let mut next = Some(first);
        while let Some(event) = next {
            if let StreamEvent::Finished {
                finish_reason,
                usage,
                ..
            } = &event
            {
                finish = Some((finish_reason.clone(), *usage));
            }
            let text = encoder.event(&event);
            // A failed send is the client gone: dropping the guard on the
            // way out cancels the upstream call.
            if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
                return;
            }
            next = events.recv().await;
        }
        let routed = done.await;
        let worker = match worker {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        match routed {
            Ok(Ok((outcome, needs_review))) => {
                let (reason, usage) = finish.unwrap_or((
                    outcome.response.finish_reason.clone(),
                    outcome.response.usage,
                ));
                let facts = Facts::of(&outcome, needs_review, worker);
                let usage = usage.or(outcome.response.usage);
                let _ = tx
                    .send(Bytes::from(encoder.finish(&reason, usage.as_ref(), &facts)))
                    .await;
            }
            // Text already went out with a 200: the error is a last event.
            Ok(Err(error)) => {
                let _ = tx.send(Bytes::from(error.event(wire))).await;
            }
            Err(_) => {}
        }
    });
    let body = Body::from_stream(receiver_stream(rx).map(Ok::<Bytes, std::convert::Infallible>));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(value) = trace_id.and_then(|t| HeaderValue::from_str(&t.to_string()).ok()) {
        headers.insert(TRACE_HEADER, value);
    }
    response
}

/// A receiver as a stream.
fn receiver_stream(mut rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// An answer that came whole, as the events a stream would have carried.
fn whole_as_events(response: &ChatResponse) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    if !response.text.is_empty() {
        events.push(StreamEvent::Delta(response.text.clone()));
    }
    for (index, call) in response.tool_calls.iter().enumerate() {
        events.push(StreamEvent::ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            arguments: call.arguments.clone(),
        });
    }
    events
}
