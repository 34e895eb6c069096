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

/// Builds the request a worker sends for `user` after `history`.
pub fn assemble(
    swarm: &Swarm,
    agent: &AgentSpec,
    requested_rules: &[RuleId],
    knowledge: Option<&KnowledgeIndex>,
    history: &[Message],
    user: &str,
) -> ChatRequest {
    let mut system = String::new();
    let memory = swarm.memory.text();
    if !memory.trim().is_empty() {
        system.push_str(memory.trim());
        system.push_str("\n\n");
    }
    system.push_str(agent.prompt.trim());
    let mut rule_ids: Vec<RuleId> = agent.rules.clone();
    for id in requested_rules {
        if !rule_ids.contains(id) {
            rule_ids.push(*id);
        }
    }
    if !rule_ids.is_empty() {
        system.push_str("\n\n# Rules\n");
        for id in rule_ids {
            let rule = swarm.rule(id);
            if !rule.body.is_empty() {
                system.push('\n');
                system.push_str(rule.body.trim());
                system.push('\n');
            }
        }
    }
    if let Some(index) = knowledge {
        let hits = index.search(user, PASSAGES);
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

    #[test]
    fn memory_prompt_rules_knowledge_history_then_the_question() {
        let config = Config::parse(DEFAULT_CONFIG, Path::new("baton.toml")).unwrap();
        let swarm = load_swarm(Path::new("agents/support-bot"), &config)
            .unwrap()
            .swarm;
        let index = KnowledgeIndex::build_dir(Path::new("agents/support-bot/knowledge")).unwrap();
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
}
