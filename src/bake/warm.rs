//! The training-free patch inside a bake: the warm start (`--init patch`) and the refit merge
//! (`--merge refit`), both fitted on the teacher's own sampled replies, so no reply is
//! generated twice.

use anyhow::Result;
use std::path::Path;

use super::options::BakeOptions;
use super::report::Progress;
use super::teacher::Example;
use crate::patch::{self, PatchOptions, Supplied};
use crate::store::Provenance;

/// What `--merge refit` hands the patch: the adapter whose activations are its targets, and
/// bake's provenance to record over the patch's own.
pub struct Refit<'a> {
    /// the adapter (a LoRA GGUF) the patch is fitted to
    pub teacher: &'a Path,
    /// bake's provenance
    pub provenance: Provenance,
}

/// Run the training-free patch (its defaults: `down`, sequential, output-aware rounding; stored
/// as `opts.edit_type`) into `out`, fitted on at most `opts.init_questions` of the training
/// questions (never the validation ones) with the teacher's sampled replies as its replies. Its
/// targets are the prompted model's activations, or with `refit` those of the model with its
/// adapter.
pub fn run_patch(
    input: &Path,
    out: &Path,
    system: &str,
    train_set: &[Example],
    opts: &BakeOptions,
    refit: Option<Refit>,
    progress: Progress,
) -> Result<patch::PatchReport> {
    let (questions, replies) = init_material(train_set, opts.init_questions);
    let popts = PatchOptions {
        questions,
        prompt_questions: 0, // the teacher's replies are given for these questions only
        edit_type: opts.edit_type,
        max_tokens: opts.teacher.max_tokens,
        ..PatchOptions::default()
    };
    let (teacher_lora, then) = match refit {
        Some(r) => (Some(r.teacher.to_path_buf()), Some(r.provenance)),
        None => (None, None),
    };
    let given = Supplied {
        replies: Some(replies),
        teacher_lora,
        then,
    };
    patch::patch_with(input, out, system, &popts, &given, &mut |p, d, n| {
        progress(&format!("patch {p}"), d, n, None)
    })
}

/// The warm start's calibration: the first trajectory of each training question, at most `n`
/// of them spread evenly over the question list (so the self-questions at its end stay in),
/// as (questions, reply tokens).
pub fn init_material(train_set: &[Example], n: usize) -> (Vec<String>, Vec<Vec<i32>>) {
    let mut seen = std::collections::BTreeMap::new();
    for e in train_set {
        seen.entry(e.question_index).or_insert(e);
    }
    let firsts: Vec<&Example> = seen.into_values().collect();
    let n = n.clamp(1, firsts.len().max(1));
    (0..n)
        .filter_map(|i| firsts.get(i * firsts.len() / n))
        .map(|e| {
            let reply = e.tokens[e.tokens.len() - e.n..].to_vec();
            (e.question.clone(), reply)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(qi: usize, reply: &[i32]) -> Example {
        let mut tokens = vec![1, 2, 3];
        tokens.extend_from_slice(reply);
        Example {
            question: format!("q{qi}"),
            question_index: qi,
            first: tokens.len() - reply.len() - 1,
            n: reply.len(),
            tokens,
            ids: Vec::new(),
            logp: Vec::new(),
            tail: Vec::new(),
        }
    }

    #[test]
    fn init_material_takes_one_reply_per_question_spread_over_the_list() {
        // Two trajectories per question for questions 0..10 (validation ones already removed).
        let set: Vec<Example> = (0..10)
            .flat_map(|q| [example(q, &[100 + q as i32, 7]), example(q, &[200])])
            .collect();
        let (q, r) = init_material(&set, 4);
        assert_eq!(q, ["q0", "q2", "q5", "q7"]);
        assert_eq!(r, [vec![100, 7], vec![102, 7], vec![105, 7], vec![107, 7]]);
        let (q, r) = init_material(&set, 64);
        assert_eq!((q.len(), r.len()), (10, 10));
        assert_eq!(q.last().map(String::as_str), Some("q9"));
    }
}
