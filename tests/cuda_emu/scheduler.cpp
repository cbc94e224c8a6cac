// The block scheduler (see scheduler.h and block.h): one block's threads as fibers on this OS
// thread.
//
// A block: every thread a fiber, started in the configured order; each runs until it exits or
// reaches a barrier or warp operation, where it switches back to the scheduler. `__syncthreads`
// releases when every thread of the block waits at it (all at the same call site, none exited);
// a warp operation completes when every lane of its mask waits at a warp operation with the same
// mask and kind: the last lane to arrive computes every lane's result (so no lane can overwrite
// its value before the others read it) and queues them all. Released threads are queued in the
// configured order. When nothing can run and the block is unfinished, it is a deadlock.
#include <algorithm>
#include <bit>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "block.h"
#include "fiber.h"

namespace emu {

thread_local ThreadState* cur_thread = nullptr;
thread_local BlockState cur_block;

namespace {

constexpr int MAX_THREADS = 1024;
constexpr std::size_t STACK_SIZE = 64 << 10;

enum class Order { Forward, Reverse, Random };

struct Config {
    Order order = Order::Forward;
    unsigned long long seed = 0x9e3779b97f4a7c15ull;
    int workers = 1;
    std::string error;
};

const Config& config() {
    static const Config c = [] {
        Config c;
        if (const char* o = std::getenv("RLHF_CUDA_EMU_ORDER")) {
            if (!std::strcmp(o, "forward")) c.order = Order::Forward;
            else if (!std::strcmp(o, "reverse")) c.order = Order::Reverse;
            else if (!std::strcmp(o, "random")) c.order = Order::Random;
            else c.error = std::string("RLHF_CUDA_EMU_ORDER=") + o + ": expected forward, reverse or random";
        }
        if (const char* s = std::getenv("RLHF_CUDA_EMU_SEED")) c.seed = std::strtoull(s, nullptr, 0);
        c.workers = (int)std::max(1u, std::thread::hardware_concurrency());
        if (const char* w = std::getenv("RLHF_CUDA_EMU_THREADS")) c.workers = std::max(1, std::atoi(w));
        return c;
    }();
    return c;
}

// set by the emulator's tests (set_order); -1: the environment's
std::atomic<int> order_override{-1};

Order current_order() {
    const int o = order_override.load(std::memory_order_relaxed);
    return o < 0 ? config().order : (Order)o;
}

enum class St : unsigned char { Ready, Barrier, Warp, Exited };

struct Thread : ThreadState {
    Fiber fiber;
    St st = St::Exited;
    int index = 0;  // linear index in the block
    const char* file = "";
    unsigned line = 0;
    WarpKind kind = WarpKind::Sync;
    Reduce reduce = Reduce::None;
    unsigned mask = 0;
    int arg = 0, width = 32;
    unsigned long long value = 0, out = 0;
};

}  // namespace

// Runs blocks on one OS thread; one per worker, reused from launch to launch.
struct BlockRunner {
    Fiber sched;
    Thread* threads = nullptr;
    int n = 0;
    // threads ready to run: a ring (a thread is queued at most once between two of its runs)
    int queue[MAX_THREADS];
    int head = 0, queued = 0;
    int waiting = 0, exited = 0;
    // per warp: lanes waiting at a warp operation, and the lanes that have exited
    int warp_waiting[MAX_THREADS / 32];
    unsigned warp_exited[MAX_THREADS / 32];
    // per warp: the snapshot of the lanes' bytes of the last warp_collect
    alignas(16) unsigned char collect[MAX_THREADS / 32][32 * MAX_COLLECT_BYTES];
    unsigned long long rng = 1;
    const Kernel* kernel = nullptr;
    void* const* args = nullptr;
    std::string error;

    BlockRunner() {
        threads = new Thread[MAX_THREADS];
        std::vector<Fiber> f(MAX_THREADS);
        allocate_stacks(f.data(), MAX_THREADS, STACK_SIZE);
        for (int i = 0; i < MAX_THREADS; i++) threads[i].fiber = f[i];
    }

    unsigned long long next_random() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    }

    // queues the threads `ids` (in index order) in the configured order
    void enqueue(std::vector<int>& ids) { enqueue(ids.data(), (int)ids.size()); }
    void enqueue(int* ids, int count) {
        switch (current_order()) {
            case Order::Forward: break;
            case Order::Reverse: std::reverse(ids, ids + count); break;
            case Order::Random:
                for (int i = count; i > 1; i--) std::swap(ids[i - 1], ids[next_random() % i]);
                break;
        }
        for (int c = 0; c < count; c++) {
            const int i = ids[c];
            threads[i].st = St::Ready;
            queue[(head + queued++) % MAX_THREADS] = i;
        }
    }

    std::string where(const Thread& t) const {
        char buf[160];
        std::snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t.tid.x, t.tid.y, t.tid.z);
        return buf;
    }

    std::string site(const Thread& t) const { return std::string(t.file) + ":" + std::to_string(t.line); }

    void fail(const std::string& what) {
        if (error.empty()) error = what;
    }

    std::string run(const Kernel& k, const Grid& g, Dim bid, void* const* a, unsigned long long seed);
    void release_barrier();
    std::string describe_deadlock();
};

namespace {

// The runner of this OS thread while it works on a grid (fibers reach it through this).
thread_local BlockRunner* runner = nullptr;

// Runners are kept for reuse (their 1024 stacks are costly to map: one mapping and one guard
// each); at most one per worker exists, since grids run one at a time.
std::mutex spare_mutex;
std::vector<BlockRunner*> spare_runners;


Thread& current() { return *static_cast<Thread*>(cur_thread); }

// Switches from the running fiber back to the scheduler.
void yield(Thread& t) { emu_switch(&t.fiber.sp, runner->sched.sp); }

void thread_main(void* p) {
    Thread& t = *static_cast<Thread*>(p);
    BlockRunner& r = *runner;
    r.kernel->invoke(r.kernel->fn, r.args);
    t.st = St::Exited;
    r.exited++;
    r.warp_exited[t.index >> 5] |= 1u << (t.index & 31);
    yield(t);
    __builtin_trap();  // an exited fiber is never resumed
}

}  // namespace

std::string BlockRunner::run(const Kernel& k, const Grid& g, Dim bid, void* const* a, unsigned long long seed) {
    kernel = &k;
    args = a;
    error.clear();
    n = (int)(g.block.x * g.block.y * g.block.z);
    cur_block = BlockState{bid, g.block, g.grid};
    rng = seed | 1;
    if (k.dyn_smem && g.dyn_smem) std::memset(k.dyn_smem(), 0xff, g.dyn_smem);  // NaN as float and double
    head = queued = 0;
    waiting = exited = 0;
    std::memset(warp_waiting, 0, sizeof warp_waiting);
    std::memset(warp_exited, 0, sizeof warp_exited);
    std::vector<int> all(n);
    for (int i = 0; i < n; i++) {
        Thread& t = threads[i];
        t.index = i;
        t.tid = Dim{i % g.block.x, (i / g.block.x) % g.block.y, i / (g.block.x * g.block.y)};
        t.n_async = 0;
        t.async_committed = 0;
        prepare(t.fiber, &thread_main, &t);
        all[i] = i;
    }
    enqueue(all);
    for (;;) {
        while (queued) {
            Thread& t = threads[queue[head]];
            head = (head + 1) % MAX_THREADS;
            queued--;
            cur_thread = &t;
            emu_switch(&sched.sp, t.fiber.sp);
            cur_thread = nullptr;
            if (!error.empty()) return error;
        }
        if (exited == n) return {};
        if (waiting + exited == n) {
            release_barrier();
            if (!error.empty()) return error;
            continue;
        }
        return describe_deadlock();
    }
}

// Every thread that has not exited waits at a __syncthreads: release them, or report why not.
void BlockRunner::release_barrier() {
    const Thread* first = nullptr;
    for (int i = 0; i < n; i++) {
        const Thread& t = threads[i];
        if (t.st != St::Barrier) continue;
        if (!first) first = &t;
        else if (t.line != first->line || std::strcmp(t.file, first->file)) {
            fail("divergent __syncthreads: " + where(*first) + " waits at " + site(*first) + ", " + where(t) + " at " + site(t));
            return;
        }
    }
    if (exited) {
        const Thread* gone = nullptr;
        for (int i = 0; i < n && !gone; i++)
            if (threads[i].st == St::Exited) gone = &threads[i];
        fail("divergent __syncthreads: " + std::to_string(exited) + " thread(s) of the block exited (first " + where(*gone) + ") while " +
             std::to_string(waiting) + " wait at " + site(*first));
        return;
    }
    int count = 0, all = 1, any = 0;
    for (int i = 0; i < n; i++) {
        const bool p = threads[i].value != 0;
        count += p;
        all &= p;
        any |= p;
    }
    std::vector<int> ids;
    for (int i = 0; i < n; i++) {
        Thread& t = threads[i];
        t.out = t.reduce == Reduce::Count ? count : t.reduce == Reduce::And ? all : t.reduce == Reduce::Or ? any : 0;
        ids.push_back(i);
    }
    waiting = 0;
    enqueue(ids);
}

std::string BlockRunner::describe_deadlock() {
    // one line per distinct wait (kind, site, mask): how many threads, and the first of them
    struct Wait {
        const Thread* first;
        int count;
    };
    std::vector<Wait> waits;
    for (int i = 0; i < n; i++) {
        const Thread& t = threads[i];
        if (t.st != St::Barrier && t.st != St::Warp) continue;
        auto same = [&](const Wait& w) { return w.first->st == t.st && w.first->line == t.line && w.first->mask == t.mask && !std::strcmp(w.first->file, t.file); };
        auto it = std::find_if(waits.begin(), waits.end(), same);
        if (it == waits.end()) waits.push_back({&t, 1});
        else it->count++;
    }
    std::string s = "deadlock: no thread can run;";
    for (const Wait& w : waits) {
        const Thread& t = *w.first;
        s += " " + std::to_string(w.count) + " thread(s) from " + where(t);
        if (t.st == St::Barrier) s += " wait at __syncthreads " + site(t) + ";";
        else {
            char m[16];
            std::snprintf(m, sizeof m, "0x%08x", t.mask);
            s += " wait for the lanes of mask " + std::string(m) + " at " + site(t) + ";";
        }
    }
    return s + " " + std::to_string(exited) + " exited";
}

namespace {

const char* kind_name(WarpKind k) {
    switch (k) {
        case WarpKind::Sync: return "__syncwarp";
        case WarpKind::Idx: return "__shfl_sync";
        case WarpKind::Xor: return "__shfl_xor_sync";
        case WarpKind::Up: return "__shfl_up_sync";
        case WarpKind::Down: return "__shfl_down_sync";
        case WarpKind::Ballot: return "a vote";
        case WarpKind::Collect: return "a tensor-core instruction (mma / ldmatrix)";
    }
    return "?";
}

std::string hex(unsigned m) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%08x", m);
    return b;
}

// The lane a shuffle of `t` reads (its own lane when the source is outside its segment).
int source_lane(const Thread& t, int lane) {
    const int w = t.width, base = lane & ~(w - 1);
    switch (t.kind) {
        case WarpKind::Idx: return base + (t.arg & (w - 1));
        case WarpKind::Xor: {
            const int s = lane ^ t.arg;
            return s >= base + w ? lane : s;
        }
        case WarpKind::Up: return lane - t.arg < base ? lane : lane - t.arg;
        case WarpKind::Down: return lane + t.arg >= base + w ? lane : lane + t.arg;
        default: return lane;
    }
}

}  // namespace

void sync_block(const char* file, unsigned line) { sync_block_reduce(Reduce::None, 0, file, line); }

int sync_block_reduce(Reduce r, int pred, const char* file, unsigned line) {
    Thread& t = current();
    t.st = St::Barrier;
    t.file = file;
    t.line = line;
    t.reduce = r;
    t.value = pred != 0;
    runner->waiting++;
    yield(t);
    return (int)t.out;
}

unsigned active_mask() {
    const Thread& t = current();
    const int base = t.index & ~31;
    unsigned m = 0;
    for (int l = 0; l < 32 && base + l < runner->n; l++)
        if (runner->threads[base + l].st != St::Exited) m |= 1u << l;
    return m;
}

unsigned long long warp_op(WarpKind k, unsigned mask, unsigned long long value, int arg, int width, const char* file, unsigned line) {
    Thread& t = current();
    BlockRunner& r = *runner;
    t.st = St::Warp;
    t.kind = k;
    t.mask = mask;
    t.value = value;
    t.arg = arg;
    t.width = width;
    t.file = file;
    t.line = line;
    const int base = t.index & ~31, lane = t.index & 31;
    auto at = [&] { return " at " + std::string(file) + ":" + std::to_string(line); };
    if (!(mask >> lane & 1u)) r.fail(r.where(t) + " calls " + kind_name(k) + " with mask " + hex(mask) + ", which leaves out its own lane " + std::to_string(lane) + at());
    else if (width <= 0 || width > 32 || (width & (width - 1))) r.fail(r.where(t) + ": " + kind_name(k) + " width " + std::to_string(width) + " is not a power of two up to 32" + at());
    if (!r.error.empty()) {
        yield(t);
        return 0;
    }
    // complete when every lane of the mask waits at a warp operation: the full check only once
    // enough lanes wait (a lane of the mask that exited or does not exist fails at once)
    const int warp = t.index >> 5;
    const int lanes_here = std::min(32, r.n - base);
    const unsigned exists = lanes_here == 32 ? 0xffffffffu : (1u << lanes_here) - 1;
    const unsigned missing = mask & (r.warp_exited[warp] | ~exists);
    r.warp_waiting[warp]++;
    bool complete = missing != 0 || r.warp_waiting[warp] >= std::popcount(mask);
    for (int l = 0; l < 32 && complete; l++) {
        if (!(mask >> l & 1u)) continue;
        if (base + l >= r.n) {
            r.fail(r.where(t) + ": " + kind_name(k) + " with mask " + hex(mask) + " names lane " + std::to_string(l) + ", which the block of " + std::to_string(r.n) +
                   " threads does not have" + at());
            break;
        }
        const Thread& o = r.threads[base + l];
        if (o.st == St::Exited) {
            r.fail(r.where(t) + ": " + kind_name(k) + " with mask " + hex(mask) + " waits for lane " + std::to_string(l) + ", which has exited" + at());
            break;
        }
        if (o.st != St::Warp) complete = false;
        else if (o.mask != mask || o.kind != k || (k == WarpKind::Collect && o.arg != t.arg)) {
            r.fail("divergent warp operations: " + r.where(t) + " at " + kind_name(k) + " mask " + hex(mask) + at() + ", " + r.where(o) + " at " + kind_name(o.kind) +
                   " mask " + hex(o.mask) + " " + o.file + ":" + std::to_string(o.line));
            break;
        }
    }
    if (complete && r.error.empty()) {
        unsigned long long ballot = 0;
        for (int l = 0; l < 32; l++)
            if ((mask >> l & 1u) && r.threads[base + l].value) ballot |= 1ull << l;
        int ids[32], count = 0;
        for (int l = 0; l < 32; l++) {
            if (!(mask >> l & 1u)) continue;
            Thread& o = r.threads[base + l];
            if (k == WarpKind::Ballot) o.out = ballot;
            else if (k == WarpKind::Sync) o.out = 0;
            else if (k == WarpKind::Collect) {
                if (count == 0) std::memset(r.collect[warp], 0, sizeof r.collect[warp]);
                std::memcpy(r.collect[warp] + l * t.arg, reinterpret_cast<const void*>(o.value), (std::size_t)t.arg);
                o.out = reinterpret_cast<unsigned long long>(r.collect[warp]);
            }
            else {
                const int src = source_lane(o, l);
                if (!(mask >> src & 1u)) {
                    r.fail(r.where(o) + ": " + kind_name(k) + " reads lane " + std::to_string(src) + ", outside the mask " + hex(mask) + " " + o.file + ":" +
                           std::to_string(o.line));
                    break;
                }
                o.out = r.threads[base + src].value;
            }
            ids[count++] = base + l;
        }
        if (r.error.empty()) {
            r.warp_waiting[warp] -= count;
            r.enqueue(ids, count);
        }
    }
    yield(t);
    return t.out;
}

const void* warp_collect(unsigned mask, const void* mine, int bytes, const char* file, unsigned line) {
    if (bytes <= 0 || bytes > MAX_COLLECT_BYTES) fail_thread("warp_collect of an unsupported size", file, line);
    return reinterpret_cast<const void*>(warp_op(WarpKind::Collect, mask, reinterpret_cast<unsigned long long>(mine), bytes, 32, file, line));
}

void fail_thread(const char* what, const char* file, unsigned line) {
    Thread& t = current();
    runner->fail(runner->where(t) + ": " + what + " at " + file + ":" + std::to_string(line));
    for (;;) yield(t);
}

std::string config_error() { return config().error; }

unsigned long long order_seed() { return config().seed; }

int worker_count() { return config().workers; }

BlockRunner* take_runner() {
    std::lock_guard<std::mutex> l(spare_mutex);
    if (spare_runners.empty()) runner = new BlockRunner();
    else {
        runner = spare_runners.back();
        spare_runners.pop_back();
    }
    return runner;
}

void give_back(BlockRunner* r) {
    std::lock_guard<std::mutex> l(spare_mutex);
    spare_runners.push_back(r);
    runner = nullptr;
}

std::string run_block(BlockRunner& r, const Kernel& k, const Grid& g, Dim bid, void* const* args, unsigned long long seed) { return r.run(k, g, bid, args, seed); }

bool set_order(const char* name) {
    if (!name) order_override = -1;
    else if (!std::strcmp(name, "forward")) order_override = (int)Order::Forward;
    else if (!std::strcmp(name, "reverse")) order_override = (int)Order::Reverse;
    else if (!std::strcmp(name, "random")) order_override = (int)Order::Random;
    else return false;
    return true;
}

}  // namespace emu
