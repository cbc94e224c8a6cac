//! Batches of next-token-prediction examples and a seeded, resumable batch iterator.

use crate::data::jsonl::Example;
use crate::data::rng::Rng;
use crate::error::{Error, Result};

/// A `[b, t]` batch, row-major. Row `r` holds `ids[..len - 1]` of its example as inputs and the
/// next token as target where that token is supervised (`-1` elsewhere: prompt tokens,
/// padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub b: usize,
    pub t: usize,
    /// `[b * t]` token ids; padding uses the pad id.
    pub inputs: Vec<i32>,
    /// `[b * t]` target ids, `-1` for no loss.
    pub targets: Vec<i32>,
    /// `[b * t]` position of each input token in its sequence: `0..t` in every row.
    pub positions: Vec<i32>,
    /// Number of targets that are not `-1`.
    pub n_supervised: usize,
}

impl Batch {
    /// Builds a batch from examples. `t = min(seq_len, longest example - 1)` (at least 1).
    /// Examples longer than `seq_len + 1` tokens are truncated to their first `seq_len + 1`
    /// tokens (the end is dropped); shorter ones are padded with `pad_id`, with target `-1`.
    /// For `i < len - 1`: `inputs[r, i] = ids[i]` and `targets[r, i] = ids[i + 1]` if
    /// `loss_mask[i + 1]` else `-1`; positions `len - 1..t` are padding.
    pub fn from_examples<'a>(examples: impl IntoIterator<Item = &'a Example>, seq_len: usize, pad_id: u32) -> Batch {
        let examples: Vec<&Example> = examples.into_iter().collect();
        let b = examples.len();
        let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let t = seq_len.min(longest.saturating_sub(1)).max(1);
        let mut inputs = vec![pad_id as i32; b * t];
        let mut targets = vec![-1i32; b * t];
        let mut n_supervised = 0;
        for (r, ex) in examples.iter().enumerate() {
            let n = ex.ids.len().min(t + 1);
            let row_in = &mut inputs[r * t..(r + 1) * t];
            let row_tg = &mut targets[r * t..(r + 1) * t];
            for (i, pair) in ex.ids[..n].windows(2).enumerate() {
                row_in[i] = pair[0] as i32;
                if ex.loss_mask.get(i + 1).copied().unwrap_or(false) {
                    row_tg[i] = pair[1] as i32;
                    n_supervised += 1;
                }
            }
        }
        let positions = (0..b).flat_map(|_| 0..t as i32).collect();
        Batch { b, t, inputs, targets, positions, n_supervised }
    }

    /// Rows `rows` of the batch (same `t`): a data-parallel rank's share of a global batch.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let (lo, hi) = (rows.start.min(self.b) * self.t, rows.end.min(self.b) * self.t);
        let targets = self.targets[lo..hi].to_vec();
        let n_supervised = targets.iter().filter(|&&x| x >= 0).count();
        Batch { b: (hi - lo) / self.t.max(1), t: self.t, inputs: self.inputs[lo..hi].to_vec(), targets, positions: self.positions[lo..hi].to_vec(), n_supervised }
    }
}

/// Iterates over examples in a seeded shuffled order, epoch after epoch; each epoch has its
/// own permutation derived from `(seed, epoch)`, so a run resumes exactly from
/// [`position`](Self::position) with [`seek`](Self::seek).
#[derive(Debug, Clone)]
pub struct Batcher {
    examples: Vec<Example>,
    seed: u64,
    pad_id: u32,
    order: Vec<usize>,
    epoch: u64,
    cursor: usize,
}

impl Batcher {
    /// A batcher over `examples` (at least one), padding with `pad_id`.
    pub fn new(examples: Vec<Example>, seed: u64, pad_id: u32) -> Result<Batcher> {
        if examples.is_empty() {
            return Err(Error::invalid("cannot batch an empty dataset"));
        }
        let order = Self::permutation(seed, 0, examples.len());
        Ok(Batcher { examples, seed, pad_id, order, epoch: 0, cursor: 0 })
    }

    fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        Rng::with_stream(seed, epoch).shuffle(&mut order);
        order
    }

    fn next_index(&mut self) -> usize {
        if self.cursor == self.order.len() {
            self.epoch += 1;
            self.cursor = 0;
            self.order = Self::permutation(self.seed, self.epoch, self.examples.len());
        }
        self.cursor += 1;
        self.order[self.cursor - 1]
    }

    /// The next example in the shuffled order (moving to the next epoch at the end of one).
    pub fn next_example(&mut self) -> &Example {
        let idx = self.next_index();
        &self.examples[idx]
    }

    /// The next `batch_size` examples as a batch (see [`Batch::from_examples`]); a batch may
    /// span the end of one epoch and the start of the next.
    pub fn next_batch(&mut self, batch_size: usize, seq_len: usize) -> Batch {
        let idxs: Vec<usize> = (0..batch_size).map(|_| self.next_index()).collect();
        Batch::from_examples(idxs.iter().map(|&i| &self.examples[i]), seq_len, self.pad_id)
    }

    /// Examples consumed since the start (all epochs). Store it to resume with
    /// [`seek`](Self::seek).
    pub fn position(&self) -> u64 {
        self.epoch * self.examples.len() as u64 + self.cursor as u64
    }

    /// Moves to a position returned by [`position`](Self::position) (with the same examples
    /// and seed).
    pub fn seek(&mut self, position: u64) {
        let n = self.examples.len() as u64;
        let epoch = position / n;
        if epoch != self.epoch {
            self.order = Self::permutation(self.seed, epoch, self.examples.len());
        }
        self.epoch = epoch;
        self.cursor = (position % n) as usize;
    }

    /// The current epoch (0-based).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}
