//! Next-token sampling over `[n, v]` logits (see `SampleParams`). Greedy at temperature 0
//! (argmax, lowest index on ties). Otherwise the candidates are sorted by logit (descending,
//! index ascending on ties), cut to top_k, turned into probabilities with softmax(logit / T), cut
//! to the smallest prefix whose mass reaches top_p, and one is drawn with the row's uniform
//! `u = uniform(seed, step, row)` by walking the prefix until the running mass exceeds u * mass.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::SampleParams;
use crate::error::Result;
use rayon::prelude::*;

/// A counter-based uniform draw in [0, 1) from (seed, step, row): SplitMix64 finalisation of the
/// combined counter, top 24 bits. Identical on every backend.
pub fn uniform(seed: u64, step: u32, row: u32) -> f32 {
    let mut z = seed ^ ((step as u64) << 32 | row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

pub fn sample_row(row: &[f32], p: &SampleParams, u: f32) -> i32 {
    let argmax = || {
        let mut best = 0;
        for (i, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = i;
            }
        }
        best as i32
    };
    if p.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let k = if p.top_k == 0 { row.len() } else { (p.top_k as usize).min(row.len()) };
    if k < row.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    let max = row[idx[0] as usize];
    let probs: Vec<f32> = idx.iter().map(|&i| ((row[i as usize] - max) / p.temperature).exp()).collect();
    let total: f32 = probs.iter().sum();
    let mut keep = probs.len();
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, &q) in probs.iter().enumerate() {
            acc += q / total;
            if acc >= p.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let mass: f32 = probs[..keep].iter().sum();
    let target = u * mass;
    let mut acc = 0.0;
    for i in 0..keep {
        acc += probs[i];
        if acc > target {
            return idx[i] as i32;
        }
    }
    idx[keep - 1] as i32
}

/// Samples rows `0..p.n` with the step key `step` (read from the op's `steps` buffer).
pub fn sample(out: &mut [i32], logits: &[f32], step: u32, p: SampleParams) {
    let (n, v) = (p.n as usize, p.v as usize);
    let seed = (p.seed_hi as u64) << 32 | p.seed_lo as u64;
    out[..n].par_iter_mut().enumerate().for_each(|(i, o)| {
        *o = sample_row(&logits[i * v..(i + 1) * v], &p, uniform(seed, step, i as u32));
    });
}

impl family::Sample for CpuBackend {
    fn sample(&self, out: &mut Vec<i32>, logits: &Vec<f32>, steps: &Vec<i32>, p: SampleParams) -> Result<()> {
        let _t = profile::OpTimer::start("sample");
        let (n, v) = (p.n as usize, p.v as usize);
        check(
            out.len() >= n && logits.len() >= n * v,
            "sample",
            &format!("out needs {n} values and logits {} (they hold {} and {})", n * v, out.len(), logits.len()),
        )?;
        check((p.step_at as usize) < steps.len(), "sample", &format!("step_at {} is outside the {} values of steps", p.step_at, steps.len()))?;
        sample(out, logits, steps[p.step_at as usize] as u32, p);
        Ok(())
    }
}
