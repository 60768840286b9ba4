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
};

}  // namespace
}  // namespace liteffn
