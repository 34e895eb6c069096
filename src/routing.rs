//! Routing: the policy-driven fallback chain and what it decides with.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod decision;
pub mod pool;
pub mod router;
