//! The ways a conversation without the user's own system prompt reaches the patched model.
//! Runtimes and users differ: the model's template with no system message (which may add a
//! default system text of its own, as SmolLM2's does), an empty system turn, or a generic system
//! prompt many users keep. A patch fitted on one rendering alone may hold in that one only.

use std::fmt;
use std::str::FromStr;

/// A generic system prompt users keep in their runtime's settings.
pub const GENERIC_SYSTEM: &str = "You are a helpful assistant.";

/// One way to render the unprompted side of a calibration conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    /// the model's chat template with no system message (its own default applies, if any)
    Template,
    /// a system turn with empty text
    Empty,
    /// the system turn [`GENERIC_SYSTEM`]
    Generic,
}

impl Rendering {
    /// Every rendering, in the order calibration conversations cycle through them.
    pub const ALL: [Rendering; 3] = [Rendering::Template, Rendering::Empty, Rendering::Generic];

    /// The system text this rendering puts before the user's turn (`None`: no system message).
    pub fn system(self) -> Option<&'static str> {
        match self {
            Rendering::Template => None,
            Rendering::Empty => Some(""),
            Rendering::Generic => Some(GENERIC_SYSTEM),
        }
    }

    /// The rendering of calibration conversation `i` when they cycle through `renderings`.
    pub fn of(renderings: &[Rendering], i: usize) -> Rendering {
        renderings
            .get(i % renderings.len().max(1))
            .copied()
            .unwrap_or(Rendering::Template)
    }
}

impl fmt::Display for Rendering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rendering::Template => "template",
            Rendering::Empty => "empty",
            Rendering::Generic => "generic",
        })
    }
}

impl FromStr for Rendering {
    type Err = String;
    fn from_str(s: &str) -> Result<Rendering, String> {
        Rendering::ALL
            .into_iter()
            .find(|r| r.to_string() == s)
            .ok_or_else(|| format!("unknown rendering '{s}' (template, empty, generic)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_cycle_through_the_renderings_and_names_round_trip() {
        let r = [Rendering::Template, Rendering::Generic];
        assert_eq!(Rendering::of(&r, 0), Rendering::Template);
        assert_eq!(Rendering::of(&r, 3), Rendering::Generic);
        assert_eq!(Rendering::of(&[], 5), Rendering::Template);
        for r in Rendering::ALL {
            assert_eq!(r.to_string().parse::<Rendering>(), Ok(r));
        }
        assert!("bare".parse::<Rendering>().is_err());
        assert_eq!(Rendering::Empty.system(), Some(""));
    }
}
