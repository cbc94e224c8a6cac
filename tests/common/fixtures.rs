//! The transformers fixtures (tests/fixtures/<model>/: config, weights, reference.json written by
//! tests/fixtures/make_fixtures.py) and the batches the whole-model tests build from them.

use rlhf::data::batch::Batch;
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
