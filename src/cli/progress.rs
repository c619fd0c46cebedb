//! Progress bars on stderr: one bar per phase of a long run.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `msg`.
pub fn bar(len: usize, msg: &str) -> ProgressBar {
    let pb = styled(len, "{msg:>10} [{bar:30}] {pos}/{len} {elapsed}");
    pb.set_message(msg.to_string());
    pb
}

fn styled(len: usize, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// One bar for the phase in progress, replaced when the phase changes; cleared when dropped.
#[derive(Default)]
pub struct Phases {
    current: Option<(String, ProgressBar)>,
}

impl Phases {
    /// Report `done` of `total` in `phase`, with the last training loss where there is one.
    pub fn update(&mut self, phase: &str, done: usize, total: usize, loss: Option<f64>) {
        if self.current.as_ref().map(|(p, _)| p.as_str()) != Some(phase) {
            self.finish();
            let b = if phase == "train" {
                styled(
                    total,
                    "     train [{bar:30}] step {pos}/{len} {msg} {elapsed}",
                )
            } else {
                bar(total, phase)
            };
            self.current = Some((phase.to_string(), b));
        }
        if let Some((_, b)) = &self.current {
            b.set_position(done as u64);
            if let Some(l) = loss {
                b.set_message(format!("loss {l:.4}"));
            }
        }
    }

    /// Clear the bar in progress.
    pub fn finish(&mut self) {
        if let Some((_, b)) = self.current.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        self.finish();
    }
}
