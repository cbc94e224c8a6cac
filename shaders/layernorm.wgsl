// LayerNorm and RMSNorm over the last dimension of an [n, c] matrix.
//
// layernorm_fwd: out = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) (biased
//   variance); saves mean [n] and rstd [n] for backward.
// rmsnorm_fwd:   out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps); saves rstd [n].
// Backward, with xhat = (x - mean) * rstd (RMSNorm: no mean) and g = dout * weight:
//   layernorm: dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))      (overwritten)
//   rmsnorm:   dinp = rstd * (g - xhat * mean(g * xhat))                (overwritten)
//   dweight += sum_rows dout * xhat, dbias += sum_rows dout              (accumulated)
//
// Row kernels (forward, dinp): one workgroup of 256 per row (rows folded into x and y of the
// grid), statistics with the prelude's wg_sum in f32 (two passes: mean, then the centred
// variance). Small-row variants (`*_rows`, chosen by the launcher for c <= SMALL_C = 256): one
// invocation per row, 64 rows per workgroup (rows as a 1-D grid folded into x and y), sequential
// f32 sums over the row in column order, no workgroup barriers; the same two-pass statistics.
// Both variants are batch-invariant (a row's result depends on that row only). Parameter gradients, deterministic without atomics: `norm_dw_partial` sums
// `rows_per_chunk` consecutive rows per (column, chunk) in row order into a scratch
// [chunks, 2, c] (dweight part, dbias part), then `norm_dw_final` adds the chunk partials in
// chunk order to dweight (and dbias). Both recompute xhat from inp, mean and rstd.

struct Params {
    n: u32,
    c: u32,
    eps: f32,
    _pad: u32,
    // extra fields of the parameter-gradient passes
    rows_per_chunk: u32,
    chunks: u32,
    // 1: layernorm (mean and dbias), 0: rmsnorm
    has_mean: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- layernorm_fwd: out, mean, rstd, inp, weight, bias ----
@group(0) @binding(1) var<storage, read_write> lf_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> lf_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> lf_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> lf_inp: array<f32>;
@group(0) @binding(5) var<storage, read> lf_weight: array<f32>;
@group(0) @binding(6) var<storage, read> lf_bias: array<f32>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The per-row loops below visit columns j0, j0 + step, ... < c: (lid, WG) in the workgroup-per-row
// kernels (their partial sums then go through wg_sum), (0, 1) in the one-invocation-per-row
// `*_rows` kernels (the whole row in column order).

fn lf_sum(base: u32, j0: u32, step: u32) -> f32 {
    var s = 0.0;
    for (var j = j0; j < p.c; j = j + step) {
        s = s + lf_inp[base + j];
    }
    return s;
}

fn lf_centred_sq(base: u32, j0: u32, step: u32, mu: f32) -> f32 {
    var v = 0.0;
    for (var j = j0; j < p.c; j = j + step) {
        let d = lf_inp[base + j] - mu;
        v = v + d * d;
    }
    return v;
}

fn lf_write(base: u32, j0: u32, step: u32, mu: f32, rs: f32) {
    for (var j = j0; j < p.c; j = j + step) {
        lf_out[base + j] = (lf_inp[base + j] - mu) * rs * lf_weight[j] + lf_bias[j];
    }
}

@compute @workgroup_size(256)
fn layernorm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let mu = wg_sum(lf_sum(base, lid, WG), lid) / f32(p.c);
    let rs = 1.0 / sqrt(wg_sum(lf_centred_sq(base, lid, WG, mu), lid) / f32(p.c) + p.eps);
    lf_write(base, lid, WG, mu, rs);
    if (lid == 0u) {
        lf_mean[row] = mu;
        lf_rstd[row] = rs;
    }
}

@compute @workgroup_size(64)
fn layernorm_fwd_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg, 64u);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let mu = lf_sum(base, 0u, 1u) / f32(p.c);
    let rs = 1.0 / sqrt(lf_centred_sq(base, 0u, 1u, mu) / f32(p.c) + p.eps);
    lf_write(base, 0u, 1u, mu, rs);
    lf_mean[row] = mu;
    lf_rstd[row] = rs;
}

// ---- layernorm_bwd: dinp, dweight, dbias, dout, inp, mean, rstd, weight (dinp only here) ----
@group(0) @binding(1) var<storage, read_write> lb_dinp: array<f32>;
@group(0) @binding(4) var<storage, read> lb_dout: array<f32>;
@group(0) @binding(5) var<storage, read> lb_inp: array<f32>;
@group(0) @binding(6) var<storage, read> lb_mean: array<f32>;
@group(0) @binding(7) var<storage, read> lb_rstd: array<f32>;
@group(0) @binding(8) var<storage, read> lb_weight: array<f32>;

// (sum g, sum g xhat) over the visited columns
fn lb_sums(base: u32, j0: u32, step: u32, mu: f32, rs: f32) -> vec2<f32> {
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = j0; j < p.c; j = j + step) {
        let xhat = (lb_inp[base + j] - mu) * rs;
        let g = lb_dout[base + j] * lb_weight[j];
        sg = sg + g;
        sgx = sgx + g * xhat;
    }
    return vec2<f32>(sg, sgx);
}

fn lb_write(base: u32, j0: u32, step: u32, mu: f32, rs: f32, mg: f32, mgx: f32) {
    for (var j = j0; j < p.c; j = j + step) {
        let xhat = (lb_inp[base + j] - mu) * rs;
        lb_dinp[base + j] = rs * (lb_dout[base + j] * lb_weight[j] - mg - xhat * mgx);
    }
}

@compute @workgroup_size(256)
fn layernorm_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let mu = lb_mean[row];
    let rs = lb_rstd[row];
    let s = lb_sums(base, lid, WG, mu, rs);
    let mg = wg_sum(s.x, lid) / f32(p.c);
    let mgx = wg_sum(s.y, lid) / f32(p.c);
    lb_write(base, lid, WG, mu, rs, mg, mgx);
}

@compute @workgroup_size(64)
fn layernorm_bwd_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg, 64u);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let mu = lb_mean[row];
    let rs = lb_rstd[row];
    let s = lb_sums(base, 0u, 1u, mu, rs) / f32(p.c);
    lb_write(base, 0u, 1u, mu, rs, s.x, s.y);
}

// ---- rmsnorm_fwd: out, rstd, inp, weight ----
@group(0) @binding(1) var<storage, read_write> rf_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> rf_rstd: array<f32>;
@group(0) @binding(3) var<storage, read> rf_inp: array<f32>;
@group(0) @binding(4) var<storage, read> rf_weight: array<f32>;

fn rf_sq(base: u32, j0: u32, step: u32) -> f32 {
    var s = 0.0;
    for (var j = j0; j < p.c; j = j + step) {
        let x = rf_inp[base + j];
        s = s + x * x;
    }
    return s;
}

fn rf_write(base: u32, j0: u32, step: u32, rs: f32) {
    for (var j = j0; j < p.c; j = j + step) {
        rf_out[base + j] = rf_inp[base + j] * rs * rf_weight[j];
    }
}

@compute @workgroup_size(256)
fn rmsnorm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let rs = 1.0 / sqrt(wg_sum(rf_sq(base, lid, WG), lid) / f32(p.c) + p.eps);
    rf_write(base, lid, WG, rs);
    if (lid == 0u) {
        rf_rstd[row] = rs;
    }
}

@compute @workgroup_size(64)
fn rmsnorm_fwd_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg, 64u);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let rs = 1.0 / sqrt(rf_sq(base, 0u, 1u) / f32(p.c) + p.eps);
    rf_write(base, 0u, 1u, rs);
    rf_rstd[row] = rs;
}

// ---- rmsnorm_bwd: dinp, dweight, dout, inp, rstd, weight (dinp only here) ----
@group(0) @binding(1) var<storage, read_write> rb_dinp: array<f32>;
@group(0) @binding(3) var<storage, read> rb_dout: array<f32>;
@group(0) @binding(4) var<storage, read> rb_inp: array<f32>;
@group(0) @binding(5) var<storage, read> rb_rstd: array<f32>;
@group(0) @binding(6) var<storage, read> rb_weight: array<f32>;

// sum g xhat over the visited columns
fn rb_sum(base: u32, j0: u32, step: u32, rs: f32) -> f32 {
    var sgx = 0.0;
    for (var j = j0; j < p.c; j = j + step) {
        sgx = sgx + rb_dout[base + j] * rb_weight[j] * rb_inp[base + j] * rs;
    }
    return sgx;
}

fn rb_write(base: u32, j0: u32, step: u32, rs: f32, mgx: f32) {
    for (var j = j0; j < p.c; j = j + step) {
        let x = rb_inp[base + j];
        rb_dinp[base + j] = rs * (rb_dout[base + j] * rb_weight[j] - x * rs * mgx);
    }
}

@compute @workgroup_size(256)
fn rmsnorm_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let rs = rb_rstd[row];
    rb_write(base, lid, WG, rs, wg_sum(rb_sum(base, lid, WG, rs), lid) / f32(p.c));
}

@compute @workgroup_size(64)
fn rmsnorm_bwd_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg, 64u);
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    let rs = rb_rstd[row];
    rb_write(base, 0u, 1u, rs, rb_sum(base, 0u, 1u, rs) / f32(p.c));
}

// ---- parameter gradients (both norms) ----
// norm_dw_partial: scratch, dout, inp, mean (rmsnorm: any read-only buffer, unused), rstd.
// Invocation (column j, chunk k = y of the grid) writes
//   scratch[(2 k) c + j]     = sum over its rows of dout * xhat
//   scratch[(2 k + 1) c + j] = sum over its rows of dout        (layernorm only)
@group(0) @binding(1) var<storage, read_write> dw_scratch: array<f32>;
@group(0) @binding(2) var<storage, read> dw_dout: array<f32>;
@group(0) @binding(3) var<storage, read> dw_inp: array<f32>;
@group(0) @binding(4) var<storage, read> dw_mean: array<f32>;
@group(0) @binding(5) var<storage, read> dw_rstd: array<f32>;

@compute @workgroup_size(256)
fn norm_dw_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let k = gid.y;
    let c = p.c;
    if (j >= c || k >= p.chunks) {
        return;
    }
    let r0 = k * p.rows_per_chunk;
    let r1 = min(p.n, r0 + p.rows_per_chunk);
    var aw = 0.0;
    var ab = 0.0;
    if (p.has_mean != 0u) {
        for (var i = r0; i < r1; i = i + 1u) {
            let dy = dw_dout[i * c + j];
            aw = aw + dy * ((dw_inp[i * c + j] - dw_mean[i]) * dw_rstd[i]);
            ab = ab + dy;
        }
        dw_scratch[(2u * k + 1u) * c + j] = ab;
    } else {
        for (var i = r0; i < r1; i = i + 1u) {
            aw = aw + dw_dout[i * c + j] * (dw_inp[i * c + j] * dw_rstd[i]);
        }
    }
    dw_scratch[2u * k * c + j] = aw;
}

// norm_dw_final: dweight, dbias (rmsnorm: norm_dw_final_rms without it), scratch.
@group(0) @binding(1) var<storage, read_write> fin_dweight: array<f32>;
@group(0) @binding(2) var<storage, read_write> fin_dbias: array<f32>;
@group(0) @binding(3) var<storage, read> fin_scratch: array<f32>;

@compute @workgroup_size(256)
fn norm_dw_final(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let c = p.c;
    if (j >= c) {
        return;
    }
    var aw = 0.0;
    var ab = 0.0;
    for (var k = 0u; k < p.chunks; k = k + 1u) {
        aw = aw + fin_scratch[2u * k * c + j];
        ab = ab + fin_scratch[(2u * k + 1u) * c + j];
    }
    fin_dweight[j] = fin_dweight[j] + aw;
    fin_dbias[j] = fin_dbias[j] + ab;
}

@group(0) @binding(1) var<storage, read_write> finr_dweight: array<f32>;
@group(0) @binding(2) var<storage, read> finr_scratch: array<f32>;

@compute @workgroup_size(256)
fn norm_dw_final_rms(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let c = p.c;
    if (j >= c) {
        return;
    }
    var aw = 0.0;
    for (var k = 0u; k < p.chunks; k = k + 1u) {
        aw = aw + finr_scratch[2u * k * c + j];
    }
    finr_dweight[j] = finr_dweight[j] + aw;
}
