//! Data-parallel training over MPI (a build with `--features mpi`; `.ci/run` installs Open MPI and
//! runs this file so): `mpirun -n 2 rlhf sft|rm|dpo --batch-size B` against one process with batch
//! 2 B — the same losses, gradient norms and final weights to f32 summation tolerance, metrics and
//! the model written once (by rank 0) — and a checkpoint of the 2-rank run resumed by one process (the
//! same settings; `--batch-size` is per rank, so that process trains on half the global batch).

#![cfg(feature = "mpi")]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `mpirun` with Open MPI's settings for a test: oversubscribed cores, root allowed (CI runs as
/// root), no network interface probing beyond loopback.
fn mpirun(n: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["--oversubscribe", "--mca", "btl", "self,vader", "-n", &n.to_string(), env!("CARGO_BIN_EXE_rlhf")])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("running mpirun (Open MPI's openmpi-bin)")
}

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            (name, t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

/// Twelve examples of different lengths and kinds (so that rows carry different token counts).
fn write_data(path: &Path) {
    let mut lines = Vec::new();
    for i in 0..12 {
        lines.push(match i % 3 {
            0 => format!("{{\"text\": \"example {i}: the cat sat on the mat {}\"}}", "and purred ".repeat(i % 4)),
            1 => format!("{{\"prompt\": \"question {i}? \", \"completion\": \"answer {}\"}}", "yes ".repeat(1 + i % 5)),
            _ => format!("{{\"prompt\": \"say {i} \", \"completion\": \"ok\"}}"),
        });
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn sft_args<'a>(data: &'a Path, out: &'a Path, batch: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec!["sft", "--init", "gpt2-tiny", "--data", s(data), "--out", s(out), "--steps", steps, "--batch-size", batch, "--seq-len", "24", "--lr", "3e-3", "--seed", "7", "--threads", "1"]
}

/// The metrics (`keys` within 1e-4 relative, `counts` equal) and final weights of a one-rank run in
/// `one` and a two-rank run in `two` of `steps` steps at learning rate `lr`.
fn assert_same_run(one: &Path, two: &Path, steps: usize, lr: f32, keys: &[&str], counts: &[&str]) {
    let (m1, m2) = (metrics(one), metrics(two));
    assert_eq!(m1.len(), steps);
    assert_eq!(m2.len(), steps, "rank 0 alone writes the metrics: one line per step");
    for (a, b) in m1.iter().zip(&m2) {
        for &key in keys {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(close(x, y, 1e-4), "step {}: {key} {x} (one rank) vs {y} (two ranks)", a["step"]);
        }
        for &key in counts {
            assert_eq!(a[key], b[key], "step {}: {key} counts the global batch", a["step"]);
        }
    }
    // AdamW moves a weight by up to lr a step; the runs' gradients differ only in their summation
    // order, so their weights may differ by a small fraction of one step's update (a rank training
    // on its own rows alone, or a wrong weight per row, differs by whole updates)
    let tol = 1e-3 * lr * steps as f32;
    let (w1, w2) = (weights(one), weights(two));
    assert_eq!(w1.len(), w2.len());
    for ((name, a), (_, b)) in w1.iter().zip(&w2) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= tol, "{name}: weights differ by {worst}");
    }
}

#[test]
fn two_ranks_train_as_one_rank_with_twice_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_data(&data);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    ok(&rlhf(&sft_args(&data, &one, "4", "4")), "one rank, batch 4");
    ok(&mpirun(2, &sft_args(&data, &two, "2", "4")), "two ranks, batch 2 each");
    assert_same_run(&one, &two, 4, 3e-3, &["loss", "grad_norm"], &["tokens", "supervised_tokens"]);
    // rank 0 logs its communication: at least every gradient summed each step
    let params: usize = weights(&two).iter().map(|(_, w)| w.len()).sum();
    for m in metrics(&two) {
        assert!(m["comm_values"].as_u64().unwrap() as usize >= params && m["comm_s"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!(metrics(&one)[0].get("comm_s").is_none(), "one process has no communication to log");
    // the one-rank run's weights differ from the initial ones: the comparison above is not vacuous
    let init = dir.path().join("init");
    ok(&rlhf(&sft_args(&data, &init, "4", "1")), "one step");
    assert!(weights(&init).iter().zip(&weights(&one)).any(|((_, a), (_, b))| a.iter().zip(b).any(|(x, y)| x != y)));
}

/// Preference data: prompts with a chosen and a rejected answer (a ranking of three for some).
fn write_preferences(path: &Path) {
    let mut lines = Vec::new();
    for i in 0..14 {
        lines.push(if i % 4 == 3 {
            format!("{{\"prompt\": \"rank {i}: \", \"ranked\": [\"best answer {i}\", \"fine\", \"bad bad\"]}}")
        } else {
            format!("{{\"prompt\": \"question {i}? \", \"chosen\": \"a kind answer {}\", \"rejected\": \"no{}\"}}", "indeed ".repeat(i % 3), "!".repeat(i % 5))
        });
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn reward_models_train_the_same_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prefs.jsonl");
    write_preferences(&data);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let args = |out: &Path, batch: &str| -> Vec<String> {
        let list = ["rm", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(out), "--steps", "3", "--batch-size", batch, "--seq-len", "32"];
        let rest = ["--lr", "2e-3", "--seed", "3", "--eval-fraction", "0.2", "--eval-every", "2", "--threads", "1"];
        list.iter().chain(&rest).map(|x| x.to_string()).collect()
    };
    let (a1, a2) = (args(&one, "4"), args(&two, "2"));
    ok(&rlhf(&a1.iter().map(String::as_str).collect::<Vec<_>>()), "rm, one rank");
    ok(&mpirun(2, &a2.iter().map(String::as_str).collect::<Vec<_>>()), "rm, two ranks");
    assert_same_run(&one, &two, 3, 2e-3, &["loss", "accuracy", "score_gap", "grad_norm"], &["tokens"]);
}

#[test]
fn dpo_trains_the_same_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (sft_data, prefs) = (dir.path().join("data.jsonl"), dir.path().join("prefs.jsonl"));
    write_data(&sft_data);
    write_preferences(&prefs);
    let base = dir.path().join("base");
    ok(&rlhf(&sft_args(&sft_data, &base, "4", "1")), "the policy to start from");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let args = |out: &'static str, batch: &'static str| -> Vec<String> {
        let out = dir.path().join(out);
        ["dpo", "--model", s(&base), "--data", s(&prefs), "--out", s(&out), "--steps", "3", "--batch-size", batch, "--seq-len", "32", "--lr", "2e-3", "--seed", "3", "--threads", "1"]
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let (a1, a2) = (args("one", "4"), args("two", "2"));
    ok(&rlhf(&a1.iter().map(String::as_str).collect::<Vec<_>>()), "dpo, one rank");
    ok(&mpirun(2, &a2.iter().map(String::as_str).collect::<Vec<_>>()), "dpo, two ranks");
    assert_same_run(&one, &two, 3, 2e-3, &["loss", "reward_accuracy", "margin", "grad_norm"], &["tokens"]);
}

#[test]
fn a_two_rank_checkpoint_resumes_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_data(&data);
    let two = dir.path().join("two");
    let mut args = sft_args(&data, &two, "2", "3");
    args.extend(["--save-every", "2"]);
    ok(&mpirun(2, &args), "two ranks");
    let ck = two.join("checkpoints").join("step-00000002");
    assert!(ck.is_dir(), "rank 0 wrote the checkpoint of step 2");
    let resumed = dir.path().join("resumed");
    let mut args = sft_args(&data, &resumed, "2", "3");
    args.extend(["--save-every", "2", "--resume", s(&ck)]);
    let out = rlhf(&args);
    ok(&out, "one process resuming the two-rank checkpoint");
    let m = metrics(&resumed);
    assert_eq!(m.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3], "the resumed run continues the metrics after step 2");
}

#[test]
fn info_shows_the_rank_and_the_collective() {
    let out = mpirun(2, &["info"]);
    ok(&out, "rlhf info under mpirun");
    let text = String::from_utf8_lossy(&out.stdout);
    for rank in 0..2 {
        assert!(text.contains(&format!("data-parallel: rank {rank} of 2")), "{text}");
    }
    assert!(text.contains("collective mpi") && text.contains("a rank waits 1800 s for the others (RLHF_COLLECTIVE_TIMEOUT)"), "{text}");
}

#[test]
fn commands_that_are_not_data_parallel_refuse_a_job() {
    let out = mpirun(2, &["generate", "--model", "/nonexistent", "--prompt", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`rlhf generate` runs as a single process"), "{err}");
}

/// A two-rank SFT run of 400 steps (a checkpoint every 100) in which `rank` sends itself `signal`
/// as soon as the checkpoint of step 100 exists, in the middle of training; ranks wait 3 s for each
/// other. Returns mpirun's output and how long it ran.
fn run_with_a_rank_signalled(data: &Path, out: &Path, rank: usize, signal: &str) -> (Output, std::time::Duration) {
    let start = std::time::Instant::now();
    let first = out.join("checkpoints").join("step-00000100");
    let script = format!(
        r#"if [ "$OMPI_COMM_WORLD_RANK" = {rank} ]; then (while [ ! -e '{}' ]; do sleep 0.01; done; kill -{signal} $$) >/dev/null 2>&1 & fi; exec "$0" "$@""#,
        s(&first)
    );
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "--mca", "btl", "self,vader", "-n", "2", "sh", "-c", &script, env!("CARGO_BIN_EXE_rlhf")])
        .args(sft_args(data, out, "2", "400"))
        .args(["--save-every", "100"])
        .env("RLHF_COLLECTIVE_TIMEOUT", "3")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("running mpirun");
    (out, start.elapsed())
}

/// The run in `run` stopped before its end, and what it left is whole: one process resumes it
/// (`--resume` of the folder: its latest checkpoint) and finishes the 400 steps.
fn the_run_resumes_after_the_failure(data: &Path, run: &Path) {
    assert!(!run.join("model.safetensors").exists(), "the job was meant to fail in the middle of training");
    let mut args = sft_args(data, run, "2", "400");
    args.extend(["--save-every", "100", "--resume", s(run)]);
    ok(&rlhf(&args), "resuming the run after the job ended");
    assert_eq!(metrics(run).last().unwrap()["step"], 400);
}

#[test]
fn a_hung_rank_is_named_and_the_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_data(&data);
    let run = dir.path().join("hung");
    let (out, took) = run_with_a_rank_signalled(&data, &run, 1, "STOP");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a job with a stopped rank must fail: {err}");
    assert!(err.contains("rank 0: rank 1 did not take part in collective") && err.contains("within 3 s"), "{err}");
    assert!(took.as_secs() < 120, "the job ended {took:?} after it started, long after the 3 s timeout");
    the_run_resumes_after_the_failure(&data, &run);
}

#[test]
fn a_killed_rank_ends_the_job_and_leaves_whole_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_data(&data);
    // rank 0 is the one that writes: killed while it trains and saves
    let run = dir.path().join("killed");
    let (out, took) = run_with_a_rank_signalled(&data, &run, 0, "KILL");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a job with a killed rank must fail");
    assert!(text.contains("rank 0"), "the launcher names the killed rank: {text}");
    assert!(took.as_secs() < 120, "the job ended {took:?} after it started");
    the_run_resumes_after_the_failure(&data, &run);
}

/// `--zero 1` (the AdamW moments sharded over the ranks) trains bit for bit as `--zero 0`, and
/// each one's checkpoints resume under the other (the checkpoint holds the whole state).
#[test]
fn zero_one_shards_the_moments_and_changes_no_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_data(&data);
    let run = |name: &str, zero: &str, resume: Option<&Path>| -> std::path::PathBuf {
        let out = dir.path().join(name);
        let mut args = sft_args(&data, &out, "2", "4");
        args.extend(["--save-every", "2", "--zero", zero]);
        if let Some(ck) = resume {
            args.extend(["--resume", s(ck)]);
        }
        ok(&mpirun(2, &args), &format!("{name}: two ranks, --zero {zero}"));
        out
    };
    let (sharded, plain) = (run("sharded", "1", None), run("plain", "0", None));
    assert!(weights(&sharded) == weights(&plain), "a sharded update must give the same weights, bit for bit");
    let loss = |d: &Path| metrics(d).iter().map(|m| m["loss"].as_f64().unwrap()).collect::<Vec<_>>();
    assert_eq!(loss(&sharded), loss(&plain));
    // and the same run as one process with the global batch
    let one = dir.path().join("one");
    ok(&rlhf(&sft_args(&data, &one, "4", "4")), "one rank, batch 4");
    assert_same_run(&one, &sharded, 4, 3e-3, &["loss", "grad_norm"], &["tokens"]);
    // moments written by their owners resume unsharded, and whole moments resume sharded: a lost
    // or misplaced moment changes the next updates
    let at = |d: &Path| d.join("checkpoints").join("step-00000002");
    let from_sharded = run("plain_from_sharded", "0", Some(&at(&sharded)));
    assert!(weights(&from_sharded) == weights(&sharded), "resumed unsharded from a sharded checkpoint");
    let from_plain = run("sharded_from_plain", "1", Some(&at(&plain)));
    assert!(weights(&from_plain) == weights(&plain), "resumed sharded from an unsharded checkpoint");
    // and one process resumes a sharded checkpoint
    let single = dir.path().join("single");
    let ck = at(&sharded);
    let mut args = sft_args(&data, &single, "2", "4");
    args.extend(["--save-every", "2", "--zero", "1", "--resume", s(&ck)]);
    ok(&rlhf(&args), "one process resuming a sharded checkpoint");
}
