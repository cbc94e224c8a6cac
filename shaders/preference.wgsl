// The DPO family of preference losses: preference_loss_fwd_bwd (see PreferenceParams in
// src/backend/ops.rs and src/backend/cpu/preference.rs for the reference).
// Shapes: logp, mask, dlogp [2P, t], chosen rows 0 .. P then rejected rows P .. 2P (pair i is
// rows i and P + i); ref_sums [2P] (the cached reference sums; unused by SimPO); stats [6].
// Per row: s = sum_t mask logp, n = sum_t mask, d = max(n, 1) if length_norm else 1, a = s / d,
// ra = ref / d; h = (a_c - ra_c) - (a_r - ra_r);
//   sigmoid / cDPO: z = beta h, L = -(1-eps) log s(z) - eps log s(-z), dL/dh = beta (-(1-eps) s(-z) + eps s(z));
//   IPO: L = (h - 1/(2 beta))^2, dL/dh = 2 (h - 1/(2 beta));
//   SimPO: z = beta (a_c - a_r) - gamma, L and dL/dz as sigmoid, dL/d(a_c - a_r) = beta dL/dz.
// dlogp[c, :] = scale dL/dh mask / d_c, dlogp[r, :] = -scale dL/dh mask / d_r (overwritten);
// stats += [loss, correct pairs, chosen reward, rejected reward, margin, pairs] (unscaled sums),
// rewards beta (a - ra) (SimPO: beta a). Nothing is saved for backward.
//
// One dispatch of one workgroup of 256 invocations (pairs are few; each is two rows of t):
// invocation l takes pairs l, l + 256, ..., sums each row in token order in f32 (the CPU sums in
// f64: the difference is rounding), and the per-invocation stats are reduced over the workgroup
// in a fixed order; invocation 0 adds them to stats.
// Uniform: PreferenceParams. Bindings: 1 dlogp, 2 stats, 3 logp, 4 mask, 5 ref_sums.

struct PrefU {
    pairs: u32,
    t: u32,
    loss_type: u32,
    length_norm: u32,
    beta: f32,
    label_smoothing: f32,
    simpo_gamma: f32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> pp: PrefU;
@group(0) @binding(1) var<storage, read_write> dlogp: array<f32>;
@group(0) @binding(2) var<storage, read_write> pstats: array<f32>;
@group(0) @binding(3) var<storage, read> logp: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read> ref_sums: array<f32>;

const IPO: u32 = 1u;
const SIMPO: u32 = 2u;

// log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)): no overflow for any x.
fn log_sigmoid(x: f32) -> f32 {
    return min(x, 0.0) - log(1.0 + exp(-abs(x)));
}

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// (masked sum, masked count) of row k
fn row_sums(k: u32) -> vec2<f32> {
    var s = 0.0;
    var n = 0.0;
    for (var j = 0u; j < pp.t; j = j + 1u) {
        let m = mask[k * pp.t + j];
        if (m != 0.0) {
            s = s + m * logp[k * pp.t + j];
            n = n + m;
        }
    }
    return vec2<f32>(s, n);
}

fn write_row(k: u32, g: f32) {
    for (var j = 0u; j < pp.t; j = j + 1u) {
        dlogp[k * pp.t + j] = g * mask[k * pp.t + j];
    }
}

@compute @workgroup_size(256)
fn preference_loss_fwd_bwd(@builtin(local_invocation_index) lid: u32) {
    var loss = 0.0;
    var correct = 0.0;
    var chosen = 0.0;
    var rejected = 0.0;
    var margin = 0.0;
    var pairs = 0.0;
    let beta = pp.beta;
    let eps = pp.label_smoothing;
    for (var i = lid; i < pp.pairs; i = i + WG) {
        let c = i;
        let r = pp.pairs + i;
        let sc = row_sums(c);
        let sr = row_sums(r);
        var d_c = 1.0;
        var d_r = 1.0;
        if (pp.length_norm != 0u) {
            d_c = max(sc.y, 1.0);
            d_r = max(sr.y, 1.0);
        }
        let a_c = sc.x / d_c;
        let a_r = sr.x / d_r;
        var l = 0.0;
        var dh = 0.0;
        var rc = 0.0;
        var rr = 0.0;
        if (pp.loss_type == SIMPO) {
            let z = beta * (a_c - a_r) - pp.simpo_gamma;
            l = -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
            dh = beta * (-(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z));
            rc = beta * a_c;
            rr = beta * a_r;
        } else {
            let ra_c = ref_sums[c] / d_c;
            let ra_r = ref_sums[r] / d_r;
            let h = (a_c - ra_c) - (a_r - ra_r);
            if (pp.loss_type == IPO) {
                let dd = h - 1.0 / (2.0 * beta);
                l = dd * dd;
                dh = 2.0 * dd;
            } else {
                let z = beta * h;
                l = -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
                dh = beta * (-(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z));
            }
            rc = beta * (a_c - ra_c);
            rr = beta * (a_r - ra_r);
        }
        write_row(c, pp.scale * dh / d_c);
        write_row(r, -pp.scale * dh / d_r);
        loss = loss + l;
        if (rc > rr) {
            correct = correct + 1.0;
        }
        chosen = chosen + rc;
        rejected = rejected + rr;
        margin = margin + (rc - rr);
        pairs = pairs + 1.0;
    }
    let t_loss = wg_sum(loss, lid);
    let t_correct = wg_sum(correct, lid);
    let t_chosen = wg_sum(chosen, lid);
    let t_rejected = wg_sum(rejected, lid);
    let t_margin = wg_sum(margin, lid);
    let t_pairs = wg_sum(pairs, lid);
    if (lid == 0u) {
        pstats[0] = pstats[0] + t_loss;
        pstats[1] = pstats[1] + t_correct;
        pstats[2] = pstats[2] + t_chosen;
        pstats[3] = pstats[3] + t_rejected;
        pstats[4] = pstats[4] + t_margin;
        pstats[5] = pstats[5] + t_pairs;
    }
}
