// The LUT training loops shared by the scalar and AVX2 builds (see lut_train.h). The work is
// scattered single-element reads and updates, so both builds run the same code; the AVX2 build
// only lets the compiler use wider address arithmetic and compares.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace liteffn {

constexpr int64_t kLutTrainTokenBlock = 64;  // tokens per parallel work item (forward)
constexpr int64_t kLutGradLutBlock = 64;     // LUTs per work item (table gradient): 16 KiB

// The token loop for a compile-time number of LUT inputs (NN > 0: unrolled address build) or a
// run-time one (NN == 0).
template <int NN>
void lut_train_forward_tokens(const float* bits, const int32_t* mapping, const uint64_t* packed,
                              uint8_t* addr, float* y, int64_t N, int64_t out, int64_t n_rt,
                              int64_t in, int threads) {
  const int64_t n = NN > 0 ? NN : n_rt;
  const int64_t blocks = (N + kLutTrainTokenBlock - 1) / kLutTrainTokenBlock;
  threads = clamp_threads(threads, blocks);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t t0 = b * kLutTrainTokenBlock, t1 = std::min(N, t0 + kLutTrainTokenBlock);
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = bits + t * in;  // (in,): this token's input bits
      uint8_t* at = addr + t * out;
      float* yt = y + t * out;
      for (int64_t j = 0; j < out; ++j) {
        const int32_t* m = mapping + j * n;
        unsigned a = 0;
        for (int64_t l = 0; l < n; ++l) a |= static_cast<unsigned>(row[m[l]] != 0.0f) << l;
        at[j] = static_cast<uint8_t>(a);
        yt[j] = static_cast<float>((packed[j] >> a) & 1u);
      }
    }
  }
}

inline void lut_train_forward_impl(const float* bits, const int64_t* mapping, const float* table,
                                   uint8_t* addr, float* y, int64_t N, int64_t out, int64_t n,
                                   int64_t in, int threads) {
  const int64_t size = int64_t{1} << n;
  // Each LUT's signs packed into one word (n <= 6): bit a is [table[j, a] > 0]. The packed
  // tables (8 bytes per LUT) and the int32 mapping stay in cache while tokens stream through.
  std::vector<uint64_t> packed(static_cast<size_t>(out), 0);
  std::vector<int32_t> map32(static_cast<size_t>(out * n));
  for (int64_t j = 0; j < out; ++j) {
    uint64_t w = 0;
    for (int64_t a = 0; a < size; ++a)
      if (table[j * size + a] > 0.0f) w |= uint64_t{1} << a;  // NaN compares false -> 0
    packed[static_cast<size_t>(j)] = w;
  }
  for (int64_t i = 0; i < out * n; ++i)
    map32[static_cast<size_t>(i)] = static_cast<int32_t>(mapping[i]);
  const int32_t* m = map32.data();
  const uint64_t* pk = packed.data();
  switch (n) {
    case 6: lut_train_forward_tokens<6>(bits, m, pk, addr, y, N, out, n, in, threads); break;
    case 4: lut_train_forward_tokens<4>(bits, m, pk, addr, y, N, out, n, in, threads); break;
    default: lut_train_forward_tokens<0>(bits, m, pk, addr, y, N, out, n, in, threads); break;
  }
}

inline void lut_table_grad_impl(const float* grad, const uint8_t* addr, float* grad_table,
                                int64_t N, int64_t out, int64_t n, int threads) {
  const int64_t size = int64_t{1} << n, mask = size - 1;
  const int64_t blocks = (out + kLutGradLutBlock - 1) / kLutGradLutBlock;
  threads = clamp_threads(threads, blocks);
  // LUT blocks across threads; within a block tokens go in increasing order, so every entry is
  // summed in the same order whatever the thread count: deterministic, no atomics.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * kLutGradLutBlock, j1 = std::min(out, j0 + kLutGradLutBlock);
    float* gt = grad_table + j0 * size;  // (j1 - j0, 2^n) rows of this block
    std::fill(gt, gt + (j1 - j0) * size, 0.0f);
    for (int64_t t = 0; t < N; ++t) {
      const float* g = grad + t * out;
      const uint8_t* a = addr + t * out;
      for (int64_t j = j0; j < j1; ++j)
        gt[(j - j0) * size + (static_cast<int64_t>(a[j]) & mask)] += g[j];
    }
  }
}

inline void lut_efd_weights_impl(const float* table, float* weights, int64_t out, int64_t n,
                                 float alpha, float beta, int threads) {
  const int64_t size = int64_t{1} << n;
  threads = clamp_threads(threads, out / 64 + 1);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t j = 0; j < out; ++j) {
    float s[256];
    float* wj = weights + j * size * n;  // (2^n, n) for LUT j
    for (int64_t l = 0; l < n; ++l) {
      std::copy(table + j * size, table + (j + 1) * size, s);
      for (int64_t k = 0; k < n; ++k) {
        const int64_t bit = int64_t{1} << k;
        for (int64_t a = 0; a < size; ++a) {
          if (a & bit) continue;
          const float lo = s[a], hi = s[a | bit];
          if (k == l) {  // difference along bit l: the same whatever bit l of the address is
            const float d = hi - lo;
            s[a] = d;
            s[a | bit] = d;
          } else {  // smoothing: s'(a_k) = s(a_k) + beta * s(1 - a_k)
            s[a] = lo + beta * hi;
            s[a | bit] = hi + beta * lo;
          }
        }
      }
      for (int64_t a = 0; a < size; ++a) wj[a * n + l] = alpha * s[a];
    }
  }
}

}  // namespace liteffn
