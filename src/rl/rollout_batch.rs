//! Packing sampled rollouts (prompt + response token ids) into the `[b, t]` row-major arrays the
//! scoring and training passes read: position i of row s feeds token `inputs[s t + i]` and, on
//! response positions, predicts `targets[s t + i]` (`-1` on prompt and padding positions);
//! `mask` is 1 where a target is set; `last_pos[s]` is the flat index of the position that
//! predicts row s's last response token (where a sequence-level reward is placed). `t` is the
//! longest prompt + response minus one (at least 1).

/// The packed arrays of one batch of rollouts.
#[derive(Clone, Debug, Default)]
pub struct PackedRollouts {
    /// prompt + response of each row
    pub seqs: Vec<Vec<u32>>,
    pub t: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    pub mask: Vec<f32>,
    pub last_pos: Vec<i32>,
}

/// Packs `prompts[s]` + `responses[s]` for every row, padding inputs with `pad`.
pub fn pack_rollouts(prompts: &[&[u32]], responses: &[Vec<u32>], pad: u32) -> PackedRollouts {
    let seqs: Vec<Vec<u32>> = prompts.iter().zip(responses).map(|(p, r)| p.iter().chain(r.iter()).copied().collect()).collect();
    let b = seqs.len();
    let t = seqs.iter().map(Vec::len).max().unwrap_or(2).max(2) - 1;
    let n = b * t;
    let (mut inputs, mut targets) = (vec![pad as i32; n], vec![-1i32; n]);
    let mut last_pos = vec![0i32; b];
    for (s, (seq, p)) in seqs.iter().zip(prompts).enumerate() {
        for i in 0..seq.len() - 1 {
            inputs[s * t + i] = seq[i] as i32;
            if i + 1 >= p.len() {
                targets[s * t + i] = seq[i + 1] as i32;
            }
        }
        last_pos[s] = (s * t + seq.len().saturating_sub(2).max(p.len().saturating_sub(1))) as i32;
    }
    let mask = targets.iter().map(|&x| if x >= 0 { 1.0 } else { 0.0 }).collect();
    PackedRollouts { seqs, t, inputs, targets, mask, last_pos }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_cover_the_response_only() {
        let p = pack_rollouts(&[&[1, 2], &[3]], &[vec![7], vec![8, 9]], 0);
        assert_eq!(p.t, 2);
        assert_eq!(p.inputs, vec![1, 2, 3, 8]);
        assert_eq!(p.targets, vec![-1, 7, 8, 9]);
        assert_eq!(p.mask, vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(p.last_pos, vec![1, 3]);
    }
}
