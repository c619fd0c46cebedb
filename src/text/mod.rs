//! Text before tokens meet the model: the model's chat template ([`chat`]), conversations and
//! their alignment with and without a system prompt ([`convo`]), and the built-in questions
//! with the validation split ([`questions`]), the words of a prompt that carry its content
//! ([`content`]), the renderings of an unprompted turn ([`rendering`]), and plain text
//! outside any chat ([`anchors`]).

pub mod anchors;
pub mod chat;
pub mod content;
pub mod convo;
pub mod questions;
pub mod rendering;

pub use chat::{ChatFormat, PLAIN_STOP};
pub use questions::{default_questions, is_validation, lines, paragraphs, HELDOUT};
pub use rendering::Rendering;
