//! Every folder `rlhf` saves is a complete Hugging Face model folder: `sft`, `rm`, `dpo`, `ppo`
//! and `grpo` outputs of each family (the GPT-2, Llama and Qwen2 fixtures with their
//! `tokenizers` tokenizer, and the same three architectures from scratch with the built-in byte
//! tokenizer) are opened in `transformers` by tests/fixtures/check_hf_folder.py, which checks
//! the special-token ids, that every dropout probability is 0, that `AutoTokenizer` encodes to
//! `rlhf`'s ids, that greedy `generate` stops where `rlhf generate` stops, and that a reward
//! model scores as `rlhf score` does.
//!
//! Needs a Python with torch and transformers in `RLHF_HF_PYTHON` (.ci/run makes one); without
//! it the test skips, and under CI=true it fails.

use rlhf::data::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn hf_python() -> Option<String> {
    match std::env::var("RLHF_HF_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true: RLHF_HF_PYTHON (a Python with torch and transformers) is not set; .ci/run sets it"),
        _ => {
            eprintln!("skipping: set RLHF_HF_PYTHON to a Python with torch and transformers");
            None
        }
    }
}

const TEXTS: [&str; 5] = ["hello world", "Ça va? naïve café, Straße", "emoji 🎉👩‍💻!", "中文字符，日本語のテキスト", "two  spaces\tand\nlines"];
const PROMPT: &str = "hello ";
const MAX_NEW: usize = 24;

/// What rlhf says about folder `dir`, for check_hf_folder.py.
fn expectations(dir: &Path, kind: &str, stopped_required: bool) -> Value {
    let tok = Tokenizer::load(dir).unwrap();
    let mut encodings = Vec::new();
    for text in TEXTS {
        for add in [false, true] {
            encodings.push(json!({"text": text, "add_special": add, "ids": tok.encode(text, add).unwrap()}));
        }
    }
    let mut entry = json!({"dir": s(dir), "kind": kind, "encodings": encodings});
    if kind == "lm" {
        let max_new = MAX_NEW.to_string();
        let text = ok(rlhf(&["generate", "--model", s(dir), "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", &max_new]), "rlhf generate");
        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
        entry["generate"] = json!({"prompt": PROMPT, "max_new_tokens": MAX_NEW, "text": text, "stopped": stopped_required});
    } else {
        let input = dir.join("score-input.jsonl");
        std::fs::write(&input, "{\"text\": \"hello world\"}\n{\"text\": \"hello there, a longer one\"}\n").unwrap();
        let scores: Vec<Value> = ok(rlhf(&["score", "--model", s(dir), "--input", s(&input)]), "rlhf score").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        std::fs::remove_file(&input).unwrap();
        entry["scores"] = json!(scores.iter().map(|r| json!({"input_ids": r["input_ids"], "score": r["score"]})).collect::<Vec<_>>());
    }
    entry
}

#[test]
fn every_command_saves_a_folder_transformers_loads_as_rlhf_runs_it() {
    let Some(python) = hf_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sft_data = root.join("sft.jsonl");
    std::fs::write(&sft_data, "{\"prompt\": \"hello \", \"completion\": \"world\"}\n".repeat(8)).unwrap();
    let prefs = root.join("prefs.jsonl");
    std::fs::write(&prefs, (0..4).map(|i| format!("{{\"prompt\": \"q{i}: \", \"chosen\": \"yes\", \"rejected\": \"no\"}}\n")).collect::<String>()).unwrap();
    let prompts = root.join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"hello \"}\n{\"prompt\": \"q1: \"}\n").unwrap();

    let gpt2 = fixture("gpt2");
    let llama = fixture("llama");
    let qwen2 = fixture("qwen2");
    let families: [(&str, [&str; 2]); 6] = [
        ("gpt2", ["--model", s(&gpt2)]),
        ("llama", ["--model", s(&llama)]),
        ("qwen2", ["--model", s(&qwen2)]),
        ("gpt2-bytes", ["--init", "gpt2-tiny"]),
        ("llama-bytes", ["--init", "llama-tiny"]),
        ("qwen2-bytes", ["--init", "qwen2-tiny"]),
    ];
    let mut entries = Vec::new();
    for (name, source) in families {
        let out = |cmd: &str| root.join(format!("{cmd}-{name}"));
        let (sft, rm, dpo, ppo, grpo) = (out("sft"), out("rm"), out("dpo"), out("ppo"), out("grpo"));
        // enough steps at a high rate that the model learns to end "hello world" with eos
        let quiet = ["--log-every", "0", "--seq-len", "32"];
        ok(rlhf(&[&["sft"], &source[..], &["--data", s(&sft_data), "--out", s(&sft), "--steps", "60", "--lr", "1e-2", "--batch-size", "4"], &quiet[..]].concat()), "sft");
        ok(rlhf(&[&["rm", "--model", s(&sft), "--data", s(&prefs), "--out", s(&rm), "--steps", "2", "--eval-fraction", "0"], &quiet[..]].concat()), "rm");
        ok(rlhf(&[&["dpo", "--model", s(&sft), "--data", s(&prefs), "--out", s(&dpo), "--steps", "1", "--lr", "1e-6", "--eval-fraction", "0"], &quiet[..]].concat()), "dpo");
        let rl = ["--prompts", s(&prompts), "--reward-model", s(&rm), "--steps", "1", "--max-new-tokens", "4", "--lr", "1e-7", "--log-every", "0"];
        ok(rlhf(&[&["ppo", "--policy", s(&sft), "--out", s(&ppo), "--rollout-batch", "2", "--mini-batch", "2"], &rl[..]].concat()), "ppo");
        ok(rlhf(&[&["grpo", "--model", s(&sft), "--out", s(&grpo), "--group-size", "2", "--prompts-per-step", "2", "--mini-batch", "4"], &rl[..]].concat()), "grpo");
        entries.push(expectations(&sft, "lm", true));
        entries.push(expectations(&rm, "reward", false));
        for d in [&dpo, &ppo, &grpo] {
            entries.push(expectations(d, "lm", false));
        }
    }
    let expect = root.join("expect.json");
    std::fs::write(&expect, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check_hf_folder.py");
    let out = Command::new(&python).arg(&script).arg(&expect).output().expect("running the transformers check");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "transformers disagrees with rlhf's folders:\n{report}");
    assert!(report.contains(&format!("{n} of {n} folders complete", n = entries.len())), "{report}");
}
