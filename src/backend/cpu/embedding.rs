//! Embedding gather. Forward: `out[i, :] (+)= table[ids[i], :]`, out `[n, c]`, table `[vocab, c]`.
//! Backward: `dtable[ids[i], :] += dout[i, :]` (a parameter gradient: accumulates). Saved: nothing
//! but the ids. The backward is parallel over channel blocks so that the reduction order over
//! tokens is fixed (deterministic) and no two threads write the same row.

use super::{check, profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::EmbeddingParams;
use crate::error::Result;
use rayon::prelude::*;

pub fn embedding_fwd(out: &mut [f32], ids: &[i32], table: &[f32], p: EmbeddingParams) {
    let c = p.c as usize;
    let acc = p.accumulate != 0;
    out[..p.n as usize * c].par_chunks_mut(c).zip(ids.par_iter()).for_each(|(row, &id)| {
        let src = &table[id as usize * c..(id as usize + 1) * c];
        if acc {
            row.iter_mut().zip(src).for_each(|(o, s)| *o += s);
        } else {
            row.copy_from_slice(src);
        }
    });
}

pub fn embedding_bwd(dtable: &mut [f32], dout: &[f32], ids: &[i32], p: EmbeddingParams) {
    let (n, c, vocab) = (p.n as usize, p.c as usize, p.vocab as usize);
    // bucket token indices by id, in token order, then let each thread own a set of rows
    let mut first = vec![usize::MAX; vocab];
    let mut next = vec![usize::MAX; n];
    let mut last = vec![usize::MAX; vocab];
    for (i, &id) in ids[..n].iter().enumerate() {
        let id = id as usize;
        if first[id] == usize::MAX {
            first[id] = i;
        } else {
            next[last[id]] = i;
        }
        last[id] = i;
    }
    dtable[..vocab * c].par_chunks_mut(c).enumerate().for_each(|(id, row)| {
        let mut i = first[id];
        while i != usize::MAX {
            row.iter_mut().zip(&dout[i * c..(i + 1) * c]).for_each(|(d, g)| *d += g);
            i = next[i];
        }
    });
}

impl family::Embedding for CpuBackend {
    fn embedding_fwd(&self, out: &mut Vec<f32>, ids: &Vec<i32>, table: &Vec<f32>, p: EmbeddingParams) -> Result<()> {
        let _t = profile::OpTimer::start("embedding_fwd");
        let bad = ids[..p.n as usize].iter().find(|&&i| i < 0 || i as u32 >= p.vocab);
        check(bad.is_none(), "embedding_fwd", &format!("id {:?} outside the vocabulary of {}", bad, p.vocab))?;
        embedding_fwd(out, ids, table, p);
        Ok(())
    }
    fn embedding_bwd(&self, dtable: &mut Vec<f32>, dout: &Vec<f32>, ids: &Vec<i32>, p: EmbeddingParams) -> Result<()> {
        let _t = profile::OpTimer::start("embedding_bwd");
        embedding_bwd(dtable, dout, ids, p);
        Ok(())
    }
}
