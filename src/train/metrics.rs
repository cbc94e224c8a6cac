//! `<out>/metrics.jsonl`: one JSON object per optimiser step, flushed as it is written so that a
//! crash keeps every finished step.

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
        crate::fsutil::create_dir_all(dir)?;
        let path = dir.join("metrics.jsonl");
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
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
