// Embedding gather over out [n, c] from table [vocab, c] with ids [n] (i32).
//
// embedding_fwd: out[i, :] = table[ids[i], :] (accumulate = 1: out[i, :] += ...). One invocation
//   per element of out, the 1-D grid folded into x and y. An id outside [0, vocab) (an error on
//   the CPU backend; the ids are not read back to check them) reads nothing: its row is written
//   as zeros (accumulate: left as it is).
// embedding_bwd: dtable[ids[i], :] += dout[i, :] for i < n, in token order (a parameter
//   gradient: accumulates). Deterministic without atomics: workgroup (x, s) owns the columns
//   x * 256 .. x * 256 + 255 of every vocabulary row whose id % CLASSES == s (s = y of the
//   grid); it walks all n ids in token order (staged through workgroup memory, 256 at a time)
//   and its invocations add the rows of the tokens of its class. Each dtable element is
//   therefore updated by one invocation, in token order: the same additions, in the same order,
//   as the CPU backend (bit-identical results). Out-of-range ids are skipped.
//   For n <= CHAIN_MAX_N tokens the launcher takes a cheaper path of two passes instead, linking
//   the tokens of each id into a chain (no barriers, no integer division):
//   embedding_bwd_links: one invocation per token i scans all n ids and writes, into a u32
//     scratch [2 n], links[i] = the next token after i with the same id (n if none) and
//     links[n + i] = 1 if i is the first token of its id (0 otherwise, and for out-of-range ids);
//   embedding_bwd_chain: one invocation per (token i, column j), active when i is the first token
//     of its id: acc = dtable[id, j], then acc += dout[t, j] along the chain in token order, then
//     dtable[id, j] = acc. The same additions in the same order as above (bit-identical).
// Nothing is saved for backward but the ids.

struct Params {
    n: u32,
    c: u32,
    accumulate: u32,
    vocab: u32,
    // embedding_bwd: number of id classes (y of the grid)
    classes: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- embedding_fwd: out, ids, table ----
@group(0) @binding(1) var<storage, read_write> f_out: array<f32>;
@group(0) @binding(2) var<storage, read> f_ids: array<i32>;
@group(0) @binding(3) var<storage, read> f_table: array<f32>;

@compute @workgroup_size(256)
fn embedding_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg, 256u);
    let c = p.c;
    if (idx >= p.n * c) {
        return;
    }
    let i = idx / c;
    let j = idx - i * c;
    let id = f_ids[i];
    let ok = id >= 0 && u32(id) < p.vocab;
    var v = 0.0;
    if (ok) {
        v = f_table[u32(id) * c + j];
    }
    if (p.accumulate != 0u) {
        f_out[idx] = f_out[idx] + v;
    } else {
        f_out[idx] = v;
    }
}

// ---- embedding_bwd: dtable, dout, ids ----
@group(0) @binding(1) var<storage, read_write> b_dtable: array<f32>;
@group(0) @binding(2) var<storage, read> b_dout: array<f32>;
@group(0) @binding(3) var<storage, read> b_ids: array<i32>;

var<workgroup> tile_ids: array<i32, 256>;

@compute @workgroup_size(256)
fn embedding_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = p.c;
    let j = wid.x * 256u + lid;
    let cls = wid.y;
    let n = p.n;
    for (var t0 = 0u; t0 < n; t0 = t0 + 256u) {
        workgroupBarrier();
        if (t0 + lid < n) {
            tile_ids[lid] = b_ids[t0 + lid];
        }
        workgroupBarrier();
        let len = min(256u, n - t0);
        for (var t = 0u; t < len; t = t + 1u) {
            let id = tile_ids[t];
            if (id >= 0 && u32(id) < p.vocab && u32(id) % p.classes == cls && j < c) {
                let dst = u32(id) * c + j;
                b_dtable[dst] = b_dtable[dst] + b_dout[(t0 + t) * c + j];
            }
        }
    }
}

// ---- embedding_bwd, chain path: links (scratch, ids), then chain (dtable, dout, ids, scratch) ----
@group(0) @binding(1) var<storage, read_write> l_links: array<u32>;
@group(0) @binding(2) var<storage, read> l_ids: array<i32>;

@compute @workgroup_size(64)
fn embedding_bwd_links(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg, 64u);
    let n = p.n;
    if (i >= n) {
        return;
    }
    let id = l_ids[i];
    var next = n;
    var first = 1u;
    if (id < 0 || u32(id) >= p.vocab) {
        first = 0u;
    } else {
        for (var t = 0u; t < i; t = t + 1u) {
            if (l_ids[t] == id) {
                first = 0u;
                break;
            }
        }
        for (var t = i + 1u; t < n; t = t + 1u) {
            if (l_ids[t] == id) {
                next = t;
                break;
            }
        }
    }
    l_links[i] = next;
    l_links[n + i] = first;
}

@group(0) @binding(1) var<storage, read_write> ch_dtable: array<f32>;
@group(0) @binding(2) var<storage, read> ch_dout: array<f32>;
@group(0) @binding(3) var<storage, read> ch_ids: array<i32>;
@group(0) @binding(4) var<storage, read> ch_links: array<u32>;

@compute @workgroup_size(64)
fn embedding_bwd_chain(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg, 64u);
    let n = p.n;
    let c = p.c;
    if (idx >= n * c) {
        return;
    }
    let i = idx / c;
    let j = idx - i * c;
    if (ch_links[n + i] == 0u) {
        return;
    }
    let dst = u32(ch_ids[i]) * c + j;
    var acc = ch_dtable[dst];
    var t = i;
    loop {
        acc = acc + ch_dout[t * c + j];
        t = ch_links[t];
        if (t >= n) {
            break;
        }
    }
    ch_dtable[dst] = acc;
}
