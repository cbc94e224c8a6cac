//! Launchers of the `embedding` family (`shaders/embedding.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn embedding_fwd(ctx: &Context, out: &GpuBuf, ids: &GpuBuf, table: &GpuBuf, p: EmbeddingParams) -> Result<()> {
    Err(err("embedding_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn embedding_bwd(ctx: &Context, dtable: &GpuBuf, dout: &GpuBuf, ids: &GpuBuf, p: EmbeddingParams) -> Result<()> {
    Err(err("embedding_bwd: not implemented on wgpu yet"))
}
