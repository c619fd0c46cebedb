//! Arguments several commands share, and their readers.

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

use gguf_sleep::store::EditType;
use gguf_sleep::text;

/// The system prompt to bake in or to measure: `--prompt` or `--prompt-file`.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct PromptArgs {
    /// the system prompt
    #[arg(long)]
    prompt: Option<String>,
    /// read the system prompt from a file
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
}

impl PromptArgs {
    /// The prompt without trailing newlines; an empty one is refused.
    pub fn text(&self) -> Result<String> {
        let text = text_or_file(&self.prompt, &self.prompt_file, "prompt")?
            .context("give the system prompt with --prompt TEXT or --prompt-file FILE")?;
        if text.trim().is_empty() {
            bail!("the system prompt is empty");
        }
        Ok(text)
    }
}

/// `text`, or the contents of `file` without trailing newlines, or neither.
pub fn text_or_file(
    text: &Option<String>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<Option<String>> {
    Ok(match (text, file) {
        (Some(t), _) => Some(t.trim_end_matches('\n').to_string()),
        (None, Some(f)) => Some(read_text(f, what)?.trim_end_matches('\n').to_string()),
        (None, None) => None,
    })
}

/// A text file's contents; a missing or unreadable file is a one-line error.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))
}

/// One item per non-empty line of `file`, or `default` when none is given.
pub fn lines_or(
    file: &Option<PathBuf>,
    what: &str,
    default: impl FnOnce() -> Vec<String>,
) -> Result<Vec<String>> {
    Ok(match file {
        Some(f) => text::lines(&read_text(f, what)?),
        None => default(),
    })
}

/// The calibration questions: `--calib` or the built-in set, cut to `--calib-size`.
pub fn calibration(file: &Option<PathBuf>, size: Option<usize>) -> Result<Vec<String>> {
    let mut questions = lines_or(file, "calibration", text::default_questions)?;
    if let Some(n) = size {
        questions.truncate(n);
    }
    if questions.is_empty() {
        bail!("the calibration file has no questions");
    }
    Ok(questions)
}

/// `--edit-type`: how edited weight matrices are stored.
#[derive(Clone, Copy, ValueEnum)]
pub enum EditTypeArg {
    Same,
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    F32,
}

impl From<EditTypeArg> for EditType {
    fn from(a: EditTypeArg) -> EditType {
        match a {
            EditTypeArg::Same => EditType::Same,
            EditTypeArg::Q8_0 => EditType::Q8_0,
            EditTypeArg::F16 => EditType::F16,
            EditTypeArg::F32 => EditType::F32,
        }
    }
}

/// `--rounding`: how edited matrices are rounded to a quantized type.
#[derive(Clone, Copy, ValueEnum)]
pub enum RoundingArg {
    /// chosen to keep each layer's output on the calibration inputs
    Output,
    /// each weight to its nearest grid value
    Nearest,
}
