// The stand-in `libcublasLt.so`: the cuBLASLt calls of the backend's fused epilogues
// (src/backend/cuda/epilogue.rs) on the CPU. Descriptors hold what was set; the heuristic offers
// one algorithm for every combination computed here (epilogues DEFAULT, BIAS, GELU, GELU_AUX,
// GELU_BIAS, GELU_AUX_BIAS, DGELU; A and B f32 or bf16; C, D, bias and aux f32 or bf16; no batch)
// and NOT_SUPPORTED otherwise. cublasLtMatmul copies the call's settings and queues it on the
// stream through the stand-in driver (so captures record it):
//   t = alpha op(A) op(B) + beta C (+ bias[row]); GELU*: aux = t, D = gelu(t); DGELU: D = t gelu'(aux)
// with GPT-2's tanh GELU, each in f32, stored in the buffer's type (bf16: nearest even).
#include <cmath>
#include <cstring>
#include <functional>

#include "api.h"
#include "blas_types.h"

extern "C" CUresult emu_enqueue_host(CUstream s, std::function<void()>* work);

namespace {

enum : int {
    EPI_DEFAULT = 1,
    EPI_BIAS = 4,
    EPI_GELU = 32,
    EPI_GELU_BIAS = 36,
    EPI_GELU_AUX = 160,
    EPI_GELU_AUX_BIAS = 164,
    EPI_DGELU = 192,
};

struct Desc {
    int compute = CUBLAS_COMPUTE_32F, scale = CUDA_R_32F;
    int transa = 0, transb = 0;
    unsigned epilogue = EPI_DEFAULT;
    const void* bias = nullptr;
    int bias_type = -1;
    void* aux = nullptr;
    long long aux_ld = 0;
};

struct Layout {
    int type;
    unsigned long long rows, cols;
    long long ld;
    int batch = 1;
};

template <typename T>
int set(T& field, const void* buf, std::size_t size) {
    if (size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}

bool known_epilogue(unsigned e) {
    return e == EPI_DEFAULT || e == EPI_BIAS || e == EPI_GELU || e == EPI_GELU_BIAS || e == EPI_GELU_AUX || e == EPI_GELU_AUX_BIAS || e == EPI_DGELU;
}
bool has_bias(unsigned e) { return e == EPI_BIAS || e == EPI_GELU_BIAS || e == EPI_GELU_AUX_BIAS; }
bool has_aux(unsigned e) { return e == EPI_GELU_AUX || e == EPI_GELU_AUX_BIAS || e == EPI_DGELU; }
bool c_type(int t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

// Why this combination is not computed here (CUBLAS_STATUS_*), or SUCCESS.
int check(const Desc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& dd) {
    if (!known_epilogue(d.epilogue) || d.scale != CUDA_R_32F || a.batch != 1 || b.batch != 1 || c.batch != 1 || dd.batch != 1) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!emu_blas::known_type(a.type) || a.type != b.type || !c_type(c.type) || c.type != dd.type) return CUBLAS_STATUS_NOT_SUPPORTED;
    const unsigned long long m = d.transa ? a.cols : a.rows, k = d.transa ? a.rows : a.cols;
    const unsigned long long kb = d.transb ? b.cols : b.rows, n = d.transb ? b.rows : b.cols;
    if (k != kb || c.rows != m || c.cols != n || dd.rows != m || dd.cols != n) return CUBLAS_STATUS_INVALID_VALUE;
    if (has_bias(d.epilogue) && (!d.bias || (d.bias_type != -1 && d.bias_type != dd.type))) return CUBLAS_STATUS_INVALID_VALUE;
    if (has_aux(d.epilogue) && (!d.aux || d.aux_ld < (long long)m)) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

constexpr float GELU_S = 0.7978845608f;  // sqrt(2 / pi)
float gelu(float x) { return 0.5f * x * (1.0f + std::tanh(GELU_S * (x + 0.044715f * x * x * x))); }
float dgelu(float x) {
    const float t = std::tanh(GELU_S * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
}

}  // namespace

extern "C" {

int cublasLtCreate(void** h) {
    *h = new int(0);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtDestroy(void* h) {
    delete static_cast<int*>(h);
    return CUBLAS_STATUS_SUCCESS;
}

int cublasLtMatmulDescCreate(void** d, int compute, int scale) {
    auto* desc = new Desc();
    desc->compute = compute;
    desc->scale = scale;
    *d = desc;
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtMatmulDescDestroy(void* d) {
    delete static_cast<Desc*>(d);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtMatmulDescSetAttribute(void* h, int attr, const void* buf, std::size_t size) {
    Desc& d = *static_cast<Desc*>(h);
    switch (attr) {
        case 3: return set(d.transa, buf, size);
        case 4: return set(d.transb, buf, size);
        case 7: return set(d.epilogue, buf, size);
        case 8: return set(d.bias, buf, size);
        case 11: return set(d.aux, buf, size);
        case 12: return set(d.aux_ld, buf, size);
        case 26: return set(d.bias_type, buf, size);
        default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

int cublasLtMatrixLayoutCreate(void** l, int type, unsigned long long rows, unsigned long long cols, long long ld) {
    *l = new Layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtMatrixLayoutDestroy(void* l) {
    delete static_cast<Layout*>(l);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtMatrixLayoutSetAttribute(void* h, int attr, const void* buf, std::size_t size) {
    Layout& l = *static_cast<Layout*>(h);
    if (attr == 5) return set(l.batch, buf, size);
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

int cublasLtMatmulPreferenceCreate(void** p) {
    *p = new int(0);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtMatmulPreferenceDestroy(void* p) {
    delete static_cast<int*>(p);
    return CUBLAS_STATUS_SUCCESS;
}
int cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, std::size_t) { return CUBLAS_STATUS_SUCCESS; }

// cublasLtMatmulHeuristicResult_t: algo (8 u64), workspaceSize, state, wavesCount, reserved[4]
struct HeuristicResult {
    unsigned long long algo[8];
    std::size_t workspace;
    int state;
    float waves;
    int reserved[4];
};

int cublasLtMatmulAlgoGetHeuristic(void*, void* desc, void* a, void* b, void* c, void* d, void*, int requested, HeuristicResult* out, int* count) {
    *count = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    const int why = check(*static_cast<Desc*>(desc), *static_cast<Layout*>(a), *static_cast<Layout*>(b), *static_cast<Layout*>(c), *static_cast<Layout*>(d));
    if (why == CUBLAS_STATUS_INVALID_VALUE) return why;
    if (why != CUBLAS_STATUS_SUCCESS) return CUBLAS_STATUS_SUCCESS;  // no algorithm: count 0
    std::memset(out, 0, sizeof *out);
    out->algo[0] = 0xe5;
    out->waves = 1.0f;
    *count = 1;
    return CUBLAS_STATUS_SUCCESS;
}

int cublasLtMatmul(void*, void* hdesc, const void* alpha, const void* A, void* ha, const void* B, void* hb, const void* beta, const void* C, void* hc, void* D, void* hd,
                   const void*, void*, std::size_t, CUstream stream) {
    const Desc d = *static_cast<Desc*>(hdesc);
    const Layout la = *static_cast<Layout*>(ha), lb = *static_cast<Layout*>(hb), lc = *static_cast<Layout*>(hc), ld = *static_cast<Layout*>(hd);
    if (int why = check(d, la, lb, lc, ld); why != CUBLAS_STATUS_SUCCESS) return why;
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    const long long m = (long long)lc.rows, n = (long long)lc.cols, k = (long long)(d.transa ? la.rows : la.cols);
    const emu_blas::Operand a{A, la.type, la.ld, 0, d.transa != 0}, b{B, lb.type, lb.ld, 0, d.transb != 0};
    auto* work = new std::function<void()>([=] {
        std::vector<float> col(m);
        for (long long j = 0; j < n; j++) {
            emu_blas::product_column(col.data(), a, b, 0, j, m, k, d.compute);
            for (long long i = 0; i < m; i++) {
                float t = al * col[i];
                if (be != 0.0f) t += be * emu_blas::get(C, lc.type, i + j * lc.ld);
                if (has_bias(d.epilogue)) t += emu_blas::get(d.bias, ld.type, i);
                const long long x = i + j * d.aux_ld;
                switch (d.epilogue) {
                    case EPI_GELU:
                    case EPI_GELU_BIAS: t = gelu(t); break;
                    case EPI_GELU_AUX:
                    case EPI_GELU_AUX_BIAS:
                        emu_blas::put(d.aux, ld.type, x, t);
                        t = gelu(t);
                        break;
                    case EPI_DGELU: t *= dgelu(emu_blas::get(d.aux, ld.type, x)); break;
                    default: break;
                }
                emu_blas::put(D, ld.type, i + j * ld.ld, t);
            }
        }
    });
    return emu_enqueue_host(stream, work) == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // extern "C"
