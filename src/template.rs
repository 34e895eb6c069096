//! Loading a swarm directory from markdown into a validated [`Swarm`].
//!
//! A swarm directory holds `CLAUDE.md` (memory), one agent per `*.md`,
//! Cursor rules under `rules/` and knowledge documents under `knowledge/`.
//! Loading reads every file, collects every finding (never only the first),
//! and returns either the swarm with its warnings or all the findings.
//!
//! Parse leniently where the file is a user's (agent and rule files are
//! often written for Claude Code or Cursor and must load as they are);
//! check strictly what is Baton's own (roles, routes, stakes, delegates,
//! schemas). The stages:
//!
//! 1. read each file as text ([`text`]) and split its front matter
//!    ([`frontmatter`]) into an [`agent::AgentDraft`] or a rule;
//! 2. merge drafts that name a `template:` with their blueprint agent
//!    ([`blueprint`]);
//! 3. check the swarm as a whole: unique names, one supervisor, routes that
//!    exist in the config, delegates that are workers of this swarm;
//! 4. resolve which rules reach which agents (one glob set for all rules,
//!    so that a thousand agents and hundreds of rules stay fast).

pub mod agent;
pub mod blueprint;
pub mod fields;
pub mod frontmatter;
pub mod memory;
pub mod rule;
pub mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};

use crate::config::{Config, list_or_none};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::swarm::{
    AgentId, AgentSpec, Role, RouteName, RouteSource, RuleId, RuleKind, RuleSpec, Swarm,
};
use agent::AgentDraft;

/// Files in a swarm's root that are not agents.
const NOT_AGENTS: &[&str] = &["claude.md", "agents.md", "claude.local.md", "readme.md"];

/// A swarm that loaded, and what is worth knowing about it.
#[derive(Debug)]
pub struct Loaded {
    pub swarm: Swarm,
    pub warnings: Diagnostics,
}

/// Why a swarm could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("swarm directory {} not found (give a path, or a name under ./agents/)", path.display())]
    NotFound { path: PathBuf },
    #[error("swarm has {count} error(s):\n{0}", count = .0.error_count())]
    Invalid(Diagnostics),
}

impl TemplateError {
    /// Every finding, errors and warnings, for printing.
    pub fn diagnostics(&self) -> Diagnostics {
        match self {
            TemplateError::Invalid(d) => d.clone(),
            TemplateError::NotFound { path } => {
                let mut d = Diagnostics::new();
                d.push(Diagnostic::error(
                    path,
                    "swarm directory not found (give a path, or a name under ./agents/)",
                ));
                d
            }
        }
    }
}

/// A `SWARM` argument is a path to a swarm directory, or a name under
/// `./agents/`.
pub fn resolve_swarm_dir(argument: &str) -> PathBuf {
    let path = PathBuf::from(argument);
    if path.is_dir() {
        return path;
    }
    let named = Path::new("agents").join(argument);
    if named.is_dir() { named } else { path }
}

/// A directory of swarms (no agent files of its own, only subdirectories)
/// stands for each swarm in it.
pub fn swarm_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![dir.to_owned()];
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if path.is_dir() {
            if !matches!(name.as_str(), "rules" | "knowledge") && !name.starts_with('.') {
                subdirs.push(path);
            }
        } else if name.ends_with(".md") && name != "readme.md" {
            return vec![dir.to_owned()];
        }
    }
    if subdirs.is_empty() {
        return vec![dir.to_owned()];
    }
    subdirs.sort();
    subdirs
}

/// Loads and validates the swarm in `dir` against `config`'s routes.
pub fn load_swarm(dir: &Path, config: &Config) -> Result<Loaded, TemplateError> {
    if !dir.is_dir() {
        return Err(TemplateError::NotFound {
            path: dir.to_owned(),
        });
    }
    let mut diagnostics = Diagnostics::new();
    let memory = memory::load(dir, &mut diagnostics);

    // Files the memory imports are memory, not agents without front matter.
    let memory_files: Vec<PathBuf> = memory
        .files
        .iter()
        .filter_map(|f| f.path.canonicalize().ok())
        .collect();
    let agent_paths: Vec<PathBuf> = files_in(dir, false, |name| {
        name.ends_with(".md") && !NOT_AGENTS.contains(&name)
    })
    .into_iter()
    .filter(|p| {
        p.canonicalize()
            .map_or(true, |c| !memory_files.contains(&c))
    })
    .collect();
    let drafts: Vec<AgentDraft> = agent_paths
        .iter()
        .filter_map(|path| {
            let text = read_text(path, &mut diagnostics)?;
            agent::read(path, &text, &mut diagnostics)
        })
        .collect();
    let drafts = inherit(drafts, &mut diagnostics);

    let rules_dir = dir.join("rules");
    let rule_paths = files_in(&rules_dir, true, |name| {
        name.ends_with(".mdc") || name.ends_with(".md")
    });
    let rules: Vec<RuleSpec> = rule_paths
        .iter()
        .filter_map(|path| {
            let text = read_text(path, &mut diagnostics)?;
            rule::read(path, &text, &mut diagnostics)
        })
        .collect();

    let knowledge = files_in(&dir.join("knowledge"), true, |name| {
        name.ends_with(".md") || name.ends_with(".markdown") || name.ends_with(".txt")
    });

    let mut agents = build_agents(dir, drafts, config, &mut diagnostics);
    attach_rules(&mut agents, &rules, &mut diagnostics);

    diagnostics.sort();
    if diagnostics.has_errors() {
        return Err(TemplateError::Invalid(diagnostics));
    }
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Loaded {
        swarm: Swarm {
            name,
            dir: dir.to_owned(),
            memory,
            agents: agents.into_iter().map(|(spec, _)| spec).collect(),
            rules,
            knowledge,
        },
        warnings: diagnostics,
    })
}

/// Files under `dir` whose lowercase name passes `keep`, sorted so that
/// output and rule order do not depend on the file system.
fn files_in(dir: &Path, recursive: bool, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    // Symlinked directories are followed, so a link back up the tree would
    // loop: each real directory is read once.
    let mut visited = std::collections::HashSet::new();
    while let Some(current) = pending.pop() {
        if !visited.insert(current.canonicalize().unwrap_or_else(|_| current.clone())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Follow symlinks: CLAUDE.md -> AGENTS.md and linked rule files
            // are common.
            if path.is_dir() {
                if recursive {
                    pending.push(path);
                }
            } else if keep(&entry.file_name().to_string_lossy().to_lowercase()) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn read_text(path: &Path, diagnostics: &mut Diagnostics) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            diagnostics.push(Diagnostic::error(path, format!("cannot read file: {e}")));
            return None;
        }
    };
    match text::decode(&bytes) {
        Ok(text) => Some(text),
        Err(e) => {
            diagnostics.push(Diagnostic::error(path, e.message).at(e.line, e.column));
            None
        }
    }
}

/// Merges each draft that names a `template:` with that blueprint agent.
fn inherit(drafts: Vec<AgentDraft>, diagnostics: &mut Diagnostics) -> Vec<AgentDraft> {
    let mut parents: HashMap<String, Option<AgentDraft>> = HashMap::new();
    drafts
        .into_iter()
        .map(|draft| {
            let Some(spec) = draft.template.clone() else {
                return draft;
            };
            let parent = parents
                .entry(spec.value.clone())
                .or_insert_with(|| {
                    let (path, text) = blueprint::agent_source(&spec.value)?;
                    // Blueprints ship with the binary and are tested clean;
                    // their findings would only be noise in a user's swarm.
                    let mut ignored = Diagnostics::new();
                    agent::read(&path, text, &mut ignored)
                })
                .clone();
            match parent {
                Some(parent) => merge_draft(parent, draft),
                None => {
                    let (blueprint_name, _) =
                        spec.value.split_once('/').unwrap_or((&spec.value, ""));
                    let message = if blueprint::names().contains(&blueprint_name) {
                        format!(
                            "no agent `{}` in blueprint `{blueprint_name}` (agents: {})",
                            spec.value,
                            list_or_none(
                                blueprint::agent_names(blueprint_name)
                                    .iter()
                                    .map(String::as_str)
                            )
                        )
                    } else {
                        format!(
                            "no blueprint `{blueprint_name}` (available: {})",
                            blueprint::names().join(", ")
                        )
                    };
                    diagnostics.push(spec.error(&draft.path, "template", message));
                    draft
                }
            }
        })
        .collect()
}

/// The agent's own fields win; the blueprint fills the rest.
fn merge_draft(parent: AgentDraft, child: AgentDraft) -> AgentDraft {
    let mut extra = parent.extra;
    extra.extend(child.extra);
    AgentDraft {
        body: blueprint::merge_bodies(&parent.body, &child.body),
        path: child.path,
        name: child.name,
        description: child.description.or(parent.description),
        role: child.role.or(parent.role),
        tools: child.tools.or(parent.tools),
        model: child.model.or(parent.model),
        route: child.route,
        intents: child.intents.or(parent.intents),
        examples: child.examples.or(parent.examples),
        requires: child.requires.or(parent.requires),
        stakes: child.stakes.or(parent.stakes),
        handoff: child.handoff.or(parent.handoff),
        template: child.template,
        output_schema: child.output_schema.or(parent.output_schema),
        // Delegates and manual rules name agents and rules of the child's
        // swarm, which the blueprint cannot know.
        delegates: child.delegates,
        rules: child.rules,
        extra,
        body_line: child.body_line,
    }
}

/// Swarm-level checks; returns each agent with its draft's manual rule names.
fn build_agents(
    dir: &Path,
    drafts: Vec<AgentDraft>,
    config: &Config,
    diagnostics: &mut Diagnostics,
) -> Vec<(AgentSpec, Vec<fields::Located<String>>)> {
    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut supervisor: Option<(String, PathBuf, usize)> = None;
    let mut kept: Vec<(AgentId, AgentDraft)> = Vec::new();

    for draft in drafts {
        let (name, line) = match &draft.name {
            Some(n) if !n.value.is_empty() => (n.value.clone(), n.line),
            _ => {
                let stem = draft
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                diagnostics.push(
                    Diagnostic::warning(
                        &draft.path,
                        format!("no `name`; the file name `{stem}` is used"),
                    )
                    .at_line(1)
                    .field("name"),
                );
                (stem, 1)
            }
        };
        if let Some((first_path, first_line)) = seen.get(&name) {
            diagnostics.push(
                Diagnostic::error(
                    &draft.path,
                    format!(
                        "agent name `{name}` is already used by {}:{first_line}; names must be unique in a swarm",
                        first_path.display()
                    ),
                )
                .at(line, 1)
                .field("name"),
            );
            continue;
        }
        seen.insert(name.clone(), (draft.path.clone(), line));
        if draft.body.trim().is_empty() {
            diagnostics.push(
                Diagnostic::error(
                    &draft.path,
                    "empty body: the markdown after the front matter is the agent's system prompt",
                )
                .at_line(draft.body_line),
            );
        }
        if let Some(role) = &draft.role
            && role.value == Role::Supervisor
        {
            match &supervisor {
                None => supervisor = Some((name.clone(), draft.path.clone(), role.line)),
                Some((first, first_path, first_line)) => diagnostics.push(role.error(
                    &draft.path,
                    "role",
                    format!(
                        "a second supervisor: `{first}` ({}:{first_line}) already is one; a swarm has exactly one",
                        first_path.display()
                    ),
                )),
            }
        }
        kept.push((AgentId(name), draft));
    }
    if supervisor.is_none() && !kept.is_empty() {
        diagnostics.push(Diagnostic::error(
            dir,
            format!(
                "no supervisor: exactly one agent needs `role: supervisor` (agents: {})",
                list_or_none(kept.iter().map(|(id, _)| id.0.as_str()))
            ),
        ));
    }
    if kept.is_empty() {
        diagnostics.push(Diagnostic::error(
            dir,
            "no agents: a swarm needs agent files (`*.md` with front matter) in its directory",
        ));
    }

    let default_route = config.default_route.clone();
    let supervisor_resolution = kept
        .iter()
        .find(|(_, d)| d.role.as_ref().is_some_and(|r| r.value == Role::Supervisor))
        .map(|(_, d)| resolve_route(d, config, &default_route, diagnostics, true))
        .unwrap_or_else(|| (default_route.clone(), RouteSource::Default));
    let supervisor_route = supervisor_resolution.0.clone();

    let workers: Vec<&str> = kept
        .iter()
        .filter(|(_, d)| d.role.as_ref().is_none_or(|r| r.value == Role::Worker))
        .map(|(id, _)| id.0.as_str())
        .collect();
    let worker_names: Vec<String> = workers.iter().map(|w| (*w).to_owned()).collect();

    kept.into_iter()
        .map(|(id, draft)| {
            let role = draft.role.as_ref().map_or(Role::Worker, |r| r.value);
            let (route, route_source) = if role == Role::Supervisor {
                supervisor_resolution.clone()
            } else {
                let (route, source) =
                    resolve_route(&draft, config, &default_route, diagnostics, false);
                if source == RouteSource::Inherited {
                    (supervisor_route.clone(), source)
                } else {
                    (route, source)
                }
            };
            let mut delegates = Vec::new();
            for delegate in draft.delegates.iter().flatten() {
                if delegate.value == id.0 {
                    diagnostics.push(delegate.error(
                        &draft.path,
                        "delegates",
                        "an agent cannot delegate to itself",
                    ));
                } else if !worker_names.contains(&delegate.value) {
                    diagnostics.push(delegate.error(
                        &draft.path,
                        "delegates",
                        format!(
                            "no worker `{}` in this swarm (workers: {})",
                            delegate.value,
                            list_or_none(worker_names.iter().map(String::as_str))
                        ),
                    ));
                } else {
                    delegates.push(AgentId(delegate.value.clone()));
                }
            }
            if role == Role::Worker
                && draft
                    .description
                    .as_deref()
                    .is_none_or(|d| d.trim().is_empty())
            {
                diagnostics.push(
                    Diagnostic::warning(
                        &draft.path,
                        "a worker without `description`: the supervisor routes requests by it",
                    )
                    .at_line(1)
                    .field("description"),
                );
            }
            let spec = AgentSpec {
                id,
                description: draft.description.unwrap_or_default().trim().to_owned(),
                role,
                route,
                route_source,
                tools: draft.tools,
                model: draft.model.map(|m| m.value).unwrap_or_default(),
                intents: draft.intents.unwrap_or_default(),
                examples: draft.examples.unwrap_or_default(),
                requires: draft.requires.unwrap_or_default(),
                stakes: draft.stakes.unwrap_or_default(),
                template: draft.template.map(|t| t.value),
                output_schema: draft.output_schema,
                delegates,
                handoff: draft.handoff.unwrap_or_default(),
                prompt: draft.body.trim().to_owned(),
                extra: draft.extra,
                source: draft.path,
                rules: Vec::new(),
            };
            (spec, draft.rules.unwrap_or_default())
        })
        .collect()
}

/// Which route serves an agent, and why. `route:` must exist; Claude Code's
/// `model:` names a route only when the config has one of that name.
fn resolve_route(
    draft: &AgentDraft,
    config: &Config,
    default_route: &RouteName,
    diagnostics: &mut Diagnostics,
    is_supervisor: bool,
) -> (RouteName, RouteSource) {
    if let Some(route) = &draft.route {
        if config.route(&route.value).is_some() {
            return (RouteName(route.value.clone()), RouteSource::Explicit);
        }
        diagnostics.push(route.error(
            &draft.path,
            "route",
            format!(
                "no route `{}` in {} (routes: {})",
                route.value,
                config.path.display(),
                config.route_names().join(", ")
            ),
        ));
        return (default_route.clone(), RouteSource::Default);
    }
    let Some(models) = &draft.model else {
        return (default_route.clone(), RouteSource::Default);
    };
    // A list (VS Code agents) is an order of preference: the first entry
    // that names a route serves.
    if let Some(route) = models.value.iter().find(|m| config.route(m).is_some()) {
        return (RouteName(route.clone()), RouteSource::Model);
    }
    if models.value.iter().any(|m| m == "inherit") {
        let source = if is_supervisor {
            RouteSource::Default
        } else {
            RouteSource::Inherited
        };
        return (default_route.clone(), source);
    }
    let names: Vec<String> = models.value.iter().map(|m| format!("`{m}`")).collect();
    diagnostics.push(
        Diagnostic::warning(
            &draft.path,
            format!(
                "{} {} no route in {}; the default route `{default_route}` serves this agent (add a route of that name, or set `route:`)",
                fields::join_or(&names),
                if names.len() == 1 { "names" } else { "name" },
                config.path.display()
            ),
        )
        .at(models.line, models.column)
        .field("model"),
    );
    (default_route.clone(), RouteSource::Default)
}

/// Resolves which rules reach each agent: always rules reach all, glob rules
/// reach agents whose name or an intent matches a glob, manual rules reach
/// agents that list them in `rules:`.
fn attach_rules(
    agents: &mut [(AgentSpec, Vec<fields::Located<String>>)],
    rules: &[RuleSpec],
    diagnostics: &mut Diagnostics,
) {
    let mut builder = GlobSetBuilder::new();
    let mut glob_owner: Vec<usize> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if rule.kind != RuleKind::AutoAttached {
            continue;
        }
        for glob in &rule.globs {
            // Compiled once already when the rule was read; a failure here
            // cannot happen, and skipping the glob is the safe answer.
            if let Ok(compiled) = GlobBuilder::new(glob).case_insensitive(true).build() {
                builder.add(compiled);
                glob_owner.push(index);
            }
        }
    }
    let set = builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty());
    let mut reached_any = vec![false; rules.len()];
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (index, rule) in rules.iter().enumerate() {
        if by_name.insert(rule.name.as_str(), index).is_some() {
            diagnostics.push(Diagnostic::warning(
                &rule.source,
                format!(
                    "another rule file is also named `{}`; `rules:` lists refer to the last one",
                    rule.name
                ),
            ));
        }
    }
    let mut matches = Vec::new();
    for (agent, manual) in agents.iter_mut() {
        let mut reached = vec![false; rules.len()];
        for (index, rule) in rules.iter().enumerate() {
            if rule.kind == RuleKind::Always {
                reached[index] = true;
            }
        }
        for subject in
            std::iter::once(agent.id.0.as_str()).chain(agent.intents.iter().map(String::as_str))
        {
            set.matches_into(subject, &mut matches);
            for &glob in &matches {
                reached[glob_owner[glob]] = true;
            }
        }
        for wanted in manual.iter() {
            match by_name.get(wanted.value.as_str()) {
                Some(&index) => reached[index] = true,
                None => diagnostics.push(wanted.error(
                    &agent.source,
                    "rules",
                    format!(
                        "no rule `{}` in rules/ (rules: {})",
                        wanted.value,
                        list_or_none(rules.iter().map(|r| r.name.as_str()))
                    ),
                )),
            }
        }
        agent.rules = reached
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .map(|(i, _)| RuleId(i))
            .collect();
        for id in &agent.rules {
            reached_any[id.0] = true;
        }
    }
    for (index, rule) in rules.iter().enumerate() {
        if rule.kind == RuleKind::AutoAttached && !reached_any[index] {
            diagnostics.push(Diagnostic::warning(
                &rule.source,
                format!(
                    "globs `{}` match no agent name or intent, so this rule reaches no agent (globs match agents here, not files)",
                    rule.globs.join(",")
                ),
            ));
        }
    }
}
