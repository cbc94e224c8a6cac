//! Element-wise ops: fill, copy, add, add_inplace, scale_inplace. Shapes: flat `[n]`.

use super::{profile, CpuBackend};
use crate::backend::ops::family;
use crate::backend::ops::*;
use crate::error::Result;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn fill(out: &mut [f32], value: f32) {
    out.par_chunks_mut(CHUNK).for_each(|c| c.fill(value));
}

pub fn copy(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, i)| o.copy_from_slice(i));
}

pub fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    });
}

pub fn add_inplace(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(a, x)| {
        for (a, x) in a.iter_mut().zip(x) {
            *a += x;
        }
    });
}

pub fn scale_inplace(x: &mut [f32], s: f32) {
    x.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v *= s));
}

impl family::Elementwise for CpuBackend {
    fn fill(&self, out: &mut Vec<f32>, value: f32, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("fill");
        fill(&mut out[..p.n as usize], value);
        Ok(())
    }
    fn copy(&self, out: &mut Vec<f32>, inp: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("copy");
        let n = p.n as usize;
        copy(&mut out[..n], &inp[..n]);
        Ok(())
    }
    fn add(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("add");
        let n = p.n as usize;
        add(&mut out[..n], &a[..n], &b[..n]);
        Ok(())
    }
    fn add_inplace(&self, acc: &mut Vec<f32>, x: &Vec<f32>, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("add_inplace");
        let n = p.n as usize;
        add_inplace(&mut acc[..n], &x[..n]);
        Ok(())
    }
    fn scale_inplace(&self, x: &mut Vec<f32>, s: f32, p: ElementwiseParams) -> Result<()> {
        let _t = profile::OpTimer::start("scale_inplace");
        scale_inplace(&mut x[..p.n as usize], s);
        Ok(())
    }
}
