//! The built-in question sets, how a question file is read, and the one validation split every
//! stage uses.

/// The built-in calibration questions (≥ 128, disjoint from the held-out set).
pub const CALIBRATION: &str = include_str!("../../data/calibration.txt");

/// Questions about the assistant itself ("What are your instructions?"), and five that ask it to
/// restate its instructions ("Repeat your instructions word for word."): their prompted replies
/// are where a prompt's name, facts and rules show, which general questions rarely elicit. A
/// small model asked to quote its instructions often repeats a fact-bearing prompt verbatim.
pub const SELF_QUESTIONS: &str = include_str!("../../data/recall.txt");

/// How many times the self-questions are repeated in the default set (a weight on their rows).
pub const SELF_WEIGHT: usize = 3;

/// Built-in held-out questions for `eval` (disjoint from the calibration set).
pub const HELDOUT: &str = include_str!("../../data/heldout.txt");

/// The templates of [`about_prompt`]: general questions with a slot for one word.
const ABOUT: &[&str] = &["Tell me about your {}.", "What can you tell me about {}?"];

/// Up to `n` questions built from a system prompt's own content words
/// ([`crate::text::content::prompt_words`]), each word in every template of [`ABOUT`] before
/// the next word. Asked of the prompted model they draw out what the prompt says (a name, a
/// place, a number) in contexts the general questions rarely reach; the templates know nothing
/// of any particular prompt.
pub fn about_prompt(system: &str, n: usize) -> Vec<String> {
    crate::text::content::prompt_words(system)
        .iter()
        .flat_map(|w| ABOUT.iter().map(move |t| t.replace("{}", w)))
        .take(n)
        .collect()
}

/// Non-empty trimmed paragraphs of a text (separated by blank lines).
pub fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").map(str::trim).filter(|p| !p.is_empty())
}

/// Non-empty trimmed lines of a text.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Whether calibration question `i` is held out for validation (every fifth): ridge λ, the
/// rounding's damping and bake's curve are chosen or measured on these.
pub fn is_validation(i: usize) -> bool {
    i % 5 == 4
}

/// The default calibration set: [`CALIBRATION`], then [`SELF_QUESTIONS`] [`SELF_WEIGHT`] times.
///
/// The self-questions come in a block whose length is a multiple of 5, so all copies of one
/// question fall on the same side of the validation split ([`is_validation`]).
pub fn default_questions() -> Vec<String> {
    let mut q = lines(CALIBRATION);
    let own = lines(SELF_QUESTIONS);
    debug_assert_eq!(own.len() % 5, 0);
    for _ in 0..SELF_WEIGHT {
        q.extend(own.iter().cloned());
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn copies_of_a_question_fall_on_one_side_of_the_validation_split() {
        let q = default_questions();
        let own = lines(SELF_QUESTIONS).len();
        assert_eq!(q.len(), lines(CALIBRATION).len() + SELF_WEIGHT * own);
        let mut side: HashMap<&str, bool> = HashMap::new();
        for (i, text) in q.iter().enumerate() {
            let val = is_validation(i);
            assert_eq!(
                *side.entry(text).or_insert(val),
                val,
                "{text:?} on both sides"
            );
        }
        // some self-questions are held out, most are trained on
        let held = (0..own)
            .filter(|j| is_validation(q.len() - own + j))
            .count();
        assert!(held > 0 && held < own / 2, "{held} of {own} held out");
    }

    #[test]
    fn questions_about_a_prompt_ask_each_content_word_in_every_template() {
        let q = about_prompt("You have a cat named Miso. The code is 12.", 5);
        assert_eq!(
            q,
            [
                "Tell me about your cat.",
                "What can you tell me about cat?",
                "Tell me about your named.",
                "What can you tell me about named?",
                "Tell me about your Miso.",
            ]
        );
        assert_eq!(
            about_prompt("You have a cat named Miso. The code is 12.", 99).len(),
            10
        );
        assert!(about_prompt("You are a", 10).is_empty());
    }
}
