//! Conversations rendered exactly as at inference: through the model's own Jinja chat template
//! (`tokenizer.chat_template`, rendered with minijinja as llama.cpp's server renders it), or a
//! documented plain-text fallback for models without a template.
//!
//! Plain-text fallback (base models):
//! ```text
//! {system}\n\n          (only when there is a system prompt)
//! User: {user}\nAssistant:
//! ```
//! and a reply ends at the model's end-of-generation token or at a new `\nUser:` line.

use anyhow::{Context as _, Result};
use minijinja::{context, Environment, Error, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::Model;

static SAID_FALLBACK: AtomicBool = AtomicBool::new(false);

/// Marker after which a plain-text reply is cut.
pub const PLAIN_STOP: &str = "\nUser:";

/// How conversations are rendered for one model.
pub struct ChatFormat {
    env: Option<Environment<'static>>,
    bos: String,
    eos: String,
}

impl ChatFormat {
    /// The model's own template, or the plain-text fallback (said once on stderr).
    pub fn for_model(model: &Model) -> Result<ChatFormat> {
        let bos = model.bos_text().unwrap_or_default();
        let eos = model.eos_text().unwrap_or_default();
        let env = match model.chat_template() {
            Some(t) => Some(environment(t)?),
            None => {
                if !SAID_FALLBACK.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "note: {} has no chat template; using the plain-text format \"User: …\\nAssistant:\"",
                        model.path().display()
                    );
                }
                None
            }
        };
        Ok(ChatFormat { env, bos, eos })
    }

    /// Whether the model's own template is used (false: plain-text fallback).
    pub fn has_template(&self) -> bool {
        self.env.is_some()
    }

    /// Text up to where the assistant's reply starts, for an optional system prompt and one
    /// user turn.
    pub fn render(&self, system: Option<&str>, user: &str) -> Result<String> {
        self.render_chat(system, &[], user)
    }

    /// Text up to where the assistant's reply starts, for an optional system prompt, the
    /// earlier exchanges of the conversation (user turn, assistant reply) and the user's turn.
    pub fn render_chat(
        &self,
        system: Option<&str>,
        history: &[(String, String)],
        user: &str,
    ) -> Result<String> {
        match &self.env {
            Some(env) => {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(context! { role => "system", content => s });
                }
                for (u, r) in history {
                    messages.push(context! { role => "user", content => u });
                    messages.push(context! { role => "assistant", content => r });
                }
                messages.push(context! { role => "user", content => user });
                let tmpl = env.get_template("chat").expect("template was added");
                tmpl.render(context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos.as_str(),
                    eos_token => self.eos.as_str(),
                })
                .context("the model's chat template failed to render")
            }
            None => {
                let mut text = system.map(|s| format!("{s}\n\n")).unwrap_or_default();
                for (u, r) in history {
                    text.push_str(&format!("User: {u}\nAssistant: {r}\n"));
                }
                text.push_str(&format!("User: {user}\nAssistant:"));
                Ok(text)
            }
        }
    }

    /// Cut a generated reply at the plain-text turn marker (no-op with a real template).
    pub fn trim_reply<'a>(&self, reply: &'a str) -> &'a str {
        if self.env.is_none() {
            if let Some(i) = reply.find(PLAIN_STOP) {
                return &reply[..i];
            }
        }
        reply
    }

    /// The BOS text, which the tokenizer must not add again when a template already emits it.
    pub fn bos(&self) -> &str {
        &self.bos
    }

    /// The end-of-sequence text, which closes an assistant turn.
    pub fn eos(&self) -> &str {
        &self.eos
    }
}

fn environment(template: String) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template_owned("chat", template)
        .context("the model's chat template does not parse")?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    fn format(template: Option<&str>) -> ChatFormat {
        ChatFormat {
            env: template.map(|t| environment(t.to_string()).unwrap()),
            bos: String::new(),
            eos: String::new(),
        }
    }

    #[test]
    fn earlier_exchanges_come_between_the_system_prompt_and_the_users_turn() {
        let history = [("Hi".to_string(), "Hello!".to_string())];
        let t = format(Some(CHATML))
            .render_chat(Some("Be brief."), &history, "Bye")
            .unwrap();
        assert_eq!(
            t,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let plain = format(None).render_chat(None, &history, "Bye").unwrap();
        assert_eq!(plain, "User: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:");
    }

    #[test]
    fn no_history_renders_as_one_turn() {
        for f in [format(Some(CHATML)), format(None)] {
            assert_eq!(
                f.render_chat(Some("S"), &[], "U").unwrap(),
                f.render(Some("S"), "U").unwrap()
            );
        }
    }
}
