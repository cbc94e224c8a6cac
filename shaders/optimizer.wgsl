// Optimiser ops over one parameter tensor [n].
//
// sum_squares: acc[0] += sum_i x[i]^2. Deterministic (fixed order for a given n and adapter):
//   small n: one workgroup (`sum_squares`) strides over x, wg_sum, invocation 0 adds to acc[0];
//   large n: `sum_squares_partial` (workgroup g sums the contiguous chunk g of `chunk` elements
//   into partial[g]), then `sum_squares_final` (one workgroup) adds the partials to acc[0].
//   f32 accumulation (the CPU backend sums in f64).
// adamw (global-norm clipping fused in): norm_sq [1] is read on the device; when it is not finite
//   (tested on its bits: WGSL may assume floats are finite) nothing is written (the step is
//   skipped); otherwise g = grad * s with s = min(1, max_grad_norm / (sqrt(norm_sq) + 1e-6)) when
//   max_grad_norm > 0, else s = 1 (grad itself is only read), and
//   m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p).
//   One invocation per element.
// Nothing is saved: m and v are the optimiser state, updated in place.

// ---- sum_squares (binding 1 acc, 2 x) and its two-stage variant ----
struct SumParams {
    n: u32,
    _pad: u32,
    // sum_squares_partial: elements per workgroup; sum_squares_final: number of partials
    chunk: u32,
    parts: u32,
}

@group(0) @binding(0) var<uniform> ps: SumParams;
@group(0) @binding(1) var<storage, read_write> ss_acc: array<f32>;
@group(0) @binding(2) var<storage, read> ss_x: array<f32>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < ps.n; i = i + WG) {
        let x = ss_x[i];
        s = s + x * x;
    }
    let total = wg_sum(s, lid);
    if (lid == 0u) {
        ss_acc[0] = ss_acc[0] + total;
    }
}

// partial (binding 1, one value per workgroup), x (binding 2)
@compute @workgroup_size(256)
fn sum_squares_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let i0 = g * ps.chunk;
    let i1 = min(ps.n, i0 + ps.chunk);
    var s = 0.0;
    for (var i = i0 + lid; i < i1; i = i + WG) {
        let x = ss_x[i];
        s = s + x * x;
    }
    let total = wg_sum(s, lid);
    if (lid == 0u) {
        ss_acc[g] = total;
    }
}

// acc (binding 1), partials (binding 3)
@group(0) @binding(3) var<storage, read> ss_parts: array<f32>;

@compute @workgroup_size(256)
fn sum_squares_final(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < ps.parts; i = i + WG) {
        s = s + ss_parts[i];
    }
    let total = wg_sum(s, lid);
    if (lid == 0u) {
        ss_acc[0] = ss_acc[0] + total;
    }
}

// ---- adamw: param, m, v, grad, norm_sq ----
struct AdamWParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    max_grad_norm: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> pa: AdamWParams;
@group(0) @binding(1) var<storage, read_write> aw_param: array<f32>;
@group(0) @binding(2) var<storage, read_write> aw_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> aw_v: array<f32>;
@group(0) @binding(4) var<storage, read> aw_grad: array<f32>;
@group(0) @binding(5) var<storage, read> aw_norm_sq: array<f32>;

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    let norm_sq = aw_norm_sq[0];
    // exponent all ones: an infinity or a NaN
    if (i >= pa.n || (bitcast<u32>(norm_sq) & 0x7f800000u) == 0x7f800000u) {
        return;
    }
    var s = 1.0;
    if (pa.max_grad_norm > 0.0) {
        s = min(pa.max_grad_norm / (sqrt(norm_sq) + 1e-6), 1.0);
    }
    let g = aw_grad[i] * s;
    let m = pa.beta1 * aw_m[i] + (1.0 - pa.beta1) * g;
    let v = pa.beta2 * aw_v[i] + (1.0 - pa.beta2) * g * g;
    aw_m[i] = m;
    aw_v[i] = v;
    let mhat = m / pa.bias_correction1;
    let vhat = v / pa.bias_correction2;
    let w = aw_param[i];
    aw_param[i] = w - pa.lr * (mhat / (sqrt(vhat) + pa.eps) + pa.weight_decay * w);
}
