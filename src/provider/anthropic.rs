//! Anthropic Messages client.
