//! The progress bar (indicatif) while a run lasts: requests done out of
//! `--requests`, or seconds out of `--duration`. Hidden when standard
//! output is not a terminal or with `--quiet`, so logs and tests stay clean.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::args::Stop;

/// How often the threads are polled and the bar updated (indicatif limits
/// its redraws on its own). Also bounds how long a finished run waits.
pub const POLL: Duration = Duration::from_millis(10);

/// The bar of one run.
pub struct Progress {
    bar: ProgressBar,
    stop: Stop,
    start: Instant,
}

impl Progress {
    /// A bar for a run bounded by `stop` that starts at `start`; drawn only
    /// if `visible`.
    #[must_use]
    pub fn new(stop: Stop, start: Instant, visible: bool) -> Progress {
        let (len, template) = match stop {
            Stop::Requests(n) => (n, "{bar:40} {pos}/{len} requests  {msg}"),
            Stop::Duration(d) => (u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "{bar:40} {msg}"),
        };
        let bar = if visible { ProgressBar::new(len) } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Progress { bar, stop, start }
    }

    /// Show `completed` replies so far.
    pub fn show(&self, completed: u64) {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { completed as f64 / secs } else { 0.0 };
        match self.stop {
            Stop::Requests(_) => self.bar.set_position(completed),
            Stop::Duration(_) => self.bar.set_position(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
        self.bar.set_message(format!("{completed} replies, {rate:.0}/s, {secs:.1} s"));
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
