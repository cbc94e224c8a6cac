// The per-token RL losses: kl_penalty_fwd, kl_penalty_bwd, ppo_loss_fwd_bwd (fused forward and
// backward). Every input and output is a flat [n] f32 array; nothing is saved for a later pass.
//
// kl_penalty_fwd / kl_penalty_bwd — one invocation per token, r = logp - ref_logp:
//   k1 = r, k2 = r^2 / 2, k3 = exp(-r) - 1 + r;   kl[i] = mask[i] k(r)
//   dlogp[i] = dkl[i] mask[i] k'(r) with k1' = 1, k2' = r, k3' = 1 - exp(-r) = -expm1(-r).
//   k3 and expm1 use their Taylor series for |r| < 0.5 (exp(-r) - 1 + r cancels there; the
//   series are truncated below 1e-9 relative). Where mask == 0 the output is 0 and the log-probs
//   are not read (padding may be garbage).
//   Uniform: KlParams { n, estimator }. Bindings: fwd (kl, logp, ref_logp, mask), bwd (dlogp, dkl,
//   logp, ref_logp, mask).
//
// ppo_loss_fwd_bwd — see PpoParams in src/backend/ops.rs. Per token, ratio = exp(logp - old_logp):
//   pg = max(-A ratio, -A clip(ratio, 1 - clip_low, 1 + clip_high)), dual clip pg = min(pg, -c A)
//   for A < 0; value loss vl = 0.5 max((V - R)^2, (V_old + clip(V - V_old, +-eps_v) - R)^2);
//   kl = k(logp - ref_logp); loss_i = pg + vf_coef vl - ent_coef entropy + kl_coef kl;
//   dlogp = w (dpg + kl_coef dkl), dvalues = w vf_coef dvl, dentropy = -w ent_coef, with the
//   aggregation weight w_i (token mean: m_i / sum m; sequence mean: m_i / (S sum_{seq(i)} m),
//   `denom > 0` replacing sum m or S). stats[ppo_stat::*] += sum_i w_i term_i.
//   Four passes, no host round trip, every sum in a fixed order (deterministic):
//   1. ppo_loss_fwd_bwd_count (one workgroup per chunk: 4096 tokens for the token mean, one
//      sequence of t tokens for the sequence mean): scratch[1 + c] = sum of the chunk's mask.
//   2. ppo_loss_fwd_bwd_denom (one workgroup): token mean: scratch[0] = 1 / denom (0 when no
//      token is masked); sequence mean: scratch[0] = S or denom.
//   3. ppo_loss_fwd_bwd (one invocation per token, workgroups of 256): the gradients, and the
//      workgroup's weighted stats sums into scratch[stat_off + k * n_tok_wg + workgroup].
//   4. ppo_loss_fwd_bwd_stats (one workgroup): stats[k] += the sum of those partials.
//   Optional inputs absent: a dummy buffer is bound (logp) and never read (has_* flags); absent
//   optional outputs: a 1-value scratch buffer, never written. Masked-out tokens (w == 0) write
//   0 and read nothing but the mask.
//   Uniform: PpoParams, then has_values, has_entropy, has_ref, chunk (tokens per count chunk),
//   n_chunks, n_tok_wg (workgroups of pass 3), stat_off, pad.
//   Bindings: 1 dlogp, 2 dvalues, 3 dentropy, 4 stats, 5 logp, 6 old_logp, 7 advantages, 8 mask,
//   9 values, 10 old_values, 11 returns, 12 entropy, 13 ref_logp, 14 scratch (launcher's).

// ---- KL penalty -------------------------------------------------------------------------------

struct KlParams {
    n: u32,
    estimator: u32,
}

@group(0) @binding(0) var<uniform> kp: KlParams;
@group(0) @binding(1) var<storage, read_write> kl_out: array<f32>;
@group(0) @binding(2) var<storage, read> kl_in2: array<f32>;
@group(0) @binding(3) var<storage, read> kl_in3: array<f32>;
@group(0) @binding(4) var<storage, read> kl_in4: array<f32>;
@group(0) @binding(5) var<storage, read> kl_in5: array<f32>;

// expm1(x): Taylor series to x^10 / 10! for |x| < 0.5 (truncation < 1e-9 relative), exp(x) - 1
// beyond (cancellation at most a factor of 2.6 there).
fn expm1_(x: f32) -> f32 {
    if (abs(x) < 0.5) {
        return x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x * (1.0 / 720.0
            + x * (1.0 / 5040.0 + x * (1.0 / 40320.0 + x * (1.0 / 362880.0 + x * (1.0 / 3628800.0))))))))));
    }
    return exp(x) - 1.0;
}

// k3(r) = exp(-r) - 1 + r = sum_{k >= 2} (-r)^k / k!: the series to k = 11 for |r| < 0.5.
fn k3_(r: f32) -> f32 {
    if (abs(r) < 0.5) {
        let u = -r;
        return r * r * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0 + u * (1.0 / 120.0 + u * (1.0 / 720.0 + u * (1.0 / 5040.0
            + u * (1.0 / 40320.0 + u * (1.0 / 362880.0 + u * (1.0 / 3628800.0 + u * (1.0 / 39916800.0))))))))));
    }
    return exp(-r) - 1.0 + r;
}

fn kl_estimate(estimator: u32, r: f32) -> f32 {
    if (estimator == 1u) {
        return r;
    }
    if (estimator == 2u) {
        return 0.5 * r * r;
    }
    return k3_(r);
}

fn kl_estimate_grad(estimator: u32, r: f32) -> f32 {
    if (estimator == 1u) {
        return 1.0;
    }
    if (estimator == 2u) {
        return r;
    }
    return -expm1_(-r);
}

// kl (1) = mask (4) * k(logp (2) - ref_logp (3))
@compute @workgroup_size(256)
fn kl_penalty_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i >= kp.n) {
        return;
    }
    let m = kl_in4[i];
    var out = 0.0;
    if (m != 0.0) {
        out = m * kl_estimate(kp.estimator, kl_in2[i] - kl_in3[i]);
    }
    kl_out[i] = out;
}

// dlogp (1) = dkl (2) * mask (5) * k'(logp (3) - ref_logp (4))
@compute @workgroup_size(256)
fn kl_penalty_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i >= kp.n) {
        return;
    }
    let m = kl_in5[i];
    var out = 0.0;
    if (m != 0.0) {
        out = kl_in2[i] * m * kl_estimate_grad(kp.estimator, kl_in3[i] - kl_in4[i]);
    }
    kl_out[i] = out;
}

// ---- PPO ----------------------------------------------------------------------------------------

struct PpoU {
    n: u32,
    t: u32,
    aggregation: u32,
    kl_estimator: u32,
    clip_low: f32,
    clip_high: f32,
    dual_clip: f32,
    value_clip: f32,
    vf_coef: f32,
    ent_coef: f32,
    kl_coef: f32,
    denom: f32,
    // appended by the launcher
    has_values: u32,
    has_entropy: u32,
    has_ref: u32,
    chunk: u32,
    n_chunks: u32,
    n_tok_wg: u32,
    stat_off: u32,
    _pad: u32,
}

const N_STATS: u32 = 10u;

@group(0) @binding(0) var<uniform> pp: PpoU;
@group(0) @binding(1) var<storage, read_write> dlogp: array<f32>;
@group(0) @binding(2) var<storage, read_write> dvalues: array<f32>;
@group(0) @binding(3) var<storage, read_write> dentropy: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read> logp: array<f32>;
@group(0) @binding(6) var<storage, read> old_logp: array<f32>;
@group(0) @binding(7) var<storage, read> advantages: array<f32>;
@group(0) @binding(8) var<storage, read> mask: array<f32>;
@group(0) @binding(9) var<storage, read> values: array<f32>;
@group(0) @binding(10) var<storage, read> old_values: array<f32>;
@group(0) @binding(11) var<storage, read> returns: array<f32>;
@group(0) @binding(12) var<storage, read> entropy: array<f32>;
@group(0) @binding(13) var<storage, read> ref_logp: array<f32>;
@group(0) @binding(14) var<storage, read_write> scratch: array<f32>;

// Pass 1: the mask sum of chunk c (workgroup c) into scratch[1 + c].
@compute @workgroup_size(256)
fn ppo_loss_fwd_bwd_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= pp.n_chunks) {
        return;
    }
    let start = c * pp.chunk;
    let end = min(start + pp.chunk, pp.n);
    var acc = 0.0;
    for (var i = start + lid; i < end; i = i + WG) {
        acc = acc + mask[i];
    }
    let total = wg_sum(acc, lid);
    if (lid == 0u) {
        scratch[1u + c] = total;
    }
}

// Pass 2 (one workgroup): the scale of the token mean (1 / denom, 0 without masked tokens), or the
// number of sequences S of the sequence mean (or denom), into scratch[0].
@compute @workgroup_size(256)
fn ppo_loss_fwd_bwd_denom(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var j = lid; j < pp.n_chunks; j = j + WG) {
        let s = scratch[1u + j];
        if (pp.aggregation == 0u) {
            acc = acc + s;
        } else if (s != 0.0) {
            acc = acc + 1.0;
        }
    }
    let total = wg_sum(acc, lid);
    if (lid == 0u) {
        let denom = select(total, pp.denom, pp.denom > 0.0);
        if (pp.aggregation == 0u) {
            scratch[0] = select(0.0, 1.0 / denom, denom > 0.0 && total != 0.0);
        } else {
            scratch[0] = denom;
        }
    }
}

// Pass 3: one invocation per token: gradients, and the workgroup's weighted stats partials.
@compute @workgroup_size(256)
fn ppo_loss_fwd_bwd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wgi = wid.x + wid.y * nwg.x;
    let i = wgi * WG + lid;
    var terms: array<f32, 10>;
    for (var k = 0u; k < N_STATS; k = k + 1u) {
        terms[k] = 0.0;
    }
    if (i < pp.n) {
        let m = mask[i];
        var w = 0.0;
        if (m != 0.0) {
            if (pp.aggregation == 0u) {
                w = m * scratch[0];
            } else {
                let cnt = scratch[1u + i / pp.t];
                let denom = scratch[0];
                w = m * select(0.0, 1.0 / (cnt * denom), cnt != 0.0 && denom > 0.0);
            }
        }
        var dl = 0.0;
        var dv = 0.0;
        var de = 0.0;
        if (w != 0.0) {
            // clipped surrogate, dual clip
            let a = advantages[i];
            let d = logp[i] - old_logp[i];
            let ratio = exp(d);
            let unclipped = -a * ratio;
            let clipped = -a * clamp(ratio, 1.0 - pp.clip_low, 1.0 + pp.clip_high);
            var pg = unclipped;
            var dpg = -a * ratio;
            var clip = 0.0;
            if (clipped > unclipped) {
                pg = clipped;
                dpg = 0.0;
                clip = 1.0;
            }
            var dual = 0.0;
            if (pp.dual_clip > 1.0 && a < 0.0) {
                let bound = -pp.dual_clip * a;
                if (bound < pg) {
                    pg = bound;
                    dpg = 0.0;
                    dual = 1.0;
                }
            }
            // value loss
            var vl = 0.0;
            var dvl = 0.0;
            var vclip = 0.0;
            if (pp.has_values != 0u) {
                let val = values[i];
                let old = old_values[i];
                let ret = returns[i];
                let err = val - ret;
                vl = 0.5 * err * err;
                dvl = err;
                if (pp.value_clip > 0.0) {
                    let delta = val - old;
                    let err_c = old + clamp(delta, -pp.value_clip, pp.value_clip) - ret;
                    if (err_c * err_c > err * err) {
                        vl = 0.5 * err_c * err_c;
                        dvl = select(0.0, err_c, abs(delta) < pp.value_clip);
                        vclip = 1.0;
                    }
                }
            }
            var ent = 0.0;
            if (pp.has_entropy != 0u) {
                ent = entropy[i];
            }
            var kl = 0.0;
            var dkl = 0.0;
            if (pp.has_ref != 0u) {
                let r = logp[i] - ref_logp[i];
                kl = kl_estimate(pp.kl_estimator, r);
                dkl = kl_estimate_grad(pp.kl_estimator, r);
            }
            let total = pg + pp.vf_coef * vl - pp.ent_coef * ent + pp.kl_coef * kl;
            dl = w * (dpg + pp.kl_coef * dkl);
            dv = w * pp.vf_coef * dvl;
            de = -w * pp.ent_coef;
            // approx KL(old || new) = expm1(d) - d = k3(-d)
            let approx_kl = k3_(-d);
            terms[0] = w * pg;
            terms[1] = w * vl;
            terms[2] = w * ent;
            terms[3] = w * clip;
            terms[4] = w * approx_kl;
            terms[5] = w * kl;
            terms[6] = w * total;
            terms[7] = w * vclip;
            terms[8] = w * dual;
            terms[9] = w;
        }
        dlogp[i] = dl;
        if (pp.has_values != 0u) {
            dvalues[i] = dv;
        }
        if (pp.has_entropy != 0u) {
            dentropy[i] = de;
        }
    }
    for (var k = 0u; k < N_STATS; k = k + 1u) {
        let s = wg_sum(terms[k], lid);
        if (lid == 0u && wgi < pp.n_tok_wg) {
            scratch[pp.stat_off + k * pp.n_tok_wg + wgi] = s;
        }
    }
}

// Pass 4 (one workgroup): stats[k] += the workgroup partials of slot k, in a fixed order.
@compute @workgroup_size(256)
fn ppo_loss_fwd_bwd_stats(@builtin(local_invocation_index) lid: u32) {
    for (var k = 0u; k < N_STATS; k = k + 1u) {
        var acc = 0.0;
        let base = pp.stat_off + k * pp.n_tok_wg;
        for (var j = lid; j < pp.n_tok_wg; j = j + WG) {
            acc = acc + scratch[base + j];
        }
        let total = wg_sum(acc, lid);
        if (lid == 0u) {
            stats[k] = stats[k] + total;
        }
    }
}
