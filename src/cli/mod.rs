//! Subcommands with enough arguments to deserve their own file.

pub mod bake;
pub mod patch;
