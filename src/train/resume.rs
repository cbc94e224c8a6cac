//! Exact resume: checkpoints of a training run's whole state, saved atomically and read back to
//! continue the run as if it had never stopped.
//!
//! A checkpoint is a folder `<out>/checkpoints/step-NNNNNNNN/` with `state.safetensors` (every
//! device buffer the run needs: weights, AdamW moments, value heads; f32, exact) and
//! `state.json` (the command, the step, and host state: RNG states, data position, KL
//! controller, running reward moments, counters). It is written into a temporary sibling folder,
//! every file fsynced, then renamed into place, and only then does `<out>/checkpoints/latest`
//! (itself written atomically) point at it; older checkpoints are removed after that, keeping
//! the last [`KEEP`]. A process killed at any moment therefore leaves either the previous or the
//! new checkpoint complete and `latest` naming a complete one.
//!
//! On resume, `<out>/metrics.jsonl` keeps the lines of the steps the checkpoint covers (a line
//! cut by the kill, or steps done after the checkpoint, are dropped) and the run appends from
//! there, so the metrics of a resumed run equal those of an uninterrupted one.

use crate::backend::ops::Backend;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::checkpoint::F32View;
use crate::train::MetricsWriter;
use safetensors::SafeTensors;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const LATEST_FILE: &str = "latest";
pub const STATE_JSON: &str = "state.json";
pub const STATE_TENSORS: &str = "state.safetensors";
/// Checkpoints kept in a run's folder (the newest ones).
pub const KEEP: usize = 2;

/// The default of `--max-bad-steps`.
pub const DEFAULT_MAX_BAD_STEPS: usize = 3;

/// Saving and resuming options shared by the training commands.
#[derive(Clone, Debug)]
pub struct RunControl {
    /// save a checkpoint every N optimiser steps (0: only at the end)
    pub save_every: usize,
    /// a run folder (or one of its checkpoints) to continue
    pub resume: Option<PathBuf>,
    /// non-finite steps in a row that are skipped before the run stops
    pub max_bad_steps: usize,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl { save_every: 0, resume: None, max_bad_steps: DEFAULT_MAX_BAD_STEPS }
    }
}

impl RunControl {
    /// True when a checkpoint is due after `step` of `total`.
    pub fn due(&self, step: usize, total: usize) -> bool {
        step == total || (self.save_every > 0 && step % self.save_every == 0)
    }
}

/// What a checkpoint is being filled with.
#[derive(Default)]
pub struct StateWriter {
    tensors: Vec<(String, Vec<f32>)>,
    scalars: Map<String, Value>,
}

impl StateWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Downloads `bufs` as tensors `<prefix>.0`, `<prefix>.1`, ...
    pub fn bufs<B: Backend>(&mut self, be: &B, prefix: &str, bufs: &[B::Buf]) -> Result<()> {
        for (i, b) in bufs.iter().enumerate() {
            self.tensors.push((format!("{prefix}.{i}"), be.download(b)?));
        }
        Ok(())
    }

    /// A host tensor stored as it is (e.g. cached reference log-probs).
    pub fn tensor(&mut self, name: &str, data: Vec<f32>) {
        self.tensors.push((name.to_string(), data));
    }

    /// A host value stored in `state.json` under `key`.
    pub fn value(&mut self, key: &str, v: &impl Serialize) -> Result<()> {
        let v = serde_json::to_value(v).map_err(|e| Error::invalid(format!("checkpoint value {key}: {e}")))?;
        self.scalars.insert(key.to_string(), v);
        Ok(())
    }

    /// Adds a command's host state (`run`) and its fingerprint (see
    /// [`Checkpoint::check_fingerprint`]) and saves (see [`Self::save`]).
    pub fn save_run(mut self, run_dir: &Path, command: &str, step: usize, run: &impl Serialize, fingerprint: &Value) -> Result<PathBuf> {
        self.value("run", run)?;
        self.value("fingerprint", fingerprint)?;
        self.save(run_dir, command, step)
    }

    /// Writes the checkpoint of `command` after `step` into `<run_dir>/checkpoints/` (see the
    /// module comment); returns its folder.
    pub fn save(self, run_dir: &Path, command: &str, step: usize) -> Result<PathBuf> {
        let root = run_dir.join(CHECKPOINTS_DIR);
        fsutil::create_dir_all(&root)?;
        let name = format!("step-{step:08}");
        let dir = root.join(&name);
        let tmp = root.join(format!(".{name}.tmp{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fsutil::create_dir_all(&tmp)?;
        let views: Vec<(String, F32View<'_>)> = self.tensors.iter().map(|(n, d)| (n.clone(), F32View { shape: vec![d.len()], data: d })).collect();
        let bytes = safetensors::serialize(views, None).map_err(|e| Error::file(tmp.join(STATE_TENSORS), format!("cannot serialize: {e}")))?;
        write_synced(&tmp.join(STATE_TENSORS), &bytes)?;
        let mut state = self.scalars;
        state.insert("command".into(), Value::from(command));
        state.insert("step".into(), Value::from(step));
        let json = serde_json::to_vec_pretty(&Value::Object(state)).map_err(|e| Error::invalid(format!("checkpoint state: {e}")))?;
        write_synced(&tmp.join(STATE_JSON), &json)?;
        sync_dir(&tmp);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&root);
        fsutil::atomic_write(&root.join(LATEST_FILE), format!("{name}\n").as_bytes())?;
        prune(&root, &name);
        Ok(dir)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes all but the newest [`KEEP`] checkpoints (never `current`) and stale temporaries.
fn prune(root: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut steps: Vec<String> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".step-") && name.contains(".tmp") && !name.ends_with(&format!(".tmp{}", std::process::id())) {
            let _ = std::fs::remove_dir_all(e.path());
        } else if name.starts_with("step-") {
            steps.push(name);
        }
    }
    steps.sort();
    let n = steps.len();
    for name in steps.into_iter().take(n.saturating_sub(KEEP)) {
        if name != current {
            let _ = std::fs::remove_dir_all(root.join(name));
        }
    }
}

/// Fingerprint keys added after checkpoints were first written, with the setting an older
/// checkpoint's run had: `sync_every` 1 (the rollout engine read back after every decode step).
pub const FINGERPRINT_DEFAULTS: &[(&str, u64)] = &[("sync_every", 1)];

/// A checkpoint read back.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub step: usize,
    state: Map<String, Value>,
    tensors: HashMap<String, Vec<f32>>,
}

impl Checkpoint {
    /// The checkpoint folder `path` names: a run folder (its `checkpoints/latest`) or a
    /// checkpoint folder itself.
    pub fn locate(path: &Path) -> Result<PathBuf> {
        if path.join(STATE_JSON).is_file() {
            return Ok(path.to_path_buf());
        }
        let latest = path.join(CHECKPOINTS_DIR).join(LATEST_FILE);
        match std::fs::read_to_string(&latest) {
            Ok(name) => {
                let dir = path.join(CHECKPOINTS_DIR).join(name.trim());
                if dir.join(STATE_JSON).is_file() {
                    Ok(dir)
                } else {
                    Err(Error::file(&latest, format!("names {}, which is not a complete checkpoint", dir.display())))
                }
            }
            Err(_) if !path.exists() => Err(Error::file(path, "--resume: no such folder")),
            Err(_) => Err(Error::file(
                path,
                format!("--resume: no checkpoint here (neither {STATE_JSON} nor {CHECKPOINTS_DIR}/{LATEST_FILE}); save some with --save-every N"),
            )),
        }
    }

    /// Reads the checkpoint `path` names (see [`Self::locate`]), which must come from `command`.
    pub fn load(path: &Path, command: &str) -> Result<Checkpoint> {
        let dir = Self::locate(path)?;
        let json_path = dir.join(STATE_JSON);
        let text = std::fs::read(&json_path).map_err(|e| Error::io(&json_path, e))?;
        let state: Map<String, Value> = serde_json::from_slice(&text).map_err(|e| Error::file(&json_path, format!("not a valid checkpoint state: {e}")))?;
        let saved_by = state.get("command").and_then(Value::as_str).unwrap_or("?");
        if saved_by != command {
            return Err(Error::file(&json_path, format!("this checkpoint was saved by `rlhf {saved_by}`, not `rlhf {command}`")));
        }
        let step = state.get("step").and_then(Value::as_u64).ok_or_else(|| Error::file(&json_path, "no `step`"))? as usize;
        let t_path = dir.join(STATE_TENSORS);
        let bytes = std::fs::read(&t_path).map_err(|e| Error::io(&t_path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::file(&t_path, format!("not a valid safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.iter() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(Error::tensor(&t_path, name, "expected F32"));
            }
            tensors.insert(name.to_string(), crate::tensor::to_f32(view.data(), crate::tensor::DType::F32));
        }
        Ok(Checkpoint { dir, step, state, tensors })
    }

    /// The checkpoint of a `command` run that `--resume path` names, after checking that the
    /// settings a resumed run must share (its `fingerprint`) are this run's; says so on stderr.
    pub fn resume(path: &Path, command: &str, fingerprint: &Value) -> Result<Checkpoint> {
        let ck = Self::load(path, command)?;
        ck.check_fingerprint(fingerprint)?;
        eprintln!("{command}: resuming after step {} from {}", ck.step, ck.dir.display());
        Ok(ck)
    }

    /// The metrics of the resumed run, continued in `<out>/metrics.jsonl` from this checkpoint's
    /// run folder (see [`MetricsWriter::resume`]).
    pub fn continue_metrics(&self, out: &Path) -> Result<MetricsWriter> {
        let from = self.run_dir().unwrap_or_else(|| out.to_path_buf()).join("metrics.jsonl");
        MetricsWriter::resume(out, &from, self.step)
    }

    /// Uploads tensors `<prefix>.i` into `bufs`, checking that every one is there with the
    /// buffer's size.
    pub fn restore_bufs<B: Backend>(&self, be: &B, prefix: &str, bufs: &mut [B::Buf]) -> Result<()> {
        let path = self.dir.join(STATE_TENSORS);
        for (i, b) in bufs.iter_mut().enumerate() {
            let name = format!("{prefix}.{i}");
            let data = self.tensors.get(&name).ok_or_else(|| Error::tensor(&path, &name, "missing from the checkpoint (a different model or command?)"))?;
            if data.len() != be.len(b) {
                return Err(Error::tensor(&path, &name, format!("has {} values but this run needs {} (a different model?)", data.len(), be.len(b))));
            }
            be.write(b, data)?;
        }
        if self.tensors.contains_key(&format!("{prefix}.{}", bufs.len())) {
            return Err(Error::tensor(&path, format!("{prefix}.{}", bufs.len()), "is one tensor more than this run has (a different model?)"));
        }
        Ok(())
    }

    /// The host tensor stored under `name` with [`StateWriter::tensor`].
    pub fn tensor(&self, name: &str) -> Result<&[f32]> {
        let path = self.dir.join(STATE_TENSORS);
        self.tensors.get(name).map(Vec::as_slice).ok_or_else(|| Error::tensor(&path, name, "missing from the checkpoint"))
    }

    /// The host value stored under `key`.
    pub fn value<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let path = self.dir.join(STATE_JSON);
        let v = self.state.get(key).ok_or_else(|| Error::file(&path, format!("no `{key}` in this checkpoint")))?;
        serde_json::from_value(v.clone()).map_err(|e| Error::file(&path, format!("`{key}`: {e}")))
    }

    /// Checks that the settings a run must share with the one it continues (saved with
    /// `value("fingerprint", ..)`, an object of flag names) equal `now`'s.
    /// A key that checkpoints written before it existed lack is read as the value their runs had
    /// ([`FINGERPRINT_DEFAULTS`]), so those runs still resume with the equivalent setting.
    pub fn check_fingerprint(&self, now: &Value) -> Result<()> {
        let saved: Value = self.value("fingerprint")?;
        for (key, value) in now.as_object().into_iter().flatten() {
            let legacy = || FINGERPRINT_DEFAULTS.iter().find(|(k, _)| k == key).map(|&(_, v)| Value::from(v));
            let had = saved.get(key).cloned().or_else(legacy).unwrap_or(Value::Null);
            if &had != value {
                return Err(Error::invalid(format!(
                    "--resume {}: the checkpoint's run used --{} {had}, this one {value}; resume with the same settings",
                    self.dir.display(),
                    key.replace('_', "-"),
                )));
            }
        }
        Ok(())
    }

    /// The run folder this checkpoint belongs to (`<run>/checkpoints/step-N`), if it is inside one.
    pub fn run_dir(&self) -> Option<PathBuf> {
        let parent = self.dir.parent()?;
        (parent.file_name()? == CHECKPOINTS_DIR).then(|| parent.parent().map(Path::to_path_buf)).flatten()
    }
}

/// The newest complete checkpoint of the run in `out`, if any (for error messages).
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    Checkpoint::locate(out).ok().filter(|d| d.starts_with(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A checkpoint written before `sync_every` joined the fingerprint resumes with
    /// `--sync-every 1` (what its run did) and is refused with any other value; a key the saved
    /// fingerprint has is compared as saved.
    #[test]
    fn a_fingerprint_key_older_checkpoints_lack_reads_as_their_setting() {
        let tmp = tempfile::tempdir().unwrap();
        let old = json!({"batch_size": 4});
        let dir = StateWriter::new().save_run(tmp.path(), "ppo", 3, &json!({}), &old).unwrap();
        let ck = Checkpoint::load(&dir, "ppo").unwrap();
        ck.check_fingerprint(&json!({"batch_size": 4, "sync_every": 1})).unwrap();
        let err = ck.check_fingerprint(&json!({"batch_size": 4, "sync_every": 8})).unwrap_err().to_string();
        assert!(err.contains("--sync-every 1") && err.contains("this one 8"), "{err}");
        let new = json!({"batch_size": 4, "sync_every": 8});
        let dir = StateWriter::new().save_run(&tmp.path().join("new"), "ppo", 3, &json!({}), &new).unwrap();
        let ck = Checkpoint::load(&dir, "ppo").unwrap();
        ck.check_fingerprint(&new).unwrap();
        assert!(ck.check_fingerprint(&json!({"batch_size": 4, "sync_every": 1})).is_err());
        assert!(ck.check_fingerprint(&json!({"batch_size": 5, "sync_every": 8})).is_err());
    }
}
