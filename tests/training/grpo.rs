//! Critic-free RL (`rlhf grpo`): the grouped rollout (samples of a prompt share its prefill and
//! keep the training forward's log-probs), each advantage estimator against a hand-computed
//! example (REINFORCE++'s device path against its host reference), the loss aggregations against
//! hand values and finite differences, the exact-match reward, GRPO raising the built-in task's
//! oracle score over the SFT model, and the command with each estimator and its flag errors.

use crate::common;

use rlhf::backend::ops::{ppo_stat, Backend, PpoParams};
use rlhf::backend::CpuBackend;
use rlhf::data::jsonl::prompt_completion_example;
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{generate, GenerateConfig, RolloutConfig, RolloutEngine};
use rlhf::model::scoring::token_logprobs;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::advantage_estimators::{grpo_advantages, reinforce_pp_advantages, rloo_advantages, sequence_advantages, Estimator};
use rlhf::demo::grpo::{demo_grpo_config, run_grpo_stage};
use rlhf::demo::task;
use rlhf::rl::grpo::{reinforce_pp_on_device, LossAgg};
use rlhf::demo::demo_sft_config;
use rlhf::rl::reward_fns::{exact_match, normalize_answer};
use rlhf::rl::sft::run_sft;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

// ---- grouped rollout ---------------------------------------------------------------------------

fn fixture_model(name: &str) -> Model<CpuBackend> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Model::load(&CpuBackend::new(), &dir).unwrap()
}

#[test]
fn grouped_rollout_shares_the_prefill_and_keeps_training_logprobs() {
    let be = CpuBackend::new();
    for name in ["gpt2", "llama", "qwen2"] {
        let model = fixture_model(name);
        let prompts: Vec<Vec<u32>> = (0..5).map(|i| (0..(3 + 4 * i % 11)).map(|j| ((i * 37 + j * 11 + 3) % 380) as u32).collect()).collect();
        let group = 3;
        // a stop id that some samples draw, so that slots free up at different steps
        let gen = GenerateConfig { max_new_tokens: 7, temperature: 1.0, seed: 11, stop_ids: vec![5, 77, 200], ..Default::default() };
        // 7 slots: groups of 3 enter as slots free up (continuous batching with whole groups);
        // K = 1 and K = 3 decode steps between read-backs
        for sync_every in [1, 3] {
            let r = RolloutEngine::new().run_grouped(&be, &model, &prompts, group, &RolloutConfig { slots: 7, gen: gen.clone(), sync_every }).unwrap();
            assert_eq!(r.outputs.len(), prompts.len() * group);
            assert_eq!(r.stats.prefill_tokens, prompts.iter().map(Vec::len).sum::<usize>(), "{name}: each prompt is prefilled once");
            assert!(r.stats.slot_reuses > 0, "{name}: {:?}", r.stats);
            for (p, g) in prompts.iter().zip(r.outputs.chunks(group)) {
                assert!(g.iter().all(|o| &o.prompt == p));
                let distinct: std::collections::HashSet<&Vec<u32>> = g.iter().map(|o| &o.response).collect();
                assert!(distinct.len() > 1, "{name}: the samples of a group are all equal: {:?}", g.iter().map(|o| &o.response).collect::<Vec<_>>());
            }
            // the recorded log-probs equal the training forward's, bit for bit (the copied KV rows are
            // the prefill's own)
            let seqs: Vec<Vec<u32>> = r.outputs.iter().map(|o| o.prompt.iter().chain(&o.response).copied().collect()).collect();
            let want = token_logprobs(&be, &model, &seqs, 4).unwrap();
            for (o, w) in r.outputs.iter().zip(&want) {
                let w = &w[o.prompt.len() - 1..];
                let got: Vec<u32> = o.logprobs.iter().map(|x| x.to_bits()).collect();
                let want: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{name} K {sync_every}: grouped rollout log-probs {:?} vs training {:?}", o.logprobs, w);
            }
        }
    }
}

/// On wgpu (skipped without an adapter): the grouped rollout's log-probs match the training
/// forward's on the same backend, and the command runs a step.
#[test]
fn grouped_rollout_and_command_on_wgpu() {
    let Some(be) = common::wgpu_or_skip("grouped rollout on wgpu") else { return };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2");
    let model = Model::load(&be, &dir).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 9, 13], vec![7, 1, 2, 3, 4, 200], vec![300]];
    let gen = GenerateConfig { max_new_tokens: 5, temperature: 1.0, seed: 3, ..Default::default() };
    let r = RolloutEngine::new().run_grouped(&be, &model, &prompts, 2, &RolloutConfig { slots: 4, gen, sync_every: 4 }).unwrap();
    assert_eq!(r.outputs.len(), 6);
    assert_eq!(r.stats.prefill_tokens, 10);
    let seqs: Vec<Vec<u32>> = r.outputs.iter().map(|o| o.prompt.iter().chain(&o.response).copied().collect()).collect();
    let want = token_logprobs(&be, &model, &seqs, 4).unwrap();
    for (o, w) in r.outputs.iter().zip(&want) {
        let w = &w[o.prompt.len() - 1..];
        assert!(close(&o.logprobs, w, 1e-3), "wgpu grouped rollout log-probs {:?} vs training {:?}", o.logprobs, w);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (policy, _, prompts) = cli_fixture(tmp.path());
    let out = tmp.path().join("out");
    let o = rlhf(&[
        "grpo",
        "--backend",
        "wgpu",
        "--model",
        policy.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--reward-fn",
        "oracle",
        "--group-size",
        "2",
        "--prompts-per-step",
        "2",
        "--steps",
        "1",
        "--max-new-tokens",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("model.safetensors").exists());
}

#[test]
fn grouped_rollout_needs_a_slot_per_sample() {
    let be = CpuBackend::new();
    let model = fixture_model("gpt2");
    let err = RolloutEngine::new().run_grouped(&be, &model, &[vec![1, 2]], 4, &RolloutConfig { slots: 3, ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("at least that many slots"), "{err}");
}

// ---- estimators ---------------------------------------------------------------------------------

#[test]
fn grpo_advantages_match_a_hand_example() {
    // group 1: mean 0.5, unbiased std sqrt(1/3); group 2: all equal -> 0
    let r = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0];
    let a = 0.5 / (1.0f32 / 3.0).sqrt();
    assert!(close(&grpo_advantages(&r, 4, true).unwrap(), &[a, -a, -a, a, 0.0, 0.0, 0.0, 0.0], 1e-5));
    // Dr. GRPO: no std scaling
    assert!(close(&grpo_advantages(&r, 4, false).unwrap(), &[0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0], 1e-6));
    assert!(grpo_advantages(&r, 3, true).is_err(), "8 rewards are not groups of 3");
}

#[test]
fn rloo_advantages_match_a_hand_example() {
    // r_i - mean of the other three
    let want = [1.0 - 11.0 / 3.0, 2.0 - 10.0 / 3.0, 3.0 - 9.0 / 3.0, 6.0 - 6.0 / 3.0];
    assert!(close(&rloo_advantages(&[1.0, 2.0, 3.0, 6.0], 4).unwrap(), &want, 1e-5));
    // pairs: r_i - r_j
    assert!(close(&rloo_advantages(&[5.0, 1.0], 2).unwrap(), &[4.0, -4.0], 1e-6));
    assert!(rloo_advantages(&[1.0, 2.0], 1).is_err(), "RLOO needs two samples per group");
    assert_eq!(sequence_advantages(Estimator::ReinforcePp, &[1.0], 1).unwrap(), None);
}

#[test]
fn reinforce_pp_matches_a_hand_example_on_host_and_device() {
    // two rows of t = 3; row 0's response is positions 1..3, row 1's positions 0..2
    let mask = [0.0, 1.0, 1.0, 1.0, 1.0, 0.0];
    let token_rewards = [9.0, -0.1, 1.0, 0.5, 2.0, 7.0];
    // returns: row 0 [_, 0.9, 1.0], row 1 [2.5, 2.0, _]; mean 1.6, unbiased var 1.82 / 3
    let sd = (1.82f32 / 3.0 + 1e-8).sqrt();
    let want = [0.0, -0.7 / sd, -0.6 / sd, 0.9 / sd, 0.4 / sd, 0.0];
    let host = reinforce_pp_advantages(&token_rewards, &mask, 3).unwrap();
    assert!(close(&host, &want, 1e-5), "{host:?} vs {want:?}");

    // the device path: rewards = -beta kl + score at the last response token
    let be = CpuBackend::new();
    let beta = 0.5;
    let kl = [0.0, 0.2, 0.4, -0.6, 0.8, 0.0];
    let scores = [3.0, -1.0];
    let last_pos = [2, 4];
    let mut tok_r = kl.map(|k| -beta * k);
    tok_r[2] += scores[0];
    tok_r[4] += scores[1];
    let want = reinforce_pp_advantages(&tok_r, &mask, 3).unwrap();
    let (mut adv, mut ret, mut rew, mut ws) = (vec![0.0; 6], vec![0.0; 6], vec![0.0; 6], vec![0.0; rlhf::backend::ops::whiten_stat::LEN]);
    let kl_buf = kl.to_vec();
    reinforce_pp_on_device(
        &be,
        &mut adv,
        &mut ret,
        &mut rew,
        &mut ws,
        Some((&kl_buf, beta)),
        &scores.to_vec(),
        &last_pos.to_vec(),
        &vec![0.0; 6],
        &mask.to_vec(),
        2,
        3,
    )
    .unwrap();
    assert!(close(&adv, &want, 1e-5), "device {adv:?} vs host {want:?}");
    // the un-whitened returns are the reversed cumulative sums of the token rewards
    assert!(close(&ret, &[0.0, tok_r[1] + tok_r[2], tok_r[2], tok_r[3] + tok_r[4], tok_r[4], 0.0], 1e-6), "{ret:?}");
}

// ---- loss aggregation ---------------------------------------------------------------------------

/// The loss (weighted sum of per-token losses) and its gradient for log-probs `logp`.
fn loss_and_grad(be: &CpuBackend, logp: &[f32], old: &[f32], adv: &[f32], mask: &[f32], p: PpoParams) -> (f32, Vec<f32>) {
    let n = logp.len();
    let (mut d, mut stats) = (vec![0.0; n], vec![0.0; ppo_stat::COUNT]);
    be.ppo_loss_fwd_bwd(&mut d, None, None, &mut stats, &logp.to_vec(), &old.to_vec(), &adv.to_vec(), &mask.to_vec(), None, None, None, None, None, p).unwrap();
    (stats[ppo_stat::TOTAL_LOSS], d)
}

#[test]
fn loss_aggregations_match_hand_values_and_finite_differences() {
    let be = CpuBackend::new();
    // 2 sequences x 3 positions: 2 and 1 response tokens; ratio 1 (logp = old_logp)
    let mask = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
    let adv = [2.0, 2.0, 0.0, 0.0, -1.0, 0.0];
    let old = [-1.0, -2.0, 0.0, 0.0, -0.5, 0.0];
    let mut base = PpoParams::new(6);
    base.t = 3;
    base.vf_coef = 0.0;
    base.value_clip = 0.0;
    let max_new = 4;
    // per-token loss at ratio 1: -A; token mean (-2 - 2 + 1) / 3, sequence mean ((-2) + (1)) / 2,
    // Dr. GRPO's constant (-2 - 2 + 1) / (4 x 2)
    for (agg, want) in [(LossAgg::TokenMean, -1.0), (LossAgg::SeqMean, -0.5), (LossAgg::Constant, -3.0 / 8.0)] {
        let p = agg.params(base, 2, 3, max_new);
        let (loss, grad) = loss_and_grad(&be, &old, &old, &adv, &mask, p);
        assert!((loss - want).abs() < 1e-6, "{agg:?}: loss {loss} vs {want}");
        // finite differences (the surrogate is smooth inside the clip range)
        let h = 1e-3;
        for i in 0..6 {
            let (mut up, mut dn) = (old, old);
            up[i] += h;
            dn[i] -= h;
            let fd = (loss_and_grad(&be, &up, &old, &adv, &mask, p).0 - loss_and_grad(&be, &dn, &old, &adv, &mask, p).0) / (2.0 * h);
            assert!((fd - grad[i]).abs() < 2e-3, "{agg:?} position {i}: analytic {} vs finite difference {fd}", grad[i]);
        }
    }
    assert!(LossAgg::parse("sum").is_err());
}

// ---- exact match --------------------------------------------------------------------------------

#[test]
fn exact_match_normalises_answers() {
    assert_eq!(normalize_answer("so 3 + 4 = 7.\n#### 7 "), "7");
    assert_eq!(normalize_answer("The total is 1,250 apples."), "1250");
    assert_eq!(normalize_answer("it is -3.5 degrees"), "-3.5");
    assert_eq!(normalize_answer("  Paris. "), "paris");
    assert_eq!(exact_match("I think the answer is 42", "42"), 1.0);
    assert_eq!(exact_match("#### 42.0", "42"), 1.0);
    assert_eq!(exact_match("41 or 42? 41", "42"), 0.0);
    assert_eq!(exact_match("PARIS", "paris"), 1.0);
    assert_eq!(exact_match("#### Lyon", "Paris"), 0.0);
    assert_eq!(exact_match("", "0"), 0.0);
}

// ---- GRPO on the built-in task ------------------------------------------------------------------

/// A short SFT on the demo's imperfect demonstrations (as `rlhf demo` starts), saved in `dir`.
fn sft_policy(be: &CpuBackend, tok: &Tokenizer, dir: &Path, steps: usize) {
    let demos = task::demonstrations(1000, 7);
    let examples = demos.iter().map(|(p, c)| prompt_completion_example(tok, p, c)).collect::<rlhf::Result<Vec<_>>>().unwrap();
    let mut model = Model::init(be, ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap(), 7).unwrap();
    let cfg = demo_sft_config(dir, steps, 7);
    run_sft(be, &mut model, tok, examples, &cfg).unwrap();
}

#[test]
fn grpo_raises_the_oracle_score_over_sft() {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let dir = tempfile::tempdir().unwrap();
    sft_policy(&be, &tok, &dir.path().join("sft"), 300);
    let cfg = demo_grpo_config(&dir.path().join("grpo"), 7, 30);
    let t = std::time::Instant::now();
    let (policy, reports) = run_grpo_stage(&be, &dir.path().join("sft"), &tok, &cfg).unwrap();
    let secs = t.elapsed().as_secs_f64();
    for r in &reports {
        eprintln!(
            "step {} oracle {:.3} reward {:.3} kl {:.3} loss {:.4} clipfrac {:.3} len {:.1} rollout {:.0} tok/s train {:.0} tok/s",
            r.step,
            r.oracle.unwrap(),
            r.reward_mean,
            r.kl,
            r.stats.total_loss,
            r.stats.clipfrac,
            r.response_len,
            r.rollout_tokens_per_sec,
            r.train_tokens_per_sec
        );
    }
    eprintln!("grpo: {} steps in {secs:.1}s", reports.len());
    let mean = |rs: &[rlhf::rl::grpo::GrpoStepReport]| rs.iter().map(|r| r.oracle.unwrap()).sum::<f32>() / rs.len() as f32;
    let (first, last) = (mean(&reports[..5]), mean(&reports[reports.len() - 5..]));
    assert!(last > first + 0.15, "oracle score of the samples: first 5 steps {first:.3}, last 5 steps {last:.3}");
    assert!(reports.iter().all(|r| r.kl.is_finite() && r.kl >= 0.0), "k3 KL is never negative");
    let late_kl = reports[reports.len() - 5..].iter().map(|r| r.kl).sum::<f32>() / 5.0;
    assert!(late_kl > 0.0 && late_kl < 15.0, "KL to the SFT model per sequence {late_kl}");
    // held-out prompts: the trained policy's answers beat the SFT model's
    let sft = Model::load(&be, &dir.path().join("sft")).unwrap();
    let held_out: Vec<Vec<u32>> = task::prompts(32, 0xE7).iter().map(|p| tok.encode(p, true).unwrap()).collect();
    let eval = |m: &Model<CpuBackend>| {
        let total: f32 = held_out
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let gen = GenerateConfig { max_new_tokens: 24, temperature: 1.0, seed: i as u64, stop_ids: tok.stop_ids(), ..Default::default() };
                task::oracle_score(&tok.decode_with(&generate(&be, m, p, &gen).unwrap(), true).unwrap())
            })
            .sum();
        total / held_out.len() as f32
    };
    let (sft_score, grpo_score) = (eval(&sft), eval(&policy));
    eprintln!("held-out oracle score: sft {sft_score:.3}, grpo {grpo_score:.3}");
    assert!(grpo_score > sft_score + 0.15, "held-out oracle score: sft {sft_score:.3}, grpo {grpo_score:.3}");
    assert!(dir.path().join("grpo/model.safetensors").exists() && dir.path().join("grpo/metrics.jsonl").exists());
}

/// What GRPO logs is the loss it trains: under Dr. GRPO's constant normaliser (`--loss-agg
/// constant`) the logged loss is the token-mean loss scaled by tokens / (max_new_tokens x
/// sequences), the same rollout giving both (the first step's rollout does not depend on the
/// aggregation); and the entropy is the policy's although GRPO has no entropy bonus.
#[test]
fn grpo_logs_the_applied_loss_and_the_entropy() {
    use rlhf::rl::grpo::LossAgg;
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let dir = tempfile::tempdir().unwrap();
    // an SFT model that says kind and rude words, so that the oracle's rewards differ within a group
    sft_policy(&be, &tok, &dir.path().join("sft"), 300);
    let run = |agg: LossAgg, name: &str| {
        let mut cfg = demo_grpo_config(&dir.path().join(name), 7, 1);
        (cfg.loss_agg, cfg.mini_batch) = (agg, 32);
        run_grpo_stage(&be, &dir.path().join("sft"), &tok, &cfg).unwrap().1.remove(0)
    };
    let (mean, constant) = (run(LossAgg::TokenMean, "mean"), run(LossAgg::Constant, "constant"));
    assert_eq!(mean.response_len, constant.response_len, "the first rollout is the same");
    let scale = mean.response_len / 24.0;
    assert!(scale < 0.99, "some response stops before max_new_tokens (scale {scale})");
    let (want, got) = (mean.stats.total_loss * scale, constant.stats.total_loss);
    assert!(want.abs() > 1e-5, "a loss to compare: {want}");
    assert!((got - want).abs() <= 1e-5 + 1e-3 * want.abs(), "Dr. GRPO's logged loss {got}, applied {want}");
    let (e, ec) = (mean.stats.entropy, constant.stats.entropy);
    assert!(e > 0.1 && (e - ec).abs() <= 1e-4 * e, "the entropy is a per-token mean either way: {e} / {ec}");
}

// ---- the command --------------------------------------------------------------------------------

fn rlhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("running rlhf")
}

fn assert_fails_with(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr does not mention {n:?}: {stderr}");
    }
}

/// A tiny random policy and reward model (byte-level tokenizer) and a prompts file with answers.
fn cli_fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let be = CpuBackend::new();
    let tok = Tokenizer::byte_level();
    let cfg = ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap();
    let (policy, rm) = (dir.join("policy"), dir.join("rm"));
    Model::init(&be, cfg.clone(), 1).unwrap().save(&be, &policy, &tok).unwrap();
    let mut rcfg = cfg;
    rcfg.score_head = true;
    Model::init(&be, rcfg, 2).unwrap().save(&be, &rm, &tok).unwrap();
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"2 + 2 =\", \"answer\": \"4\"}\n{\"prompt\": \"Q: describe the cat.\\nA:\", \"answer\": 3}\n").unwrap();
    (policy, rm, prompts)
}

#[test]
fn command_runs_each_estimator_and_reward_source() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, rm, prompts) = cli_fixture(dir.path());
    let runs: [(&str, &[&str]); 4] = [
        ("grpo", &["--reward-fn", "exact-match", "--kl-estimator", "k2", "--loss-agg", "constant"]),
        ("grpo", &["--reward-fn", "oracle", "--no-std-scale", "--loss-agg", "seq-mean"]),
        // temperature 0.8: the old log-probs come from the training forward, not the rollout
        ("rloo", &["--reward-model", rm.to_str().unwrap(), "--kl-in", "reward", "--temperature", "0.8", "--micro-batch-tokens", "16"]),
        ("reinforce++", &["--reward-model", rm.to_str().unwrap(), "--kl-in", "reward", "--epochs", "2", "--mini-batch", "3"]),
    ];
    for (i, (est, extra)) in runs.iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        let mut args = vec![
            "grpo",
            "--model",
            policy.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--estimator",
            est,
            "--group-size",
            "3",
            "--prompts-per-step",
            "2",
            "--steps",
            "2",
            "--max-new-tokens",
            "6",
            "--lr",
            "1e-3",
        ];
        args.extend_from_slice(extra);
        let o = rlhf(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{est} {extra:?}: {stderr}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("grpo done"), "{est}");
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{est}: {metrics}");
        for key in ["reward_mean", "reward_std", "kl", "loss", "clipfrac", "response_len", "rollout_tokens_per_sec", "train_tokens_per_sec"] {
            assert!(lines[1][key].as_f64().is_some_and(f64::is_finite), "{est}: {key} missing in {}", lines[1]);
        }
        assert!(out.join("model.safetensors").exists() && out.join("config.json").exists());
    }
}

#[test]
fn command_flag_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, rm, prompts) = cli_fixture(dir.path());
    let out = dir.path().join("out");
    let base = ["grpo", "--model", policy.to_str().unwrap(), "--prompts", prompts.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "1"];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        rlhf(&a)
    };
    assert_fails_with(&with(&[]), &["reward source", "--reward-model", "--reward-fn"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--group-size", "1"]), &["--group-size"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--estimator", "ppo"]), &["--estimator"]);
    assert_fails_with(&with(&["--reward-fn", "bleu"]), &["--reward-fn"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--kl-in", "value"]), &["--kl-in"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--kl-estimator", "k4"]), &["--kl-estimator"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--loss-agg", "sum"]), &["--loss-agg"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--sync-every", "0"]), &["--sync-every"]);
    assert_fails_with(&with(&["--reward-fn", "oracle", "--estimator", "rloo", "--no-std-scale"]), &["--no-std-scale"]);
    assert_fails_with(&with(&["--reward-model", policy.to_str().unwrap()]), &["reward model"]);
    assert_fails_with(&with(&["--reward-model", rm.to_str().unwrap(), "--reward-fn", "oracle"]), &["--reward-fn"]);
    // exact-match needs an answer on every line, and the error names the line
    let no_answer = dir.path().join("no_answer.jsonl");
    std::fs::write(&no_answer, "{\"prompt\": \"1 + 1 =\", \"answer\": \"2\"}\n{\"prompt\": \"2 + 2 =\"}\n").unwrap();
    let o = rlhf(&[
        "grpo",
        "--model",
        policy.to_str().unwrap(),
        "--prompts",
        no_answer.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--reward-fn",
        "exact-match",
    ]);
    assert_fails_with(&o, &["no_answer.jsonl", "2", "answer"]);
}
