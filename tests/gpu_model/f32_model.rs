//! Whole models on the GPU backends (`wgpu::*` and `cuda::*`, the same checks for both): the
//! transformers fixtures' log-probs through `rlhf logprobs --backend <gpu>`, one SFT step's loss
//! and gradient norm, greedy generation, the rollout engine with several decode steps between
//! read-backs, a PPO step against the CPU backend, and every command run with `--backend <gpu>`;
//! on wgpu also SFT steps with `--matmul-precision f16` against f32 (2e-3 relative on the loss,
//! see the test) and the flag's errors.
//!
//! Tolerances (f32 everywhere, `--precision f32` where a command is compared; the GPU sums in
//! another order than the CPU; bf16 storage has its own checks in tests/gpu_model/bf16_model.rs): log-probs 1e-4
//! absolute against transformers (as on the CPU); loss and gradient norm 2e-4 relative; a PPO
//! step's losses and statistics 1e-3 relative (or 1e-5 absolute for values near 0) and the
//! log-probs after the step 2e-4 absolute against the CPU backend; rollout log-probs 1e-3
//! absolute against the training forward (as in tests/training/grpo.rs).
//! On cuda also the CUDA graphs of the rollout engine's decode chunks: the same tokens and log-prob
//! bits as the plain launches (`RLHF_CUDA_GRAPHS=0`), and `Backend::replay` itself (a warm-up,
//! then replays that run the recorded launches; a capture that fails falls back to plain launches).
//! And the streams of `Backend::concurrently` (`cuda_streams::`): tasks on lanes of their own give
//! the bits of the same tasks on one stream, and `rlhf ppo` / `rlhf grpo` (whose scoring phases
//! overlap) log the same metrics with `RLHF_CUDA_STREAMS=0` and `1`.
//! Without a wgpu adapter the wgpu tests print that they skipped, and fail with `CI=true`; without
//! a GPU driver the cuda tests run on the CUDA emulator (tests/cuda_emu), and without NVRTC or a
//! C++ compiler they print that they skipped (fail with `CI=true`).

use crate::common;

use common::fixtures::{fixture, fixture_batch, ids_of, noisy_host_weights, ppo_batch, reference, rel, MODELS};

use rlhf::backend::ops::PpoParams;
use rlhf::backend::{Backend, CpuBackend, MatmulPrecision};
use rlhf::generate::{generate, rollout, GenerateConfig, RolloutConfig, RolloutEngine};
use rlhf::model::scoring::token_logprobs;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::policy_update::{PpoStats, PpoUpdate};
use rlhf::train::lm::LmTrainer;
use rlhf::train::AdamWConfig;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn rlhf(args: &[&str]) -> Output {
    rlhf_with_env(args, &[])
}

fn rlhf_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).envs(env.iter().copied()).output().expect("running rlhf")
}

#[track_caller]
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "rlhf failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn logprobs_command_matches_transformers(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let r = reference(name);
        let input = dir.path().join(format!("{name}.jsonl"));
        let lines: Vec<String> = r["input_ids"].as_array().unwrap().iter().map(|ids| serde_json::json!({ "input_ids": ids }).to_string()).collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let stdout = ok(&rlhf(&["logprobs", "--backend", backend, "--precision", "f32", "--model", s(&fixture(name)), "--input", s(&input)]));
        let rows: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), r["input_ids"].as_array().unwrap().len(), "{name}: one output line per input line");
        let mut worst = 0f64;
        for (row, want) in rows.iter().zip(r["logprobs"].as_array().unwrap()) {
            let got = row["logprobs"].as_array().unwrap();
            assert_eq!(got.len(), want.as_array().unwrap().len());
            for (a, b) in got.iter().zip(want.as_array().unwrap()) {
                worst = worst.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
            }
        }
        assert!(worst < 1e-4, "{name}: max |logprob({backend}) - transformers| = {worst}");
    }
}

/// The fixture's sequences as one batch, targets before `prompt_mask` masked.
fn loss_and_grad_norm<B: Backend>(be: &B, name: &str, prompt_mask: usize) -> (f32, f32) {
    let model = Model::load(be, &fixture(name)).unwrap();
    let batch = fixture_batch(name, prompt_mask);
    let mut trainer = LmTrainer::new(be, &model, batch.b, batch.b * batch.t, AdamWConfig::default()).unwrap();
    trainer.zero_grad(be).unwrap();
    trainer.accumulate(be, &model, &batch, 1.0 / batch.n_supervised as f32).unwrap();
    let stats = trainer.peek(be).unwrap();
    (stats.loss, stats.grad_norm)
}

/// The loss before each of `steps` AdamW steps (lr 1e-3) on the fixture's batch.
fn sft_losses<B: Backend>(be: &B, name: &str, steps: usize) -> Vec<f32> {
    let mut model = Model::load(be, &fixture(name)).unwrap();
    let batch = fixture_batch(name, 0);
    let mut trainer = LmTrainer::new(be, &model, batch.b, batch.b * batch.t, AdamWConfig::default()).unwrap();
    (0..steps)
        .map(|_| {
            trainer.zero_grad(be).unwrap();
            trainer.accumulate(be, &model, &batch, 1.0 / batch.n_supervised as f32).unwrap();
            trainer.step(be, &mut model, 1e-3).unwrap().loss
        })
        .collect()
}

/// SFT with `--matmul-precision f16` (every matmul, forward and backward, with f16 operands):
/// the loss before each of 5 steps is within 2e-3 relative of the f32 mode's and decreases.
/// 2e-3: each matmul moves its outputs by ~2^-11 relative (operand rounding, random signs), which
/// the loss averages over tokens; the updates then differ as little (seen on lavapipe with the
/// 2-layer fixtures: at most 2.5e-4, 8x below the tolerance).
#[test]
fn sft_steps_with_f16_matmuls_track_f32() {
    let Some(g32) = common::wgpu_or_skip("SFT in f16 on wgpu") else { return };
    let Ok(g16) = rlhf::backend::WgpuBackend::with_matmul_precision(MatmulPrecision::F16) else {
        eprintln!("SKIPPED SFT in f16 on wgpu: the adapter lacks shader-f16");
        return;
    };
    for name in ["gpt2", "llama"] {
        let (l32, l16) = (sft_losses(&g32, name, 5), sft_losses(&g16, name, 5));
        for (i, (a, b)) in l16.iter().zip(&l32).enumerate() {
            assert!(rel(*a as f64, *b as f64) < 2e-3, "{name} step {i}: loss f16 {a} vs f32 {b}");
        }
        assert!(l16[4] < l16[0] - 0.05, "{name}: the f16 loss does not decrease: {l16:?}");
        assert!(l16 != l32, "{name}: f16 and f32 losses are identical: the f16 matmuls did not run");
    }
}

/// `--matmul-precision` errors on wgpu: bf16 / tf32 (WGSL has no such types), and f16 on an
/// adapter without shader-f16 (simulated with RLHF_WGPU_NO_SHADER_F16=1), naming the adapter;
/// `f16` runs a command and shows on the backend line.
#[test]
fn matmul_precision_flag_on_wgpu() {
    if common::wgpu_or_skip("--matmul-precision on wgpu").is_none() {
        return;
    }
    let bench = ["bench", "--backend", "wgpu", "--model", "gpt2-tiny", "--batch-size", "2", "--seq-len", "8", "--steps", "1", "--matmul-precision"];
    for bad in ["bf16", "tf32"] {
        let out = rlhf(&[&bench[..], &[bad]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&format!("--matmul-precision {bad}")) && stderr.contains("WGSL"), "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args([&bench[..], &["f16"]].concat()).env("RLHF_WGPU_NO_SHADER_F16", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let adapter = rlhf::backend::wgpu::adapters()[0].get_info().name;
    assert!(!out.status.success() && stderr.contains("lacks shader-f16") && stderr.contains(&adapter) && !stderr.contains("panicked"), "{stderr}");
    if !rlhf::backend::wgpu::adapters()[0].features().contains(::wgpu::Features::SHADER_F16) {
        return;
    }
    let out = rlhf(&[&bench[..], &["f16"]].concat());
    let stdout = ok(&out);
    assert!(stdout.contains("matmul precision f16") && String::from_utf8_lossy(&out.stderr).contains("[matmul f16]"), "{stdout}");

    // `rlhf sft` in f16 and in f32 from the same checkpoint and data: the logged losses agree
    // within the 2e-3 of sft_steps_with_f16_matmuls_track_f32, and the run.toml records f16
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"hello \", \"completion\": \"world\"}\n{\"text\": \"the cat sat on the mat\"}\n").unwrap();
    let gpt2 = fixture("gpt2");
    let losses = |precision: &str| {
        let run = dir.path().join(precision);
        let args = ["sft", "--backend", "wgpu", "--model", s(&gpt2), "--data", s(&data), "--out", s(&run), "--steps", "4", "--batch-size", "2"];
        ok(&rlhf(&[&args[..], &["--lr", "1e-3", "--matmul-precision", precision]].concat()));
        let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
        assert!(toml.contains(&format!("matmul_precision = \"{precision}\"")), "{toml}");
        let rows = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        rows.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap()).collect::<Vec<f64>>()
    };
    let (l16, l32) = (losses("f16"), losses("f32"));
    assert_eq!(l16.len(), 4);
    for (a, b) in l16.iter().zip(&l32) {
        assert!(rel(*a, *b) < 2e-3, "rlhf sft losses: f16 {l16:?} vs f32 {l32:?}");
    }
    assert!(l16[3] < l16[0] && l16 != l32, "rlhf sft in f16: the loss does not decrease, or equals f32's: {l16:?}");
}

fn sft_step_matches_transformers<B: Backend>(g: &B) {
    for name in MODELS {
        let r = reference(name);
        let k = r["prompt_mask_len"].as_u64().unwrap() as usize;
        for (mask, loss_key, norm_key) in [(0, "loss", "grad_norm"), (k, "masked_loss", "masked_grad_norm")] {
            let (loss, norm) = loss_and_grad_norm(g, name, mask);
            let (want_loss, want_norm) = (r[loss_key].as_f64().unwrap(), r[norm_key].as_f64().unwrap());
            assert!(rel(loss as f64, want_loss) < 2e-4, "{name} on {}: {loss_key} {loss} vs transformers {want_loss}", g.name());
            assert!(rel(norm as f64, want_norm) < 2e-4, "{name} on {}: {norm_key} {norm} vs transformers {want_norm}", g.name());
        }
    }
}

fn greedy_generation_matches_transformers<B: Backend>(g: &B) {
    for name in MODELS {
        let r = reference(name);
        let model = Model::load(g, &fixture(name)).unwrap();
        let prompt = ids_of(&r["greedy"]["prompt"]);
        let want = ids_of(&r["greedy"]["tokens"]);
        let cfg = GenerateConfig { max_new_tokens: want.len(), temperature: 0.0, ..GenerateConfig::default() };
        assert_eq!(generate(g, &model, &prompt, &cfg).unwrap(), want, "{name}: greedy tokens on {}", g.name());
    }
}

/// The rollout engine on wgpu with the GPU default of K decode steps between read-backs (the
/// bookkeeping in `decode_advance` on the device): greedy tokens equal those of K = 1, with fewer
/// read-backs and idle slot-steps where sequences stop early, and the recorded log-probs of sampled
/// responses match the training forward.
fn rollout_with_chunks_of_decode_steps<B: Backend>(g: &B) {
    let k = rlhf::generate::default_sync_every(g.name());
    assert!(k > 1, "the GPU default of --sync-every is {k}");
    for name in MODELS {
        let model = Model::load(g, &fixture(name)).unwrap();
        let prompts: Vec<Vec<u32>> = (0..5).map(|i| (0..(2 + 3 * i)).map(|j| ((i * 31 + j * 7 + 5) % 380) as u32).collect()).collect();
        let greedy = GenerateConfig { max_new_tokens: 10, temperature: 0.0, ..GenerateConfig::default() };
        let free = rollout(g, &model, &prompts, &RolloutConfig { slots: 3, gen: greedy.clone(), sync_every: 1 }).unwrap();
        // the first prompt stops at its third token
        let stop = free.outputs[0].response[2];
        let gen = GenerateConfig { stop_ids: vec![stop], ..greedy };
        let one = rollout(g, &model, &prompts, &RolloutConfig { slots: 3, gen: gen.clone(), sync_every: 1 }).unwrap();
        let many = rollout(g, &model, &prompts, &RolloutConfig { slots: 3, gen, sync_every: k }).unwrap();
        for (a, b) in one.outputs.iter().zip(&many.outputs) {
            assert_eq!(a.response, b.response, "{name} on {}: greedy tokens with K = 1 and K = {k}", g.name());
            assert_eq!(a.finish, b.finish);
        }
        assert!(many.stats.decode_syncs < one.stats.decode_syncs && many.stats.idle_slot_steps > 0, "{name}: {:?} vs {:?}", many.stats, one.stats);
        let sampled = GenerateConfig { max_new_tokens: 9, temperature: 1.0, seed: 5, stop_ids: vec![stop], ..GenerateConfig::default() };
        let r = rollout(g, &model, &prompts, &RolloutConfig { slots: 3, gen: sampled, sync_every: k }).unwrap();
        let seqs: Vec<Vec<u32>> = r.outputs.iter().map(|o| o.prompt.iter().chain(&o.response).copied().collect()).collect();
        let want = token_logprobs(g, &model, &seqs, 3).unwrap();
        for (o, w) in r.outputs.iter().zip(&want) {
            let w = &w[o.prompt.len() - 1..];
            assert_eq!(o.logprobs.len(), w.len());
            assert!(o.logprobs.iter().zip(w).all(|(a, b)| (a - b).abs() <= 1e-3), "{name}: rollout log-probs {:?} vs training {:?}", o.logprobs, w);
        }
    }
}

fn ppo_step<B: Backend>(be: &B, policy_host: &(ModelConfig, Vec<Vec<f32>>), value_host: &(ModelConfig, Vec<Vec<f32>>)) -> (PpoStats, PpoStats, Vec<Vec<f32>>) {
    let mut policy = Model::from_host(be, policy_host.0.clone(), &policy_host.1).unwrap();
    let mut value = Model::from_host(be, value_host.0.clone(), &value_host.1).unwrap();
    let seqs = vec![vec![5u32, 17, 3, 40, 41, 8, 9, 11], vec![2, 2, 60, 61, 70, 71, 72, 73]];
    let prompt_lens = [4, 5];
    let current = token_logprobs(be, &policy, &seqs, 2).unwrap();
    let batch = ppo_batch(&current, &seqs, &prompt_lens);
    let p = PpoParams { ent_coef: 0.01, kl_coef: 0.1, dual_clip: 3.0, ..PpoParams::new(0) };
    let mut upd = PpoUpdate::new(be, &policy, Some(&value), 2, 8, AdamWConfig::default()).unwrap();
    upd.zero_grad(be).unwrap();
    upd.accumulate(be, &policy, Some(&value), &batch, p).unwrap();
    let before = upd.stats(be).unwrap();
    let after = upd.step(be, &mut policy, Some(&mut value), 1e-3, 1e-3).unwrap();
    let logp = token_logprobs(be, &policy, &seqs, 2).unwrap();
    (before, after, logp)
}

fn ppo_step_matches_cpu<B: Backend>(g: &B) {
    let gpu = g.name();
    let cpu = CpuBackend::new();
    for preset in ["gpt2-tiny", "llama-tiny"] {
        let (policy, value) = (noisy_host_weights(preset, false, 1), noisy_host_weights(preset, true, 2));
        let (c_before, c_after, c_logp) = ppo_step(&cpu, &policy, &value);
        let (g_before, g_after, g_logp) = ppo_step(g, &policy, &value);
        let close = |what: &str, a: f32, b: f32| {
            assert!((a - b).abs() <= 1e-5 || rel(a as f64, b as f64) < 1e-3, "{preset} {what}: {gpu} {a} vs cpu {b}");
        };
        for (name, c, w) in [("before", &c_before, &g_before), ("after", &c_after, &g_after)] {
            close(&format!("{name} total_loss"), w.total_loss, c.total_loss);
            close(&format!("{name} policy_loss"), w.policy_loss, c.policy_loss);
            close(&format!("{name} value_loss"), w.value_loss, c.value_loss);
            close(&format!("{name} entropy"), w.entropy, c.entropy);
            close(&format!("{name} clipfrac"), w.clipfrac, c.clipfrac);
            close(&format!("{name} approx_kl"), w.approx_kl, c.approx_kl);
        }
        close("policy grad norm", g_after.policy_grad_norm, c_after.policy_grad_norm);
        for (a, b) in g_logp.iter().flatten().zip(c_logp.iter().flatten()) {
            assert!((a - b).abs() < 2e-4, "{preset}: log-prob after the PPO step: {gpu} {a} vs cpu {b}");
        }
    }
}

/// sft -> rm -> ppo -> generate -> score -> bench, every one with `--backend <backend>` in its
/// default precision (`auto`: bf16 storage on CUDA GPUs of sm_80 and newer), and the score once
/// more in f32 against the CPU's.
fn every_command_runs(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"prompt\": \"hello \", \"completion\": \"world\"}\n{\"text\": \"the cat sat on the mat\"}\n").unwrap();
    let sft = dir.path().join("sft");
    let gpt2 = fixture("gpt2");
    let out = ok(&rlhf(&["sft", "--backend", backend, "--model", s(&gpt2), "--data", s(&data), "--out", s(&sft), "--steps", "2", "--batch-size", "2"]));
    assert!(sft.join("model.safetensors").exists(), "sft saved nothing: {out}");
    let prefs = dir.path().join("prefs.jsonl");
    std::fs::write(&prefs, (0..6).map(|i| format!("{{\"prompt\": \"q{i}:\", \"chosen\": \" yes\", \"rejected\": \" no\"}}\n")).collect::<String>()).unwrap();
    let rm = dir.path().join("rm");
    ok(&rlhf(&["rm", "--backend", backend, "--model", s(&gpt2), "--data", s(&prefs), "--out", s(&rm), "--steps", "2", "--eval-fraction", "0"]));
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"hello\"}\n{\"prompt\": \"the cat\"}\n").unwrap();
    let ppo = dir.path().join("ppo");
    ok(&rlhf(&[
        "ppo",
        "--backend",
        backend,
        "--policy",
        s(&sft),
        "--reward-model",
        s(&rm),
        "--prompts",
        s(&prompts),
        "--out",
        s(&ppo),
        "--steps",
        "2",
        "--rollout-batch",
        "2",
        "--mini-batch",
        "1",
        "--max-new-tokens",
        "6",
    ]));
    let rows: Vec<Value> = std::fs::read_to_string(ppo.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for key in ["reward_mean", "kl_k1", "policy_loss", "value_loss", "entropy", "approx_kl"] {
        let v = rows[1][key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite(), "ppo on {backend}: {key} = {v}");
    }
    let text = ok(&rlhf(&["generate", "--backend", backend, "--model", s(&ppo), "--prompt", "hello", "--max-new-tokens", "4", "--temperature", "0"]));
    assert!(text.starts_with("hello"), "{text}");
    let input = dir.path().join("score.jsonl");
    std::fs::write(&input, "{\"text\": \"q1: yes\"}\n").unwrap();
    let scores = ok(&rlhf(&["score", "--backend", backend, "--precision", "f32", "--model", s(&rm), "--input", s(&input)]));
    let cpu_scores = ok(&rlhf(&["score", "--model", s(&rm), "--input", s(&input)]));
    let score = |t: &str| serde_json::from_str::<Value>(t.trim()).unwrap()["score"].as_f64().unwrap();
    assert!((score(&scores) - score(&cpu_scores)).abs() < 1e-4, "score {backend} {scores} vs cpu {cpu_scores}");
    let bench = ok(&rlhf(&["bench", "--backend", backend, "--model", "gpt2-tiny", "--batch-size", "2", "--seq-len", "16", "--steps", "1"]));
    assert!(bench.contains(&format!("backend {backend}")) && bench.contains("train (fwd+bwd+AdamW)"), "{bench}");
}

/// The checks above as `#[test]`s of module `$m`, on the backend `$get` opens (or skips).
macro_rules! gpu_model_tests {
    ($m:ident, $name:literal, $get:path) => {
        mod $m {
            use super::*;

            #[test]
            fn logprobs_command_matches_transformers() {
                if $get(concat!("logprobs --backend ", $name)).is_some() {
                    super::logprobs_command_matches_transformers($name);
                }
            }

            #[test]
            fn sft_step_matches_transformers() {
                if let Some(g) = $get(concat!("SFT step on ", $name)) {
                    super::sft_step_matches_transformers(&g);
                }
            }

            #[test]
            fn greedy_generation_matches_transformers() {
                if let Some(g) = $get(concat!("greedy generation on ", $name)) {
                    super::greedy_generation_matches_transformers(&g);
                }
            }

            #[test]
            fn rollout_with_chunks_of_decode_steps() {
                if let Some(g) = $get(concat!("rollout with chunks of decode steps on ", $name)) {
                    super::rollout_with_chunks_of_decode_steps(&g);
                }
            }

            #[test]
            fn ppo_step_matches_cpu() {
                if let Some(g) = $get(concat!("PPO step on ", $name)) {
                    super::ppo_step_matches_cpu(&g);
                }
            }

            #[test]
            fn every_command_runs() {
                if $get(concat!("commands with --backend ", $name)).is_some() {
                    super::every_command_runs($name);
                }
            }
        }
    };
}

gpu_model_tests!(wgpu, "wgpu", common::wgpu_or_skip);
gpu_model_tests!(cuda, "cuda", common::cuda_or_skip);

/// CUDA graphs (cuda only; benches/gpu_session.sh runs `cuda_graphs::` beside `cuda::`).
mod cuda_graphs {
    use super::*;

    /// The rollout engine with CUDA graphs (its decode chunks captured once per key, then replayed)
    /// against the same engine with graphs off: the same tokens and log-prob bits, over two calls of
    /// one engine (the second replays the first call's graphs), with replays only when graphs are on.
    #[test]
    fn give_the_plain_launches_results() {
        let Some(g) = common::cuda_or_skip("CUDA graphs of the rollout's decode chunks") else { return };
        for name in MODELS {
            let model = Model::load(&g, &fixture(name)).unwrap();
            let prompts: Vec<Vec<u32>> = (0..10).map(|i| (0..(2 + 3 * (i % 4))).map(|j| ((i * 31 + j * 7 + 5) % 380) as u32).collect()).collect();
            let gen = GenerateConfig { max_new_tokens: 20, temperature: 1.0, seed: 11, stop_ids: vec![17, 250], ..GenerateConfig::default() };
            let cfg = RolloutConfig { slots: 4, gen, sync_every: 4 };
            let runs = |on: bool| {
                g.set_graphs(on);
                let mut engine = RolloutEngine::new();
                let first = engine.run(&g, &model, &prompts, &cfg).unwrap();
                let second = engine.run(&g, &model, &prompts, &cfg).unwrap();
                [first, second]
            };
            let plain = runs(false);
            let graphs = runs(true);
            g.set_graphs(true);
            for (p, r) in plain.iter().zip(&graphs) {
                for (a, b) in p.outputs.iter().zip(&r.outputs) {
                    assert_eq!(a.response, b.response, "{name}: tokens with and without graphs");
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a.logprobs), bits(&b.logprobs), "{name}: log-probs with and without graphs");
                    assert_eq!(a.finish, b.finish);
                }
                assert_eq!(p.stats.graph_replays, 0, "{name}: {:?}", p.stats);
                assert_eq!(p.stats.decode_syncs, r.stats.decode_syncs);
            }
            let (first, second) = (&graphs[0].stats, &graphs[1].stats);
            assert!(first.graph_replays > 0 && second.graph_replays >= first.graph_replays, "{name}: {first:?} then {second:?}");
            assert!(second.graph_replays <= second.decode_syncs);
        }
    }

    /// `Backend::replay` on cuda: the first call of a key runs the launches plainly, later calls
    /// replay a graph of them (which really runs them: the accumulator counts every call); a key whose
    /// launches cannot be captured (a read-back inside) runs them plainly every time, with the same
    /// effect; and with graphs off nothing is recorded.
    #[test]
    fn replay_records_once_and_replays() {
        use rlhf::backend::ops::ElementwiseParams;
        let Some(g) = common::cuda_or_skip("CUDA graph replay") else { return };
        let n = 1000;
        let p = ElementwiseParams::new(n).unwrap();
        let one = g.upload(&vec![1.0; n]).unwrap();
        let mut acc = g.alloc(n).unwrap();
        let key = 0x5eed_0001;
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(g.replay(key, &mut || g.add_inplace(&mut acc, &one, p)).unwrap());
        }
        assert_eq!(got, [false, true, true, true, true]);
        assert!(g.download(&acc).unwrap().iter().all(|&x| x == 5.0));
        // a read-back cannot be captured: the key falls back to plain launches
        let mut seen = Vec::new();
        for _ in 0..3 {
            let r = g.replay(key + 1, &mut || {
                g.add_inplace(&mut acc, &one, p)?;
                seen.push(g.download(&acc)?[0]);
                Ok(())
            });
            assert!(!r.unwrap());
        }
        assert_eq!(seen, [6.0, 7.0, 8.0]);
        // graphs off: the launches run every time, nothing replays
        g.set_graphs(false);
        for _ in 0..3 {
            assert!(!g.replay(key, &mut || g.add_inplace(&mut acc, &one, p)).unwrap());
        }
        g.set_graphs(true);
        assert!(g.download(&acc).unwrap().iter().all(|&x| x == 11.0));
    }

    /// A replay called from inside the launches of another (captured on its second call) runs and
    /// returns: the graph cache is not locked while a capture runs (it once was: a deadlock).
    #[test]
    fn a_replay_inside_a_capture_returns() {
        use rlhf::backend::ops::ElementwiseParams;
        let Some(g) = common::cuda_or_skip("CUDA graph replay nested in a capture") else { return };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let n = 256;
            let p = ElementwiseParams::new(n).unwrap();
            let one = g.upload(&vec![1.0; n]).unwrap();
            let (mut outer, mut inner) = (g.alloc(n).unwrap(), g.alloc(n).unwrap());
            for _ in 0..4 {
                g.replay(0x5eed_0100, &mut || {
                    g.add_inplace(&mut outer, &one, p)?;
                    g.replay(0x5eed_0101, &mut || g.add_inplace(&mut inner, &one, p)).map(|_| ())
                })
                .unwrap();
            }
            let _ = done_tx.send([g.download(&outer).unwrap(), g.download(&inner).unwrap()].concat());
        });
        let got = done_rx.recv_timeout(std::time::Duration::from_secs(120)).expect("a nested replay did not return (a deadlock?)");
        assert!(got.iter().all(|&x| x == 4.0), "every call ran both adds once: {:?} / {:?}", &got[..2], &got[256..258]);
    }
}

/// The streams of `Backend::concurrently` (cuda only; benches/gpu_session.sh runs `cuda_streams::`).
mod cuda_streams {
    use super::*;
    use rlhf::backend::ops::{ElementwiseParams, LogprobParams, MatmulParams};

    /// One task's work: a chain of cuBLAS products through temporary buffers allocated, used and
    /// dropped inside the task, then a log-prob gather (which uses the lane's scratch) with `w`
    /// as the `[v, c]` head (`v == c`).
    fn task_chain<B: Backend>(
        be: &B,
        x: &mut B::Buf,
        w: &B::Buf,
        ids: &B::Ids,
        out: &mut [B::Buf; 3],
        (n, c, v): (usize, usize, usize),
    ) -> rlhf::error::Result<()> {
        let [logp, entropy, lse] = out;
        for _ in 0..4 {
            let mut tmp = be.alloc(n * c)?;
            be.matmul(&mut tmp, x, w, MatmulParams::new(n, c, c, false, false))?;
            be.scale_inplace(&mut tmp, 0.05, ElementwiseParams::new(n * c).unwrap())?;
            be.copy(x, &tmp, ElementwiseParams::new(n * c).unwrap())?;
        }
        be.logprob_gather_fwd(logp, entropy, lse, x, ids, w, LogprobParams::new(n, c, v))
    }

    /// Two tasks on lanes of their own against the same two tasks run in order on one stream: the
    /// same bits in every output (each lane has its own cuBLAS handle and scratch, and the join
    /// orders the read-back after both lanes).
    #[test]
    fn tasks_on_lanes_give_the_bits_of_one_stream() {
        let Some(g) = common::cuda_or_skip("tasks on CUDA streams of their own") else { return };
        let (n, c, v) = (256, 256, 256);
        let data = |seed: u32, len: usize| (0..len).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 1000.0 - 0.5).collect::<Vec<f32>>();
        let run = |on: bool| {
            g.set_streams(on);
            let (w1, w2) = (g.upload(&data(1, c * c)).unwrap(), g.upload(&data(2, c * c)).unwrap());
            let (mut x1, mut x2) = (g.upload(&data(3, n * c)).unwrap(), g.upload(&data(4, n * c)).unwrap());
            let ids = g.upload_ids(&(0..n as i32).map(|i| (i * 7) % v as i32).collect::<Vec<_>>()).unwrap();
            let mut o1 = [g.alloc(n).unwrap(), g.alloc(n).unwrap(), g.alloc(n).unwrap()];
            let mut o2 = [g.alloc(n).unwrap(), g.alloc(n).unwrap(), g.alloc(n).unwrap()];
            let mut a = || task_chain(&g, &mut x1, &w1, &ids, &mut o1, (n, c, v));
            let mut b = || task_chain(&g, &mut x2, &w2, &ids, &mut o2, (n, c, v));
            g.concurrently(&mut [&mut a, &mut b]).unwrap();
            let bits = |b: &<rlhf::backend::CudaBackend as Backend>::Buf| g.download(b).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            o1.iter().chain(&o2).chain([&x1, &x2]).map(bits).collect::<Vec<_>>()
        };
        let one_stream = run(false);
        let lanes = run(true);
        g.set_streams(true);
        assert!(one_stream[0].iter().any(|&b| b != 0), "the tasks computed nothing");
        for (i, (a, b)) in one_stream.iter().zip(&lanes).enumerate() {
            assert_eq!(a, b, "output {i}: lanes vs one stream");
        }
    }

    /// The metrics `rlhf <args>` logs in `out`/metrics.jsonl with `RLHF_CUDA_STREAMS=streams`.
    fn logged(args: &[&str], out: &Path, streams: &str) -> Vec<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--out", s(out)]);
        ok(&rlhf_with_env(&all, &[("RLHF_CUDA_STREAMS", streams), ("RLHF_CUDA_MATMUL", "simt")]));
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// `rlhf ppo` and `rlhf grpo` with a reward model (whose scoring phases overlap the reward
    /// model with the policy and reference passes) log the same numbers with streams on and off
    /// (f32, the batch-invariant SIMT matmul: the same kernels in the same order per buffer).
    #[test]
    fn ppo_and_grpo_log_the_same_metrics_with_streams_on_and_off() {
        if common::cuda_or_skip("PPO and GRPO with overlapping scoring phases").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let gpt2 = fixture("gpt2");
        let prefs = dir.path().join("prefs.jsonl");
        std::fs::write(&prefs, (0..6).map(|i| format!("{{\"prompt\": \"q{i}:\", \"chosen\": \" yes\", \"rejected\": \" no\"}}\n")).collect::<String>())
            .unwrap();
        let rm = dir.path().join("rm");
        ok(&rlhf(&["rm", "--model", s(&gpt2), "--data", s(&prefs), "--out", s(&rm), "--steps", "2", "--eval-fraction", "0"]));
        let prompts = dir.path().join("prompts.jsonl");
        std::fs::write(&prompts, "{\"prompt\": \"hello\"}\n{\"prompt\": \"the cat\"}\n{\"prompt\": \"q1:\"}\n{\"prompt\": \"q2:\"}\n").unwrap();
        let common_args =
            ["--backend", "cuda", "--precision", "f32", "--reward-model", s(&rm), "--prompts", s(&prompts), "--steps", "2", "--max-new-tokens", "6"];
        let ppo: Vec<&str> = ["ppo", "--policy", s(&gpt2)].into_iter().chain(common_args).chain(["--rollout-batch", "4", "--mini-batch", "2"]).collect();
        let grpo: Vec<&str> = ["grpo", "--model", s(&gpt2)].into_iter().chain(common_args).chain(["--group-size", "2", "--prompts-per-step", "2"]).collect();
        for (name, args, keys) in
            [("ppo", &ppo, &["reward_mean", "kl_k1", "policy_loss", "value_loss", "entropy"][..]), ("grpo", &grpo, &["reward_mean", "kl", "policy_loss"][..])]
        {
            let one = logged(args, &dir.path().join(format!("{name}-one")), "0");
            let lanes = logged(args, &dir.path().join(format!("{name}-lanes")), "1");
            assert_eq!(one.len(), 2, "{name}: {one:?}");
            for (a, b) in one.iter().zip(&lanes) {
                for key in keys {
                    assert!(a[key].as_f64().is_some(), "{name}: no {key} in {a}");
                    assert_eq!(a[key], b[key], "{name} {key}: one stream vs lanes");
                }
            }
        }
    }
}

/// cuBLASLt's fused epilogues (cuda only; benches/gpu_session.sh runs `cuda_epilogues::`).
mod cuda_epilogues {
    use super::*;
    use rlhf::backend::cuda::epilogue::EpilogueLevel;
    use rlhf::backend::ops::Dtype;

    /// An SFT step's loss and gradient norm on the fixtures with biases (GPT-2: every linear layer
    /// and the GELU MLP, forward and backward; Qwen2: the q, k, v biases) with every fused
    /// epilogue (`RLHF_CUDA_EPILOGUES=all`) and with none (`0`). f32 storage: within 1e-5 relative (loss) and 1e-4 (gradient norm), the same
    /// products summed in another order by another kernel. bf16 storage: within 1e-2, as the
    /// unfused path rounds each product to bf16 once more before its bias or GELU. With cuBLASLt
    /// loaded, some product must have run fused, and in bf16 each of the bias, bias+GELU and
    /// GELU-backward epilogues.
    #[test]
    fn sft_step_with_and_without_fused_epilogues() {
        let Some(g) = common::cuda_or_skip("cuBLASLt epilogues in an SFT step") else { return };
        let Some(mut g16) = common::cuda_or_skip("cuBLASLt epilogues in an SFT step (bf16)") else { return };
        let bf16 = g16.set_compute_dtype(Dtype::Bf16).is_ok();
        let mut runs = vec![(&g, 1e-5, 1e-4)];
        if bf16 {
            runs.push((&g16, 1e-2, 1e-2));
        }
        for (be, loss_tol, norm_tol) in runs {
            for name in ["gpt2", "qwen2"] {
                be.set_epilogues(EpilogueLevel::Off);
                let (loss_off, norm_off) = loss_and_grad_norm(be, name, 0);
                be.set_epilogues(EpilogueLevel::All);
                let (loss_on, norm_on) = loss_and_grad_norm(be, name, 0);
                let what = format!("{name} on {}", be.device_description());
                assert!(rel(loss_on as f64, loss_off as f64) < loss_tol, "{what}: loss fused {loss_on} vs unfused {loss_off}");
                assert!(rel(norm_on as f64, norm_off as f64) < norm_tol, "{what}: grad norm fused {norm_on} vs unfused {norm_off}");
            }
            let r = be.epilogue_report();
            eprintln!("{}: {r:?}", be.device_description());
            // every epilogue in bf16 (the GPU default, where they pay); some in f32
            if be.device_description().contains("cuBLASLt") {
                assert!(r.fused > 0, "{}: no matmul ran fused: {r:?}", be.device_description());
                for kind in ["bias", "bias+gelu", "gelu backward"].iter().filter(|_| be.compute_dtype() == Dtype::Bf16) {
                    assert!(r.kinds.contains(kind), "{}: the {kind} epilogue never ran fused: {r:?}", be.device_description());
                }
            }
        }
    }
}
