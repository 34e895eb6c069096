//! Webhook delivery: one task POSTs notifications in the order they were
//! queued, so a resolve never reaches the receiver before its fire.
//!
//! The engine hands a notification over with a non-blocking `try_send`
//! into a bounded queue: a webhook that is down or slow holds up later
//! notifications, never the engine, and a queue full of them sheds the new
//! one with a warning rather than growing without bound. Each POST has its
//! own timeout; connection failures, timeouts, 408, 429 and 5xx are retried
//! a few times with full-jitter back-off, other statuses are final.
//! Redirects are not followed: a POST turned into a GET by a 302 would
//! "succeed" without delivering anything. Nothing here logs the URL itself,
//! only its origin, and reqwest's errors are stripped of the URL they
//! carry.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Notification;
use crate::config::WebhookUrl;
use crate::routing::backoff::Backoff;

/// Notifications waiting for the webhook at most; more are dropped.
pub const QUEUE: usize = 1024;
/// Tries per notification, the first included.
pub const ATTEMPTS: u32 = 4;
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

enum Item {
    Post(Box<Notification>),
    /// Answered once every item queued before it was handled.
    Flush(oneshot::Sender<()>),
}

/// The sending side of the delivery task; log-only without a webhook.
#[derive(Debug)]
pub struct Delivery {
    queue: Option<mpsc::Sender<Item>>,
    task: Option<JoinHandle<()>>,
    origin: Option<String>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Post(n) => write!(f, "Post({} {:?})", n.alert, n.status),
            Item::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Delivery {
    /// Starts the delivery task for `webhook` (nothing to start without one).
    pub fn start(webhook: Option<WebhookUrl>, timeout: Duration) -> Delivery {
        let Some(webhook) = webhook else {
            return Delivery {
                queue: None,
                task: None,
                origin: None,
            };
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build();
        let client = match client {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(webhook = %webhook.origin(), error = %error.without_url(), "cannot build the alert webhook client; alerts go to the log only");
                return Delivery {
                    queue: None,
                    task: None,
                    origin: None,
                };
            }
        };
        let (queue, items) = mpsc::channel(QUEUE);
        let origin = webhook.origin().to_owned();
        let task = tokio::spawn(deliver(client, webhook, items));
        Delivery {
            queue: Some(queue),
            task: Some(task),
            origin: Some(origin),
        }
    }

    /// Queues `notification` for the webhook without waiting.
    pub fn send(&self, notification: Notification) {
        let Some(queue) = &self.queue else { return };
        if let Err(error) = queue.try_send(Item::Post(Box::new(notification))) {
            let (mpsc::error::TrySendError::Full(Item::Post(n))
            | mpsc::error::TrySendError::Closed(Item::Post(n))) = error
            else {
                return;
            };
            tracing::warn!(
                webhook = %self.origin.as_deref().unwrap_or("-"),
                alert = %n.alert,
                subject = %n.subject,
                status = ?n.status,
                "alert webhook queue is full ({QUEUE} waiting); this notification is logged only"
            );
        }
    }

    /// Resolves once everything queued before the call was delivered or
    /// given up on.
    pub fn flush(&self) -> oneshot::Receiver<()> {
        let (done, heard) = oneshot::channel();
        match &self.queue {
            None => {
                let _ = done.send(());
            }
            Some(queue) => {
                // Waits for room off the engine's task: the flush marker
                // must not be shed like a notification, nor stall the engine.
                let queue = queue.clone();
                tokio::spawn(async move {
                    if let Err(mpsc::error::SendError(Item::Flush(done))) =
                        queue.send(Item::Flush(done)).await
                    {
                        let _ = done.send(());
                    }
                });
            }
        }
        heard
    }

    /// Stops taking notifications and lets the queued ones go out, for at
    /// most `grace`.
    pub async fn close(mut self, grace: Duration) {
        self.queue = None;
        if let Some(task) = self.task.take()
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!(
                webhook = %self.origin.as_deref().unwrap_or("-"),
                "alert notifications still queued for the webhook at shutdown are dropped"
            );
        }
    }
}

async fn deliver(client: reqwest::Client, webhook: WebhookUrl, mut items: mpsc::Receiver<Item>) {
    while let Some(item) = items.recv().await {
        match item {
            Item::Post(notification) => post(&client, &webhook, &notification).await,
            Item::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

async fn post(client: &reqwest::Client, webhook: &WebhookUrl, notification: &Notification) {
    // Constants, checked by the test below: base above zero, max above base.
    let backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX).expect("valid webhook back-off");
    let body = notification.body();
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let wait = backoff.delay(attempt - 1, &mut rand::rng());
            tokio::time::sleep(wait).await;
        }
        match client.post(webhook.expose()).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(webhook = %webhook.origin(), alert = %notification.alert, status = ?notification.status, "alert delivered");
                return;
            }
            Ok(response) if retryable(response.status()) => {
                last = format!("the webhook answered {}", response.status());
            }
            Ok(response) => {
                tracing::warn!(
                    webhook = %webhook.origin(),
                    alert = %notification.alert,
                    subject = %notification.subject,
                    status = ?notification.status,
                    "the alert webhook refused the notification with {}; not retried",
                    response.status()
                );
                return;
            }
            Err(error) => last = error.without_url().to_string(),
        }
    }
    tracing::warn!(
        webhook = %webhook.origin(),
        alert = %notification.alert,
        subject = %notification.subject,
        status = ?notification.status,
        "alert webhook delivery failed after {ATTEMPTS} attempts: {last}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_constants_are_valid() {
        assert!(Backoff::new(BACKOFF_BASE, BACKOFF_MAX).is_ok());
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for code in [500, 502, 503, 429, 408] {
            assert!(
                retryable(reqwest::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [400, 401, 404, 302] {
            assert!(
                !retryable(reqwest::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }
}
