//! The one tokenizer shared by documents and queries.
//!
//! Retrieval only works if a question and a document turn the same word into
//! the same term, so there is exactly one path from text to terms and both
//! the index and every query go through it:
//!
//! 1. split on every character that is not alphanumeric (Unicode-aware), so
//!    `TW-1004` gives `tw` and `1004`, and `2.4.1` gives `2`, `4`, `1`;
//! 2. lowercase;
//! 3. drop a short list of English stop words (articles, pronouns,
//!    auxiliaries, common prepositions) that carry no topic;
//! 4. stem lightly, ASCII words longer than three letters only, and never
//!    tokens containing a digit (numbers are facts and must match exactly):
//!    - plurals: `-ies` → `-y` (`policies` → `policy`), `-sses` → `-ss`,
//!      `-es` after `ch`, `sh`, `x`, `z` (`matches` → `match`), otherwise a
//!      final `-s` unless the word ends in `-ss`, `-us` or `-is` (`status`,
//!      `analysis` stay whole);
//!    - verb endings: `-ing` and `-ed` when a stem of three letters or more
//!      with a vowel remains (`shipping` → `ship`, `voided` → `void`), with a
//!      doubled final consonant undone (`stopped` → `stop`; not `l`, `s`, `z`,
//!      so `installed` stays `install`); `-eed` words are left alone (`need`)
//!      and a four-letter `-ed` word loses only its `d` (`used` → `use`);
//!    - a final silent `-e` after at least three letters (`create`,
//!      `created` and `creating` all become `creat`), but not `-ee` (`fee`).
//!
//! The stemmer is deliberately weaker than Porter's: it must never merge two
//! words a support question tells apart, and an unstemmed variant only costs
//! a little recall, which the heading weighting and BM25 absorb.

/// Calls `f` with every term of `text`, in order, reusing one buffer so that
/// tokenizing allocates once per call, not once per word.
pub fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::with_capacity(32);
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_ascii() {
                word.push(c.to_ascii_lowercase());
            } else {
                word.extend(c.to_lowercase());
            }
        } else if !word.is_empty() {
            emit(&mut word, &mut f);
        }
    }
    if !word.is_empty() {
        emit(&mut word, &mut f);
    }
}

/// The terms of `text`, in order, duplicates kept.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for_each_term(text, |t| terms.push(t.to_owned()));
    terms
}

fn emit(word: &mut String, f: &mut impl FnMut(&str)) {
    if !is_stop_word(word) {
        stem(word);
        f(word);
    }
    word.clear();
}

/// Words that say nothing about what a passage is about. Kept short on
/// purpose: words like `down`, `off`, `all` or `not` change what a support
/// question means, so they stay.
fn is_stop_word(word: &str) -> bool {
    matches!(
        word,
        "a" | "an"
            | "the"
            | "and"
            | "or"
            | "but"
            | "if"
            | "of"
            | "to"
            | "in"
            | "on"
            | "at"
            | "by"
            | "for"
            | "with"
            | "from"
            | "as"
            | "into"
            | "about"
            | "is"
            | "are"
            | "was"
            | "were"
            | "be"
            | "been"
            | "being"
            | "am"
            | "it"
            | "its"
            | "this"
            | "that"
            | "these"
            | "those"
            | "there"
            | "here"
            | "do"
            | "does"
            | "did"
            | "have"
            | "has"
            | "had"
            | "i"
            | "me"
            | "my"
            | "we"
            | "us"
            | "our"
            | "you"
            | "your"
            | "he"
            | "she"
            | "they"
            | "them"
            | "their"
            | "what"
            | "which"
            | "who"
            | "whom"
            | "how"
            | "when"
            | "where"
            | "why"
            | "can"
            | "could"
            | "should"
            | "would"
            | "will"
            | "shall"
            | "may"
            | "might"
            | "must"
            | "so"
            | "than"
            | "then"
            | "too"
            | "very"
            | "just"
            | "also"
            | "any"
            | "some"
            | "such"
            | "s"
            | "t"
            | "d"
            | "ll"
            | "m"
            | "re"
            | "ve"
            | "don"
            | "doesn"
            | "didn"
            | "isn"
            | "aren"
            | "won"
            | "get"
            | "got"
            | "please"
            | "much"
            | "many"
    )
}

fn stem(word: &mut String) {
    if word.len() <= 3 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return;
    }
    strip_plural(word);
    strip_verb_ending(word);
    if word.len() > 3 && word.ends_with('e') && !word.ends_with("ee") {
        word.pop();
    }
}

fn strip_plural(word: &mut String) {
    let len = word.len();
    if word.ends_with("ies") && len > 4 {
        word.truncate(len - 3);
        word.push('y');
    } else if ["sses", "ches", "shes", "xes", "zes"]
        .iter()
        .any(|end| word.ends_with(end))
    {
        word.truncate(len - 2);
    } else if word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        word.truncate(len - 1);
    }
}

fn strip_verb_ending(word: &mut String) {
    let len = word.len();
    let ending = if word.ends_with("ing") {
        3
    } else if word.ends_with("ed") && !word.ends_with("eed") {
        2
    } else {
        return;
    };
    let stem = &word[..len - ending];
    if stem.len() >= 3 && stem.bytes().any(is_vowel) {
        word.truncate(len - ending);
        undouble(word);
    } else if ending == 2 && len == 4 {
        // `used`, `aged`: the verb itself ends in a silent e.
        word.truncate(len - 1);
    }
}

fn undouble(word: &mut String) {
    let bytes = word.as_bytes();
    let n = bytes.len();
    if n >= 2 {
        let last = bytes[n - 1];
        if last == bytes[n - 2] && !is_vowel(last) && !matches!(last, b'l' | b's' | b'z') {
            word.pop();
        }
    }
}

fn is_vowel(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u' | b'y')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_punctuation_and_lowercases() {
        assert_eq!(
            tokenize("TW-1004: Field-type CONFLICT!"),
            ["tw", "1004", "field", "typ", "conflict"]
        );
    }

    #[test]
    fn drops_stop_words_but_keeps_meaningful_short_words() {
        assert_eq!(tokenize("Is the server down for you?"), ["server", "down"]);
        assert_eq!(tokenize("Don't do it"), Vec::<String>::new());
    }

    #[test]
    fn numbers_are_kept_whole_and_never_stemmed() {
        assert_eq!(
            tokenize("port 7420 and 2.4.1"),
            ["port", "7420", "2", "4", "1"]
        );
        assert_eq!(tokenize("4x6 labels 100s"), ["4x6", "label", "100s"]);
    }

    #[test]
    fn stemming_merges_inflections_of_one_word() {
        let same = |a: &str, b: &str| assert_eq!(tokenize(a), tokenize(b), "{a} vs {b}");
        same("refunds", "refund");
        same("refunded", "refunding");
        same("policies", "policy");
        same("matches", "match");
        same("classes", "class");
        same("created", "create");
        same("creating", "creates");
        same("shipping", "ship");
        same("stopped", "stop");
        same("used", "use");
        same("uses", "use");
        same("charges", "charged");
    }

    #[test]
    fn stemming_leaves_lookalikes_alone() {
        assert_eq!(tokenize("status"), ["status"]);
        assert_eq!(tokenize("analysis"), ["analysis"]);
        assert_eq!(tokenize("business"), ["business"]);
        assert_eq!(tokenize("need"), ["need"]);
        assert_eq!(tokenize("fee"), ["fee"]);
        assert_eq!(tokenize("string"), ["string"]);
        assert_eq!(tokenize("installed"), ["install"]);
    }

    #[test]
    fn non_ascii_words_are_lowercased_but_not_stemmed() {
        assert_eq!(tokenize("Überweisungen ÉTÉ"), ["überweisungen", "été"]);
    }
}
