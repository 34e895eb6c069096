//! `Idempotency-Key`: a request repeated with the same key (by the same
//! caller) gets the first one's answer, and upstream is asked once.
//!
//! While the first is in flight the others wait on its channel; once it
//! is done its status, headers and body are in the `idempotency` tree for
//! the window (24 h by default). Answers worth retrying (5xx, 429) are
//! shared with those already waiting but not kept, so a later retry gets
//! a real second chance. Streaming requests with a key are refused (400):
//! replaying a stream as a stream would hide that it is a replay, and
//! holding a whole stream back defeats streaming.

// Errors here are the gateway's `ApiError` by value, as its handlers'
// are: they are built once per refused request, not on a hot loop.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::ApiError;
use crate::store::idempotency::{Idempotency, StoredResult, entry_key, fingerprint};
use crate::store::keys::now_ms;
use crate::store::{Store, StoreError};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest key accepted (Stripe's limit).
const MAX_KEY: usize = 255;
/// Largest answer kept; a larger one is shared in flight but not stored.
const MAX_BODY: usize = 16 * 1024 * 1024;

type Slot = watch::Receiver<Option<Arc<StoredResult>>>;

/// The idempotency keys of a gateway.
pub struct Gate {
    store: Option<Idempotency>,
    in_flight: Mutex<HashMap<[u8; 32], (String, Slot)>>,
}

impl Gate {
    /// Prunes results older than `window` from the store.
    pub fn new(store: Option<&Store>, window: Duration) -> Result<Gate, StoreError> {
        let store = store.map(|s| Idempotency::new(s, window)).transpose()?;
        if let Some(store) = &store {
            let pruned = store.prune()?;
            if pruned > 0 {
                tracing::info!(pruned, "idempotency results past their window removed");
            }
        }
        Ok(Gate {
            store,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    fn stored(&self, entry: &[u8; 32]) -> Result<Option<StoredResult>, ApiError> {
        match &self.store {
            Some(store) => store.get(entry).map_err(|error| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    format!("cannot read idempotency results: {error}"),
                )
                .with_code("store_unavailable")
            }),
            None => Ok(None),
        }
    }

    /// Runs `ask` once per (scope, Idempotency-Key); without the header,
    /// just runs it.
    pub async fn once(
        &self,
        headers: &HeaderMap,
        scope: &str,
        body: &Bytes,
        stream: bool,
        ask: impl Future<Output = Result<Response, ApiError>>,
    ) -> Result<Response, ApiError> {
        let Some(key) = headers.get(IDEMPOTENCY_HEADER) else {
            return ask.await;
        };
        let key = key
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY)
            .ok_or_else(|| {
                invalid(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
                ))
            })?;
        if stream {
            return Err(invalid(
                "Idempotency-Key is not supported with `stream: true`; send it without streaming"
                    .to_owned(),
            ));
        }
        let entry = entry_key(scope, key);
        let print = fingerprint(body);
        if let Some(stored) = self.stored(&entry)? {
            return replay(&stored, &print, true);
        }
        let waiting = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match in_flight.get(&entry) {
                Some((first, slot)) => {
                    if *first != print {
                        return Err(reused());
                    }
                    Ok(slot.clone())
                }
                None => {
                    // The first may have ended between the read above and
                    // this lock: it stores before it leaves the map.
                    if let Some(stored) = self.stored(&entry)? {
                        return replay(&stored, &print, true);
                    }
                    let (tx, rx) = watch::channel(None);
                    in_flight.insert(entry, (print.clone(), rx));
                    Err(tx)
                }
            }
        };
        let tx = match waiting {
            Ok(mut slot) => {
                let result = slot
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|r| r.clone());
                return match result {
                    Some(stored) => replay(&stored, &print, true),
                    None => Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "invalid_request_error",
                        "the first request with this Idempotency-Key ended without an answer; retry",
                    )
                    .with_code("idempotency_key_in_use")),
                };
            }
            Err(tx) => tx,
        };
        // The entry leaves the map however this ends, a hang-up included:
        // the waiters then hear the channel close.
        let _leave = Leave { gate: self, entry };
        let response = match ask.await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        let stored = Arc::new(capture(response, print.clone()).await);
        let keep = !(stored.status >= 500 || stored.status == 429) && stored.body.len() <= MAX_BODY;
        if keep && let Some(store) = &self.store {
            if let Err(error) = store.put(&entry, &stored) {
                tracing::error!(%error, "cannot store an idempotency result");
            }
        }
        let _ = tx.send(Some(stored.clone()));
        replay(&stored, &print, false)
    }
}

struct Leave<'a> {
    gate: &'a Gate,
    entry: [u8; 32],
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.gate
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.entry);
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        .with_code("invalid_idempotency_key")
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_error",
        "this Idempotency-Key was used with a different request body",
    )
    .with_code("idempotency_key_reused")
}

/// The headers a replay needs: the body's type and Baton's facts.
fn kept(name: &HeaderName) -> bool {
    let name = name.as_str();
    name == "content-type" || name == "retry-after" || name.starts_with("x-baton-")
}

async fn capture(response: Response, fingerprint: String) -> StoredResult {
    let (parts, body) = response.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| kept(name))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => {
            tracing::error!(%error, "cannot read an answer to keep it");
            String::new()
        }
    };
    StoredResult {
        status: parts.status.as_u16(),
        headers,
        body,
        fingerprint,
        at_ms: now_ms(),
    }
}

fn replay(stored: &StoredResult, print: &str, replayed: bool) -> Result<Response, ApiError> {
    if stored.fingerprint != print {
        return Err(reused());
    }
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    if replayed {
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}
