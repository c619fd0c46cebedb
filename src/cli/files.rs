//! `inspect`, `rewrite` and `diff`: the commands that read GGUF files without running them.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `inspect` arguments.
#[derive(Args)]
pub struct InspectArgs {
    /// the .gguf file
    file: PathBuf,
    /// list every tensor
    #[arg(long)]
    tensors: bool,
    /// print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `rewrite` arguments.
#[derive(Args)]
pub struct RewriteArgs {
    /// the .gguf file to read
    file: PathBuf,
    /// where to write
    #[arg(short, long)]
    output: PathBuf,
}

/// `diff` arguments.
#[derive(Args)]
pub struct DiffArgs {
    /// the first file (e.g. the original model)
    a: PathBuf,
    /// the second file (e.g. the patched model)
    b: PathBuf,
    /// print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Run `inspect`.
pub fn inspect(a: InspectArgs) -> Result<()> {
    let report = gguf_sleep::inspect::inspect(&a.file, a.tensors)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Run `rewrite`.
pub fn rewrite(a: RewriteArgs) -> Result<()> {
    let src = gguf::GgufFile::open(&a.file)?;
    let report = gguf::write(
        &src,
        &gguf::Edits::default(),
        &a.output,
        &gguf::WriteOptions::default(),
    )?;
    eprintln!("wrote {} ({} bytes)", a.output.display(), report.bytes);
    Ok(())
}

/// Run `diff`.
pub fn diff(a: DiffArgs) -> Result<()> {
    let report = gguf_sleep::diff::diff(&a.a, &a.b)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
