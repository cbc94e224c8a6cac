//! Exact resume: what a run started with `--resume` checks and continues. The checkpoint it
//! reads is a [`Checkpoint`] (see `model::state_file`); the settings a resumed run must share
//! with the one it continues are compared in full, and `<out>/metrics.jsonl` keeps the lines of
//! the steps the checkpoint covers (a line cut by the kill, or steps done after the checkpoint,
//! are dropped) so that the metrics of a resumed run equal those of an uninterrupted one.

use crate::error::{Error, Result};
pub use crate::model::state_file::{Checkpoint, StateWriter, CHECKPOINTS_DIR, KEEP, LATEST_FILE, STATE_JSON, STATE_TENSORS};
use crate::train::run_dir::{self, OutPolicy};
use crate::train::MetricsWriter;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The default of `--max-bad-steps`.
pub const DEFAULT_MAX_BAD_STEPS: usize = 3;

/// Saving and resuming options shared by the training commands (the command line flattens
/// them into each training command's flags; the field comments are the flags' help).
#[derive(Clone, Debug, clap::Args)]
pub struct RunControl {
    /// Save a checkpoint of the whole run state (weights, optimiser, RNG, data position) into
    /// <out>/checkpoints every N steps; one is always saved at the end (0 = only then)
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue a run: its output folder (the latest checkpoint) or a checkpoint folder
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Steps in a row with a non-finite loss or gradient that are skipped before the run stops
    #[arg(long, default_value_t = DEFAULT_MAX_BAD_STEPS)]
    pub max_bad_steps: usize,
    /// Replace the run that --out holds (its metrics, checkpoints and model are deleted once
    /// this run's inputs have been read and checked); without it such a folder is refused
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// ZeRO stage of a data-parallel run: 0 keeps the whole AdamW state on every rank, 1 shards
    /// the moments over the ranks (each tensor's on one rank, which broadcasts its new weights
    /// after each step); the same results either way, and checkpoints resume under either
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub zero: u8,
    /// The dtype of the saved model's weights: auto keeps the dtype the model was read in (a bf16
    /// or f16 checkpoint is saved as such, as transformers does; a new model as f32); run-state
    /// checkpoints (master weights, optimiser) are always f32
    #[arg(long, value_enum, default_value_t = SaveDtype::Auto)]
    pub save_dtype: SaveDtype,
    /// the resolved configuration, written as `<out>/run.toml` when the run claims its folder
    #[arg(skip)]
    pub run_toml: Option<String>,
    /// every setting that changes the run's result (flags, digests of the data and model files),
    /// kept in each checkpoint and compared in full on `--resume`; `None` checks only the
    /// trainer's own fingerprint
    #[arg(skip)]
    pub settings: Option<Map<String, Value>>,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            save_every: 0,
            resume: None,
            max_bad_steps: DEFAULT_MAX_BAD_STEPS,
            overwrite: false,
            zero: 0,
            save_dtype: SaveDtype::Auto,
            run_toml: None,
            settings: None,
        }
    }
}

/// The dtype a finished run saves its model's weights in (`--save-dtype`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveDtype {
    /// the dtype the model's weights were read in (f32 for a new model)
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl SaveDtype {
    /// The stored dtype for a model read in `source`.
    pub fn resolve(self, source: safetensors::Dtype) -> safetensors::Dtype {
        use safetensors::Dtype;
        match self {
            SaveDtype::Auto if matches!(source, Dtype::BF16 | Dtype::F16) => source,
            SaveDtype::Auto | SaveDtype::F32 => Dtype::F32,
            SaveDtype::Bf16 => Dtype::BF16,
            SaveDtype::F16 => Dtype::F16,
        }
    }
}

/// The fingerprint key that holds [`RunControl::settings`].
pub const SETTINGS_KEY: &str = "settings";

impl RunControl {
    /// The control of a run that replaces whatever its folder holds: the demo's stages, whose
    /// folders lie inside the demo's own.
    pub fn replacing() -> Self {
        RunControl { overwrite: true, ..RunControl::default() }
    }

    /// `own` (a trainer's fingerprint object) with [`Self::settings`] added under `settings`.
    pub fn fingerprint(&self, own: Value) -> Value {
        let mut v = own;
        if let (Some(obj), Some(settings)) = (v.as_object_mut(), &self.settings) {
            obj.insert(SETTINGS_KEY.into(), Value::Object(settings.clone()));
        }
        v
    }

    /// The start of a run writing into `out`: the checkpoint `--resume` names, after checking
    /// its command and `fingerprint` (see [`Self::fingerprint`]), then the claim of `out`
    /// ([`run_dir::claim`]: checked again, the old run's state removed under `--overwrite`,
    /// `run.toml` written). Call it after every input is read and checked, before the first write.
    pub fn start(&self, out: &Path, command: &str, fingerprint: &Value) -> Result<Option<Checkpoint>> {
        run_dir::check_out(out, self.resume.as_deref(), self.out_policy())?;
        let ck = match &self.resume {
            Some(path) => Some(Checkpoint::resume(path, command, fingerprint)?),
            None => None,
        };
        run_dir::claim(out, self.resume.as_deref(), self.out_policy(), self.run_toml.as_deref())?;
        Ok(ck)
    }

    /// Whether a folder holding another run's state is refused or replaced.
    pub fn out_policy(&self) -> OutPolicy {
        if self.overwrite {
            OutPolicy::Overwrite
        } else {
            OutPolicy::Fresh
        }
    }

    /// True when a checkpoint is due after `step` of `total`.
    pub fn due(&self, step: usize, total: usize) -> bool {
        step == total || (self.save_every > 0 && step % self.save_every == 0)
    }
}

/// Fingerprint keys added after checkpoints were first written, with the setting an older
/// checkpoint's run had: `sync_every` 1 (the rollout engine read back after every decode step).
pub const FINGERPRINT_DEFAULTS: &[(&str, u64)] = &[("sync_every", 1)];

impl Checkpoint {
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

    /// Checks that the settings a run must share with the one it continues (saved with
    /// `value("fingerprint", ..)`, an object of flag names) equal `now`'s.
    /// A key that checkpoints written before it existed lack is read as the value their runs had
    /// ([`FINGERPRINT_DEFAULTS`]), so those runs still resume with the equivalent setting.
    pub fn check_fingerprint(&self, now: &Value) -> Result<()> {
        let saved: Value = self.value("fingerprint")?;
        let mut differ = Vec::new();
        for (key, value) in now.as_object().into_iter().flatten() {
            if key == SETTINGS_KEY {
                continue;
            }
            let legacy = || FINGERPRINT_DEFAULTS.iter().find(|(k, _)| k == key).map(|&(_, v)| Value::from(v));
            let had = saved.get(key).cloned().or_else(legacy).unwrap_or(Value::Null);
            if &had != value {
                differ.push(format!("--{} {} (this run: {})", key.replace('_', "-"), show(&had), show(value)));
            }
        }
        match (now.get(SETTINGS_KEY).and_then(Value::as_object), saved.get(SETTINGS_KEY).and_then(Value::as_object)) {
            (Some(now_s), Some(saved_s)) => {
                let mut keys: Vec<&String> = now_s.keys().chain(saved_s.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let (had, has) = (saved_s.get(key).unwrap_or(&Value::Null), now_s.get(key).unwrap_or(&Value::Null));
                    if had != has && !differ.iter().any(|d| d.starts_with(&format!("--{} ", key.replace('_', "-")))) {
                        differ.push(format!("--{} {} (this run: {})", key.replace('_', "-"), show(had), show(has)));
                    }
                }
            }
            (Some(_), None) => eprintln!(
                "warning: {} records only part of its run's settings (written by an older rlhf): the learning rate, the data and the models are not checked",
                self.dir.display()
            ),
            _ => {}
        }
        if differ.is_empty() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "--resume {}: this run's settings differ from the checkpoint's, so it would not continue the same run. The checkpoint's run used {}; resume with the same settings, or start a new run in another --out",
            self.dir.display(),
            differ.join(", "),
        )))
    }
}


/// A fingerprint value as a flag would spell it (strings without quotes; absent as "unset").
fn show(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
        assert!(err.contains("--sync-every 1 (this run: 8)"), "{err}");
        let new = json!({"batch_size": 4, "sync_every": 8});
        let dir = StateWriter::new().save_run(&tmp.path().join("new"), "ppo", 3, &json!({}), &new).unwrap();
        let ck = Checkpoint::load(&dir, "ppo").unwrap();
        ck.check_fingerprint(&new).unwrap();
        assert!(ck.check_fingerprint(&json!({"batch_size": 4, "sync_every": 1})).is_err());
        assert!(ck.check_fingerprint(&json!({"batch_size": 5, "sync_every": 8})).is_err());
    }

    /// The settings a CLI run records (every flag that changes the result, the data's digest)
    /// are compared in full, both ways, and every difference is named; a checkpoint without them
    /// (an older one) is compared on the trainer's own keys only.
    #[test]
    fn every_recorded_setting_is_compared_on_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let control = |lr: &str, data: &str| RunControl {
            settings: Some(json!({"lr": lr, "data": data}).as_object().unwrap().clone()),
            ..RunControl::default()
        };
        let saved = control("0.001", "fnv:aa");
        let fp = saved.fingerprint(json!({"batch_size": 4}));
        let dir = StateWriter::new().save_run(tmp.path(), "sft", 2, &json!({}), &fp).unwrap();
        let ck = Checkpoint::load(&dir, "sft").unwrap();
        ck.check_fingerprint(&fp).unwrap();
        let err = ck.check_fingerprint(&control("0.002", "fnv:bb").fingerprint(json!({"batch_size": 4}))).unwrap_err().to_string();
        assert!(err.contains("--lr 0.001 (this run: 0.002)") && err.contains("--data fnv:aa (this run: fnv:bb)"), "{err}");
        let mut extra = control("0.001", "fnv:aa");
        extra.settings.as_mut().unwrap().insert("warmup".into(), json!("5"));
        let err = ck.check_fingerprint(&extra.fingerprint(json!({"batch_size": 4}))).unwrap_err().to_string();
        assert!(err.contains("--warmup unset (this run: 5)"), "{err}");
        // an older checkpoint: only the trainer's keys
        let old = StateWriter::new().save_run(&tmp.path().join("old"), "sft", 2, &json!({}), &json!({"batch_size": 4})).unwrap();
        Checkpoint::load(&old, "sft").unwrap().check_fingerprint(&fp).unwrap();
    }
}
