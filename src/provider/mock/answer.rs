//! Deterministic answers: what the mock says, derived from the prompt alone.
//!
//! The text depends only on the last user message and the answer length,
//! never on the script's seed or on which mock serves it, so two mock
//! providers give the same answer to the same conversation. That is what
//! lets a client that fails over mid-stream continue from the partial text
//! on another provider and check the joined answer against a direct one.
//! One token is one word followed by a space.

use serde_json::json;

/// A protocol-neutral view of a chat request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    /// System prompt(s), joined.
    pub system: String,
    pub turns: Vec<Turn>,
    /// Names of the tools the request offers.
    pub tools: Vec<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
}

/// One message, reduced to what the mock looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    /// A tool's result rather than words someone typed.
    pub tool_result: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// Words separated by ASCII whitespace. Byte-wise, because the mock counts
/// every prompt of every benchmark request and should cost next to
/// nothing; Unicode spaces (rare in prompts) do not split.
fn count_words(text: &str) -> usize {
    let mut words = 0;
    let mut in_word = false;
    for byte in text.bytes() {
        let space = byte.is_ascii_whitespace();
        words += usize::from(!space && !in_word);
        in_word = !space;
    }
    words
}

/// What the mock will say to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Text {
        /// Tokens to send, each a word and its trailing space.
        tokens: Vec<String>,
        /// Cut short by `max_tokens`.
        truncated: bool,
    },
    ToolCall(ToolCallReply),
}

/// A deterministic call to one of the request's tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallReply {
    /// Hex digits; each protocol adds its own prefix.
    pub id_suffix: String,
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

const VOCABULARY: [&str; 64] = [
    "baton", "relay", "river", "signal", "harbor", "lantern", "meadow", "orbit", "copper",
    "falcon", "garden", "horizon", "island", "jigsaw", "kettle", "ledger", "marble", "needle",
    "oyster", "pepper", "quartz", "ribbon", "saddle", "timber", "umbra", "velvet", "willow",
    "yonder", "zephyr", "anchor", "bridge", "canyon", "delta", "ember", "fjord", "glacier",
    "hollow", "ivory", "juniper", "kernel", "lagoon", "mosaic", "nectar", "onyx", "prairie",
    "quiver", "raven", "summit", "tundra", "upland", "vortex", "walnut", "xylem", "yarrow",
    "zenith", "amber", "beacon", "cobalt", "dune", "echo", "fable", "granite", "haven", "indigo",
];

impl Conversation {
    /// The last message a person typed (tool results are skipped).
    pub fn last_user_text(&self) -> &str {
        self.turns
            .iter()
            .rev()
            .find(|t| t.role == Role::User && !t.tool_result)
            .map_or("", |t| t.text.as_str())
    }

    /// The trailing assistant message, if the request ends with one.
    pub fn prefill(&self) -> Option<&str> {
        self.turns
            .last()
            .filter(|t| t.role == Role::Assistant)
            .map(|t| t.text.as_str())
    }

    /// Words in the whole prompt: the mock's token count for usage and the
    /// context limit.
    pub fn prompt_tokens(&self) -> u32 {
        let words = count_words(&self.system)
            + self
                .turns
                .iter()
                .map(|t| count_words(&t.text))
                .sum::<usize>();
        u32::try_from(words).unwrap_or(u32::MAX)
    }

    /// A stable hash of the messages, the same whichever protocol carried
    /// them, so that stats can show a conversation asked twice.
    pub fn fingerprint(&self) -> String {
        let mut hash = WordHash::default();
        hash.write(self.system.as_bytes());
        for turn in &self.turns {
            hash.write(&[0xff, turn.role as u8, u8::from(turn.tool_result)]);
            hash.write(turn.text.as_bytes());
        }
        format!("{:016x}", hash.0)
    }

    /// The tool named in the last user message, when the request ends with
    /// that message and offers tools.
    pub fn requested_tool(&self) -> Option<&str> {
        let last = self.turns.last()?;
        if last.role != Role::User || last.tool_result {
            return None;
        }
        self.tools
            .iter()
            .find(|name| !name.is_empty() && last.text.contains(name.as_str()))
            .map(String::as_str)
    }
}

/// The full answer to a conversation's last user message.
pub fn full_answer(conversation: &Conversation, answer_tokens: usize) -> Vec<String> {
    let mut hash = Fnv::new();
    hash.write(conversation.last_user_text().as_bytes());
    let mut state = hash.finish();
    (0..answer_tokens)
        .map(|_| {
            let word = VOCABULARY[(splitmix(&mut state) % VOCABULARY.len() as u64) as usize];
            format!("{word} ")
        })
        .collect()
}

/// The first citation the system prompt offers: a line that is a whole
/// `[file#heading]`, as Baton writes the knowledge passages it retrieved.
pub fn first_citation(system: &str) -> Option<&str> {
    system.lines().map(str::trim).find(|line| {
        line.len() > 3 && line.starts_with('[') && line.ends_with(']') && line.contains('#')
    })
}

/// The answer a server with these settings gives: [`full_answer`], then,
/// with `cite`, the first citation of the prompt's passages, as a model
/// told to cite them would. Every mock of one setup must agree on `cite`,
/// or a continuation on another one would not match.
pub fn settled_answer(
    conversation: &Conversation,
    answer_tokens: usize,
    cite: bool,
) -> Vec<String> {
    let mut answer = full_answer(conversation, answer_tokens);
    if cite && let Some(citation) = first_citation(&conversation.system) {
        answer.push(format!("{citation} "));
    }
    answer
}

/// The tokens that follow `prefill` in `answer`, or `None` when the prefill
/// is not a start of the answer. A prefill without its trailing space (the
/// Anthropic API refuses trailing whitespace) still counts.
pub fn continuation(answer: &[String], prefill: &str) -> Option<Vec<String>> {
    let full: String = answer.concat();
    let start = if full.starts_with(prefill) {
        prefill.len()
    } else if full.starts_with(prefill.trim_end()) {
        prefill.trim_end().len()
    } else {
        return None;
    };
    // Re-split the remainder on token boundaries; a prefill that ends inside
    // a word leaves that word's tail as the first token.
    let mut rest = Vec::new();
    let mut offset = 0;
    for token in answer {
        let end = offset + token.len();
        if end > start {
            rest.push(token[start.saturating_sub(offset)..].to_owned());
        }
        offset = end;
    }
    Some(rest)
}

/// The reply to a conversation when no fault changes it.
pub fn reply(
    conversation: &Conversation,
    answer_tokens: usize,
    cite: bool,
    continue_prefill: bool,
) -> Reply {
    if let Some(name) = conversation.requested_tool() {
        return Reply::ToolCall(tool_call(conversation, name));
    }
    let answer = settled_answer(conversation, answer_tokens, cite);
    let mut tokens = match conversation.prefill() {
        Some(prefill) if continue_prefill => continuation(&answer, prefill).unwrap_or(answer),
        _ => answer,
    };
    let limit = conversation.max_tokens.map_or(usize::MAX, |m| m as usize);
    let truncated = tokens.len() > limit;
    tokens.truncate(limit);
    Reply::Text { tokens, truncated }
}

/// A call to `name` whose arguments quote the last user message.
pub fn tool_call(conversation: &Conversation, name: &str) -> ToolCallReply {
    let query = conversation.last_user_text();
    let mut hash = Fnv::new();
    hash.write(name.as_bytes());
    hash.write(&[0]);
    hash.write(query.as_bytes());
    ToolCallReply {
        id_suffix: format!("{:016x}", hash.finish()),
        name: name.to_owned(),
        arguments: json!({ "query": query }).to_string(),
    }
}

/// Splits JSON text into the pieces a stream sends (about 8 bytes each,
/// on character boundaries).
pub fn argument_pieces(arguments: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for c in arguments.chars() {
        current.push(c);
        if current.len() >= 8 {
            pieces.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// FNV-1a, 64 bits: stable across processes and Rust versions, unlike
/// `DefaultHasher`, so answers and fingerprints never change under a user.
/// A hash for counting prompts: eight bytes a step (FNV's byte loop was a
/// visible share of a benchmark's mock). Not for answers: those stay on
/// [`Fnv`], so that they do not change.
#[derive(Default)]
struct WordHash(u64);

impl WordHash {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let mut tail = [0; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.mix(u64::from_le_bytes(tail) ^ (bytes.len() as u64).rotate_left(56));
    }

    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(text: &str) -> Conversation {
        Conversation {
            turns: vec![Turn {
                role: Role::User,
                text: text.to_owned(),
                tool_result: false,
            }],
            ..Conversation::default()
        }
    }

    #[test]
    fn the_same_prompt_gets_the_same_answer() {
        let a = full_answer(&ask("hello"), 10);
        assert_eq!(a, full_answer(&ask("hello"), 10));
        assert_ne!(a, full_answer(&ask("hello!"), 10));
        assert_eq!(a.len(), 10);
        assert!(a.iter().all(|t| t.ends_with(' ') && t.trim().len() > 2));
    }

    #[test]
    fn a_citing_server_ends_with_the_prompts_first_passage_citation() {
        let mut conversation = ask("how long is data kept?");
        conversation.system = "You answer from the docs.\n\n# Knowledge base passages (cite them as given)\n\n[retention.md#Default retention]\nData is kept 30 days.\n\n[limits.md#Series]\nAt most 1M series.\n".into();
        let plain = full_answer(&conversation, 5);
        let cited = settled_answer(&conversation, 5, true);
        assert_eq!(cited[..5], plain[..]);
        assert_eq!(cited[5], "[retention.md#Default retention] ");
        assert_eq!(settled_answer(&conversation, 5, false), plain);
        // Nothing to cite: the plain answer.
        assert_eq!(
            settled_answer(&ask("hi"), 5, true),
            full_answer(&ask("hi"), 5)
        );
        // A citing answer continues like any other.
        let head = cited[..5].concat();
        assert_eq!(continuation(&cited, &head).unwrap(), cited[5..].to_vec());
    }

    #[test]
    fn continuation_returns_the_rest_of_the_answer() {
        let answer = full_answer(&ask("q"), 6);
        let head: String = answer[..2].concat();
        assert_eq!(continuation(&answer, &head).unwrap(), answer[2..].to_vec());
        let rest = continuation(&answer, head.trim_end()).unwrap();
        assert_eq!(
            format!("{}{}", head.trim_end(), rest.concat()),
            answer.concat()
        );
        let mid = &answer.concat()[..head.len() + 2];
        assert_eq!(
            format!("{mid}{}", continuation(&answer, mid).unwrap().concat()),
            answer.concat()
        );
        assert_eq!(continuation(&answer, "not the answer"), None);
    }

    #[test]
    fn fingerprints_tell_conversations_apart() {
        assert_eq!(ask("a").fingerprint(), ask("a").fingerprint());
        assert_ne!(ask("a").fingerprint(), ask("b").fingerprint());
    }
}
