//! The state file of a training run: a checkpoint of the run's whole state, saved atomically
//! and read back.
//!
//! A checkpoint is a folder `<out>/checkpoints/step-NNNNNNNN/` with `state.safetensors` (every
//! device buffer the run needs: weights, AdamW moments, value heads; f32, exact; written tensor
//! by tensor from the device buffers in bounded chunks, and read back memory-mapped, one tensor
//! at a time, so neither holds a second copy of the run's state) and
//! `state.json` (the command, the step, and host state: RNG states, data position, KL
//! controller, running reward moments, counters). It is written into a temporary sibling folder,
//! every file fsynced, then renamed into place, and only then does `<out>/checkpoints/latest`
//! (itself written atomically) point at it; older checkpoints are removed after that, keeping
//! the last [`KEEP`]. A process killed at any moment therefore leaves either the previous or the
//! new checkpoint complete and `latest` naming a complete one.
//!
//! What a resumed run checks and continues (settings, metrics) is `train::resume`'s.

use crate::backend::ops::Backend;
use crate::error::{Error, Result};
use crate::io::fs as fsutil;
use crate::io::safetensors_out::{self, OutTensor, ReadRange};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
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

/// Where a checkpoint tensor's values come from when it is written.
enum Source<'a> {
    /// a host vector, kept until the write
    Host(Vec<f32>),
    /// a device buffer, read a bounded range at a time during the write
    Device(ReadRange<'a>),
}

/// What a checkpoint is being filled with. Device buffers are only named here (borrowed for
/// `'a`); their values are read when the checkpoint is written.
#[derive(Default)]
pub struct StateWriter<'a> {
    tensors: Vec<(String, usize, Source<'a>)>,
    scalars: Map<String, Value>,
    /// keeps nothing: the writer of a rank that takes part in a checkpoint (ZeRO-1's moments
    /// travel to rank 0) but does not write it
    discard: bool,
}

impl<'a> StateWriter<'a> {
    pub fn new() -> Self {
        StateWriter { tensors: Vec::new(), scalars: Map::new(), discard: false }
    }

    /// A writer that keeps nothing (see `discard`).
    pub fn discarding() -> Self {
        StateWriter { discard: true, ..Self::new() }
    }

    /// Adds `bufs` as tensors `<prefix>.0`, `<prefix>.1`, ..., read from the device when the
    /// checkpoint is written.
    pub fn bufs<B: Backend>(&mut self, be: &'a B, prefix: &str, bufs: &'a [B::Buf]) -> Result<()> {
        if self.discard {
            return Ok(());
        }
        for (i, b) in bufs.iter().enumerate() {
            let read: ReadRange<'a> = Box::new(move |start, len| be.download_range(b, start, len));
            self.tensors.push((format!("{prefix}.{i}"), be.len(b), Source::Device(read)));
        }
        Ok(())
    }

    /// A host tensor stored as it is (e.g. cached reference log-probs).
    pub fn tensor(&mut self, name: &str, data: Vec<f32>) {
        if !self.discard {
            self.tensors.push((name.to_string(), data.len(), Source::Host(data)));
        }
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
        let written = self.write_into(&tmp, command, step).and_then(|()| {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))
        });
        if let Err(e) = written {
            // a failed save (a full disk, say) leaves nothing behind; the previous checkpoint
            // and `latest` are untouched
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        sync_dir(&root);
        fsutil::atomic_write(&root.join(LATEST_FILE), format!("{name}\n").as_bytes())?;
        prune(&root, &name);
        Ok(dir)
    }
}

impl StateWriter<'_> {
    /// Writes the checkpoint's two files into the (temporary) folder `tmp`, fsynced.
    fn write_into(self, tmp: &Path, command: &str, step: usize) -> Result<()> {
        fsutil::create_dir_all(tmp)?;
        let tensors: Vec<OutTensor<'_>> = self
            .tensors
            .iter()
            .map(|(name, len, source)| {
                let read: ReadRange<'_> = match source {
                    Source::Host(data) => safetensors_out::host_reader(data),
                    Source::Device(read) => Box::new(move |start, n| read(start, n)),
                };
                OutTensor { name: name.clone(), shape: vec![*len], dtype: Dtype::F32, read }
            })
            .collect();
        safetensors_out::write_to(&tmp.join(STATE_TENSORS), &tensors, None)?;
        drop(tensors);
        let mut state = self.scalars;
        state.insert("command".into(), Value::from(command));
        state.insert("step".into(), Value::from(step));
        let json = serde_json::to_vec_pretty(&Value::Object(state)).map_err(|e| Error::invalid(format!("checkpoint state: {e}")))?;
        write_synced(&tmp.join(STATE_JSON), &json)?;
        sync_dir(tmp);
        Ok(())
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

/// The complete checkpoint folder (`step-N` with its `state.json`; a folder gets that name only
/// once both files are written) of the highest step in `root`.
fn newest_complete_checkpoint(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: usize = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE_JSON).is_file().then(|| (step, e.path()))
        })
        .max_by_key(|(step, _)| *step)
        .map(|(_, dir)| dir)
}

/// A checkpoint read back: `state.json` parsed, `state.safetensors` memory-mapped and decoded one
/// tensor at a time as the run restores it.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub step: usize,
    pub(crate) state: Map<String, Value>,
    map: Mmap,
    /// name -> byte range of its f32 values in `map`
    tensors: HashMap<String, (usize, usize)>,
}

impl Checkpoint {
    /// The checkpoint folder `path` names: a run folder (its `checkpoints/latest`) or a
    /// checkpoint folder itself.
    pub fn locate(path: &Path) -> Result<PathBuf> {
        if path.join(STATE_JSON).is_file() {
            return Ok(path.to_path_buf());
        }
        let latest = path.join(CHECKPOINTS_DIR).join(LATEST_FILE);
        let read = std::fs::read_to_string(&latest);
        // a process that ended between a checkpoint's rename and the update of `latest` left a
        // complete `step-*` folder that `latest` does not name (yet): the newest such folder
        // stands in when `latest` is missing or names no complete checkpoint
        let newest_complete = || newest_complete_checkpoint(&path.join(CHECKPOINTS_DIR));
        match read {
            Ok(name) => {
                let dir = path.join(CHECKPOINTS_DIR).join(name.trim());
                if dir.join(STATE_JSON).is_file() {
                    Ok(dir)
                } else {
                    newest_complete().ok_or_else(|| Error::file(&latest, format!("names {}, which is not a complete checkpoint", dir.display())))
                }
            }
            Err(_) if !path.exists() => Err(Error::file(path, "--resume: no such folder")),
            Err(_) => newest_complete().ok_or_else(|| {
                Error::file(
                    path,
                    format!("--resume: no checkpoint here (neither {STATE_JSON} nor {CHECKPOINTS_DIR}/{LATEST_FILE}); save some with --save-every N"),
                )
            }),
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
        let file = std::fs::File::open(&t_path).map_err(|e| Error::io(&t_path, e))?;
        // SAFETY: checkpoint files are written once into a temporary folder and renamed into
        // place, never modified in place, so the mapping does not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&t_path, e))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| Error::file(&t_path, format!("not a valid safetensors file: {e}")))?;
        let base = map.as_ptr() as usize;
        let mut tensors = HashMap::new();
        for (name, view) in st.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::tensor(&t_path, name, "expected F32"));
            }
            // checked in place, without a decoded copy
            let bad = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).enumerate().find(|(_, x)| !x.is_finite());
            if let Some((i, x)) = bad {
                return Err(Error::tensor(
                    &t_path,
                    name,
                    format!("holds a non-finite value ({x} at index {i}): this checkpoint cannot continue a run; resume from an earlier one"),
                ));
            }
            let start = view.data().as_ptr() as usize - base;
            tensors.insert(name.to_string(), (start, start + view.data().len()));
        }
        drop(st);
        Ok(Checkpoint { dir, step, state, map, tensors })
    }

    /// The values of tensor `name`, decoded from the mapping.
    fn values(&self, name: &str) -> Option<Vec<f32>> {
        let &(start, end) = self.tensors.get(name)?;
        crate::io::stored_dtype::to_f32(&self.map[start..end], Dtype::F32)
    }

    /// Uploads tensors `<prefix>.i` into `bufs`, checking that every one is there with the
    /// buffer's size.
    pub fn restore_bufs<B: Backend>(&self, be: &B, prefix: &str, bufs: &mut [B::Buf]) -> Result<()> {
        for (i, b) in bufs.iter_mut().enumerate() {
            self.restore_buf(be, &format!("{prefix}.{i}"), b)?;
        }
        self.check_count(prefix, bufs.len())
    }

    /// Writes tensor `name` into `buf`, which must have as many values.
    pub fn restore_buf<B: Backend>(&self, be: &B, name: &str, buf: &mut B::Buf) -> Result<()> {
        let path = self.dir.join(STATE_TENSORS);
        let &(start, end) = self.tensors.get(name).ok_or_else(|| Error::tensor(&path, name, "missing from the checkpoint (a different model or command?)"))?;
        let len = (end - start) / 4;
        if len != be.len(buf) {
            return Err(Error::tensor(&path, name, format!("has {len} values but this run needs {} (a different model?)", be.len(buf))));
        }
        let data = self.values(name).ok_or_else(|| Error::tensor(&path, name, "cannot be decoded"))?;
        be.write(buf, &data)
    }

    /// Fails when the checkpoint holds a tensor `<prefix>.<n>`: more than the `n` this run has.
    pub fn check_count(&self, prefix: &str, n: usize) -> Result<()> {
        if self.tensors.contains_key(&format!("{prefix}.{n}")) {
            return Err(Error::tensor(self.dir.join(STATE_TENSORS), format!("{prefix}.{n}"), "is one tensor more than this run has (a different model?)"));
        }
        Ok(())
    }

    /// The host tensor stored under `name` with [`StateWriter::tensor`].
    pub fn tensor(&self, name: &str) -> Result<Vec<f32>> {
        let path = self.dir.join(STATE_TENSORS);
        self.values(name).ok_or_else(|| Error::tensor(&path, name, "missing from the checkpoint"))
    }

    /// The host value stored under `key`.
    pub fn value<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let path = self.dir.join(STATE_JSON);
        let v = self.state.get(key).ok_or_else(|| Error::file(&path, format!("no `{key}` in this checkpoint")))?;
        serde_json::from_value(v.clone()).map_err(|e| Error::file(&path, format!("`{key}`: {e}")))
    }

    /// The run folder this checkpoint belongs to (`<run>/checkpoints/step-N`), if it is inside one.
    pub fn run_dir(&self) -> Option<PathBuf> {
        let parent = self.dir.parent()?;
        (parent.file_name()? == CHECKPOINTS_DIR).then(|| parent.parent().map(Path::to_path_buf)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A run that ended between a checkpoint's rename and the update of `latest` resumes from
    /// the newest complete `step-*` folder; a half-written temporary folder is never chosen.
    #[test]
    fn a_missing_or_stale_latest_falls_back_to_the_newest_complete_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        StateWriter::new().save(run, "sft", 100).unwrap();
        StateWriter::new().save(run, "sft", 200).unwrap();
        let root = run.join(CHECKPOINTS_DIR);
        assert_eq!(Checkpoint::locate(run).unwrap(), root.join("step-00000200"));
        // a temporary folder of a later save, cut short, and `latest` gone
        std::fs::create_dir_all(root.join(".step-00000300.tmp7")).unwrap();
        std::fs::remove_file(root.join(LATEST_FILE)).unwrap();
        assert_eq!(Checkpoint::locate(run).unwrap(), root.join("step-00000200"));
        // `latest` naming a folder that is gone
        std::fs::write(root.join(LATEST_FILE), "step-00000400\n").unwrap();
        assert_eq!(Checkpoint::locate(run).unwrap(), root.join("step-00000200"));
        // nothing complete at all: the error names `latest`
        std::fs::remove_dir_all(root.join("step-00000200")).unwrap();
        std::fs::remove_dir_all(root.join("step-00000100")).unwrap();
        let e = Checkpoint::locate(run).unwrap_err().to_string();
        assert!(e.contains("latest") && e.contains("not a complete checkpoint"), "{e}");
    }


    /// A checkpoint whose tensors hold NaN is refused on load, naming the tensor.
    #[test]
    fn a_checkpoint_with_non_finite_values_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = StateWriter::new();
        w.tensor("weights.3", vec![1.0, f32::NAN]);
        let dir = w.save_run(tmp.path(), "sft", 1, &json!({}), &json!({})).unwrap();
        let err = Checkpoint::load(&dir, "sft").err().unwrap().to_string();
        assert!(err.contains("weights.3") && err.contains("non-finite"), "{err}");
    }

    /// A save that fails leaves no temporary folder and keeps the previous checkpoint as latest.
    #[test]
    fn a_failed_save_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        StateWriter::new().save_run(tmp.path(), "sft", 1, &json!({}), &json!({})).unwrap();
        // a folder where the checkpoint's state.json would go makes the write fail
        let root = tmp.path().join(CHECKPOINTS_DIR);
        let blocker = root.join(format!(".step-00000002.tmp{}", std::process::id()));
        let mut w = StateWriter::new();
        w.tensor("x", vec![1.0]);
        std::fs::create_dir_all(blocker.join(STATE_TENSORS).join("occupied")).unwrap();
        // `save` clears an old temporary of its own name first, so block the rename target instead
        let target = root.join("step-00000002");
        std::fs::write(&target, "a file, not a folder").unwrap();
        let result = w.save_run(tmp.path(), "sft", 2, &json!({}), &json!({}));
        assert!(result.is_err());
        assert!(!blocker.exists(), "the temporary folder survived a failed save");
        assert_eq!(std::fs::read_to_string(root.join(LATEST_FILE)).unwrap().trim(), "step-00000001");
    }
}
