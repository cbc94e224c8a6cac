//! attention_fwd, attention_bwd, kv_cache_write, scatter_rows, attention_decode_fwd against the
//! CPU backend.
//!
//! Tolerances: the forward (out, lse) within 1e-5 absolute + 1e-5 relative (the GPU sums scores
//! and values in another order, with an online softmax); the backward (dq, dk, dv) within 3e-5
//! absolute + 1e-4 relative (longer sums: over keys for dq, over queries and the heads of a
//! group for dk/dv); the copies exactly.

use crate::{assert_close, both, cpu, gpu};
use rlhf::backend::ops::*;
use rlhf::data::rng::Rng;

pub const CHECKS: &[(&str, fn())] = &[
    ("attention_fwd", attention_fwd_parity),
    ("attention_bwd", attention_bwd_parity),
    ("kv_cache_write", kv_cache_write_parity),
    ("scatter_rows", scatter_rows_parity),
    ("attention_decode_fwd", attention_decode_parity),
];

const FWD_TOL: (f32, f32) = (1e-5, 1e-5);
const BWD_TOL: (f32, f32) = (3e-5, 1e-4);

/// (b, t, nh, nkv, hd): GQA groups of 1, 2 and 4, t not a multiple of any block (1, 7, 33, 130),
/// head dims 8 .. 128; the one-invocation-per-row kernels (hd <= SMALL_HD, t <= SMALL_T) and the
/// tiled ones (hd > SMALL_HD or t > SMALL_T).
const CASES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 4, 2, 8),
    (2, 7, 4, 2, 16),
    (2, 33, 4, 1, 64),
    (1, 130, 4, 2, 64),
    (2, 130, 2, 2, 8),
    (1, 47, 2, 1, 128),
    (3, 20, 6, 3, 24),
    (1, 40, 4, 2, 80),
    (1, 300, 2, 1, 16),
];

fn randv(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    crate::common::randv(rng, n, scale)
}

#[test]
fn attention_fwd_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(31);
    for &(b, t, nh, nkv, hd) in CASES {
        let what = format!("fused b{b} t{t} nh{nh} nkv{nkv} hd{hd}");
        let row = (nh + 2 * nkv) * hd;
        // scores of a few units: peaked but not one-hot softmax rows
        let (cq, gq) = both(g, &randv(&mut rng, b * t * row, 1.5));
        let p = AttentionParams::fused(b, t, nh, nkv, hd);
        let junk = vec![7.0; b * t * nh * hd + 5];
        let (mut co, mut go) = both(g, &junk);
        let (mut cl, mut gl) = both(g, &vec![7.0; b * nh * t + 3]);
        c.attention_fwd(&mut co, &mut cl, &cq, &cq, &cq, p).unwrap();
        g.attention_fwd(&mut go, &mut gl, &gq, &gq, &gq, p).unwrap();
        assert_close(&format!("{what} out"), &g.download(&go).unwrap(), &co, FWD_TOL.0, FWD_TOL.1);
        assert_close(&format!("{what} lse"), &g.download(&gl).unwrap(), &cl, FWD_TOL.0, FWD_TOL.1);
    }

    // the cached layout of `forward_cached`: t new queries from the fused projection
    // [b, t, (nh + 2 nkv) hd] at positions pos0 .., keys and values 0 .. pos0 + t from a cache
    // [b, t_max, 2 nkv hd]
    for &(b, t, pos0, t_max, nh, nkv, hd) in &[(2, 3, 25, 40, 4, 2, 16), (1, 1, 140, 160, 4, 1, 64), (2, 37, 5, 50, 2, 2, 8), (1, 1, 0, 8, 4, 2, 8)] {
        let what = format!("cached b{b} t{t} pos0 {pos0} nh{nh} nkv{nkv} hd{hd}");
        let row = (nh + 2 * nkv) * hd;
        let kv_row = 2 * nkv * hd;
        let (cq, gq) = both(g, &randv(&mut rng, b * t * row, 1.5));
        let (ccache, gcache) = both(g, &randv(&mut rng, b * t_max * kv_row, 1.5));
        let p = AttentionParams::cached(b, t, pos0, t_max, nh, nkv, hd);
        let (mut co, mut go) = both(g, &vec![0.0; b * t * nh * hd]);
        let (mut cl, mut gl) = both(g, &vec![0.0; b * nh * t]);
        c.attention_fwd(&mut co, &mut cl, &cq, &ccache, &ccache, p).unwrap();
        g.attention_fwd(&mut go, &mut gl, &gq, &gcache, &gcache, p).unwrap();
        assert_close(&format!("{what} out"), &g.download(&go).unwrap(), &co, FWD_TOL.0, FWD_TOL.1);
        assert_close(&format!("{what} lse"), &g.download(&gl).unwrap(), &cl, FWD_TOL.0, FWD_TOL.1);
    }

    // q, k, v from three buffers of different layouts, head 0 at an offset; tk > q_pos0 + tq
    // (the last keys are visible to no query and must be ignored) and tk < q_pos0 + tq (the
    // last queries see every key)
    // (head dims of the small and the tiled kernels)
    for (tq, tk, q_pos0, hd) in [(19, 40, 9, 32), (19, 12, 9, 32), (19, 40, 9, 72), (19, 12, 9, 72)] {
        let (b, nh, nkv) = (2, 4, 2);
        let (q_row, q_off) = (nh * hd + 5, 3);
        let (kv_row, k_off, v_off) = (nkv * hd + 7, 2, 4);
        let p = AttentionParams {
            b: b as u32,
            tq: tq as u32,
            tk: tk as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            q_pos0: q_pos0 as u32,
            scale: 0.3,
            q_row: q_row as u32,
            q_batch: (tq * q_row + 11) as u32,
            q_off: q_off as u32,
            kv_row: kv_row as u32,
            kv_batch: (tk * kv_row + 1) as u32,
            k_off: k_off as u32,
            v_off: v_off as u32,
            _pad: 0,
        };
        let (cq, gq) = both(g, &randv(&mut rng, b * (tq * q_row + 11), 1.0));
        let (ck, gk) = both(g, &randv(&mut rng, b * (tk * kv_row + 1), 1.0));
        let (cv, gv) = both(g, &randv(&mut rng, b * (tk * kv_row + 1), 1.0));
        let (mut co, mut go) = both(g, &vec![0.0; b * tq * nh * hd]);
        let (mut cl, mut gl) = both(g, &vec![0.0; b * nh * tq]);
        c.attention_fwd(&mut co, &mut cl, &cq, &ck, &cv, p).unwrap();
        g.attention_fwd(&mut go, &mut gl, &gq, &gk, &gv, p).unwrap();
        assert_close(&format!("strided tk {tk} hd {hd} out"), &g.download(&go).unwrap(), &co, FWD_TOL.0, FWD_TOL.1);
        assert_close(&format!("strided tk {tk} hd {hd} lse"), &g.download(&gl).unwrap(), &cl, FWD_TOL.0, FWD_TOL.1);
    }

    // unsupported shapes are errors, not panics or garbage
    let bad = AttentionParams::fused(1, 4, 2, 1, 129);
    let (mut o, mut l, x) = (g.upload(&[0.0; 4 * 2 * 129]).unwrap(), g.upload(&[0.0; 8]).unwrap(), g.upload(&vec![0.0; 4 * 4 * 129]).unwrap());
    assert!(g.attention_fwd(&mut o, &mut l, &x, &x, &x, bad).is_err(), "head_dim 129 must be refused");
    let bad = AttentionParams::fused(1, 4, 3, 2, 8);
    assert!(g.attention_fwd(&mut o, &mut l, &x, &x, &x, bad).is_err(), "nh not a multiple of nkv must be refused");
    let short = AttentionParams::fused(2, 4, 2, 1, 128);
    assert!(g.attention_fwd(&mut o, &mut l, &x, &x, &x, short).is_err(), "too small buffers must be refused");
}

#[test]
fn attention_bwd_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(32);
    for &(b, t, nh, nkv, hd) in CASES {
        let what = format!("b{b} t{t} nh{nh} nkv{nkv} hd{hd}");
        let row = (nh + 2 * nkv) * hd;
        let p = AttentionParams::fused(b, t, nh, nkv, hd);
        let qkv = randv(&mut rng, b * t * row, 1.5);
        let cq = qkv.clone();
        let mut out = vec![0.0; b * t * nh * hd];
        let mut lse = vec![0.0; b * nh * t];
        c.attention_fwd(&mut out, &mut lse, &cq, &cq, &cq, p).unwrap();
        let dout = randv(&mut rng, b * t * nh * hd, 1.0);
        // both backends get the CPU's forward results, so only the backward is compared
        let gq = g.upload(&qkv).unwrap();
        let (gout, glse, gdout) = (g.upload(&out).unwrap(), g.upload(&lse).unwrap(), g.upload(&dout).unwrap());
        // dqkv starts as junk: every element of the q, k and v parts must be overwritten
        let (mut cd, mut gd) = both(g, &vec![f32::NAN; b * t * row]);
        c.attention_bwd(&mut cd, &dout, &out, &lse, &cq, p).unwrap();
        g.attention_bwd(&mut gd, &gdout, &gout, &glse, &gq, p).unwrap();
        let got = g.download(&gd).unwrap();
        assert!(got.iter().all(|x| x.is_finite()), "{what}: dqkv not fully written");
        assert_close(&format!("{what} dqkv"), &got, &cd, BWD_TOL.0, BWD_TOL.1);
    }
    let p = AttentionParams { q_pos0: 1, ..AttentionParams::fused(1, 4, 2, 1, 8) };
    let x = g.upload(&vec![0.0; 4 * 32]).unwrap();
    let mut d = g.upload(&vec![0.0; 4 * 32]).unwrap();
    assert!(g.attention_bwd(&mut d, &x, &x, &x, &x, p).is_err(), "backward outside the training layout must be refused");
}

#[test]
fn kv_cache_write_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(33);
    for &(b, t, pos0, t_max, nh, nkv, hd) in &[(2, 5, 3, 12, 4, 2, 8), (1, 1, 11, 12, 2, 1, 64), (3, 17, 0, 17, 2, 2, 16)] {
        let row = (nh + 2 * nkv) * hd;
        let (cq, gq) = both(g, &randv(&mut rng, b * t * row, 1.0));
        let (mut cc, mut gc) = both(g, &randv(&mut rng, b * t_max * 2 * nkv * hd, 1.0));
        let p = KvCacheParams { b: b as u32, t: t as u32, pos0: pos0 as u32, t_max: t_max as u32, nh: nh as u32, nkv: nkv as u32, hd: hd as u32, _pad: 0 };
        c.kv_cache_write(&mut cc, &cq, p).unwrap();
        g.kv_cache_write(&mut gc, &gq, p).unwrap();
        assert_close(&format!("kv_cache_write b{b} t{t} pos0 {pos0}"), &g.download(&gc).unwrap(), &cc, 0.0, 0.0);
    }
    let p = KvCacheParams { b: 1, t: 2, pos0: 11, t_max: 12, nh: 2, nkv: 1, hd: 8, _pad: 0 };
    let (mut cache, qkv) = (g.upload(&[0.0; 12 * 16]).unwrap(), g.upload(&[0.0; 2 * 32]).unwrap());
    assert!(g.kv_cache_write(&mut cache, &qkv, p).is_err(), "writing past t_max must be refused");
}

#[test]
fn scatter_rows_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(34);
    // the key/value heads of fused rows into a slot cache, rows in any order
    let (n, nh, nkv, hd, cache_rows) = (9, 4, 2, 16, 3 * 20);
    let mut rows: Vec<i32> = (0..cache_rows as i32).collect();
    rng.shuffle(&mut rows);
    rows.truncate(n);
    let p = ScatterParams::kv(n, nh, nkv, hd, cache_rows);
    let (ci, gi) = both(g, &randv(&mut rng, n * (nh + 2 * nkv) * hd, 1.0));
    let (mut co, mut go) = both(g, &randv(&mut rng, cache_rows * 2 * nkv * hd, 1.0));
    let gr = g.upload_ids(&rows).unwrap();
    c.scatter_rows(&mut co, &ci, &rows, p).unwrap();
    g.scatter_rows(&mut go, &gi, &gr, p).unwrap();
    assert_close("scatter_rows kv", &g.download(&go).unwrap(), &co, 0.0, 0.0);
    // one value per row with a source offset (per-token values filed under their sequences),
    // width < dst_row, and many rows
    let (n, dst_rows) = (70_000, 90_000);
    let mut rows: Vec<i32> = (0..dst_rows as i32).collect();
    rng.shuffle(&mut rows);
    rows.truncate(n);
    for (width, src_row, src_off, dst_row) in [(1, 3, 2, 1), (3, 5, 1, 4)] {
        let p = ScatterParams { n: n as u32, width, src_row, src_off, dst_row, dst_rows: dst_rows as u32 };
        let (ci, gi) = both(g, &randv(&mut rng, n * src_row as usize, 1.0));
        let (mut co, mut go) = both(g, &randv(&mut rng, dst_rows * dst_row as usize, 1.0));
        let gr = g.upload_ids(&rows).unwrap();
        c.scatter_rows(&mut co, &ci, &rows, p).unwrap();
        g.scatter_rows(&mut go, &gi, &gr, p).unwrap();
        assert_close(&format!("scatter_rows width {width}"), &g.download(&go).unwrap(), &co, 0.0, 0.0);
    }
}

#[test]
fn attention_decode_parity() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(35);
    // t_max 300: positions past 256 take two chunks of keys
    for &(slots, t_max, nh, nkv, hd) in &[(3, 300, 4, 2, 64), (2, 40, 4, 1, 16), (4, 20, 2, 2, 128), (2, 9, 6, 3, 24)] {
        let kv_row = 2 * nkv * hd;
        let row = (nh + 2 * nkv) * hd;
        // rows of various slots and positions in any order, first and last positions included
        let mut rows = vec![0i32, (t_max - 1) as i32, (slots * t_max - 1) as i32, t_max as i32 + 3];
        for _ in 0..4 {
            rows.push(rng.below((slots * t_max) as u64) as i32);
        }
        rng.shuffle(&mut rows);
        let n = rows.len();
        let (ccache, gcache) = both(g, &randv(&mut rng, slots * t_max * kv_row, 1.5));
        let (cq, gq) = both(g, &randv(&mut rng, n * row, 1.5));
        let gr = g.upload_ids(&rows).unwrap();
        let p = AttentionDecodeParams {
            n: n as u32,
            t_max: t_max as u32,
            slots: slots as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            q_row: row as u32,
            q_off: 0,
            _pad: 0,
        };
        let what = format!("decode slots {slots} t_max {t_max} nh{nh} nkv{nkv} hd{hd}");
        let (mut co, mut go) = both(g, &vec![0.0; n * nh * hd]);
        let (mut cl, mut gl) = both(g, &vec![0.0; n * nh]);
        c.attention_decode_fwd(&mut co, &mut cl, &cq, &ccache, &rows, p).unwrap();
        g.attention_decode_fwd(&mut go, &mut gl, &gq, &gcache, &gr, p).unwrap();
        let (dec_out, dec_lse) = (g.download(&go).unwrap(), g.download(&gl).unwrap());
        assert_close(&format!("{what} out"), &dec_out, &co, FWD_TOL.0, FWD_TOL.1);
        assert_close(&format!("{what} lse"), &dec_lse, &cl, FWD_TOL.0, FWD_TOL.1);

        // every row equals the wgpu attention_fwd of that query over its slot's keys 0 ..= pos
        for (i, &r) in rows.iter().enumerate() {
            let (slot, pos) = (r as usize / t_max, r as usize % t_max);
            let slot0 = slot * t_max * kv_row;
            let pf = AttentionParams {
                b: 1,
                tq: 1,
                tk: (pos + 1) as u32,
                nh: nh as u32,
                nkv: nkv as u32,
                hd: hd as u32,
                q_pos0: pos as u32,
                scale: p.scale,
                q_row: row as u32,
                q_batch: row as u32,
                q_off: (i * row) as u32,
                kv_row: kv_row as u32,
                kv_batch: (t_max * kv_row) as u32,
                k_off: slot0 as u32,
                v_off: (slot0 + nkv * hd) as u32,
                _pad: 0,
            };
            let (mut fo, mut fl) = (g.upload(&vec![0.0; nh * hd]).unwrap(), g.upload(&vec![0.0; nh]).unwrap());
            g.attention_fwd(&mut fo, &mut fl, &gq, &gcache, &gcache, pf).unwrap();
            assert_close(
                &format!("{what} row {i} vs attention_fwd out"),
                &dec_out[i * nh * hd..(i + 1) * nh * hd],
                &g.download(&fo).unwrap(),
                FWD_TOL.0,
                FWD_TOL.1,
            );
            assert_close(&format!("{what} row {i} vs attention_fwd lse"), &dec_lse[i * nh..(i + 1) * nh], &g.download(&fl).unwrap(), FWD_TOL.0, FWD_TOL.1);
        }
    }
    // a row outside the cache leaves its outputs untouched (the CPU backend refuses such rows;
    // the device cannot report them without a read-back)
    let p = AttentionDecodeParams { n: 2, t_max: 4, slots: 1, nh: 2, nkv: 1, hd: 8, scale: 0.3, q_row: 32, q_off: 0, _pad: 0 };
    let (q, cache, rows) = (g.upload(&randv(&mut rng, 64, 1.0)).unwrap(), g.upload(&randv(&mut rng, 64, 1.0)).unwrap(), g.upload_ids(&[-1, 2]).unwrap());
    let (mut o, mut l) = (g.upload(&[9.0; 32]).unwrap(), g.upload(&[9.0; 4]).unwrap());
    g.attention_decode_fwd(&mut o, &mut l, &q, &cache, &rows, p).unwrap();
    let (o, l) = (g.download(&o).unwrap(), g.download(&l).unwrap());
    assert!(o[..16].iter().chain(&l[..2]).all(|&x| x == 9.0), "row -1 written");
    assert!(o[16..].iter().chain(&l[2..]).all(|&x| x != 9.0), "row 2 not written");
}
