//! Run configurations: `--config run.toml` sets flags, the command line overrides them, the
//! resolved configuration is written to `<out>/run.toml` and runs again as it is, bad files get
//! errors naming the file and the key; and every config in `examples/` runs (for a few steps,
//! into a temporary folder) from the repository root as its comment says.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `rlhf` from the repository root.
fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).current_dir(root()).args(args).output().expect("running rlhf")
}

fn ok(args: &[&str]) -> Output {
    let out = rlhf(args);
    assert!(out.status.success(), "rlhf {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = rlhf(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rlhf {} should fail", args.join(" "));
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr does not mention {n:?}: {stderr}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn metric_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().count()
}

fn resolved(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("run.toml")).unwrap().parse().unwrap()
}

#[test]
fn config_keys_set_flags_the_command_line_overrides_them_and_run_toml_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    let cfg = tmp.path().join("run.toml");
    let data = root().join("examples/data/sft.jsonl");
    std::fs::write(
        &cfg,
        format!("init = \"gpt2-tiny\"\ndata = {:?}\nout = {:?}\nsteps = 2\nbatch_size = 4\nseq-len = 32\nlr = 1e-3\nlog_every = 0\n", s(&data), s(&out)),
    )
    .unwrap();
    ok(&["sft", "--config", s(&cfg)]);
    assert_eq!(metric_lines(&out), 2, "steps = 2 from the file");
    let r = resolved(&out);
    assert_eq!(r["steps"].as_integer(), Some(2));
    assert_eq!(r["batch_size"].as_integer(), Some(4));
    assert_eq!(r["seq_len"].as_integer(), Some(32), "a dashed key works too");
    assert_eq!(r["warmup"].as_integer(), Some(0), "defaults are part of the resolved configuration");
    assert_eq!(r["backend"].as_str(), Some("cpu"));

    // the command line wins over the file, wherever it stands (--overwrite: the folder holds
    // the first run)
    fails_with(&["sft", "--steps", "3", "--config", s(&cfg)], &["--overwrite"]);
    ok(&["sft", "--steps", "3", "--config", s(&cfg), "--overwrite"]);
    assert_eq!(metric_lines(&out), 3);
    assert_eq!(resolved(&out)["steps"].as_integer(), Some(3));

    // the resolved file runs the same configuration again
    let again = tmp.path().join("again.toml");
    std::fs::copy(out.join("run.toml"), &again).unwrap();
    let out2 = tmp.path().join("sft2");
    ok(&["sft", "--config", s(&again), "--out", s(&out2)]);
    let (a, b): (Vec<Value>, Vec<Value>) = (losses(&out), losses(&out2));
    assert_eq!(a, b, "the rerun from run.toml trains the same");
}

fn losses(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].clone()).collect()
}

#[test]
fn bad_config_files_name_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let unknown = write("unknown.toml", "stepz = 3\n");
    fails_with(&["sft", "--config", s(&unknown)], &["unknown.toml", "unknown key `stepz`", "steps"]);
    let broken = write("broken.toml", "steps = [1\n");
    fails_with(&["sft", "--config", s(&broken)], &["broken.toml", "not valid TOML", "line 1"]);
    let switch = write("switch.toml", "quick = 3\n");
    fails_with(&["demo", "--config", s(&switch)], &["switch.toml", "quick", "true or false"]);
    let table = write("table.toml", "[sft]\nsteps = 3\n");
    fails_with(&["sft", "--config", s(&table)], &["table.toml", "sft"]);
    let wrong_type = write("wrong.toml", "steps = \"many\"\n");
    fails_with(&["sft", "--config", s(&wrong_type)], &["many", "--steps"]);
    fails_with(&["sft", "--config", s(&tmp.path().join("missing.toml"))], &["missing.toml"]);
}

/// Every example config runs from the repository root, pointed at a temporary folder and cut
/// to a few steps on the command line; the chain sft -> rm -> ppo, and the commands that read
/// their outputs, use what the previous ones wrote.
#[test]
fn every_example_config_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (sft, rm, ppo) = (t("sft"), t("rm"), t("ppo"));
    let mut ran = Vec::new();
    let mut run = |example: &str, extra: &[&str]| {
        let mut args = vec![example.trim_end_matches(".toml"), "--config"];
        let path = format!("examples/{example}");
        args.push(&path);
        args.extend_from_slice(extra);
        let out = ok(&args);
        ran.push(example.to_string());
        out
    };
    run("sft.toml", &["--out", &sft, "--steps", "3", "--save-every", "2"]);
    assert_eq!(metric_lines(Path::new(&sft)), 3);
    run("rm.toml", &["--model", &sft, "--out", &rm, "--steps", "3"]);
    assert_eq!(metric_lines(Path::new(&rm)), 3);
    run("ppo.toml", &["--policy", &sft, "--reward-model", &rm, "--out", &ppo, "--steps", "2", "--rollout-batch", "4"]);
    assert_eq!(metric_lines(Path::new(&ppo)), 2);
    run("dpo.toml", &["--model", &sft, "--out", &t("dpo"), "--steps", "2"]);
    assert_eq!(metric_lines(&tmp.path().join("dpo")), 2);
    run("grpo.toml", &["--model", &sft, "--reward-model", &rm, "--out", &t("grpo"), "--steps", "2", "--prompts-per-step", "2", "--group-size", "2"]);
    assert_eq!(metric_lines(&tmp.path().join("grpo")), 2);
    let g = run("generate.toml", &["--model", &sft]);
    assert!(String::from_utf8_lossy(&g.stdout).starts_with("Q: describe the cat."));
    let l = run("logprobs.toml", &["--model", &sft]);
    assert_eq!(String::from_utf8_lossy(&l.stdout).lines().count(), 8);
    let sc = run("score.toml", &["--model", &rm]);
    assert_eq!(String::from_utf8_lossy(&sc.stdout).lines().count(), 8);
    let b = run("bench.toml", &["--model", "gpt2-tiny", "--steps", "1", "--seq-len", "32"]);
    assert!(String::from_utf8_lossy(&b.stdout).contains("tokens/s"));
    run("demo.toml", &["--quick", "--out", &t("demo")]);
    assert!(tmp.path().join("demo/summary.json").is_file());

    let mut examples: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    examples.sort();
    ran.sort();
    assert_eq!(examples, ran, "an example config that this test does not run");
}
