// decode_advance: the rollout engine's bookkeeping of one decode step on the device
// (DecodeAdvanceParams; the reference is src/backend/cpu/decode.rs), so that decode steps follow
// one another without reading the sampled ids back.
//
// Per row r < n (one invocation each; a slot appears at most once per step, so rows never race):
//   s = cache_rows[r] / t_max, st = state[4 s ..] = [len, resp_len, finish, last]
//   finished (finish != 0): record_rows[r] = dump_row, nothing else changes
//   running:  history[s stride + resp_len] = id = sampled[r]; len += 1; resp_len += 1; last = id
//             finish = 1 (stop) if id in stop_ids[..n_stop], else 2 (max_new) if resp_len >= max_new,
//             else 3 (context) if len + 1 >= max_len, else 0
//             tokens[r] = id, positions[r] = len, cache_rows[r] = s t_max + len,
//             record_rows[r] = s stride + resp_len, or dump_row once finished
// A row whose slot is outside `slots` or whose history is full is skipped.
// The sampling step counter state[4 slots] (the step key of sample.wgsl) += 1, by invocation 0
// (no row touches it).
// Shapes: state [slots, 4] + 1 (the counter), history [slots, stride], the row buffers [n], stop_ids [n_stop].
// Nothing is saved for backward (integer bookkeeping, no gradient).

struct DecodeAdvanceParams {
    n: u32,
    slots: u32,
    t_max: u32,
    stride: u32,
    max_new: u32,
    max_len: u32,
    n_stop: u32,
    dump_row: u32,
}

@group(0) @binding(0) var<uniform> p: DecodeAdvanceParams;
@group(0) @binding(1) var<storage, read_write> state: array<i32>;
@group(0) @binding(2) var<storage, read_write> history: array<i32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<i32>;
@group(0) @binding(4) var<storage, read_write> positions: array<i32>;
@group(0) @binding(5) var<storage, read_write> cache_rows: array<i32>;
@group(0) @binding(6) var<storage, read_write> record_rows: array<i32>;
@group(0) @binding(7) var<storage, read> sampled: array<i32>;
@group(0) @binding(8) var<storage, read> stop_ids: array<i32>;

@compute @workgroup_size(64)
fn decode_advance(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat_index(gid, nwg, 64u);
    if (r == 0u && p.n > 0u) {
        state[4u * p.slots] = state[4u * p.slots] + 1;
    }
    if (r >= p.n || p.t_max == 0u) {
        return;
    }
    let row = cache_rows[r];
    if (row < 0 || u32(row) / p.t_max >= p.slots) {
        return;
    }
    let s = u32(row) / p.t_max;
    let b = 4u * s;
    if (state[b + 2u] != 0) {
        record_rows[r] = i32(p.dump_row);
        return;
    }
    let resp0 = state[b + 1u];
    if (resp0 < 0 || u32(resp0) >= p.stride) {
        return;
    }
    let id = sampled[r];
    history[s * p.stride + u32(resp0)] = id;
    let len = state[b] + 1;
    let resp = resp0 + 1;
    var finish = 0;
    for (var j = 0u; j < p.n_stop; j = j + 1u) {
        if (stop_ids[j] == id) {
            finish = 1;
        }
    }
    if (finish == 0 && u32(resp) >= p.max_new) {
        finish = 2;
    }
    if (finish == 0 && u32(len + 1) >= p.max_len) {
        finish = 3;
    }
    state[b] = len;
    state[b + 1u] = resp;
    state[b + 2u] = finish;
    state[b + 3u] = id;
    tokens[r] = id;
    positions[r] = len;
    cache_rows[r] = i32(s * p.t_max) + len;
    record_rows[r] = select(i32(p.dump_row), i32(s * p.stride) + resp, finish == 0);
}
