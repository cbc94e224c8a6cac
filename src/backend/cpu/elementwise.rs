//! Element-wise ops: fill, copy, add, add_inplace, scale_inplace. Shapes: flat `[n]`.

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
