//! The loaded model of a swarm: what the rest of Baton works with.
//!
//! `template/` reads users' markdown leniently and validates it into these
//! types; nothing here is optional "to be filled in later": every agent has a
//! resolved route, every rule a resolved kind and the agents it reaches.
//! Agent-requested rules are the one thing decided per request (they attach
//! when a request matches their description), so agents list them apart.

pub mod classify;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name of an agent, unique within its swarm.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a route (an ordered fallback chain) in baton.toml.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RouteName(pub String);

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Supervisor classifies and delegates; workers answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Supervisor,
    Worker,
}

/// High-stakes answers served by a fallback path are queued for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stakes {
    #[default]
    Low,
    High,
}

/// When a worker's answer goes on to its first delegate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handoff {
    /// Only when the answer asks for it with a line `handoff: NAME`
    /// naming one of its delegates (a specialist passing on a question
    /// outside its remit).
    #[default]
    WhenAsked,
    /// Every answer: the worker is one step of a pipeline (a researcher
    /// whose passages an answerer writes from).
    Always,
}

/// What a model must be able to do for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Chat,
    Tools,
    Json,
    Vision,
    LongContext,
    Streaming,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Chat,
        Capability::Tools,
        Capability::Json,
        Capability::Vision,
        Capability::LongContext,
        Capability::Streaming,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Chat => "chat",
            Capability::Tools => "tools",
            Capability::Json => "json",
            Capability::Vision => "vision",
            Capability::LongContext => "long-context",
            Capability::Streaming => "streaming",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an agent is served by its route; shown by `baton agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteSource {
    /// `route:` in the front matter.
    Explicit,
    /// `model:` named a route of baton.toml (Claude Code's `model: sonnet`).
    Model,
    /// `model: inherit`: the supervisor's route.
    Inherited,
    /// Nothing said; the config's default route.
    Default,
}

/// One agent of a swarm, validated.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSpec {
    pub id: AgentId,
    pub description: String,
    pub role: Role,
    pub route: RouteName,
    pub route_source: RouteSource,
    /// Claude Code's `tools`; `None` means the field was absent (all tools).
    pub tools: Option<Vec<String>>,
    /// Claude Code's `model` as written (VS Code agents may list several).
    pub model: Vec<String>,
    pub intents: Vec<String>,
    /// Requests this agent should answer, written as customers would: the
    /// classifier's nearest neighbours.
    pub examples: Vec<String>,
    pub requires: Vec<Capability>,
    pub stakes: Stakes,
    /// `<blueprint>/<agent>` this agent inherits from.
    pub template: Option<String>,
    pub output_schema: Option<Value>,
    pub delegates: Vec<AgentId>,
    pub handoff: Handoff,
    /// The system prompt, after template inheritance.
    pub prompt: String,
    /// Front-matter fields Baton does not interpret, kept as written.
    pub extra: serde_json::Map<String, Value>,
    pub source: PathBuf,
    /// Rules that reach this agent on every request (always, glob, manual).
    /// Agent-requested rules are decided per request: see
    /// [`Swarm::requestable_rules`].
    pub rules: Vec<RuleId>,
}

/// Index of a rule in [`Swarm::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RuleId(pub usize);

/// Cursor's four rule kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// `alwaysApply: true`: every agent.
    Always,
    /// `globs`: agents whose name or an intent matches.
    AutoAttached,
    /// Only a description: attached per request when the request matches it.
    AgentRequested,
    /// Nothing set: only agents that name the rule in `rules:`.
    Manual,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::Always => "always",
            RuleKind::AutoAttached => "auto-attached",
            RuleKind::AgentRequested => "agent-requested",
            RuleKind::Manual => "manual",
        })
    }
}

/// One rule file, validated.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSpec {
    /// The file name without its extension (`.NET.mdc` is `.NET`).
    pub name: String,
    pub description: Option<String>,
    pub globs: Vec<String>,
    pub always_apply: bool,
    pub kind: RuleKind,
    pub body: String,
    pub extra: serde_json::Map<String, Value>,
    pub source: PathBuf,
}

/// One file of swarm memory (CLAUDE.md and what it imports).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFile {
    pub path: PathBuf,
    pub text: String,
}

/// The swarm memory: CLAUDE.md (or AGENTS.md) first, then its imports in the
/// order they were found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub files: Vec<MemoryFile>,
}

impl Memory {
    /// The memory as one text, each import introduced by its path.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (i, file) in self.files.iter().enumerate() {
            if i > 0 {
                text.push_str(&format!(
                    "\n\n<!-- imported from {} -->\n",
                    file.path.display()
                ));
            }
            text.push_str(file.text.trim_end());
        }
        text
    }
}

/// A loaded, validated swarm.
#[derive(Debug, Clone, Serialize)]
pub struct Swarm {
    pub name: String,
    pub dir: PathBuf,
    pub memory: Memory,
    /// Every agent; exactly one is the supervisor.
    pub agents: Vec<AgentSpec>,
    pub rules: Vec<RuleSpec>,
    /// Knowledge documents under `knowledge/`, indexed by a later stage.
    pub knowledge: Vec<PathBuf>,
}

impl Swarm {
    pub fn supervisor(&self) -> &AgentSpec {
        self.agents
            .iter()
            .find(|a| a.role == Role::Supervisor)
            .expect("a validated swarm has exactly one supervisor")
    }

    pub fn workers(&self) -> impl Iterator<Item = &AgentSpec> {
        self.agents.iter().filter(|a| a.role == Role::Worker)
    }

    pub fn agent(&self, id: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.id.0 == id)
    }

    pub fn rule(&self, id: RuleId) -> &RuleSpec {
        &self.rules[id.0]
    }

    /// Rules with only a description: any agent may get them when a
    /// request matches the description.
    pub fn requestable_rules(&self) -> impl Iterator<Item = (RuleId, &RuleSpec)> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RuleKind::AgentRequested)
            .map(|(i, r)| (RuleId(i), r))
    }
}
