//! Embedding Baton with a provider of your own: any type implementing
//! `Backend` can sit in a route's chain beside the built-in clients. Here
//! an order-status table answers when the model in front of it is down
//! (a mock upstream on loopback answering 503), with the router's
//! breakers, retries and failover around both.
//!
//! Run: `cargo run --example custom_provider`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton::config::{Config, ProviderId};
use baton::provider::mock::{MockServer, Script};
use baton::provider::openai::OpenAi;
use baton::provider::{
    AttemptDeadline, Backend, ChatRequest, ChatResponse, EventStream, FinishReason, Message,
    MessageRole, ProviderError, StreamEvent, Usage,
};
use baton::routing::pool::Pool;
use baton::routing::router::{RouteRequest, Router};
use futures_util::future::BoxFuture;

/// Answers "where is order N" from a table: no model, no network.
#[derive(Debug)]
struct OrderTable {
    id: ProviderId,
    orders: Vec<(&'static str, &'static str)>,
}

impl OrderTable {
    fn answer(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let question = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::User)
            .map_or("", |m| m.content.as_str());
        let (number, status) = self
            .orders
            .iter()
            .find(|(number, _)| question.contains(number))
            .ok_or_else(|| ProviderError::Unavailable("no order number in the question".into()))?;
        let text = format!("Order {number} is {status}.");
        Ok(ChatResponse {
            usage: Some(Usage {
                input_tokens: 0,
                output_tokens: text.split_whitespace().count() as u32,
            }),
            text,
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            request_id: None,
            model: "order-table".to_owned(),
        })
    }
}

impl Backend for OrderTable {
    fn id(&self) -> &ProviderId {
        &self.id
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        _deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move { self.answer(request) })
    }

    /// The router streams from every provider (that is how it sees the
    /// first token): a whole answer is one delta and the end.
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
        _deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let response = self.answer(request)?;
            let events = vec![
                Ok(StreamEvent::Delta(response.text)),
                Ok(StreamEvent::Finished {
                    finish_reason: response.finish_reason,
                    usage: response.usage,
                    request_id: None,
                    model: response.model,
                }),
            ];
            let stream: EventStream = Box::pin(futures_util::stream::iter(events));
            Ok(stream)
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let down = Script::from_toml(
        "[[fault]]\nkind = \"status\"\nstatus = 503\n",
        Path::new("down"),
    )?;
    let model = MockServer::start(([127, 0, 0, 1], 0).into(), down).await?;
    // The config names both providers, so routes, breakers and the graph
    // know them; `orders` gets its backend below instead of an HTTP client.
    let config = Config::parse(
        &format!(
            r#"default_route = "orders"
[providers.model]
kind = "openai"
model = "fast"
base_url = "{}/v1"
domain = "cloud"

[providers.orders]
kind = "openai"
model = "order-table"
base_url = "http://127.0.0.1:9/unused"
domain = "in-house"

[routes.orders]
chain = ["model", "orders"]
"#,
            model.base_url()
        ),
        Path::new("example.toml"),
    )?;
    let mut pool = Pool::empty();
    let now = tokio::time::Instant::now();
    for spec in config.providers.values() {
        let backend: Arc<dyn Backend> = if spec.id.0 == "orders" {
            Arc::new(OrderTable {
                id: spec.id.clone(),
                orders: vec![("1042", "out for delivery"), ("1043", "delayed at customs")],
            })
        } else {
            Arc::new(OpenAi::new(
                spec.id.clone(),
                spec.base_url.as_deref().unwrap_or_default(),
                spec.model.clone().unwrap_or_default(),
                None,
                Duration::from_secs(2),
            )?)
        };
        pool.add(spec.clone(), backend, &config, now)?;
    }
    let router = Router::new(&config, pool)?;

    let request = ChatRequest {
        messages: vec![Message::user("Where is order 1042?")],
        ..ChatRequest::default()
    };
    let outcome = router
        .complete(RouteRequest::new("orders", request))
        .await?;
    for attempt in &outcome.attempts {
        let result = attempt
            .error
            .as_ref()
            .map_or("ok".to_owned(), |(label, _)| label.clone());
        println!("tried {}: {result}", attempt.provider);
    }
    println!("{}", outcome.response.text);
    model.shutdown().await;
    Ok(())
}
