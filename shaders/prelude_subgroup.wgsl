// Prelude for adapters with subgroup operations (Features::SUBGROUP): the same reductions as
// `prelude_plain.wgsl`, with subgroupAdd/subgroupMax inside each subgroup and one workgroup-memory
// round between subgroups. Assumes that subgroups are consecutive runs of local_invocation_index
// (true of Vulkan, Metal and D3D12 compute dispatches with full subgroups).
//
// Contract: called by all WG invocations of a workgroup of exactly WG threads
// (@workgroup_size(256)), in uniform control flow; every invocation gets the result.

const WG: u32 = 256u;

var<workgroup> red_buf: array<f32, 256>;

fn wg_sum(x: f32, lid: u32) -> f32 {
    let partial = subgroupAdd(x);
    let sg_size = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    if (lane == 0u) {
        red_buf[lid / sg_size] = partial;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < (WG + sg_size - 1u) / sg_size; i = i + 1u) {
        total = total + red_buf[i];
    }
    workgroupBarrier();
    return total;
}

fn wg_max(x: f32, lid: u32) -> f32 {
    let partial = subgroupMax(x);
    let sg_size = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    if (lane == 0u) {
        red_buf[lid / sg_size] = partial;
    }
    workgroupBarrier();
    var total = red_buf[0];
    for (var i = 1u; i < (WG + sg_size - 1u) / sg_size; i = i + 1u) {
        total = max(total, red_buf[i]);
    }
    workgroupBarrier();
    return total;
}

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, wg_x: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg_x;
}
