// Reward-model ranking loss: ranking_loss. Group g holds scores[starts[g] .. starts[g + 1]]
// (K >= 2 completions, best first); for each pair i < j, z = s_i - s_j - margins[g]:
//   loss_g = mean_pairs softplus(-z),  dscores[i] -= scale sigmoid(-z) / pairs_g,
//   dscores[j] += scale sigmoid(-z) / pairs_g  (dscores[0 .. starts[n_groups]] overwritten),
//   stats[0..4] += [scale sum_g loss_g, pairs with s_i > s_j, pairs, sum of s_i - s_j].
// Shapes: scores, dscores [>= starts[n_groups]], starts [n_groups + 1] i32, margins [n_groups].
// No backward state (the op writes its own gradient).
//
// One dispatch of one workgroup of 256 invocations (the groups are few and tiny): invocation l
// takes groups l, l + 256, ...; it zeroes its groups' scores gradients and then adds the pairs in
// the CPU's order (so dscores matches it bit for bit up to exp/log rounding); all invocations zero
// dscores[0 .. starts[0]]. The per-invocation sums (f32) are reduced over the workgroup in a fixed
// pairwise order, and invocation 0 adds them to stats.
// `starts` lives on the device, so the host cannot check it: a malformed group (starts[g] < 0,
// fewer than 2 scores, or past `limit` = the shorter of scores and dscores) is skipped without
// writing anything and turns stats[0] into NaN, so that the error shows in the logged loss.
// Uniform: RankingParams { n_groups, scale }, then limit and a pad. Bindings: 1 dscores, 2 stats,
// 3 scores, 4 starts, 5 margins.

struct RankU {
    n_groups: u32,
    scale: f32,
    // appended by the launcher
    limit: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> rp: RankU;
@group(0) @binding(1) var<storage, read_write> dscores: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstats: array<f32>;
@group(0) @binding(3) var<storage, read> scores: array<f32>;
@group(0) @binding(4) var<storage, read> starts: array<i32>;
@group(0) @binding(5) var<storage, read> margins: array<f32>;

// softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], with log1p(e) = 2 atanh(y),
// y = e / (2 + e) <= 1/3, from its series (to y^19: truncation below 3e-10 relative): no log, so
// no cancellation near 1 whatever the device's log precision.
fn softplus(x: f32) -> f32 {
    let e = exp(-abs(x));
    let y = e / (2.0 + e);
    let y2 = y * y;
    let series = 1.0 + y2 * (1.0 / 3.0 + y2 * (1.0 / 5.0 + y2 * (1.0 / 7.0 + y2 * (1.0 / 9.0 + y2 * (1.0 / 11.0
        + y2 * (1.0 / 13.0 + y2 * (1.0 / 15.0 + y2 * (1.0 / 17.0 + y2 * (1.0 / 19.0)))))))));
    return max(x, 0.0) + 2.0 * y * series;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(256)
fn ranking_loss(@builtin(local_invocation_index) lid: u32) {
    let s0 = starts[0];
    let head = u32(clamp(s0, 0, i32(rp.limit)));
    for (var i = lid; i < head; i = i + WG) {
        dscores[i] = 0.0;
    }
    var loss = 0.0;
    var correct = 0.0;
    var pairs = 0.0;
    var gap = 0.0;
    var bad = 0.0;
    if (s0 < 0) {
        bad = 1.0;
    }
    for (var g = lid; g < rp.n_groups; g = g + WG) {
        let sa = starts[g];
        let sb = starts[g + 1u];
        if (sa < 0 || sb - sa < 2 || sb > i32(rp.limit)) {
            bad = 1.0;
            continue;
        }
        let a = u32(sa);
        let b = u32(sb);
        let k = b - a;
        let n_pairs = f32(k * (k - 1u) / 2u);
        let margin = margins[g];
        for (var i = a; i < b; i = i + 1u) {
            dscores[i] = 0.0;
        }
        var group_loss = 0.0;
        for (var i = a; i < b; i = i + 1u) {
            for (var j = i + 1u; j < b; j = j + 1u) {
                let diff = scores[i] - scores[j];
                let z = diff - margin;
                group_loss = group_loss + softplus(-z);
                let g_pair = rp.scale * sigmoid(-z) / n_pairs;
                dscores[i] = dscores[i] - g_pair;
                dscores[j] = dscores[j] + g_pair;
                if (diff > 0.0) {
                    correct = correct + 1.0;
                }
                pairs = pairs + 1.0;
                gap = gap + diff;
            }
        }
        loss = loss + rp.scale * group_loss / n_pairs;
    }
    let t_loss = wg_sum(loss, lid);
    let t_correct = wg_sum(correct, lid);
    let t_pairs = wg_sum(pairs, lid);
    let t_gap = wg_sum(gap, lid);
    let t_bad = wg_max(bad, lid);
    if (lid == 0u) {
        var poison = 0.0;
        if (t_bad > 0.0) {
            poison = bitcast<f32>(0x7fc00000u);
        }
        rstats[0] = rstats[0] + t_loss + poison;
        rstats[1] = rstats[1] + t_correct;
        rstats[2] = rstats[2] + t_pairs;
        rstats[3] = rstats[3] + t_gap;
    }
}
