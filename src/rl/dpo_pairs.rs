//! Preference pairs as DPO trains on them: a ranking becomes K - 1 pairs (the best completion
//! against each of the others), and a micro-batch of P pairs is packed as 2P rows (chosen rows,
//! then rejected rows) with the mask of the completion tokens.

use crate::data::preference::PreferenceGroup;
use crate::error::{Error, Result};

/// One preference pair: two full sequences sharing a prompt of `prompt_len` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct DpoPair {
    /// 1-based line of the data file
    pub line: usize,
    pub prompt_len: usize,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Pairs of the groups: a pair is itself, a ranking of K gives its best completion against each of
/// the K - 1 others. A completion with no token after the prompt is an error naming the line.
pub fn pairs_from_groups(groups: &[PreferenceGroup]) -> Result<Vec<DpoPair>> {
    let mut pairs = Vec::new();
    for g in groups {
        if g.sequences.len() < 2 {
            return Err(Error::invalid(format!("line {}: a preference needs at least 2 completions", g.line)));
        }
        if let Some(k) = g.sequences.iter().position(|s| s.len() <= g.prompt_len) {
            return Err(Error::invalid(format!("line {}: completion {} has no token after the prompt (empty, and no end token)", g.line, k + 1)));
        }
        for worse in &g.sequences[1..] {
            pairs.push(DpoPair { line: g.line, prompt_len: g.prompt_len, chosen: g.sequences[0].clone(), rejected: worse.clone() });
        }
    }
    Ok(pairs)
}

/// A micro-batch of pairs as `[2P, t]` model inputs and targets: rows `0 .. P` the chosen
/// sequences, `P .. 2P` the rejected ones; position j predicts token j + 1, and the target is -1
/// (no log-prob, mask 0) unless token j + 1 belongs to the completion.
#[derive(Clone, Debug)]
pub struct PairBatch {
    pub pairs: usize,
    pub t: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    /// tokens of the sequences (for tokens/s)
    pub tokens: usize,
}

impl PairBatch {
    pub fn new(pairs: &[&DpoPair], pad: u32) -> Self {
        let rows: Vec<(&[u32], usize)> =
            pairs.iter().map(|p| (p.chosen.as_slice(), p.prompt_len)).chain(pairs.iter().map(|p| (p.rejected.as_slice(), p.prompt_len))).collect();
        let t = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(2).max(2) - 1;
        let mut inputs = vec![pad as i32; rows.len() * t];
        let mut targets = vec![-1i32; rows.len() * t];
        for (k, (s, pl)) in rows.iter().enumerate() {
            for j in 0..s.len() - 1 {
                inputs[k * t + j] = s[j] as i32;
                if j + 1 >= *pl {
                    targets[k * t + j] = s[j + 1] as i32;
                }
            }
        }
        PairBatch { pairs: pairs.len(), t, inputs, targets, tokens: rows.iter().map(|(s, _)| s.len()).sum() }
    }

    /// 1 where a row's position has a completion target.
    pub fn mask(&self) -> Vec<f32> {
        self.targets.iter().map(|&x| if x >= 0 { 1.0 } else { 0.0 }).collect()
    }
}
