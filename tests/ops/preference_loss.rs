//! The `preference_loss_fwd_bwd` op of the DPO family against hand-computed examples and
//! central finite differences for every loss type (sigmoid, cDPO, IPO, SimPO, length-normalised).

use crate::common::{fd_check, randv};
use rlhf::backend::ops::{preference_loss, preference_stat, Backend, PreferenceParams};
use rlhf::backend::CpuBackend;
use rlhf::data::rng::Rng;

/// Runs the op on the CPU; returns (dlogp, stats).
fn run_op(logp: &[f32], mask: &[f32], refs: &[f32], p: PreferenceParams) -> (Vec<f32>, Vec<f32>) {
    let be = CpuBackend::new();
    let mut dlogp = vec![f32::NAN; logp.len()];
    let mut stats = vec![0.0; preference_stat::COUNT];
    be.preference_loss_fwd_bwd(&mut dlogp, &mut stats, &logp.to_vec(), &mask.to_vec(), &refs.to_vec(), p).unwrap();
    (dlogp, stats)
}

fn params(loss_type: u32, length_norm: bool, beta: f32, eps: f32, gamma: f32) -> PreferenceParams {
    PreferenceParams { pairs: 1, t: 3, loss_type, length_norm: length_norm as u32, beta, label_smoothing: eps, simpo_gamma: gamma, scale: 1.0 }
}

#[track_caller]
fn close(what: &str, got: f32, want: f64) {
    assert!((got as f64 - want).abs() < 1e-5, "{what}: {got} vs hand-computed {want}");
}

/// One pair, t = 3, the first token is the prompt's (mask 0, garbage log-prob):
/// chosen log-probs -2, -3 (sum -5, mean -2.5), rejected -4, -2 (sum -6, mean -3);
/// reference sums: chosen -6, rejected -5.
const LOGP: [f32; 6] = [-9.0, -2.0, -3.0, -7.0, -4.0, -2.0];
const MASK: [f32; 6] = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
const REFS: [f32; 2] = [-6.0, -5.0];

#[test]
fn each_loss_matches_a_hand_computed_example() {
    // sigmoid, beta 0.5: h = (-5 + 6) - (-6 + 5) = 2, z = 1, L = ln(1 + e^-1) = 0.313261687,
    // dL/dh = -0.5 sigmoid(-1) = -0.134470711; rewards 0.5 and -0.5
    let (d, s) = run_op(&LOGP, &MASK, &REFS, params(preference_loss::SIGMOID, false, 0.5, 0.0, 0.0));
    close("sigmoid loss", s[preference_stat::LOSS], 0.313261687);
    for (i, want) in [0.0, -0.134470711, -0.134470711, 0.0, 0.134470711, 0.134470711].iter().enumerate() {
        close(&format!("sigmoid dlogp[{i}]"), d[i], *want);
    }
    close("chosen reward", s[preference_stat::CHOSEN_REWARD], 0.5);
    close("rejected reward", s[preference_stat::REJECTED_REWARD], -0.5);
    close("margin", s[preference_stat::MARGIN], 1.0);
    close("correct", s[preference_stat::CORRECT], 1.0);
    close("pairs", s[preference_stat::PAIRS], 1.0);

    // cDPO, eps 0.1: L = 0.9 * 0.313261687 + 0.1 * 1.313261687 = 0.413261687,
    // dL/dh = 0.5 (-0.9 sigmoid(-1) + 0.1 sigmoid(1)) = 0.5 (-0.242047277 + 0.073105858) = -0.084470709
    let (d, s) = run_op(&LOGP, &MASK, &REFS, params(preference_loss::SIGMOID, false, 0.5, 0.1, 0.0));
    close("cdpo loss", s[preference_stat::LOSS], 0.413261687);
    close("cdpo dlogp chosen", d[1], -0.084470709);
    close("cdpo dlogp rejected", d[5], 0.084470709);

    // IPO, beta 1, means: a_c - ra_c = -2.5 + 3 = 0.5, a_r - ra_r = -3 + 2.5 = -0.5, h = 1,
    // L = (1 - 0.5)^2 = 0.25, dL/dh = 1, per token / 2 tokens = 0.5; rewards 0.5, -0.5
    let (d, s) = run_op(&LOGP, &MASK, &REFS, params(preference_loss::IPO, true, 1.0, 0.0, 0.0));
    close("ipo loss", s[preference_stat::LOSS], 0.25);
    for (i, want) in [0.0, 0.5, 0.5, 0.0, -0.5, -0.5].iter().enumerate() {
        close(&format!("ipo dlogp[{i}]"), d[i], *want);
    }
    close("ipo chosen reward", s[preference_stat::CHOSEN_REWARD], 0.5);

    // SimPO, beta 2, gamma 0.5, no reference: z = 2 (-2.5 + 3) - 0.5 = 0.5,
    // L = ln(1 + e^-0.5) = 0.474076984, dL/dz = -sigmoid(-0.5) = -0.377540669,
    // dlogp = beta dL/dz / 2 tokens = -0.377540669; rewards 2 * -2.5 = -5 and 2 * -3 = -6
    let (d, s) = run_op(&LOGP, &MASK, &[123.0, -77.0], params(preference_loss::SIMPO, true, 2.0, 0.0, 0.5));
    close("simpo loss", s[preference_stat::LOSS], 0.474076984);
    close("simpo dlogp chosen", d[2], -0.377540669);
    close("simpo dlogp rejected", d[4], 0.377540669);
    close("simpo chosen reward", s[preference_stat::CHOSEN_REWARD], -5.0);
    close("simpo rejected reward", s[preference_stat::REJECTED_REWARD], -6.0);
}

#[test]
fn layout_scale_accumulation_and_stability() {
    // two pairs: rows 0, 1 chosen, rows 2, 3 rejected; pair 1 prefers the rejected row
    let logp = [-1.0, -1.0, -3.0, -1.0, -2.0, -2.0, -1.0, -0.5];
    let mask = [1.0; 8];
    let refs = [-2.0, -3.0, -4.0, -3.0];
    let p = PreferenceParams { pairs: 2, t: 2, scale: 0.25, ..PreferenceParams::new(2, 2) };
    let be = CpuBackend::new();
    let mut dlogp = vec![0.0; 8];
    let mut stats = vec![1.0, 0.0, 0.0, 0.0, 0.0, 3.0];
    be.preference_loss_fwd_bwd(&mut dlogp, &mut stats, &logp.to_vec(), &mask.to_vec(), &refs.to_vec(), p).unwrap();
    // pair 0: h = (-2 + 2) - (-4 + 4) = 0, loss ln 2, dL/dh = -0.05; pair 1: h = (-4 + 3) - (-1.5 + 3) = -2.5
    let h1 = -2.5f64;
    let l1 = (1.0 + (-0.1 * h1).exp()).ln();
    close("loss accumulates onto 1", stats[0], 1.0 + 2f64.ln() + l1);
    close("pairs accumulate onto 3", stats[preference_stat::PAIRS], 5.0);
    close("pair 0 ties and pair 1 prefers the rejected row: none correct", stats[preference_stat::CORRECT], 0.0);
    close("row 0 gets pair 0's chosen gradient, scaled", dlogp[0], 0.25 * -0.05);
    close("row 2 gets pair 0's rejected gradient", dlogp[4], 0.25 * 0.05);
    let g1 = 0.25 * -0.1 / (1.0 + (0.1 * h1).exp());
    close("row 1 gets pair 1's chosen gradient", dlogp[2], g1);
    close("row 3 gets pair 1's rejected gradient", dlogp[7], -g1);
    // huge margins: finite loss (no overflow of exp), the gradient saturates
    let (d, s) = run_op(&[0.0, 0.0, -400.0, 0.0, 0.0, 400.0], &MASK, &[0.0, 0.0], params(preference_loss::SIGMOID, false, 1.0, 0.0, 0.0));
    close("loss of z = -800", s[0], 800.0);
    close("saturated gradient", d[2], -1.0);
    // bad params are errors, not panics
    let bad = |p: PreferenceParams| {
        let mut st = vec![0.0; 6];
        be.preference_loss_fwd_bwd(&mut vec![0.0; 6], &mut st, &LOGP.to_vec(), &MASK.to_vec(), &REFS.to_vec(), p).is_err()
    };
    assert!(bad(params(preference_loss::SIGMOID, false, 0.0, 0.0, 0.0)), "beta 0");
    assert!(bad(params(preference_loss::SIGMOID, false, 0.1, 0.5, 0.0)), "label smoothing 0.5");
    assert!(bad(params(7, false, 0.1, 0.0, 0.0)), "unknown loss type");
    assert!(bad(PreferenceParams { pairs: 2, ..params(preference_loss::SIGMOID, false, 0.1, 0.0, 0.0) }), "buffers too short");
}

#[test]
pub(crate) fn dlogp_matches_finite_differences_for_every_loss() {
    let (pairs, t) = (3usize, 5usize);
    let mut rng = Rng::new(17);
    let logp: Vec<f32> = randv(&mut rng, 2 * pairs * t, 1.0).iter().map(|x| -x.abs() - 0.5).collect();
    // ragged completions: row k starts at a different prompt length and ends early
    let mask: Vec<f32> = (0..2 * pairs * t).map(|i| ((i % t) > (i / t) % 2 && (i % t) < t - (i / t) % 3 / 2) as u8 as f32).collect();
    let refs: Vec<f32> = randv(&mut rng, 2 * pairs, 2.0).iter().map(|x| x - 4.0).collect();
    let cases = [
        ("sigmoid", preference_loss::SIGMOID, false, 0.5, 0.0, 0.0),
        ("cdpo", preference_loss::SIGMOID, false, 0.5, 0.2, 0.0),
        ("ipo", preference_loss::IPO, true, 0.3, 0.0, 0.0),
        ("simpo", preference_loss::SIMPO, true, 2.0, 0.1, 0.7),
        ("sigmoid, length-normalised", preference_loss::SIGMOID, true, 1.0, 0.0, 0.0),
    ];
    for (name, loss_type, norm, beta, eps, gamma) in cases {
        let p = PreferenceParams {
            pairs: pairs as u32,
            t: t as u32,
            loss_type,
            length_norm: norm as u32,
            beta,
            label_smoothing: eps,
            simpo_gamma: gamma,
            scale: 1.0 / pairs as f32,
        };
        let (d, _) = run_op(&logp, &mask, &refs, p);
        fd_check(name, &logp, &d, |x| run_op(x, &mask, &refs, p).1[preference_stat::LOSS] as f64 / pairs as f64);
        // the gradient is 0 outside the completions
        assert!(d.iter().zip(&mask).all(|(g, m)| *m != 0.0 || *g == 0.0), "{name}: gradient outside the mask");
        assert!(d.iter().any(|g| *g != 0.0), "{name}: all-zero gradient");
    }
}
