//! The fused RL ops on the CPU backend: each against a slow composition of simple operations
//! written out here (full logits by a naive matmul and a log-softmax; PPO token by token), every
//! backward against central finite differences, hand-worked PPO examples (clipping, dual clip,
//! value clipping, both aggregations) and edge cases (masked-out and skipped rows, temperature,
//! thread-count independence, the scratch memory bound). `tests/ops/main.rs` maps each op to its test
//! here in `OP_CHECKS`.

// the references index token by token on purpose: they mirror the formulas
#![allow(clippy::needless_range_loop)]

use rlhf::backend::cpu::rl_losses::{logprob_gather_bwd_scratch_floats, logprob_gather_scratch_floats, ROW_BLOCK};
use rlhf::backend::ops::*;
use rlhf::backend::CpuBackend;
use rlhf::data::rng::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::common;
use common::{dot, fd_check, randv};

/// Counts the bytes live on the current thread while armed (thread-local, so tests running in
/// parallel do not disturb each other) and remembers the peak.
struct CountingAlloc;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + delta);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Peak bytes allocated (above the start) by `f` on the current thread.
fn peak_bytes(f: impl FnOnce()) -> usize {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    PEAK.with(|p| p.get()) as usize
}

fn close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{name}[{i}] = {g}");
        assert!((*g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{name}[{i}]: {g} vs reference {w}");
    }
}

// ---- logprob_gather ----------------------------------------------------------------------------

/// The slow composition: full logits `h @ w^T / T` in f64, log-softmax, gather, entropy.
fn naive_logprob(h: &[f32], w: &[f32], targets: &[i32], n: usize, c: usize, v: usize, temp: f32) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut logp, mut ent, mut lse) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        if targets[i] < 0 {
            continue;
        }
        let z: Vec<f64> = (0..v).map(|j| (0..c).map(|k| h[i * c + k] as f64 * w[j * c + k] as f64).sum::<f64>() / temp as f64).collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let l = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let logsm: Vec<f64> = z.iter().map(|x| x - l).collect();
        logp[i] = logsm[targets[i] as usize];
        ent[i] = -logsm.iter().map(|lp| lp.exp() * lp).sum::<f64>();
        lse[i] = l;
    }
    (logp, ent, lse)
}

fn gather(be: &CpuBackend, h: &[f32], targets: &[i32], w: &[f32], p: LogprobParams) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = p.n as usize;
    let (mut logp, mut ent, mut lse) = (vec![9.0; n], vec![9.0; n], vec![9.0; n]);
    be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h.to_vec(), &targets.to_vec(), &w.to_vec(), p).unwrap();
    (logp, ent, lse)
}

#[test]
pub(crate) fn logprob_gather_matches_naive() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(11);
    // rows span two row blocks; the vocabulary is not a multiple of the chunk
    let (n, c, v) = (ROW_BLOCK + 6, 24, 300);
    let h = randv(&mut rng, n * c, 1.0);
    let w = randv(&mut rng, v * c, 0.5);
    let mut targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    targets[3] = -1;
    targets[n - 1] = -100;
    targets[5] = v as i32 - 1;
    for &temp in &[1.0f32, 0.7, 2.5] {
        let (want_lp, want_ent, want_lse) = naive_logprob(&h, &w, &targets, n, c, v, temp);
        for &chunk in &[64usize, 7, 300, 4096] {
            let p = LogprobParams::new(n, c, v).temperature(temp).chunk(chunk);
            let (logp, ent, lse) = gather(&be, &h, &targets, &w, p);
            let tag = format!("T={temp} chunk={chunk}");
            close(&format!("logp {tag}"), &logp, &want_lp, 2e-5);
            close(&format!("entropy {tag}"), &ent, &want_ent, 2e-5);
            close(&format!("lse {tag}"), &lse, &want_lse, 2e-5);
            for i in [3, n - 1] {
                assert_eq!((logp[i], ent[i], lse[i]), (0.0, 0.0, 0.0), "skipped row {i} has no outputs");
            }
        }
    }
    // the temperature changes the distribution (the log-probs are those of softmax(z / T))
    let (a, _, _) = gather(&be, &h, &targets, &w, LogprobParams::new(n, c, v));
    let (b, _, _) = gather(&be, &h, &targets, &w, LogprobParams::new(n, c, v).temperature(0.5));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-2));
    // a target outside the vocabulary and a non-positive temperature are errors, not panics
    let bad = vec![v as i32; n];
    let mut out = vec![0.0; n];
    assert!(be.logprob_gather_fwd(&mut out.clone(), &mut out.clone(), &mut out, &h, &bad, &w, LogprobParams::new(n, c, v)).is_err());
    let mut out = vec![0.0; n];
    assert!(be.logprob_gather_fwd(&mut out.clone(), &mut out.clone(), &mut out, &h, &targets, &w, LogprobParams::new(n, c, v).temperature(0.0)).is_err());
}

#[test]
pub(crate) fn logprob_gather_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(12);
    let (n, c, v) = (7, 6, 37);
    let h = randv(&mut rng, n * c, 0.7);
    let w = randv(&mut rng, v * c, 0.7);
    let mut targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    targets[2] = -1;
    let r_lp = randv(&mut rng, n, 1.0);
    let r_ent = randv(&mut rng, n, 1.0);
    for &(temp, chunk) in &[(1.0f32, 8usize), (0.6, 5), (1.7, 64)] {
        let p = LogprobParams::new(n, c, v).temperature(temp).chunk(chunk);
        // L = sum_i r_lp[i] logp[i] + r_ent[i] entropy[i]
        let loss = |h: &[f32], w: &[f32]| {
            let (lp, ent, _) = gather(&be, h, &targets, w, p);
            dot(&lp, &r_lp) + dot(&ent, &r_ent)
        };
        let (_, ent, lse) = gather(&be, &h, &targets, &w, p);
        let mut dh = vec![5.0; n * c]; // overwritten
        let mut dw = vec![0.25; v * c]; // accumulated
        be.logprob_gather_bwd(&mut dh, &mut dw, &r_lp, &r_ent, &h, &targets, &lse, &ent, &w, p).unwrap();
        let dw: Vec<f32> = dw.iter().map(|g| g - 0.25).collect();
        assert!(dh[2 * c..3 * c].iter().all(|&g| g == 0.0), "a skipped row has no gradient");
        let tag = format!("T={temp} chunk={chunk}");
        fd_check(&format!("logprob_gather dh {tag}"), &h, &dh, |x| loss(x, &w));
        fd_check(&format!("logprob_gather dw {tag}"), &w, &dw, |x| loss(&h, x));
    }
}

/// Backward through the naive composition (f64): `dz = dlogp (onehot - p) - dent p (lp + H)`.
#[test]
fn logprob_gather_bwd_matches_naive() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(13);
    let (n, c, v, temp) = (ROW_BLOCK + 3, 10, 150, 0.8f32);
    let h = randv(&mut rng, n * c, 1.0);
    let w = randv(&mut rng, v * c, 0.5);
    let mut targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    targets[0] = -1;
    let g_lp = randv(&mut rng, n, 1.0);
    let g_ent = randv(&mut rng, n, 1.0);
    let (mut want_dh, mut want_dw) = (vec![0f64; n * c], vec![0f64; v * c]);
    for i in 0..n {
        if targets[i] < 0 {
            continue;
        }
        let z: Vec<f64> = (0..v).map(|j| (0..c).map(|k| h[i * c + k] as f64 * w[j * c + k] as f64).sum::<f64>() / temp as f64).collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let l = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let ent: f64 = -z.iter().map(|x| (x - l).exp() * (x - l)).sum::<f64>();
        for j in 0..v {
            let lp = z[j] - l;
            let pj = lp.exp();
            let onehot = if j == targets[i] as usize { 1.0 } else { 0.0 };
            let dz = g_lp[i] as f64 * (onehot - pj) - g_ent[i] as f64 * pj * (lp + ent);
            let dlogit = dz / temp as f64;
            for k in 0..c {
                want_dh[i * c + k] += dlogit * w[j * c + k] as f64;
                want_dw[j * c + k] += dlogit * h[i * c + k] as f64;
            }
        }
    }
    let p = LogprobParams::new(n, c, v).temperature(temp).chunk(32);
    let (_, ent, lse) = gather(&be, &h, &targets, &w, p);
    let (mut dh, mut dw) = (vec![0.0; n * c], vec![0.0; v * c]);
    be.logprob_gather_bwd(&mut dh, &mut dw, &g_lp, &g_ent, &h, &targets, &lse, &ent, &w, p).unwrap();
    close("dh", &dh, &want_dh, 1e-4);
    close("dw", &dw, &want_dw, 1e-4);
}

#[test]
fn logprob_gather_edge_cases() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(14);
    let (n, c, v) = (9, 8, 50);
    let h = randv(&mut rng, n * c, 1.0);
    let w = randv(&mut rng, v * c, 1.0);
    // every row skipped: zero outputs, zero dh, dw untouched
    let none = vec![-1; n];
    let p = LogprobParams::new(n, c, v).chunk(16);
    let (lp, ent, lse) = gather(&be, &h, &none, &w, p);
    assert!(lp.iter().chain(&ent).chain(&lse).all(|&x| x == 0.0));
    let (mut dh, mut dw) = (vec![3.0; n * c], vec![1.5; v * c]);
    be.logprob_gather_bwd(&mut dh, &mut dw, &vec![1.0; n], &vec![1.0; n], &h, &none, &lse, &ent, &w, p).unwrap();
    assert!(dh.iter().all(|&g| g == 0.0) && dw.iter().all(|&g| g == 1.5));
    // huge logits (|z| ~ 1e3): the online log-sum-exp stays finite and matches the reference
    let big: Vec<f32> = h.iter().map(|x| x * 40.0).collect();
    let targets: Vec<i32> = (0..n).map(|i| (i * 5) as i32).collect();
    let (lp, ent, _) = gather(&be, &big, &targets, &w, p);
    let (want_lp, want_ent, _) = naive_logprob(&big, &w, &targets, n, c, v, 1.0);
    close("logp of huge logits", &lp, &want_lp, 1e-4);
    for (e, w) in ent.iter().zip(&want_ent) {
        assert!(e.is_finite() && *e >= -1e-4 && (*e as f64 - w).abs() < 1e-2, "entropy {e} vs {w}");
    }
    let (mut dh, mut dw) = (vec![0.0; n * c], vec![0.0; v * c]);
    let (_, ent, lse) = gather(&be, &big, &targets, &w, p);
    be.logprob_gather_bwd(&mut dh, &mut dw, &vec![1.0; n], &vec![1.0; n], &big, &targets, &lse, &ent, &w, p).unwrap();
    assert!(dh.iter().chain(&dw).all(|g| g.is_finite()));
}

/// The same bits whatever the thread count: reductions run in a fixed order.
#[test]
fn logprob_gather_is_deterministic_across_thread_counts() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(15);
    let (n, c, v) = (2 * ROW_BLOCK + 5, 16, 1000);
    let h = randv(&mut rng, n * c, 1.0);
    let w = randv(&mut rng, v * c, 0.5);
    let targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    let g = randv(&mut rng, n, 1.0);
    let p = LogprobParams::new(n, c, v).chunk(128).temperature(0.9);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let (lp, ent, lse) = gather(&be, &h, &targets, &w, p);
            let (mut dh, mut dw) = (vec![0.0; n * c], vec![0.0; v * c]);
            be.logprob_gather_bwd(&mut dh, &mut dw, &g, &g, &h, &targets, &lse, &ent, &w, p).unwrap();
            (lp, ent, dh, dw)
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads differ from 1");
    }
}

/// Peak extra memory is O(n chunk): for a vocabulary 64x the chunk the ops allocate what
/// `logprob_gather_scratch_floats` says — a small fraction of the `[n, v]` logits.
#[test]
fn logprob_gather_memory_is_o_n_chunk() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(16);
    let (n, c, v, chunk) = (96, 16, 32768, 512);
    let h = randv(&mut rng, n * c, 1.0);
    let w = randv(&mut rng, v * c, 0.5);
    let targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    let p = LogprobParams::new(n, c, v).chunk(chunk);
    let logits_floats = n * v;
    let threads = 2;
    let scratch = logprob_gather_scratch_floats(n, v, chunk, threads);
    assert!(scratch <= (threads * ROW_BLOCK + 3 * n) * chunk, "scratch {scratch} is not O(n chunk)");
    assert!(scratch * 10 < logits_floats, "scratch {scratch} floats vs {logits_floats} for the full logits");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let (mut logp, mut ent, mut lse) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut dh, mut dw) = (vec![0.0; n * c], vec![0.0; v * c]);
    let ones = vec![1.0; n];
    // on a one-thread pool every allocation of the op happens on the thread that measures
    let (fwd, bwd) = pool.install(|| {
        // warm-up: thread-local buffers of the matmul are allocated once and kept
        be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h, &targets, &w, p).unwrap();
        be.logprob_gather_bwd(&mut dh, &mut dw, &ones, &ones, &h, &targets, &lse, &ent, &w, p).unwrap();
        let fwd = peak_bytes(|| be.logprob_gather_fwd(&mut logp, &mut ent, &mut lse, &h, &targets, &w, p).unwrap());
        let bwd = peak_bytes(|| be.logprob_gather_bwd(&mut dh, &mut dw, &ones, &ones, &h, &targets, &lse, &ent, &w, p).unwrap());
        (fwd, bwd)
    });
    // what the scratch functions say, plus a little for the matmul's bookkeeping
    let (fwd_bound, bwd_bound) =
        (4 * logprob_gather_scratch_floats(n, v, chunk, 1) + (64 << 10), 4 * logprob_gather_bwd_scratch_floats(n, c, v, chunk, 1) + (64 << 10));
    assert!(fwd <= fwd_bound && bwd <= bwd_bound, "peak bytes fwd {fwd} (bound {fwd_bound}), bwd {bwd} (bound {bwd_bound})");
    for (what, bytes) in [("forward", fwd), ("backward", bwd)] {
        assert!(bytes * 10 < 4 * logits_floats, "{what} peak {bytes} bytes is not small against the logits' {}", 4 * logits_floats);
    }
    let bwd_scratch = logprob_gather_bwd_scratch_floats(n, c, v, chunk, threads);
    assert!(bwd_scratch * 10 < logits_floats, "backward scratch {bwd_scratch} floats vs {logits_floats}");
    // and the result is right
    let (want_lp, want_ent, _) = naive_logprob(&h, &w, &targets, n, c, v, 1.0);
    close("logp at v = 64 chunks", &logp, &want_lp, 1e-4);
    close("entropy at v = 64 chunks", &ent, &want_ent, 1e-4);
}

// ---- kl_penalty --------------------------------------------------------------------------------

fn naive_kl(est: u32, r: f64) -> (f64, f64) {
    match est {
        1 => (r, 1.0),
        2 => (0.5 * r * r, r),
        _ => ((-r).exp() - 1.0 + r, 1.0 - (-r).exp()),
    }
}

#[test]
pub(crate) fn kl_penalty_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(21);
    let n = 40;
    let mut logp = randv(&mut rng, n, 1.0);
    let ref_logp = randv(&mut rng, n, 1.0);
    let mask: Vec<f32> = (0..n).map(|i| if i % 5 == 3 { 0.0 } else { 1.0 }).collect();
    let r = randv(&mut rng, n, 1.0);
    for est in 1..=3u32 {
        let p = KlParams { n: n as u32, estimator: est };
        let fwd = |lp: &[f32]| {
            let mut kl = vec![7.0; n];
            be.kl_penalty_fwd(&mut kl, &lp.to_vec(), &ref_logp, &mask, p).unwrap();
            kl
        };
        let want: Vec<f64> = (0..n).map(|i| mask[i] as f64 * naive_kl(est, logp[i] as f64 - ref_logp[i] as f64).0).collect();
        close(&format!("k{est}"), &fwd(&logp), &want, 1e-6);
        let mut dlogp = vec![7.0; n];
        be.kl_penalty_bwd(&mut dlogp, &r, &logp, &ref_logp, &mask, p).unwrap();
        let want_d: Vec<f64> = (0..n).map(|i| r[i] as f64 * mask[i] as f64 * naive_kl(est, logp[i] as f64 - ref_logp[i] as f64).1).collect();
        close(&format!("dk{est}"), &dlogp, &want_d, 1e-6);
        fd_check(&format!("kl_penalty k{est}"), &logp, &dlogp, |lp| dot(&fwd(lp), &r));
    }
    // k3 is never negative and exact near r = 0 (no cancellation)
    let tiny = vec![1e-4f32; 4];
    let mut kl = vec![0.0; 4];
    be.kl_penalty_fwd(&mut kl, &tiny, &vec![0.0; 4], &vec![1.0; 4], KlParams { n: 4, estimator: 3 }).unwrap();
    assert!(kl.iter().all(|&k| (k as f64 - (0.5e-8 - 1e-12 / 6.0)).abs() < 1e-14), "k3(1e-4) = {kl:?}");
    // masked-out tokens give 0 even when their log-probs are garbage
    logp[3] = f32::NAN;
    let mut kl = vec![7.0; n];
    let mut d = vec![7.0; n];
    be.kl_penalty_fwd(&mut kl, &logp, &ref_logp, &mask, KlParams { n: n as u32, estimator: 3 }).unwrap();
    be.kl_penalty_bwd(&mut d, &r, &logp, &ref_logp, &mask, KlParams { n: n as u32, estimator: 3 }).unwrap();
    assert!(kl[3] == 0.0 && d[3] == 0.0 && kl.iter().chain(&d).all(|x| x.is_finite()));
    assert!(be.kl_penalty_fwd(&mut kl, &logp, &ref_logp, &mask, KlParams { n: n as u32, estimator: 4 }).is_err());
}

// ---- ppo_loss ----------------------------------------------------------------------------------

/// Inputs of one PPO call (all `[n]`).
#[derive(Clone)]
struct Ppo {
    logp: Vec<f32>,
    old_logp: Vec<f32>,
    adv: Vec<f32>,
    mask: Vec<f32>,
    values: Vec<f32>,
    old_values: Vec<f32>,
    returns: Vec<f32>,
    entropy: Vec<f32>,
    ref_logp: Vec<f32>,
}

/// What the op returns: d(logp), d(values), d(entropy), stats.
struct PpoOut {
    dlogp: Vec<f32>,
    dvalues: Vec<f32>,
    dentropy: Vec<f32>,
    stats: Vec<f32>,
}

fn run_ppo(be: &CpuBackend, x: &Ppo, p: PpoParams) -> PpoOut {
    let n = p.n as usize;
    let (mut dlogp, mut dvalues, mut dentropy) = (vec![9.0; n], vec![9.0; n], vec![9.0; n]);
    let mut stats = vec![0.0; ppo_stat::COUNT];
    be.ppo_loss_fwd_bwd(
        &mut dlogp,
        Some(&mut dvalues),
        Some(&mut dentropy),
        &mut stats,
        &x.logp,
        &x.old_logp,
        &x.adv,
        &x.mask,
        Some(&x.values),
        Some(&x.old_values),
        Some(&x.returns),
        Some(&x.entropy),
        Some(&x.ref_logp),
        p,
    )
    .unwrap();
    PpoOut { dlogp, dvalues, dentropy, stats }
}

/// The per-token formulas written out plainly, in f64: the stats of the aggregated loss.
fn naive_ppo(x: &Ppo, p: PpoParams) -> Vec<f64> {
    let n = p.n as usize;
    let t = if p.aggregation == 1 { p.t as usize } else { n };
    // aggregation weights
    let mut w = vec![0f64; n];
    if p.aggregation == 0 {
        let count: f64 = x.mask.iter().map(|&m| m as f64).sum();
        let denom = if p.denom > 0.0 { p.denom as f64 } else { count };
        for i in 0..n {
            w[i] = if count > 0.0 { x.mask[i] as f64 / denom } else { 0.0 };
        }
    } else {
        let counts: Vec<f64> = x.mask.chunks(t).map(|s| s.iter().map(|&m| m as f64).sum()).collect();
        let seqs = counts.iter().filter(|&&c| c > 0.0).count() as f64;
        let denom = if p.denom > 0.0 { p.denom as f64 } else { seqs };
        for i in 0..n {
            let c = counts[i / t];
            w[i] = if c > 0.0 { x.mask[i] as f64 / (c * denom) } else { 0.0 };
        }
    }
    let mut stats = vec![0f64; ppo_stat::COUNT];
    for i in 0..n {
        if w[i] == 0.0 {
            continue;
        }
        let a = x.adv[i] as f64;
        let ratio = (x.logp[i] as f64 - x.old_logp[i] as f64).exp();
        let clipped_ratio = ratio.max(1.0 - p.clip_low as f64).min(1.0 + p.clip_high as f64);
        let pg1 = (-a * ratio).max(-a * clipped_ratio);
        let clip = if -a * clipped_ratio > -a * ratio { 1.0 } else { 0.0 };
        let c = p.dual_clip as f64;
        let (pg, dual) = if c > 1.0 && a < 0.0 && -c * a < pg1 { (-c * a, 1.0) } else { (pg1, 0.0) };
        let (v, vo, r) = (x.values[i] as f64, x.old_values[i] as f64, x.returns[i] as f64);
        let ev = p.value_clip as f64;
        let unclipped = (v - r).powi(2);
        let clipped = if ev > 0.0 { (vo + (v - vo).max(-ev).min(ev) - r).powi(2) } else { unclipped };
        let vl = 0.5 * unclipped.max(clipped);
        let vclip = if clipped > unclipped { 1.0 } else { 0.0 };
        let ent = x.entropy[i] as f64;
        let kl = naive_kl(p.kl_estimator, x.logp[i] as f64 - x.ref_logp[i] as f64).0;
        let approx_kl = (ratio - 1.0) - ratio.ln();
        let total = pg + p.vf_coef as f64 * vl - p.ent_coef as f64 * ent + p.kl_coef as f64 * kl;
        let terms = [pg, vl, ent, clip, approx_kl, kl, total, vclip, dual, 1.0];
        for (s, t) in stats.iter_mut().zip(terms) {
            *s += w[i] * t;
        }
    }
    stats
}

/// Random PPO inputs away from the kinks (clip edges, dual-clip edge, value-clip switch), so
/// that finite differences see a smooth function; `b` sequences of `t` tokens, some masked.
fn random_ppo(rng: &mut Rng, b: usize, t: usize, p: PpoParams) -> Ppo {
    let n = b * t;
    let mut x = Ppo {
        logp: vec![0.0; n],
        old_logp: vec![0.0; n],
        adv: vec![0.0; n],
        mask: vec![0.0; n],
        values: vec![0.0; n],
        old_values: vec![0.0; n],
        returns: vec![0.0; n],
        entropy: vec![0.0; n],
        ref_logp: vec![0.0; n],
    };
    let (lo, hi, c, ev) = (1.0 - p.clip_low, 1.0 + p.clip_high, p.dual_clip, p.value_clip);
    for s in 0..b {
        let len = 1 + rng.below(t as u64) as usize; // response length; the rest is padding
        for k in 0..t {
            let i = s * t + k;
            x.mask[i] = if k < len { 1.0 } else { 0.0 };
            x.old_logp[i] = -1.0 - rng.next_f32() * 2.0;
            loop {
                let d = rng.normal() * 0.6;
                let ratio = d.exp();
                if [lo, hi, c].iter().all(|&edge| (ratio - edge).abs() > 0.05) {
                    x.logp[i] = x.old_logp[i] + d;
                    break;
                }
            }
            x.adv[i] = rng.normal();
            x.ref_logp[i] = x.logp[i] + rng.normal() * 0.5;
            x.entropy[i] = rng.next_f32() * 3.0;
            x.returns[i] = rng.normal();
            x.old_values[i] = rng.normal();
            loop {
                let v = x.old_values[i] + rng.normal() * 0.4;
                let (u, cl) = ((v - x.returns[i]).powi(2), (x.old_values[i] + (v - x.old_values[i]).clamp(-ev, ev) - x.returns[i]).powi(2));
                if ((v - x.old_values[i]).abs() - ev).abs() > 0.05 && (u - cl).abs() > 0.05 {
                    x.values[i] = v;
                    break;
                }
            }
            if x.mask[i] == 0.0 {
                x.logp[i] = f32::NAN; // padding may hold anything
            }
        }
    }
    x
}

fn ppo_params(n: usize, t: usize, aggregation: u32, kl_estimator: u32) -> PpoParams {
    PpoParams {
        t: t as u32,
        aggregation,
        kl_estimator,
        clip_low: 0.2,
        clip_high: 0.28,
        dual_clip: 3.0,
        value_clip: 0.2,
        vf_coef: 0.5,
        ent_coef: 0.01,
        kl_coef: 0.05,
        ..PpoParams::new(n)
    }
}

#[test]
fn ppo_loss_matches_naive() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(31);
    let (b, t) = (6, 9);
    let n = b * t;
    for aggregation in [0, 1] {
        for est in 1..=3 {
            let p = ppo_params(n, t, aggregation, est);
            let x = random_ppo(&mut rng, b, t, p);
            let out = run_ppo(&be, &x, p);
            let want = naive_ppo(&x, p);
            for (k, name) in ppo_stat::NAMES.iter().enumerate() {
                let (g, w) = (out.stats[k] as f64, want[k]);
                assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "aggregation {aggregation} k{est}: {name} {g} vs {w}");
            }
            assert!((out.stats[ppo_stat::WEIGHT] - 1.0).abs() < 1e-6);
            // padding: zero gradients, even with NaN log-probs there
            for i in 0..n {
                if x.mask[i] == 0.0 {
                    assert_eq!((out.dlogp[i], out.dvalues[i], out.dentropy[i]), (0.0, 0.0, 0.0));
                }
            }
            assert!(out.dlogp.iter().chain(&out.dvalues).chain(&out.dentropy).all(|g| g.is_finite()));
        }
    }
}

#[test]
pub(crate) fn ppo_loss_grad() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(32);
    let (b, t) = (4, 8);
    let n = b * t;
    for aggregation in [0, 1] {
        for est in [1, 3] {
            let p = ppo_params(n, t, aggregation, est);
            let x = random_ppo(&mut rng, b, t, p);
            let out = run_ppo(&be, &x, p);
            // the total loss, as computed by the op itself, as a function of one input
            let total = |x: &Ppo| run_ppo(&be, x, p).stats[ppo_stat::TOTAL_LOSS] as f64;
            // masked tokens hold NaN log-probs; finite differences on the real tokens only
            let live: Vec<usize> = (0..n).filter(|&i| x.mask[i] != 0.0).collect();
            let pick = |v: &[f32]| live.iter().map(|&i| v[i]).collect::<Vec<f32>>();
            let with = |field: fn(&mut Ppo) -> &mut Vec<f32>, vals: &[f32]| {
                let mut y = x.clone();
                for (&i, &v) in live.iter().zip(vals) {
                    field(&mut y)[i] = v;
                }
                y
            };
            let tag = format!("aggregation {aggregation} k{est}");
            fd_check(&format!("ppo dlogp {tag}"), &pick(&x.logp), &pick(&out.dlogp), |v| total(&with(|y| &mut y.logp, v)));
            fd_check(&format!("ppo dvalues {tag}"), &pick(&x.values), &pick(&out.dvalues), |v| total(&with(|y| &mut y.values, v)));
            fd_check(&format!("ppo dentropy {tag}"), &pick(&x.entropy), &pick(&out.dentropy), |v| total(&with(|y| &mut y.entropy, v)));
        }
    }
}

/// One token (weight 1) with the given log-ratio, advantage and values; KL and entropy off.
fn one_token(be: &CpuBackend, log_ratio: f32, adv: f32, v: f32, v_old: f32, ret: f32, p: PpoParams) -> PpoOut {
    let x = Ppo {
        logp: vec![-1.0 + log_ratio],
        old_logp: vec![-1.0],
        adv: vec![adv],
        mask: vec![1.0],
        values: vec![v],
        old_values: vec![v_old],
        returns: vec![ret],
        entropy: vec![0.0],
        ref_logp: vec![-1.0 + log_ratio],
    };
    run_ppo(be, &x, p)
}

fn near(name: &str, got: f32, want: f64) {
    assert!((got as f64 - want).abs() < 1e-5, "{name}: {got} vs hand-computed {want}");
}

#[test]
fn ppo_loss_hand_examples() {
    let be = CpuBackend::new();
    use ppo_stat::*;
    let base = PpoParams { clip_low: 0.2, clip_high: 0.2, dual_clip: 0.0, value_clip: 0.2, vf_coef: 0.5, ent_coef: 0.0, kl_coef: 0.0, ..PpoParams::new(1) };
    let ln = |x: f32| x.ln();
    // A = 1, ratio 1.5: -A ratio = -1.5, -A clip = -1.2 -> the clipped branch, no gradient
    let o = one_token(&be, ln(1.5), 1.0, 0.0, 0.0, 0.0, base);
    near("clipped pg", o.stats[POLICY_LOSS], -1.2);
    near("clipped dlogp", o.dlogp[0], 0.0);
    near("clipfrac", o.stats[CLIPFRAC], 1.0);
    near("approx_kl", o.stats[APPROX_KL], 0.5 - (1.5f64).ln());
    // A = 1, ratio 0.5: -0.5 vs -0.8 -> unclipped, gradient -A ratio = -0.5
    let o = one_token(&be, ln(0.5), 1.0, 0.0, 0.0, 0.0, base);
    near("unclipped pg", o.stats[POLICY_LOSS], -0.5);
    near("unclipped dlogp", o.dlogp[0], -0.5);
    near("no clipfrac", o.stats[CLIPFRAC], 0.0);
    // A = -1, ratio 0.5: 0.5 vs 0.8 -> clipped at 1 - eps
    let o = one_token(&be, ln(0.5), -1.0, 0.0, 0.0, 0.0, base);
    near("clipped pg (A < 0)", o.stats[POLICY_LOSS], 0.8);
    near("clipped dlogp (A < 0)", o.dlogp[0], 0.0);
    // A = -1, ratio 4: unclipped 4 > clipped 1.2 -> 4 with gradient 4; dual clip c = 3 caps it at 3
    let o = one_token(&be, ln(4.0), -1.0, 0.0, 0.0, 0.0, base);
    near("no dual clip pg", o.stats[POLICY_LOSS], 4.0);
    near("no dual clip dlogp", o.dlogp[0], 4.0);
    let dual = PpoParams { dual_clip: 3.0, ..base };
    let o = one_token(&be, ln(4.0), -1.0, 0.0, 0.0, 0.0, dual);
    near("dual clip pg", o.stats[POLICY_LOSS], 3.0);
    near("dual clip dlogp", o.dlogp[0], 0.0);
    near("dual clipfrac", o.stats[DUAL_CLIPFRAC], 1.0);
    // ratio 2 < c: the dual clip does not bind
    let o = one_token(&be, ln(2.0), -1.0, 0.0, 0.0, 0.0, dual);
    near("dual clip inactive pg", o.stats[POLICY_LOSS], 2.0);
    near("dual clip inactive dlogp", o.dlogp[0], 2.0);
    near("dual clip inactive frac", o.stats[DUAL_CLIPFRAC], 0.0);
    // the dual clip never touches positive advantages: A = 1, ratio 0.1 -> -0.1
    let o = one_token(&be, ln(0.1), 1.0, 0.0, 0.0, 0.0, dual);
    near("dual clip A > 0", o.stats[POLICY_LOSS], -0.1);
    // value clipping active: V_old = 1, V = 2, R = 3: (V - R)^2 = 1, clipped V 1.2: (1.2 - 3)^2 = 3.24
    let o = one_token(&be, 0.0, 0.0, 2.0, 1.0, 3.0, base);
    near("clipped value loss", o.stats[VALUE_LOSS], 1.62);
    near("clipped dvalues", o.dvalues[0], 0.0);
    near("value clipfrac", o.stats[VALUE_CLIPFRAC], 1.0);
    near("total = vf_coef * value loss", o.stats[TOTAL_LOSS], 0.81);
    // value clipping inactive: V = 1.1 within eps of V_old -> 0.5 (1.1 - 3)^2, gradient vf_coef (V - R)
    let o = one_token(&be, 0.0, 0.0, 1.1, 1.0, 3.0, base);
    near("value loss", o.stats[VALUE_LOSS], 0.5 * 1.9 * 1.9);
    near("dvalues", o.dvalues[0], 0.5 * -1.9);
    near("no value clipfrac", o.stats[VALUE_CLIPFRAC], 0.0);
    // V moved away from R beyond eps: the unclipped loss is the larger one and keeps its gradient
    let o = one_token(&be, 0.0, 0.0, 0.0, 1.0, 3.0, base);
    near("value moved away", o.stats[VALUE_LOSS], 4.5);
    near("dvalues moved away", o.dvalues[0], 0.5 * -3.0);
    // value_clip 0 turns clipping off
    let o = one_token(&be, 0.0, 0.0, 2.0, 1.0, 3.0, PpoParams { value_clip: 0.0, ..base });
    near("unclipped value loss", o.stats[VALUE_LOSS], 0.5);
    near("unclipped dvalues", o.dvalues[0], -0.5);
    // entropy bonus and KL in the loss: ent_coef 0.1 with entropy 2 -> -0.2; k1 with r = 0.3 -> 0.3 kl_coef
    let x = Ppo {
        logp: vec![-1.0],
        old_logp: vec![-1.0],
        adv: vec![0.0],
        mask: vec![1.0],
        values: vec![0.0],
        old_values: vec![0.0],
        returns: vec![0.0],
        entropy: vec![2.0],
        ref_logp: vec![-1.3],
    };
    let o = run_ppo(&be, &x, PpoParams { ent_coef: 0.1, kl_coef: 0.5, kl_estimator: 1, ..base });
    near("entropy", o.stats[ENTROPY], 2.0);
    near("kl", o.stats[KL], 0.3);
    near("total with bonus and kl", o.stats[TOTAL_LOSS], -0.2 + 0.15);
    near("dentropy", o.dentropy[0], -0.1);
    near("dlogp from the kl term", o.dlogp[0], 0.5);
}

/// Token mean vs sequence mean of token means on a batch worked by hand: ratio 1, so
/// `pg_i = -A_i` and `dlogp_i = -w_i A_i`.
#[test]
fn ppo_loss_aggregation_by_hand() {
    let be = CpuBackend::new();
    let (b, t) = (3, 3);
    let n = b * t;
    let nan = f32::NAN;
    let x = Ppo {
        logp: vec![-1.0, -1.0, nan, -1.0, nan, nan, nan, nan, nan],
        old_logp: vec![-1.0, -1.0, nan, -1.0, nan, nan, nan, nan, nan],
        adv: vec![1.0, 2.0, nan, 4.0, nan, nan, nan, nan, nan],
        mask: vec![1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], // the third sequence is all padding
        values: vec![0.0; n],
        old_values: vec![0.0; n],
        returns: vec![0.0; n],
        entropy: vec![0.0; n],
        ref_logp: vec![-1.0; n],
    };
    let base = PpoParams { t: t as u32, vf_coef: 0.0, ..PpoParams::new(n) };
    let tok = run_ppo(&be, &x, PpoParams { aggregation: 0, ..base });
    near("token mean", tok.stats[ppo_stat::POLICY_LOSS], -7.0 / 3.0);
    for (i, want) in [(0, -1.0 / 3.0), (1, -2.0 / 3.0), (3, -4.0 / 3.0)] {
        near(&format!("token-mean dlogp[{i}]"), tok.dlogp[i], want);
    }
    let seq = run_ppo(&be, &x, PpoParams { aggregation: 1, ..base });
    near("sequence mean", seq.stats[ppo_stat::POLICY_LOSS], -((1.0 + 2.0) / 2.0 + 4.0) / 2.0);
    for (i, want) in [(0, -1.0 / 4.0), (1, -2.0 / 4.0), (3, -4.0 / 2.0)] {
        near(&format!("sequence-mean dlogp[{i}]"), seq.dlogp[i], want);
    }
    assert!(tok.dlogp.iter().chain(&seq.dlogp).all(|g| g.is_finite()));
    // micro-batches sharing the minibatch's denominator sum to the whole batch's numbers
    let split = |agg: u32, denom: f32| {
        let mut stats = vec![0.0; ppo_stat::COUNT];
        let mut dlogp = vec![0.0; n];
        for part in [0..t, t..n] {
            let m = part.len();
            let sl = |v: &Vec<f32>| v[part.clone()].to_vec();
            let mut d = vec![0.0; m];
            let p = PpoParams { n: m as u32, aggregation: agg, denom, ..base };
            be.ppo_loss_fwd_bwd(&mut d, None, None, &mut stats, &sl(&x.logp), &sl(&x.old_logp), &sl(&x.adv), &sl(&x.mask), None, None, None, None, None, p)
                .unwrap();
            dlogp[part].copy_from_slice(&d);
        }
        (stats, dlogp)
    };
    for (agg, denom, whole) in [(0, 3.0, &tok), (1, 2.0, &seq)] {
        let (stats, dlogp) = split(agg, denom);
        near("micro-batched policy loss", stats[ppo_stat::POLICY_LOSS], whole.stats[ppo_stat::POLICY_LOSS] as f64);
        near("micro-batched weight", stats[ppo_stat::WEIGHT], 1.0);
        for i in 0..n {
            near("micro-batched dlogp", dlogp[i], whole.dlogp[i] as f64);
        }
    }
}

#[test]
fn ppo_loss_all_masked() {
    let be = CpuBackend::new();
    let n = 12;
    let x = Ppo {
        logp: vec![f32::NAN; n],
        old_logp: vec![0.0; n],
        adv: vec![f32::INFINITY; n],
        mask: vec![0.0; n],
        values: vec![f32::NAN; n],
        old_values: vec![0.0; n],
        returns: vec![0.0; n],
        entropy: vec![f32::NAN; n],
        ref_logp: vec![0.0; n],
    };
    for aggregation in [0, 1] {
        let p = PpoParams { t: 4, aggregation, ent_coef: 0.01, kl_coef: 0.1, dual_clip: 3.0, ..PpoParams::new(n) };
        let o = run_ppo(&be, &x, p);
        assert!(o.stats.iter().all(|&s| s == 0.0), "stats {:?}", o.stats);
        assert!(o.dlogp.iter().chain(&o.dvalues).chain(&o.dentropy).all(|&g| g == 0.0));
    }
    // without the optional inputs: policy loss only, and a value-less call writes no value gradient
    let mut stats = vec![0.0; ppo_stat::COUNT];
    let mut d = vec![1.0; n];
    let mask = vec![1.0; n];
    be.ppo_loss_fwd_bwd(&mut d, None, None, &mut stats, &vec![0.0; n], &vec![0.0; n], &vec![1.0; n], &mask, None, None, None, None, None, PpoParams::new(n))
        .unwrap();
    near("policy loss without extras", stats[ppo_stat::POLICY_LOSS], -1.0);
    near("value loss without values", stats[ppo_stat::VALUE_LOSS], 0.0);
    // inconsistent optional inputs and bad parameters are errors, not panics
    let v = vec![0.0; n];
    let bad = be.ppo_loss_fwd_bwd(&mut d, None, None, &mut stats, &v, &v, &v, &mask, Some(&v), None, None, None, None, PpoParams::new(n));
    assert!(bad.is_err());
    let bad = be.ppo_loss_fwd_bwd(
        &mut d,
        None,
        None,
        &mut stats,
        &v,
        &v,
        &v,
        &mask,
        None,
        None,
        None,
        None,
        None,
        PpoParams { aggregation: 1, t: 5, ..PpoParams::new(n) },
    );
    assert!(bad.is_err());
    let bad =
        be.ppo_loss_fwd_bwd(&mut d, None, None, &mut stats, &v, &v, &v, &mask, None, None, None, None, None, PpoParams { clip_low: -0.1, ..PpoParams::new(n) });
    assert!(bad.is_err());
}

#[test]
pub(crate) fn ranking_loss_by_hand_and_grad() {
    let be = CpuBackend::new();
    // a pair (chosen 1.0, rejected -0.5) and a 3-way ranking (0.2 > 0.4 > -1.0: one pair misordered)
    let scores = vec![1.0f32, -0.5, 0.2, 0.4, -1.0];
    let starts = vec![0, 2, 5];
    let margins = vec![0.0f32, 0.0];
    let p = RankingParams { n_groups: 2, scale: 0.5 };
    let (mut d, mut stats) = (vec![9.0; 5], vec![0.0; 4]);
    be.ranking_loss(&mut d, &mut stats, &scores, &starts, &margins, p).unwrap();
    let sp = |x: f64| (1.0 + (-x).exp()).ln(); // -log sigmoid(x)
    let pair = sp(1.5);
    let three = (sp(0.2 - 0.4) + sp(0.2 + 1.0) + sp(0.4 + 1.0)) / 3.0;
    assert!((stats[0] as f64 - 0.5 * (pair + three)).abs() < 1e-6, "loss {}", stats[0]);
    assert_eq!(stats[1], 3.0, "correctly ordered pairs");
    assert_eq!(stats[2], 4.0, "pairs");
    assert!((stats[3] - (1.5 + -0.2 + 1.2 + 1.4)).abs() < 1e-6);
    let loss = |s: &[f32]| {
        let (mut d, mut st) = (vec![0.0; 5], vec![0.0; 4]);
        be.ranking_loss(&mut d, &mut st, &s.to_vec(), &starts, &margins, p).unwrap();
        st[0] as f64
    };
    fd_check("ranking dscores", &scores, &d, loss);
    // a margin raises the loss of a correctly ordered pair
    let (mut d2, mut st2) = (vec![0.0; 5], vec![0.0; 4]);
    be.ranking_loss(&mut d2, &mut st2, &scores, &starts, &vec![1.0, 0.0], p).unwrap();
    assert!((st2[0] as f64 - 0.5 * (sp(0.5) + three)).abs() < 1e-6);
    // a group of one completion is an error, not a panic
    let mut st3 = vec![0.0; 4];
    assert!(be.ranking_loss(&mut vec![0.0; 5], &mut st3, &scores, &vec![0, 1, 5], &margins, p).is_err());
}
