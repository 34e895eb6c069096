//! Routing: decision.
