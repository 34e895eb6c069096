//! `baton trace ID [--json]`: the whole life of one request from the
//! journal — acceptance, classification, each worker's attempts with their
//! timing and why each next one was made, and where the answer came from.

use std::fmt::Write as _;
use std::process::ExitCode;

use baton::review::Timestamp;
use baton::store::Store;
use baton::store::journal::{Journal, JournalRecord, RequestState};

use super::admin::Output;
use super::show::one_line;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A trace id, or a unique start or end of one.
    id: String,
    /// Print the journal record as JSON.
    #[arg(long)]
    json: bool,
}

pub fn exec(args: &Args, store: &Store, out: &mut Output) -> anyhow::Result<ExitCode> {
    let journal = Journal::new(store)?;
    let found = journal.find(args.id.trim())?;
    let record = match found.as_slice() {
        [] => anyhow::bail!("no request with trace id `{}` in the journal", args.id),
        [one] => one,
        many => anyhow::bail!(
            "`{}` matches {}{} requests; give more of the trace id",
            args.id,
            if many.len() > 10 { "more than " } else { "" },
            many.len().min(10)
        ),
    };
    if args.json {
        out.stdout
            .push_str(&format!("{}\n", serde_json::to_string_pretty(record)?));
    } else {
        describe(record, &mut out.stdout);
    }
    Ok(ExitCode::SUCCESS)
}

fn at(ms: u64) -> String {
    Timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// The record for people.
pub fn describe(record: &JournalRecord, out: &mut String) {
    let state = match record.state {
        RequestState::Accepted => "still open (accepted, no end recorded)".to_owned(),
        RequestState::Completed => "completed".to_owned(),
        RequestState::Failed => "failed".to_owned(),
    };
    let took = record
        .latency()
        .map(|d| format!(" in {} ms", d.as_millis()))
        .unwrap_or_default();
    let _ = writeln!(out, "trace {}: {state}{took}", record.trace_id);
    let mut context = Vec::new();
    if let Some(swarm) = &record.swarm {
        context.push(format!("swarm {swarm}"));
    }
    if let Some(route) = &record.route {
        context.push(format!("route {route}"));
    }
    if let Some(session) = &record.session {
        context.push(format!("session {session}"));
    }
    if record.resumed {
        context.push("resumed after an interruption".to_owned());
    }
    if !context.is_empty() {
        let _ = writeln!(out, "  {}", context.join(", "));
    }
    let _ = writeln!(out, "  accepted   {}", at(record.accepted_ms));
    let _ = writeln!(out, "  question   {}", one_line(&record.question, 300));
    if let Some(c) = &record.classification {
        let _ = writeln!(
            out,
            "  classified {} (score {:.2}, confidence {:.2}, by {})",
            c.worker, c.score, c.confidence, c.decided_by
        );
    }
    if record.chain.len() > 1 {
        let _ = writeln!(out, "  delegation {}", record.chain.join(" → "));
    }
    let mut worker: Option<&str> = None;
    for attempt in &record.attempts {
        if attempt.worker.as_deref() != worker {
            worker = attempt.worker.as_deref();
            if let Some(worker) = worker {
                let _ = writeln!(out, "  worker {worker}:");
            }
        }
        let mut line = format!(
            "    +{:>6.0} ms  {:<10} {:<16} ",
            attempt.started_ms, attempt.reason, attempt.provider
        );
        if attempt.outcome == "ok" {
            let _ = write!(line, "ok in {:.0} ms", attempt.latency_ms);
        } else {
            let _ = write!(
                line,
                "{} after {:.0} ms",
                attempt.outcome, attempt.latency_ms
            );
            if let Some(status) = attempt.status {
                let _ = write!(line, " (HTTP {status})");
            }
        }
        if attempt.input_tokens + attempt.output_tokens > 0 {
            let _ = write!(
                line,
                ", {} in / {} out tokens",
                attempt.input_tokens, attempt.output_tokens
            );
        }
        if attempt.cost > 0.0 {
            let _ = write!(line, ", cost {:.6}", attempt.cost);
        }
        if attempt.cancelled {
            line.push_str(", cancelled (a hedge won)");
        }
        if attempt.reason == "failover" {
            line.push_str(", context replayed");
        }
        let _ = writeln!(out, "{line}");
        if let Some(error) = &attempt.error {
            let _ = writeln!(out, "              {}", one_line(error, 200));
        }
    }
    if let Some(finished) = record.finished_ms {
        let _ = writeln!(out, "  ended      {}", at(finished));
    }
    match record.state {
        RequestState::Completed => {
            let mut source = format!(
                "  answer from {}",
                record.served_by.as_deref().unwrap_or("?")
            );
            for (flag, label) in [
                (record.fallback && !record.degraded, "fallback"),
                (record.degraded, "degraded"),
                (record.refusal, "refusal"),
                (record.needs_review, "needs review"),
            ] {
                if flag {
                    source.push_str(", ");
                    source.push_str(label);
                }
            }
            let _ = writeln!(out, "{source}");
            if let Some(answer) = &record.answer {
                let _ = writeln!(out, "  answer     {}", one_line(answer, 300));
            }
        }
        RequestState::Failed => {
            let _ = writeln!(
                out,
                "  error      {}",
                record.error.as_deref().unwrap_or("(none recorded)")
            );
        }
        RequestState::Accepted => {}
    }
}
