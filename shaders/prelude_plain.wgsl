// Prelude for adapters without subgroup operations: workgroup-wide reductions through
// workgroup memory. Appended to every op family's source (after it, so that line numbers in
// naga's messages are the family file's). `prelude_subgroup.wgsl` defines the same functions.
//
// Contract of the reductions: called by all WG invocations of a workgroup of exactly WG threads
// (@workgroup_size(256)), in uniform control flow; every invocation gets the result.

const WG: u32 = 256u;

var<workgroup> red_buf: array<f32, 256>;

fn wg_sum(x: f32, lid: u32) -> f32 {
    red_buf[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_buf[lid] = red_buf[lid] + red_buf[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_buf[0];
    workgroupBarrier();
    return total;
}

fn wg_max(x: f32, lid: u32) -> f32 {
    red_buf[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_buf[lid] = max(red_buf[lid], red_buf[lid + s]);
        }
        workgroupBarrier();
    }
    let total = red_buf[0];
    workgroupBarrier();
    return total;
}

// The flat index of an invocation of a 1-D grid that was folded into x and y (at most 65535
// workgroups per dimension): `gid` the global invocation id, `nwg` the number of workgroups.
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, wg_x: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg_x;
}
