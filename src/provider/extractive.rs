//! The extractive surrogate: answers from the knowledge base, needs no model.
