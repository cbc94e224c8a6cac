//! The transformers fixtures (tests/fixtures/<model>/: config, weights, reference.json written by
//! tests/fixtures/make_fixtures.py) and the batches the whole-model tests build from them.

use rlhf::backend::CpuBackend;
use rlhf::data::batch::Batch;
use rlhf::data::rng::Rng;
use rlhf::model::{Model, ModelConfig};
use rlhf::rl::policy_update::PpoBatch;
use serde_json::Value;
use std::path::PathBuf;

/// The fixture models: one per supported family.
pub const MODELS: &[&str] = &["gpt2", "llama", "qwen2"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The fixture's reference.json (token ids, transformers' log-probs, losses, gradient norms).
pub fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap()
}

pub fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// The reference sequences as one language-modelling batch, with the targets of the first
/// `prompt_mask - 1` positions masked out.
pub fn fixture_batch(name: &str, prompt_mask: usize) -> Batch {
    let r = reference(name);
    let seqs: Vec<Vec<u32>> = r["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
    let (b, t) = (seqs.len(), seqs[0].len() - 1);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for sq in &seqs {
        for i in 0..t {
            inputs.push(sq[i] as i32);
            targets.push(if i + 1 < prompt_mask { -1 } else { sq[i + 1] as i32 });
        }
    }
    let n_supervised = targets.iter().filter(|&&x| x >= 0).count();
    Batch { b, t, inputs, targets, positions: (0..b * t).map(|i| (i % t) as i32).collect(), n_supervised }
}

/// A PPO minibatch of two sequences (responses of 4 and 3 tokens) whose old log-probs sit near
/// the current ones, so that some ratios clip and some do not.
pub fn ppo_batch(current: &[Vec<f32>], seqs: &[Vec<u32>], prompt_lens: &[usize]) -> PpoBatch {
    let t = seqs[0].len() - 1;
    let mut rng = Rng::new(9);
    let mut b = PpoBatch { b: seqs.len(), t, ..PpoBatch::default() };
    let mut ref_logp = Vec::new();
    for (si, (seq, &pl)) in seqs.iter().zip(prompt_lens).enumerate() {
        for i in 0..t {
            b.inputs.push(seq[i] as i32);
            b.targets.push(if i + 1 >= pl { seq[i + 1] as i32 } else { -1 });
            b.old_logp.push(current[si][i] + (rng.next_f32() - 0.5) * 0.6);
            b.advantages.push(if si == 0 { 1.2 } else { -0.8 });
            b.returns.push(rng.normal());
            b.old_values.push(rng.normal() * 0.1);
            ref_logp.push(current[si][i] + (rng.next_f32() - 0.5) * 0.4);
        }
    }
    b.ref_logp = Some(ref_logp);
    b
}

/// Host weights of a `preset` model (a reward model with `reward`) from `Model::init(seed)` on the
/// CPU with normal(0, 0.05) noise added, so that no weight sits at its initial value.
pub fn noisy_host_weights(preset: &str, reward: bool, seed: u64) -> (ModelConfig, Vec<Vec<f32>>) {
    let cpu = CpuBackend::new();
    let mut cfg = ModelConfig::preset(preset, 96).unwrap();
    cfg.score_head = reward;
    let m = Model::init(&cpu, cfg.clone(), seed).unwrap();
    let mut w = m.to_host(&cpu).unwrap();
    let mut rng = Rng::new(seed + 7);
    w.iter_mut().flatten().for_each(|x| *x += rng.normal() * 0.05);
    (cfg, w)
}
