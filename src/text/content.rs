//! Content positions: the reply tokens that carry what a system prompt says.
//!
//! A prompted model copies a prompt's content (a name, a favourite, a place, a number) into its
//! replies from its context; a patched model has to produce it from its weights. The average
//! token hides this: most reply tokens do not depend on the prompt's content. The content
//! positions of a reply are its tokens that spell a word of the system prompt which the
//! question does not contain (case-insensitive; words are runs of letters and digits; common
//! function words are left out), so the measure sees exactly those tokens.

use std::collections::HashSet;

/// English function words: never content, wherever they appear.
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "being", "but", "by", "can", "could", "did", "do", "does", "each", "for", "from",
    "had", "has", "have", "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is",
    "it", "its", "just", "may", "me", "might", "more", "most", "must", "my", "no", "not", "of",
    "on", "one", "only", "or", "other", "our", "out", "over", "own", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "too", "up", "us", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours",
    "yourself",
];

/// The words of `text`: lower-cased runs of letters and digits, with their byte ranges.
fn words(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i, text[s..i].to_lowercase()));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The words of a system prompt that count as content in a reply to `question`: the prompt's
/// words, less the question's and the function words.
pub fn content_words(system: &str, question: &str) -> HashSet<String> {
    let asked: HashSet<String> = words(question).into_iter().map(|(_, _, w)| w).collect();
    words(system)
        .into_iter()
        .map(|(_, _, w)| w)
        .filter(|w| !asked.contains(w) && !FUNCTION_WORDS.contains(&w.as_str()))
        .collect()
}

/// The content words of a system prompt as it writes them: each once, in order of first
/// appearance, function words and fragments shorter than three letters left out (a number of
/// any length stays).
pub fn prompt_words(system: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    words(system)
        .into_iter()
        .filter(|(_, _, w)| {
            let long = w.chars().count() >= 3 || w.chars().all(|c| c.is_ascii_digit());
            long && !FUNCTION_WORDS.contains(&w.as_str()) && seen.insert(w.clone())
        })
        .map(|(s, e, _)| system[s..e].to_string())
        .collect()
}

/// For each token of a reply (its text pieces, in order), whether it spells part of a content
/// word of `system` that `question` does not contain.
pub fn content_positions(pieces: &[String], system: &str, question: &str) -> Vec<bool> {
    content_marks(pieces, system, question)
        .into_iter()
        .map(|m| m.within)
        .collect()
}

/// Where one reply token stands against the content words the reply spells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// the token overlaps a content word (a content position)
    pub within: bool,
    /// a content word begins inside the token: its first piece. Once a word's first piece is
    /// given, its other pieces follow from the word itself; the first one is where the
    /// prompt's content has to come from.
    pub starts: bool,
}

/// For each token of a reply (its text pieces, in order), its [`Mark`] against the content
/// words of `system` that `question` does not contain.
pub fn content_marks(pieces: &[String], system: &str, question: &str) -> Vec<Mark> {
    let content = content_words(system, question);
    let text: String = pieces.concat();
    let spans: Vec<(usize, usize)> = words(&text)
        .into_iter()
        .filter(|(_, _, w)| content.contains(w))
        .map(|(s, e, _)| (s, e))
        .collect();
    let mut at = 0;
    pieces
        .iter()
        .map(|p| {
            let (s, e) = (at, at + p.len());
            at = e;
            Mark {
                within: spans.iter().any(|&(a, b)| a < e && s < b),
                starts: spans.iter().any(|&(a, _)| s <= a && a < e),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(pieces: &[String], system: &str, question: &str) -> Vec<bool> {
        content_marks(pieces, system, question)
            .iter()
            .map(|m| m.starts)
            .collect()
    }

    fn pieces(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_reply_that_copies_a_prompt_word_marks_its_tokens() {
        let system = "You are Nova, a robot made by Orbital Labs. Your favourite colour is teal.";
        let reply = pieces(&[
            "I", "'m", " No", "va", ",", " and", " I", " love", " te", "al", ".",
        ]);
        let marked = content_positions(&reply, system, "Who are you?");
        assert_eq!(
            marked,
            [false, false, true, true, false, false, false, false, true, true, false]
        );
        // the first piece of each word: " No" and " te"
        let starts = starts(&reply, system, "Who are you?");
        assert_eq!(
            starts,
            [false, false, true, false, false, false, false, false, true, false, false]
        );
    }

    #[test]
    fn adjacent_content_words_each_have_a_first_piece() {
        let system = "You were made by Orbital Labs.";
        let reply = pieces(&["Orb", "ital", " Labs", " did"]);
        assert_eq!(
            starts(&reply, system, "Who made you?"),
            [true, false, true, false]
        );
        assert!(starts(&reply, system, "Was it Orbital Labs?")
            .iter()
            .all(|&m| !m));
    }

    #[test]
    fn a_reply_without_prompt_words_has_no_content_positions() {
        let system = "You are Nova, a robot made by Orbital Labs.";
        let reply = pieces(&[
            "I",
            " am",
            " an",
            " assistant",
            " made",
            " to",
            " help",
            ".",
        ]);
        // "made" is the prompt's, but the question asks it: not content here
        let marked = content_positions(&reply, system, "Who made you?");
        assert!(marked.iter().all(|&m| !m), "{marked:?}");
        assert_eq!(marked.len(), reply.len());
    }

    #[test]
    fn function_words_and_the_questions_words_are_not_content() {
        let w = content_words("You are a pirate. Your code is 4721.", "What is your code?");
        let mut w: Vec<String> = w.into_iter().collect();
        w.sort();
        assert_eq!(w, ["4721", "pirate"]);
    }

    #[test]
    fn prompt_words_keep_the_prompts_case_and_order_once_each() {
        let w = prompt_words(
            "You are Nova, made by Orbital Labs. Nova's code is 7 and 4721; I'm nova.",
        );
        assert_eq!(w, ["Nova", "made", "Orbital", "Labs", "code", "7", "4721"]);
    }
}
