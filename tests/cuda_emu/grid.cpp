// A grid's blocks over worker threads (see scheduler.h): the launching thread and a pool of
// helpers take blocks from a shared counter; the first failing block stops the grid. One grid
// runs at a time, as on one device queue.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "block.h"

namespace emu {

namespace {

struct Job {
    const Kernel* k;
    Grid g;
    void* const* args;
    unsigned long long seed;
    unsigned long long blocks;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex m;
    std::string error;
};

void work_with(Job& j, BlockRunner& r);

void work(Job& j) {
    BlockRunner* r = take_runner();
    work_with(j, *r);
    give_back(r);
}

void work_with(Job& j, BlockRunner& r) {
    for (;;) {
        if (j.failed.load(std::memory_order_relaxed)) return;
        const unsigned long long b = j.next.fetch_add(1);
        if (b >= j.blocks) return;
        const Dim bid{(unsigned)(b % j.g.grid.x), (unsigned)((b / j.g.grid.x) % j.g.grid.y), (unsigned)(b / ((unsigned long long)j.g.grid.x * j.g.grid.y))};
        std::string e = run_block(r, *j.k, j.g, bid, j.args, j.seed ^ (b * 0x9e3779b97f4a7c15ull));
        if (!e.empty()) {
            std::lock_guard<std::mutex> l(j.m);
            if (j.error.empty()) j.error = "kernel `" + std::string(j.k->name) + "` block (" + std::to_string(bid.x) + "," + std::to_string(bid.y) + "," + std::to_string(bid.z) + "): " + e;
            j.failed = true;
            return;
        }
    }
}

struct Pool {
    std::mutex m;
    std::condition_variable cv, done_cv;
    Job* job = nullptr;
    unsigned long long generation = 0;
    int busy = 0;
    std::vector<std::thread> threads;

    explicit Pool(int helpers) {
        for (int i = 0; i < helpers; i++) threads.emplace_back([this] { loop(); });
        for (auto& t : threads) t.detach();
    }

    void loop() {
        unsigned long long seen = 0;
        for (;;) {
            Job* j;
            {
                std::unique_lock<std::mutex> l(m);
                cv.wait(l, [&] { return generation != seen; });
                seen = generation;
                j = job;
                if (!j) continue;  // woke after that job had finished
                busy++;
            }
            work(*j);
            {
                std::lock_guard<std::mutex> l(m);
                if (--busy == 0) done_cv.notify_all();
            }
        }
    }

    void run(Job& j) {
        {
            std::lock_guard<std::mutex> l(m);
            job = &j;
            generation++;
        }
        cv.notify_all();
        work(j);
        std::unique_lock<std::mutex> l(m);
        // helpers that woke up have registered as busy; wait for them to run out of blocks
        done_cv.wait(l, [&] { return busy == 0; });
        job = nullptr;
    }
};

std::mutex launch_mutex;
std::atomic<unsigned long long> launches{0};

}  // namespace

std::string run_grid(const Kernel& k, const Grid& g, void* const* args) {
    std::lock_guard<std::mutex> serial(launch_mutex);  // one grid at a time, like one device queue
    Job j;
    j.k = &k;
    j.g = g;
    j.args = args;
    j.seed = order_seed() ^ (launches.fetch_add(1) * 0xbf58476d1ce4e5b9ull);
    j.blocks = (unsigned long long)g.grid.x * g.grid.y * g.grid.z;
    if (j.blocks <= 1 || worker_count() == 1) {
        work(j);
    } else {
        static Pool* pool = new Pool(worker_count() - 1);  // never destroyed: helpers wait on it at exit
        pool->run(j);
    }
    return j.error;
}

}  // namespace emu
