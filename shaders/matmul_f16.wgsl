enable f16;

// Matmul with f16 operands (`--matmul-precision f16`): the product of matmul.wgsl,
//   out[b] (+)= alpha * op(a[b]) @ op(b[b]), row-major, the same MatmulParams uniform (then a_off,
//   b_off, out_off, _pad) and bindings (1 out [rw], 2 a, 3 b), buffers f32,
// with a and b rounded to f16 when they are staged into workgroup memory and every product
// accumulated in f32: out = alpha * sum_k f32(f16(a[i, k])) * f32(f16(b[k, j])) (+ out).
//
// Compiled only on adapters with SHADER_F16, as this file followed by matmul.wgsl (whose
// MatmulParams, bindings, operand loads load_a / load_b, staging slots stage_slot, register blocks
// fma_8x8 / fma_4x4 and stores store_8x8 / store_4x4 it uses) and the prelude.
//
// The entry points of matmul.wgsl with the suffix `_f16`, same tilings and layouts:
//   - `matmul_f16`, `matmul_nt_f16`, `matmul_tn_f16`, `matmul_tt_f16`: 128 x 128 output tile per
//     workgroup of 256 invocations, 8 x 8 outputs each, K tiles of 16 (twice matmul.wgsl's 8);
//   - `matmul_small_f16*`: 64 x 64 tiles, 4 x 4 outputs each, K tiles of 32 (twice 16).
//   The operand tiles are vec4<f16>, so the same 16 KiB of workgroup memory (two K-tile buffers
//   of 512 vec4<f16> per operand) holds a K tile twice as deep: half the barriers per k. Each
//   invocation loads two vec4 of each operand per K tile (as invocations t and t + 256 of
//   matmul.wgsl's loads), converts them to f16 and stores them; the next tile is loaded into
//   registers while the current one is multiplied (one barrier per K tile).
//   Every output is one f32 fma chain over k = 0, 1, ... in order in both tilings, so within this
//   mode a row of the result has the same bits whatever m is (batch invariance).
//   Edges load zeros and skip the stores. f16 has a 5-bit exponent: operands beyond +-65504
//   overflow and those below 6.1e-5 lose precision (subnormals; below 3e-8 they become 0).
//
// Nothing is saved for backward.

// The K-tile buffers: a at [0, 1024) (two buffers of 512: [k][m/4]), b at [1024, 2048) ([k][n/4]).
const HB: u32 = 1024u;
var<workgroup> hs: array<vec4<f16>, 2048>;

// What one invocation loads of one K tile: invocations t and t + 256's vec4 of a and of b.
struct Staged {
    a0: vec4<f32>,
    a1: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
}

fn fetch_h(ka: bool, kb: bool, bmn: u32, bk: u32, row0: u32, col0: u32, k0: u32, lid: u32, a_base: u32, b_base: u32) -> Staged {
    return Staged(
        load_a(ka, bmn, bk, row0, k0, lid, a_base),
        load_a(ka, bmn, bk, row0, k0, lid + 256u, a_base),
        load_b(kb, bmn, bk, col0, k0, lid, b_base),
        load_b(kb, bmn, bk, col0, k0, lid + 256u, b_base),
    );
}

// Rounds v to f16 and stores it at hs[base + stage_slot(..)] (matmul.wgsl's `put` in f16).
fn put_h(kc: bool, bmn: u32, bk: u32, base: u32, t: u32, v: vec4<f32>) {
    let s = stage_slot(kc, bmn, bk, t);
    let h = vec4<f16>(v);
    if (s.y == 4u) {
        hs[base + s.x] = h;
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        hs[base + s.x + j * (bmn / 4u)][s.y] = h[j];
    }
}

fn stage_h(ka: bool, kb: bool, bmn: u32, bk: u32, buf: u32, lid: u32, r: Staged) {
    put_h(ka, bmn, bk, buf, lid, r.a0);
    put_h(ka, bmn, bk, buf, lid + 256u, r.a1);
    put_h(kb, bmn, bk, HB + buf, lid, r.b0);
    put_h(kb, bmn, bk, HB + buf, lid + 256u, r.b1);
}

// Both tilings (`big`: 128 x 128 with K tiles of 16, else 64 x 64 with K tiles of 32); `big` is a
// constant at every call, so each entry point compiles to one of them.
fn mm_h(ta: bool, tb: bool, big: bool, lid: u32, wid: vec3<u32>) {
    let size = select(64u, 128u, big);
    let bk = select(32u, 16u, big);
    let row = size / 4u;
    let row0 = wid.y * size;
    let col0 = wid.x * size;
    let a_base = p.a_off + wid.z * p.stride_a;
    let b_base = p.b_off + wid.z * p.stride_b;
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc8: array<vec4<f32>, 16>;
    var acc4: array<vec4<f32>, 4>;
    let ntiles = (p.k + bk - 1u) / bk;
    var r = fetch_h(!ta, tb, size, bk, row0, col0, 0u, lid, a_base, b_base);
    stage_h(!ta, tb, size, bk, 0u, lid, r);
    workgroupBarrier();
    for (var t = 0u; t < ntiles; t = t + 1u) {
        let cur = (t & 1u) * 512u;
        let more = t + 1u < ntiles;
        if (more) {
            r = fetch_h(!ta, tb, size, bk, row0, col0, (t + 1u) * bk, lid, a_base, b_base);
        }
        for (var kk = 0u; kk < bk; kk = kk + 1u) {
            let o = cur + kk * row;
            let a0 = vec4<f32>(hs[o + ty]);
            let b0 = vec4<f32>(hs[HB + o + tx]);
            if (big) {
                fma_8x8(&acc8, a0, vec4<f32>(hs[o + 16u + ty]), b0, vec4<f32>(hs[HB + o + 16u + tx]));
            } else {
                fma_4x4(&acc4, a0, b0);
            }
        }
        if (more) {
            stage_h(!ta, tb, size, bk, 512u - cur, lid, r);
        }
        workgroupBarrier();
    }
    let obase = p.out_off + wid.z * p.stride_out;
    if (big) {
        store_8x8(&acc8, obase, row0 + ty * 4u, col0 + tx * 4u);
    } else {
        store_4x4(&acc4, obase, row0 + ty * 4u, col0 + tx * 4u);
    }
}

@compute @workgroup_size(256)
fn matmul_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(false, false, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_nt_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(false, true, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_tn_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(true, false, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_tt_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(true, true, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(false, false, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_nt_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(false, true, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_tn_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(true, false, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_tt_f16(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_h(true, true, false, lid, wid);
}
