//! Streams for overlapping phases (`Backend::concurrently`): a lane is a stream with its own cuBLAS
//! handle and workspace and its own scratch buffers, so two lanes never share memory the backend
//! owns. Lane 0 is the context's main stream; every op launches on the *current* lane.
//!
//! A concurrent region forks: an event recorded on the main stream, which lane `1 + i` (task `i`,
//! lanes taken round-robin past [`MAX_LANES`]) waits for before its first launch; then each task
//! runs with its lane current; then the main stream waits for an event recorded on every lane it
//! used (the join). The host never waits: record and wait are device-side. Allocations made
//! while a task runs are on its lane's stream, so their uses and their free (when dropped inside
//! the task) are ordered on that lane, and the join orders them before later work on the main
//! stream. The contract for callers (`Backend::concurrently`'s doc): tasks write disjoint
//! buffers, and a task does not drop a buffer that was made before the region.
//!
//! Lanes are created on the first region that needs them (a stream, a cuBLAS handle bound to it
//! with a fixed [`super::context::BLAS_WORKSPACE`]-byte workspace: 32 MiB each, which the lane's
//! cuBLASLt handle uses too) and kept.
//! Regions do not nest (a nested call runs its tasks in order on the current lane) and do not
//! record CUDA graphs (`replay` inside a task runs its launches plainly). `RLHF_CUDA_STREAMS=0`
//! runs every region in order on the main stream.

use super::context::{blas_workspace, Scratch};
use super::epilogue::LtHandle;
use super::kernels::err;
use crate::error::Result;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Lanes besides the main stream, at most (more tasks share them round-robin, in order per lane).
pub const MAX_LANES: usize = 4;

/// Whether `RLHF_CUDA_STREAMS` (unset, `1` or `0`) allows concurrent regions.
pub fn enabled_by_env() -> Result<bool> {
    parse_env(std::env::var("RLHF_CUDA_STREAMS").ok().as_deref())
}

fn parse_env(value: Option<&str>) -> Result<bool> {
    super::context::env_switch("RLHF_CUDA_STREAMS", value, "independent phases overlap on streams of their own")
}

/// A stream with what the ops need beside it.
pub struct Lane {
    pub stream: Arc<CudaStream>,
    /// bound to `stream`; `None` with the SIMT matmul
    pub blas: Option<CudaBlas>,
    /// cuBLASLt for the fused epilogues (epilogue.rs); `None` without cuBLAS or libcublasLt
    pub lt: Option<LtHandle>,
    /// the device address of the workspace below (cuBLASLt is given it per call)
    pub workspace: u64,
    /// cuBLAS's fixed workspace, shared with cuBLASLt on the same stream (declared after both
    /// handles, so it is freed after them)
    _blas_workspace: Option<CudaSlice<u8>>,
    /// named scratch buffers, allocated on `stream` (used only there)
    pub scratch: Mutex<HashMap<Scratch, CudaSlice<f32>>>,
}

impl Lane {
    /// A lane on `stream`, with a cuBLAS handle when `blas` (else the SIMT matmul).
    pub fn new(stream: Arc<CudaStream>, blas: bool) -> Result<Self> {
        let blas = if blas { Some(CudaBlas::new(stream.clone()).map_err(|e| err(format!("cuBLAS handle: {e:?}")))?) } else { None };
        let ws = blas.as_ref().map(|b| blas_workspace(&stream, b)).transpose()?;
        let workspace = ws.as_ref().map_or(0, |w| w.device_ptr(&stream).0);
        let lt = if blas.is_some() { LtHandle::new() } else { None };
        Ok(Lane { stream, blas, lt, workspace, _blas_workspace: ws, scratch: Mutex::new(HashMap::new()) })
    }

    /// A lane on a new stream of `ctx`.
    pub fn on_new_stream(ctx: &Arc<CudaContext>, blas: bool) -> Result<Self> {
        let stream = ctx.new_stream().map_err(|e| err(format!("creating a stream: {e:?}")))?;
        Self::new(stream, blas)
    }
}

/// Which lane task `i` of a region runs on (1-based: lane 0 is the main stream).
pub fn lane_of_task(i: usize) -> usize {
    1 + i % MAX_LANES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_take_the_lanes_round_robin_and_never_the_main_stream() {
        let lanes: Vec<usize> = (0..2 * MAX_LANES + 1).map(lane_of_task).collect();
        assert!(lanes.iter().all(|&l| (1..=MAX_LANES).contains(&l)));
        assert_eq!(&lanes[..MAX_LANES], &(1..=MAX_LANES).collect::<Vec<_>>()[..]);
        assert_eq!(lanes[MAX_LANES], 1);
    }

    #[test]
    fn a_bad_switch_value_names_the_variable() {
        assert!(!parse_env(Some("0")).unwrap());
        let e = parse_env(Some("yes")).unwrap_err().to_string();
        assert!(e.contains("RLHF_CUDA_STREAMS=yes") && e.contains("streams of their own"), "{e}");
    }
}
