// Softmax cross-entropy over [n, v] logits with i32 targets [n] (negative = no loss).
//
// cross_entropy_fwd: lse[i] = logsumexp(logits[i, :]), losses[i] = lse[i] - logits[i, t_i]
//   (0 where t_i < 0); saves lse [n]. One workgroup of 256 per row (rows folded into x and y):
//   each invocation keeps an online (max, sum of exp) over its strided elements, one pass over
//   the row; the workgroup combines them with wg_max and wg_sum. Rows of v <= 1024 take
//   `cross_entropy_fwd_rows` instead: one invocation per row (the same online pass, in order).
// cross_entropy_bwd: dlogits[i, j] = dlosses[i] (exp(logits[i, j] - lse[i]) - [j == t_i]),
//   0 on rows with t_i < 0; overwritten. One invocation per element (the saved lse makes it
//   element-wise).
// A target >= v (an error on the CPU backend; targets are not read back to check them) gives a
// NaN loss and a NaN gradient row, so that it cannot go unnoticed.

struct Params {
    n: u32,
    v: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const BIG: f32 = 3.402823e38;

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// ---- cross_entropy_fwd: losses, lse, logits, targets ----
@group(0) @binding(1) var<storage, read_write> f_losses: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_lse: array<f32>;
@group(0) @binding(3) var<storage, read> f_logits: array<f32>;
@group(0) @binding(4) var<storage, read> f_targets: array<i32>;

// Online (max, sum of exp relative to it) over the columns j0, j0 + step, ... < v of a row.
fn ce_online(base: u32, j0: u32, step: u32) -> vec2<f32> {
    var m = -BIG;
    var s = 0.0;
    for (var j = j0; j < p.v; j = j + step) {
        let x = f_logits[base + j];
        if (x > m) {
            s = s * exp(m - x) + 1.0;
            m = x;
        } else {
            s = s + exp(x - m);
        }
    }
    return vec2<f32>(m, s);
}

// Writes lse[row] = l and the row's loss.
fn ce_finish(row: u32, base: u32, l: f32) {
    f_lse[row] = l;
    let t = f_targets[row];
    var loss = 0.0;
    if (t >= 0) {
        if (u32(t) < p.v) {
            loss = l - f_logits[base + u32(t)];
        } else {
            loss = nan();
        }
    }
    f_losses[row] = loss;
}

@compute @workgroup_size(256)
fn cross_entropy_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) {
        return;
    }
    let base = row * p.v;
    let ms = ce_online(base, lid, WG);
    let gm = wg_max(ms.x, lid);
    let total = wg_sum(ms.y * exp(ms.x - gm), lid);
    if (lid == 0u) {
        ce_finish(row, base, gm + log(total));
    }
}

// Small rows (v <= 1024, chosen by the launcher): one invocation per row, 64 rows per workgroup,
// the online pass over the whole row in column order, no barriers.
@compute @workgroup_size(64)
fn cross_entropy_fwd_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg, 64u);
    if (row >= p.n) {
        return;
    }
    let base = row * p.v;
    let ms = ce_online(base, 0u, 1u);
    ce_finish(row, base, ms.x + log(ms.y));
}

// ---- cross_entropy_bwd: dlogits, dlosses, logits, lse, targets ----
@group(0) @binding(1) var<storage, read_write> b_dlogits: array<f32>;
@group(0) @binding(2) var<storage, read> b_dlosses: array<f32>;
@group(0) @binding(3) var<storage, read> b_logits: array<f32>;
@group(0) @binding(4) var<storage, read> b_lse: array<f32>;
@group(0) @binding(5) var<storage, read> b_targets: array<i32>;

@compute @workgroup_size(256)
fn cross_entropy_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg, 256u);
    let v = p.v;
    if (idx >= p.n * v) {
        return;
    }
    let row = idx / v;
    let j = idx - row * v;
    let t = b_targets[row];
    var d = 0.0;
    if (t >= 0) {
        let g = b_dlosses[row];
        d = g * exp(b_logits[idx] - b_lse[row]);
        if (u32(t) == j) {
            d = d - g;
        }
        if (u32(t) >= v) {
            d = nan();
        }
    }
    b_dlogits[idx] = d;
}
