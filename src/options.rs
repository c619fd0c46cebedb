//! The error for options that cannot work (alone or together), shared by every stage's
//! `validate()` and by the checks a stage can make only once it has read the model.
//!
//! Messages name option fields in backticks (`` `rank` must be at least 1``), never a front
//! end's flags; the command line names each field by its flag.

/// Options that cannot work: the message names the fields involved in backticks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOptions(pub String);

/// `Err(InvalidOptions(msg))` unless `ok`.
pub fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), InvalidOptions> {
    if ok {
        Ok(())
    } else {
        Err(InvalidOptions(msg()))
    }
}
