// One thread's share of the benchmarks' streaming read (the memory roof,
// csrc/driver/read_bandwidth.cpp): the XOR of the 8-byte words of 64-byte
// lines [begin, end) of `data`, each line fetched 4 KiB ahead, read with the
// target's widest loads (its float vector's width, at least 16 bytes): read
// 8 bytes at a time, or 16 on some CPUs (Zen 5), the loop is slower than the
// memory, and a roof must not sit below what the kernels themselves reach.
uint64_t read_lines(const void* data, int64_t begin, int64_t end) {
  constexpr int64_t kAheadLines = 64;
  const char* p = static_cast<const char*>(data);
#if defined(__GNUC__)
  constexpr int kBytes = VecF32::W * 4 > 16 ? VecF32::W * 4 : 16;
  constexpr int kPerLine = 64 / kBytes;
  typedef uint64_t Chunk __attribute__((vector_size(kBytes), aligned(8), may_alias));
  Chunk acc[kPerLine] = {};
  for (int64_t i = begin; i < end; ++i) {
    __builtin_prefetch(p + (i + kAheadLines) * 64);
    for (int k = 0; k < kPerLine; ++k) acc[k] ^= *reinterpret_cast<const Chunk*>(p + i * 64 + k * kBytes);
  }
  for (int k = 1; k < kPerLine; ++k) acc[0] ^= acc[k];
  uint64_t x = 0;
  for (int k = 0; k < kBytes / 8; ++k) x ^= acc[0][k];
  return x;
#else
  uint64_t a[8] = {};
  for (int64_t i = begin; i < end; ++i) {
    uint64_t w[8];
    std::memcpy(w, p + i * 64, 64);
    for (int k = 0; k < 8; ++k) a[k] ^= w[k];
  }
  return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
#endif
}
