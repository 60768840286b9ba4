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

// gather_sum_tokens at one SIMD level P: P::gather_tokens_m<M> for 2 to 4 tokens at once,
// P::gather_sum token by token otherwise.
template <class P>
void gather_tokens_by_count(int m, float* const* ys, const float* b_out, const float* w_out,
                            const int64_t* const* rows, const float* const* g, int64_t k,
                            int64_t d, bool stream) {
  switch (m) {
    case 4: return P::template gather_tokens_m<4>(ys, b_out, w_out, rows, g, k, d, stream);
    case 3: return P::template gather_tokens_m<3>(ys, b_out, w_out, rows, g, k, d, stream);
    case 2: return P::template gather_tokens_m<2>(ys, b_out, w_out, rows, g, k, d, stream);
    default:
      for (int j = 0; j < m; ++j) P::gather_sum(ys[j], b_out, w_out, rows[j], g[j], k, d, stream);
  }
}

// Whether M tokens' y rows may be stored non-temporally a register V::Reg at a time: asked
// for, every row aligned to the register and d a whole number of registers.
template <class V, int M>
bool can_stream(float* const* ys, int64_t d, bool stream) {
  for (int j = 0; j < M; ++j)
    stream = stream && reinterpret_cast<uintptr_t>(ys[j]) % sizeof(typename V::Reg) == 0;
  return stream && d % V::kLanes == 0;
}

// The full-width part of gather_sum_tokens at one SIMD level, for M tokens at once: columns
// [0, c) for the largest c <= d that is a whole number of chunks of V::kChunkRegs registers;
// returns c (each level does the column tail its own way). V is the level's register type and
// operations (Reg, kLanes, kChunkRegs, load, zero, set1, fmadd, store, stream), defined in its
// own translation unit.
// A row all M tokens share (bit e of `same`, from shared_rows) is loaded once per chunk for
// all of them. Each y element is the same sum in the same order as gather_sum's.
// The other rows (the deep levels', each its own token's, mostly from DRAM) are read as up to
// M * k streams advancing a chunk at a time, more than the hardware prefetcher follows: each
// prefetches its next chunk (C++ harness, batch 128, p25 of two A/B runs: AVX-512 226 -> 220
// and 233 -> 213 µs, AVX2 312 -> 279 and 269 -> 253 µs; two chunks ahead was no better).
template <class V, int M>
int64_t gather_tokens_chunks(float* const* ys, const float* b_out, const float* w_out,
                             const int64_t* const* rows, const float* const* g, int64_t k,
                             int64_t d, bool stream, uint64_t same) {
  constexpr int64_t L = V::kLanes;
  constexpr int R = V::kChunkRegs;
  int64_t c = 0;
  for (; c + R * L <= d; c += R * L) {
    typename V::Reg acc[M][R];
    for (int j = 0; j < M; ++j)
      for (int u = 0; u < R; ++u) acc[j][u] = b_out ? V::load(b_out + c + L * u) : V::zero();
    for (int64_t e = 0; e < k; ++e) {
      if (e < 64 && (same >> e & 1)) {
        const float* w = w_out + rows[0][e] * d + c;
        typename V::Reg wv[R];
        for (int u = 0; u < R; ++u) wv[u] = V::load(w + L * u);
        for (int j = 0; j < M; ++j) {
          const typename V::Reg gj = V::set1(g[j][e]);
          for (int u = 0; u < R; ++u) acc[j][u] = V::fmadd(gj, wv[u], acc[j][u]);
        }
        continue;
      }
      for (int j = 0; j < M; ++j) {
        const float* w = w_out + rows[j][e] * d + c;
        if (c + 2 * R * L <= d)  // the row's next chunk
          X86Hints::prefetch(w + R * L, R * L * static_cast<int64_t>(sizeof(float)));
        const typename V::Reg gj = V::set1(g[j][e]);
        for (int u = 0; u < R; ++u) acc[j][u] = V::fmadd(gj, V::load(w + L * u), acc[j][u]);
      }
    }
    for (int j = 0; j < M; ++j)
      for (int u = 0; u < R; ++u) {
        if (stream) V::stream(ys[j] + c + L * u, acc[j][u]);
        else V::store(ys[j] + c + L * u, acc[j][u]);
      }
  }
  return c;
}

// gather_sum's full-register columns at level V: y = b_out + sum_j g[j] * w_out[rows[j]] (b_out
// may be null: 0, or y itself: accumulate), kGatherRegs registers at a time (that many
// independent FMA chains across the K rows), then one register at a time; with stream (y and d
// aligned to the register: the caller checks) the sums are stored non-temporally. Returns the
// first column left (d % kLanes of them) for the caller's tail.
constexpr int kGatherRegs = 8;

template <class V>
int64_t gather_sum_chunks(float* y, const float* b_out, const float* w_out, const int64_t* rows,
                          const float* g, int64_t k, int64_t d, bool stream) {
  constexpr int64_t L = V::kLanes;
  constexpr int R = kGatherRegs;
  int64_t c = 0;
  for (; c + R * L <= d; c += R * L) {
    typename V::Reg acc[R];
    for (int u = 0; u < R; ++u) acc[u] = b_out ? V::load(b_out + c + L * u) : V::zero();
    for (int64_t j = 0; j < k; ++j) {
      const float* w = w_out + rows[j] * d + c;
      const typename V::Reg gj = V::set1(g[j]);
      for (int u = 0; u < R; ++u) acc[u] = V::fmadd(gj, V::load(w + L * u), acc[u]);
    }
    for (int u = 0; u < R; ++u) {
      if (stream) V::stream(y + c + L * u, acc[u]);
      else V::store(y + c + L * u, acc[u]);
    }
  }
  for (; c + L <= d; c += L) {
    typename V::Reg acc = b_out ? V::load(b_out + c) : V::zero();
    for (int64_t j = 0; j < k; ++j)
      acc = V::fmadd(V::set1(g[j]), V::load(w_out + rows[j] * d + c), acc);
    if (stream) V::stream(y + c, acc);
    else V::store(y + c, acc);
  }
  return c;
}

}  // namespace
}  // namespace liteffn
