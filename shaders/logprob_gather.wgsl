// logprob_gather: log-probability of the target token and entropy of the next-token distribution
// straight from the hidden states h [n, c] and the LM head w [v, c], with z = (h @ w^T) / T and
// p = softmax(z): logp[i] = z[i, t_i] - lse[i], entropy[i] = -sum_j p_ij log p_ij,
// lse[i] = logsumexp_j z_ij. Rows with a negative target get 0 everywhere and no gradient.
//
// The [n, v] logits never exist. The launcher streams the vocabulary in chunks of `chunk` rows of
// w (and the rows of h in passes of at most `rows` rows, so that the scratch stays bounded); per
// (pass, chunk) the tiled matmul (matmul.wgsl, with element offsets) writes the chunk's logits
// z [rows, cw] = alpha (h[r0..] @ w[j0..]^T), alpha = 1 / T, into a scratch buffer, then:
//
// logprob_gather_fwd (one workgroup of 256 per row): the chunk's (max m', sum e^(z - m') = s',
//   sum e^(z - m') (z - m') = u') are merged into the row's running (m, s, u) (online log-sum-exp:
//   M = max(m, m'), s <- e^(m-M) s + e^(m'-M) s', u <- e^(m-M) (u + (m-M) s) + e^(m'-M) (u' + (m'-M) s'));
//   the target's z is picked up by the chunk that holds it; after the last chunk
//   lse = m + ln s, entropy = ln s - u / s, logp = z_t - lse.
//   Bindings (fwd argument order, then scratch): 1 logp, 2 entropy, 3 lse [rw], 5 targets,
//   7 logits scratch, 8 running stats [3 rows] [rw].
//   Saved for backward: lse (and the entropy output).
//
// logprob_gather_bwd (one invocation per logit of the chunk): recomputed z -> dlogits in place,
//   with lp = z - lse, p = e^lp: dlogits = (dlogp (onehot - p) - dentropy p (lp + H)) / T, 0 on rows
//   with a negative target. Then the launcher's matmuls: dh[r0..] (+)= dlogits @ w[j0..] (the first
//   chunk overwrites) and dw[j0..] += dlogits^T @ h[r0..], in a fixed order (deterministic).
//   Bindings (bwd argument order, then scratch): 3 dlogp, 4 dentropy, 6 targets, 7 lse, 8 entropy,
//   10 logits scratch [rw].
//
// Uniform: LogprobParams, then r0 (first row of the pass), rows, j0 (first vocabulary row of the
// chunk), cw (its width), first / last (chunk flags), inv_t (1 / temperature, from the host).

struct Params {
    n: u32,
    c: u32,
    v: u32,
    chunk: u32,
    temperature: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // appended by the launcher
    r0: u32,
    rows: u32,
    j0: u32,
    cw: u32,
    first: u32,
    last: u32,
    inv_t: f32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward
@group(0) @binding(1) var<storage, read_write> logp: array<f32>;
@group(0) @binding(2) var<storage, read_write> entropy_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse_out: array<f32>;
@group(0) @binding(5) var<storage, read> targets_fwd: array<i32>;
@group(0) @binding(7) var<storage, read> logits: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;

// backward
@group(0) @binding(3) var<storage, read> dlogp: array<f32>;
@group(0) @binding(4) var<storage, read> dentropy: array<f32>;
@group(0) @binding(6) var<storage, read> targets_bwd: array<i32>;
@group(0) @binding(7) var<storage, read> lse_in: array<f32>;
@group(0) @binding(8) var<storage, read> entropy_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> dz: array<f32>;

var<workgroup> row_target: i32;

@compute @workgroup_size(256)
fn logprob_gather_fwd(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let gr = p.r0 + r;
    if (lid == 0u) {
        row_target = targets_fwd[gr];
    }
    let t = workgroupUniformLoad(&row_target);
    if (t < 0) {
        if (lid == 0u && p.last != 0u) {
            logp[gr] = 0.0;
            entropy_out[gr] = 0.0;
            lse_out[gr] = 0.0;
        }
        return;
    }
    let cw = p.cw;
    let base = r * cw;
    var mx = bitcast<f32>(0xff800000u); // -inf
    for (var j = lid; j < cw; j = j + 256u) {
        mx = max(mx, logits[base + j]);
    }
    let m1 = wg_max(mx, lid);
    var s = 0.0;
    var u = 0.0;
    for (var j = lid; j < cw; j = j + 256u) {
        let d = logits[base + j] - m1;
        let e = exp(d);
        s = s + e;
        u = u + e * d;
    }
    let s1 = wg_sum(s, lid);
    let u1 = wg_sum(u, lid);
    if (lid != 0u) {
        return;
    }
    if (p.first != 0u) {
        logp[gr] = 0.0;
    }
    let tu = u32(t);
    if (tu >= p.j0 && tu < p.j0 + cw) {
        logp[gr] = logits[base + tu - p.j0];
    }
    var m = m1;
    var ss = s1;
    var uu = u1;
    if (p.first == 0u) {
        let m0 = stats[r * 3u];
        let s0 = stats[r * 3u + 1u];
        let u0 = stats[r * 3u + 2u];
        m = max(m0, m1);
        let a0 = exp(m0 - m);
        let a1 = exp(m1 - m);
        uu = a0 * (u0 + (m0 - m) * s0) + a1 * (u1 + (m1 - m) * s1);
        ss = a0 * s0 + a1 * s1;
    }
    if (p.last != 0u) {
        let l = m + log(ss);
        lse_out[gr] = l;
        entropy_out[gr] = log(ss) - uu / ss;
        logp[gr] = logp[gr] - l;
    } else {
        stats[r * 3u] = m;
        stats[r * 3u + 1u] = ss;
        stats[r * 3u + 2u] = uu;
    }
}

@compute @workgroup_size(256)
fn logprob_gather_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    let cw = p.cw;
    if (i >= p.rows * cw) {
        return;
    }
    let r = i / cw;
    let jj = i % cw;
    let gr = p.r0 + r;
    let t = targets_bwd[gr];
    if (t < 0) {
        dz[i] = 0.0;
        return;
    }
    let lp = dz[i] - lse_in[gr];
    let pz = exp(lp);
    let g = dlogp[gr];
    var d = -pz * (g + dentropy[gr] * (lp + entropy_in[gr])) * p.inv_t;
    if (u32(t) == p.j0 + jj) {
        d = d + g * p.inv_t;
    }
    dz[i] = d;
}
