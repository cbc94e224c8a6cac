//! A training run's output folder: what counts as a run's state there, the check that a fresh
//! run never replaces another one by accident, and the moment a run claims its folder.
//!
//! The rules (docs/never_lost.md states them for users):
//! - a folder holding any [`RUN_STATE`] entry belongs to a run; a new run refuses it unless it
//!   resumes that very run (`--resume` naming the folder or one of its checkpoints) or is told
//!   to replace it (`--overwrite`);
//! - nothing is written into the folder until the run has read and checked every input: the
//!   trainers call [`claim`] after loading and validating, right before their first write. Only
//!   then does `--overwrite` remove the old run's state, and `run.toml` is written.

use crate::error::{Error, Result};
use crate::io::fs as fsutil;
use std::path::{Path, PathBuf};

/// The resolved configuration's file name inside a run's output folder.
pub const RESOLVED_FILE: &str = "run.toml";

/// The entries of a folder that make it a run's: metrics, resolved configuration, checkpoints,
/// a saved model (weights or config), DPO's cached reference log-probs, the demo's summary.
pub const RUN_STATE: &[&str] = &[
    "metrics.jsonl",
    RESOLVED_FILE,
    crate::train::resume::CHECKPOINTS_DIR,
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "ref_logps.json",
    "summary.json",
];

/// What a new run may do with its output folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutPolicy {
    /// refuse a folder that holds another run's state (the default)
    #[default]
    Fresh,
    /// remove another run's state when the run claims the folder (`--overwrite`)
    Overwrite,
}

/// The run-state entries present in `out` (none when it does not exist).
pub fn run_state_in(out: &Path) -> Vec<&'static str> {
    RUN_STATE.iter().copied().filter(|name| out.join(name).exists()).collect()
}

/// The command that wrote `out/run.toml` (its first line reads `# rlhf <command> — ...`).
pub fn command_of(out: &Path) -> Option<String> {
    let text = std::fs::read_to_string(out.join(RESOLVED_FILE)).ok()?;
    let first = text.lines().next()?;
    first.strip_prefix("# rlhf ")?.split_whitespace().next().map(str::to_string)
}

/// The run folder a `--resume` path belongs to: the folder itself, or `<run>` for a checkpoint
/// folder `<run>/checkpoints/step-N`.
fn resume_run_dir(resume: &Path) -> PathBuf {
    let parent = resume.parent();
    match parent {
        Some(p) if p.file_name().is_some_and(|n| n == crate::train::resume::CHECKPOINTS_DIR) => p.parent().unwrap_or(p).to_path_buf(),
        _ => resume.to_path_buf(),
    }
}

/// True when `a` and `b` name the same existing folder (or the same path when one is missing).
pub fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Checks, without writing anything, that a run may use `out`: it is a folder (or missing), and
/// if it holds another run's state, this run resumes that run (`resume` names `out` or one of its
/// checkpoints) or replaces it ([`OutPolicy::Overwrite`]). The error says what is there and the
/// ways forward.
pub fn check_out(out: &Path, resume: Option<&Path>, policy: OutPolicy) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::file(out, "--out must be a folder, and this is a file"));
    }
    let state = run_state_in(out);
    if state.is_empty() || policy == OutPolicy::Overwrite {
        return Ok(());
    }
    let listed = state.iter().map(|s| if *s == crate::train::resume::CHECKPOINTS_DIR { format!("{s}/") } else { s.to_string() }).collect::<Vec<_>>().join(", ");
    let what = match command_of(out) {
        Some(cmd) => format!("the output of an earlier `rlhf {cmd}` run ({listed})"),
        None => format!("another run's files ({listed})"),
    };
    match resume {
        Some(r) if same_dir(&resume_run_dir(r), out) => Ok(()),
        Some(r) => Err(Error::file(
            out,
            format!(
                "--out holds {what}, and --resume {} continues a run from another folder: give an empty or new --out, or --overwrite to replace what is there",
                r.display()
            ),
        )),
        None => Err(Error::file(
            out,
            format!(
                "--out holds {what}; nothing was changed. Continue that run with --resume {}, replace it with --overwrite (its checkpoints and metrics are deleted), or choose another --out",
                out.display()
            ),
        )),
    }
}

/// True for a temporary file or folder that an atomic write of this crate leaves behind when
/// killed: `.<name>.tmp<pid>`.
pub fn is_stray_temporary(name: &str) -> bool {
    name.starts_with('.') && name.rsplit_once(".tmp").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporaries that killed runs left in `dir` (not this process's own).
pub fn remove_stray_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let own = format!(".tmp{}", std::process::id());
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_stray_temporary(&name) && !name.ends_with(&own) {
            let path = e.path();
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }
}

/// The run claims `out`, after every input has been read and checked and right before its first
/// write: checks it again ([`check_out`]), removes the old run's state under
/// [`OutPolicy::Overwrite`] (never when resuming), removes stray temporaries, creates the folder
/// and writes the resolved configuration `run_toml` (if any) as `run.toml`, atomically.
pub fn claim(out: &Path, resume: Option<&Path>, policy: OutPolicy, run_toml: Option<&str>) -> Result<()> {
    check_out(out, resume, policy)?;
    if policy == OutPolicy::Overwrite && resume.is_none() {
        for name in run_state_in(out) {
            let path = out.join(name);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| Error::io(&path, e))?;
        }
    }
    fsutil::create_dir_all(out)?;
    remove_stray_temporaries(out);
    remove_stray_temporaries(&out.join(crate::train::resume::CHECKPOINTS_DIR));
    if let Some(text) = run_toml {
        fsutil::atomic_write(&out.join(RESOLVED_FILE), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_temporaries_are_recognised_by_their_pid_suffix() {
        assert!(is_stray_temporary(".metrics.jsonl.tmp123"));
        assert!(is_stray_temporary(".step-00000004.tmp9"));
        assert!(!is_stray_temporary("metrics.jsonl"));
        assert!(!is_stray_temporary(".hidden"));
        assert!(!is_stray_temporary(".x.tmp"));
        assert!(!is_stray_temporary(".x.tmpabc"));
    }

    #[test]
    fn a_folder_with_run_state_is_refused_unless_resumed_or_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        check_out(&out, None, OutPolicy::Fresh).unwrap();
        std::fs::create_dir_all(out.join("notes")).unwrap();
        check_out(&out, None, OutPolicy::Fresh).unwrap();
        std::fs::write(out.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(out.join("run.toml"), "# rlhf sft — the resolved configuration\n").unwrap();
        let err = check_out(&out, None, OutPolicy::Fresh).unwrap_err().to_string();
        assert!(err.contains("`rlhf sft`") && err.contains("--resume") && err.contains("--overwrite"), "{err}");
        check_out(&out, Some(&out), OutPolicy::Fresh).unwrap();
        check_out(&out, Some(&out.join("checkpoints").join("step-00000002")), OutPolicy::Fresh).unwrap();
        assert!(check_out(&out, Some(&tmp.path().join("other")), OutPolicy::Fresh).is_err());
        check_out(&out, None, OutPolicy::Overwrite).unwrap();
        // overwriting removes the run's state, keeps other files, writes run.toml
        std::fs::create_dir_all(out.join("checkpoints/step-00000001")).unwrap();
        std::fs::write(out.join(".metrics.jsonl.tmp1"), "x").unwrap();
        claim(&out, None, OutPolicy::Overwrite, Some("# rlhf dpo — new\n")).unwrap();
        assert!(!out.join("metrics.jsonl").exists() && !out.join("checkpoints").exists() && !out.join(".metrics.jsonl.tmp1").exists());
        assert!(out.join("notes").is_dir());
        assert_eq!(command_of(&out).as_deref(), Some("dpo"));
    }
}
