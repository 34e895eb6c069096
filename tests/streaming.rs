//! Streaming through the router with mid-stream failover: the caller sees
//! one continuous answer, equal to the mock's full deterministic answer, no
//! word repeated or missing, whether the next provider continues a prefill,
//! refuses it (400) or restarts from the beginning; a stream cut inside a
//! tool call yields one whole tool call.

use std::path::Path;

use baton::config::Config;
use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use baton::provider::{ChatRequest, Message, StreamEvent, ToolSpec};
use baton::routing::pool::Pool;
use baton::routing::router::{Outcome, RouteRequest, Router, ServedBy};
use tokio::sync::mpsc;

async fn mock(script: &str) -> MockHandle {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml(script, Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap()
}

fn router(kind: &str, primary: &MockHandle, secondary: &MockHandle) -> Router {
    let base = |m: &MockHandle| match kind {
        "openai" => format!("{}/v1", m.base_url()),
        _ => m.base_url(),
    };
    let text = format!(
        "default_route = \"r\"\n[defaults]\nretries = 0\nfinal_fallbacks = []\nfirst_token_timeout = \"1s\"\n\
         [providers.primary]\nkind = \"{kind}\"\nmodel = \"m\"\nbase_url = \"{}\"\n\
         [providers.secondary]\nkind = \"{kind}\"\nmodel = \"m\"\nbase_url = \"{}\"\n\
         [routes.r]\nchain = [\"primary\", \"secondary\"]\n",
        base(primary),
        base(secondary)
    );
    let config = Config::parse(&text, Path::new("t.toml")).unwrap();
    Router::new(&config, Pool::from_config(&config).unwrap()).unwrap()
}

/// Streams `request` and returns what the caller received, and the outcome.
async fn stream(router: &Router, request: ChatRequest) -> (String, Vec<StreamEvent>, Outcome) {
    let (sink, mut events) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(event) = events.recv().await {
            all.push(event);
        }
        all
    });
    let outcome = router
        .stream_to(RouteRequest::new("r", request), sink)
        .await
        .expect("an answer");
    let events = collect.await.unwrap();
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    (text, events, outcome)
}

fn question(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)],
        ..ChatRequest::default()
    }
}

async fn continues_seamlessly(kind: &str, secondary_script: &str) {
    let primary = mock("[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 7\n").await;
    let secondary = mock(secondary_script).await;
    let router = router(kind, &primary, &secondary);
    let (text, events, outcome) =
        stream(&router, question("my label printer feeds blank pages")).await;
    let expected = expected_answer("my label printer feeds blank pages", 24);
    assert_eq!(text, expected, "{kind} with {secondary_script:?}");
    assert_eq!(outcome.response.text, expected);
    assert!(matches!(events.last(), Some(StreamEvent::Finished { .. })));
    assert_eq!(
        outcome.served_by,
        ServedBy::Provider {
            id: baton::config::ProviderId("secondary".into())
        }
    );
    assert_eq!(outcome.attempts[0].error.as_ref().unwrap().0, "cut_stream");
}

#[tokio::test]
async fn a_provider_that_accepts_prefill_continues_the_answer() {
    continues_seamlessly("anthropic", "").await;
    continues_seamlessly("openai", "").await;
}

#[tokio::test]
async fn a_provider_that_refuses_prefill_is_asked_again_and_trimmed() {
    continues_seamlessly("anthropic", "[[fault]]\nkind = \"reject_prefill\"\n").await;
    continues_seamlessly("openai", "[[fault]]\nkind = \"reject_prefill\"\n").await;
}

#[tokio::test]
async fn a_provider_that_restarts_from_the_beginning_is_trimmed() {
    continues_seamlessly("anthropic", "[[fault]]\nkind = \"restart_continuation\"\n").await;
    continues_seamlessly("openai", "[[fault]]\nkind = \"restart_continuation\"\n").await;
}

#[tokio::test]
async fn a_stream_cut_inside_a_tool_call_yields_one_whole_tool_call() {
    let primary = mock("[[fault]]\nkind = \"cut_tool_call\"\nafter_tokens = 1\n").await;
    let secondary = mock("").await;
    let router = router("openai", &primary, &secondary);
    let mut request = question("please run lookup_order for order 1234");
    request.tools.push(ToolSpec {
        name: "lookup_order".into(),
        description: "Find an order".into(),
        parameters: serde_json::json!({"type": "object"}),
    });
    let (_, events, outcome) = stream(&router, request).await;
    let calls: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::ToolCallDelta { .. }))
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    let StreamEvent::ToolCallDelta {
        name, arguments, ..
    } = calls[0]
    else {
        unreachable!()
    };
    assert_eq!(name.as_deref(), Some("lookup_order"));
    let parsed: serde_json::Value = serde_json::from_str(arguments).expect("whole JSON arguments");
    assert!(parsed.is_object());
    assert_eq!(outcome.response.tool_calls.len(), 1);
}

#[tokio::test]
async fn a_healthy_stream_passes_through_unchanged() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let router = router("openai", &primary, &secondary);
    let (text, events, outcome) = stream(&router, question("hello")).await;
    assert_eq!(text, expected_answer("hello", 24));
    assert!(events.len() > 5, "delivered as a stream, not one piece");
    assert!(!outcome.fallback);
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test]
async fn a_caller_that_stops_reading_does_not_hold_the_attempt_past_its_deadline() {
    let primary = mock("").await;
    let secondary = mock("").await;
    let text = format!(
        "default_route = \"r\"\n[defaults]\nretries = 0\nfinal_fallbacks = []\nfirst_token_timeout = \"200ms\"\nattempt_timeout = \"300ms\"\n\
         [providers.primary]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\n\
         [providers.secondary]\nkind = \"openai\"\nmodel = \"m\"\nbase_url = \"{}/v1\"\n\
         [routes.r]\nchain = [\"primary\", \"secondary\"]\n",
        primary.base_url(),
        secondary.base_url()
    );
    let config = Config::parse(&text, Path::new("t.toml")).unwrap();
    let router = Router::new(&config, Pool::from_config(&config).unwrap()).unwrap();
    // Room for one event, and nobody reads.
    let (sink, _unread) = mpsc::channel(1);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        router.stream_to(RouteRequest::new("r", question("hello there")), sink),
    )
    .await
    .expect("the request ends instead of waiting on the caller");
    let error = result.unwrap_err();
    let baton::routing::router::RouteError::Exhausted { attempts, .. } = &error else {
        panic!("{error}")
    };
    let first = attempts[0].error.as_ref().unwrap();
    assert_eq!(first.0, "unavailable");
    assert!(first.1.contains("stopped reading"), "{}", first.1);
    // The providers are not blamed for a slow caller.
    for handle in router.pool().handles() {
        assert_eq!(
            handle
                .breaker(tokio::time::Instant::now())
                .consecutive_failures,
            0
        );
    }
}
