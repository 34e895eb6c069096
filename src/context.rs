//! Prompt assembly: what a worker sends to its route.
//!
//! One system message, in this order: the swarm's memory (CLAUDE.md and
//! its imports), the agent's own prompt, the rules that reach it (always,
//! glob and manual rules, then the agent-requested rules this request
//! matched), and, when the swarm has a knowledge base, the passages most
//! relevant to the request with their citations. Then the session's history
//! and the new user message. The order puts what changes least first, so a
//! provider's prompt cache can reuse the prefix.

use crate::knowledge::KnowledgeIndex;
use crate::provider::{ChatRequest, Message};
use crate::swarm::{AgentSpec, RuleId, Swarm};

/// Knowledge passages added to a prompt at most.
pub const PASSAGES: usize = 3;

/// The part of an agent's system prompt that is the same for every
/// request: memory, the agent's prompt and the rules that always reach it.
/// A worker builds it once.
#[derive(Debug, Clone)]
pub struct Prefix {
    text: String,
    has_rules: bool,
    rules: Vec<RuleId>,
}

impl Prefix {
    pub fn new(swarm: &Swarm, agent: &AgentSpec) -> Prefix {
        let mut text = String::new();
        let memory = swarm.memory.text();
        if !memory.trim().is_empty() {
            text.push_str(memory.trim());
            text.push_str("\n\n");
        }
        text.push_str(agent.prompt.trim());
        if !agent.rules.is_empty() {
            text.push_str(RULES_HEADING);
        }
        for &id in &agent.rules {
            push_rule(&mut text, swarm, id);
        }
        Prefix {
            text,
            has_rules: !agent.rules.is_empty(),
            rules: agent.rules.clone(),
        }
    }
}

const RULES_HEADING: &str = "\n\n# Rules\n";

fn push_rule(system: &mut String, swarm: &Swarm, id: RuleId) {
    let rule = swarm.rule(id);
    if !rule.body.is_empty() {
        system.push('\n');
        system.push_str(rule.body.trim());
        system.push('\n');
    }
}

/// Where a delegation step's brief starts in the next step's message: the
/// question comes first, then this heading, the previous worker's name and
/// its answer.
pub const HANDOFF_HEADING: &str = "\n\n## Handoff from ";

/// The next step's message: the question, then the brief of `from`.
pub fn handoff_message(question: &str, from: &str, brief: &str) -> String {
    format!("{question}{HANDOFF_HEADING}{from}\n{}", brief.trim_end())
}

/// The user's question in a message that may carry a handoff brief.
pub fn question_of(message: &str) -> &str {
    message
        .split_once(HANDOFF_HEADING)
        .map_or(message, |(question, _)| question)
}

/// Builds the request a worker sends for `user` after `history`.
pub fn assemble(
    swarm: &Swarm,
    agent: &AgentSpec,
    requested_rules: &[RuleId],
    knowledge: Option<&KnowledgeIndex>,
    history: &[Message],
    user: &str,
) -> ChatRequest {
    let prefix = Prefix::new(swarm, agent);
    assemble_with(
        &prefix,
        swarm,
        requested_rules,
        knowledge,
        history,
        user,
        user,
    )
}

/// [`assemble`] over a prefix built once, retrieving passages for `search`
/// (the user's question) rather than `user` (which may carry a handoff).
pub fn assemble_with(
    prefix: &Prefix,
    swarm: &Swarm,
    requested_rules: &[RuleId],
    knowledge: Option<&KnowledgeIndex>,
    history: &[Message],
    user: &str,
    search: &str,
) -> ChatRequest {
    let mut system = prefix.text.clone();
    let mut has_rules = prefix.has_rules;
    for &id in requested_rules {
        if prefix.rules.contains(&id) {
            continue;
        }
        if !has_rules {
            system.push_str(RULES_HEADING);
            has_rules = true;
        }
        push_rule(&mut system, swarm, id);
    }
    if let Some(index) = knowledge {
        let hits = index.search(search, PASSAGES);
        if !hits.is_empty() {
            system.push_str("\n\n# Knowledge base passages (cite them as given)\n");
            for hit in hits {
                let passage = index.passage(hit.passage);
                system.push_str(&format!(
                    "\n{}\n{}\n",
                    passage.citation(),
                    passage.text.trim()
                ));
            }
        }
    }
    let mut messages = Vec::with_capacity(history.len() + 2);
    messages.push(Message::system(system));
    messages.extend(history.iter().cloned());
    messages.push(Message::user(user));
    ChatRequest {
        messages,
        ..ChatRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG};
    use crate::provider::MessageRole;
    use crate::template::load_swarm;

    /// The shipped support-bot swarm and its knowledge base.
    fn support_bot() -> (Swarm, KnowledgeIndex) {
        let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).unwrap();
        let swarm = load_swarm(Path::new("agents/support-bot"), &config)
            .unwrap()
            .swarm;
        let index = KnowledgeIndex::build_dir(Path::new("agents/support-bot/knowledge")).unwrap();
        (swarm, index)
    }

    #[test]
    fn memory_prompt_rules_knowledge_history_then_the_question() {
        let (swarm, index) = support_bot();
        let refunds = swarm.agent("refunds").unwrap();
        let escalation = swarm.requestable_rules().next().unwrap().0;
        let history = [
            Message::user("hi"),
            Message::assistant("Hello! How can I help?"),
        ];
        let request = assemble(
            &swarm,
            refunds,
            &[escalation],
            Some(&index),
            &history,
            "refund for my yearly plan?",
        );
        let system = &request.messages[0].content;
        let memory_at = system.find("Parcelworks").unwrap();
        let prompt_at = system.find(refunds.prompt.lines().next().unwrap()).unwrap();
        let rules_at = system.find("# Rules").unwrap();
        let knowledge_at = system.find("# Knowledge base passages").unwrap();
        assert!(memory_at < prompt_at && prompt_at < rules_at && rules_at < knowledge_at);
        assert!(system.contains(&swarm.rule(escalation).body));
        assert!(system.contains("[refunds-and-cancellations.md#"));
        assert_eq!(request.messages.len(), 4);
        assert_eq!(request.messages[3].role, MessageRole::User);
        assert_eq!(request.messages[3].content, "refund for my yearly plan?");
    }

    #[test]
    fn after_a_handoff_passages_are_retrieved_for_the_question_not_the_brief() {
        let (swarm, index) = support_bot();
        let refunds = swarm.agent("refunds").unwrap();
        let question = "refund for my yearly plan?";
        // A brief about something else entirely: model output from the
        // previous step must not steer what the next one reads.
        let brief = format!(
            "{question}\n\n## Handoff from triage\n{}",
            "password reset two-factor login locked account ".repeat(8)
        );
        let prefix = Prefix::new(&swarm, refunds);
        let request = assemble_with(&prefix, &swarm, &[], Some(&index), &[], &brief, question);
        let system = &request.messages[0].content;
        let passages = &system[system.find("# Knowledge base passages").unwrap()..];
        assert!(
            passages.contains("[refunds-and-cancellations.md#"),
            "{passages}"
        );
        assert_eq!(request.messages.last().unwrap().content, brief);
    }
}
