//! Softmax cross-entropy over `[n, v]` logits with integer targets (negative = no loss).
//! Forward: `lse_i = logsumexp(logits_i)`, `loss_i = lse_i - logits_i[t_i]`; saves `lse` `[n]`.
//! Backward: `dlogits_i = dloss_i * (exp(logits_i - lse_i) - onehot(t_i))`, overwritten, zero for
//! rows without a target. `dloss_i` carries the aggregation (e.g. 1 / number of supervised tokens).

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::CrossEntropyParams;
use crate::error::Result;
use rayon::prelude::*;

/// log-sum-exp of a row, max-shifted, summed in index order.
pub fn logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
}

pub fn cross_entropy_fwd(losses: &mut [f32], lse: &mut [f32], logits: &[f32], targets: &[i32], p: CrossEntropyParams) {
    let (n, v) = (p.n as usize, p.v as usize);
    losses[..n].par_iter_mut().zip(lse[..n].par_iter_mut()).enumerate().for_each(|(i, (loss, l))| {
        let row = &logits[i * v..(i + 1) * v];
        let t = targets[i];
        *l = logsumexp(row);
        *loss = if t >= 0 { *l - row[t as usize] } else { 0.0 };
    });
}

pub fn cross_entropy_bwd(dlogits: &mut [f32], dlosses: &[f32], logits: &[f32], lse: &[f32], targets: &[i32], p: CrossEntropyParams) {
    let (n, v) = (p.n as usize, p.v as usize);
    dlogits[..n * v].par_chunks_mut(v).enumerate().for_each(|(i, d)| {
        let t = targets[i];
        if t < 0 {
            d.fill(0.0);
            return;
        }
        let row = &logits[i * v..(i + 1) * v];
        let (g, l) = (dlosses[i], lse[i]);
        for (d, &x) in d.iter_mut().zip(row) {
            *d = g * (x - l).exp();
        }
        d[t as usize] -= g;
    });
}

impl family::CrossEntropy for CpuBackend {
    fn cross_entropy_fwd(&self, losses: &mut Vec<f32>, lse: &mut Vec<f32>, logits: &Vec<f32>, targets: &Vec<i32>, p: CrossEntropyParams) -> Result<()> {
        let _t = profile::OpTimer::start("cross_entropy_fwd");
        let bad = targets[..p.n as usize].iter().find(|&&t| t >= p.v as i32);
        check(bad.is_none(), "cross_entropy_fwd", &format!("target {:?} outside the vocabulary of {}", bad, p.v))?;
        cross_entropy_fwd(losses, lse, logits, targets, p);
        Ok(())
    }
    fn cross_entropy_bwd(
        &self,
        dlogits: &mut Vec<f32>,
        dlosses: &Vec<f32>,
        logits: &Vec<f32>,
        lse: &Vec<f32>,
        targets: &Vec<i32>,
        p: CrossEntropyParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("cross_entropy_bwd");
        cross_entropy_bwd(dlogits, dlosses, logits, lse, targets, p);
        Ok(())
    }
}
