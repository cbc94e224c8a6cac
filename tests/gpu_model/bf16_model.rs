//! Whole models in the bf16 storage mode (`--precision bf16`: bf16 weights, activations,
//! gradients and KV cache; f32 master weights, AdamW moments and accumulation) against the f32
//! CPU backend: `cpu_reference::*` on the CPU reference of the mode (every machine, CI included),
//! `cuda::*` on a CUDA device in bf16 (skipped without one).
//!
//! Tolerances. bf16 keeps 8 significant bits: every stored value is off by up to 2^-9 relative
//! (half an ulp), and each op's output is rounded again. Through a 2-layer model the rounding
//! errors of ~20 ops add up with random signs, so hidden states move by ~1e-2 relative and the
//! log-probs by a few 1e-2 absolute; a loss, an average over tokens, moves less. Stated per check
//! below, each with the worst value seen on the CPU reference.

use crate::common;

use common::fixtures::{fixture, fixture_batch, ids_of, noisy_host_weights, ppo_batch, reference, rel, MODELS};
use rlhf::backend::bf16_reference::Bf16Reference;
use rlhf::backend::ops::PpoParams;
use rlhf::backend::storage::round_bf16;
use rlhf::backend::{Backend, CpuBackend, Dtype};
use rlhf::data::tokenizer::Tokenizer;
use rlhf::generate::{rollout, GenerateConfig, RolloutConfig};
use rlhf::model::scoring::token_logprobs;
use rlhf::model::{Model, ModelConfig};
use rlhf::demo::grpo::{demo_grpo_config, run_grpo_stage};
use rlhf::demo::task;
use rlhf::rl::dpo::{run_dpo, DpoConfig};
use rlhf::rl::policy_update::{PpoBatch, PpoStats, PpoUpdate, ValueHead};
use rlhf::train::lm::LmTrainer;
use rlhf::train::resume::{Checkpoint, StateWriter};
use rlhf::train::AdamWConfig;

/// The loss before each of `steps` AdamW steps (lr 1e-3) on the fixture's batch, and the model.
fn sft<B: Backend>(be: &B, name: &str, steps: usize) -> (Vec<f32>, Model<B>) {
    let mut model = Model::load(be, &fixture(name)).unwrap();
    let batch = fixture_batch(name, 0);
    let mut trainer = LmTrainer::new(be, &model, batch.b, batch.b * batch.t, AdamWConfig::default()).unwrap();
    let losses = (0..steps)
        .map(|_| {
            trainer.zero_grad(be).unwrap();
            trainer.accumulate(be, &model, &batch, 1.0 / batch.n_supervised as f32).unwrap();
            trainer.step(be, &mut model, 1e-3).unwrap().loss
        })
        .collect();
    (losses, model)
}

/// SFT in bf16: the loss before each of 5 steps within 1e-2 relative of f32's (seen on the CPU
/// reference: at most 8e-4) and falling; the
/// master weights stay f32 (they hold values bf16 cannot) and the compute weights are exactly
/// their bf16 rounding; what a model saves is the master weights.
fn sft_tracks_f32<B: Backend>(be: &B) {
    assert_eq!(be.compute_dtype(), Dtype::Bf16);
    let cpu = CpuBackend::new();
    for name in MODELS {
        let (want, _) = sft(&cpu, name, 5);
        let (got, model) = sft(be, name, 5);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(rel(*g as f64, *w as f64) < 1e-2, "{name} step {i}: bf16 loss {g} vs f32 {w} on {}", be.name());
        }
        assert!(got[4] < got[0], "{name}: bf16 loss does not fall: {got:?}");
        assert_eq!(model.master.len(), model.weights.len(), "{name}: a trained bf16 model keeps f32 master weights");
        let mut unrepresentable = 0;
        for (w, m) in model.weights.iter().zip(&model.master) {
            assert_eq!((be.dtype(w), be.dtype(m)), (Dtype::Bf16, Dtype::F32));
            let (w, m) = (be.download(w).unwrap(), be.download(m).unwrap());
            assert!(w.iter().zip(&m).all(|(w, m)| *w == round_bf16(*m)), "{name}: compute weights are not the rounded master");
            unrepresentable += m.iter().filter(|&&x| round_bf16(x) != x).count();
        }
        assert!(unrepresentable > 0, "{name}: the master weights hold bf16 values only");
        let host = model.to_host(be).unwrap();
        assert_eq!(host[0], be.download(&model.master[0]).unwrap(), "{name}: to_host returns the master weights");
    }
}

/// A checkpoint of a bf16 model holds the f32 master weights; restoring it into a fresh model
/// gives back the master bit for bit and the compute weights as its rounding.
fn checkpoint_keeps_the_master_weights<B: Backend>(be: &B) {
    let (_, trained) = sft(be, "llama", 2);
    let dir = tempfile::tempdir().unwrap();
    let mut w = StateWriter::new();
    trained.save_state(be, &mut w, "weights").unwrap();
    let path = w.save(dir.path(), "sft", 2).unwrap();
    let ck = Checkpoint::load(&path, "sft").unwrap();
    let mut fresh = Model::load(be, &fixture("llama")).unwrap();
    fresh.restore_state(be, &ck, "weights").unwrap();
    let host = |bufs: &[B::Buf]| bufs.iter().map(|b| be.download(b).unwrap()).collect::<Vec<_>>();
    assert_eq!(host(&fresh.master), host(&trained.master), "master weights after restore on {}", be.name());
    assert_eq!(host(&fresh.weights), host(&trained.weights), "compute weights after restore on {}", be.name());
    assert_ne!(host(&fresh.master), host(&fresh.weights), "the master is not bf16-rounded");
}

/// Log-probs of the fixtures' sequences in bf16 within 5e-2 absolute of transformers' (f32; seen
/// on the CPU reference: at most 0.023).
fn logprobs_match_transformers<B: Backend>(be: &B) {
    for name in MODELS {
        let r = reference(name);
        let model = Model::load(be, &fixture(name)).unwrap().into_frozen();
        assert!(model.master.is_empty());
        let seqs: Vec<Vec<u32>> = r["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
        let got = token_logprobs(be, &model, &seqs, seqs.len()).unwrap();
        let mut worst = 0f64;
        for (row, want) in got.iter().zip(r["logprobs"].as_array().unwrap()) {
            for (a, b) in row.iter().zip(want.as_array().unwrap()) {
                worst = worst.max((*a as f64 - b.as_f64().unwrap()).abs());
            }
        }
        assert!(worst < 5e-2, "{name}: bf16 log-probs {worst} from transformers on {}", be.name());
    }
}

/// One PPO step (policy, separate value model, or a value head on the policy) from the same
/// host weights and the same batch (old log-probs from the f32 CPU model).
fn ppo_step<B: Backend>(
    be: &B,
    policy: &(ModelConfig, Vec<Vec<f32>>),
    value: &(ModelConfig, Vec<Vec<f32>>),
    batch: &PpoBatch,
    head: bool,
) -> (PpoStats, PpoStats) {
    let mut policy = Model::from_host(be, policy.0.clone(), &policy.1).unwrap();
    let mut value = Model::from_host(be, value.0.clone(), &value.1).unwrap();
    let p = PpoParams { ent_coef: 0.01, kl_coef: 0.1, dual_clip: 3.0, ..PpoParams::new(0) };
    let mut upd = PpoUpdate::new(be, &policy, (!head).then_some(&value), 2, 8, AdamWConfig::default()).unwrap();
    if head {
        upd.value_head = Some(ValueHead::new(be, policy.cfg().hidden_size, 3).unwrap());
    }
    let value = if head { None } else { Some(&mut value) };
    upd.zero_grad(be).unwrap();
    upd.accumulate(be, &policy, value.as_deref(), batch, p).unwrap();
    let before = upd.stats(be).unwrap();
    let after = upd.step(be, &mut policy, value, 1e-3, 1e-3).unwrap();
    (before, after)
}

/// A PPO step in bf16 against f32: losses, statistics and gradient norms within 3e-2 relative
/// (or 3e-3 absolute near 0), with a separate value model and with a value head (seen on the CPU
/// reference: at most 6e-3 relative, the value loss).
fn ppo_step_tracks_f32<B: Backend>(be: &B) {
    let cpu = CpuBackend::new();
    for preset in ["gpt2-tiny", "llama-tiny"] {
        let (policy, value) = (noisy_host_weights(preset, false, 1), noisy_host_weights(preset, true, 2));
        let seqs = vec![vec![5u32, 17, 3, 40, 41, 8, 9, 11], vec![2, 2, 60, 61, 70, 71, 72, 73]];
        let current = token_logprobs(&cpu, &Model::from_host(&cpu, policy.0.clone(), &policy.1).unwrap(), &seqs, 2).unwrap();
        let batch = ppo_batch(&current, &seqs, &[4, 5]);
        for head in [false, true] {
            let (c_before, c_after) = ppo_step(&cpu, &policy, &value, &batch, head);
            let (g_before, g_after) = ppo_step(be, &policy, &value, &batch, head);
            let close = |what: &str, a: f32, b: f32| {
                assert!((a - b).abs() <= 3e-3 || rel(a as f64, b as f64) < 3e-2, "{preset} (value head {head}) {what}: bf16 {a} vs f32 {b} on {}", be.name());
            };
            for (when, c, g) in [("before", &c_before, &g_before), ("after", &c_after, &g_after)] {
                close(&format!("{when} policy_loss"), g.policy_loss, c.policy_loss);
                close(&format!("{when} value_loss"), g.value_loss, c.value_loss);
                close(&format!("{when} entropy"), g.entropy, c.entropy);
                close(&format!("{when} approx_kl"), g.approx_kl, c.approx_kl);
            }
            close("policy grad norm", g_after.policy_grad_norm, c_after.policy_grad_norm);
            close("value grad norm", g_after.value_grad_norm, c_after.value_grad_norm);
        }
    }
}

/// The rollout engine in bf16 (bf16 KV cache), K decode steps per read-back: the log-probs it
/// records match the training forward's in bf16 within 5e-2 absolute (on a GPU the two paths
/// sum in different orders before rounding; on the CPU reference they agree exactly), and greedy
/// rollouts with K = 1 and K > 1 agree.
fn rollout_matches_training_forward<B: Backend>(be: &B) {
    for name in MODELS {
        let model = Model::load(be, &fixture(name)).unwrap().into_frozen();
        let prompts: Vec<Vec<u32>> = (0..4).map(|i| (0..(2 + 3 * i)).map(|j| ((i * 31 + j * 7 + 5) % 380) as u32).collect()).collect();
        let greedy = GenerateConfig { max_new_tokens: 8, temperature: 0.0, ..GenerateConfig::default() };
        let one = rollout(be, &model, &prompts, &RolloutConfig { slots: 3, gen: greedy.clone(), sync_every: 1 }).unwrap();
        let many = rollout(be, &model, &prompts, &RolloutConfig { slots: 3, gen: greedy, sync_every: 4 }).unwrap();
        for (a, b) in one.outputs.iter().zip(&many.outputs) {
            assert_eq!(a.response, b.response, "{name}: greedy tokens with K = 1 and K = 4 on {}", be.name());
        }
        let sampled = GenerateConfig { max_new_tokens: 8, temperature: 1.0, seed: 5, ..GenerateConfig::default() };
        let r = rollout(be, &model, &prompts, &RolloutConfig { slots: 3, gen: sampled, sync_every: 4 }).unwrap();
        let seqs: Vec<Vec<u32>> = r.outputs.iter().map(|o| o.prompt.iter().chain(&o.response).copied().collect()).collect();
        let want = token_logprobs(be, &model, &seqs, 3).unwrap();
        for (o, w) in r.outputs.iter().zip(&want) {
            let w = &w[o.prompt.len() - 1..];
            assert!(o.logprobs.iter().zip(w).all(|(a, b)| (a - b).abs() <= 5e-2), "{name}: rollout log-probs {:?} vs training {:?}", o.logprobs, w);
        }
    }
}

/// DPO (policy and reference in bf16, the reference frozen without master weights) lowers its
/// loss over 12 steps, and GRPO steps from a saved model run with finite losses and KL.
fn dpo_and_grpo_train<B: Backend>(be: &B) {
    let tok = Tokenizer::byte_level();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::preset("gpt2-tiny", tok.vocab_size()).unwrap();
    let mut model = Model::init(be, cfg.clone(), 1).unwrap();
    let reference = Model::init(be, cfg, 1).unwrap().into_frozen();
    let mut dpo = DpoConfig::new(dir.path().join("dpo"), 12, 8);
    (dpo.train.lr, dpo.train.seq_len, dpo.eval_fraction, dpo.train.log_every) = (2e-3, 64, 0.0, 0);
    let groups = task::preference_groups(&tok, 40, 0.0, 3).unwrap();
    let s = run_dpo(be, &mut model, Some(reference), &tok, groups, &dpo).unwrap();
    assert!(s.last.loss < s.first.loss && s.last.loss.is_finite(), "DPO in bf16 on {}: loss {} -> {}", be.name(), s.first.loss, s.last.loss);
    model.save(be, &dir.path().join("sft"), &tok).unwrap();
    let grpo = demo_grpo_config(&dir.path().join("grpo"), 7, 2);
    let (_, reports) = run_grpo_stage(be, &dir.path().join("sft"), &tok, &grpo).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.kl.is_finite() && r.stats.total_loss.is_finite() && r.stats.policy_grad_norm.is_finite(), "GRPO in bf16 on {}: {r:?}", be.name());
    }
}

macro_rules! bf16_model_tests {
    ($m:ident, $get:expr) => {
        mod $m {
            use super::*;

            #[test]
            fn sft_tracks_f32() {
                if let Some(be) = $get("bf16 SFT") {
                    super::sft_tracks_f32(&be);
                }
            }

            #[test]
            fn logprobs_match_transformers() {
                if let Some(be) = $get("bf16 log-probs") {
                    super::logprobs_match_transformers(&be);
                }
            }

            #[test]
            fn ppo_step_tracks_f32() {
                if let Some(be) = $get("bf16 PPO step") {
                    super::ppo_step_tracks_f32(&be);
                }
            }

            #[test]
            fn checkpoint_keeps_the_master_weights() {
                if let Some(be) = $get("bf16 checkpoint") {
                    super::checkpoint_keeps_the_master_weights(&be);
                }
            }

            #[test]
            fn dpo_and_grpo_train() {
                if let Some(be) = $get("bf16 DPO and GRPO") {
                    super::dpo_and_grpo_train(&be);
                }
            }

            #[test]
            fn rollout_matches_training_forward() {
                if let Some(be) = $get("bf16 rollout") {
                    super::rollout_matches_training_forward(&be);
                }
            }
        }
    };
}

fn reference_backend(_: &str) -> Option<Bf16Reference> {
    Some(Bf16Reference::new())
}

/// The CUDA device in bf16 storage, or a visible skip (no device, or one older than sm_80).
fn cuda_bf16(what: &str) -> Option<rlhf::backend::CudaBackend> {
    let mut be = common::cuda_or_skip(what)?;
    match be.set_compute_dtype(Dtype::Bf16) {
        Ok(()) => Some(be),
        Err(e) => {
            eprintln!("SKIPPED {what}: {e}");
            None
        }
    }
}

bf16_model_tests!(cpu_reference, reference_backend);
bf16_model_tests!(cuda, cuda_bf16);
