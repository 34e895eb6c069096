//! Virtual keys at the gateway: who is calling, what they may use, and
//! their per-key limits.
//!
//! Keys are off until the store holds a live one; from then on every
//! `/v1/*` request names its key (`Authorization: Bearer` or `x-api-key`).
//! The `keys` tree is mirrored in memory and followed through sled's
//! change feed, so a key made or revoked by `baton keys` (through the
//! admin socket) counts from the next request without a sled scan on the
//! hot path. Rate windows live in memory only: a restart forgives them,
//! as a minute would. Spending is written through to the key's record at
//! each answer, so it survives a restart.

// Errors here are the gateway's `ApiError` by value, as its handlers'
// are: they are built once per refused request, not on a hot loop.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Gateway};
use crate::routing::router::{AttemptRecord, Router};
use crate::store::keys::{KeyHash, KeyRecord, Keys, generate, hash, now_ms, prefix_of};
use crate::store::{Store, StoreError};

const MINUTE: Duration = Duration::from_secs(60);

/// The keys a gateway knows, and what each has used.
pub struct KeyRing {
    store: Option<Keys>,
    records: RwLock<HashMap<KeyHash, KeyRecord>>,
    /// Keys not revoked: keys are enforced while there is one.
    live: AtomicUsize,
    windows: Mutex<HashMap<KeyHash, Window>>,
}

/// One key's last minute.
#[derive(Default)]
struct Window {
    requests: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
}

impl Window {
    fn forget_before(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            self.requests.pop_front();
        }
        while self
            .tokens
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= MINUTE)
        {
            self.tokens.pop_front();
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub hash: KeyHash,
    pub record: KeyRecord,
}

impl Caller {
    /// The scope of idempotency keys: one caller never replays another's.
    pub fn scope(caller: Option<&Caller>) -> String {
        caller.map_or_else(
            || "anonymous".to_owned(),
            |c| c.hash.iter().map(|b| format!("{b:02x}")).collect(),
        )
    }

    /// Whether the key may ask `model` (a route, or `swarm:NAME`).
    pub fn allows(&self, model: &str) -> bool {
        match model.strip_prefix("swarm:") {
            Some(swarm) => within(&self.record.swarms, swarm),
            None => within(&self.record.routes, model),
        }
    }
}

fn within(scope: &Option<Vec<String>>, name: &str) -> bool {
    scope
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| n == name))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
        .with_code("invalid_api_key")
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "permission_error", message).with_code("permission_denied")
}

/// The key a request carries, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

impl KeyRing {
    /// Loads the keys of `store` and follows their changes.
    pub fn new(store: Option<&Store>) -> Result<Arc<KeyRing>, StoreError> {
        let keys = store.map(Keys::new).transpose()?;
        let records: HashMap<KeyHash, KeyRecord> = match &keys {
            Some(keys) => keys.all()?.into_iter().collect(),
            None => HashMap::new(),
        };
        let ring = Arc::new(KeyRing {
            live: AtomicUsize::new(records.values().filter(|r| !r.revoked).count()),
            records: RwLock::new(records),
            store: keys,
            windows: Mutex::new(HashMap::new()),
        });
        if let Some(keys) = &ring.store {
            let subscriber = keys.tree().watch_prefix(Vec::<u8>::new());
            let weak = Arc::downgrade(&ring);
            // sled's feed blocks; a thread of its own keeps it off the
            // runtime's workers.
            let spawned = std::thread::Builder::new()
                .name("baton-keys".to_owned())
                .spawn(move || follow(&weak, subscriber));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot follow key changes: new keys count after a restart");
            }
        }
        Ok(ring)
    }

    pub fn enabled(&self) -> bool {
        self.live.load(Ordering::Acquire) > 0
    }

    fn set(&self, hash: KeyHash, record: Option<KeyRecord>) {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        match record {
            Some(record) => records.insert(hash, record),
            None => records.remove(&hash),
        };
        let live = records.values().filter(|r| !r.revoked).count();
        self.live.store(live, Ordering::Release);
    }

    fn lookup(&self, hash: &KeyHash) -> Option<KeyRecord> {
        let known = self
            .records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned();
        if known.is_some() {
            return known;
        }
        // A key made a moment ago may be ahead of the change feed.
        let fresh = self.store.as_ref()?.get(hash).ok()??;
        self.set(*hash, Some(fresh.clone()));
        Some(fresh)
    }

    /// Who is calling: `None` while keys are off, else the live key the
    /// request carries, or 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(key) = presented(headers) else {
            return Err(unauthorized(
                "this gateway requires a key: send `Authorization: Bearer <key>` or `x-api-key`",
            ));
        };
        let hash = hash(key);
        match self.lookup(&hash) {
            Some(record) if !record.revoked => Ok(Some(Caller { hash, record })),
            // One answer for unknown and revoked keys: the difference would
            // tell a guesser which keys once existed.
            _ => Err(unauthorized("the key is not valid")),
        }
    }

    /// Authenticates and checks the key may use `model`.
    pub fn admit(&self, headers: &HeaderMap, model: &str) -> Result<Option<Caller>, ApiError> {
        let caller = self.authenticate(headers)?;
        if let Some(caller) = &caller
            && !caller.allows(model)
        {
            return Err(forbidden(format!(
                "the key `{}` may not use `{model}`",
                caller.record.name
            )));
        }
        Ok(caller)
    }

    /// Counts a request against the caller's limits, or refuses it.
    pub fn spend_request(&self, caller: Option<&Caller>) -> Result<(), ApiError> {
        let Some(caller) = caller else {
            return Ok(());
        };
        // The record read now, not at authentication: answers that ended
        // meanwhile have spent.
        let record = self.lookup(&caller.hash).unwrap_or(caller.record.clone());
        if let Some(budget) = record.budget
            && record.spent >= budget
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("the key `{}` has spent its budget of {budget}", record.name),
            )
            .with_code("budget_exceeded"));
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let window = windows.entry(caller.hash).or_default();
        window.forget_before(now);
        let limited = |what: &str, oldest: Option<Instant>| {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("the key `{}` is over its {what}", record.name),
            )
            .with_code("rate_limit_exceeded");
            error.retry_after =
                Some(oldest.map_or(MINUTE, |t| MINUTE.saturating_sub(now.duration_since(t))));
            error
        };
        if let Some(rpm) = record.rpm
            && window.requests.len() >= rpm as usize
        {
            return Err(limited(
                "requests per minute",
                window.requests.front().copied(),
            ));
        }
        if let Some(tpm) = record.tpm
            && window.tokens.iter().map(|(_, n)| n).sum::<u64>() >= tpm
        {
            return Err(limited(
                "tokens per minute",
                window.tokens.front().map(|(t, _)| *t),
            ));
        }
        window.requests.push_back(now);
        Ok(())
    }

    /// Charges an answer's attempts to a key: tokens to its window, cost to
    /// its record.
    fn charge(&self, hash: &KeyHash, router: &Router, attempts: &[AttemptRecord]) {
        let tokens: u64 = attempts
            .iter()
            .filter_map(|a| a.usage)
            .map(|u| u64::from(u.input_tokens) + u64::from(u.output_tokens))
            .sum();
        let cost: f64 = attempts
            .iter()
            .map(|a| router.cost_of(&a.provider, a.usage.as_ref()))
            .sum();
        if tokens > 0 {
            self.windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(*hash)
                .or_default()
                .tokens
                .push_back((Instant::now(), tokens));
        }
        if cost <= 0.0 {
            return;
        }
        let updated = match &self.store {
            Some(keys) => match keys.add_spent(hash, cost) {
                Ok(updated) => updated,
                Err(error) => {
                    tracing::error!(%error, "cannot record a key's spending");
                    None
                }
            },
            None => self.lookup(hash).map(|mut record| {
                record.spent += cost;
                record
            }),
        };
        if let Some(record) = updated {
            self.set(*hash, Some(record));
        }
    }
}

/// Follows the `keys` tree until the ring is gone.
fn follow(ring: &Weak<KeyRing>, subscriber: sled::Subscriber) {
    for event in subscriber {
        let Some(ring) = ring.upgrade() else {
            return;
        };
        let Ok(hash) = KeyHash::try_from(event.key().as_ref()) else {
            continue;
        };
        match event {
            sled::Event::Insert { key, value } => {
                match crate::store::decode(crate::store::keys::KEYS, &key, &value) {
                    Ok(record) => ring.set(hash, Some(record)),
                    Err(error) => tracing::error!(%error, "cannot read a changed key"),
                }
            }
            sled::Event::Remove { .. } => ring.set(hash, None),
        }
    }
}

/// What one request will be charged to.
#[derive(Clone, Default)]
pub struct Meter {
    account: Option<(Arc<KeyRing>, KeyHash)>,
}

impl Meter {
    pub fn new(ring: &Arc<KeyRing>, caller: Option<&Caller>) -> Meter {
        Meter {
            account: caller.map(|c| (ring.clone(), c.hash)),
        }
    }

    /// Charges the attempts of an answer that ended.
    pub fn charge(&self, router: &Router, attempts: &[AttemptRecord]) {
        if let Some((ring, hash)) = &self.account {
            ring.charge(hash, router, attempts);
        }
    }
}

/// `POST /v1/keys`: an admin key makes a key no wider than itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    #[serde(default)]
    routes: Option<Vec<String>>,
    #[serde(default)]
    swarms: Option<Vec<String>>,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    budget: Option<f64>,
    #[serde(default)]
    admin: bool,
}

/// Whether `child` names nothing `parent` does not.
fn narrower(child: &Option<Vec<String>>, parent: &Option<Vec<String>>) -> bool {
    match (child, parent) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(child), Some(parent)) => child.iter().all(|c| parent.contains(c)),
    }
}

/// Whether the limit `child` is at most `parent` (`None` is unlimited).
fn lower<T: PartialOrd>(child: Option<T>, parent: Option<T>) -> bool {
    match (child, parent) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(child), Some(parent)) => child <= parent,
    }
}

pub async fn create(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match create_key(&gateway, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn create_key(gateway: &Gateway, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let ring = &gateway.keys;
    // Without keys there is no admin, and the open gateway must not let
    // anyone mint the first one.
    let Some(caller) = ring.authenticate(headers)? else {
        return Err(unauthorized(
            "creating keys takes an admin key (make the first one with `baton keys create --admin`)",
        ));
    };
    if !caller.record.admin {
        return Err(forbidden(format!(
            "the key `{}` is not an admin key",
            caller.record.name
        )));
    }
    let new: NewKey = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the body is not a key request: {error}"),
        )
    })?;
    if new.name.trim().is_empty() || new.budget.is_some_and(|b| !b.is_finite() || b < 0.0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "a key needs a name, and a budget is a non-negative number",
        ));
    }
    let parent = &caller.record;
    let within = narrower(&new.routes, &parent.routes)
        && narrower(&new.swarms, &parent.swarms)
        && lower(new.rpm, parent.rpm)
        && lower(new.tpm, parent.tpm)
        && lower(
            new.budget,
            parent.budget.map(|b| (b - parent.spent).max(0.0)),
        );
    if !within {
        return Err(forbidden(format!(
            "a key made by `{}` must be within its routes, swarms and limits",
            parent.name
        )));
    }
    let Some(keys) = &ring.store else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "this gateway has no store to keep keys in",
        ));
    };
    let key = generate();
    let record = KeyRecord {
        name: new.name,
        prefix: prefix_of(&key),
        routes: new.routes,
        swarms: new.swarms,
        rpm: new.rpm,
        tpm: new.tpm,
        budget: new.budget,
        spent: 0.0,
        created_ms: now_ms(),
        revoked: false,
        admin: new.admin,
    };
    let hash = hash(&key);
    keys.insert(&hash, &record).map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            format!("cannot store the key: {error}"),
        )
    })?;
    ring.set(hash, Some(record.clone()));
    let mut shown = serde_json::to_value(&record).unwrap_or_default();
    shown["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rpm: Option<u32>, tpm: Option<u64>, budget: Option<f64>, spent: f64) -> KeyRecord {
        KeyRecord {
            name: "k".into(),
            prefix: "bk-abcde".into(),
            routes: Some(vec!["main".into()]),
            swarms: Some(vec![]),
            rpm,
            tpm,
            budget,
            spent,
            created_ms: 0,
            revoked: false,
            admin: false,
        }
    }

    fn ring_with(record: KeyRecord) -> (Arc<KeyRing>, Caller) {
        let ring = KeyRing::new(None).unwrap();
        let key_hash = hash("bk-test");
        ring.set(key_hash, Some(record.clone()));
        (
            ring,
            Caller {
                hash: key_hash,
                record,
            },
        )
    }

    #[test]
    fn scope_is_by_route_and_by_swarm() {
        let (_, caller) = ring_with(record(None, None, None, 0.0));
        assert!(caller.allows("main"));
        assert!(!caller.allows("other"));
        assert!(!caller.allows("swarm:main"), "a route name is not a swarm");
    }

    #[test]
    fn the_minute_windows_refuse_with_a_wait() {
        let (ring, caller) = ring_with(record(Some(2), Some(100), None, 0.0));
        ring.spend_request(Some(&caller)).unwrap();
        ring.spend_request(Some(&caller)).unwrap();
        let refused = ring.spend_request(Some(&caller)).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some_and(|w| w <= MINUTE));

        let (ring, caller) = ring_with(record(None, Some(100), None, 0.0));
        ring.windows
            .lock()
            .unwrap()
            .entry(caller.hash)
            .or_default()
            .tokens
            .push_back((Instant::now(), 100));
        let refused = ring.spend_request(Some(&caller)).unwrap_err();
        assert_eq!(refused.code.as_deref(), Some("rate_limit_exceeded"));
    }

    #[test]
    fn a_spent_budget_refuses_without_a_wait() {
        let (ring, caller) = ring_with(record(None, None, Some(1.0), 1.0));
        let refused = ring.spend_request(Some(&caller)).unwrap_err();
        assert_eq!(refused.code.as_deref(), Some("budget_exceeded"));
        assert!(refused.retry_after.is_none());
        assert!(ring.spend_request(None).is_ok(), "anonymous has no budget");
    }

    #[test]
    fn a_child_key_is_never_wider() {
        let some = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect());
        assert!(narrower(&some(&["a"]), &some(&["a", "b"])));
        assert!(!narrower(&some(&["c"]), &some(&["a"])));
        assert!(!narrower(&None, &some(&["a"])));
        assert!(narrower(&None, &None));
        assert!(lower(Some(5), Some(10)) && !lower(Some(11), Some(10)));
        assert!(!lower(None, Some(10)) && lower(None::<u32>, None));
    }
}
