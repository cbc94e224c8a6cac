//! Reward-model ranking loss (see `RankingParams`). For group g with scores `s[a..b]` (best
//! first), pairs i < j, `z = s_i - s_j - m_g`:
//!   `loss_g = mean_pairs softplus(-z)`, `d s_i -= scale * sigmoid(-z) / pairs_g`,
//!   `d s_j += scale * sigmoid(-z) / pairs_g`.
//! Stats accumulate `[scale * sum_g loss_g, pairs with s_i > s_j, pairs, sum (s_i - s_j)]`.
//! Groups are independent (a prompt's completions), so the work is tiny and sequential here;
//! the summation order is fixed.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::RankingParams;
use crate::error::Result;

fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn ranking_loss(dscores: &mut [f32], stats: &mut [f32], scores: &[f32], starts: &[i32], margins: &[f32], p: RankingParams) {
    let n_groups = p.n_groups as usize;
    let end = starts[n_groups] as usize;
    dscores[..end].fill(0.0);
    let (mut loss, mut correct, mut pairs, mut gap) = (0f64, 0f64, 0f64, 0f64);
    for g in 0..n_groups {
        let (a, b) = (starts[g] as usize, starts[g + 1] as usize);
        let k = b - a;
        let n_pairs = (k * (k - 1) / 2) as f32;
        let mut group_loss = 0f64;
        for i in a..b {
            for j in i + 1..b {
                let diff = scores[i] - scores[j];
                let z = diff - margins[g];
                group_loss += softplus(-z) as f64;
                let g_pair = p.scale * sigmoid(-z) / n_pairs;
                dscores[i] -= g_pair;
                dscores[j] += g_pair;
                correct += f64::from(u8::from(diff > 0.0));
                pairs += 1.0;
                gap += diff as f64;
            }
        }
        loss += p.scale as f64 * group_loss / n_pairs as f64;
    }
    stats[0] += loss as f32;
    stats[1] += correct as f32;
    stats[2] += pairs as f32;
    stats[3] += gap as f32;
}

impl family::Reward for CpuBackend {
    fn ranking_loss(
        &self,
        dscores: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        scores: &Vec<f32>,
        starts: &Vec<i32>,
        margins: &Vec<f32>,
        p: RankingParams,
    ) -> Result<()> {
        let _t = profile::OpTimer::start("ranking_loss");
        let g = p.n_groups as usize;
        check(starts.len() > g && margins.len() >= g && stats.len() >= 4, "ranking_loss", "starts needs n_groups + 1 entries, margins n_groups, stats 4")?;
        let ok = starts[..=g].windows(2).all(|w| w[0] >= 0 && w[1] - w[0] >= 2) && (starts[g] as usize) <= scores.len().min(dscores.len());
        check(ok, "ranking_loss", "every group needs at least 2 scores inside the buffers")?;
        ranking_loss(dscores, stats, scores, starts, margins, p);
        Ok(())
    }
}
