//! `baton status [--json]`: what the store knows now — each provider's
//! breaker and last health change, requests open in the journal, pending
//! reviews, sessions. While a process holds the store this runs inside it
//! (admin socket), so the breakers are the ones it last recorded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use baton::review::{ReviewQueue, Timestamp};
use baton::store::Store;
use baton::store::health::HealthLog;
use baton::store::journal::Journal;

use super::admin::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

fn at_ms(ms: u64) -> String {
    Timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

pub fn exec(args: &Args, store: &Store, out: &mut Output) -> anyhow::Result<ExitCode> {
    let health = HealthLog::new(store)?;
    let mut providers: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for change in health.history()? {
        providers.insert(
            change.provider.clone(),
            serde_json::json!({
                "health": change.to,
                "since": at_ms(change.at_ns / 1_000_000),
                "reason": change.reason,
            }),
        );
    }
    for name in providers.keys().cloned().collect::<Vec<_>>() {
        if let Some(breaker) = health.breaker(&name)? {
            providers.get_mut(&name).expect("listed above")["breaker"] = serde_json::json!({
                "state": breaker.state,
                "ejections": breaker.ejections,
                "open_until": breaker.open_until_ms.map(at_ms),
            });
        }
    }
    let journal = Journal::new(store)?;
    let open = journal.open()?.len();
    let pending_reviews = ReviewQueue::new(store)?.pending()?.len();
    let sessions = store.tree("sessions")?.len();
    let status = serde_json::json!({
        "store": store.path(),
        "requests": journal.len(),
        "open_requests": open,
        "pending_reviews": pending_reviews,
        "sessions": sessions,
        "providers": providers,
    });
    if args.json {
        out.stdout
            .push_str(&format!("{}\n", serde_json::to_string_pretty(&status)?));
        return Ok(ExitCode::SUCCESS);
    }
    let text = &mut out.stdout;
    let _ = writeln!(text, "store {}", store.path().display());
    let _ = writeln!(
        text,
        "requests: {} journaled, {open} open; {pending_reviews} pending review(s); {sessions} session(s)",
        journal.len()
    );
    if providers.is_empty() {
        let _ = writeln!(
            text,
            "providers: no health change recorded yet (all healthy so far)"
        );
    }
    for (name, p) in &providers {
        let breaker = p
            .get("breaker")
            .map(|b| {
                let mut shown = format!(", breaker {}", b["state"].as_str().unwrap_or("?"));
                if let Some(until) = b["open_until"].as_str() {
                    let _ = write!(shown, " until {until}");
                }
                shown
            })
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  {name:<16} {} since {}{breaker} ({})",
            p["health"].as_str().unwrap_or("?"),
            p["since"].as_str().unwrap_or("?"),
            p["reason"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
