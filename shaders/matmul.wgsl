// Matmul and bias.
//
// matmul: out[b] (+)= alpha * op(a[b]) @ op(b[b]) for b < batch (the z grid dimension), row-major,
//   op(a) [m, k] (stored [k, m] when trans_a), op(b) [k, n] (stored [n, k] when trans_b); batch
//   matrices are stride_a / stride_b / stride_out elements apart (0 broadcasts one matrix), and
//   a_off / b_off / out_off (appended by the launcher) are element offsets of the first ones, so
//   that logprob_gather can multiply by a block of rows of a matrix in place.
//   Uniform: MatmulParams, then a_off, b_off, out_off, _pad.
//   Bindings: 1 out [rw], 2 a, 3 b.
//   Two tilings, with one entry point per storage layout ((trans_a, trans_b) = nn, nt, tn, tt) so
//   that every global load runs along the dimension that is contiguous in memory:
//   - `matmul`, `matmul_nt`, `matmul_tn`, `matmul_tt`: 128 x 128 output tile per workgroup of
//     256 invocations (16 x 16), each holding an 8 x 8 block of outputs in registers (rows
//     ty*4.., 64+ty*4.., columns tx*4.., 64+tx*4.., so that the vec4 reads of workgroup memory are
//     consecutive across invocations); K tiles of 8, staged as [k][m/4] and [k][n/4] vec4 arrays
//     in double-buffered workgroup memory (16 KiB), with the next K tile loaded into registers
//     while the current one is multiplied (one barrier per K tile);
//   - `matmul_small*`: 64 x 64 tiles, 4 x 4 outputs per invocation, K tiles of 16 (the same
//     16 KiB), for products whose 128 x 128 grid would leave a large GPU mostly idle.
//   Every output element is one fma chain over k = 0, 1, ... in order, in both tilings: a row of
//   the result has the same bits whatever m is, whichever tiling runs (batch invariance).
//   Edges (m, n, k not multiples of the tile) load zeros and skip the stores.
//
// bias_add: out[i, j] += bias[j] over [n, c], one invocation per element.
// bias_bwd: dbias[j] += sum_i dout[i, j]; a workgroup per 8 columns, 32 row lanes per column each
//   summing rows lane, lane + 32, ... (4 accumulators, fixed order), then a fixed tree over the
//   lanes: deterministic, no atomics.
//   Uniform: BiasParams { n, c }. Bindings: 1 out / dbias [rw], 2 bias / dout.
//
// Nothing is saved for backward: a linear layer's backward is two more matmuls (with transposes)
// and bias_bwd.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,
    trans_b: u32,
    accumulate: u32,
    alpha: f32,
    stride_a: u32,
    stride_b: u32,
    stride_out: u32,
    _pad: u32,
    // appended by the launcher
    a_off: u32,
    b_off: u32,
    out_off: u32,
    _pad1: u32,
}

struct BiasParams {
    n: u32,
    c: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(0) var<uniform> pb: BiasParams;
@group(0) @binding(1) var<storage, read_write> mm_out: array<f32>;
@group(0) @binding(2) var<storage, read> mm_a: array<f32>;
@group(0) @binding(3) var<storage, read> mm_b: array<f32>;

// The K-tile buffers: a at [0, 512) (two buffers of 256 vec4: [k][m/4]), b at [SB, SB + 512)
// ([k][n/4]).
const SB: u32 = 512u;
var<workgroup> ss: array<vec4<f32>, 1024>;

// ---- tile loads ---------------------------------------------------------------------------------
// An operand tile is `bmn` rows (along m for a, n for b) by `bk` columns (along k), 1024 values:
// invocation t loads 4 of them that are consecutive in memory. `kc`: the operand is stored with k
// contiguous ([m][k] for a, [n][k] for b); otherwise [k][m] / [k][n]. `mn` is m or n.

fn load_a(kc: bool, bmn: u32, bk: u32, r0: u32, k0: u32, t: u32, base: u32) -> vec4<f32> {
    let mn = p.m;
    let kd = p.k;
    var v = vec4<f32>(0.0);
    if (kc) {
        let g = bk / 4u;
        let i = r0 + t / g;
        let kk = k0 + (t % g) * 4u;
        if (i < mn) {
            let at = base + i * kd + kk;
            if (kk < kd) { v.x = mm_a[at]; }
            if (kk + 1u < kd) { v.y = mm_a[at + 1u]; }
            if (kk + 2u < kd) { v.z = mm_a[at + 2u]; }
            if (kk + 3u < kd) { v.w = mm_a[at + 3u]; }
        }
    } else {
        let g = bmn / 4u;
        let kk = k0 + t / g;
        let i = r0 + (t % g) * 4u;
        if (kk < kd) {
            let at = base + kk * mn + i;
            if (i < mn) { v.x = mm_a[at]; }
            if (i + 1u < mn) { v.y = mm_a[at + 1u]; }
            if (i + 2u < mn) { v.z = mm_a[at + 2u]; }
            if (i + 3u < mn) { v.w = mm_a[at + 3u]; }
        }
    }
    return v;
}

fn load_b(kc: bool, bmn: u32, bk: u32, r0: u32, k0: u32, t: u32, base: u32) -> vec4<f32> {
    let mn = p.n;
    let kd = p.k;
    var v = vec4<f32>(0.0);
    if (kc) {
        let g = bk / 4u;
        let i = r0 + t / g;
        let kk = k0 + (t % g) * 4u;
        if (i < mn) {
            let at = base + i * kd + kk;
            if (kk < kd) { v.x = mm_b[at]; }
            if (kk + 1u < kd) { v.y = mm_b[at + 1u]; }
            if (kk + 2u < kd) { v.z = mm_b[at + 2u]; }
            if (kk + 3u < kd) { v.w = mm_b[at + 3u]; }
        }
    } else {
        let g = bmn / 4u;
        let kk = k0 + t / g;
        let i = r0 + (t % g) * 4u;
        if (kk < kd) {
            let at = base + kk * mn + i;
            if (i < mn) { v.x = mm_b[at]; }
            if (i + 1u < mn) { v.y = mm_b[at + 1u]; }
            if (i + 2u < mn) { v.z = mm_b[at + 2u]; }
            if (i + 3u < mn) { v.w = mm_b[at + 3u]; }
        }
    }
    return v;
}

// Where invocation t's loaded vec4 goes in a K tile of `bmn / 4` vec4 per k: (x, 4) stores the
// whole vec4 at x (the operand is stored [k][m] / [k][n]); (x, c) with c < 4 scatters its four
// values (consecutive k) to component c of x, x + bmn / 4, x + 2 bmn / 4, x + 3 bmn / 4.
// Shared with matmul_f16.wgsl.
fn stage_slot(kc: bool, bmn: u32, bk: u32, t: u32) -> vec2<u32> {
    let row = bmn / 4u;
    if (kc) {
        let g = bk / 4u;
        let i = t / g;
        return vec2<u32>((t % g) * 4u * row + i / 4u, i % 4u);
    }
    let g = bmn / 4u;
    return vec2<u32>((t / g) * row + t % g, 4u);
}

// Stores what load_a / load_b returned for invocation t at ss[base + stage_slot(..)]: base is the
// K-tile buffer (0 or 256) of a, or SB + that of b.
fn put(kc: bool, bmn: u32, bk: u32, base: u32, t: u32, v: vec4<f32>) {
    let s = stage_slot(kc, bmn, bk, t);
    if (s.y == 4u) {
        ss[base + s.x] = v;
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        ss[base + s.x + j * (bmn / 4u)][s.y] = v[j];
    }
}

// out[row, col0 .. col0 + 4] (+)= alpha * acc, clipped to the matrix.
fn store4(obase: u32, row: u32, col0: u32, acc: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    let at = obase + row * p.n + col0;
    var v = p.alpha * acc;
    if (col0 + 3u < p.n) {
        if (p.accumulate != 0u) {
            v = vec4<f32>(mm_out[at], mm_out[at + 1u], mm_out[at + 2u], mm_out[at + 3u]) + v;
        }
        mm_out[at] = v.x;
        mm_out[at + 1u] = v.y;
        mm_out[at + 2u] = v.z;
        mm_out[at + 3u] = v.w;
        return;
    }
    let acc_on = p.accumulate != 0u;
    if (col0 < p.n) {
        mm_out[at] = select(0.0, mm_out[at], acc_on) + v.x;
    }
    if (col0 + 1u < p.n) {
        mm_out[at + 1u] = select(0.0, mm_out[at + 1u], acc_on) + v.y;
    }
    if (col0 + 2u < p.n) {
        mm_out[at + 2u] = select(0.0, mm_out[at + 2u], acc_on) + v.z;
    }
}

// ---- register blocks (shared with matmul_f16.wgsl) ----------------------------------------------
// The 128 x 128 tiling's 8 x 8 block of one invocation: acc[2 i + h] holds row
// (i < 4 ? r + i : r + 60 + i), columns c + h * 64 .. + 4, for r = row0 + ty * 4, c = col0 + tx * 4.

// One k step: acc += [a0, a1] (the block's rows) x [b0, b1] (its columns), one fma per output.
fn fma_8x8(acc: ptr<function, array<vec4<f32>, 16>>, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a0.x), b0, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a0.x), b1, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a0.y), b0, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a0.y), b1, (*acc)[3]);
    (*acc)[4] = fma(vec4<f32>(a0.z), b0, (*acc)[4]);
    (*acc)[5] = fma(vec4<f32>(a0.z), b1, (*acc)[5]);
    (*acc)[6] = fma(vec4<f32>(a0.w), b0, (*acc)[6]);
    (*acc)[7] = fma(vec4<f32>(a0.w), b1, (*acc)[7]);
    (*acc)[8] = fma(vec4<f32>(a1.x), b0, (*acc)[8]);
    (*acc)[9] = fma(vec4<f32>(a1.x), b1, (*acc)[9]);
    (*acc)[10] = fma(vec4<f32>(a1.y), b0, (*acc)[10]);
    (*acc)[11] = fma(vec4<f32>(a1.y), b1, (*acc)[11]);
    (*acc)[12] = fma(vec4<f32>(a1.z), b0, (*acc)[12]);
    (*acc)[13] = fma(vec4<f32>(a1.z), b1, (*acc)[13]);
    (*acc)[14] = fma(vec4<f32>(a1.w), b0, (*acc)[14]);
    (*acc)[15] = fma(vec4<f32>(a1.w), b1, (*acc)[15]);
}

// Stores the 8 x 8 block (constant indices only: acc stays in registers).
fn store_8x8(acc: ptr<function, array<vec4<f32>, 16>>, obase: u32, r: u32, c: u32) {
    store4(obase, r, c, (*acc)[0]);
    store4(obase, r, c + 64u, (*acc)[1]);
    store4(obase, r + 1u, c, (*acc)[2]);
    store4(obase, r + 1u, c + 64u, (*acc)[3]);
    store4(obase, r + 2u, c, (*acc)[4]);
    store4(obase, r + 2u, c + 64u, (*acc)[5]);
    store4(obase, r + 3u, c, (*acc)[6]);
    store4(obase, r + 3u, c + 64u, (*acc)[7]);
    store4(obase, r + 64u, c, (*acc)[8]);
    store4(obase, r + 64u, c + 64u, (*acc)[9]);
    store4(obase, r + 65u, c, (*acc)[10]);
    store4(obase, r + 65u, c + 64u, (*acc)[11]);
    store4(obase, r + 66u, c, (*acc)[12]);
    store4(obase, r + 66u, c + 64u, (*acc)[13]);
    store4(obase, r + 67u, c, (*acc)[14]);
    store4(obase, r + 67u, c + 64u, (*acc)[15]);
}

// The 64 x 64 tiling's 4 x 4 block: acc[i] holds row r + i, columns c .. c + 4.
fn fma_4x4(acc: ptr<function, array<vec4<f32>, 4>>, a0: vec4<f32>, b0: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a0.x), b0, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a0.y), b0, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a0.z), b0, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a0.w), b0, (*acc)[3]);
}

fn store_4x4(acc: ptr<function, array<vec4<f32>, 4>>, obase: u32, r: u32, c: u32) {
    store4(obase, r, c, (*acc)[0]);
    store4(obase, r + 1u, c, (*acc)[1]);
    store4(obase, r + 2u, c, (*acc)[2]);
    store4(obase, r + 3u, c, (*acc)[3]);
}

// ---- 128 x 128 tiles, 8 x 8 per invocation, K tiles of 8 ----------------------------------------

fn mm_big(ta: bool, tb: bool, lid: u32, wid: vec3<u32>) {
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let a_base = p.a_off + wid.z * p.stride_a;
    let b_base = p.b_off + wid.z * p.stride_b;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // acc: the 8 x 8 block of fma_8x8
    var acc: array<vec4<f32>, 16>;
    let ntiles = (p.k + 7u) / 8u;
    var ra = load_a(!ta, 128u, 8u, row0, 0u, lid, a_base);
    var rb = load_b(tb, 128u, 8u, col0, 0u, lid, b_base);
    put(!ta, 128u, 8u, 0u, lid, ra);
    put(tb, 128u, 8u, SB, lid, rb);
    workgroupBarrier();
    for (var t = 0u; t < ntiles; t = t + 1u) {
        let cur = (t & 1u) * 256u;
        let more = t + 1u < ntiles;
        if (more) {
            ra = load_a(!ta, 128u, 8u, row0, (t + 1u) * 8u, lid, a_base);
            rb = load_b(tb, 128u, 8u, col0, (t + 1u) * 8u, lid, b_base);
        }
        for (var kk = 0u; kk < 8u; kk = kk + 1u) {
            let o = cur + kk * 32u;
            fma_8x8(&acc, ss[o + ty], ss[o + 16u + ty], ss[SB + o + tx], ss[SB + o + 16u + tx]);
        }
        if (more) {
            put(!ta, 128u, 8u, 256u - cur, lid, ra);
            put(tb, 128u, 8u, SB + 256u - cur, lid, rb);
        }
        workgroupBarrier();
    }
    store_8x8(&acc, p.out_off + wid.z * p.stride_out, row0 + ty * 4u, col0 + tx * 4u);
}

// ---- 64 x 64 tiles, 4 x 4 per invocation, K tiles of 16 -----------------------------------------

fn mm_small(ta: bool, tb: bool, lid: u32, wid: vec3<u32>) {
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let a_base = p.a_off + wid.z * p.stride_a;
    let b_base = p.b_off + wid.z * p.stride_b;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // acc: the 4 x 4 block of fma_4x4
    var acc: array<vec4<f32>, 4>;
    let ntiles = (p.k + 15u) / 16u;
    var ra = load_a(!ta, 64u, 16u, row0, 0u, lid, a_base);
    var rb = load_b(tb, 64u, 16u, col0, 0u, lid, b_base);
    put(!ta, 64u, 16u, 0u, lid, ra);
    put(tb, 64u, 16u, SB, lid, rb);
    workgroupBarrier();
    for (var t = 0u; t < ntiles; t = t + 1u) {
        let cur = (t & 1u) * 256u;
        let more = t + 1u < ntiles;
        if (more) {
            ra = load_a(!ta, 64u, 16u, row0, (t + 1u) * 16u, lid, a_base);
            rb = load_b(tb, 64u, 16u, col0, (t + 1u) * 16u, lid, b_base);
        }
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let o = cur + kk * 16u;
            fma_4x4(&acc, ss[o + ty], ss[SB + o + tx]);
        }
        if (more) {
            put(!ta, 64u, 16u, 256u - cur, lid, ra);
            put(tb, 64u, 16u, SB + 256u - cur, lid, rb);
        }
        workgroupBarrier();
    }
    store_4x4(&acc, p.out_off + wid.z * p.stride_out, row0 + ty * 4u, col0 + tx * 4u);
}

@compute @workgroup_size(256)
fn matmul(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_big(false, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_nt(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_big(false, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_tn(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_big(true, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_tt(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_big(true, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_small(false, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_nt(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_small(false, true, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_tn(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_small(true, false, lid, wid);
}

@compute @workgroup_size(256)
fn matmul_small_tt(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    mm_small(true, true, lid, wid);
}

// ---- bias ---------------------------------------------------------------------------------------

@compute @workgroup_size(256)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i < pb.n * pb.c) {
        mm_out[i] = mm_out[i] + mm_a[i % pb.c];
    }
}

var<workgroup> bias_part: array<f32, 256>;

// Workgroup x: columns 8 x .. 8 x + 8; invocation (lane = lid / 8, col = lid % 8).
@compute @workgroup_size(256)
fn bias_bwd(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = pb.n;
    let c = pb.c;
    let col = wid.x * 8u + lid % 8u;
    let lane = lid / 8u;
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    if (col < c) {
        var i = lane;
        for (; i + 96u < n; i = i + 128u) {
            s0 = s0 + mm_a[i * c + col];
            s1 = s1 + mm_a[(i + 32u) * c + col];
            s2 = s2 + mm_a[(i + 64u) * c + col];
            s3 = s3 + mm_a[(i + 96u) * c + col];
        }
        for (; i < n; i = i + 32u) {
            s0 = s0 + mm_a[i * c + col];
        }
    }
    bias_part[lid] = (s0 + s1) + (s2 + s3);
    workgroupBarrier();
    // fixed tree over the 32 lanes of each column (stride 8 between lanes)
    for (var s = 128u; s >= 8u; s = s >> 1u) {
        if (lid < s) {
            bias_part[lid] = bias_part[lid] + bias_part[lid + s];
        }
        workgroupBarrier();
    }
    if (lid < 8u && col < c) {
        mm_out[col] = mm_out[col] + bias_part[lid];
    }
}
