//! The `rlhf` binary as a user runs it: the happy paths of each command, and every kind of bad
//! input getting a one-line error that names the file, line, tensor or flag, a non-zero exit, and
//! never a panic.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a failed run whose stderr mentions every `needle`, and no panic.
fn assert_fails_with(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr does not mention {n:?}: {stderr}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn logprobs_command_matches_reference() {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture("llama").join("reference.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = r["input_ids"].as_array().unwrap().iter().map(|ids| serde_json::json!({ "input_ids": ids }).to_string()).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = rlhf(&["logprobs", "--model", s(&fixture("llama")), "--input", s(&input)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for (row, want) in rows.iter().zip(r["logprobs"].as_array().unwrap()) {
        for (a, b) in row["logprobs"].as_array().unwrap().iter().zip(want.as_array().unwrap()) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
        }
    }
    // text lines are tokenised with the model's tokenizer
    std::fs::write(&input, "{\"text\": \"hello world, hello rlhf\"}\n").unwrap();
    let out = rlhf(&["logprobs", "--model", s(&fixture("gpt2")), "--input", s(&input)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let n = row["input_ids"].as_array().unwrap().len();
    assert_eq!(row["logprobs"].as_array().unwrap().len(), n - 1);
}

#[test]
fn generate_and_info_and_bench_run() {
    let out = rlhf(&["generate", "--model", s(&fixture("qwen2")), "--prompt", "hello", "--max-new-tokens", "5", "--temperature", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello"));
    let out = rlhf(&["info"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cpu") && stdout.contains("available"));
    let out = rlhf(&["bench", "--model", "gpt2-tiny", "--batch-size", "2", "--seq-len", "16", "--steps", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("train (fwd+bwd+AdamW)") && stdout.contains("rollout decode") && stdout.contains("tokens/s") && stdout.contains("batch 2 x seq 16"),
        "{stdout}"
    );
}

#[test]
fn sft_command_writes_metrics_and_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"hello \", \"completion\": \"world\"}\n{\"text\": \"the cat sat on the mat\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello there\"}]}\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = rlhf(&[
        "sft",
        "--model",
        s(&fixture("gpt2")),
        "--data",
        s(&data),
        "--out",
        s(&out_dir),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--lr",
        "1e-3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let rows: Vec<Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["step"], i + 1);
        for key in ["loss", "grad_norm", "lr", "tokens", "tokens_per_sec", "elapsed_s"] {
            assert!(row[key].is_number(), "metrics row lacks {key}: {row}");
        }
    }
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out_dir.join(f).exists(), "{f} missing from the checkpoint");
    }
    // the output folder is a model folder again
    let out = rlhf(&["generate", "--model", s(&out_dir), "--prompt", "hello", "--max-new-tokens", "3", "--temperature", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --init trains from scratch with the built-in tokenizer
    let out_dir2 = dir.path().join("scratch");
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&out_dir2), "--steps", "2", "--batch-size", "2", "--seq-len", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out_dir2.join("model.safetensors").exists());
}

#[test]
fn missing_model_folder() {
    let out = rlhf(&["logprobs", "--model", "/nonexistent/model", "--input", "x.jsonl"]);
    assert_fails_with(&out, &["/nonexistent/model"]);
}

#[test]
fn unsupported_model_type() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("gpt2"), dir.path());
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap().replace("\"gpt2\"", "\"mamba\"");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let out = rlhf(&["generate", "--model", s(dir.path()), "--prompt", "hi"]);
    assert_fails_with(&out, &["config.json", "mamba"]);
}

#[test]
fn tensor_of_the_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("gpt2"), dir.path());
    // a config that promises a wider MLP than the weights have
    let path = dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["n_inner"] = serde_json::json!(100);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = rlhf(&["generate", "--model", s(dir.path()), "--prompt", "hi"]);
    assert_fails_with(&out, &["mlp.c_fc.weight", "model.safetensors"]);
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("qwen2"), dir.path());
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = rlhf(&["generate", "--model", s(dir.path()), "--prompt", "hi"]);
    assert_fails_with(&out, &["model.safetensors"]);
}

#[test]
fn malformed_jsonl_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"text\": \"fine\"}\n{\"text\": \"broken\n").unwrap();
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&dir.path().join("o")), "--steps", "1"]);
    assert_fails_with(&out, &["bad.jsonl:2"]);
    let input = dir.path().join("score.jsonl");
    std::fs::write(&input, "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 99999]}\n").unwrap();
    let out = rlhf(&["logprobs", "--model", s(&fixture("gpt2")), "--input", s(&input)]);
    assert_fails_with(&out, &["score.jsonl:2", "99999"]);
}

#[test]
fn bad_flags() {
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", "d.jsonl", "--out", "o", "--steps", "many"]);
    assert_fails_with(&out, &["--steps"]);
    let out = rlhf(&["sft", "--init", "no-such-preset", "--data", "d.jsonl", "--out", "o"]);
    assert_fails_with(&out, &["no-such-preset"]);
    let out = rlhf(&["bench", "--backend", "tpu"]);
    assert_fails_with(&out, &["--backend"]);
    let out = rlhf(&["generate", "--model", s(&fixture("gpt2")), "--prompt", "hi", "--top-p", "1.5"]);
    assert_fails_with(&out, &["--top-p"]);
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", "/no/such/data.jsonl", "--out", "o"]);
    assert_fails_with(&out, &["/no/such/data.jsonl"]);
}

#[test]
fn io_errors_name_the_path_once() {
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", "/no/such/data.jsonl", "--out", "o"]);
    assert_fails_with(&out, &["/no/such/data.jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    let out = rlhf(&["generate", "--model", "/nonexistent/model", "--prompt", "hi"]);
    assert_fails_with(&out, &["/nonexistent/model", "no such folder"]);
}

#[test]
fn sft_rejects_nonsense_numbers_before_loading() {
    let base = ["sft", "--init", "gpt2-tiny", "--data", "/no/such/data.jsonl", "--out", "o"];
    for (flag, value, needle) in [
        ("--lr", "-1", "--lr"),
        ("--beta2", "nan", "--beta2"),
        ("--beta1", "1.5", "--beta1"),
        ("--weight-decay", "-5", "--weight-decay"),
        ("--max-grad-norm", "nan", "--max-grad-norm"),
        ("--min-lr-ratio", "2", "--min-lr-ratio"),
        ("--batch-size", "18446744073709551615", "--batch-size"),
        ("--grad-accum", "18446744073709551615", "--grad-accum"),
        ("--threads", "100000", "--threads"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        assert_fails_with(&rlhf(&args), &[needle]);
    }
    // a refused run writes nothing, not even its run.toml into the relative --out
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR")).join("o").exists());
}

#[test]
fn sft_out_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\": \"hello\"}\n").unwrap();
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&data), "--steps", "1"]);
    assert_fails_with(&out, &["data.jsonl", "--out"]);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "{\"text\": \"hello\"}\n");
}

#[test]
fn sft_drops_examples_truncated_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    let long = format!("{{\"prompt\": \"{}\", \"completion\": \"world\"}}\n", "hello ".repeat(50));
    std::fs::write(&data, &long).unwrap();
    let (model, out_dir) = (fixture("gpt2"), dir.path().join("o"));
    let args = ["sft", "--model", s(&model), "--data", s(&data), "--out", s(&out_dir), "--steps", "2", "--batch-size", "1", "--seq-len", "16"];
    assert_fails_with(&rlhf(&args), &["--seq-len 16"]);
    // with one usable example the run goes on without the others
    std::fs::write(&data, long + "{\"text\": \"the cat sat\"}\n").unwrap();
    let out = rlhf(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipping 1 of 2 examples"));
}

#[test]
fn logprobs_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // a byte-order mark is accepted, as for sft
    std::fs::write(&input, "\u{feff}{\"input_ids\": [1, 2, 3]}\n").unwrap();
    let out = rlhf(&["logprobs", "--model", s(&fixture("gpt2")), "--input", s(&input)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = rlhf(&["logprobs", "--model", s(&fixture("gpt2")), "--input", s(&input), "--batch-size", "0"]);
    assert_fails_with(&out, &["--batch-size"]);
    // longer than the context (64 for the gpt2 fixture): the line is named
    let ids: Vec<u32> = (1..=65).collect();
    std::fs::write(&input, format!("{{\"input_ids\": [1, 2]}}\n{}\n", serde_json::json!({ "input_ids": ids }))).unwrap();
    let out = rlhf(&["logprobs", "--model", s(&fixture("gpt2")), "--input", s(&input)]);
    assert_fails_with(&out, &["in.jsonl:2", "64"]);
    // a broken tokenizer is reported, not taken for a missing one
    let model = dir.path().join("model");
    copy_dir(&fixture("gpt2"), &model);
    std::fs::write(model.join("tokenizer.json"), "garbage").unwrap();
    std::fs::write(&input, "{\"text\": \"hello\"}\n").unwrap();
    let out = rlhf(&["logprobs", "--model", s(&model), "--input", s(&input)]);
    assert_fails_with(&out, &["tokenizer.json"]);
    // a tokenizer whose ids go beyond the model's vocabulary
    let mut tj: Value = serde_json::from_str(&std::fs::read_to_string(fixture("gpt2").join("tokenizer.json")).unwrap()).unwrap();
    tj["added_tokens"].as_array_mut().unwrap().push(
        serde_json::json!({"id": 500, "content": "<|extra|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
    );
    tj["model"]["vocab"]["<|extra|>"] = serde_json::json!(500);
    std::fs::write(model.join("tokenizer.json"), tj.to_string()).unwrap();
    std::fs::write(&input, "{\"text\": \"hello <|extra|>\"}\n").unwrap();
    let out = rlhf(&["logprobs", "--model", s(&model), "--input", s(&input)]);
    assert_fails_with(&out, &["in.jsonl:1", "500"]);
}

#[test]
fn generate_edge_flags() {
    let gpt2 = fixture("gpt2");
    // more new tokens than fit: stops at the context instead of overflowing
    let out = rlhf(&["generate", "--model", s(&gpt2), "--prompt", "hi", "--max-new-tokens", "18446744073709551615", "--ignore-eos", "--temperature", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = rlhf(&["generate", "--model", s(&gpt2), "--prompt", "hi", "--temperature", "-1"]);
    assert_fails_with(&out, &["--temperature"]);
    let out = rlhf(&["generate", "--model", s(&gpt2), "--prompt", ""]);
    assert_fails_with(&out, &["--prompt"]);
    let out = rlhf(&["generate", "--model", s(&gpt2), "--prompt", "hi", "--threads", "100000"]);
    assert_fails_with(&out, &["--threads"]);
}

#[test]
fn absurd_sizes_are_errors_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("gpt2"), dir.path());
    let path = dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["n_layer"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = rlhf(&["generate", "--model", s(dir.path()), "--prompt", "hi"]);
    assert_fails_with(&out, &["config.json", "number of layers"]);
    let out = rlhf(&["bench", "--model", "gpt2-tiny", "--vocab", "10000000000", "--steps", "1"]);
    assert_fails_with(&out, &["vocab_size"]);
    let out = rlhf(&["bench", "--model", "gpt2-tiny", "--batch-size", "18446744073709551615", "--steps", "1"]);
    assert_fails_with(&out, &["--batch-size"]);
}

#[test]
fn rm_and_score_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prefs.jsonl");
    let mut lines = String::new();
    for i in 0..8 {
        lines.push_str(&format!("{{\"prompt\": \"q{i}:\", \"chosen\": \" yes\", \"rejected\": \" no\"}}\n"));
    }
    lines.push_str("{\"prompt\": \"rank:\", \"ranked\": [\" best\", \" ok\", \" worst\"]}\n");
    std::fs::write(&data, lines).unwrap();
    let out_dir = dir.path().join("rm");
    let out = rlhf(&[
        "rm",
        "--model",
        s(&fixture("qwen2")),
        "--data",
        s(&data),
        "--out",
        s(&out_dir),
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--seq-len",
        "32",
        "--eval-fraction",
        "0.3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("held-out pairwise accuracy"), "{stdout}");
    let rows: Vec<Value> = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for key in ["loss", "accuracy", "grad_norm", "lr", "tokens", "tokens_per_sec", "elapsed_s"] {
        assert!(rows[1][key].is_number(), "rm metrics lack {key}");
    }
    assert!(rows[1]["eval_accuracy"].is_number());
    // --init-from continues the reward model, score head included: at a negligible learning rate
    // the continued model keeps its weights, while a score head added to a language model is new
    let cont = dir.path().join("rm_continued");
    let out = rlhf(&["rm", "--init-from", s(&out_dir), "--data", s(&data), "--out", s(&cont), "--steps", "1", "--lr", "1e-20", "--seq-len", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let score_head = |d: &Path| -> Vec<u8> {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("score.weight").unwrap().data().to_vec()
    };
    assert_eq!(score_head(&cont), score_head(&out_dir), "--init-from keeps the score head");
    let out = rlhf(&["rm", "--init-from", s(&fixture("qwen2")), "--data", s(&data), "--out", s(&dir.path().join("rm_from_lm")), "--steps", "1"]);
    assert_fails_with(&out, &["--init-from", "not describe a reward model", "--model"]);
    let input = dir.path().join("score.jsonl");
    std::fs::write(&input, "{\"text\": \"q1: yes\"}\n{\"input_ids\": [3, 4, 5]}\n").unwrap();
    let out = rlhf(&["score", "--model", s(&out_dir), "--input", s(&input)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scores: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(scores.len(), 2);
    assert!(scores[0]["score"].is_number());
    // a causal LM is not a reward model
    let out = rlhf(&["score", "--model", s(&fixture("gpt2")), "--input", s(&input)]);
    assert_fails_with(&out, &["reward model"]);
    // a ranking with one completion, and a prompt longer than the context, name their line (into
    // a new folder: the trained reward model's is refused before the data is read)
    let out_dir = dir.path().join("rm2");
    std::fs::write(&data, "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"p\", \"ranked\": [\"a\"]}\n").unwrap();
    let out = rlhf(&["rm", "--model", s(&fixture("gpt2")), "--data", s(&data), "--out", s(&out_dir), "--steps", "1"]);
    assert_fails_with(&out, &["prefs.jsonl:2", "at least 2"]);
    let long = "x".repeat(100);
    std::fs::write(&data, format!("{{\"prompt\": \"{long}\", \"chosen\": \"a\", \"rejected\": \"b\"}}\n")).unwrap();
    let out = rlhf(&["rm", "--model", s(&fixture("gpt2")), "--data", s(&data), "--out", s(&out_dir), "--steps", "1"]);
    assert_fails_with(&out, &["prefs.jsonl:1", "no room"]);
}

/// `--algo a2c` is one unclipped step over the whole rollout batch per step: the same run as PPO
/// with one epoch, one minibatch and clip ranges that never bind; flags that contradict it are
/// refused.
#[test]
fn ppo_algo_a2c_takes_one_unclipped_step_per_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let prefs = dir.path().join("prefs.jsonl");
    std::fs::write(&prefs, (0..4).map(|i| format!("{{\"prompt\": \"q{i}:\", \"chosen\": \" yes\", \"rejected\": \" no\"}}\n")).collect::<String>()).unwrap();
    let rm_dir = dir.path().join("rm");
    let out = rlhf(&["rm", "--model", s(&fixture("gpt2")), "--data", s(&prefs), "--out", s(&rm_dir), "--steps", "1", "--eval-fraction", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"hello\"}\n{\"prompt\": \"hi there\"}\n{\"prompt\": \"ok\"}\n").unwrap();
    let gpt2 = fixture("gpt2");
    let run = |name: &str, extra: &[&str]| {
        let out_dir = dir.path().join(name);
        let base = ["ppo", "--policy", s(&gpt2), "--reward-model", s(&rm_dir), "--prompts", s(&prompts), "--out", s(&out_dir)];
        let out = rlhf(&[&base[..], &["--steps", "2", "--rollout-batch", "3", "--max-new-tokens", "5", "--lr", "1e-3", "--value-lr", "1e-3"], extra].concat());
        (out, out_dir)
    };
    let (out, a2c) = run("a2c", &["--algo", "a2c"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (out, ppo) = run("ppo1", &["--ppo-epochs", "1", "--mini-batch", "3", "--clip", "0.999999", "--value-clip", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = |d: &Path| -> Vec<Value> { std::fs::read_to_string(d.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let (ra, rp) = (rows(&a2c), rows(&ppo));
    for (x, y) in ra.iter().zip(&rp) {
        assert_eq!(x["clipfrac"].as_f64(), Some(0.0), "the ratio never leaves 1 in A2C's single step");
        for key in ["policy_loss", "value_loss", "reward_mean", "kl_k1"] {
            assert_eq!(x[key], y[key], "{key}");
        }
    }
    // and it differs from the default PPO schedule (4 epochs of minibatches of 8... here 3)
    let (out, default_ppo) = run("ppo4", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(rows(&default_ppo)[1]["policy_loss"], ra[1]["policy_loss"]);
    let (out, _) = run("bad", &["--algo", "a2c", "--ppo-epochs", "4"]);
    assert_fails_with(&out, &["--algo a2c", "--ppo-epochs does not apply"]);
    let (out, _) = run("bad2", &["--algo", "a2c", "--clip", "0.2"]);
    assert_fails_with(&out, &["--clip does not apply"]);
}

#[test]
fn ppo_command_trains_and_rejects_mismatched_models() {
    let dir = tempfile::tempdir().unwrap();
    let prefs = dir.path().join("prefs.jsonl");
    std::fs::write(&prefs, (0..6).map(|i| format!("{{\"prompt\": \"q{i}:\", \"chosen\": \" yes\", \"rejected\": \" no\"}}\n")).collect::<String>()).unwrap();
    let rm_dir = dir.path().join("rm");
    let out = rlhf(&["rm", "--model", s(&fixture("gpt2")), "--data", s(&prefs), "--out", s(&rm_dir), "--steps", "2", "--eval-fraction", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"hello\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n").unwrap();
    let ppo_dir = dir.path().join("ppo");
    let gpt2 = fixture("gpt2");
    let args = ["ppo", "--policy", s(&gpt2), "--reward-model", s(&rm_dir), "--prompts", s(&prompts), "--out", s(&ppo_dir)];
    let out = rlhf(&[&args[..], &["--steps", "2", "--rollout-batch", "2", "--mini-batch", "1", "--max-new-tokens", "6", "--lr", "1e-4"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = std::fs::read_to_string(ppo_dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for key in [
        "reward_mean",
        "reward_std",
        "rm_score",
        "kl_k1",
        "kl_k3",
        "beta",
        "policy_loss",
        "value_loss",
        "clipfrac",
        "approx_kl",
        "entropy",
        "explained_variance",
        "response_len",
        "rollout_s",
        "scoring_s",
        "training_s",
        "rollout_tokens_per_sec",
        "scoring_tokens_per_sec",
        "training_tokens_per_sec",
    ] {
        assert!(rows[1][key].is_number(), "ppo metrics lack {key}: {}", rows[1]);
    }
    assert!(ppo_dir.join("model.safetensors").exists());
    // the same command again would replace the run: refused, the run kept
    assert_fails_with(&rlhf(&[&args[..], &["--steps", "2"]].concat()), &["--overwrite", "--resume"]);
    assert_eq!(std::fs::read_to_string(ppo_dir.join("metrics.jsonl")).unwrap().lines().count(), 2);
    // PPO-ptx on SFT data, and micro-batches sized by a token budget
    let ptx = dir.path().join("ptx.jsonl");
    std::fs::write(&ptx, "{\"text\": \"the cat sat on the mat\"}\n{\"prompt\": \"a\", \"completion\": \" b\"}\n").unwrap();
    let ptx_dir = dir.path().join("ppo_ptx");
    let ptx_args = ["--out", s(&ptx_dir), "--steps", "1", "--rollout-batch", "2", "--mini-batch", "2", "--max-new-tokens", "4", "--micro-batch-tokens", "8"];
    let out = rlhf(&[&args[..7], &ptx_args[..], &["--ptx-data", s(&ptx), "--ptx-coef", "0.5", "--value-head"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row: Value = serde_json::from_str(std::fs::read_to_string(ptx_dir.join("metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert!(row["ptx_loss"].as_f64().unwrap() > 0.0, "{row}");
    let out = rlhf(&[&args[..7], &ptx_args[..], &["--ptx-coef", "0.5", "--overwrite"]].concat());
    assert_fails_with(&out, &["--ptx-data"]);
    assert!(ptx_dir.join("metrics.jsonl").exists(), "a refused --overwrite run removed the old run");
    // the refusals below, each for its own reason, into a folder with no run (they write nothing)
    std::fs::remove_dir_all(&ppo_dir).unwrap();
    // a causal LM is not a reward model
    let out = rlhf(&[&args[..3], &["--reward-model", s(&gpt2), "--prompts", s(&prompts), "--out", s(&ppo_dir)]].concat());
    assert_fails_with(&out, &["reward model"]);
    // a reward model with another tokenizer
    let byte_rm = dir.path().join("byte_rm");
    let out = rlhf(&["rm", "--init", "gpt2-tiny", "--data", s(&prefs), "--out", s(&byte_rm), "--steps", "1", "--eval-fraction", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = rlhf(&["ppo", "--policy", s(&gpt2), "--reward-model", s(&byte_rm), "--prompts", s(&prompts), "--out", s(&ppo_dir)]);
    assert_fails_with(&out, &["tokenizer"]);
    // greedy sampling cannot be trained on, and a bad prompts line is named
    let out = rlhf(&[&args[..], &["--temperature", "0"]].concat());
    assert_fails_with(&out, &["--temperature"]);
    std::fs::write(&prompts, "{\"prompt\": \"fine\"}\n{\"question\": \"no\"}\n").unwrap();
    let out = rlhf(&args);
    assert_fails_with(&out, &["prompts.jsonl:2"]);
    // a prompt longer than the context (64 positions for the fixture)
    std::fs::write(&prompts, format!("{{\"prompt\": \"{}\"}}\n", "word ".repeat(100))).unwrap();
    let out = rlhf(&args);
    assert_fails_with(&out, &["prompts.jsonl:1", "no room"]);
    assert!(!ppo_dir.exists(), "a refused run created its output folder");
}

#[test]
fn backend_cuda_says_why_it_is_unavailable() {
    let info = rlhf(&["info"]);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("  cuda  "), "{info}");
    let Err(why) = rlhf::backend::cuda::availability() else { return };
    assert!(info.contains(&why), "{info}");
    let out = rlhf(&["bench", "--backend", "cuda", "--model", "gpt2-tiny", "--batch-size", "1", "--seq-len", "8", "--steps", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--backend cuda") && stderr.contains(&why) && !stderr.contains("panicked"), "{stderr}");
}

/// `--matmul-precision`: the cpu backend takes only f32 (an error naming the flag and the backend,
/// from the command line or from a `--config` file's `matmul_precision` key); an unknown value is
/// clap's error naming the flag; the resolved run.toml records the value.
#[test]
fn matmul_precision_flag_and_config_key() {
    let bench = ["bench", "--model", "gpt2-tiny", "--batch-size", "1", "--seq-len", "8", "--steps", "1"];
    let out = rlhf(&[&bench[..], &["--matmul-precision", "f16"]].concat());
    assert_fails_with(&out, &["--matmul-precision f16", "cpu"]);
    let out = rlhf(&[&bench[..], &["--matmul-precision", "fp8"]].concat());
    assert_fails_with(&out, &["--matmul-precision", "fp8"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "matmul_precision = \"bf16\"\n").unwrap();
    let out = rlhf(&[&bench[..], &["--config", s(&cfg)]].concat());
    assert_fails_with(&out, &["--matmul-precision bf16", "cpu"]);
    // the command line overrides the file
    let out = rlhf(&[&bench[..], &["--config", s(&cfg), "--matmul-precision", "f32"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("matmul precision f32"));
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\": \"the cat sat on the mat\"}\n").unwrap();
    let run = dir.path().join("sft");
    let out = rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&run), "--steps", "1", "--batch-size", "1", "--seq-len", "16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resolved = std::fs::read_to_string(run.join("run.toml")).unwrap();
    assert!(resolved.contains("matmul_precision = \"f32\""), "{resolved}");
}

/// A model folder with the built-in byte-level tokenizer (264 tokens) and `vocab` embedding rows.
fn byte_model(dir: &Path, preset: &str, vocab: usize, seed: u64) {
    let be = rlhf::backend::CpuBackend::new();
    let model = rlhf::model::Model::init(&be, rlhf::model::ModelConfig::preset(preset, vocab).unwrap(), seed).unwrap();
    model.save(&be, dir, &rlhf::data::tokenizer::Tokenizer::byte_level()).unwrap();
}

/// Writes NaN over the first value of the data section of the safetensors file at `path`.
fn poison_first_value(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..8 + header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A model whose embedding rows are padded past its tokenizer's vocabulary (as Qwen2's are)
/// never samples an id the tokenizer cannot decode: `rlhf generate` at a high temperature on a
/// random model with 736 padded rows of 1000 finishes, and the library's `generate` keeps every
/// id below the limit (without the limit, most ids land in the padding).
#[test]
fn sampling_never_picks_ids_beyond_the_tokenizer() {
    use rlhf::generate::{generate, GenerateConfig};
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("padded");
    byte_model(&m, "gpt2-tiny", 1000, 3);
    let out = rlhf(&["generate", "--model", s(&m), "--prompt", "hello", "--max-new-tokens", "40", "--temperature", "3", "--ignore-eos", "--seed", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let be = rlhf::backend::CpuBackend::new();
    let model = rlhf::model::Model::load(&be, &m).unwrap();
    let cfg = GenerateConfig { max_new_tokens: 60, temperature: 3.0, seed: 9, vocab_limit: Some(264), ..GenerateConfig::default() };
    let ids = generate(&be, &model, &[104, 105], &cfg).unwrap();
    assert!(ids.len() == 60 && ids.iter().all(|&t| t < 264), "{ids:?}");
    let free = generate(&be, &model, &[104, 105], &GenerateConfig { vocab_limit: None, ..cfg }).unwrap();
    assert!(free.iter().any(|&t| t >= 264), "an unmasked sample should reach the padding: {free:?}");
}

/// Weights or a checkpoint holding NaN are refused at load, naming the tensor, instead of
/// printing nulls or training on.
#[test]
fn non_finite_weights_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("nan");
    copy_dir(&fixture("gpt2"), &m);
    poison_first_value(&m.join("model.safetensors"));
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"input_ids\": [1, 2, 3]}\n").unwrap();
    assert_fails_with(&rlhf(&["logprobs", "--model", s(&m), "--input", s(&input)]), &["non-finite", "tensor `"]);
    let data = dir.path().join("d.jsonl");
    std::fs::write(&data, "{\"text\": \"hello there\"}\n").unwrap();
    let out = dir.path().join("sft");
    assert_fails_with(&rlhf(&["sft", "--model", s(&m), "--data", s(&data), "--out", s(&out), "--steps", "1"]), &["non-finite"]);
    assert!(!out.exists());
    // a checkpoint full of NaN is refused on --resume
    let run = dir.path().join("run");
    let args = ["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&run), "--steps", "2", "--seq-len", "16"];
    assert!(rlhf(&args).status.success());
    poison_first_value(&run.join("checkpoints/step-00000002/state.safetensors"));
    assert_fails_with(&rlhf(&[&args[..], &["--resume", s(&run)]].concat()), &["non-finite", "state.safetensors"]);
}

/// Preference data that says nothing — `chosen` equal to `rejected`, or a ranking that lists a
/// completion twice — is refused with its line.
#[test]
fn preference_lines_without_a_preference_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prefs.jsonl");
    let out = dir.path().join("rm");
    let good = "{\"prompt\": \"q\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n";
    for (bad, needle) in [
        ("{\"prompt\": \"q\", \"chosen\": \" same\", \"rejected\": \" same\"}\n", "are the same text"),
        ("{\"prompt\": \"q\", \"ranked\": [\" a\", \" b\", \" a\"]}\n", "positions 1 and 3"),
    ] {
        std::fs::write(&data, format!("{good}{bad}")).unwrap();
        assert_fails_with(&rlhf(&["rm", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&out), "--steps", "1"]), &["prefs.jsonl:2", needle]);
        assert_fails_with(&rlhf(&["dpo", "--model", s(&fixture("gpt2")), "--data", s(&data), "--out", s(&out), "--steps", "1"]), &["prefs.jsonl:2"]);
    }
}

/// Each misleading message of the past names its real cause now.
#[test]
fn messages_name_the_real_cause() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    // a flag of this command, not another's
    let out_s = s(&out);
    let ppo = ["ppo", "--policy", "p", "--reward-model", "r", "--prompts", "q.jsonl", "--out", out_s];
    assert_fails_with(&rlhf(&[&ppo[..], &["--kl-in-loss", "4"]].concat()), &["--kl-in-loss 4"]);
    // negative numbers reach the flag's own check
    let data = d.join("three.jsonl");
    std::fs::write(&data, "{\"text\": \"a b c\"}\n{\"text\": \"d e f\"}\n{\"text\": \"g h i\"}\n").unwrap();
    assert_fails_with(&rlhf(&["rm", "--init", "gpt2-tiny", "--data", s(&data), "--out", out_s, "--eval-fraction", "-0.5"]), &["--eval-fraction"]);
    assert_fails_with(&rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", out_s, "--steps", "-1"]), &["--steps", "-1"]);
    // a value of the wrong type in a configuration file names the file and the key
    let cfg = d.join("bad.toml");
    std::fs::write(&cfg, "steps = \"ten\"\n").unwrap();
    assert_fails_with(&rlhf(&["sft", "--config", s(&cfg), "--init", "gpt2-tiny", "--data", s(&data), "--out", out_s]), &["bad.toml", "`steps`", "ten"]);
    // an absurd batch names the flags that sized it; logprobs sizes its batch by the input
    assert_fails_with(&rlhf(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", out_s, "--batch-size", "1000000000"]), &["--batch-size 1000000000"]);
    assert!(!out.exists());
    let ids = d.join("ids.jsonl");
    std::fs::write(&ids, "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 5]}\n").unwrap();
    let res = rlhf(&["logprobs", "--model", s(&fixture("gpt2")), "--input", s(&ids), "--batch-size", "1000000000"]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(String::from_utf8_lossy(&res.stdout).lines().count(), 2);
    // a size of 0 in config.json is named by its key
    for (key, family) in [("n_embd", "gpt2"), ("n_layer", "gpt2"), ("n_positions", "gpt2"), ("num_hidden_layers", "llama")] {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture(family).join("config.json")).unwrap()).unwrap();
        v[key] = Value::from(0);
        let err = rlhf::model::ModelConfig::from_hf_json(&v).unwrap_err();
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
}

/// A reference, value or reward model of another architecture than the policy (same tokenizer)
/// is refused up front, saying which models differ and how.
#[test]
fn models_of_another_architecture_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (policy, llama) = (d.join("policy"), d.join("llama"));
    byte_model(&policy, "gpt2-tiny", 264, 1);
    byte_model(&llama, "llama-tiny", 264, 2);
    let prefs = d.join("prefs.jsonl");
    std::fs::write(&prefs, "{\"prompt\": \"q\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n{\"prompt\": \"r\", \"chosen\": \" a\", \"rejected\": \" b\"}\n").unwrap();
    let (rm, llama_rm) = (d.join("rm"), d.join("llama_rm"));
    for (dir, preset) in [(&rm, "gpt2-tiny"), (&llama_rm, "llama-tiny")] {
        let res = rlhf(&["rm", "--init", preset, "--data", s(&prefs), "--out", s(dir), "--steps", "1", "--eval-fraction", "0"]);
        assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    }
    let prompts = d.join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"hello\"}\n").unwrap();
    let ppo = |reference: &Path, reward: &Path, out: &str| {
        rlhf(&["ppo", "--policy", s(&policy), "--reference", s(reference), "--reward-model", s(reward), "--prompts", s(&prompts), "--out", s(&d.join(out)), "--steps", "1"])
    };
    assert_fails_with(&ppo(&llama, &rm, "a"), &["reference model", "model_type gpt2 vs llama"]);
    assert_fails_with(&ppo(&policy, &llama_rm, "b"), &["value model", "--value-model"]);
    let dpo = rlhf(&["dpo", "--model", s(&policy), "--ref-model", s(&llama), "--data", s(&prefs), "--out", s(&d.join("c")), "--steps", "1"]);
    assert_fails_with(&dpo, &["reference model", "model_type gpt2 vs llama"]);
}

/// A reward model trained from a config whose only end token lies outside the vocabulary (GPT-2's
/// 50256 over a small tokenizer) and that names no pad token records the tokenizer's pad token,
/// never an id at or above the vocabulary size.
#[test]
fn a_reward_model_never_records_a_pad_id_outside_its_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("base");
    byte_model(&m, "gpt2-tiny", 264, 4);
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(m.join("config.json")).unwrap()).unwrap();
    cfg["eos_token_id"] = Value::from(50256);
    cfg.as_object_mut().unwrap().remove("pad_token_id");
    std::fs::write(m.join("config.json"), cfg.to_string()).unwrap();
    let prefs = dir.path().join("prefs.jsonl");
    std::fs::write(&prefs, "{\"prompt\": \"q\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n{\"prompt\": \"r\", \"chosen\": \" a\", \"rejected\": \" b\"}\n").unwrap();
    let rm = dir.path().join("rm");
    let out = rlhf(&["rm", "--model", s(&m), "--data", s(&prefs), "--out", s(&rm), "--steps", "1", "--eval-fraction", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(rm.join("config.json")).unwrap()).unwrap();
    let pad = saved["pad_token_id"].as_u64().expect("a pad_token_id");
    assert!(pad < 264, "pad_token_id {pad} is outside the vocabulary of 264");
    assert_eq!(pad as u32, rlhf::data::tokenizer::Tokenizer::byte_level().pad_or_default());
}

/// A process started as one rank of a job (torchrun's variables here) by a build without the `mpi`
/// feature refuses to train instead of running an independent copy into the same folder, and
/// says how to build one that can; `rlhf info` shows the rank and why no collective is there; a
/// malformed launch variable is named.
#[test]
#[cfg(not(feature = "mpi"))]
fn a_job_without_a_collective_engine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(&data, "{\"text\": \"hello\"}\n").unwrap();
    let job = |args: &[&str], rank: &str| Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).env("RANK", rank).env("WORLD_SIZE", "2").output().unwrap();
    let out = job(&["sft", "--init", "gpt2-tiny", "--data", s(&data), "--out", s(&dir.path().join("o")), "--steps", "1"], "1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rank 1 of 2 (torchrun launch)") && err.contains("--features mpi"), "{err}");
    assert!(!dir.path().join("o").exists(), "nothing written");
    let out = job(&["generate", "--model", "/nonexistent", "--prompt", "hi"], "0");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`rlhf generate` runs as a single process"));
    let out = job(&["info"], "1");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data-parallel: rank 1 of 2") && text.contains("collective unavailable"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).arg("info").env("RANK", "3").env("WORLD_SIZE", "2").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RANK=3 is not a rank of WORLD_SIZE=2"));
}
