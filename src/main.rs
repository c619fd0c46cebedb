//! The `gguf-sleep` command line: parses arguments, calls the library, prints the result or a
//! one-line error.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    let parsed = match cli::Cli::try_parse_from(cli::args()) {
        Ok(c) => c,
        // --help and --version print and exit 0; a usage error is one line and exit code 2.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", cli::usage_error_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    match cli::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
