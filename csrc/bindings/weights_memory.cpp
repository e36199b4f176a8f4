// The kept weights buffer (see weights_memory.h).
#include "weights_memory.h"

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#elif defined(_WIN32)
#include <malloc.h>
#endif

namespace pyattn::bindings {

namespace {

struct Block {
  void* data;
  int64_t bytes;
};

// 2 MiB on Linux: whole huge pages, which the block asks for (as NumPy does
// for its large arrays: fewer page faults and TLB misses).
#if defined(__linux__)
constexpr size_t kAlign = size_t(2) << 20;
#else
constexpr size_t kAlign = 64;
#endif

void* allocate(int64_t bytes) {
#if defined(_WIN32)
  void* p = _aligned_malloc(static_cast<size_t>(bytes), kAlign);
#else
  void* p = nullptr;
  if (posix_memalign(&p, kAlign, static_cast<size_t>(bytes)) != 0) p = nullptr;
#endif
  if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, static_cast<size_t>(bytes), MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  return p;
}

void free_block(Block* b) {
  if (b == nullptr) return;
#if defined(_WIN32)
  _aligned_free(b->data);
#else
  std::free(b->data);
#endif
  delete b;
}

// The kept block. Every caller holds the GIL; atomic exchanges keep the slot
// consistent without it too.
std::atomic<Block*> kept{nullptr};  // never freed at exit: the OS takes it back

// Capsule destructors of the arrays made here: keep the block (freeing the
// one kept before), or free it.
void keep(void* ptr) { free_block(kept.exchange(static_cast<Block*>(ptr))); }
void release(void* ptr) { free_block(static_cast<Block*>(ptr)); }

}  // namespace

WeightsArray new_weights_array(const py::dtype& dtype, const std::vector<py::ssize_t>& shape,
                               bool keep_when_freed) {
  int64_t bytes = dtype.itemsize();
  for (py::ssize_t d : shape) bytes *= d;  // the caller checked that this fits in int64
  if (bytes < kMinKeptBytes) {
    release_kept_weights();
    return {py::array(dtype, shape), false};
  }
  Block* b = kept.exchange(nullptr);
  const bool fits = b != nullptr && b->bytes >= bytes && b->bytes - bytes <= bytes / 2;
  if (!fits) {
    free_block(b);
    b = new Block{allocate(bytes), bytes};
  }
  // (If making the array fails, the capsule frees or keeps the block.)
  py::capsule owner(b, keep_when_freed ? &keep : &release);
  return {py::array(dtype, shape, b->data, owner), fits};
}

void release_kept_weights() {
  if (kept.load(std::memory_order_relaxed) != nullptr) free_block(kept.exchange(nullptr));
}

int64_t kept_weights_bytes() {
  const Block* b = kept.load();
  return b ? b->bytes : 0;
}

}  // namespace pyattn::bindings
