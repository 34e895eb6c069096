//! The stale-if-error response cache: the first of a route's final
//! fallbacks, consulted only when every remote provider failed.
//!
//! Entries are keyed by a [`Fingerprint`]: SHA-256 over a canonical
//! encoding of (scope, route, messages, parameters). The scope is the tenant
//! or virtual key the request was made under, so one tenant never gets
//! another's answer. The encoding frames every field (a tag, a length, the
//! bytes), so no two different requests encode alike: a scope cannot run
//! into a route, nor one message into the next. Tool parameters (JSON
//! Schemas) are written as serde_json writes them, keys sorted. It starts
//! with a version tag so that a persisted cache (a later issue keeps it in
//! sled) can change format safely. It is hashed field by field rather than
//! serialised first: every request is fingerprinted, and its prompt may be
//! many kilobytes.
//!
//! Entries expire after the TTL; the oldest are evicted beyond
//! `max_entries`. A served entry reports its age, and responses built from
//! it are marked cached.
//!
//! With a durable tier attached ([`ResponseCache::attach`], the store's
//! `cache` tree), every entry is also written there and a miss in memory
//! is looked up there, so a restarted process can still answer from the
//! cache during an outage that began before it started.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::provider::{ChatRequest, ChatResponse, Message, MessageRole, ToolSpec};
use crate::swarm::RouteName;

/// The identity of a request for caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `request` on `route` under `scope` (tenant or key).
    pub fn of(scope: &str, route: &RouteName, request: &ChatRequest) -> Fingerprint {
        let mut hash = Framed(Sha256::new());
        hash.0.update(b"baton-cache-key/2");
        hash.bytes(b's', scope.as_bytes());
        hash.bytes(b'r', route.0.as_bytes());
        hash.count(b'm', request.messages.len());
        for message in &request.messages {
            hash.message(message);
        }
        match request.max_tokens {
            Some(max) => hash.bytes(b'x', &max.to_le_bytes()),
            None => hash.0.update(b"-x"),
        }
        match request.temperature {
            Some(t) => hash.bytes(b't', &t.to_bits().to_le_bytes()),
            None => hash.0.update(b"-t"),
        }
        hash.count(b'p', request.stop.len());
        for stop in &request.stop {
            hash.bytes(b'q', stop.as_bytes());
        }
        hash.count(b'o', request.tools.len());
        for tool in &request.tools {
            hash.tool(tool);
        }
        Fingerprint(hash.0.finalize().into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Writes tagged, length-prefixed fields into the hash.
struct Framed(Sha256);

impl Framed {
    fn bytes(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn count(&mut self, tag: u8, n: usize) {
        self.0.update([tag]);
        self.0.update((n as u64).to_le_bytes());
    }

    fn message(&mut self, message: &Message) {
        let role = match message.role {
            MessageRole::System => b"system".as_slice(),
            MessageRole::User => b"user",
            MessageRole::Assistant => b"assistant",
            MessageRole::Tool => b"tool",
        };
        self.bytes(b'R', role);
        self.bytes(b'C', message.content.as_bytes());
        self.count(b'T', message.tool_calls.len());
        for call in &message.tool_calls {
            self.bytes(b'i', call.id.as_bytes());
            self.bytes(b'n', call.name.as_bytes());
            self.bytes(b'a', call.arguments.as_bytes());
        }
        match &message.tool_call_id {
            Some(id) => self.bytes(b'I', id.as_bytes()),
            None => self.0.update(b"-I"),
        }
    }

    fn tool(&mut self, tool: &ToolSpec) {
        self.bytes(b'N', tool.name.as_bytes());
        self.bytes(b'D', tool.description.as_bytes());
        // Serialising a JSON value to bytes cannot fail.
        let parameters = serde_json::to_vec(&tool.parameters).unwrap_or_default();
        self.bytes(b'P', &parameters);
    }
}

/// A response served from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub response: ChatResponse,
    pub age: Duration,
}

#[derive(Debug)]
struct Entry {
    response: ChatResponse,
    stored: Instant,
}

/// A cache tier that outlives the process.
pub trait DurableTier: Send + Sync + std::fmt::Debug {
    /// The stored answer for `key` and how old it is.
    fn load(&self, key: &Fingerprint) -> Option<(ChatResponse, Duration)>;
    fn save(&self, key: &Fingerprint, response: &ChatResponse);
}

/// An in-process response cache with a TTL and a size bound.
#[derive(Debug)]
pub struct ResponseCache {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
    durable: OnceLock<Arc<dyn DurableTier>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Fingerprint, Entry>,
    /// Insertion order, for eviction; may hold keys already replaced.
    order: VecDeque<(Fingerprint, Instant)>,
}

impl ResponseCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
            durable: OnceLock::new(),
        }
    }

    /// Attaches the durable tier; a second call is ignored.
    pub fn attach(&self, tier: Arc<dyn DurableTier>) {
        let _ = self.durable.set(tier);
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Stores a successful answer.
    pub fn put(&self, key: Fingerprint, response: ChatResponse, now: Instant) {
        if let Some(tier) = self.durable.get() {
            tier.save(&key, &response);
        }
        let mut inner = self.lock();
        inner.entries.insert(
            key,
            Entry {
                response,
                stored: now,
            },
        );
        inner.order.push_back((key, now));
        // A key stored again leaves its older order record behind; drop
        // those once they outnumber the entries, so the queue stays bounded.
        if inner.order.len() > 2 * self.max_entries {
            let Inner { entries, order } = &mut *inner;
            order.retain(|(k, stored)| entries.get(k).is_some_and(|e| e.stored == *stored));
        }
        while inner.entries.len() > self.max_entries {
            let Some((old, stored)) = inner.order.pop_front() else {
                break;
            };
            // Only evict if this order record is the entry's current one.
            if inner.entries.get(&old).is_some_and(|e| e.stored == stored) {
                inner.entries.remove(&old);
            }
        }
    }

    /// The answer stored for `key`, unless it expired.
    pub fn get(&self, key: &Fingerprint, now: Instant) -> Option<Cached> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(key) else {
            drop(inner);
            let (response, age) = self.durable.get()?.load(key)?;
            return (age <= self.ttl).then_some(Cached { response, age });
        };
        let age = now.saturating_duration_since(entry.stored);
        if age > self.ttl {
            inner.entries.remove(key);
            return None;
        }
        Some(Cached {
            response: entry.response.clone(),
            age,
        })
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-written
        // in a way that matters for a cache; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::FinishReason;

    fn response(text: &str) -> ChatResponse {
        ChatResponse {
            text: text.into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: None,
            request_id: None,
            model: "m".into(),
        }
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::user(text)],
            ..ChatRequest::default()
        }
    }

    #[test]
    fn scope_route_messages_and_params_all_change_the_fingerprint() {
        let route = RouteName("support".into());
        let base = Fingerprint::of("tenant-a", &route, &request("hi"));
        assert_eq!(base, Fingerprint::of("tenant-a", &route, &request("hi")));
        assert_ne!(base, Fingerprint::of("tenant-b", &route, &request("hi")));
        assert_ne!(
            base,
            Fingerprint::of("tenant-a", &RouteName("other".into()), &request("hi"))
        );
        assert_ne!(base, Fingerprint::of("tenant-a", &route, &request("hi!")));
        let mut hotter = request("hi");
        hotter.temperature = Some(0.9);
        assert_ne!(base, Fingerprint::of("tenant-a", &route, &hotter));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl_and_report_their_age() {
        let cache = ResponseCache::new(Duration::from_secs(60), 10);
        let key = Fingerprint::of("t", &RouteName("r".into()), &request("q"));
        cache.put(key, response("a"), Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        let hit = cache.get(&key, Instant::now()).expect("fresh");
        assert_eq!(hit.age, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(cache.get(&key, Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_entries_are_evicted_beyond_the_bound() {
        let cache = ResponseCache::new(Duration::from_secs(60), 2);
        let route = RouteName("r".into());
        let keys: Vec<Fingerprint> = ["a", "b", "c"]
            .iter()
            .map(|q| Fingerprint::of("t", &route, &request(q)))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            cache.put(*key, response(&i.to_string()), Instant::now());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&keys[0], Instant::now()).is_none());
        assert!(cache.get(&keys[2], Instant::now()).is_some());
    }
}
