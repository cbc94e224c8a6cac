// The process-wide table of compiled kernels, filled by the generated wrapper of every kernel
// file at load time (static constructors) and searched by cuModuleLoadData. Entry names are
// unique across kernels/ (the backend keys its functions by name alone); a duplicate aborts.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "api.h"
#include "runtime.h"

namespace emu {

namespace {
std::map<std::string, const Kernel*>& table() {
    static std::map<std::string, const Kernel*> t;
    return t;
}
}  // namespace

void register_kernels(const char* family, const Kernel* kernels, int count) {
    for (int i = 0; i < count; i++) {
        if (!table().emplace(kernels[i].name, &kernels[i]).second) {
            std::fprintf(stderr, "cuda emulator: kernel `%s` of %s is defined twice\n", kernels[i].name, family);
            std::abort();
        }
    }
}

const Kernel* find_kernel(const char* name) {
    auto it = table().find(name);
    return it == table().end() ? nullptr : it->second;
}

}  // namespace emu

const char* error_name(CUresult r) {
    switch (r) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_NO_BINARY_FOR_GPU: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
        case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_ILLEGAL_STATE: return "CUDA_ERROR_ILLEGAL_STATE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
        case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
        case CUDA_ERROR_STREAM_CAPTURE_IMPLICIT: return "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT";
        default: return "CUDA_ERROR_UNKNOWN";
    }
}
