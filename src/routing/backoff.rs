//! Routing: backoff.
