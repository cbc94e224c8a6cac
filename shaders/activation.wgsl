// Activations, element-wise over [n]; one invocation per element, the 1-D grid folded into x
// and y. Backward recomputes from the saved inputs (nothing else is saved).
//
// gelu_fwd: out = 0.5 x (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2 / pi) (GPT-2's gelu_new)
// gelu_bwd: dinp = dout (0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 * 0.044715 x^2)), t = tanh(...)
// swiglu_fwd: out = silu(gate) up, silu(g) = g sigmoid(g)
// swiglu_bwd: dup = dout silu(gate), dgate = dout up sigmoid(g) (1 + g (1 - sigmoid(g)))
//
// tanh is computed as the CPU backend does, sign(u) (1 - e) / (1 + e) with e = exp(-2 |u|),
// which cannot overflow (WGSL's tanh may return NaN for large |u| on some drivers); sigmoid
// clamps the exponent to the range where exp is finite.

struct Params {
    n: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const GELU_S: f32 = 0.7978846;

fn safe_tanh(u: f32) -> f32 {
    let e = exp(-2.0 * abs(u));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, u < 0.0);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(clamp(-x, -87.3, 88.7)));
}

// ---- gelu_fwd: out, inp ----
@group(0) @binding(1) var<storage, read_write> gf_out: array<f32>;
@group(0) @binding(2) var<storage, read> gf_inp: array<f32>;

@compute @workgroup_size(256)
fn gelu_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        let x = gf_inp[i];
        let u = GELU_S * (x + 0.044715 * x * x * x);
        gf_out[i] = 0.5 * x * (1.0 + safe_tanh(u));
    }
}

// ---- gelu_bwd: dinp, dout, inp ----
@group(0) @binding(1) var<storage, read_write> gb_dinp: array<f32>;
@group(0) @binding(2) var<storage, read> gb_dout: array<f32>;
@group(0) @binding(3) var<storage, read> gb_inp: array<f32>;

@compute @workgroup_size(256)
fn gelu_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        let x = gb_inp[i];
        let u = GELU_S * (x + 0.044715 * x * x * x);
        let t = safe_tanh(u);
        let du = GELU_S * (1.0 + 3.0 * 0.044715 * x * x);
        gb_dinp[i] = gb_dout[i] * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
    }
}

// ---- swiglu_fwd: out, gate, up ----
@group(0) @binding(1) var<storage, read_write> sf_out: array<f32>;
@group(0) @binding(2) var<storage, read> sf_gate: array<f32>;
@group(0) @binding(3) var<storage, read> sf_up: array<f32>;

@compute @workgroup_size(256)
fn swiglu_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        let g = sf_gate[i];
        sf_out[i] = g * sigmoid(g) * sf_up[i];
    }
}

// ---- swiglu_bwd: dgate, dup, dout, gate, up ----
@group(0) @binding(1) var<storage, read_write> sb_dgate: array<f32>;
@group(0) @binding(2) var<storage, read_write> sb_dup: array<f32>;
@group(0) @binding(3) var<storage, read> sb_dout: array<f32>;
@group(0) @binding(4) var<storage, read> sb_gate: array<f32>;
@group(0) @binding(5) var<storage, read> sb_up: array<f32>;

@compute @workgroup_size(256)
fn swiglu_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        let g = sb_gate[i];
        let dy = sb_dout[i];
        let s = sigmoid(g);
        sb_dup[i] = dy * g * s;
        sb_dgate[i] = dy * sb_up[i] * s * (1.0 + g * (1.0 - s));
    }
}
