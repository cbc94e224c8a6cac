//! The params of the reward model's ranking loss (the `reward` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// Pairwise ranking loss of reward-model scores (InstructGPT): group g holds the scores
/// `scores[starts[g] .. starts[g + 1]]` of K >= 2 completions of one prompt, best first; each of
/// its K(K-1)/2 pairs (i better than j) costs `-log sigmoid(s_i - s_j - margins[g])`, the group's
/// loss is the mean over its pairs, and every group's loss is weighted by `scale` (1 / groups of
/// the optimiser step gives the mean).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RankingParams {
    pub n_groups: u32,
    pub scale: f32,
}
