// The EFD input-gradient loop shared by the scalar and AVX2 builds (see lut_efd.h). The work is
// scattered single-float updates, so both builds run the same code; the AVX2 build only lets
// the compiler use wider address arithmetic.
#pragma once
#include <algorithm>
#include <cstdint>

#include "common.h"

namespace liteffn {

constexpr int64_t kEfdTokenBlock = 64;  // tokens whose grad_bits rows stay in L2 together

// The block loop for a compile-time number of LUT inputs (NN > 0: unrolled) or a run-time one.
template <int NN>
void lut_efd_input_grad_blocks(const float* grad, const uint8_t* addr, const float* weights,
                               const int64_t* mapping, float* grad_bits, int64_t N, int64_t out,
                               int64_t n_rt, int64_t in, int threads) {
  const int64_t n = NN > 0 ? NN : n_rt;
  const int64_t size = int64_t{1} << n, mask = size - 1;
  const int64_t blocks = (N + kEfdTokenBlock - 1) / kEfdTokenBlock;
  threads = clamp_threads(threads, blocks);
  // LUT-outer within a block of tokens: LUT j's weights (2^n x n) stay in L1 while the block's
  // tokens read them, and the block's grad_bits rows (64 x in) stay in L2. Each token's row is
  // still summed in the order j, then l, by one thread: deterministic.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t t0 = b * kEfdTokenBlock, t1 = std::min(N, t0 + kEfdTokenBlock);
    std::fill(grad_bits + t0 * in, grad_bits + t1 * in, 0.0f);
    for (int64_t j = 0; j < out; ++j) {
      const float* wj = weights + j * size * n;  // (2^n, n) for LUT j
      const int64_t* m = mapping + j * n;
      for (int64_t t = t0; t < t1; ++t) {
        const float gj = grad[t * out + j];
        const float* w = wj + (static_cast<int64_t>(addr[t * out + j]) & mask) * n;
        float* gb = grad_bits + t * in;
        for (int64_t l = 0; l < n; ++l) gb[m[l]] += gj * w[l];
      }
    }
  }
}

inline void lut_efd_input_grad_impl(const float* grad, const uint8_t* addr, const float* weights,
                                    const int64_t* mapping, float* grad_bits, int64_t N,
                                    int64_t out, int64_t n, int64_t in, int threads) {
  switch (n) {
    case 6:
      lut_efd_input_grad_blocks<6>(grad, addr, weights, mapping, grad_bits, N, out, n, in, threads);
      break;
    case 4:
      lut_efd_input_grad_blocks<4>(grad, addr, weights, mapping, grad_bits, N, out, n, in, threads);
      break;
    default:
      lut_efd_input_grad_blocks<0>(grad, addr, weights, mapping, grad_bits, N, out, n, in, threads);
      break;
  }
}

}  // namespace liteffn
