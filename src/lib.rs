//! Baton: a multi-LLM fallback router and agent orchestration engine.
//!
//! Agent swarms are markdown (Claude Code-style agent files, Cursor `.mdc`
//! rules, `CLAUDE.md` memory). This crate loads and validates them
//! ([`template`]) into the model the engine runs ([`swarm`]), against the
//! routing config ([`config`]). Requests go to upstreams through
//! [`provider`] backends along the fallback chains of [`routing`];
//! [`knowledge`] indexes a swarm's documents for the extractive surrogate.
//! The [`actor`]s run a swarm; answers a person should check wait in the
//! [`review`] queue. [`store`] keeps the durable state; [`alerts`] watches
//! it and provider health, and tells people when something goes wrong.
//! The `baton` binary is a thin command-line shell over it.

pub mod actor;
pub mod alerts;
pub mod config;
pub mod context;
pub mod diagnostic;
pub mod gateway;
pub mod graph;
pub mod knowledge;
pub mod policy;
pub mod provider;
pub mod review;
pub mod routing;
pub mod secret;
pub mod store;
pub mod swarm;
pub mod telemetry;
pub mod template;
pub mod trace;
