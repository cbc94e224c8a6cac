//! The fused LM-head log-probs on the CPU: the checks of `logprob_gather_*` around the kernels
//! of rl_losses.rs.

use super::rl_losses;
use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::*;
use crate::error::Result;

/// Shapes, temperature, chunk and targets of `logprob_gather_*`.
fn check_logprob(op: &str, h: &[f32], targets: &[i32], w: &[f32], p: LogprobParams) -> Result<()> {
    let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
    check(p.temperature > 0.0 && p.temperature.is_finite(), op, "temperature must be positive")?;
    check(p.chunk > 0 && v > 0, op, "chunk and vocabulary must be positive")?;
    check(h.len() >= n * c && targets.len() >= n, op, "h or targets shorter than n rows")?;
    check(w.len() >= v * c, op, "w smaller than [v, c]")?;
    let bad = targets[..n].iter().find(|&&t| t >= p.v as i32);
    check(bad.is_none(), op, &format!("target {:?} outside the vocabulary of {}", bad, p.v))
}

impl family::LogprobGather for CpuBackend {
    fn logprob_gather_fwd(
        &self,
        logp: &mut Vec<f32>,
        entropy: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        h: &Vec<f32>,
        targets: &Vec<i32>,
        w: &Vec<f32>,
        p: LogprobParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("logprob_gather_fwd");
        let op = "logprob_gather_fwd";
        check_logprob(op, h, targets, w, p)?;
        let n = p.n as usize;
        check(logp.len() >= n && entropy.len() >= n && lse.len() >= n, op, "output shorter than n")?;
        rl_losses::logprob_gather_fwd(logp, entropy, lse, h, targets, w, p);
        Ok(())
    }
    fn logprob_gather_bwd(
        &self,
        dh: &mut Vec<f32>,
        dw: &mut Vec<f32>,
        dlogp: &Vec<f32>,
        dentropy: &Vec<f32>,
        h: &Vec<f32>,
        targets: &Vec<i32>,
        lse: &Vec<f32>,
        entropy: &Vec<f32>,
        w: &Vec<f32>,
        p: LogprobParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("logprob_gather_bwd");
        let op = "logprob_gather_bwd";
        check_logprob(op, h, targets, w, p)?;
        let (n, c, v) = (p.n as usize, p.c as usize, p.v as usize);
        check(dh.len() >= n * c && dw.len() >= v * c, op, "dh or dw smaller than h or w")?;
        check(dlogp.len() >= n && dentropy.len() >= n && lse.len() >= n && entropy.len() >= n, op, "dlogp, dentropy, lse or entropy shorter than n")?;
        rl_losses::logprob_gather_bwd(dh, dw, dlogp, dentropy, h, targets, lse, entropy, w, p);
        Ok(())
    }
}
