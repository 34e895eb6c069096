use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton::config::ProviderId;
use baton::knowledge::KnowledgeIndex;
use baton::provider::extractive::Extractive;
use baton::provider::{AttemptDeadline, Backend, ChatRequest, Message};

fn index(swarm: &str) -> Arc<KnowledgeIndex> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents").join(swarm).join("knowledge");
    Arc::new(KnowledgeIndex::build_dir(&root).expect("shipped knowledge indexes"))
}

#[tokio::test]
#[ignore]
async fn explore() {
    let qs = [
        ("knowledge-qa", "How do I restore a backup into a new database?"),
        ("knowledge-qa", "How do I repair a corrupt WAL?"),
        ("knowledge-qa", "How long until a revoked token stops working?"),
        ("knowledge-qa", "What happens to writes when two nodes are down?"),
        ("knowledge-qa", "How do I backfill a downsampling rule?"),
        ("knowledge-qa", "What are the minimum hardware requirements?"),
        ("knowledge-qa", "How often should I take a full backup?"),
        ("knowledge-qa", "What does error TW-1004 mean?"),
        ("knowledge-qa", "How many tags can a point have?"),
        ("knowledge-qa", "What port does the HTTP API listen on?"),
        ("support-bot", "How long do refunds take to appear?"),
        ("support-bot", "Which printers are recommended for thermal labels?"),
        ("support-bot", "How do I verify webhook signatures?"),
        ("support-bot", "I lost my phone and my recovery codes"),
        ("support-bot", "How long is an invite link valid?"),
        ("support-bot", "What happens when a payment fails?"),
        ("support-bot", "Which carriers are supported?"),
        ("support-bot", "How much does the Growth plan cost?"),
        ("support-bot", "Can I get a refund on a yearly plan?"),
        ("support-bot", "What is the capital of France?"),
        ("knowledge-qa", "What is the capital of France?"),
        ("support-bot", "How do I bake sourdough bread?"),
        ("knowledge-qa", "How do I bake sourdough bread?"),
        ("support-bot", "Who won the football world cup in 2018?"),
        ("knowledge-qa", "Who won the football world cup in 2018?"),
        ("support-bot", "Can you recommend a good movie for tonight?"),
        ("knowledge-qa", "Can you recommend a good movie for tonight?"),
        ("knowledge-qa", "What time is it in Tokyo?"),
        ("support-bot", "What time is it in Tokyo?"),
        ("support-bot", "How do I reset my account password?"),
        ("knowledge-qa", "What is the weather like today?"),
        ("support-bot", "Tell me a joke about databases"),
        ("knowledge-qa", "Tell me a joke about databases"),
    ];
    for (swarm, q) in qs {
        let idx = index(swarm);
        let n = baton::knowledge::tokenize(q).len();
        println!("=== [{swarm}] {q}  terms={:?}", baton::knowledge::tokenize(q));
        for h in idx.search(q, 4) {
            let p = idx.passage(h.passage);
            println!("  {:6.2} {}/{n} {}#{}", h.score, h.matched, p.file, p.heading);
        }
        let b = Extractive::new(ProviderId("x".into()), idx);
        let req = ChatRequest { messages: vec![Message::user(q)], ..Default::default() };
        let r = b.complete(&req, AttemptDeadline::new(Duration::from_secs(1), Duration::from_secs(2))).await.unwrap();
        println!("--> {:?}\n{}\n", r.finish_reason, r.text);
    }
}
