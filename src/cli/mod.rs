//! Subcommands with enough arguments to deserve their own file, and what they share.

pub mod bake;
pub mod patch;

use anyhow::{bail, Result};
use clap::ValueEnum;
use std::path::PathBuf;

use gguf_sleep::patch::EditType;
use gguf_sleep::{eval, material};

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

/// The system prompt from `--prompt` or `--prompt-file`, without trailing newlines.
pub fn system_prompt(text: &Option<String>, file: &Option<PathBuf>) -> Result<String> {
    let system = match (text, file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => crate::read_text(f, "prompt")?,
        _ => bail!("give the system prompt with --prompt TEXT or --prompt-file FILE"),
    };
    Ok(system.trim_end_matches('\n').to_string())
}

/// The calibration questions: `--calib` or the built-in set, cut to `--calib-size`.
pub fn calibration(file: &Option<PathBuf>, size: Option<usize>) -> Result<Vec<String>> {
    let mut questions = match file {
        Some(f) => eval::lines(&crate::read_text(f, "calibration")?),
        None => material::default_questions(),
    };
    if let Some(n) = size {
        questions.truncate(n);
    }
    if questions.is_empty() {
        bail!("the calibration file has no questions");
    }
    Ok(questions)
}
