// The stand-in `libcuda.so`: the part of the CUDA driver API that cudarc 0.19 and the backend call,
// on the CPU. One device (reported as sm_90, so the bf16 paths run); device memory is host memory
// (a CUdeviceptr is the address); streams and events run everything synchronously, in call order.
// Modules: cuModuleLoadData gets NVRTC's PTX; each `.entry` must name a kernel compiled into this
// library (registry.cpp) whose parameter sizes match the PTX `.param` list. A CUBIN (an ELF image,
// the backend's first choice) is not read: its functions resolve by name when asked for, and
// RLHF_CUDA_EMU_CUBIN=0 refuses it so that the backend's PTX fallback runs instead. cuLaunchKernel copies
// the parameters and runs the grid (scheduler.cpp), or records it while its stream is capturing;
// a graph replays its recorded launches, copies and memsets in order.
//
// Capture follows CUDA's rules where the backend depends on them: a synchronous copy, allocation,
// free or synchronisation on (or, in global/thread-local mode, by the thread of) a capturing
// stream fails with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture, whose end
// then fails with CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.
//
// A failed launch (deadlock, divergent barrier, out-of-mask shuffle) returns
// CUDA_ERROR_LAUNCH_FAILED; its message (kernel, block, thread, file:line) goes to stderr and
// becomes that code's cuGetErrorString text, so it shows in the Rust error. Unlike a real device
// the error is not sticky: later calls work.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api.h"
#include "scheduler.h"

using namespace emu;

namespace {

struct Function {
    const Kernel* kernel;
    int max_dyn_smem = 48 << 10;
};

struct Module {
    std::map<std::string, std::unique_ptr<Function>> functions;
    // a CUBIN image: machine code for a real GPU, which the emulator does not read; its functions
    // resolve by name against the compiled kernels when asked for
    bool cubin = false;
};

struct Node {
    enum { Launch, Copy, Set, Host } kind;
    std::shared_ptr<std::function<void()>> host;  // work of the stand-in libraries (cuBLAS)
    Function* f = nullptr;
    Grid g{};
    std::vector<std::vector<unsigned char>> params;
    void* dst = nullptr;
    const void* src = nullptr;
    std::size_t bytes = 0;
    unsigned char value = 0;
};

struct Graph {
    std::vector<Node> nodes;
};

struct Stream {
    bool capturing = false;
    bool invalidated = false;
    int mode = 0;
    Graph* graph = nullptr;
};

struct Event {
    int dummy = 0;
};

struct Context {
    int dummy = 0;
};

Context primary;
thread_local Context* current_ctx = nullptr;
// streams capturing in global or thread-local mode that this thread began
thread_local std::vector<Stream*> my_captures;
std::mutex state_mutex;
std::map<unsigned long long, std::size_t> allocations;  // address -> bytes
std::string launch_error = "unspecified launch failure";
bool initialised = false;

constexpr std::size_t TOTAL_MEM = 80ull << 30;

CUresult fail_capture(Stream* s) {
    s->invalidated = true;
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

// An operation the capture rules forbid while `s` (or a capture of this thread) is capturing.
CUresult unsafe_during_capture(Stream* s) {
    if (s && s->capturing) return fail_capture(s);
    for (Stream* c : my_captures)
        if (c->capturing && c->mode != CU_STREAM_CAPTURE_MODE_RELAXED) return fail_capture(c);
    return CUDA_SUCCESS;
}

void run_node(const Node& n, CUresult& r);

CUresult launch(Function* f, const Grid& g, std::vector<std::vector<unsigned char>>& params) {
    std::vector<void*> args;
    for (auto& p : params) args.push_back(p.data());
    std::string e = run_grid(*f->kernel, g, args.data());
    if (e.empty()) return CUDA_SUCCESS;
    std::fprintf(stderr, "cuda emulator: %s\n", e.c_str());
    std::lock_guard<std::mutex> l(state_mutex);
    launch_error = "launch failed: " + e;
    return CUDA_ERROR_LAUNCH_FAILED;
}

void run_node(const Node& n, CUresult& r) {
    switch (n.kind) {
        case Node::Launch: {
            auto params = n.params;
            r = launch(n.f, n.g, params);
            break;
        }
        case Node::Copy: std::memmove(n.dst, n.src, n.bytes); break;
        case Node::Set: std::memset(n.dst, n.value, n.bytes); break;
        case Node::Host: (*n.host)(); break;
    }
}

// Runs `n` now, or appends it to the capture of `s`.
CUresult enqueue(CUstream hs, Node n) {
    auto* s = reinterpret_cast<Stream*>(hs);
    if (s && s->capturing) {
        if (s->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        s->graph->nodes.push_back(std::move(n));
        return CUDA_SUCCESS;
    }
    if (!s) {
        // the legacy default stream synchronises with capturing streams: not allowed
        CUresult r = unsafe_during_capture(nullptr);
        if (r != CUDA_SUCCESS) return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
    CUresult r = CUDA_SUCCESS;
    run_node(n, r);
    return r;
}

CUresult copy(void* dst, const void* src, std::size_t bytes, CUstream s, bool sync) {
    if (sync) {
        CUresult r = unsafe_during_capture(reinterpret_cast<Stream*>(s));
        if (r != CUDA_SUCCESS) return r;
    }
    Node n{Node::Copy};
    n.dst = dst;
    n.src = src;
    n.bytes = bytes;
    return enqueue(s, std::move(n));
}

CUresult memset8(CUdeviceptr d, unsigned char v, std::size_t bytes, CUstream s, bool sync) {
    if (sync) {
        CUresult r = unsafe_during_capture(reinterpret_cast<Stream*>(s));
        if (r != CUDA_SUCCESS) return r;
    }
    Node n{Node::Set};
    n.dst = reinterpret_cast<void*>(d);
    n.bytes = bytes;
    n.value = v;
    return enqueue(s, std::move(n));
}

CUresult alloc(CUdeviceptr* p, std::size_t bytes, CUstream s) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    CUresult r = unsafe_during_capture(reinterpret_cast<Stream*>(s));
    if (r != CUDA_SUCCESS) return r;
    void* m = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    std::lock_guard<std::mutex> l(state_mutex);
    *p = reinterpret_cast<CUdeviceptr>(m);
    allocations[*p] = bytes;
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p, CUstream s) {
    CUresult r = unsafe_during_capture(reinterpret_cast<Stream*>(s));
    if (r != CUDA_SUCCESS) return r;
    if (!p) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> l(state_mutex);
    auto it = allocations.find(p);
    if (it == allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    allocations.erase(it);
    std::free(reinterpret_cast<void*>(p));
    return CUDA_SUCCESS;
}

// The `.entry` names of PTX text, each with its parameter sizes (in bytes).
std::vector<std::pair<std::string, std::vector<int>>> ptx_entries(const char* ptx) {
    std::vector<std::pair<std::string, std::vector<int>>> out;
    const char* p = ptx;
    while ((p = std::strstr(p, ".entry "))) {
        p += 7;
        while (*p == ' ') p++;
        const char* e = p;
        while (*e && *e != '(' && *e != ' ' && *e != '\n') e++;
        std::string name(p, e);
        std::vector<int> sizes;
        const char* close = std::strchr(e, ')');
        const char* q = e;
        while (close && (q = std::strstr(q, ".param")) && q < close) {
            q += 6;
            const char* eol = std::strpbrk(q, ",)");
            std::string decl(q, eol ? eol : q);
            // the type is the first token (".u64 name", ".align 4 .b8 name[40]"): the name may hold digits
            const auto t0 = decl.find_first_not_of(' '), t1 = decl.find(' ', t0);
            const std::string type = t0 == std::string::npos ? "" : decl.substr(t0, t1 == std::string::npos ? std::string::npos : t1 - t0);
            int size = 0;
            if (auto lb = decl.find('['); lb != std::string::npos) size = std::atoi(decl.c_str() + lb + 1);
            else if (type.find("64") != std::string::npos) size = 8;
            else if (type.find("32") != std::string::npos) size = 4;
            else if (type.find("16") != std::string::npos) size = 2;
            else if (type.find("8") != std::string::npos) size = 1;
            sizes.push_back(size);
        }
        out.emplace_back(name, sizes);
    }
    return out;
}

}  // namespace

// The text of the last failed launch (for tests of the emulator itself).
extern "C" const char* emu_last_launch_error() { return launch_error.c_str(); }
// Runs `*work` in stream order (now, or in the graph being captured on `s`); takes ownership. The
// stand-in cuBLAS queues its products through this, so they are captured like launches.
extern "C" CUresult emu_enqueue_host(CUstream s, std::function<void()>* work) {
    Node n{Node::Host};
    n.host.reset(work);
    return enqueue(s, std::move(n));
}

// Overrides the thread order (for tests of the emulator itself); 0 for an unknown name.
extern "C" int emu_set_order(const char* name) { return set_order(name); }

extern "C" {

CUresult cuInit(unsigned) {
    std::string e = config_error();
    if (!e.empty()) {
        std::fprintf(stderr, "cuda emulator: %s\n", e.c_str());
        return CUDA_ERROR_INVALID_VALUE;
    }
    initialised = true;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* v) {
    *v = 12080;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return initialised ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::snprintf(name, len, "CUDA emulator (CPU)");
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(std::size_t* bytes, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = TOTAL_MEM;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice) {
    std::memset(uuid, 0xe5, 16);
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attr) {
        case 1: *v = 1024; break;                       // max threads per block
        case 2: case 3: *v = 1024; break;               // max block dim x, y
        case 4: *v = 64; break;                         // max block dim z
        case 5: *v = 2147483647; break;                 // max grid dim x
        case 6: case 7: *v = 65535; break;              // max grid dim y, z
        case 8: *v = 48 << 10; break;                   // shared memory per block
        case 10: *v = 32; break;                        // warp size
        case 16: *v = 132; break;                       // multiprocessors
        case 75: *v = 9; break;                         // compute capability major
        case 76: *v = 0; break;                         // minor
        case 97: *v = (int)MAX_DYN_SMEM; break;         // shared memory per block, opt-in
        case 115: *v = 1; break;                        // memory pools supported
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *c = reinterpret_cast<CUcontext>(&primary);
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }

CUresult cuCtxSetCurrent(CUcontext c) {
    current_ctx = reinterpret_cast<Context*>(c);
    return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = reinterpret_cast<CUcontext>(current_ctx);
    return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult cuCtxPushCurrent_v2(CUcontext c) { return cuCtxSetCurrent(c); }
CUresult cuCtxPopCurrent_v2(CUcontext* c) {
    if (c) *c = reinterpret_cast<CUcontext>(current_ctx);
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() { return unsafe_during_capture(nullptr); }
CUresult cuCtxSetFlags(unsigned) { return CUDA_SUCCESS; }
CUresult cuCtxSetLimit(int, std::size_t) { return CUDA_SUCCESS; }
CUresult cuCtxGetLimit(std::size_t* v, int) {
    *v = 0;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo_v2(std::size_t* free_bytes, std::size_t* total) {
    *free_bytes = TOTAL_MEM / 2;
    *total = TOTAL_MEM;
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, std::size_t bytes) { return alloc(p, bytes, nullptr); }
CUresult cuMemAllocAsync(CUdeviceptr* p, std::size_t bytes, CUstream s) { return alloc(p, bytes, s); }
CUresult cuMemFree_v2(CUdeviceptr p) { return release(p, nullptr); }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { return release(p, s); }
CUresult cuMemHostAlloc(void** p, std::size_t bytes, unsigned) {
    *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
CUresult cuMemFreeHost(void* p) {
    std::free(p);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* h, std::size_t n) { return copy(reinterpret_cast<void*>(d), h, n, nullptr, true); }
CUresult cuMemcpyDtoH_v2(void* h, CUdeviceptr d, std::size_t n) { return copy(h, reinterpret_cast<void*>(d), n, nullptr, true); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, std::size_t n) { return copy(reinterpret_cast<void*>(d), reinterpret_cast<void*>(s), n, nullptr, true); }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* h, std::size_t n, CUstream s) { return copy(reinterpret_cast<void*>(d), h, n, s, false); }
CUresult cuMemcpyDtoHAsync_v2(void* h, CUdeviceptr d, std::size_t n, CUstream s) { return copy(h, reinterpret_cast<void*>(d), n, s, false); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr src, std::size_t n, CUstream s) {
    return copy(reinterpret_cast<void*>(d), reinterpret_cast<void*>(src), n, s, false);
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, std::size_t n) { return memset8(d, v, n, nullptr, true); }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, std::size_t n, CUstream s) { return memset8(d, v, n, s, false); }

CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = reinterpret_cast<CUstream>(new Stream());
    return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned f, int) { return cuStreamCreate(s, f); }
CUresult cuStreamDestroy_v2(CUstream s) {
    delete reinterpret_cast<Stream*>(s);
    return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream s) {
    auto* st = reinterpret_cast<Stream*>(s);
    if (st && st->capturing) return fail_capture(st);
    return CUDA_SUCCESS;
}
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return CUDA_SUCCESS; }
CUresult cuLaunchHostFunc(CUstream, void (*fn)(void*), void* data) {
    fn(data);
    return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = reinterpret_cast<CUevent>(new Event());
    return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) {
    delete reinterpret_cast<Event*>(e);
    return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, CUevent, CUevent) {
    *ms = 0.0f;
    return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }

CUresult cuModuleLoadData(CUmodule* m, const void* image) {
    auto mod = std::make_unique<Module>();
    if (std::memcmp(image, "\x7f" "ELF", 4) == 0) {
        // RLHF_CUDA_EMU_CUBIN=0 refuses CUBINs, as a driver that cannot run one would: the backend
        // then loads its PTX fallback, whose parameters are checked below
        const char* cubin = std::getenv("RLHF_CUDA_EMU_CUBIN");
        if (cubin && std::strcmp(cubin, "0") == 0) return CUDA_ERROR_NO_BINARY_FOR_GPU;
        mod->cubin = true;
        *m = reinterpret_cast<CUmodule>(mod.release());
        return CUDA_SUCCESS;
    }
    for (auto& [name, sizes] : ptx_entries(static_cast<const char*>(image))) {
        const Kernel* k = find_kernel(name.c_str());
        if (!k) {
            std::fprintf(stderr, "cuda emulator: the PTX has kernel `%s`, which is not compiled into the emulator\n", name.c_str());
            return CUDA_ERROR_INVALID_PTX;
        }
        bool same = (int)sizes.size() == k->n_params;
        for (int i = 0; same && i < k->n_params; i++) same = sizes[i] == k->param_size[i];
        if (!same) {
            std::fprintf(stderr, "cuda emulator: kernel `%s`: the PTX parameters differ from the C++ build's\n", name.c_str());
            return CUDA_ERROR_INVALID_PTX;
        }
        mod->functions[name] = std::make_unique<Function>(Function{k});
    }
    *m = reinterpret_cast<CUmodule>(mod.release());
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(CUmodule m) {
    delete reinterpret_cast<Module*>(m);
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
    auto* mod = reinterpret_cast<Module*>(m);
    auto& fs = mod->functions;
    auto it = fs.find(name);
    if (it == fs.end() && mod->cubin) {
        if (const Kernel* k = find_kernel(name)) it = fs.emplace(name, std::make_unique<Function>(Function{k})).first;
    }
    if (it == fs.end()) return CUDA_ERROR_NOT_FOUND;
    *f = reinterpret_cast<CUfunction>(it->second.get());
    return CUDA_SUCCESS;
}

CUresult cuFuncGetAttribute(int* v, int attr, CUfunction hf) {
    auto* f = reinterpret_cast<Function*>(hf);
    switch (attr) {
        case 0: *v = 1024; break;                 // max threads per block
        case 4: *v = 32; break;                   // registers
        case 8: *v = f->max_dyn_smem; break;      // max dynamic shared memory
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(CUfunction hf, int attr, int v) {
    auto* f = reinterpret_cast<Function*>(hf);
    if (attr == 8) {
        if (v < 0 || (std::size_t)v > MAX_DYN_SMEM) return CUDA_ERROR_INVALID_VALUE;
        f->max_dyn_smem = v;
    }
    return CUDA_SUCCESS;
}
CUresult cuFuncSetCacheConfig(CUfunction, int) { return CUDA_SUCCESS; }

CUresult cuLaunchKernel(CUfunction hf, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem, CUstream s,
                        void** params, void** extra) {
    auto* f = reinterpret_cast<Function*>(hf);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    const unsigned long long threads = (unsigned long long)bx * by * bz;
    if (extra || gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || threads == 0 || threads > 1024 || bz > 64 || (int)smem > f->max_dyn_smem) {
        std::fprintf(stderr, "cuda emulator: kernel `%s`: invalid launch (grid %u,%u,%u block %u,%u,%u, %u bytes of dynamic shared memory, %d allowed)\n",
                     f->kernel->name, gx, gy, gz, bx, by, bz, smem, f->max_dyn_smem);
        return CUDA_ERROR_INVALID_VALUE;
    }
    Node n{Node::Launch};
    n.f = f;
    n.g = Grid{{gx, gy, gz}, {bx, by, bz}, smem};
    for (int i = 0; i < f->kernel->n_params; i++) {
        auto* p = static_cast<unsigned char*>(params[i]);
        n.params.emplace_back(p, p + f->kernel->param_size[i]);
    }
    return enqueue(s, std::move(n));
}

CUresult cuStreamBeginCapture_v2(CUstream hs, int mode) {
    auto* s = reinterpret_cast<Stream*>(hs);
    if (!s) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;  // the legacy stream cannot capture
    if (s->capturing) return CUDA_ERROR_ILLEGAL_STATE;
    s->capturing = true;
    s->invalidated = false;
    s->mode = mode;
    s->graph = new Graph();
    if (mode != CU_STREAM_CAPTURE_MODE_RELAXED) my_captures.push_back(s);
    return CUDA_SUCCESS;
}
CUresult cuStreamEndCapture(CUstream hs, CUgraph* g) {
    auto* s = reinterpret_cast<Stream*>(hs);
    if (!s || !s->capturing) return CUDA_ERROR_ILLEGAL_STATE;
    s->capturing = false;
    std::erase(my_captures, s);
    if (s->invalidated) {
        delete s->graph;
        s->graph = nullptr;
        *g = nullptr;
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    *g = reinterpret_cast<CUgraph>(s->graph);
    s->graph = nullptr;
    return CUDA_SUCCESS;
}
CUresult cuStreamIsCapturing(CUstream hs, int* status) {
    auto* s = reinterpret_cast<Stream*>(hs);
    *status = !s || !s->capturing ? CU_STREAM_CAPTURE_STATUS_NONE : s->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    return CUDA_SUCCESS;
}
CUresult cuGraphInstantiateWithFlags(CUgraphExec* e, CUgraph g, unsigned long long) {
    *e = reinterpret_cast<CUgraphExec>(new Graph(*reinterpret_cast<Graph*>(g)));
    return CUDA_SUCCESS;
}
CUresult cuGraphLaunch(CUgraphExec e, CUstream s) {
    auto* st = reinterpret_cast<Stream*>(s);
    if (st && st->capturing) return fail_capture(st);
    for (const Node& n : reinterpret_cast<Graph*>(e)->nodes) {
        CUresult r = CUDA_SUCCESS;
        run_node(n, r);
        if (r != CUDA_SUCCESS) return r;
    }
    return CUDA_SUCCESS;
}
CUresult cuGraphUpload(CUgraphExec, CUstream) { return CUDA_SUCCESS; }
CUresult cuGraphDestroy(CUgraph g) {
    delete reinterpret_cast<Graph*>(g);
    return CUDA_SUCCESS;
}
CUresult cuGraphExecDestroy(CUgraphExec e) {
    delete reinterpret_cast<Graph*>(e);
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult r, const char** s) {
    *s = error_name(r);
    return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult r, const char** s) {
    if (r == CUDA_ERROR_LAUNCH_FAILED) {
        // kept alive: the text of the most recent failed launch
        std::lock_guard<std::mutex> l(state_mutex);
        static std::vector<std::unique_ptr<std::string>> kept;
        kept.push_back(std::make_unique<std::string>(launch_error));
        *s = kept.back()->c_str();
        return CUDA_SUCCESS;
    }
    *s = error_name(r);
    return CUDA_SUCCESS;
}

}  // extern "C"
