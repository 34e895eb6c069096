//! The extractive surrogate: answers from the knowledge base, needs no model.
//!
//! It is the last fallback of a route, so it must be honest before it is
//! helpful: it quotes the knowledge base and cites it, and when nothing in
//! the knowledge base is clearly about the question it says so
//! ([`FinishReason::NoAnswer`]) instead of quoting something loosely related.
//!
//! An answer is built in three steps, all deterministic:
//! 1. the query is the last user message, with the previous user message in
//!    front when the last one is a short follow-up ("and for yearly?");
//! 2. the best passages of the [`KnowledgeIndex`] are kept only if they
//!    clear the relevance bar ([`Extractive`]'s thresholds, tuned on the
//!    shipped knowledge bases);
//! 3. from those passages the lines and sentences holding the rarest query
//!    terms are quoted, each followed by its `[file#heading]` citation, then
//!    a `Sources:` line.
//!
//! Answering takes microseconds and does no I/O, so it cannot run past an
//! [`AttemptDeadline`]: the deadline is honoured by finishing long before it.
//! The only failure is an empty knowledge base, reported as
//! [`ProviderError::Unavailable`] so that routing moves on to the clear
//! final error instead of serving a refusal nobody could ever improve.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::ProviderId;
use crate::knowledge::{Hit, KnowledgeIndex, for_each_term, tokenize};
use crate::provider::{
    AttemptDeadline, Backend, ChatRequest, ChatResponse, EventStream, FinishReason, MessageRole,
    ProviderError, StreamEvent, Usage,
};

/// The model name reported in responses.
pub const MODEL: &str = "extractive";

/// What the surrogate says when the knowledge base does not cover a question.
pub const NO_ANSWER: &str = "I can't answer that from the knowledge base.";

/// A last message with fewer content terms than this is a follow-up that
/// needs the previous question for context.
const SHORT_QUERY_TERMS: usize = 4;
/// How many passages an answer may draw on.
const MAX_PASSAGES: usize = 3;
/// How many sentences an answer may quote in all.
const MAX_SENTENCES: usize = 4;
/// How many words a streamed delta carries.
const WORDS_PER_DELTA: usize = 4;

// The relevance bar, tuned on the shipped knowledge bases (about 40 and
// 120 passages). Questions the documents answer give their right passage a
// BM25 score of 5 to 16 with half or more of the question's content terms
// in it ("Which carriers are supported?" is the lowest at 5.2, 2 of 2).
// Unrelated questions either share no term at all ("capital of France",
// "bake sourdough bread"), or share one word: a common one scoring under 3
// ("What time is it in Tokyo?": `time`, 2.7, 1 of 2), which the score bar
// stops, or a rarer one scoring up to about 5 among several unmatched
// words ("recommend a good movie": 4.8, 1 of 4), which the coverage bar
// stops. Both must hold, so neither a single rare word nor many weak
// matches of common words can carry an off-topic question.
/// The smallest share of the query's distinct terms a passage must contain.
const MIN_COVERAGE: f32 = 0.5;
/// The smallest BM25 score a passage must reach.
const MIN_SCORE: f32 = 4.5;
/// Passages after the first must score at least this share of the first,
/// so a clear answer is not diluted by quotes from neighbouring topics.
const MIN_SHARE_OF_BEST: f32 = 0.6;
/// A quoted sentence must weigh at least this share of the best sentence.
const MIN_SENTENCE_SHARE: f32 = 0.5;
/// How much a match in a passage's own heading adds to each of its
/// sentences, relative to the same match in the sentence itself.
const HEADING_SHARE: f32 = 0.5;

/// A [`Backend`] that answers by quoting the knowledge base.
#[derive(Debug, Clone)]
pub struct Extractive {
    id: ProviderId,
    index: Arc<KnowledgeIndex>,
}

impl Extractive {
    pub fn new(id: ProviderId, index: Arc<KnowledgeIndex>) -> Extractive {
        Extractive { id, index }
    }

    /// The answer to `request`, computed synchronously (the [`Backend`]
    /// methods wrap this).
    pub fn answer(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        if self.index.is_empty() {
            return Err(ProviderError::Unavailable(
                "the knowledge base has no passages".into(),
            ));
        }
        let query = query_of(request);
        let (text, finish_reason) = match self.compose(&query) {
            Some(text) => (text, FinishReason::Stop),
            None => (NO_ANSWER.to_owned(), FinishReason::NoAnswer),
        };
        tracing::debug!(
            provider = %self.id,
            query = %query,
            answered = finish_reason == FinishReason::Stop,
            "extractive answer"
        );
        let input_tokens = request
            .messages
            .iter()
            .map(|m| word_count(&m.content))
            .sum();
        Ok(ChatResponse {
            usage: Some(Usage {
                input_tokens,
                output_tokens: word_count(&text),
            }),
            text,
            tool_calls: Vec::new(),
            finish_reason,
            request_id: None,
            model: MODEL.to_owned(),
        })
    }

    /// The passages that clear the relevance bar for `query`, best first.
    pub fn relevant(&self, query: &str) -> Vec<Hit> {
        let mut terms = tokenize(query);
        terms.sort_unstable();
        terms.dedup();
        if terms.is_empty() {
            return Vec::new();
        }
        let hits = self.index.search(query, MAX_PASSAGES);
        let best = hits.first().map_or(0.0, |h| h.score);
        hits.into_iter()
            .filter(|h| {
                h.matched as f32 / terms.len() as f32 >= MIN_COVERAGE
                    && h.score >= MIN_SCORE
                    && h.score >= MIN_SHARE_OF_BEST * best
            })
            .collect()
    }

    /// The answer text, or `None` when nothing relevant was found.
    fn compose(&self, query: &str) -> Option<String> {
        let hits = self.relevant(query);
        if hits.is_empty() {
            return None;
        }
        let mut terms = tokenize(query);
        terms.sort_unstable();
        terms.dedup();
        let weights: Vec<(String, f32)> = terms
            .into_iter()
            .map(|t| {
                let w = self.index.term_weight(&t);
                (t, w)
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();

        let mut candidates: Vec<Candidate> = Vec::new();
        let mut whole_first_section = false;
        for (rank, hit) in hits.iter().enumerate() {
            let passage = self.index.passage(hit.passage);
            let own_heading = passage.heading.rsplit(" > ").next().unwrap_or_default();
            let heading_weight = weigh(own_heading, &weights);
            let units = sentences(&passage.text);
            // A short best section whose own heading matches the question is
            // about it as a whole: quote all of it, since its lines answer
            // even when they do not repeat the question's words (the list
            // under "Recommended printers").
            if rank == 0 && heading_weight > 0.0 && units.len() <= MAX_SENTENCES {
                whole_first_section = true;
            }
            for (position, sentence) in units.into_iter().enumerate() {
                let weight = weigh(&sentence, &weights) + HEADING_SHARE * heading_weight;
                if weight > 0.0 {
                    // Earlier passages ranked better: prefer their sentences
                    // when two weigh about the same.
                    let score = weight * (1.0 - 0.1 * rank as f32);
                    candidates.push(Candidate {
                        rank,
                        position,
                        score,
                        sentence,
                    });
                }
            }
        }
        candidates.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.rank.cmp(&b.rank))
                .then(a.position.cmp(&b.position))
        });
        let best = candidates.first()?.score;
        let mut chosen: Vec<Candidate> = Vec::new();
        for candidate in candidates {
            let wanted = (whole_first_section && candidate.rank == 0)
                || candidate.score >= MIN_SENTENCE_SHARE * best;
            // Overlapping windows of one section repeat lines.
            if wanted && !chosen.iter().any(|c| c.sentence == candidate.sentence) {
                chosen.push(candidate);
            }
        }
        // The first section's lines come first when it is quoted whole;
        // otherwise the strongest sentences, wherever they are.
        if whole_first_section {
            chosen.sort_by_key(|c| c.rank != 0);
        }
        chosen.truncate(MAX_SENTENCES);
        chosen.sort_by(|a, b| a.rank.cmp(&b.rank).then(a.position.cmp(&b.position)));

        let mut text = String::new();
        let mut sources: Vec<String> = Vec::new();
        for candidate in &chosen {
            let citation = self.index.passage(hits[candidate.rank].passage).citation();
            text.push_str(&candidate.sentence);
            text.push(' ');
            text.push_str(&citation);
            text.push('\n');
            if !sources.contains(&citation) {
                sources.push(citation);
            }
        }
        text.push_str("\nSources: ");
        text.push_str(&sources.join(", "));
        Some(text)
    }
}

struct Candidate {
    rank: usize,
    position: usize,
    score: f32,
    sentence: String,
}

/// The summed weight of the distinct query terms `text` contains. Weights
/// are squared idf so that the rare term that makes a question specific
/// (`1004` in "what does TW-1004 mean") outweighs several common ones
/// (`tw`, `error`) that every row of an error table shares.
fn weigh(text: &str, weights: &[(String, f32)]) -> f32 {
    let mut seen = vec![false; weights.len()];
    for_each_term(text, |term| {
        if let Some(i) = weights.iter().position(|(t, _)| t == term) {
            seen[i] = true;
        }
    });
    weights
        .iter()
        .zip(seen)
        .filter(|(_, seen)| *seen)
        .map(|((_, w), _)| w * w)
        .sum()
}

/// The quotable units of a passage: each list item, table row and code line
/// on its own, and prose lines cut into sentences, with markdown markers
/// that read badly in a plain answer removed.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        // A table's header row labels columns; quoted alone it says nothing.
        let header_row =
            line.starts_with('|') && lines.peek().is_some_and(|next| is_table_rule(next));
        if line.is_empty()
            || line.starts_with("```")
            || line.starts_with("~~~")
            || is_table_rule(line)
            || header_row
        {
            continue;
        }
        let line = strip_marker(line).replace("**", "");
        let line = if line.starts_with('|') {
            line.trim_matches('|').trim().to_owned()
        } else {
            line
        };
        split_sentences(&line, &mut out);
    }
    out
}

/// Whether `line` is the `|---|:--|` line under a table header.
fn is_table_rule(line: &str) -> bool {
    line.contains('-') && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Removes a list, quote or heading marker from the start of a line.
fn strip_marker(line: &str) -> &str {
    let line = line.trim_start_matches('>').trim_start();
    if let Some(rest) = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("+ "))
    {
        return rest.trim_start();
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        if let Some(rest) = line[digits..]
            .strip_prefix(". ")
            .or_else(|| line[digits..].strip_prefix(") "))
        {
            return rest.trim_start();
        }
    }
    if line.starts_with('#') {
        return line.trim_start_matches('#').trim_start();
    }
    line
}

/// Cuts prose after `.`, `?` or `!` followed by a space and a capital,
/// digit, quote or backtick, so "e.g. this" and "v2.4.1" stay whole.
fn split_sentences(line: &str, out: &mut Vec<String>) {
    let bytes = line.as_bytes();
    let mut start = 0;
    for i in 0..bytes.len() {
        if matches!(bytes[i], b'.' | b'?' | b'!')
            && bytes.get(i + 1) == Some(&b' ')
            && bytes.get(i + 2).is_some_and(|&next| {
                next.is_ascii_uppercase() || next.is_ascii_digit() || matches!(next, b'`' | b'"')
            })
        {
            let sentence = line[start..=i].trim();
            if !sentence.is_empty() {
                out.push(sentence.to_owned());
            }
            start = i + 1;
        }
    }
    let rest = line[start..].trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
}

/// The query for a request: the last user message, preceded by the one
/// before it when the last is too short to stand alone.
fn query_of(request: &ChatRequest) -> String {
    let mut users = request
        .messages
        .iter()
        .rev()
        .filter(|m| m.role == MessageRole::User);
    let Some(last) = users.next() else {
        return String::new();
    };
    // After a delegation step the message also carries the previous
    // worker's brief: the surrogate answers what the user asked.
    let last = crate::context::question_of(&last.content);
    if tokenize(last).len() < SHORT_QUERY_TERMS {
        if let Some(previous) = users.next() {
            let previous = crate::context::question_of(&previous.content);
            return format!("{previous}\n{last}");
        }
    }
    last.to_owned()
}

fn word_count(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Cuts `text` into deltas of a few words whose concatenation is `text`
/// exactly (whitespace included).
fn deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let word_char = !c.is_whitespace();
        if word_char && !in_word {
            if words == WORDS_PER_DELTA {
                out.push(text[start..i].to_owned());
                start = i;
                words = 0;
            }
            words += 1;
        }
        in_word = word_char;
    }
    if start < text.len() {
        out.push(text[start..].to_owned());
    }
    out
}

impl Backend for Extractive {
    fn id(&self) -> &ProviderId {
        &self.id
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        _deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move { self.answer(request) })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
        _deadline: AttemptDeadline,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let response = self.answer(request)?;
            let mut events: Vec<Result<StreamEvent, ProviderError>> = deltas(&response.text)
                .into_iter()
                .map(|d| Ok(StreamEvent::Delta(d)))
                .collect();
            events.push(Ok(StreamEvent::Finished {
                finish_reason: response.finish_reason,
                usage: response.usage,
                request_id: response.request_id,
                model: response.model,
            }));
            let stream: EventStream = Box::pin(futures_util::stream::iter(events));
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

    #[test]
    fn deltas_rebuild_the_text_exactly() {
        let text = "One two three four five six.\n  Seven [a.md#B > C]\n\nSources: [a.md#B > C]";
        let parts = deltas(text);
        assert!(parts.len() > 2);
        assert_eq!(parts.concat(), text);
        assert!(deltas("").is_empty());
    }

    #[test]
    fn sentences_strip_markers_and_split_prose() {
        let text = "- **Yearly**: refund within 14 days. Monthly: none.\n\
                    1. Go to Settings > Billing.\n\
                    | Code | HTTP |\n|------|------|\n| `TW-3001` | 401 |\n\
                    ```sh\ntidectl token list\n```\n\
                    See e.g. the docs for v2.4.1. Then stop.";
        assert_eq!(
            sentences(text),
            [
                "Yearly: refund within 14 days.",
                "Monthly: none.",
                "Go to Settings > Billing.",
                "`TW-3001` | 401",
                "tidectl token list",
                "See e.g. the docs for v2.4.1.",
                "Then stop.",
            ]
        );
    }

    #[test]
    fn short_follow_ups_carry_the_previous_question() {
        let request = ChatRequest {
            messages: vec![
                Message::user("Can I get a refund on a yearly plan?"),
                Message::assistant("Yes."),
                Message::user("and monthly?"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(
            query_of(&request),
            "Can I get a refund on a yearly plan?\nand monthly?"
        );
        let long = ChatRequest {
            messages: vec![
                Message::user("first question here"),
                Message::user("how long does a refund take to appear"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(query_of(&long), "how long does a refund take to appear");
    }

    #[test]
    fn a_handoff_brief_is_not_part_of_the_query() {
        let message = crate::context::handoff_message(
            "how long does a refund take to appear",
            "researcher",
            "[webhooks.md#Retries] Webhooks retry five times.\nCoverage: partial\n",
        );
        let request = ChatRequest {
            messages: vec![Message::user(message)],
            ..ChatRequest::default()
        };
        assert_eq!(query_of(&request), "how long does a refund take to appear");
    }
}
