// Next-token sampling from [n, v] logits: out[i] (i32) = the token drawn for row i.
// One workgroup of 256 per row (rows folded into x and y). The uniform is SampleParams; the
// sampling step comes from the storage buffer steps[step_at].
//
// temperature <= 0: greedy, argmax with the lowest index on ties (NaN logits are skipped).
// Otherwise the CPU backend's procedure (src/backend/cpu/sample.rs), without sorting:
// candidates in the order "logit descending, index ascending" (f32 total order), q_j =
// exp((x_j - max) / T); cut to the first top_k (0 = all), then to the shortest prefix whose
// q-mass reaches top_p * total (top_p < 1), then walk the kept prefix until the running mass
// exceeds u * mass, with u = uniform(seed, step, row) (SplitMix64, ported with u32 pairs).
//
// Every cut is a "prefix of the order", i.e. a pivot (key K, index I) with
// included(j) = key_j > K || (key_j == K && j <= I), key = the f32 bits mapped to a u32 of the
// same total order. `find` locates the element at which the running weight (1 for top-k, q for
// top-p and the draw) first reaches (>=) or exceeds (>) a goal: a 16-way search on the key
// (8 passes over the row, each summing the weights of 16 key buckets with 4 vec4 reductions and
// picking the bucket where the suffix sum crosses) gives the pivot key; among the elements with
// exactly that key (ties) an ordered scan by index, tile by tile, finds the pivot index.
//
// Differences to the CPU: the masses are tree sums in f32 rather than sequential sums in sorted
// order, and exp may differ by a few ulp, so a token can differ only when a running mass lies
// within rounding of a threshold (top_p * total or u * mass). Ties (equal logits) are resolved
// exactly as on the CPU (lower index first).

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

const MAXU: u32 = 0xFFFFFFFFu;
const BIG: f32 = 3.402823e38;
const NB: u32 = 16u;

var<workgroup> su: array<u32, 256>;
var<workgroup> su16: array<u32, 16>;
var<workgroup> sf: array<f32, 256>;
var<workgroup> sf16: array<f32, 16>;
var<workgroup> s4: array<vec4<f32>, 256>;
var<workgroup> s4_16: array<vec4<f32>, 16>;
var<workgroup> bcast: u32;

var<private> g_base: u32;
var<private> g_max: f32;

// ---- the counter-based uniform draw: u64 math on (lo, hi) u32 pairs ----

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

// z ^ (z >> s), 0 < s < 32
fn xorshr(z: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>(z.x ^ ((z.x >> s) | (z.y << (32u - s))), z.y ^ (z.y >> s));
}

// uniform(seed, step, row) of the CPU backend: [0, 1) from the top 24 bits of SplitMix64's
// finalisation of seed ^ ((step << 32 | row) * golden) + golden.
fn draw_uniform(row: u32) -> f32 {
    let golden = vec2<u32>(0x7F4A7C15u, 0x9E3779B9u);
    var z = mul64(vec2<u32>(row, u32(steps[p.step_at])), golden);
    z = vec2<u32>(p.seed_lo ^ z.x, p.seed_hi ^ z.y);
    z = add64(z, golden);
    z = mul64(xorshr(z, 30u), vec2<u32>(0x1CE4E5B9u, 0xBF58476Du));
    z = mul64(xorshr(z, 27u), vec2<u32>(0x133111EBu, 0x94D049BBu));
    z = xorshr(z, 31u);
    return f32(z.y >> 8u) / 16777216.0;
}

// ---- workgroup helpers (called by all 256 invocations in uniform control flow) ----
// Two levels of 16: 16 invocations combine 16 values each, then every invocation combines the
// 16 partials. Two barriers per call (a call's last reads finish before the next call's second
// barrier, so no trailing barrier is needed); a fixed order, so results are deterministic.

fn wg_min_u(x: u32, lid: u32) -> u32 {
    su[lid] = x;
    workgroupBarrier();
    if (lid < 16u) {
        var r = su[lid * 16u];
        for (var i = 1u; i < 16u; i = i + 1u) {
            r = min(r, su[lid * 16u + i]);
        }
        su16[lid] = r;
    }
    workgroupBarrier();
    var r = su16[0];
    for (var i = 1u; i < 16u; i = i + 1u) {
        r = min(r, su16[i]);
    }
    return r;
}

fn wg_max_u(x: u32, lid: u32) -> u32 {
    su[lid] = x;
    workgroupBarrier();
    if (lid < 16u) {
        var r = su[lid * 16u];
        for (var i = 1u; i < 16u; i = i + 1u) {
            r = max(r, su[lid * 16u + i]);
        }
        su16[lid] = r;
    }
    workgroupBarrier();
    var r = su16[0];
    for (var i = 1u; i < 16u; i = i + 1u) {
        r = max(r, su16[i]);
    }
    return r;
}

fn wg_sum4(x: vec4<f32>, lid: u32) -> vec4<f32> {
    s4[lid] = x;
    workgroupBarrier();
    if (lid < 16u) {
        var r = s4[lid * 16u];
        for (var i = 1u; i < 16u; i = i + 1u) {
            r = r + s4[lid * 16u + i];
        }
        s4_16[lid] = r;
    }
    workgroupBarrier();
    var r = s4_16[0];
    for (var i = 1u; i < 16u; i = i + 1u) {
        r = r + s4_16[i];
    }
    return r;
}

// Inclusive prefix sum over the workgroup in invocation order (x: this invocation's, y: total).
fn wg_scan(x: f32, lid: u32) -> vec2<f32> {
    sf[lid] = x;
    workgroupBarrier();
    if (lid < 16u) {
        var run = 0.0;
        for (var i = 0u; i < 16u; i = i + 1u) {
            run = run + sf[lid * 16u + i];
            sf[lid * 16u + i] = run;
        }
        sf16[lid] = run;
    }
    workgroupBarrier();
    var off = 0.0;
    var total = 0.0;
    for (var i = 0u; i < 16u; i = i + 1u) {
        off = off + select(0.0, sf16[i], i < lid / 16u);
        total = total + sf16[i];
    }
    return vec2<f32>(sf[lid] + off, total);
}

// A value equal in every invocation, made uniform for control flow.
fn uniform_u(x: u32, lid: u32) -> u32 {
    if (lid == 0u) {
        bcast = x;
    }
    return workgroupUniformLoad(&bcast);
}

// ---- the order and the weights ----

// f32 -> u32 with the order of f32::total_cmp (-0.0 < +0.0).
fn key_of(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn included(k: u32, j: u32, ck: u32, ci: u32) -> bool {
    return k > ck || (k == ck && j <= ci);
}

fn weight(x: f32, use_q: bool) -> f32 {
    if (use_q) {
        return exp((x - g_max) / p.temperature);
    }
    return 1.0;
}

fn reaches(s: f32, goal: f32, strict: bool) -> bool {
    return select(s >= goal, s > goal, strict);
}

struct Pivot {
    key: u32,
    idx: u32,
}

// The first element, in the order, of the elements included by (ck, ci) at which the running
// weight reaches (strict: exceeds) `goal`; the last included element when none does.
fn find(ck: u32, ci: u32, use_q: bool, goal: f32, strict: bool, lid: u32) -> Pivot {
    let v = p.v;
    // key range of the included elements
    var kmin = MAXU;
    var kmax = 0u;
    for (var j = lid; j < v; j = j + WG) {
        let k = key_of(logits[g_base + j]);
        if (included(k, j, ck, ci)) {
            kmin = min(kmin, k);
            kmax = max(kmax, k);
        }
    }
    kmin = wg_min_u(kmin, lid);
    kmax = wg_max_u(kmax, lid);
    var lo = kmin;
    var hi = kmax;
    // weight of the included elements with key > hi
    var above = 0.0;
    var ok = true;
    for (var it = 0u; it < 8u; it = it + 1u) {
        let step = (hi - lo) / NB + 1u;
        var acc: array<vec4<f32>, 4>;
        for (var b = 0u; b < 4u; b = b + 1u) {
            acc[b] = vec4<f32>(0.0);
        }
        for (var j = lid; j < v; j = j + WG) {
            let x = logits[g_base + j];
            let k = key_of(x);
            if (included(k, j, ck, ci) && k >= lo && k <= hi) {
                let b = (k - lo) / step;
                acc[b >> 2u][b & 3u] = acc[b >> 2u][b & 3u] + weight(x, use_q);
            }
        }
        var tots: array<vec4<f32>, 4>;
        for (var b = 0u; b < 4u; b = b + 1u) {
            tots[b] = wg_sum4(acc[b], lid);
        }
        // buckets from the top: the first whose suffix sum reaches the goal
        var s = above;
        var found = false;
        var chosen = 0u;
        var chosen_above = above;
        // the lowest bucket with weight, if rounding keeps every suffix short of the goal
        var low = 0u;
        var low_above = above;
        let nbuckets = (hi - lo) / step + 1u;
        for (var t = 0u; t < NB; t = t + 1u) {
            let b = NB - 1u - t;
            let tot = tots[b >> 2u][b & 3u];
            let prev = s;
            s = s + tot;
            let hit = !found && b < nbuckets && tot > 0.0 && reaches(s, goal, strict);
            chosen = select(chosen, b, hit);
            chosen_above = select(chosen_above, prev, hit);
            found = found || hit;
            let pos = b < nbuckets && tot > 0.0;
            low = select(low, b, pos);
            low_above = select(low_above, prev, pos);
        }
        if (it == 0u) {
            ok = found;
        }
        chosen = select(low, chosen, found);
        chosen_above = select(low_above, chosen_above, found);
        let new_lo = lo + chosen * step;
        hi = select(new_lo + (step - 1u), hi, hi - new_lo < step);
        lo = new_lo;
        above = chosen_above;
    }
    let tau = lo;
    // the elements with the pivot key: count and first index
    var cnt = 0.0;
    var first = MAXU;
    var last_min = 0u;
    for (var j = lid; j < v; j = j + WG) {
        let k = key_of(logits[g_base + j]);
        if (included(k, j, ck, ci)) {
            if (k == tau) {
                cnt = cnt + 1.0;
                first = min(first, j);
            }
            if (k == kmin) {
                last_min = max(last_min, j);
            }
        }
    }
    cnt = wg_sum(cnt, lid);
    first = wg_min_u(first, lid);
    last_min = wg_max_u(last_min, lid);
    if (uniform_u(select(0u, 1u, !ok), lid) != 0u) {
        return Pivot(kmin, last_min);
    }
    var res = first;
    if (uniform_u(select(0u, 1u, cnt > 1.5), lid) != 0u) {
        // ties: walk the elements with the pivot key in index order
        var cum = above;
        var hit_idx = MAXU;
        var last_eq = 0u;
        let tiles = (v + WG - 1u) / WG;
        for (var t = 0u; t < tiles; t = t + 1u) {
            let j = t * WG + lid;
            var w = 0.0;
            var e = false;
            if (j < v) {
                let x = logits[g_base + j];
                let k = key_of(x);
                e = k == tau && included(k, j, ck, ci);
                if (e) {
                    w = weight(x, use_q);
                    last_eq = j;
                }
            }
            let sc = wg_scan(w, lid);
            let hit = e && reaches(cum + sc.x, goal, strict);
            let h = uniform_u(wg_min_u(select(MAXU, j, hit), lid), lid);
            cum = cum + sc.y;
            if (h != MAXU) {
                hit_idx = h;
                break;
            }
        }
        last_eq = wg_max_u(last_eq, lid);
        res = select(hit_idx, last_eq, hit_idx == MAXU);
    }
    return Pivot(tau, res);
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
    if (p.temperature <= 0.0) {
        // greedy: per invocation the first maximum of its elements, then (value desc, index asc)
        var best = -BIG;
        var bi = MAXU;
        for (var j = lid; j < v; j = j + WG) {
            let x = logits[g_base + j];
            if (x == x && (bi == MAXU || x > best)) {
                best = x;
                bi = j;
            }
        }
        let m = wg_max(select(best, -BIG, bi == MAXU), lid);
        let cand = select(MAXU, bi, bi != MAXU && best == m);
        let idx = wg_min_u(cand, lid);
        if (lid == 0u) {
            out[row] = i32(select(idx, 0u, idx == MAXU));
        }
        return;
    }
    var mx = -BIG;
    for (var j = lid; j < v; j = j + WG) {
        let x = logits[g_base + j];
        if (x == x) {
            mx = max(mx, x);
        }
    }
    g_max = wg_max(mx, lid);

    // the cut so far: included(j) = key > ck || (key == ck && j <= ci); everything at first.
    // Phases: 0 the top-k cut, 1 the top-p cut, 2 the draw (one call site of `find`, which keeps
    // the compiled shader small).
    var ck = 0u;
    var ci = MAXU;
    for (var phase = 0u; phase < 3u; phase = phase + 1u) {
        let on = (phase == 0u && p.top_k > 0u && p.top_k < v) || (phase == 1u && p.top_p < 1.0) || phase == 2u;
        if (on) {
            var goal = f32(p.top_k);
            if (phase > 0u) {
                var s = 0.0;
                for (var j = lid; j < v; j = j + WG) {
                    let x = logits[g_base + j];
                    if (included(key_of(x), j, ck, ci)) {
                        s = s + weight(x, true);
                    }
                }
                let mass = wg_sum(s, lid);
                goal = select(p.top_p * mass, draw_uniform(row) * mass, phase == 2u);
            }
            let f = find(ck, ci, phase > 0u, goal, phase == 2u, lid);
            ck = f.key;
            ci = f.idx;
        }
    }
    if (lid == 0u) {
        out[row] = i32(ci);
    }
}
