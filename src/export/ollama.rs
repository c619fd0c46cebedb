//! An Ollama Modelfile for a patched model: the model's own chat rendering with **no** system
//! prompt, exactly as the patch was fitted, and no `SYSTEM` line.
//!
//! The template is the model's chat template rendered for one user turn with no system
//! message, turned into an Ollama (Go) template by putting `{{ .Prompt }}` where the user's text
//! goes. A default system prompt the chat template adds by itself (SmolLM2's "You are a helpful
//! AI assistant named SmolLM…") stays in the template as literal text: the patched model was
//! fitted with it. Ollama applies the template to every turn of a chat.

use anyhow::{bail, Context as _, Result};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::engine::Model;
use crate::text::chat::{ChatFormat, PLAIN_STOP};

/// Stand-in for the user's text while rendering.
const SLOT: &str = "\u{1}PROMPT\u{1}";

/// The text before and after the user's text in a one-turn, unprompted rendering (the BOS text
/// left out: the tokenizer adds it, as llama.cpp does).
pub fn prompt_frame(fmt: &ChatFormat) -> Result<(String, String)> {
    let text = fmt.render(None, SLOT)?;
    let Some((before, after)) = text.split_once(SLOT) else {
        bail!("the chat template drops the user's message");
    };
    let before = before.strip_prefix(fmt.bos()).unwrap_or(before);
    Ok((before.to_string(), after.to_string()))
}

/// The Modelfile for `gguf_name` (a file in the same directory): the patched model itself, or
/// (`adapter_of = Some(base)`) a LoRA adapter over the base model at that path.
pub fn modelfile(fmt: &ChatFormat, gguf_name: &str, adapter_of: Option<&Path>) -> Result<String> {
    let (before, after) = prompt_frame(fmt)?;
    let end = if fmt.has_template() { fmt.eos() } else { "" };
    if [before.as_str(), after.as_str(), end]
        .iter()
        .any(|t| t.contains("{{") || t.contains("\"\"\""))
    {
        bail!(
            "the chat template's text contains '{{{{' or '\"\"\"', which a Modelfile cannot quote"
        );
    }
    let stop = if fmt.has_template() {
        fmt.eos().to_string()
    } else {
        PLAIN_STOP.trim_start().to_string()
    };
    let from = match adapter_of {
        Some(base) => format!("FROM {}\nADAPTER ./{gguf_name}", base.display()),
        None => format!("FROM ./{gguf_name}"),
    };
    let mut m = format!(
        "# Patched by gguf-sleep: the system prompt is in the weights, so there is no SYSTEM line.\n\
         {from}\n\
         TEMPLATE \"\"\"{before}{{{{ .Prompt }}}}{after}{{{{ .Response }}}}{end}\"\"\"\n"
    );
    if !stop.is_empty() {
        m.push_str(&format!(
            "PARAMETER stop \"{}\"\n",
            stop.replace('"', "\\\"")
        ));
    }
    Ok(m)
}

/// An Ollama model name from a file stem: lower case, `[a-z0-9._-]` only.
pub fn model_name(stem: &str) -> String {
    let s: String = stem
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    if s.is_empty() {
        "patched".to_string()
    } else {
        s
    }
}

/// The file name stem of a model path (`model` when it has none).
pub fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

/// Write `dir/Modelfile` (atomically) for `gguf`, the patched model written into `dir` from
/// `model` (or, with `adapter`, an adapter over it); returns its path and the `ollama create`
/// command that imports it.
pub fn write_modelfile(
    model: &Path,
    dir: &Path,
    gguf: &Path,
    adapter: bool,
) -> Result<(PathBuf, String)> {
    let m = Model::load(model)?;
    let fmt = ChatFormat::for_model(&m)?;
    let name = gguf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = if adapter {
        Some(std::fs::canonicalize(model)?)
    } else {
        None
    };
    let text = modelfile(&fmt, &name, base.as_deref())?;
    let path = dir.join("Modelfile");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let create = format!(
        "ollama create {} -f {}",
        model_name(&file_stem(gguf)),
        path.display()
    );
    Ok((path, create))
}

#[cfg(test)]
mod tests {
    use super::model_name;

    #[test]
    fn names_are_what_ollama_accepts() {
        assert_eq!(
            model_name("SmolLM2-135M-Instruct.Q4_1 sleep"),
            "smollm2-135m-instruct.q4_1-sleep"
        );
        assert_eq!(model_name("..."), "patched");
    }
}
