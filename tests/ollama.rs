//! `patch --ollama DIR`: the patched model and a Modelfile whose template renders a user turn
//! exactly as the patch was fitted (the model's own template, no system prompt, no SYSTEM line).

mod util;

use std::path::Path;

use gguf_sleep::engine::Model;
use gguf_sleep::text::chat::ChatFormat;

/// The TEMPLATE of a Modelfile rendered for `user`, up to where the reply starts.
fn render(modelfile: &str, user: &str) -> String {
    let t = modelfile
        .split_once("TEMPLATE \"\"\"")
        .and_then(|(_, rest)| rest.split_once("\"\"\""))
        .map(|(t, _)| t)
        .expect("a TEMPLATE \"\"\"…\"\"\" block");
    let (prompt_part, _) = t.split_once("{{ .Response }}").expect("a .Response slot");
    prompt_part.replace("{{ .Prompt }}", user)
}

fn check_template(model: &Path, modelfile: &str) {
    let m = Model::load(model).unwrap();
    let fmt = ChatFormat::for_model(&m).unwrap();
    for user in ["Who are you?", "Tell me about \"quotes\" and\nnew lines."] {
        let want = fmt.render(None, user).unwrap();
        let want = want.strip_prefix(fmt.bos()).unwrap_or(&want);
        assert_eq!(render(modelfile, user), want, "{modelfile}");
    }
    assert!(!modelfile.lines().any(|l| l.starts_with("SYSTEM")));
}

#[test]
fn patch_writes_an_ollama_directory() {
    let input = util::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let od = dir.path().join("ollama");
    let v = util::json_of(&[
        "patch",
        input.to_str().unwrap(),
        "--prompt",
        "You are Captain Byte.",
        "--ollama",
        od.to_str().unwrap(),
        "--layers",
        "0..2",
        "--calib-size",
        "6",
        "--max-tokens",
        "8",
        "--json",
    ]);
    let gguf = od.join("SmolLM2-135M-Instruct.Q4_1-sleep.gguf");
    assert_eq!(v["output"], gguf.to_str().unwrap());
    gguf::GgufFile::open(&gguf).unwrap();
    assert_eq!(
        v["ollama"]["create"],
        format!(
            "ollama create smollm2-135m-instruct.q4_1-sleep -f {}",
            od.join("Modelfile").display()
        )
    );
    let mf = std::fs::read_to_string(od.join("Modelfile")).unwrap();
    assert!(
        mf.contains("FROM ./SmolLM2-135M-Instruct.Q4_1-sleep.gguf\n"),
        "{mf}"
    );
    assert!(mf.contains("PARAMETER stop \"<|im_end|>\""), "{mf}");
    check_template(&input, &mf);
}

#[test]
fn a_model_without_a_chat_template_gets_the_plain_format() {
    let input = util::gemma3();
    let m = Model::load(&input).unwrap();
    let fmt = ChatFormat::for_model(&m).unwrap();
    let mf = gguf_sleep::export::ollama::modelfile(&fmt, "g.gguf", None).unwrap();
    assert!(mf.contains("PARAMETER stop \"User:\""), "{mf}");
    check_template(&input, &mf);
}
