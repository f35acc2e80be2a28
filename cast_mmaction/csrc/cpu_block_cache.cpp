// A block cache for torch's CPU allocator (speed-up ``cpu_block_cache``;
// Python side: cast_mmaction/models/cpu_block_cache.py).
//
// Why: in fp32 CPU training glibc's heap holds 1.4-2.1 GB of freed
// activation memory at the step's peak (mallinfo2 at batch 2 of CAST ViT-B:
// 4.75 GB of heap, 1.40 GB of it free in ~4,700 chunks): large tensors share
// the heap with the small, long-lived allocations of autograd and Python, so
// a freed hole is split by a small allocation and no longer fits the next
// tensor of its size. Returning those pages (malloc_trim, a low
// M_MMAP_THRESHOLD) lowers the peak but every returned page is faulted in
// and zeroed again when it is next used (docs/benchmarks.md).
//
// What: allocations of at least ``min_bytes`` get their own anonymous
// mapping (page-rounded), apart from the heap. A freed block is kept in a
// cache keyed by its size and handed out again for the next allocation of
// that size (a training step allocates the same sizes layer after layer), so
// its pages stay mapped and are not faulted in again; the most recently freed
// block of a size goes first (still in the CPU's caches). With none of that
// size cached, the smallest cached block of up to twice the size serves it
// (a ``fit``, counted among the hits): its pages are resident anyway, where a
// new mapping would add to the step's peak. The cache holds at most
// ``cache_bytes``; beyond that the largest cached blocks are unmapped. Smaller
// allocations go to the allocator that was installed before (torch's).
// Contents of a new block are unspecified, as with malloc: numbers do not
// depend on this allocator.
// ATen's tensor and pybind11's headers only, not <torch/extension.h> (all
// of torch's C++ API): the build on first use takes a third of the time.
#include <torch/csrc/utils/pybind.h>
#include <c10/core/CPUAllocator.h>

#include <pthread.h>
#include <sys/mman.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

struct BlockCache final : c10::Allocator {
  c10::Allocator* prev = nullptr;  // torch's CPU allocator, for small blocks
  bool installed = false;
  size_t min_bytes = size_t(1) << 20;
  size_t cache_bytes = size_t(2048) << 20;  // install() sets it
  std::mutex mu;
  std::multimap<size_t, void*> cached_;       // size -> a free block
  std::unordered_map<void*, size_t> live_;    // block -> size, in use
  size_t cached = 0, mapped = 0, peak_mapped = 0;
  int64_t hits = 0, misses = 0, unmaps = 0, fits = 0;

  static void deleter(void* ptr);

  c10::DataPtr allocate(size_t n) override {
    if (n < min_bytes) return prev->allocate(n);
    const size_t size = (n + kPage - 1) & ~(kPage - 1);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> g(mu);
      // the most recently freed block of this size (equal keys keep their
      // insertion order): its lines are the likeliest still in the CPU's
      // caches, as glibc's heap reuses a just-freed chunk
      auto it = cached_.upper_bound(size);
      if (it != cached_.begin() && std::prev(it)->first == size) {
        it = std::prev(it);
      } else if (it != cached_.end() && it->first - size <= size) {
        // none of this size: the smallest larger block up to twice the
        // size (its most recently freed), rather than a new mapping while
        // that block's pages sit unused; it returns to the cache under its
        // own size
        it = std::prev(cached_.upper_bound(it->first));
        ++fits;
      } else {
        it = cached_.end();
      }
      if (it != cached_.end()) {
        const size_t bsize = it->first;
        p = it->second;
        cached_.erase(it);
        cached -= bsize;
        ++hits;
        live_.emplace(p, bsize);
      }
    }
    if (p == nullptr) {
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        // the cache may hold what the system lacks: give it back, retry once
        empty_cache();
        p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      }
      TORCH_CHECK(p != MAP_FAILED, "cpu_block_cache: out of memory (mmap of ",
                  size, " bytes failed)");
      std::lock_guard<std::mutex> g(mu);
      ++misses;
      mapped += size;
      if (mapped > peak_mapped) peak_mapped = mapped;
      live_.emplace(p, size);
    }
    // context == data: raw_allocate / raw_deallocate (oneDNN's convolution
    // scratch, for one) need the plain pointer to identify the block
    return {p, p, &BlockCache::deleter, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &BlockCache::deleter; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void release(void* p) {
    std::unique_lock<std::mutex> g(mu);
    auto it = live_.find(p);
    if (it == live_.end()) {
      // a small block handed out by raw_allocate: the previous allocator's
      g.unlock();
      prev->raw_deleter()(p);
      return;
    }
    const size_t size = it->second;
    live_.erase(it);
    cached_.emplace(size, p);
    cached += size;
    evict_to(cache_bytes);
  }

  // caller holds mu
  void evict_to(size_t limit) {
    while (cached > limit && !cached_.empty()) {
      // the largest size first, of it the block freed longest ago
      auto it = cached_.lower_bound(std::prev(cached_.end())->first);
      munmap(it->second, it->first);
      cached -= it->first;
      mapped -= it->first;
      ++unmaps;
      cached_.erase(it);
    }
  }

  void empty_cache() {
    std::lock_guard<std::mutex> g(mu);
    evict_to(0);
  }
};

BlockCache g_cache;

void BlockCache::deleter(void* ptr) { g_cache.release(ptr); }

// fork (a DataLoader worker) while another thread holds the lock would leave
// the child's copy locked forever: take it around fork
void before_fork() { g_cache.mu.lock(); }
void after_fork() { g_cache.mu.unlock(); }

void install(int64_t min_bytes, int64_t cache_bytes) {
  TORCH_CHECK(min_bytes >= int64_t(kPage) && cache_bytes >= 0,
              "cpu_block_cache: min_bytes >= 4096 and cache_bytes >= 0");
  std::lock_guard<std::mutex> g(g_cache.mu);
  if (!g_cache.installed) {
    if (g_cache.prev == nullptr) {
      static bool registered =
          pthread_atfork(before_fork, after_fork, after_fork) == 0;
      (void)registered;
    }
    g_cache.prev = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&g_cache, /*priority=*/0);
    g_cache.installed = true;
  }
  g_cache.min_bytes = size_t(min_bytes);
  g_cache.cache_bytes = size_t(cache_bytes);
  g_cache.evict_to(g_cache.cache_bytes);
}

// torch's allocator again for new tensors; blocks still in use come back here
// when freed and go to the cache (empty_cache unmaps them)
void uninstall() {
  std::lock_guard<std::mutex> g(g_cache.mu);
  if (g_cache.installed) {
    c10::SetCPUAllocator(g_cache.prev, /*priority=*/0);
    g_cache.installed = false;
  }
}

void empty_cache() { g_cache.empty_cache(); }

std::map<std::string, int64_t> stats() {
  std::lock_guard<std::mutex> g(g_cache.mu);
  return {{"installed", g_cache.installed},
          {"min_bytes", int64_t(g_cache.min_bytes)},
          {"cache_bytes", int64_t(g_cache.cache_bytes)},
          {"cached", int64_t(g_cache.cached)},
          {"mapped", int64_t(g_cache.mapped)},
          {"peak_mapped", int64_t(g_cache.peak_mapped)},
          {"live_blocks", int64_t(g_cache.live_.size())},
          {"hits", g_cache.hits},
          {"misses", g_cache.misses},
          {"unmaps", g_cache.unmaps},
          {"fits", g_cache.fits}};
}

std::vector<int64_t> cached_sizes() {
  std::lock_guard<std::mutex> g(g_cache.mu);
  std::vector<int64_t> out;
  for (const auto& kv : g_cache.cached_) out.push_back(int64_t(kv.first));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "route CPU blocks >= min_bytes through the cache");
  m.def("uninstall", &uninstall, "torch's CPU allocator for new blocks again");
  m.def("empty_cache", &empty_cache, "unmap every cached free block");
  m.def("stats", &stats, "counters and byte totals");
  m.def("cached_sizes", &cached_sizes, "the sizes of the cached free blocks");
}
