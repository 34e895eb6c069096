//! Routing: budget.
