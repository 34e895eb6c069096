//! Baton's OpenAI and Anthropic clients against the mock provider over
//! loopback: whole and streamed answers, tool calls, and a stream cut after
//! N tokens seen as a failure (with its partial text), not a short answer.

use std::path::Path;
use std::time::Duration;

use baton::config::ProviderId;
use baton::provider::anthropic::Anthropic;
use baton::provider::mock::{MockHandle, MockServer, Script, expected_answer};
use baton::provider::openai::OpenAi;
use baton::provider::{
    AttemptDeadline, Backend, ChatRequest, FinishReason, Message, ProviderError, ToolSpec, collect,
};

async fn mock(script: &str) -> MockHandle {
    MockServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Script::from_toml(script, Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap()
}

fn clients(mock: &MockHandle) -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(
            OpenAi::new(
                ProviderId("o".into()),
                &format!("{}/v1", mock.base_url()),
                "m",
                None,
                Duration::from_secs(1),
            )
            .unwrap(),
        ),
        Box::new(
            Anthropic::new(
                ProviderId("a".into()),
                &mock.base_url(),
                "m",
                None,
                Duration::from_secs(1),
            )
            .unwrap(),
        ),
    ]
}

fn deadline() -> AttemptDeadline {
    AttemptDeadline::new(Duration::from_secs(2), Duration::from_secs(5))
}

fn question(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::system("be brief"), Message::user(text)],
        ..ChatRequest::default()
    }
}

#[tokio::test]
async fn whole_and_streamed_answers_agree_on_both_protocols() {
    let server = mock("").await;
    let expected = expected_answer("how do I print a label", 24);
    for client in clients(&server) {
        let whole = client
            .complete(&question("how do I print a label"), deadline())
            .await
            .unwrap();
        assert_eq!(whole.text, expected, "{client:?}");
        assert_eq!(whole.finish_reason, FinishReason::Stop);
        assert!(whole.usage.unwrap().output_tokens > 0);
        assert!(whole.request_id.is_some());
        let stream = client
            .stream(&question("how do I print a label"), deadline())
            .await
            .unwrap();
        let streamed = collect(stream).await.unwrap();
        assert_eq!(streamed.text, expected, "{client:?}");
        assert_eq!(streamed.usage, whole.usage, "{client:?}");
    }
    assert_eq!(server.stats().requests, 4);
}

#[tokio::test]
async fn tool_calls_arrive_whole_and_streamed() {
    let server = mock("").await;
    let mut request = question("please call lookup_order for 1234");
    request.tools.push(ToolSpec {
        name: "lookup_order".into(),
        description: "Find an order".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"query": {"type": "string"}}}),
    });
    for client in clients(&server) {
        let whole = client.complete(&request, deadline()).await.unwrap();
        assert_eq!(whole.finish_reason, FinishReason::ToolCalls, "{client:?}");
        assert_eq!(whole.tool_calls[0].name, "lookup_order");
        let arguments: serde_json::Value =
            serde_json::from_str(&whole.tool_calls[0].arguments).unwrap();
        let streamed = collect(client.stream(&request, deadline()).await.unwrap())
            .await
            .unwrap();
        assert_eq!(streamed.tool_calls[0].name, "lookup_order");
        let streamed_arguments: serde_json::Value =
            serde_json::from_str(&streamed.tool_calls[0].arguments).unwrap();
        assert_eq!(arguments, streamed_arguments, "{client:?}");
    }
}

#[tokio::test]
async fn a_stream_cut_after_n_tokens_is_a_failure_with_its_partial_text() {
    let server = mock("[[fault]]\nkind = \"cut_stream\"\nafter_tokens = 5\n").await;
    let expected = expected_answer("where is my parcel", 24);
    for client in clients(&server) {
        let stream = client
            .stream(&question("where is my parcel"), deadline())
            .await
            .unwrap();
        match collect(stream).await {
            Err(ProviderError::StreamCut { tokens, partial }) => {
                assert_eq!(tokens, 5, "{client:?}");
                assert!(
                    expected.starts_with(&partial),
                    "{partial:?} is not a prefix of {expected:?}"
                );
                assert!(!partial.is_empty());
            }
            other => panic!("{client:?}: expected a cut stream, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stalled_stream_hits_the_first_token_deadline() {
    let server = mock("[[fault]]\nkind = \"hang\"\n").await;
    for client in clients(&server) {
        let started = std::time::Instant::now();
        let deadline = AttemptDeadline::new(Duration::from_millis(300), Duration::from_secs(5));
        let result = match client.stream(&question("hello"), deadline).await {
            Ok(stream) => collect(stream).await,
            Err(error) => Err(error),
        };
        assert!(
            matches!(result, Err(ProviderError::FirstTokenTimeout(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test]
async fn a_refused_prefill_and_a_continuation_are_told_apart() {
    let server = mock("[[fault]]\nkind = \"reject_prefill\"\nendpoint = \"anthropic\"\n").await;
    let expected = expected_answer("explain webhooks", 24);
    let half: String = expected.split_inclusive(' ').take(10).collect();
    let mut request = question("explain webhooks");
    request.messages.push(Message::assistant(half.trim_end()));
    let clients = clients(&server);
    let continued = clients[0].complete(&request, deadline()).await.unwrap();
    assert!(
        expected.ends_with(continued.text.trim_start()),
        "{continued:?}"
    );
    let refused = clients[1].complete(&request, deadline()).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ProviderError::PrefillRejected(_) | ProviderError::Status { status: 400, .. }
        ),
        "{refused:?}"
    );
}
