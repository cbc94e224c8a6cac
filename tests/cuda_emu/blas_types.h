// What the stand-in cuBLAS and cuBLASLt share: cuBLAS's codes (values of cublas_api.h and
// library_types.h) and the conversions and operand roundings of the fast compute types.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>
#include <algorithm>

enum : int {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum : int { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum : int {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
};

namespace emu_blas {

inline float bf16_to_f32(std::uint16_t h) { return std::bit_cast<float>((std::uint32_t)h << 16); }

inline std::uint16_t f32_to_bf16(float f) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (std::uint16_t)((u >> 16) | 0x40u);
    return (std::uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(std::uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const float s = (h & 0x8000) ? -1.0f : 1.0f;
    if (e == 0) return s * std::ldexp((float)m, -24);
    if (e == 31) return m ? NAN : s * INFINITY;
    return s * std::ldexp((float)(m | 1024), e - 25);
}

// f32 rounded to nearest even keeping `bits` mantissa bits (NaN and infinity kept)
inline float keep_mantissa(float f, int bits) {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;
    const int drop = 23 - bits;
    const std::uint32_t half = (1u << (drop - 1)) - 1 + ((u >> drop) & 1u);
    return std::bit_cast<float>((u + half) & ~((1u << drop) - 1));
}

// an f32 value rounded to half precision (as f32: subnormals, overflow to infinity)
inline float round_f16(float f) {
    if (!std::isfinite(f)) return f;
    const float a = std::fabs(f);
    if (a >= 65520.0f) return std::copysign(INFINITY, f);
    if (a < 6.103515625e-05f) return std::nearbyint(f * 16777216.0f) / 16777216.0f;  // subnormal step 2^-24
    return keep_mantissa(f, 10);
}

// an operand as the compute type sees it
inline float round_operand(float v, int compute) {
    switch (compute) {
        case CUBLAS_COMPUTE_32F_FAST_TF32: return keep_mantissa(v, 10);
        case CUBLAS_COMPUTE_32F_FAST_16BF: return bf16_to_f32(f32_to_bf16(v));
        case CUBLAS_COMPUTE_32F_FAST_16F: return round_f16(v);
        default: return v;
    }
}

inline bool known_type(int t) { return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F; }

// A column-major operand in device memory: type, leading dimension, batch stride, transposed.
struct Operand {
    const void* p;
    int type;
    long long ld;
    long long stride;
    bool trans;
};

// Element (row, col) of op(X) in batch entry b, as f32 rounded for the compute type.
inline float load(const Operand& x, long long b, long long row, long long col, int compute) {
    const long long at = b * x.stride + (x.trans ? col + row * x.ld : row + col * x.ld);
    float v;
    if (x.type == CUDA_R_32F) v = static_cast<const float*>(x.p)[at];
    else if (x.type == CUDA_R_16BF) v = bf16_to_f32(static_cast<const std::uint16_t*>(x.p)[at]);
    else v = f16_to_f32(static_cast<const std::uint16_t*>(x.p)[at]);
    return round_operand(v, compute);
}

// col[i] = sum over l < k, in order, of op(A)(i, l) op(B)(l, j), for i < m (f32 FMAs).
inline void product_column(float* col, const Operand& a, const Operand& b, long long e, long long j, long long m, long long k, int compute) {
    std::fill(col, col + m, 0.0f);
    for (long long l = 0; l < k; l++) {
        const float bv = load(b, e, l, j, compute);
        for (long long i = 0; i < m; i++) col[i] = std::fma(load(a, e, i, l, compute), bv, col[i]);
    }
}

// Reads / writes element `at` of a C-type buffer (f32 or bf16) as f32.
inline float get(const void* p, int type, long long at) {
    return type == CUDA_R_32F ? static_cast<const float*>(p)[at] : bf16_to_f32(static_cast<const std::uint16_t*>(p)[at]);
}
inline void put(void* p, int type, long long at, float v) {
    if (type == CUDA_R_32F) static_cast<float*>(p)[at] = v;
    else static_cast<std::uint16_t*>(p)[at] = f32_to_bf16(v);
}

}  // namespace emu_blas
