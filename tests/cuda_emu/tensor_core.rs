//! The tensor-core wrappers of `kernels/common.cuh` (`mma_bf16_16816`, `ldmatrix_*`,
//! `cp_async16`): on the emulator their C++ models, on a GPU the real instructions, checked
//! against plain matrix products and the PTX ISA's documented fragment layouts
//! (`selftest.cu`'s `tc_*` kernels).

use super::{cfg, device, emu, kernel};
use crate::common::randv;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use rlhf::backend::storage::{round_bf16, to_bf16_bits};
use rlhf::data::rng::Rng;

/// Row-major `[m, k] x [k, n] (+ c)` in f64, with the sum of |products| for the error bound.
fn product(a: &[f32], b: &[f32], c: Option<&[f32]>, (m, k, n): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let c0 = c.map_or(0.0, |c| c[i * n + j] as f64);
            out[i * n + j] = c0 + (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>();
            mag[i * n + j] = c0.abs() + (0..k).map(|p| (a[i * k + p] as f64 * b[p * n + j] as f64).abs()).sum::<f64>();
        }
    }
    (out, mag)
}

/// f32 accumulation of k exact bf16 products: at most k + 1 roundings of 2^-24 relative to the
/// magnitude; a wrong fragment layout is off by whole products.
fn assert_product(what: &str, got: &[f32], (want, mag): (Vec<f64>, Vec<f64>), k: usize) {
    for (i, (&g, (&w, &m))) in got.iter().zip(want.iter().zip(&mag)).enumerate() {
        let tol = (k as f64 + 2.0) * m * f64::from(f32::EPSILON) / 2.0 + 1e-30;
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i} = {g}, the product is {w} (tolerance {tol:e})");
    }
}

fn bf16_matrix(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<u16>) {
    let v: Vec<f32> = randv(rng, n, 1.0).into_iter().map(round_bf16).collect();
    let bits = to_bf16_bits(&v);
    (v, bits)
}

#[test]
fn mma_fragments_give_the_matrix_product() {
    let Some(e) = device() else { return };
    let mut rng = Rng::new(11);
    let (a, ab) = bf16_matrix(&mut rng, 16 * 16);
    let (b, bb) = bf16_matrix(&mut rng, 16 * 8);
    let c = randv(&mut rng, 16 * 8, 2.0);
    let s = &e.stream;
    let (da, db, dc) = (s.clone_htod(&ab).unwrap(), s.clone_htod(&bb).unwrap(), s.clone_htod(&c).unwrap());
    let mut d = s.alloc_zeros::<f32>(16 * 8).unwrap();
    let f = kernel(e, "tc_mma");
    let mut l = s.launch_builder(&f);
    l.arg(&mut d).arg(&da).arg(&db).arg(&dc);
    unsafe { l.launch(cfg(32, 0)) }.unwrap();
    assert_product("mma m16n8k16", &s.clone_dtoh(&d).unwrap(), product(&a, &b, Some(&c), (16, 16, 8)), 16);
}

#[test]
fn cp_async_and_ldmatrix_feed_mma() {
    let Some(e) = device() else { return };
    let mut rng = Rng::new(12);
    let (a, ab) = bf16_matrix(&mut rng, 32 * 32);
    let (b, bb) = bf16_matrix(&mut rng, 32 * 16);
    let s = &e.stream;
    let (da, db) = (s.clone_htod(&ab).unwrap(), s.clone_htod(&bb).unwrap());
    let mut d = s.alloc_zeros::<f32>(32 * 16).unwrap();
    let f = kernel(e, "tc_gemm");
    let mut l = s.launch_builder(&f);
    l.arg(&mut d).arg(&da).arg(&db);
    unsafe { l.launch(cfg(64, 0)) }.unwrap();
    assert_product("cp.async + ldmatrix + mma, 32x32x16", &s.clone_dtoh(&d).unwrap(), product(&a, &b, None, (32, 32, 16)), 32);
}

#[test]
fn ldmatrix_gives_the_documented_fragments() {
    let Some(e) = device() else { return };
    // element (i, j) of matrix m holds the bits m * 64 + i * 8 + j
    let m: Vec<u16> = (0..256).collect();
    let s = &e.stream;
    let dm = s.clone_htod(&m).unwrap();
    let mut r = s.alloc_zeros::<u32>(384).unwrap();
    let f = kernel(e, "tc_ldmatrix");
    let mut l = s.launch_builder(&f);
    l.arg(&mut r).arg(&dm);
    unsafe { l.launch(cfg(32, 0)) }.unwrap();
    let r = s.clone_dtoh(&r).unwrap();
    let at = |mat: u32, i: u32, j: u32| mat * 64 + i * 8 + j;
    let pair = |lo: u32, hi: u32| lo | hi << 16;
    for lane in 0..32u32 {
        let (row, col) = (lane / 4, 2 * (lane % 4));
        for mat in 0..4u32 {
            let plain = pair(at(mat, row, col), at(mat, row, col + 1));
            let trans = pair(at(mat, col, row), at(mat, col + 1, row));
            assert_eq!(r[(lane * 4 + mat) as usize], plain, "ldmatrix_x4, lane {lane}, matrix {mat}");
            assert_eq!(r[(128 + lane * 4 + mat) as usize], trans, "ldmatrix_x4_trans, lane {lane}, matrix {mat}");
            if mat < 2 {
                assert_eq!(r[(256 + lane * 2 + mat) as usize], plain, "ldmatrix_x2, lane {lane}, matrix {mat}");
                assert_eq!(r[(320 + lane * 2 + mat) as usize], trans, "ldmatrix_x2_trans, lane {lane}, matrix {mat}");
            }
        }
    }
}

/// The emulator performs a cp.async copy at the wait that covers it, not at the issue: a kernel
/// that reads its destination too early sees the old bytes there, as it may on a GPU.
#[test]
fn cp_async_lands_at_the_wait() {
    let Some(e) = emu() else { return };
    let src: Vec<u32> = (0..128).map(|i| 1000 + i).collect();
    let s = &e.stream;
    let ds = s.clone_htod(&src).unwrap();
    let mut out = s.alloc_zeros::<u32>(96).unwrap();
    let f = kernel(e, "emu_cp_async_lands_at_the_wait");
    let mut l = s.launch_builder(&f);
    l.arg(&mut out).arg(&ds);
    unsafe { l.launch(LaunchConfig { shared_mem_bytes: 1024, ..cfg(32, 0) }) }.unwrap();
    let out = s.clone_dtoh(&out).unwrap();
    for t in 0..32 {
        assert_eq!(out[t], u32::MAX, "thread {t} read its copy's destination before the wait");
        assert_eq!(out[32 + t], src[4 * ((t + 1) % 32)], "thread {t} after the wait and the barrier");
        assert_eq!(out[64 + t], 0, "thread {t}: a copy with valid = false fills zeros");
    }
}
