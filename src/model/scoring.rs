//! Per-token log-probabilities of given sequences under the model (teacher forcing): the
//! log-probability of each token after the first given its prefix, computed by the same training
//! forward (`cross_entropy_fwd` gives `-log p`).
//!
//! This is deliberately not the trainers' fused pass ([`Model::logprobs_into`]): it computes
//! `-log p` from the materialised logits with the same cross-entropy kernel the rollout engine
//! uses on the logits it samples from, so that the log-probs a rollout records are checked
//! against it bit for bit (`tests/model/rollout.rs`). The fused gather rounds differently (by
//! an ulp or two), which is why the two are not one function.

use crate::backend::ops::Backend;
use crate::error::{Error, Result};
use crate::model::{Activations, Model, Shape};

/// Scores `seqs` in batches of up to `batch` sequences (padded on the right; padding never
/// influences real tokens under causal attention). Returns `len - 1` values per sequence.
pub fn token_logprobs<B: Backend>(be: &B, model: &Model<B>, seqs: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
    let max_pos = model.cfg().max_positions;
    for (i, s) in seqs.iter().enumerate() {
        if s.len() > max_pos {
            return Err(Error::invalid(format!("sequence {} has {} tokens; the model's context is {max_pos}", i + 1, s.len())));
        }
    }
    let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(2);
    let batch = batch.max(1);
    let mut acts = Activations::new(be, model.cfg(), batch, batch * (longest - 1))?;
    let mut out = Vec::with_capacity(seqs.len());
    for group in seqs.chunks(batch) {
        let t = group.iter().map(|s| s.len()).max().unwrap_or(2).max(2) - 1;
        let b = group.len();
        let mut inputs = vec![0i32; b * t];
        let mut targets = vec![-1i32; b * t];
        for (bi, s) in group.iter().enumerate() {
            for i in 0..s.len().saturating_sub(1) {
                inputs[bi * t + i] = s[i] as i32;
                targets[bi * t + i] = s[i + 1] as i32;
            }
        }
        let shape = Shape { b, t };
        model.decoder.set_inputs(be, &mut acts, shape, &inputs, Some(&targets))?;
        model.decoder.forward(be, &model.weights, &mut acts, shape)?;
        let losses = be.download(&acts.losses)?;
        for (bi, s) in group.iter().enumerate() {
            let n = s.len().saturating_sub(1);
            out.push(losses[bi * t..bi * t + n].iter().map(|l| -l).collect());
        }
    }
    Ok(out)
}
