//! One read-back per RL step. A PPO or GRPO step leaves its logged scalars on the device (reward
//! scores, summed KL, the spread of the returns, each minibatch's loss statistics and gradient
//! norms); they are gathered there into one small buffer as they are made and downloaded once,
//! after the whole step is enqueued, so the host waits for the device once per step instead of
//! once per scalar (DESIGN.md, principle 4).
//!
//! A push copies chosen elements of a device buffer into the next free slots with two existing
//! ops: a gather of one-wide rows (`embedding_fwd`: `picked[k] = src[index_k]`) and their
//! scatter-add into the zeroed readout (`embedding_bwd`: `slots[first + k] += picked[k]`).

use crate::backend::ops::{Backend, EmbeddingParams};
use crate::error::{Error, Result};

/// The slots of one step on the device, and how many are taken.
pub struct StepReadout<B: Backend> {
    slots: B::Buf,
    picked: B::Buf,
    src_ids: B::Ids,
    dst_ids: B::Ids,
    capacity: usize,
    used: usize,
}

impl<B: Backend> StepReadout<B> {
    /// A readout of `capacity` slots.
    pub fn new(be: &B, capacity: usize) -> Result<Self> {
        let capacity = capacity.max(1);
        Ok(StepReadout { slots: be.alloc(capacity)?, picked: be.alloc(capacity)?, src_ids: be.alloc_ids(capacity)?, dst_ids: be.alloc_ids(capacity)?, capacity, used: 0 })
    }

    /// Empties the readout for a new step (zeroes the slots on the device).
    pub fn begin(&mut self, be: &B) -> Result<()> {
        self.used = 0;
        be.fill(&mut self.slots, 0.0, crate::backend::ops::ElementwiseParams::new(self.capacity)?)
    }

    /// Enqueues copies of `src[i]` for each `i` in `indices` into the next slots and returns the
    /// first one's index (nothing is read back).
    pub fn push(&mut self, be: &B, src: &B::Buf, indices: &[usize]) -> Result<usize> {
        let (k, first) = (indices.len(), self.used);
        if first + k > self.capacity {
            return Err(Error::invalid(format!("a step's readout of {} slots cannot take {k} more after {first}", self.capacity)));
        }
        if k == 0 {
            return Ok(first);
        }
        let len = be.len(src);
        if let Some(i) = indices.iter().find(|&&i| i >= len) {
            return Err(Error::invalid(format!("readout: element {i} of a buffer of {len}")));
        }
        let src_ids: Vec<i32> = indices.iter().map(|&i| i as i32).collect();
        let dst_ids: Vec<i32> = (first..first + k).map(|i| i as i32).collect();
        be.write_ids(&mut self.src_ids, &src_ids)?;
        be.embedding_fwd(&mut self.picked, &self.src_ids, src, EmbeddingParams { n: k as u32, c: 1, accumulate: 0, vocab: len as u32 })?;
        be.write_ids(&mut self.dst_ids, &dst_ids)?;
        be.embedding_bwd(&mut self.slots, &self.picked, &self.dst_ids, EmbeddingParams { n: k as u32, c: 1, accumulate: 0, vocab: self.capacity as u32 })?;
        self.used += k;
        Ok(first)
    }

    /// As [`Self::push`], the first `n` elements of `src`.
    pub fn push_prefix(&mut self, be: &B, src: &B::Buf, n: usize) -> Result<usize> {
        self.push(be, src, &(0..n).collect::<Vec<_>>())
    }

    /// The slots taken so far: the step's one read-back (waits for the device).
    pub fn read(&self, be: &B) -> Result<Vec<f32>> {
        let mut v = be.download(&self.slots)?;
        v.truncate(self.used);
        Ok(v)
    }
}
