//! A progress bar on stderr for long commands (`retrain`, `replay`), drawn only when stderr
//! is a terminal: pipes, logs and `--json` consumers see nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` steps with a message naming the current one.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar on stderr, hidden unless stderr is a terminal.
    pub fn new(total: u64) -> Bar {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bar::with_target(total, target)
    }

    /// A bar drawing to `target` (tests draw to a hidden or in-memory target).
    pub fn with_target(total: u64, target: ProgressDrawTarget) -> Bar {
        let pb = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) = ProgressStyle::with_template(
            "presize: {spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        if !pb.is_hidden() {
            // Keep the spinner and clock moving while one long step runs.
            pb.enable_steady_tick(Duration::from_millis(120));
        }
        Bar(pb)
    }

    /// `done` steps finished; `what` runs now.
    pub fn set(&self, done: u64, what: &str) {
        self.0.set_position(done);
        self.0.set_message(what.to_string());
    }

    /// Remove the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // On an error return too: never leave a half-drawn line behind.
        if !self.0.is_finished() {
            self.0.finish_and_clear();
        }
    }
}
