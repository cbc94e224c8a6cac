//! Launchers of the `sample` family (`shaders/sample.wgsl`): shapes checked on the host, then one
//! or more dispatches. Not yet implemented.

#![allow(unused_variables)]

use super::buffer::GpuBuf;
use super::context::{err, Context};
use crate::backend::ops::*;
use crate::error::Result;

#[allow(clippy::too_many_arguments)]
pub fn sample(ctx: &Context, out: &GpuBuf, logits: &GpuBuf, p: SampleParams) -> Result<()> {
    Err(err("sample: not implemented on wgpu yet"))
}
