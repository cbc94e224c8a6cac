// Element-wise ops over a flat [n]: fill, copy, add, add_inplace, scale_inplace.
// One invocation per element; the 1-D grid is folded into x and y (see flat_index).
// Uniform: ElementwiseParams { n, _pad } followed by the scalar argument of fill / scale_inplace.
// No backward state: these ops save nothing.

struct Params {
    n: u32,
    _pad: u32,
    // `value` of fill, `s` of scale_inplace
    scalar: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> in_a: array<f32>;
@group(0) @binding(3) var<storage, read> in_b: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        out[i] = p.scalar;
    }
}

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        out[i] = in_a[i];
    }
}

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        out[i] = in_a[i] + in_b[i];
    }
}

// acc (binding 1) += x (binding 2)
@compute @workgroup_size(256)
fn add_inplace(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        out[i] = out[i] + in_a[i];
    }
}

@compute @workgroup_size(256)
fn scale_inplace(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < p.n) {
        out[i] = out[i] * p.scalar;
    }
}
