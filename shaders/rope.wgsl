// Rotary position embedding, in place, rotate-half convention (Llama/Qwen2 in `transformers`):
// rope_fwd, rope_bwd. Shapes: `x` is [n_tokens, row]; the first `n_rot_heads` heads of
// `head_dim` values of every row are rotated (q and k of the fused projection); `positions`
// [n_tokens] (i32). For head vector x (half h = head_dim / 2), position p, frequency
// f_j = theta^(-2j/head_dim), angle a = p f_j:
//   x'[j] = x[j] cos a - x[j+h] sin a,   x'[j+h] = x[j+h] cos a + x[j] sin a.
// rope_bwd applies the transpose (the rotation by -a) to the gradient. Nothing is saved.
//
// The frequencies come from the host in the uniform (`freq`, computed with the CPU reference's
// f32 expression, so the angle `f32(p) * f_j` has the CPU's bits even at large positions), at
// most FREQ_MAX per dispatch: the launcher covers j in [j0, j0 + nj) per dispatch. sin and cos
// are computed here (an exact Cody-Waite reduction by pi/2 and the Cephes polynomials, about
// 2e-7 absolute at any |angle| < 2^24) rather than with the builtins, whose accuracy outside
// [-pi, pi] is unspecified. One invocation per (token, j), looping over the rotated heads.
//
// Uniform: RopeParams { n_tokens, row, n_rot_heads, head_dim, theta, _pad }, then j0, nj and
// the frequencies f_{j0 .. j0 + nj} packed four to a vec4 (uniform arrays have a 16-byte stride).

const FREQ_VEC4: u32 = 14u;

struct RopeUniform {
    n_tokens: u32,
    row: u32,
    n_rot_heads: u32,
    head_dim: u32,
    theta: f32,
    _pad: u32,
    j0: u32,
    nj: u32,
    freq: array<vec4<f32>, FREQ_VEC4>,
}

@group(0) @binding(0) var<uniform> p: RopeUniform;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;

// (sin a, cos a) for an f32 angle a. Reduction a = k pi/2 + r, |r| <= pi/4, exact up to the
// last step for any |a| < 2^24 without relying on fused multiply-add (which some drivers, e.g.
// lavapipe, evaluate unfused): pi/2 is split into three parts of at most 12 significant bits
// plus an f32 tail, and k into three parts of at most 8 bits (cut toward zero), so every
// product k_part * pi_part is exact and every partial difference is representable; a k that
// the f32 estimate a * 2/pi got off by one is corrected at the end. Absolute error of r below
// 2e-7 (checked against a 80-digit reference over |a| < 2^24). Then the Cephes sinf/cosf
// polynomials on [-pi/4, pi/4] and the quadrant k mod 4.
const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.837512969970703125e-4;
const PIO2_3: f32 = 7.549533620476722717e-8;
const PIO2_4: f32 = 2.5633440682570896e-12;
const PIO2_HI: f32 = 1.57079637050628662109375;
const PIO2_LO: f32 = -4.371138828673792886547744274139404296875e-8;
const PIO4: f32 = 0.78539816339744830962;

fn sin_cos(a: f32) -> vec2<f32> {
    var k = round(a * 0.63661977236758134308);
    let kl = k - 256.0 * trunc(k * (1.0 / 256.0));
    let kmh = k - kl;
    let km = kmh - 65536.0 * trunc(kmh * (1.0 / 65536.0));
    let kh = kmh - km;
    var r = a - kh * PIO2_1;
    r = r - km * PIO2_1;
    r = r - kh * PIO2_2;
    r = r - kl * PIO2_1;
    r = r - km * PIO2_2;
    r = r - kh * PIO2_3;
    r = r - kl * PIO2_2;
    r = r - km * PIO2_3;
    r = r - kl * PIO2_3;
    r = r - k * PIO2_4;
    if (r > PIO4) {
        r = (r - PIO2_HI) - PIO2_LO;
        k = k + 1.0;
    } else if (r < -PIO4) {
        r = (r + PIO2_HI) + PIO2_LO;
        k = k - 1.0;
    }
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    let q = i32(k) & 3;
    if (q == 0) {
        return vec2<f32>(s, c);
    } else if (q == 1) {
        return vec2<f32>(c, -s);
    } else if (q == 2) {
        return vec2<f32>(-s, -c);
    }
    return vec2<f32>(-c, s);
}

fn rotate(e: u32, sign: f32) {
    if (e >= p.n_tokens * p.nj) {
        return;
    }
    let tok = e / p.nj;
    let jj = e - tok * p.nj;
    let j = p.j0 + jj;
    let f = p.freq[jj / 4u][jj % 4u];
    let a = f32(positions[tok]) * f;
    let sc = sin_cos(a);
    let s = sc.x * sign;
    let c = sc.y;
    let half = p.head_dim / 2u;
    for (var h = 0u; h < p.n_rot_heads; h = h + 1u) {
        let base = tok * p.row + h * p.head_dim + j;
        let x0 = x[base];
        let x1 = x[base + half];
        x[base] = x0 * c - x1 * s;
        x[base + half] = x1 * c + x0 * s;
    }
}

@compute @workgroup_size(256)
fn rope_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(flat_index(gid, nwg, 256u), 1.0);
}

@compute @workgroup_size(256)
fn rope_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(flat_index(gid, nwg, 256u), -1.0);
}
