//! Alignment of prompted and unprompted renderings on both models' templates.

mod util;

use gguf_sleep::engine::Model;
use gguf_sleep::text::chat::ChatFormat;
use gguf_sleep::text::convo::{align, prompt_tokens};
use std::path::Path;

fn check(path: &Path, expect_template: bool) {
    let model = Model::load(path).unwrap();
    let fmt = ChatFormat::for_model(&model).unwrap();
    assert_eq!(fmt.has_template(), expect_template);
    let system = "You are Captain Byte, a pirate who loves computers.";
    for user in [
        "What is the capital of France?",
        "Tell me about the sea, please!",
        "x",
    ] {
        let reply = model
            .tokenize(" Paris is the capital, matey.", false, false)
            .unwrap();
        let mut p = prompt_tokens(&model, &fmt, Some(system), user).unwrap();
        let mut u = prompt_tokens(&model, &fmt, None, user).unwrap();
        assert_ne!(p, u, "the system prompt changes the rendering");
        p.extend(&reply);
        u.extend(&reply);
        let a = align(&model, &p, &u, user, reply.len()).unwrap();
        // The shared tokens are identical and cover the user text and the whole reply.
        assert_eq!(&p[a.prompted_start..], &u[a.unprompted_start..]);
        assert!(a.len > reply.len());
        let user_toks = model.tokenize(user, false, false).unwrap();
        assert!(
            a.len >= reply.len() + user_toks.len() - 1,
            "{} shared tokens",
            a.len
        );
        assert!(model.detokenize(&u[a.unprompted_start..]).contains(user));
        // The prompted sequence's extra tokens hold the system prompt.
        assert!(model
            .detokenize(&p[..a.prompted_start])
            .contains("Captain Byte"));
    }
}

#[test]
fn smollm2_template_aligns() {
    check(&util::smollm2(), true);
}

#[test]
fn gemma3_plain_fallback_aligns() {
    check(&util::gemma3(), false);
}

#[test]
fn smollm2_unprompted_run_has_the_templates_default_system_turn() {
    // SmolLM2's template injects its own system turn when none is given: the unprompted run
    // must be what a user of the patched model actually runs.
    let model = Model::load(&util::smollm2()).unwrap();
    let fmt = ChatFormat::for_model(&model).unwrap();
    let text = fmt.render(None, "hi").unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(
        text.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
}
