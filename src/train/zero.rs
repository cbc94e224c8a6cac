//! ZeRO stage 1 (`--zero 1`): the AdamW state of a data-parallel job is sharded over its ranks,
//! a whole tensor at a time (as PyTorch's `ZeroRedundancyOptimizer` partitions parameters). Each
//! tensor has one owner, assigned largest first to the rank that owns the fewest values so far;
//! only the owner keeps the tensor's moments and updates it. Every rank holds the summed
//! gradients (the collective's sum), so every rank computes the same global norm, clip and skip
//! decision; after the update each rank broadcasts the tensors it owns (one message per rank)
//! and the others overwrite theirs. The owner's bits are the bits every rank would have
//! computed, so a sharded run equals an unsharded one exactly, with the moments' memory per
//! rank divided by about the world size.
//!
//! Checkpoints keep the whole state under the unsharded names: when one is written, each
//! tensor's moments go from its owner to rank 0, which writes them. A checkpoint therefore
//! resumes under any world size, sharded or not: each rank restores the tensors it owns now.

use crate::backend::ops::Backend;
use crate::error::Result;
use crate::train::collective::Collective;

/// Which rank owns each tensor of a parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shards {
    /// `owner[i]`: the rank that keeps tensor `i`'s moments and updates it
    pub owner: Vec<usize>,
    /// this process's rank
    pub rank: usize,
    /// ranks in the job
    pub size: usize,
}

impl Shards {
    /// Owners for tensors of `numels` values over `size` ranks: largest tensor first (ties in
    /// index order), each to the rank with the fewest values so far (ties to the lower rank).
    pub fn assign(numels: &[usize], rank: usize, size: usize) -> Self {
        let size = size.max(1);
        let mut order: Vec<usize> = (0..numels.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(numels[i]), i));
        let mut load = vec![0usize; size];
        let mut owner = vec![0usize; numels.len()];
        for i in order {
            let r = (0..size).min_by_key(|&r| (load[r], r)).unwrap_or(0);
            owner[i] = r;
            load[r] += numels[i];
        }
        Shards { owner, rank, size }
    }

    /// Whether this rank owns tensor `i`.
    pub fn owns(&self, i: usize) -> bool {
        self.owner.get(i) == Some(&self.rank)
    }

    /// Values of `numels` that rank `r` owns.
    pub fn load(&self, numels: &[usize], r: usize) -> usize {
        numels.iter().zip(&self.owner).filter(|(_, &o)| o == r).map(|(n, _)| n).sum()
    }

    /// The largest share any rank owns (what a device must hold).
    pub fn largest_load(&self, numels: &[usize]) -> usize {
        (0..self.size).map(|r| self.load(numels, r)).max().unwrap_or(0)
    }
}

/// Every rank's copy of each tensor in `bufs` becomes its owner's: one broadcast per rank of the
/// tensors it owns, packed.
pub fn gather_owned<B: Backend>(be: &B, comm: &dyn Collective, shards: &Shards, bufs: &mut [B::Buf]) -> Result<()> {
    for root in 0..shards.size {
        let owned: Vec<usize> = (0..bufs.len()).filter(|&i| shards.owner[i] == root).collect();
        let total: usize = owned.iter().map(|&i| be.len(&bufs[i])).sum();
        if total == 0 {
            continue;
        }
        let mut packed = Vec::with_capacity(total);
        if shards.rank == root {
            for &i in &owned {
                packed.extend_from_slice(&be.download(&bufs[i])?);
            }
        } else {
            packed.resize(total, 0.0);
        }
        comm.broadcast(root, &mut packed)?;
        if shards.rank != root {
            let mut at = 0;
            for &i in &owned {
                let n = be.len(&bufs[i]);
                be.write(&mut bufs[i], &packed[at..at + n])?;
                at += n;
            }
        }
    }
    Ok(())
}

/// Tensor `i` of `len` values from its owner (`mine` is this rank's buffer, read when it owns it),
/// on every rank.
pub fn share_tensor<B: Backend>(be: &B, comm: &dyn Collective, shards: &Shards, i: usize, mine: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut data = if shards.owns(i) { be.download(mine)? } else { vec![0.0; len] };
    comm.broadcast(shards.owner[i], &mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tensor_has_one_owner_and_the_loads_are_balanced() {
        let numels = [100, 7, 50, 50, 3, 90, 1, 60];
        for size in 1..=5 {
            let s = Shards::assign(&numels, 0, size);
            assert!(s.owner.iter().all(|&o| o < size));
            let loads: Vec<usize> = (0..size).map(|r| s.load(&numels, r)).collect();
            assert_eq!(loads.iter().sum::<usize>(), numels.iter().sum::<usize>());
            // greedy largest-first: no rank exceeds the fair share by more than the largest tensor
            let fair = numels.iter().sum::<usize>().div_ceil(size);
            assert!(s.largest_load(&numels) <= fair + 100, "{size} ranks: {loads:?}");
        }
        let two = Shards::assign(&numels, 1, 2);
        assert_eq!(two.owner, [0, 1, 0, 0, 1, 1, 1, 1]);
        assert_eq!((two.load(&numels, 0), two.load(&numels, 1)), (200, 161));
        assert!(two.owns(1) && !two.owns(0));
        assert_eq!(Shards::assign(&numels, 0, 1).owner, vec![0; numels.len()]);
    }
}
