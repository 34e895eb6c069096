//! The graph of a config and the swarms it serves.

use sha2::{Digest, Sha256};

use super::{DependencyGraph, Edge, EdgeKind, Node};
use crate::config::{Config, FinalFallback, ProviderKind};
use crate::swarm::{Role, Swarm};

/// The model a provider entry reaches, as a node name: lower case, with a
/// router's vendor prefix dropped, so `openai/gpt-4.1-mini` through a
/// router and `gpt-4.1-mini` direct are one model node.
pub fn model_name(model: &str) -> String {
    model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .trim()
        .to_lowercase()
}

/// Builds the graph of `config` and `swarms`. Every route of the config is
/// in it, whether or not an agent uses it (the gateway serves routes by
/// name too).
pub fn build(config: &Config, swarms: &[Swarm]) -> DependencyGraph {
    let mut graph = DependencyGraph::new();
    let edge = |kind| Edge { kind, order: None };

    for provider in config.providers.values() {
        if provider.kind == ProviderKind::Extractive {
            continue;
        }
        let node = graph.add_node(Node::Provider {
            name: provider.id.0.clone(),
            provider: provider.kind,
            model: provider.model.clone(),
            domain: provider.domain.clone(),
            capabilities: provider.capabilities.clone(),
            key_env: provider.api_key_env.clone(),
        });
        let domain = graph.add_node(Node::Domain {
            name: provider.domain.clone(),
        });
        graph.add_edge(node, domain, edge(EdgeKind::DependsOn));
        if let Some(model) = &provider.model {
            let model = graph.add_node(Node::Model {
                name: model_name(model),
            });
            graph.add_edge(node, model, edge(EdgeKind::DependsOn));
        }
        for capability in &provider.capabilities {
            let capability = graph.add_node(Node::Capability { name: *capability });
            graph.add_edge(node, capability, edge(EdgeKind::Provides));
        }
    }

    let local_providers: Vec<String> = config
        .providers
        .values()
        .filter(|p| p.kind == ProviderKind::Local)
        .map(|p| p.id.0.clone())
        .collect();
    for route in config.routes.values() {
        let node = graph.add_node(Node::Route {
            name: route.name.0.clone(),
        });
        let mut served = 0u16;
        for id in &route.chain {
            let Some(provider) = config.provider(id) else {
                continue;
            };
            if provider.kind == ProviderKind::Extractive {
                // Served as the extractive final fallback, below.
                continue;
            }
            // A provider outside the route's allowed domains is never
            // picked, so it does not serve the route.
            let allowed = route
                .allowed_domains
                .as_ref()
                .is_none_or(|domains| domains.contains(&provider.domain));
            if !allowed {
                continue;
            }
            served += 1;
            let target = graph.add_node(Node::Provider {
                name: id.0.clone(),
                provider: provider.kind,
                model: provider.model.clone(),
                domain: provider.domain.clone(),
                capabilities: provider.capabilities.clone(),
                key_env: provider.api_key_env.clone(),
            });
            graph.add_edge(
                node,
                target,
                Edge {
                    kind: EdgeKind::ServedBy,
                    order: Some(served),
                },
            );
        }
        let mut order = 0u16;
        for fallback in &route.final_fallbacks {
            match fallback {
                FinalFallback::Cache | FinalFallback::Extractive => {
                    order += 1;
                    let target = graph.add_node(Node::Fallback { name: *fallback });
                    graph.add_edge(
                        node,
                        target,
                        Edge {
                            kind: EdgeKind::FallsBackTo,
                            order: Some(order),
                        },
                    );
                }
                FinalFallback::Local => {
                    for name in &local_providers {
                        let target = graph
                            .index(&format!("provider:{name}"))
                            .expect("every local provider was added above");
                        let already_served = graph
                            .targets(node, EdgeKind::ServedBy)
                            .iter()
                            .any(|(t, _)| *t == target);
                        if already_served {
                            continue;
                        }
                        order += 1;
                        graph.add_edge(
                            node,
                            target,
                            Edge {
                                kind: EdgeKind::FallsBackTo,
                                order: Some(order),
                            },
                        );
                    }
                }
            }
        }
    }

    for swarm in swarms {
        let swarm_node = graph.add_node(Node::Swarm {
            name: swarm.name.clone(),
            has_knowledge: !swarm.knowledge.is_empty(),
        });
        for agent in &swarm.agents {
            let node = graph.add_node(Node::Agent {
                swarm: swarm.name.clone(),
                name: agent.id.0.clone(),
                role: agent.role,
                stakes: agent.stakes,
                requires: agent.requires.clone(),
            });
            if let Some(route) = graph.index(&format!("route:{}", agent.route)) {
                graph.add_edge(node, route, edge(EdgeKind::BoundTo));
            }
            for capability in &agent.requires {
                let capability = graph.add_node(Node::Capability { name: *capability });
                graph.add_edge(node, capability, edge(EdgeKind::Requires));
            }
            if let Some(schema) = &agent.output_schema {
                let digest = Sha256::digest(serde_json::to_vec(schema).unwrap_or_default());
                let schema: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
                let contract = graph.add_node(Node::Contract {
                    swarm: swarm.name.clone(),
                    agent: agent.id.0.clone(),
                    schema,
                });
                graph.add_edge(node, contract, edge(EdgeKind::Requires));
            }
        }
        let supervisor = swarm.supervisor();
        let supervisor_node = graph
            .index(&format!("agent:{}/{}", swarm.name, supervisor.id))
            .expect("added above");
        graph.add_edge(swarm_node, supervisor_node, edge(EdgeKind::Delegates));
        for agent in &swarm.agents {
            let from = graph
                .index(&format!("agent:{}/{}", swarm.name, agent.id))
                .expect("added above");
            // A supervisor that names no delegates delegates to every worker.
            let delegates: Vec<&str> =
                if agent.role == Role::Supervisor && agent.delegates.is_empty() {
                    swarm.workers().map(|w| w.id.0.as_str()).collect()
                } else {
                    agent.delegates.iter().map(|d| d.0.as_str()).collect()
                };
            for delegate in delegates {
                if let Some(to) = graph.index(&format!("agent:{}/{delegate}", swarm.name)) {
                    graph.add_edge(from, to, edge(EdgeKind::Delegates));
                }
            }
        }
    }
    graph
}
