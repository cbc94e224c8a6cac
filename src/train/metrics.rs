//! `<out>/metrics.jsonl`: one JSON object per optimiser step, flushed as it is written so that a
//! crash keeps every finished step; a resumed run keeps the lines its checkpoint covers.

use crate::error::{Error, Result};
use serde_json::Value;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        crate::io::fs::create_dir_all(dir)?;
        let path = dir.join("metrics.jsonl");
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsWriter { path, file })
    }

    /// Continues the metrics of a run resumed after `step`: the lines of `from` (a previous
    /// run's `metrics.jsonl`) with a `step` of at most `step` are kept — later steps and a line
    /// cut short by a crash are dropped — written to `<dir>/metrics.jsonl` atomically, and the
    /// file is opened for appending.
    pub fn resume(dir: &Path, from: &Path, step: usize) -> Result<Self> {
        crate::io::fs::create_dir_all(dir)?;
        let path = dir.join("metrics.jsonl");
        let text = match std::fs::read_to_string(from) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(from, e)),
        };
        let mut kept = String::new();
        for line in text.lines() {
            let keep = serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("step").and_then(Value::as_u64)).is_some_and(|s| s as usize <= step);
            if keep {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        crate::io::fs::atomic_write(&path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsWriter { path, file })
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|e| Error::file(&self.path, e.to_string()))?;
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
