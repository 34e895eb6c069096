//! Routing: breaker.
