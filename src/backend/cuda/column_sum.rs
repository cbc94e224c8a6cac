//! The launch shape of the two-stage column sums (`norm_dw`, `bias_bwd`: parameter gradients
//! summed over the rows of an `[n, c]` matrix; the kernels' side is in kernels/common.cuh). One
//! block of (32, 8) threads per 32 columns leaves a GPU mostly idle at training shapes (24 blocks
//! for c = 768 on an H100's 132 SMs), so the rows are cut into chunks as well: stage 1 runs a grid
//! of (column tiles x row chunks) writing each chunk's sums to a scratch, stage 2 adds a column's
//! chunks in chunk order. The chunking depends on the shape only (not on the device), so a
//! result's bits do not depend on the GPU it ran on.

use super::context::{linear, Context, Scratch};
use crate::error::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// Columns per stage-1 block (its `threadIdx.x`).
pub const COLUMN_TILE: usize = 32;
/// The blocks stage 1 aims for: twice the 132 SMs of an H100.
pub const TARGET_BLOCKS: usize = 2 * 132;
/// Rows per chunk the cut aims not to go below: at most ceil(n / 64) chunks (matrices of up to 64
/// rows stay one chunk: one launch, no scratch).
pub const MIN_CHUNK_ROWS: usize = 64;

/// How the rows of an `[n, c]` matrix are cut: `chunks` chunks of `rows` rows, the last one
/// `n - (chunks - 1) rows` (possibly shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowChunks {
    pub chunks: usize,
    pub rows: usize,
}

/// The row chunks of an `[n, c]` column sum: enough for [`TARGET_BLOCKS`] blocks of
/// [`COLUMN_TILE`] columns, and no more than `ceil(n / MIN_CHUNK_ROWS)`.
/// GPT-2 / Llama training shapes, n = 16 x 1024: c = 768 gives 11 chunks of 1490 rows (264
/// blocks), c = 1024 9 (288), c = 2048 5 (320), c = 4096 3 (384).
pub fn row_chunks(n: usize, c: usize) -> RowChunks {
    let tiles = c.div_ceil(COLUMN_TILE).max(1);
    let want = TARGET_BLOCKS.div_ceil(tiles).min(n.div_ceil(MIN_CHUNK_ROWS)).max(1);
    let rows = n.div_ceil(want).max(1);
    RowChunks { chunks: n.div_ceil(rows).max(1), rows }
}

impl RowChunks {
    /// Stage 1: grid (column tiles, chunks), block (32, 8).
    pub fn stage1(&self, c: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (c.div_ceil(COLUMN_TILE) as u32, self.chunks as u32, 1), block_dim: (COLUMN_TILE as u32, 8, 1), shared_mem_bytes: 0 }
    }

    /// Stage 2: one thread per column.
    pub fn stage2(&self, c: usize) -> LaunchConfig {
        linear(c, 256)
    }

    /// Runs `f` with the current lane's column-sum scratch, room for `sums` partial sums of each
    /// column and chunk (`sums x chunks x c` floats; a reused buffer, grown when too small).
    pub fn with_partials<R>(&self, ctx: &Context, sums: usize, c: usize, f: impl FnOnce(&mut CudaSlice<f32>) -> Result<R>) -> Result<R> {
        // one chunk: stage 1 writes the result itself and never touches the scratch
        let len = if self.chunks > 1 { sums * self.chunks * c } else { 1 };
        ctx.with_scratch(Scratch::ColumnPartial, len, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_shapes_fill_twice_an_h100_and_small_ones_stay_one_chunk() {
        let n = 16 * 1024;
        for c in [768, 1024, 1536, 2048, 3072, 4096] {
            let r = row_chunks(n, c);
            assert!(c.div_ceil(COLUMN_TILE) * r.chunks >= TARGET_BLOCKS, "c = {c}: {r:?}");
            assert!((r.chunks - 1) * r.rows < n && r.chunks * r.rows >= n, "c = {c}: {r:?} does not cover {n} rows");
        }
        assert_eq!(row_chunks(n, 768), RowChunks { chunks: 11, rows: 1490 });
        for (n, c) in [(1, 1), (64, 768), (64, 5), (64, 4096)] {
            assert_eq!(row_chunks(n, c).chunks, 1, "[{n}, {c}]");
        }
        assert_eq!(row_chunks(0, 8).chunks, 1);
        // an uneven last chunk: 4 chunks of 51 rows, the last 50
        assert_eq!(row_chunks(203, 40), RowChunks { chunks: 4, rows: 51 });
    }
}
