//! Plain text outside any chat (`data/anchors.txt`): paragraphs on everyday topics, disjoint
//! from `eval`'s neutral text. A patch that fits them with the base model's own activations as
//! the target learns to leave text that is not a conversation as it was.

/// The built-in anchor paragraphs, separated by blank lines.
pub const ANCHORS: &str = include_str!("../../data/anchors.txt");

/// How many paragraphs [`ANCHORS`] holds (a test checks it): the default patch fits them all.
pub const COUNT: usize = 20;

/// The first `n` anchor paragraphs (all of them when `n` exceeds their count).
pub fn paragraphs(n: usize) -> Vec<&'static str> {
    super::paragraphs(ANCHORS).take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_whole_and_bounded() {
        let all = paragraphs(usize::MAX);
        assert_eq!(all.len(), COUNT);
        assert!(all.iter().all(|p| !p.contains("\n\n") && p.len() > 100));
        assert_eq!(paragraphs(3), all[..3]);
        assert!(paragraphs(0).is_empty());
    }

    #[test]
    fn anchors_share_no_paragraph_with_the_locality_text() {
        let neutral = include_str!("../../data/neutral.txt");
        for p in paragraphs(usize::MAX) {
            let head: String = p.chars().take(40).collect();
            assert!(!neutral.contains(&head), "{head:?}");
        }
    }
}
