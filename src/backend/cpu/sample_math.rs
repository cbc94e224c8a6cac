//! The arithmetic of `sample` that every backend repeats operation for operation, so that the
//! sampled ids agree bit for bit: the counter-based uniforms, the Gumbel noise, the logits' order
//! key and the fixed-point probability masses of the top-p cut. `kernels/sample.cu` and
//! `shaders/sample.wgsl` hold the same functions under the same names.
//!
//! - Random numbers: SplitMix64. A row's stream starts from `row_state(seed, step, row)` (the
//!   finaliser of `seed ^ ((step << 32 | row) * golden) + golden`); token j's uniform is the
//!   stream's (j + 1)-th output, `mix(state + (j + 1) * golden)`, whose top 23 bits `k` give
//!   `u = (2k + 1) / 2^24`: in (0, 1) with both ends excluded, exact in f32, so both logarithms
//!   of the Gumbel noise `g = -ln(-ln u)` are finite.
//! - `ln` and `exp` are written out in single f32 operations (each rounded once: no fused
//!   multiply-add, no library call), because `logf`/`expf` differ by an ulp between libm, CUDA and
//!   GPU drivers, and one ulp can swap two near-equal scores. CUDA spells each operation with its
//!   `__f*_rn` intrinsic (never contracted); WGSL writes the same expressions.
//! - Masses: `q_j = exp((x_j - max) / T)` in [0, 1], stored as the integer `floor(q_j 2^40)` and
//!   summed in u64: integer sums do not depend on the order of addition, so the top-p cut is the
//!   same whatever the reduction tree. Tokens with `q_j < 2^-40` weigh 0 (at most `v 2^-40` of
//!   mass in all, 1.4e-7 at v = 151936; `v <= 2^24` keeps the sum inside u64).

/// SplitMix64's increment (the golden ratio in 64 bits).
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The state of row `row`'s stream at sampling step `step`.
pub fn row_state(seed: u64, step: u32, row: u32) -> u64 {
    mix((seed ^ ((step as u64) << 32 | row as u64).wrapping_mul(GOLDEN)).wrapping_add(GOLDEN))
}

/// Token `j`'s uniform in (0, 1) (both ends excluded) from its row's stream `state`.
pub fn uniform_open(state: u64, j: u32) -> f32 {
    let z = mix(state.wrapping_add((j as u64 + 1).wrapping_mul(GOLDEN)));
    ((z >> 41) as u32 * 2 + 1) as f32 * (1.0 / 16_777_216.0)
}

// The constants by their bits, as `kernels/sample.cu` and `shaders/sample.wgsl` write them.
const LN2_HI: f32 = f32::from_bits(0x3F31_7180); // 6.9313812256e-01, 17 significant bits
const LN2_LO: f32 = f32::from_bits(0x3717_F7D1); // 9.0580006145e-06
const LOG2_E: f32 = f32::from_bits(0x3FB8_AA3B); // 1.442695
/// 2/3, 2/5, 2/7, 2/9: the atanh series of `ln`
const L3: f32 = f32::from_bits(0x3F2A_AAAB);
const L5: f32 = f32::from_bits(0x3ECC_CCCD);
const L7: f32 = f32::from_bits(0x3E92_4925);
const L9: f32 = f32::from_bits(0x3E63_8E39);
/// 1/3!, ..., 1/7!: the Taylor series of `exp_neg`
const E3: f32 = f32::from_bits(0x3E2A_AAAB);
const E4: f32 = f32::from_bits(0x3D2A_AAAB);
const E5: f32 = f32::from_bits(0x3C08_8889);
const E6: f32 = f32::from_bits(0x3AB6_0B61);
const E7: f32 = f32::from_bits(0x3950_0D01);

/// Natural logarithm of a positive normal f32 (the Gumbel noise only takes those): x = m 2^e with
/// m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1), ln m = 2 atanh s = s (2 + z (2/3 + z (2/5 +
/// z (2/7 + z 2/9)))) with z = s^2 (|s| <= 0.172: the next term is below 1e-9 relative), and
/// ln x = e ln2_hi + (e ln2_lo + ln m).
pub fn ln(x: f32) -> f32 {
    let b = x.to_bits();
    let e = (b.wrapping_sub(0x3F35_04F3) as i32) >> 23;
    let m = f32::from_bits(b.wrapping_sub((e as u32) << 23));
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let p = z * (L3 + z * (L5 + z * (L7 + z * L9)));
    let lnm = s * (2.0 + p);
    let ef = e as f32;
    ef * LN2_HI + (ef * LN2_LO + lnm)
}

/// The Gumbel noise of a uniform in (0, 1): `-ln(-ln u)`.
pub fn gumbel(u: f32) -> f32 {
    -ln(-ln(u))
}

/// `exp(d)` for `d` in [-28, 0] (below -28, or NaN: 0, which the masses round to anyway, since
/// e^-28 < 2^-40): d = k ln2 + r with k = floor(d log2(e) + 1/2), |r| <= ln2 / 2, e^r by its
/// Taylor series to r^7 / 7!, scaled by 2^k through the exponent bits.
pub fn exp_neg(d: f32) -> f32 {
    if d.is_nan() || d < -28.0 {
        return 0.0;
    }
    let k = (d * LOG2_E + 0.5).floor();
    let r = (d - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (E3 + r * (E4 + r * (E5 + r * (E6 + r * E7))))));
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `floor(q 2^40)` of `q = exp((x - max) / T)`: a token's mass in the top-p cut.
pub fn mass(x: f32, max: f32, temperature: f32) -> u64 {
    (exp_neg((x - max) / temperature) * 1_099_511_627_776.0) as u64
}

/// The mass the top-p cut must reach: `floor(total P / 2^24)` with `P = floor(top_p 2^24)`
/// (top_p in [0, 1)), computed in two parts that fit u64, and at least 1 (so the cut's key always
/// holds mass).
pub fn top_p_goal(total: u64, top_p: f32) -> u64 {
    let p = if top_p > 0.0 { (top_p * 16_777_216.0) as u64 } else { 0 };
    ((total >> 24) * p + (((total & 0xFF_FFFF) * p) >> 24)).max(1)
}

/// The f32 bits mapped to a u32 of the same order as `f32::total_cmp` (-0.0 below +0.0).
pub fn key_of(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_and_exp_are_close_to_the_library() {
        let mut x = 1.0e-7f32;
        while x < 20.0 {
            let (got, want) = (ln(x) as f64, (x as f64).ln());
            assert!((got - want).abs() <= 4e-7 * want.abs(), "ln {x}: {got} vs {want}");
            x *= 1.001_3;
        }
        let mut d = -28.0f32;
        while d <= 0.0 {
            let (got, want) = (exp_neg(d) as f64, (d as f64).exp());
            assert!((got - want).abs() <= 3e-7 * want, "exp {d}: {got} vs {want}");
            d += 0.0037;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-28.5), 0.0);
        assert_eq!(exp_neg(f32::NAN), 0.0);
    }

    #[test]
    fn uniforms_are_open_and_gumbels_finite() {
        for j in 0..100_000 {
            let u = uniform_open(row_state(7, 3, 1), j);
            assert!(u > 0.0 && u < 1.0);
            assert!(gumbel(u).is_finite());
        }
        for u in [f32::from_bits(0x3380_0000), 1.0 - f32::from_bits(0x3380_0000)] {
            assert!(gumbel(u).is_finite(), "{u}");
        }
    }
}
