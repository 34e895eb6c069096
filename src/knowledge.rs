//! Knowledge-base indexing and retrieval.
