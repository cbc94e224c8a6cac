// Next-token sampling from [n, v] logits: out[i] (i32) = the token drawn for row i.
// One workgroup of 256 per row (rows folded into x and y). The params are SampleParams; the
// sampling step comes from the storage buffer steps[step_at].
//
// The algorithm and its arithmetic are the CPU reference's (src/backend/cpu/sample.rs and
// sample_math.rs), written with the same operations in the same order (kernels/sample.cu too):
// - temperature <= 0: greedy, argmax with the lowest index on ties (NaN logits skipped).
// - Otherwise Gumbel-max over the kept tokens: argmax_j (x_j / T + g_j), lowest index on ties,
//   g_j = -ln(-ln u_j), u_j = (2k + 1) / 2^24 with k the top 23 bits of SplitMix64's
//   mix(state + (j + 1) golden), state = row_state(seed, step, row) (u64 math on u32 pairs).
//   `ln_f` and `exp_neg` are the CPU's series, one f32 operation at a time. Kept: logit not NaN
//   and order key >= thr (0 at first). Temperature alone: one pass over the row.
// - top_k (0 < top_k < v): thr = the top_k-th largest key; every token equal to it is kept.
// - top_p (< 1): masses m_j = floor(exp_neg((x_j - max) / T) 2^40) of the kept tokens as u32
//   pairs (lo, hi), total = their sum; thr = the largest key K whose kept tokens with key >= K hold
//   at least max(1, floor(total floor(top_p 2^24) / 2^24)); every token at thr is kept.
// - Each cut is a radix select on the key's bytes from the top: 4 passes, each a 256-bin histogram
//   of the weights (1, or the masses) in workgroup memory (u64 as two atomic u32 with carry:
//   integer sums, independent of the order of the atomics), then invocation 0 walks the bins from
//   the top to the one where the running sum reaches what is still needed.
//
// Differences to the CPU: none in the arithmetic's definition, but WGSL allows f32 division
// within 2.5 ulp and drivers may fuse a multiply and an add, so on some devices a Gumbel score or
// a mass can differ by an ulp; then a token differs only where the two best scores (or a running
// mass and the top-p goal) lie within a few ulp (tests/wgpu_ops/sample.rs checks that).

struct Params {
    n: u32,
    v: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    seed_lo: u32,
    seed_hi: u32,
    step_at: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<i32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
// the sampling step is steps[p.step_at], a counter on the device (decode_advance counts it up)
@group(0) @binding(3) var<storage, read> steps: array<i32>;

const NONE: u32 = 0xFFFFFFFFu;

var<workgroup> hist_lo: array<atomic<u32>, 256>;
var<workgroup> hist_hi: array<atomic<u32>, 256>;
// (still lo, still hi, prefix, found) after each radix pass
var<workgroup> sel_state: vec4<u32>;
var<workgroup> arg_s: array<f32, 256>;
var<workgroup> arg_j: array<u32, 256>;

var<private> g_base: u32;

// ---- u64 arithmetic on (lo, hi) u32 pairs ----

fn mul32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let ll = a0 * b0;
    let lh = a0 * b1;
    let hl = a1 * b0;
    let hh = a1 * b1;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    return vec2<u32>((ll & 0xFFFFu) | (mid << 16u), hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let q = mul32(a.x, b.x);
    return vec2<u32>(q.x, q.y + a.x * b.y + a.y * b.x);
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

fn ge64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y > b.y || (a.y == b.y && a.x >= b.x);
}

// z >> s, 0 < s < 32
fn shr64(z: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>((z.x >> s) | (z.y << (32u - s)), z.y >> s);
}

// z ^ (z >> s), 0 < s < 32
fn xorshr(z: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>(z.x ^ ((z.x >> s) | (z.y << (32u - s))), z.y ^ (z.y >> s));
}

// ---- the counter-based random numbers (SplitMix64) ----

const GOLDEN: vec2<u32> = vec2<u32>(0x7F4A7C15u, 0x9E3779B9u);

fn mix(z0: vec2<u32>) -> vec2<u32> {
    var z = mul64(xorshr(z0, 30u), vec2<u32>(0x1CE4E5B9u, 0xBF58476Du));
    z = mul64(xorshr(z, 27u), vec2<u32>(0x133111EBu, 0x94D049BBu));
    return xorshr(z, 31u);
}

// mix(seed ^ ((step << 32 | row) * golden) + golden)
fn row_state(row: u32) -> vec2<u32> {
    let z = mul64(vec2<u32>(row, u32(steps[p.step_at])), GOLDEN);
    return mix(add64(vec2<u32>(p.seed_lo ^ z.x, p.seed_hi ^ z.y), GOLDEN));
}

// (2k + 1) / 2^24, k = the top 23 bits of mix(state + (j + 1) golden)
fn uniform_open(state: vec2<u32>, j: u32) -> f32 {
    let z = mix(add64(state, mul64(vec2<u32>(j + 1u, 0u), GOLDEN)));
    return f32((z.y >> 9u) * 2u + 1u) * 5.9604644775390625e-8;
}

// ---- ln and exp in single f32 operations (the CPU's series and constants) ----

fn ln_f(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    let e = bitcast<i32>(b - 0x3F3504F3u) >> 23u;
    let m = bitcast<f32>(b - (bitcast<u32>(e) << 23u));
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    var t = z * bitcast<f32>(0x3E638E39u);
    t = z * (bitcast<f32>(0x3E924925u) + t);
    t = z * (bitcast<f32>(0x3ECCCCCDu) + t);
    t = z * (bitcast<f32>(0x3F2AAAABu) + t);
    let lnm = s * (2.0 + t);
    let ef = f32(e);
    return ef * bitcast<f32>(0x3F317180u) + (ef * bitcast<f32>(0x3717F7D1u) + lnm);
}

// exp(d) for d in [-28, 0], 0 below or NaN
fn exp_neg(d: f32) -> f32 {
    if (is_nan(d) || d < -28.0) {
        return 0.0;
    }
    let k = floor(d * bitcast<f32>(0x3FB8AA3Bu) + 0.5);
    let r = (d - k * bitcast<f32>(0x3F317180u)) - k * bitcast<f32>(0x3717F7D1u);
    var t = r * bitcast<f32>(0x39500D01u);
    t = r * (bitcast<f32>(0x3AB60B61u) + t);
    t = r * (bitcast<f32>(0x3C088889u) + t);
    t = r * (bitcast<f32>(0x3D2AAAABu) + t);
    t = r * (bitcast<f32>(0x3E2AAAABu) + t);
    t = r * (0.5 + t);
    t = r * (1.0 + t);
    return (1.0 + t) * bitcast<f32>(u32(i32(k) + 127) << 23u);
}

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7FFFFFFFu) > 0x7F800000u;
}

// f32 -> u32 with the order of f32::total_cmp (-0.0 < +0.0).
fn key_of(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// floor(exp_neg((x - mx) / T) 2^40) as (lo, hi): t = q 2^8 (exact), hi = floor(t), lo = the
// fraction times 2^32 (exact), truncated
fn mass(x: f32, mx: f32) -> vec2<u32> {
    let t = exp_neg((x - mx) / p.temperature) * 256.0;
    let h = floor(t);
    return vec2<u32>(u32((t - h) * 4294967296.0), u32(h));
}

// max(1, (total >> 24) P + ((total & 0xFFFFFF) P >> 24)), P = floor(top_p 2^24)
fn top_p_goal(total: vec2<u32>) -> vec2<u32> {
    let pp = select(0u, u32(p.top_p * 16777216.0), p.top_p > 0.0);
    let g = add64(mul64(shr64(total, 24u), vec2<u32>(pp, 0u)), shr64(mul32(total.x & 0xFFFFFFu, pp), 24u));
    return select(g, vec2<u32>(1u, 0u), g.x == 0u && g.y == 0u);
}

fn hist_add(b: u32, w: vec2<u32>) {
    let old = atomicAdd(&hist_lo[b], w.x);
    let hi = w.y + select(0u, 1u, old + w.x < old);
    if (hi != 0u) {
        atomicAdd(&hist_hi[b], hi);
    }
}

// The largest key K such that the weights (masses or 1) of the kept tokens (not NaN, key >= thr)
// with key >= K reach top_k or the top-p goal; `fallback` when they never do (or the total is 0).
fn radix_select(thr: u32, masses: bool, mx: f32, fallback: u32, lid: u32) -> u32 {
    var prefix = 0u;
    var still = vec2<u32>(0u, 0u);
    for (var round = 0u; round < 4u; round = round + 1u) {
        let shift = 24u - 8u * round;
        let above = select(0xFFFFFFFFu << ((shift + 8u) & 31u), 0u, round == 0u);
        atomicStore(&hist_lo[lid], 0u);
        atomicStore(&hist_hi[lid], 0u);
        workgroupBarrier();
        for (var j = lid; j < p.v; j = j + WG) {
            let x = logits[g_base + j];
            let k = key_of(x);
            if (!is_nan(x) && k >= thr && (k & above) == prefix) {
                var w = vec2<u32>(1u, 0u);
                if (masses) {
                    w = mass(x, mx);
                }
                if (w.x != 0u || w.y != 0u) {
                    hist_add((k >> shift) & 255u, w);
                }
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            if (round == 0u) {
                var total = vec2<u32>(0u, 0u);
                for (var b = 0u; b < 256u; b = b + 1u) {
                    total = add64(total, vec2<u32>(atomicLoad(&hist_lo[b]), atomicLoad(&hist_hi[b])));
                }
                if (masses) {
                    still = select(vec2<u32>(NONE, NONE), top_p_goal(total), total.x != 0u || total.y != 0u);
                } else {
                    still = vec2<u32>(p.top_k, 0u);
                }
            }
            var cum = vec2<u32>(0u, 0u);
            var found = NONE;
            for (var t = 0u; t < 256u; t = t + 1u) {
                let b = 255u - t;
                let s = add64(cum, vec2<u32>(atomicLoad(&hist_lo[b]), atomicLoad(&hist_hi[b])));
                if (ge64(s, still)) {
                    found = b;
                    break;
                }
                cum = s;
            }
            let left = sub64(still, cum);
            sel_state = vec4<u32>(left.x, left.y, prefix | ((found & 255u) << shift), select(0u, 1u, found != NONE));
        }
        let st = workgroupUniformLoad(&sel_state);
        if (st.w == 0u) {
            return fallback;
        }
        prefix = st.z;
        still = st.xy;
    }
    return prefix;
}

// The workgroup's argmax of the invocations' (s, j) (NONE: no candidate; NaN never wins).
fn wg_argmax(s: f32, j: u32, lid: u32) -> u32 {
    arg_s[lid] = s;
    arg_j[lid] = j;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half >> 1u) {
        if (lid < half) {
            let os = arg_s[lid + half];
            let oj = arg_j[lid + half];
            let mj = arg_j[lid];
            if (oj != NONE && (mj == NONE || os > arg_s[lid] || (os == arg_s[lid] && oj < mj))) {
                arg_s[lid] = os;
                arg_j[lid] = oj;
            }
        }
        workgroupBarrier();
    }
    return arg_j[0];
}

// ---- the op ----

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) {
        return;
    }
    let v = p.v;
    g_base = row * v;
    var best = 0.0;
    var bj = NONE;
    if (p.temperature <= 0.0) {
        for (var j = lid; j < v; j = j + WG) {
            let x = logits[g_base + j];
            if (!is_nan(x) && (bj == NONE || x > best)) {
                best = x;
                bj = j;
            }
        }
        let arg = wg_argmax(best, bj, lid);
        if (lid == 0u) {
            out[row] = i32(select(arg, 0u, arg == NONE));
        }
        return;
    }
    var thr = 0u;
    if (p.top_k > 0u && p.top_k < v) {
        thr = radix_select(0u, false, 0.0, 0u, lid);
    }
    if (p.top_p < 1.0) {
        var mx = bitcast<f32>(0xFF800000u);
        for (var j = lid; j < v; j = j + WG) {
            let x = logits[g_base + j];
            if (!is_nan(x) && x > mx) {
                mx = x;
            }
        }
        mx = wg_max(mx, lid);
        thr = radix_select(thr, true, mx, thr, lid);
    }
    let state = row_state(row);
    for (var j = lid; j < v; j = j + WG) {
        let x = logits[g_base + j];
        if (!is_nan(x) && key_of(x) >= thr) {
            let s = x / p.temperature + -ln_f(-ln_f(uniform_open(state, j)));
            if (!is_nan(s) && (bj == NONE || s > best)) {
                best = s;
                bj = j;
            }
        }
    }
    let arg = wg_argmax(best, bj, lid);
    if (lid == 0u) {
        out[row] = i32(select(arg, 0u, arg == NONE));
    }
}
