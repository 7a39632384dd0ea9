//! Progress on the terminal (indicatif) or as JSON lines (`--json`), and Ctrl-C.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

static CANCEL: AtomicBool = AtomicBool::new(false);
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// First Ctrl-C: stop cleanly at the next step. Second: leave now.
pub fn install_ctrlc() {
    let _ = ctrlc::set_handler(|| {
        CANCEL.store(true, Ordering::SeqCst);
        if PRESSES.fetch_add(1, Ordering::SeqCst) >= 1 {
            super::output::discard_pending();
            eprintln!("pie: stopped");
            std::process::exit(3);
        }
        eprintln!("pie: stopping (Ctrl-C again to quit at once)");
    });
}

pub struct CliProgress {
    json: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    last_json: Option<Instant>,
    what: String,
}

impl CliProgress {
    pub fn new(json: bool, what: &str) -> CliProgress {
        CliProgress { json, bar: None, started: Instant::now(), last_json: None, what: what.to_string() }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// A line for the user that does not tear the bar.
    pub fn note(&self, msg: &str) {
        if self.json {
            println!("{}", serde_json::json!({"event": "note", "message": msg}));
        } else if let Some(b) = &self.bar {
            b.println(format!("pie: {msg}"));
        } else {
            eprintln!("pie: {msg}");
        }
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl pie::Progress for CliProgress {
    fn update(&mut self, fraction: f64, text: &str) {
        if self.json {
            let now = Instant::now();
            let due = self.last_json.is_none_or(|t| now - t >= Duration::from_millis(200));
            if due || fraction >= 1.0 {
                self.last_json = Some(now);
                let f = if fraction < 0.0 { serde_json::Value::Null } else { serde_json::json!(fraction) };
                println!(
                    "{}",
                    serde_json::json!({"event": "progress", "task": self.what, "fraction": f, "text": text})
                );
            }
            return;
        }
        // Only work that lasts more than a second gets a bar.
        if self.bar.is_none() && self.started.elapsed() >= Duration::from_secs(1) {
            let b = ProgressBar::new(1000);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(self.what.clone());
            b.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some(b);
        }
        if let Some(b) = &self.bar {
            if fraction >= 0.0 {
                b.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
            }
            b.set_message(text.to_string());
        }
    }

    fn cancelled(&self) -> bool {
        CANCEL.load(Ordering::SeqCst)
    }
}
