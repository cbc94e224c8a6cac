//! Launchers of the `attention` family (`shaders/attention.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn attention_fwd(ctx: &Context, out: &GpuBuf, lse: &GpuBuf, q: &GpuBuf, k: &GpuBuf, v: &GpuBuf, p: AttentionParams) -> Result<()> {
    Err(err("attention_fwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(ctx: &Context, dqkv: &GpuBuf, dout: &GpuBuf, out: &GpuBuf, lse: &GpuBuf, qkv: &GpuBuf, p: AttentionParams) -> Result<()> {
    Err(err("attention_bwd: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write(ctx: &Context, cache: &GpuBuf, qkv: &GpuBuf, p: KvCacheParams) -> Result<()> {
    Err(err("kv_cache_write: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn scatter_rows(ctx: &Context, out: &GpuBuf, inp: &GpuBuf, rows: &GpuBuf, p: ScatterParams) -> Result<()> {
    Err(err("scatter_rows: not implemented on wgpu yet"))
}

#[allow(clippy::too_many_arguments)]
pub fn attention_decode_fwd(ctx: &Context, out: &GpuBuf, lse: &GpuBuf, q: &GpuBuf, cache: &GpuBuf, rows: &GpuBuf, p: AttentionDecodeParams) -> Result<()> {
    Err(err("attention_decode_fwd: not implemented on wgpu yet"))
}
