// The FFF primitives that are the same at every x86 SIMD level (fff_avx2.cpp, fff_avx512.cpp):
// each file's Prim derives from X86Hints. SSE instructions only, so any x86-64 build can use it.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace liteffn {
namespace {

constexpr int64_t kPrefetchBytes = 512;  // lines touched per prefetched block

struct X86Hints {
  static void fence() { _mm_sfence(); }

  // Touch the first lines of the block; the hardware prefetcher follows the sequential stream.
  static void prefetch(const float* p, int64_t bytes) {
    const char* c = reinterpret_cast<const char*>(p);
    const int64_t end = bytes < kPrefetchBytes ? bytes : kPrefetchBytes;
    for (int64_t o = 0; o < end; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
  }

  // Bit e (e < 64) set when all M tokens' rows[j][e] are the same row (gather_sum_tokens).
  template <int M>
  static uint64_t shared_rows(const int64_t* const* rows, int64_t k) {
    uint64_t same = 0;
    for (int64_t e = 0; e < k && e < 64; ++e) {
      bool all = true;
      for (int j = 1; j < M; ++j) all = all && rows[j][e] == rows[0][e];
      same |= static_cast<uint64_t>(all) << e;
    }
    return same;
  }
};

}  // namespace
}  // namespace liteffn
