//! Next-token sampling over `[n, v]` logits (see `SampleParams`): the reference that
//! `kernels/sample.cu` and `shaders/sample.wgsl` follow step for step, with the arithmetic of
//! [`super::sample_math`], so that every backend samples the same ids.
//!
//! - temperature <= 0: greedy, the argmax (lowest index on ties, NaN logits skipped; 0 when every
//!   logit is NaN).
//! - Otherwise a token is kept when its logit is not NaN and its order key (`key_of`, the order of
//!   `f32::total_cmp`) is at least a threshold key `thr` (0 at first: every token):
//!   - top_k (0 < top_k < v): `thr` = the top_k-th largest key (counted with multiplicity). Every
//!     token whose key equals it is kept, so ties at the threshold can keep more than top_k.
//!   - top_p (< 1): with masses `m_j = floor(exp((x_j - max) / T) 2^40)` over the kept tokens
//!     and their sum `total`, `thr` = the largest key K whose kept tokens with key >= K hold at
//!     least `top_p_goal(total, top_p)` (about top_p * total); again every token at the
//!     threshold key is kept. No cut when `total` is 0.
//!   - the draw: Gumbel-max, the kept token with the largest `x_j / T + g_j` (lowest index on
//!     ties), `g_j = -ln(-ln u_j)` with `u_j` the row's counter-based uniform of token j. Its
//!     probability is softmax(x / T) restricted to the kept tokens.
//! - Both thresholds come from a radix select on the key's bytes from the top: four passes, each
//!   a 256-bin histogram of the weights (1 for top-k, the masses for top-p) of the tokens whose
//!   higher bytes equal the prefix found so far, then the bin where the running sum from the top
//!   reaches what is still needed. The weights are integers, so the sums and the thresholds do
//!   not depend on the order of the additions.

use super::sample_math::{gumbel, key_of, mass, row_state, top_p_goal, uniform_open};
use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::SampleParams;
use crate::error::Result;
use rayon::prelude::*;

/// The index of the largest `value(j)` over `0..v` (lowest index on ties); `None` and NaN values
/// are skipped.
fn argmax(v: usize, value: impl Fn(usize) -> Option<f32>) -> Option<u32> {
    let mut best: Option<(f32, u32)> = None;
    for j in 0..v {
        if let Some(s) = value(j) {
            if !s.is_nan() && best.is_none_or(|(b, _)| s > b) {
                best = Some((s, j as u32));
            }
        }
    }
    best.map(|(_, j)| j)
}

/// The largest key K such that the weights of the tokens with key >= K sum to at least `need`,
/// found byte by byte from the top; `need` gets the sum of all weights (after the first pass) and
/// says what to reach (`None`, or a sum that is never reached: no threshold).
fn radix_select(keys: &[u32], weights: impl Fn(usize) -> u64, need: impl Fn(u64) -> Option<u64>) -> Option<u32> {
    let (mut prefix, mut still) = (0u32, 0u64);
    for pass in 0..4 {
        let shift = 24 - 8 * pass;
        let above = if pass == 0 { 0 } else { u32::MAX << (shift + 8) };
        let mut hist = [0u64; 256];
        for (j, &k) in keys.iter().enumerate() {
            if k & above == prefix {
                hist[(k >> shift & 255) as usize] += weights(j);
            }
        }
        if pass == 0 {
            still = need(hist.iter().sum())?;
        }
        let mut cum = 0u64;
        let mut found = None;
        for b in (0..256).rev() {
            if cum + hist[b] >= still {
                found = Some(b as u32);
                break;
            }
            cum += hist[b];
        }
        prefix |= found? << shift;
        still -= cum;
    }
    Some(prefix)
}

/// The token drawn from one row with its stream state `state` ([`row_state`]).
pub fn sample_row(row: &[f32], p: &SampleParams, state: u64) -> i32 {
    let v = row.len();
    if p.temperature <= 0.0 {
        return argmax(v, |j| Some(row[j])).unwrap_or(0) as i32;
    }
    let keys: Vec<u32> = row.iter().map(|&x| key_of(x)).collect();
    let kept = |thr: u32, j: usize| !row[j].is_nan() && keys[j] >= thr;
    let mut thr = 0u32;
    if p.top_k > 0 && (p.top_k as usize) < v {
        thr = radix_select(&keys, |j| kept(0, j) as u64, |_| Some(p.top_k as u64)).unwrap_or(0);
    }
    if p.top_p < 1.0 {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        let masses: Vec<u64> = (0..v).map(|j| if kept(thr, j) { mass(row[j], max, p.temperature) } else { 0 }).collect();
        let goal = |total: u64| (total > 0).then(|| top_p_goal(total, p.top_p));
        thr = radix_select(&keys, |j| masses[j], goal).unwrap_or(thr);
    }
    argmax(v, |j| kept(thr, j).then(|| row[j] / p.temperature + gumbel(uniform_open(state, j as u32)))).unwrap_or(0) as i32
}

/// Samples rows `0..p.n` with the step key `step` (read from the op's `steps` buffer).
pub fn sample(out: &mut [i32], logits: &[f32], step: u32, p: SampleParams) {
    let (n, v) = (p.n as usize, p.v as usize);
    let seed = (p.seed_hi as u64) << 32 | p.seed_lo as u64;
    out[..n].par_iter_mut().enumerate().for_each(|(i, o)| {
        *o = sample_row(&logits[i * v..(i + 1) * v], &p, row_state(seed, step, i as u32));
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
        if let Some(why) = p.unsupported() {
            check(false, "sample", &why)?;
        }
        sample(out, logits, steps[p.step_at as usize] as u32, p);
        Ok(())
    }
}
