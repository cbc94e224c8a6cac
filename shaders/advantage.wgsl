// Advantages for PPO: gae and masked_whiten. Nothing is saved for a backward (no gradients).
//
// gae — rewards, values, mask [b, t] -> advantages, returns [b, t] (overwritten). One invocation
//   per row (workgroups of 64) scanning the row backwards, exactly the CPU's recursion:
//     delta = r_t + gamma V_{t+1} - V_t,  A_t = delta + gamma lambda A_{t+1},  returns_t = A_t + V_t,
//   where a position with mask == 0 writes 0 to both outputs, reads neither input and resets
//   V_{t+1} = A_{t+1} = 0 (each run of response tokens is its own episode, no bootstrap).
//   Uniform: GaeParams { b, t, gamma, lambda }. Bindings: 1 advantages, 2 returns, 3 rewards,
//   4 values, 5 mask.
//
// masked_whiten — x [n] in place over the entries with mask != 0, stats [3] = [mean, std, count]
//   (overwritten); var = sum (x - mean)^2 / (count - unbiased) (0 when that is <= 0),
//   x = (x - mean) / sqrt(var + eps) (+ mean when shift_mean == 0), 0 where mask == 0.
//   The CPU sums in f64; here every sum is a compensated f32 sum in a fixed order (deterministic):
//   Neumaier-compensated sums per invocation, then a pairwise tree over the workgroup that merges
//   (hi, lo) pairs with TwoSum, then the same over the workgroups' pairs. Five passes:
//   1. masked_whiten_sum (one workgroup per 4096 entries): count and (hi, lo) sum of the chunk.
//   2. masked_whiten_mean (one workgroup): count and mean into the scratch.
//   3. masked_whiten_sq (one workgroup per 4096 entries): (hi, lo) sum of (x - mean)^2.
//   4. masked_whiten_var (one workgroup): stats, 1 / sqrt(var + eps) and the shift into the scratch.
//   5. masked_whiten (one invocation per entry): the whitening.
//   Counts are summed as f32: exact below 2^24 masked entries.
//   Uniform: WhitenParams { n, shift_mean, unbiased, eps }, then n_wg (workgroups of passes 1
//   and 3) and pads. Bindings: 1 x, 2 stats, 3 mask, 4 scratch (launcher's):
//   scratch[0..4] = mean, rstd, shift, count; scratch[4 + 3 w ..] = (count, hi, lo) of chunk w;
//   scratch[4 + 3 n_wg + 2 w ..] = (hi, lo) of the squares of chunk w.
//
// group_advantages — rewards, seq_kl [b], mask [b, t] -> advantages [b, t] (overwritten). One
//   invocation per token; each reads its sequence's group (`group` consecutive sequences) in index
//   order: r_j = rewards[j] - beta seq_kl[j] (skipped when beta is 0), Neumaier-compensated f32 sums
//   (the CPU: f64), then GRPO (r - mean) / (std + eps) (std Bessel-corrected, 0 for one sample),
//   GRPO_NO_STD (1) r - mean, RLOO (2) r - (sum - r) / (n - 1), times mask.
//   Uniform: GroupAdvantageParams { b, t, group, estimator, beta, eps }, pads.
//   Bindings: 1 advantages, 2 rewards, 3 seq_kl, 4 mask.
//
// normalize_rewards — scores [n] -> out [n] (overwritten). One workgroup: the batch's mean and
//   squared deviations as compensated f32 sums, merged with the running moments (count, mean, m2;
//   f64 on the host, rounded to f32 by the launcher) by Chan et al.'s update, then
//   out = (x - mean') / max(sqrt(m2' / (count' - 1)), eps) (std 1 below 2 samples).
//   Uniform: { count, mean, m2, n, eps } (the launcher's f32 copy), pads. Bindings: 1 out, 2 scores.

// ---- GAE ------------------------------------------------------------------------------------------

struct GaeParams {
    b: u32,
    t: u32,
    gamma: f32,
    lambda: f32,
}

@group(0) @binding(0) var<uniform> gp: GaeParams;
@group(0) @binding(1) var<storage, read_write> adv_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> ret_out: array<f32>;
@group(0) @binding(3) var<storage, read> rewards: array<f32>;
@group(0) @binding(4) var<storage, read> gae_values: array<f32>;
@group(0) @binding(5) var<storage, read> gae_mask: array<f32>;

@compute @workgroup_size(64)
fn gae(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_index(gid, nwg, 64u);
    if (row >= gp.b) {
        return;
    }
    let base = row * gp.t;
    let gl = gp.gamma * gp.lambda;
    var next_v = 0.0;
    var next_a = 0.0;
    for (var k = gp.t; k > 0u; k = k - 1u) {
        let i = base + k - 1u;
        if (gae_mask[i] == 0.0) {
            adv_out[i] = 0.0;
            ret_out[i] = 0.0;
            next_v = 0.0;
            next_a = 0.0;
            continue;
        }
        let v = gae_values[i];
        let delta = rewards[i] + gp.gamma * next_v - v;
        let a = delta + gl * next_a;
        adv_out[i] = a;
        ret_out[i] = a + v;
        next_v = v;
        next_a = a;
    }
}

// ---- masked whitening -----------------------------------------------------------------------------

struct WhitenU {
    n: u32,
    shift_mean: u32,
    unbiased: u32,
    eps: f32,
    // appended by the launcher
    n_wg: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// entries per workgroup of passes 1 and 3
const WH_CHUNK: u32 = 4096u;

@group(0) @binding(0) var<uniform> wp: WhitenU;
@group(0) @binding(1) var<storage, read_write> wx: array<f32>;
@group(0) @binding(2) var<storage, read_write> wstats: array<f32>;
@group(0) @binding(3) var<storage, read> wmask: array<f32>;
@group(0) @binding(4) var<storage, read_write> wscratch: array<f32>;

var<workgroup> ds_buf: array<vec2<f32>, 256>;

// (hi, lo) = a + b exactly (Knuth's TwoSum; needs IEEE f32 without reassociation).
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    return vec2<f32>(s, e);
}

// The sum of two (hi, lo) pairs, renormalised.
fn ds_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let s = two_sum(a.x, b.x);
    let lo = s.y + (a.y + b.y);
    return two_sum(s.x, lo);
}

// Neumaier step: (sum, compensation) + x.
fn neumaier(acc: vec2<f32>, x: f32) -> vec2<f32> {
    let t = acc.x + x;
    var c = acc.y;
    if (abs(acc.x) >= abs(x)) {
        c = c + ((acc.x - t) + x);
    } else {
        c = c + ((x - t) + acc.x);
    }
    return vec2<f32>(t, c);
}

// Workgroup-wide (hi, lo) sum, pairwise; all 256 invocations, uniform control flow.
fn ds_wg_sum(x: vec2<f32>, lid: u32) -> vec2<f32> {
    ds_buf[lid] = two_sum(x.x, x.y);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            ds_buf[lid] = ds_add(ds_buf[lid], ds_buf[lid + s]);
        }
        workgroupBarrier();
    }
    let total = ds_buf[0];
    workgroupBarrier();
    return total;
}

// Pass 1: count and compensated sum of the masked entries of chunk w.
@compute @workgroup_size(256)
fn masked_whiten_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= wp.n_wg) {
        return;
    }
    let start = w * WH_CHUNK;
    let end = min(start + WH_CHUNK, wp.n);
    var cnt = 0.0;
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = start + lid; i < end; i = i + WG) {
        if (wmask[i] != 0.0) {
            cnt = cnt + 1.0;
            acc = neumaier(acc, wx[i]);
        }
    }
    let count = wg_sum(cnt, lid);
    let sum = ds_wg_sum(acc, lid);
    if (lid == 0u) {
        wscratch[4u + 3u * w] = count;
        wscratch[5u + 3u * w] = sum.x;
        wscratch[6u + 3u * w] = sum.y;
    }
}

// Pass 2 (one workgroup): count and mean.
@compute @workgroup_size(256)
fn masked_whiten_mean(@builtin(local_invocation_index) lid: u32) {
    var cnt = 0.0;
    var acc = vec2<f32>(0.0, 0.0);
    for (var w = lid; w < wp.n_wg; w = w + WG) {
        cnt = cnt + wscratch[4u + 3u * w];
        acc = ds_add(acc, vec2<f32>(wscratch[5u + 3u * w], wscratch[6u + 3u * w]));
    }
    let count = wg_sum(cnt, lid);
    let sum = ds_wg_sum(acc, lid);
    if (lid == 0u) {
        wscratch[0] = select(0.0, (sum.x + sum.y) / count, count > 0.0);
        wscratch[3] = count;
    }
}

// Pass 3: compensated sum of the squared deviations of chunk w.
@compute @workgroup_size(256)
fn masked_whiten_sq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= wp.n_wg) {
        return;
    }
    let mean = wscratch[0];
    let start = w * WH_CHUNK;
    let end = min(start + WH_CHUNK, wp.n);
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = start + lid; i < end; i = i + WG) {
        if (wmask[i] != 0.0) {
            let d = wx[i] - mean;
            acc = neumaier(acc, d * d);
        }
    }
    let sum = ds_wg_sum(acc, lid);
    if (lid == 0u) {
        let off = 4u + 3u * wp.n_wg + 2u * w;
        wscratch[off] = sum.x;
        wscratch[off + 1u] = sum.y;
    }
}

// Pass 4 (one workgroup): variance, stats, 1 / sqrt(var + eps) and the shift.
@compute @workgroup_size(256)
fn masked_whiten_var(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var w = lid; w < wp.n_wg; w = w + WG) {
        let off = 4u + 3u * wp.n_wg + 2u * w;
        acc = ds_add(acc, vec2<f32>(wscratch[off], wscratch[off + 1u]));
    }
    let sum = ds_wg_sum(acc, lid);
    if (lid == 0u) {
        let mean = wscratch[0];
        let count = wscratch[3];
        let dof = count - select(0.0, 1.0, wp.unbiased != 0u);
        let var_ = select(0.0, (sum.x + sum.y) / dof, dof > 0.0);
        wscratch[1] = 1.0 / sqrt(var_ + wp.eps);
        wscratch[2] = select(mean, 0.0, wp.shift_mean != 0u);
        wstats[0] = mean;
        wstats[1] = sqrt(var_);
        wstats[2] = count;
    }
}

// Pass 5: x = (x - mean) * rstd + shift where mask != 0, else 0.
@compute @workgroup_size(256)
fn masked_whiten(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i >= wp.n) {
        return;
    }
    var out = 0.0;
    if (wmask[i] != 0.0) {
        out = (wx[i] - wscratch[0]) * wscratch[1] + wscratch[2];
    }
    wx[i] = out;
}

// ---- group advantages -----------------------------------------------------------------------------

struct GroupAdvantageParams {
    b: u32,
    t: u32,
    group: u32,
    estimator: u32,
    beta: f32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> ga: GroupAdvantageParams;
@group(0) @binding(1) var<storage, read_write> ga_out: array<f32>;
@group(0) @binding(2) var<storage, read> ga_rewards: array<f32>;
@group(0) @binding(3) var<storage, read> ga_seq_kl: array<f32>;
@group(0) @binding(4) var<storage, read> ga_mask: array<f32>;

fn ga_reward(j: u32) -> f32 {
    if (ga.beta == 0.0) {
        return ga_rewards[j];
    }
    return ga_rewards[j] - ga.beta * ga_seq_kl[j];
}

@compute @workgroup_size(256)
fn group_advantages(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 256u);
    if (i >= ga.b * ga.t) {
        return;
    }
    let s = i / ga.t;
    let g0 = s / ga.group * ga.group;
    let n = f32(ga.group);
    var acc = vec2<f32>(0.0, 0.0);
    for (var j = g0; j < g0 + ga.group; j = j + 1u) {
        acc = neumaier(acc, ga_reward(j));
    }
    let sum = acc.x + acc.y;
    let r = ga_reward(s);
    var a = 0.0;
    if (ga.estimator == 2u) {
        a = r - (sum - r) / (n - 1.0);
    } else {
        let mean = sum / n;
        var scale = 1.0;
        if (ga.estimator == 0u) {
            var sq = vec2<f32>(0.0, 0.0);
            for (var j = g0; j < g0 + ga.group; j = j + 1u) {
                let d = ga_reward(j) - mean;
                sq = neumaier(sq, d * d);
            }
            let var_g = select(0.0, (sq.x + sq.y) / (n - 1.0), ga.group > 1u);
            scale = 1.0 / (sqrt(var_g) + ga.eps);
        }
        a = (r - mean) * scale;
    }
    ga_out[i] = a * ga_mask[i];
}

// ---- reward normalisation -------------------------------------------------------------------------

struct RewardNormU {
    count: f32,
    mean: f32,
    m2: f32,
    n: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rn: RewardNormU;
@group(0) @binding(1) var<storage, read_write> rn_out: array<f32>;
@group(0) @binding(2) var<storage, read> rn_scores: array<f32>;

@compute @workgroup_size(256)
fn normalize_rewards(@builtin(local_invocation_index) lid: u32) {
    var count = rn.count;
    var mean = rn.mean;
    var m2 = rn.m2;
    let nb = f32(rn.n);
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < rn.n; i = i + WG) {
        acc = neumaier(acc, rn_scores[i]);
    }
    let sum = ds_wg_sum(acc, lid);
    let mean_b = (sum.x + sum.y) / max(nb, 1.0);
    var sq = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < rn.n; i = i + WG) {
        let d = rn_scores[i] - mean_b;
        sq = neumaier(sq, d * d);
    }
    let sqs = ds_wg_sum(sq, lid);
    if (rn.n > 0u) {
        let var_b = (sqs.x + sqs.y) / nb;
        let total = count + nb;
        let delta = mean_b - mean;
        m2 = m2 + var_b * nb + delta * delta * count * nb / total;
        mean = mean + delta * nb / total;
        count = total;
    }
    let sd = max(select(1.0, sqrt(m2 / (count - 1.0)), count > 1.0), rn.eps);
    for (var i = lid; i < rn.n; i = i + WG) {
        rn_out[i] = (rn_scores[i] - mean) / sd;
    }
}
