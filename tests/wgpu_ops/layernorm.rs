//! layernorm_fwd/bwd, rmsnorm_fwd/bwd against the CPU backend.
//!
//! Tolerances: forward outputs, mean and rstd within 1e-5 relative (+1e-5 absolute on values of
//! order 1): the CPU reduces the row statistics in f64, the GPU in f32 tree sums. dinp within
//! 1e-5 of the largest |dinp| of the case. dweight/dbias (accumulated onto nonzero starting
//! values) within 1e-5 of the largest |value|: both sum rows in f32, the GPU in chunks of rows.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] =
    &[("layernorm_fwd", layernorm_parity), ("layernorm_bwd", layernorm_parity), ("rmsnorm_fwd", rmsnorm_parity), ("rmsnorm_bwd", rmsnorm_parity)];

/// (rows, channels): c = 1, odd, a multiple of the workgroup's stride or not, rows spanning one
/// or many chunks of the parameter-gradient pass; c <= SMALL_C (one invocation per row, rows
/// past one workgroup of 64) and c > SMALL_C (one workgroup per row), both sides of the bound.
const SHAPES: &[(usize, usize)] = &[(1, 1), (3, 1), (5, 7), (33, 64), (300, 768), (17, 1000), (4, 1031), (2500, 64), (70, 3), (130, 256), (9, 257)];

fn randv(rng: &mut Rng, n: usize, scale: f32, shift: f32) -> Vec<f32> {
    (0..n).map(|_| shift + scale * rng.normal()).collect()
}

/// Absolute tolerance `rel` times the largest |want|.
#[track_caller]
fn assert_scaled(what: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    assert_close(what, got, want, rel * scale, 0.0);
}

#[test]
fn layernorm_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(21);
    for &(n, ch) in SHAPES {
        let p = NormParams { n: n as u32, c: ch as u32, eps: 1e-5, _pad: 0 };
        let what = |s: &str| format!("{s} n={n} c={ch}");
        let (ci, gi) = both(g, &randv(&mut rng, n * ch, 2.0, 0.5));
        let (cw, gw) = both(g, &randv(&mut rng, ch, 0.5, 1.0));
        let (cb, gb) = both(g, &randv(&mut rng, ch, 0.5, 0.0));
        let (mut co, mut go) = both(g, &vec![7.0; n * ch]);
        let (mut cm, mut gm) = both(g, &vec![7.0; n]);
        let (mut cr, mut gr) = both(g, &vec![7.0; n]);
        c.layernorm_fwd(&mut co, &mut cm, &mut cr, &ci, &cw, &cb, p).unwrap();
        g.layernorm_fwd(&mut go, &mut gm, &mut gr, &gi, &gw, &gb, p).unwrap();
        assert_close(&what("layernorm_fwd out"), &g.download(&go).unwrap(), &co, 1e-5, 1e-5);
        assert_close(&what("layernorm_fwd mean"), &g.download(&gm).unwrap(), &cm, 1e-5, 1e-5);
        assert_close(&what("layernorm_fwd rstd"), &g.download(&gr).unwrap(), &cr, 0.0, 1e-5);

        // backward from the CPU's saved statistics on both sides
        let (cdo, gdo) = both(g, &randv(&mut rng, n * ch, 1.0, 0.0));
        let gm = g.upload(&cm).unwrap();
        let gr = g.upload(&cr).unwrap();
        let (mut cdi, mut gdi) = both(g, &vec![7.0; n * ch]);
        let (mut cdw, mut gdw) = both(g, &randv(&mut rng, ch, 1.0, 0.0));
        let (mut cdb, mut gdb) = both(g, &randv(&mut rng, ch, 1.0, 0.0));
        for _ in 0..2 {
            c.layernorm_bwd(&mut cdi, &mut cdw, &mut cdb, &cdo, &ci, &cm, &cr, &cw, p).unwrap();
            g.layernorm_bwd(&mut gdi, &mut gdw, &mut gdb, &gdo, &gi, &gm, &gr, &gw, p).unwrap();
        }
        assert_scaled(&what("layernorm_bwd dinp"), &g.download(&gdi).unwrap(), &cdi, 1e-5);
        assert_scaled(&what("layernorm_bwd dweight (accumulated twice)"), &g.download(&gdw).unwrap(), &cdw, 1e-5);
        assert_scaled(&what("layernorm_bwd dbias (accumulated twice)"), &g.download(&gdb).unwrap(), &cdb, 1e-5);
    }
}

#[test]
fn rmsnorm_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(22);
    for &(n, ch) in SHAPES {
        let p = NormParams { n: n as u32, c: ch as u32, eps: 1e-6, _pad: 0 };
        let what = |s: &str| format!("{s} n={n} c={ch}");
        let (ci, gi) = both(g, &randv(&mut rng, n * ch, 2.0, 0.5));
        let (cw, gw) = both(g, &randv(&mut rng, ch, 0.5, 1.0));
        let (mut co, mut go) = both(g, &vec![7.0; n * ch]);
        let (mut cr, mut gr) = both(g, &vec![7.0; n]);
        c.rmsnorm_fwd(&mut co, &mut cr, &ci, &cw, p).unwrap();
        g.rmsnorm_fwd(&mut go, &mut gr, &gi, &gw, p).unwrap();
        assert_close(&what("rmsnorm_fwd out"), &g.download(&go).unwrap(), &co, 1e-5, 1e-5);
        assert_close(&what("rmsnorm_fwd rstd"), &g.download(&gr).unwrap(), &cr, 0.0, 1e-5);

        let (cdo, gdo) = both(g, &randv(&mut rng, n * ch, 1.0, 0.0));
        let gr = g.upload(&cr).unwrap();
        let (mut cdi, mut gdi) = both(g, &vec![7.0; n * ch]);
        let (mut cdw, mut gdw) = both(g, &randv(&mut rng, ch, 1.0, 0.0));
        for _ in 0..2 {
            c.rmsnorm_bwd(&mut cdi, &mut cdw, &cdo, &ci, &cr, &cw, p).unwrap();
            g.rmsnorm_bwd(&mut gdi, &mut gdw, &gdo, &gi, &gr, &gw, p).unwrap();
        }
        assert_scaled(&what("rmsnorm_bwd dinp"), &g.download(&gdi).unwrap(), &cdi, 1e-5);
        assert_scaled(&what("rmsnorm_bwd dweight (accumulated twice)"), &g.download(&gdw).unwrap(), &cdw, 1e-5);
    }
    // more rows than one grid dimension holds (65535 workgroups)
    let (n, ch) = (65_600usize, 2usize);
    let p = NormParams { n: n as u32, c: ch as u32, eps: 1e-6, _pad: 0 };
    let (ci, gi) = both(g, &randv(&mut rng, n * ch, 2.0, 0.5));
    let (cw, gw) = both(g, &[0.5, 2.0]);
    let (mut co, mut go) = both(g, &vec![7.0; n * ch]);
    let (mut cr, mut gr) = both(g, &vec![7.0; n]);
    c.rmsnorm_fwd(&mut co, &mut cr, &ci, &cw, p).unwrap();
    g.rmsnorm_fwd(&mut go, &mut gr, &gi, &gw, p).unwrap();
    assert_close("rmsnorm_fwd out, 65600 rows", &g.download(&go).unwrap(), &co, 1e-5, 1e-5);
    // shape errors are errors, not panics
    let small = g.upload(&[0.0; 3]).unwrap();
    let mut out = g.upload(&[0.0; 3]).unwrap();
    let mut r = g.upload(&[0.0; 1]).unwrap();
    assert!(g.rmsnorm_fwd(&mut out, &mut r, &small, &small, NormParams { n: 2, c: 3, eps: 1e-5, _pad: 0 }).is_err());
}
