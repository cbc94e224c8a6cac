//! Per-op wall-clock accounting (`rlhf bench --profile`): each op adds its elapsed time to a table
//! keyed by the op's name. Off by default; switching it on costs one `Instant::now()` pair per op
//! on the CPU. The wgpu backend records each dispatch under its entry point's name, waiting for
//! the device after every dispatch while profiling is on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<&'static str, (u64, f64)>> = Mutex::new(BTreeMap::new());

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Adds one call of `secs` seconds to `name`.
pub fn record(name: &'static str, secs: f64) {
    if let Ok(mut t) = TABLE.lock() {
        let e = t.entry(name).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }
}

pub fn reset() {
    if let Ok(mut t) = TABLE.lock() {
        t.clear();
    }
}

/// (op, calls, seconds), slowest first.
pub fn snapshot() -> Vec<(&'static str, u64, f64)> {
    let mut v: Vec<_> = TABLE.lock().map(|t| t.iter().map(|(k, (n, s))| (*k, *n, *s)).collect()).unwrap_or_default();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}

/// Times the scope it lives in when profiling is on.
pub struct OpTimer {
    name: &'static str,
    start: Option<Instant>,
}

impl OpTimer {
    #[inline]
    pub fn start(name: &'static str) -> Self {
        let start = ENABLED.load(Ordering::Relaxed).then(Instant::now);
        OpTimer { name, start }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if let Some(s) = self.start {
            let dt = s.elapsed().as_secs_f64();
            if let Ok(mut t) = TABLE.lock() {
                let e = t.entry(self.name).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += dt;
            }
        }
    }
}
