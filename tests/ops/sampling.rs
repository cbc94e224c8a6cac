//! `sample` on the CPU backend, the reference of every backend: greedy, the Gumbel-max draw's
//! frequencies against softmax(x / T) (a chi-square bound that a wrong temperature or a biased
//! draw fails), the top-k / top-p cuts against a sort-based reference (ties at the threshold
//! included), the counter-based uniforms, and bad input.

use rlhf::backend::cpu::sample_math::{key_of, mass, row_state, top_p_goal, uniform_open};
use rlhf::backend::ops::*;
use rlhf::backend::CpuBackend;
use rlhf::data::rng::Rng;

const BASE: SampleParams = SampleParams { n: 0, v: 0, temperature: 1.0, top_k: 0, top_p: 1.0, seed_lo: 7, seed_hi: 3, step_at: 0 };

/// How often each token is drawn from `row`, repeated over `rows` rows (each its own stream) for
/// `steps` steps.
fn counts(row: &[f32], p: SampleParams, rows: usize, steps: u32) -> Vec<usize> {
    let be = CpuBackend::new();
    let v = row.len();
    let logits: Vec<f32> = (0..rows).flat_map(|_| row.iter().copied()).collect();
    let p = SampleParams { n: rows as u32, v: v as u32, ..p };
    let mut out = vec![-1; rows];
    let mut c = vec![0usize; v];
    for step in 0..steps {
        be.sample(&mut out, &logits, &vec![step as i32], p).unwrap();
        for &t in &out {
            c[t as usize] += 1;
        }
    }
    c
}

/// Pearson's chi-square of `counts` against the probabilities softmax(x / t) over `kept`.
fn chi_square(counts: &[usize], row: &[f32], t: f64, kept: &[usize]) -> f64 {
    let draws: usize = counts.iter().sum();
    let z: f64 = kept.iter().map(|&j| (row[j] as f64 / t).exp()).sum();
    kept.iter()
        .map(|&j| {
            let want = draws as f64 * (row[j] as f64 / t).exp() / z;
            (counts[j] as f64 - want).powi(2) / want
        })
        .sum()
}

#[test]
fn sample_greedy_ties_nan_and_errors() {
    let be = CpuBackend::new();
    // row 0: a tie between 1 and 3, greedy takes 1; row 1: NaN skipped, a tie, 2; row 2: all NaN, 0
    let nan = f32::NAN;
    let logits = [[0.0, 3.0, 1.0, 3.0, -1.0, 2.0], [nan, 0.0, 4.0, nan, 4.0, 0.0], [nan; 6]].concat();
    let p = SampleParams { n: 3, v: 6, temperature: 0.0, ..BASE };
    let mut out = vec![-1; 3];
    be.sample(&mut out, &logits, &vec![0], p).unwrap();
    assert_eq!(out, vec![1, 2, 0]);
    // sampling never draws a NaN logit
    for step in 0..50 {
        be.sample(&mut out, &logits, &vec![step], SampleParams { temperature: 1.0, ..p }).unwrap();
        assert!(out[1] != 0 && out[1] != 3, "{out:?}");
    }
    // a step_at outside the buffer, and top-p over a vocabulary past its fixed point, are errors
    let e = be.sample(&mut out, &logits, &vec![3], SampleParams { step_at: 2, ..p }).unwrap_err().to_string();
    assert!(e.contains("sample") && e.contains("step_at 2"), "{e}");
    let huge = SampleParams { n: 0, v: MAX_TOP_P_VOCAB + 1, temperature: 1.0, top_p: 0.9, ..BASE };
    let e = be.sample(&mut out, &logits, &vec![0], huge).unwrap_err().to_string();
    assert!(e.contains("top_p"), "{e}");
}

/// df = 7 (8 tokens): P(chi2 > 30) < 1e-4, so a correct sampler stays below it; the same counts
/// against the wrong temperature (or a uniform) land far above.
#[test]
fn gumbel_max_frequencies_match_softmax() {
    let row = [0.0f32, 1.0, -1.0, 2.0, 0.5, -0.5, 1.5, 0.25];
    let all: Vec<usize> = (0..row.len()).collect();
    for t in [0.7f32, 1.0, 1.8] {
        let c = counts(&row, SampleParams { temperature: t, ..BASE }, 500, 40);
        let chi = chi_square(&c, &row, t as f64, &all);
        assert!(chi < 30.0, "T={t}: chi-square {chi:.1} over {c:?}");
        for wrong in [t as f64 * 0.8, t as f64 * 1.25] {
            let chi = chi_square(&c, &row, wrong, &all);
            assert!(chi > 60.0, "T={t}: the counts should not fit T={wrong}: chi-square {chi:.1}");
        }
    }
    // the cuts renormalise over the kept tokens: top_k = 3 keeps 3, 6, 1
    let c = counts(&row, SampleParams { temperature: 1.0, top_k: 3, ..BASE }, 500, 20);
    let kept = [1usize, 3, 6];
    assert_eq!(c.iter().enumerate().filter(|(j, _)| !kept.contains(j)).map(|(_, &n)| n).sum::<usize>(), 0);
    let chi = chi_square(&c, &row, 1.0, &kept);
    assert!(chi < 20.0, "top-k: chi-square {chi:.1} (df 2) over {c:?}");
}

/// The tokens the cuts keep, from a sort: the top_k-th largest key, then the largest key whose
/// tokens at or above it hold the top-p goal of the fixed-point masses.
fn kept_by_sorting(row: &[f32], p: &SampleParams) -> Vec<usize> {
    let mut keys: Vec<u32> = row.iter().filter(|x| !x.is_nan()).map(|&x| key_of(x)).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let mut thr = 0;
    if p.top_k > 0 && (p.top_k as usize) < keys.len() {
        thr = keys[p.top_k as usize - 1];
    }
    let kept = |thr: u32| (0..row.len()).filter(|&j| !row[j].is_nan() && key_of(row[j]) >= thr).collect::<Vec<_>>();
    if p.top_p < 1.0 {
        let max = row.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        let m = |j: usize| mass(row[j], max, p.temperature);
        let total: u64 = kept(thr).iter().map(|&j| m(j)).sum();
        let goal = top_p_goal(total, p.top_p);
        keys.dedup();
        for &k in keys.iter().filter(|&&k| k >= thr) {
            let held: u64 = kept(k).iter().map(|&j| m(j)).sum();
            if held >= goal {
                thr = k;
                break;
            }
        }
    }
    kept(thr)
}

#[test]
pub fn top_k_and_top_p_keep_exactly_the_tokens_at_or_above_the_threshold() {
    // by hand: ties at the threshold are all kept
    let row = [3.0f32, 1.0, 3.0, 2.0, 0.0];
    let drawn = |p: SampleParams| {
        let c = counts(&row, p, 200, 10);
        (0..row.len()).filter(|&j| c[j] > 0).collect::<Vec<_>>()
    };
    assert_eq!(drawn(SampleParams { top_k: 1, ..BASE }), vec![0, 2], "top_k 1 keeps both maxima");
    assert_eq!(drawn(SampleParams { top_k: 2, ..BASE }), vec![0, 2]);
    assert_eq!(drawn(SampleParams { top_k: 3, ..BASE }), vec![0, 2, 3]);
    // masses 1, 1, e^-1 (2 of 2.37 = 84%): top_p up to 0.84 keeps both maxima, more keeps token 3
    assert_eq!(drawn(SampleParams { top_p: 0.3, top_k: 3, ..BASE }), vec![0, 2], "top_p keeps the maximum's tie");
    assert_eq!(drawn(SampleParams { top_p: 0.84, top_k: 3, ..BASE }), vec![0, 2]);
    assert_eq!(drawn(SampleParams { top_p: 0.85, top_k: 3, ..BASE }), vec![0, 2, 3]);
    assert_eq!(drawn(SampleParams { top_p: 0.0, ..BASE }), vec![0, 2], "top_p 0 keeps the maxima");

    // random rows full of ties against the sort: what is drawn is exactly the kept set (a high
    // temperature and few distinct values make every kept token likely enough to show up)
    let mut rng = Rng::new(5);
    for case in 0..24 {
        let v = [5usize, 12, 40][case % 3];
        let row: Vec<f32> = (0..v).map(|_| (rng.normal() * 2.0).round() * 0.25).collect();
        let top_k = [0u32, 1, 2, 5, 9][case % 5];
        let top_p = [1.0f32, 0.2, 0.5, 0.8, 0.95][(case / 2) % 5];
        let p = SampleParams { temperature: 2.0, top_k, top_p, ..BASE };
        let want = kept_by_sorting(&row, &p);
        let c = counts(&row, p, 400, 10);
        let got: Vec<usize> = (0..v).filter(|&j| c[j] > 0).collect();
        assert_eq!(got, want, "row {row:?} top_k {top_k} top_p {top_p}: counts {c:?}");
    }
}

#[test]
fn draws_come_from_the_counter_based_uniforms() {
    // equal logits: the Gumbel noise decides, which rises with the uniform, so row r draws the
    // token of its largest uniform (the integers behind them: lowest index on ties)
    let be = CpuBackend::new();
    let (n, v) = (16usize, 3000usize);
    let flat = vec![0.5f32; n * v];
    let mut got = vec![0; n];
    let p = SampleParams { n: n as u32, v: v as u32, step_at: 2, ..BASE };
    be.sample(&mut got, &flat, &vec![3, 4, 99], p).unwrap();
    let seed = 3u64 << 32 | 7;
    for (r, &t) in got.iter().enumerate() {
        let s = row_state(seed, 99, r as u32);
        let mut best = 0;
        for j in 1..v {
            if uniform_open(s, j as u32) > uniform_open(s, best as u32) {
                best = j;
            }
        }
        assert_eq!(t, best as i32, "row {r}");
    }
    // the same seed and step give the same draws; another step others
    let mut again = vec![0; n];
    be.sample(&mut again, &flat, &vec![0, 0, 99], p).unwrap();
    assert_eq!(got, again);
    be.sample(&mut again, &flat, &vec![0, 0, 100], p).unwrap();
    assert_ne!(got, again);
}
