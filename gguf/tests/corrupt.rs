//! The corrupt-file corpus derived from SmolLM2: every variant is rejected with the expected,
//! one-line error and no panic.

use gguf::testkit::{corrupt_corpus, model_path, Mutation, SMOLLM2};
use gguf::Header;

#[test]
fn corrupt_smollm2_variants_are_rejected() {
    let valid = std::fs::read(model_path(SMOLLM2)).unwrap();
    let corpus = corrupt_corpus(&valid);
    let truncations = corpus
        .iter()
        .filter(|c| matches!(c.mutation, Mutation::Truncate(_)))
        .count();
    assert!(truncations >= 50, "only {truncations} truncation points");
    for region in ["fixed", "metadata", "directory", "data"] {
        assert!(
            corpus
                .iter()
                .any(|c| c.name.starts_with(&format!("trunc-{region}-"))),
            "no truncation in {region}"
        );
    }
    for c in &corpus {
        let result = match &c.mutation {
            Mutation::Truncate(n) => Header::parse(&valid[..*n as usize]),
            Mutation::Patch { .. } => Header::parse(&c.apply(&valid)),
        };
        let e = result.expect_err(&c.name);
        let msg = e.to_string();
        assert!((c.expect)(&e), "{}: unexpected error {msg}", c.name);
        assert!(!msg.contains('\n'), "{}: {msg:?}", c.name);
    }
}
