// The stand-in `libcublas.so`: the cuBLAS calls the backend makes (handle, stream, workspace,
// math mode, cublasSgemmStridedBatched, cublasGemmStridedBatchedEx), computed on the CPU in
// f32 in the stream's order (emu_enqueue_host of the stand-in driver, so stream capture records
// them). Operand types f32, f16 and bf16; C of f32 or bf16 (rounded to nearest even). The fast
// compute types round f32 operands first, as the GPU's tensor cores do: tf32 (10 mantissa bits),
// bf16 or f16, each to nearest even; every product accumulates in f32 over k in order.
// Column-major as cuBLAS: C = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n; with
// beta = 0, C is not read.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#include "api.h"
#include "blas_types.h"

extern "C" CUresult emu_enqueue_host(CUstream s, std::function<void()>* work);

namespace {

struct Handle {
    CUstream stream = nullptr;
};

int gemm(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, emu_blas::Operand a, emu_blas::Operand b, const float* beta, void* c, int ctype, int ldc,
         long long stride_c, int batch, int compute) {
    if (!h || m < 0 || n < 0 || k < 0 || batch < 0 || !emu_blas::known_type(a.type) || !emu_blas::known_type(b.type) || (ctype != CUDA_R_32F && ctype != CUDA_R_16BF)) return CUBLAS_STATUS_INVALID_VALUE;
    if (ta == CUBLAS_OP_C || tb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
    a.trans = ta == CUBLAS_OP_T;
    b.trans = tb == CUBLAS_OP_T;
    if (a.ld < (a.trans ? k : m) || b.ld < (b.trans ? n : k) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    const float al = *alpha, be = *beta;
    auto* work = new std::function<void()>([=] {
        std::vector<float> col(m);
        for (int e = 0; e < batch; e++) {
            for (int j = 0; j < n; j++) {
                emu_blas::product_column(col.data(), a, b, e, j, m, k, compute);
                for (int i = 0; i < m; i++) {
                    const long long at = e * stride_c + i + (long long)j * ldc;
                    if (ctype == CUDA_R_32F) {
                        float* out = static_cast<float*>(c) + at;
                        *out = be == 0.0f ? al * col[i] : al * col[i] + be * *out;
                    } else {
                        std::uint16_t* out = static_cast<std::uint16_t*>(c) + at;
                        const float v = be == 0.0f ? al * col[i] : al * col[i] + be * emu_blas::bf16_to_f32(*out);
                        *out = emu_blas::f32_to_bf16(v);
                    }
                }
            }
        }
    });
    return emu_enqueue_host(h->stream, work) == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // namespace

extern "C" {

int cublasCreate_v2(void** handle) {
    *handle = new Handle();
    return CUBLAS_STATUS_SUCCESS;
}
int cublasDestroy_v2(void* handle) {
    delete static_cast<Handle*>(handle);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasSetStream_v2(void* handle, CUstream s) {
    static_cast<Handle*>(handle)->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
int cublasGetStream_v2(void* handle, CUstream* s) {
    *s = static_cast<Handle*>(handle)->stream;
    return CUBLAS_STATUS_SUCCESS;
}
int cublasSetWorkspace_v2(void*, void*, std::size_t) { return CUBLAS_STATUS_SUCCESS; }
int cublasSetMathMode(void*, int) { return CUBLAS_STATUS_SUCCESS; }
int cublasSetPointerMode_v2(void*, int mode) { return mode == 0 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED; }

int cublasSgemmStridedBatched(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* a, int lda, long long sa, const float* b, int ldb,
                              long long sb, const float* beta, float* c, int ldc, long long sc, int batch) {
    return gemm(static_cast<Handle*>(h), ta, tb, m, n, k, alpha, emu_blas::Operand{a, CUDA_R_32F, lda, sa, false}, emu_blas::Operand{b, CUDA_R_32F, ldb, sb, false}, beta, c, CUDA_R_32F, ldc, sc,
                batch, CUBLAS_COMPUTE_32F);
}

int cublasGemmStridedBatchedEx(void* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* a, int atype, int lda, long long sa, const void* b, int btype,
                               int ldb, long long sb, const void* beta, void* c, int ctype, int ldc, long long sc, int batch, int compute, int /*algo*/) {
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC && compute != CUBLAS_COMPUTE_32F_FAST_TF32 && compute != CUBLAS_COMPUTE_32F_FAST_16BF &&
        compute != CUBLAS_COMPUTE_32F_FAST_16F)
        return CUBLAS_STATUS_NOT_SUPPORTED;  // f32 scalars and accumulation only
    return gemm(static_cast<Handle*>(h), ta, tb, m, n, k, static_cast<const float*>(alpha), emu_blas::Operand{a, atype, lda, sa, false}, emu_blas::Operand{b, btype, ldb, sb, false},
                static_cast<const float*>(beta), c, ctype, ldc, sc, batch, compute);
}

}  // extern "C"
