//! GIMP's progress bar for the engine's progress reports: the fraction done,
//! and a text with the stage, the step and the time left.
//!
//! Every call is a round trip over the wire to GIMP, so updates are throttled.
//! libgimp is not thread-safe: reports from any thread but the one that runs
//! the procedure are dropped (the next report from the main thread catches up).
//!
//! Cancelling: when the user presses the progress bar's cancel button, GIMP
//! closes the plug-in's connection and kills the plug-in process (GIMP 3.0
//! app/plug-in/gimpplugin-progress.c). Nothing is written to the image before
//! the engine has finished, so the image stays as it was; a trainer started
//! by the engine is told to stop when its parent dies.

use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

const MIN_INTERVAL: Duration = Duration::from_millis(150);

pub struct GimpProgress {
    owner: ThreadId,
    started: Instant,
    last_sent: Option<Instant>,
    last_fraction: f64,
    last_text: String,
    /// What the whole run is (e.g. "Learning scene 'beach'"), shown before
    /// the engine's own text.
    title: String,
}

impl GimpProgress {
    pub fn start(title: &str) -> GimpProgress {
        gimp::progress_init(title);
        GimpProgress {
            owner: thread::current().id(),
            started: Instant::now(),
            last_sent: None,
            last_fraction: 0.0,
            last_text: String::new(),
            title: title.to_string(),
        }
    }

    pub fn update(&mut self, fraction: f64, text: &str) {
        if thread::current().id() != self.owner {
            return;
        }
        // A negative fraction means "only the text changed".
        let fraction =
            if fraction.is_finite() && fraction >= 0.0 { fraction.min(1.0) } else { self.last_fraction };
        let now = Instant::now();
        let due = self.last_sent.is_none_or(|t| now.duration_since(t) >= MIN_INTERVAL);
        if !due && text == self.last_text && fraction < 1.0 {
            return;
        }
        let line = status_line(&self.title, text, fraction, now.duration_since(self.started));
        gimp::progress_set_text(Some(&line));
        if (fraction - self.last_fraction).abs() > f64::EPSILON || self.last_sent.is_none() {
            gimp::progress_update(fraction);
        }
        self.last_sent = Some(now);
        self.last_fraction = fraction;
        self.last_text = text.to_string();
    }

    pub fn finish(&mut self) {
        if thread::current().id() == self.owner {
            gimp::progress_update(1.0);
            gimp::progress_end();
        }
    }
}

/// "Learning scene 'beach': step 120/400 — about 2 min 10 s left".
pub fn status_line(title: &str, text: &str, fraction: f64, elapsed: Duration) -> String {
    let mut line = title.to_string();
    if !text.is_empty() {
        line.push_str(": ");
        line.push_str(text);
    }
    // The engine's text may already say how long is left.
    if !text.contains(" left") && fraction > 0.01 && fraction < 1.0 && elapsed.as_secs_f64() > 2.0 {
        let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction;
        line.push_str(" — about ");
        line.push_str(&human_duration(left));
        line.push_str(" left");
    }
    line
}

pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_with_eta() {
        let l = status_line("Adding 'dog'", "step 5/20", 0.25, Duration::from_secs(10));
        assert_eq!(l, "Adding 'dog': step 5/20 — about 30 s left");
        let l = status_line("Adding 'dog'", "step 1/20, 5 s left", 0.05, Duration::from_secs(10));
        assert_eq!(l, "Adding 'dog': step 1/20, 5 s left");
        assert_eq!(status_line("T", "", 0.5, Duration::from_secs(1)), "T");
        assert_eq!(human_duration(130.0), "2 min 10 s");
        assert_eq!(human_duration(7300.0), "2 h 1 min");
    }
}
