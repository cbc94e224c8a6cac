//! The params of the rollout engine's decode bookkeeping (the `decode` family of the op list in `ops/mod.rs`).

use bytemuck::{Pod, Zeroable};

/// One step of the rollout engine's bookkeeping on the device, so that decode steps can follow
/// one another without a read-back. Row r < n of the step belongs to slot `s = cache_rows[r] / t_max`
/// (the cache row its token was written to, as in [`AttentionDecodeParams`](super::AttentionDecodeParams)); the slot's state is
/// `state[4 s ..][..4] = [len, resp_len, finish, last]`: positions in its cache (prompt + fed
/// response tokens), response tokens sampled, [`decode_finish`] code, last sampled token.
/// For a running slot (`finish == 0`) with `id = sampled[r]`:
/// `history[s * stride + resp_len] = id`, `resp_len += 1`, `len += 1`, `last = id`, then
/// `finish` = STOP if `id` is in `stop_ids[..n_stop]`, else MAX_NEW if `resp_len >= max_new`,
/// else CONTEXT if `len + 1 >= max_len` (prompt + response fill the context), else 0; and the next
/// step's inputs of row r: `tokens[r] = id`, `positions[r] = len`, `cache_rows[r] = s * t_max + len`,
/// `record_rows[r] = s * stride + resp_len`, or `dump_row` once the slot has finished.
/// A finished slot (`finish != 0` on entry) is left alone (state, history, tokens, positions and
/// cache row frozen) except that `record_rows[r] = dump_row`: its row keeps decoding its last
/// token at the frozen position into its own (dead) cache row, and its `-log p` lands in the
/// dump row. Rows whose slot lies outside `slots` or whose history is full are skipped.
/// After the slots' state comes the sampling step counter `state[4 slots]` (the `step` of
/// [`SampleParams`](super::SampleParams)): every call with `n > 0` adds 1 to it, so the step key moves on without the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DecodeAdvanceParams {
    /// rows of this step
    pub n: u32,
    /// slots in `state` (4 values each) and `history` (`stride` each)
    pub slots: u32,
    /// cache positions per slot
    pub t_max: u32,
    /// history entries (and recorded log-prob rows) per slot: the longest response possible
    pub stride: u32,
    /// `max_new_tokens`
    pub max_new: u32,
    /// the model's context (max positions)
    pub max_len: u32,
    /// stop ids in `stop_ids`
    pub n_stop: u32,
    /// the record row of finished slots (outside every slot's rows)
    pub dump_row: u32,
}

impl DecodeAdvanceParams {
    /// The least length of each buffer of [`Backend::decode_advance`](super::Backend::decode_advance), in its argument order.
    pub fn min_lens(&self) -> [(&'static str, usize); 8] {
        let (n, slots) = (self.n as usize, self.slots as usize);
        [
            ("state", decode_finish::state_len(slots)),
            ("history", slots * self.stride as usize),
            ("tokens", n),
            ("positions", n),
            ("cache_rows", n),
            ("record_rows", n),
            ("sampled", n),
            ("stop_ids", self.n_stop as usize),
        ]
    }
}

/// The `finish` codes of [`DecodeAdvanceParams`]'s slot state, and the state's layout.
pub mod decode_finish {
    /// still decoding
    pub const RUNNING: i32 = 0;
    /// the last token is a stop id
    pub const STOP: i32 = 1;
    /// the response reached `max_new_tokens`
    pub const MAX_NEW: i32 = 2;
    /// prompt + response fill the model's context
    pub const CONTEXT: i32 = 3;
    /// values per slot in the state buffer: `[len, resp_len, finish, last]`
    pub const STATE: usize = 4;
    /// values in the state buffer of `slots` slots: [`STATE`] per slot, then the sampling step counter
    pub const fn state_len(slots: usize) -> usize {
        slots * STATE + 1
    }
}
