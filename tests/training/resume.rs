//! Exact resume and the divergence guard, as a user meets them: a training process killed with
//! SIGKILL in the middle of a step and resumed with `--resume` ends with the same metrics and the
//! same weights, bit for bit (CPU backend), as an uninterrupted run; the checkpoints it had saved
//! stay complete; a run whose steps stop being finite is skipped step by step, then stopped with
//! a message that names the last good checkpoint, which still resumes.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlhf"))
}

fn rlhf(args: &[String]) -> Output {
    bin().args(args).output().expect("running rlhf")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "rlhf failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// metrics.jsonl without the fields that measure time.
fn metrics(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !(k.ends_with("_s") || k.contains("per_sec")));
            v
        })
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// Starts `args`, waits until its metrics.jsonl has `after_lines` lines (plus a little, so that
/// the kill lands inside a step), kills it with SIGKILL and waits for it.
fn kill_mid_run(args: &[String], out: &Path, after_lines: usize) {
    let mut child = bin().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while lines(&out.join("metrics.jsonl")) < after_lines {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(Instant::now() < deadline, "the run did not get to step {after_lines}");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(3));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(lines(&out.join("metrics.jsonl")) < lines_total(args), "the run finished before the kill");
}

fn lines_total(args: &[String]) -> usize {
    let i = args.iter().position(|a| a == "--steps").unwrap();
    args[i + 1].parse().unwrap()
}

/// Every checkpoint folder left in `run` is complete: it loads.
fn checkpoints_are_complete(run: &Path, command: &str) {
    let dir = run.join("checkpoints");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") {
            rlhf::train::resume::Checkpoint::load(&e.path(), command).unwrap_or_else(|err| panic!("{name}: {err}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no checkpoint in {}", dir.display());
}

fn write_sft_data(dir: &Path) -> PathBuf {
    let path = dir.join("sft.jsonl");
    let text: String = (0..40).map(|i| format!("{{\"text\": \"line {i}: the quick brown fox jumps over the lazy dog {} times\"}}\n", i * 7)).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Kills a run mid-step, resumes it, and compares with an uninterrupted run.
fn check_kill_and_resume(command: &str, args: Vec<String>, tmp: &Path, kill_after: usize) {
    let (a, b) = (tmp.join(format!("{command}-a")), tmp.join(format!("{command}-b")));
    let full = with(args.clone(), &["--out", a.to_str().unwrap()]);
    ok(rlhf(&full));
    let interrupted = with(args, &["--out", b.to_str().unwrap()]);
    kill_mid_run(&interrupted, &b, kill_after);
    checkpoints_are_complete(&b, command);
    let resumed = ok(rlhf(&with(interrupted, &["--resume", b.to_str().unwrap()])));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("resuming after step"), "{stderr}");
    assert_eq!(metrics(&a), metrics(&b), "{command}: the resumed run's metrics differ from the uninterrupted run's");
    let wa = std::fs::read(a.join("model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(wa == wb, "{command}: the resumed run's final weights differ from the uninterrupted run's");
}

#[test]
fn sft_killed_mid_step_resumes_to_the_same_metrics_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_sft_data(tmp.path());
    let args = strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--steps", "30", "--batch-size", "4", "--seq-len", "48", "--lr", "1e-3"]);
    let args = with(args, &["--save-every", "4", "--log-every", "0"]);
    check_kill_and_resume("sft", args, tmp.path(), 14);
}

#[test]
fn rm_dpo_ppo_and_grpo_killed_mid_step_resume_to_the_same_metrics_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = write_sft_data(t);
    let sft = t.join("sft");
    ok(rlhf(&strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--out", sft.to_str().unwrap(), "--steps", "10", "--seq-len", "48"])));
    let prefs = t.join("prefs.jsonl");
    let prompts = t.join("prompts.jsonl");
    let (mut p_text, mut q_text) = (String::new(), String::new());
    for i in 0..20 {
        p_text.push_str(&format!("{{\"prompt\": \"Tell me about {i}:\", \"chosen\": \" a good and kind answer {i}\", \"rejected\": \" bad\"}}\n"));
        q_text.push_str(&format!("{{\"prompt\": \"Tell me about {i}:\"}}\n"));
    }
    std::fs::write(&prefs, p_text).unwrap();
    std::fs::write(&prompts, q_text).unwrap();

    let rm_args = strs(&["rm", "--model", sft.to_str().unwrap(), "--data", prefs.to_str().unwrap(), "--steps", "20", "--batch-size", "4", "--seq-len", "48"]);
    let rm_args = with(rm_args, &["--lr", "1e-3", "--eval-every", "5", "--save-every", "5", "--log-every", "0"]);
    check_kill_and_resume("rm", rm_args, t, 12);

    let dpo_args = strs(&["dpo", "--model", sft.to_str().unwrap(), "--data", prefs.to_str().unwrap(), "--steps", "20", "--batch-size", "4", "--seq-len", "48"]);
    let dpo_args = with(dpo_args, &["--lr", "1e-4", "--eval-fraction", "0.1", "--save-every", "3", "--log-every", "0"]);
    check_kill_and_resume("dpo", dpo_args, t, 8);

    let rm = t.join("rm-a");
    for value in [&["--value-model", rm.to_str().unwrap()][..], &["--value-head"][..]] {
        let tag = if value.len() == 1 { "ppo-head" } else { "ppo" };
        let args = strs(&["ppo", "--policy", sft.to_str().unwrap(), "--reward-model", rm.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()]);
        let args = with(args, &["--steps", "8", "--rollout-batch", "4", "--mini-batch", "2", "--ppo-epochs", "2", "--max-new-tokens", "12"]);
        let args = with(with(args, &["--lr", "1e-4", "--kl-target", "0.5", "--reward-norm", "--save-every", "2", "--log-every", "0"]), value);
        let dir = t.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        check_kill_and_resume("ppo", args, &dir, 5);
    }

    let args = strs(&["grpo", "--model", sft.to_str().unwrap(), "--reward-model", rm.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()]);
    let args = with(args, &["--steps", "8", "--prompts-per-step", "2", "--group-size", "4", "--mini-batch", "4", "--max-new-tokens", "12"]);
    // three decode steps between read-backs: a rollout with K > 1 is reproducible too
    let args = with(args, &["--lr", "1e-4", "--save-every", "2", "--log-every", "0", "--sync-every", "3"]);
    check_kill_and_resume("grpo", args, t, 5);
}

#[test]
fn a_diverging_run_skips_non_finite_steps_then_stops_naming_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_sft_data(tmp.path());
    let out = tmp.path().join("run");
    // an absurd learning rate: step 1 is finite and blows the weights up; every later step's
    // loss overflows to a non-finite value
    let args = strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "20"]);
    let args = with(args, &["--seq-len", "48", "--lr", "1e30", "--max-grad-norm", "0", "--save-every", "1", "--max-bad-steps", "2", "--log-every", "0"]);
    let res = rlhf(&args);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "the diverging run should stop: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("3 steps in a row") && stderr.contains("step-00000001"), "{stderr}");
    assert_eq!(stderr.matches("step skipped").count(), 3, "{stderr}");
    let m = metrics(&out);
    assert_eq!(m.len(), 3, "steps 1 and 2 (skipped) are logged, the third bad step stops the run");
    assert_eq!(m[0]["skipped"], Value::Bool(false));
    assert_eq!(m[1]["skipped"], Value::Bool(true));
    // the last good checkpoint (after step 1) is intact and still the latest
    checkpoints_are_complete(&out, "sft");
    assert_eq!(std::fs::read_to_string(out.join("checkpoints/latest")).unwrap().trim(), "step-00000001");
}

#[test]
fn resume_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_sft_data(tmp.path());
    let out = tmp.path().join("run");
    let base = strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--seq-len", "48", "--steps", "2"]);
    // nothing to resume from
    let res = rlhf(&with(base.clone(), &["--out", out.to_str().unwrap(), "--resume", tmp.path().join("nowhere").to_str().unwrap()]));
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("no such folder"), "{}", String::from_utf8_lossy(&res.stderr));
    ok(rlhf(&with(base.clone(), &["--out", out.to_str().unwrap()])));
    // a different batch size is not the same run
    let res = rlhf(&with(base.clone(), &["--out", out.to_str().unwrap(), "--resume", out.to_str().unwrap(), "--batch-size", "3"]));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("--batch-size"), "{stderr}");
    // a checkpoint of another command
    let prefs = tmp.path().join("prefs.jsonl");
    std::fs::write(&prefs, "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n{\"prompt\": \"d\", \"chosen\": \" e\", \"rejected\": \" f\"}\n")
        .unwrap();
    let res = rlhf(&strs(&[
        "rm",
        "--init",
        "gpt2-tiny",
        "--data",
        prefs.to_str().unwrap(),
        "--out",
        tmp.path().join("rm").to_str().unwrap(),
        "--resume",
        out.to_str().unwrap(),
    ]));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("saved by `rlhf sft`"), "{stderr}");
    // a checkpoint of another model: the setting that differs is named
    let res = rlhf(&with(
        strs(&["sft", "--init", "llama-tiny", "--data", data.to_str().unwrap(), "--seq-len", "48", "--steps", "2"]),
        &["--out", tmp.path().join("other").to_str().unwrap(), "--resume", out.to_str().unwrap()],
    ));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("--init gpt2-tiny (this run: llama-tiny)"), "{stderr}");
}

/// Every file under `dir`, as paths relative to it, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A fresh run never replaces another: pointed at a finished run's folder (the same command
/// again, another command, or the run's own `run.toml` as `--config`) it is refused before it
/// writes anything, and the old run's files stay byte for byte; so is a run refused for a bad
/// input or flag, even with `--overwrite`. `--overwrite` replaces the old run only once the new
/// one's inputs are checked: its checkpoints go, `latest` names the new run's. A finished run
/// leaves no temporary file.
#[test]
fn a_finished_run_is_never_replaced_by_accident() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_sft_data(tmp.path());
    let run = tmp.path().join("run");
    let base = strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--seq-len", "48", "--steps", "4", "--save-every", "2"]);
    let base = with(base, &["--out", run.to_str().unwrap()]);
    ok(rlhf(&base));
    let before = snapshot(&run);
    assert!(before.iter().all(|(p, _)| !p.file_name().unwrap().to_string_lossy().starts_with('.')), "a temporary file survived: {before:?}");

    // the same command again
    let res = rlhf(&base);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("`rlhf sft`") && stderr.contains("--overwrite") && stderr.contains("--resume"), "{stderr}");
    // its own run.toml, as the README offers for running a configuration again
    let res = rlhf(&strs(&["sft", "--config", run.join("run.toml").to_str().unwrap()]));
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("--overwrite"), "{}", String::from_utf8_lossy(&res.stderr));
    // another command into the SFT run's folder
    let prefs = tmp.path().join("prefs.jsonl");
    std::fs::write(&prefs, "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n").unwrap();
    let res = rlhf(&strs(&["dpo", "--model", run.to_str().unwrap(), "--data", prefs.to_str().unwrap(), "--out", run.to_str().unwrap()]));
    assert!(!res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let other = tmp.path().join("dpo");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    let res = rlhf(&strs(&["dpo", "--model", run.to_str().unwrap(), "--data", prefs.to_str().unwrap(), "--out", other.to_str().unwrap()]));
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("metrics.jsonl"), "{}", String::from_utf8_lossy(&res.stderr));
    // refused inputs and flags, even with --overwrite, write nothing
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"text\": \"cut\n").unwrap();
    let res = rlhf(&strs(&["sft", "--init", "gpt2-tiny", "--data", bad.to_str().unwrap(), "--out", run.to_str().unwrap(), "--overwrite"]));
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("bad.jsonl:2"), "{}", String::from_utf8_lossy(&res.stderr));
    let res = rlhf(&with(base.clone(), &["--overwrite", "--lr", "-1"]));
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("--lr"), "{}", String::from_utf8_lossy(&res.stderr));
    assert!(snapshot(&run) == before, "a refused run changed the old run's files");
    let fresh = tmp.path().join("fresh");
    let res = rlhf(&strs(&["sft", "--init", "gpt2-tiny", "--data", bad.to_str().unwrap(), "--out", fresh.to_str().unwrap()]));
    assert!(!res.status.success());
    assert!(!fresh.exists(), "a refused run created its output folder");
    // the output folder may not be one of the run's inputs
    let res = rlhf(&strs(&["dpo", "--model", run.to_str().unwrap(), "--data", prefs.to_str().unwrap(), "--out", run.to_str().unwrap(), "--overwrite"]));
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("input folder"), "{}", String::from_utf8_lossy(&res.stderr));

    // --overwrite: a run of 3 steps, saving at step 3 only; the old step-2 and step-4 are gone
    ok(rlhf(&with(strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--seq-len", "48", "--steps", "3"]), &["--out", run.to_str().unwrap(), "--overwrite"])));
    assert_eq!(std::fs::read_to_string(run.join("checkpoints/latest")).unwrap().trim(), "step-00000003");
    let kept: Vec<String> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!kept.iter().any(|n| n == "step-00000004" || n == "step-00000002"), "the old run's checkpoints survived: {kept:?}");
    assert_eq!(metrics(&run).len(), 3);
    assert!(std::fs::read_to_string(run.join("run.toml")).unwrap().contains("steps = 3"));
}

/// `--resume` continues only the same run: a different learning rate, or data whose contents
/// changed, is refused naming the setting; the same settings (the data moved elsewhere
/// unchanged) resume.
#[test]
fn resume_checks_every_setting_that_changes_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_sft_data(tmp.path());
    let run = tmp.path().join("run");
    let args = strs(&["sft", "--init", "gpt2-tiny", "--data", data.to_str().unwrap(), "--seq-len", "48", "--steps", "30", "--save-every", "4"]);
    let args = with(args, &["--out", run.to_str().unwrap(), "--log-every", "0", "--batch-size", "4"]);
    kill_mid_run(&args, &run, 10);
    let resume = with(args.clone(), &["--resume", run.to_str().unwrap()]);
    let res = rlhf(&with(resume.clone(), &["--lr", "3e-4"]));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("--lr 0.0001 (this run: 0.0003)"), "{stderr}");
    let moved = tmp.path().join("moved.jsonl");
    std::fs::copy(&data, &moved).unwrap();
    std::fs::write(&data, std::fs::read_to_string(&moved).unwrap().replace("fox", "cat")).unwrap();
    let res = rlhf(&resume);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && stderr.contains("--data fnv:"), "{stderr}");
    // the unchanged data under another name, and --lr spelled otherwise: the same run
    let i = resume.iter().position(|a| a == "--data").unwrap();
    let mut same = resume.clone();
    same[i + 1] = moved.to_str().unwrap().to_string();
    ok(rlhf(&with(same, &["--lr", "1e-4"])));
    assert_eq!(metrics(&run).len(), 30);
}
