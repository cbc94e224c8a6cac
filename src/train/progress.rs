//! A one-line progress bar with ETA on stderr, drawn only when stderr is a terminal (logs and CI
//! get the periodic plain lines the commands print instead).

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    total: usize,
    start: Instant,
    enabled: bool,
    label: String,
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    pub fn new(label: &str, total: usize) -> Self {
        Progress { total, start: Instant::now(), enabled: std::io::stderr().is_terminal(), label: label.to_string() }
    }

    pub fn is_terminal(&self) -> bool {
        self.enabled
    }

    /// Redraws the bar after `done` of `total` steps, with a short status message.
    pub fn update(&self, done: usize, msg: &str) {
        if !self.enabled {
            return;
        }
        let frac = done as f64 / self.total.max(1) as f64;
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if done > 0 { elapsed / done as f64 * (self.total - done.min(self.total)) as f64 } else { 0.0 };
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        eprint!("\r\x1b[2K{} [{bar}] {done}/{} {msg} elapsed {} eta {}", self.label, self.total, hms(elapsed), hms(eta));
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
