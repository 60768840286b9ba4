// AVX2 FWHT: stages h = 1, 2, 4 inside one 8-float register (swap partner + sign flip, which
// computes exactly a + b and a + (-b) = a - b), stages h >= 8 as whole-register butterflies,
// up to three stages per pass over the row.
#include <immintrin.h>

#include "common.h"
#include "kernels/fwht.h"

namespace liteffn {
namespace {

inline __m256 flip(__m256 v, __m256 sign) { return _mm256_xor_ps(v, sign); }

inline __m256 stages_1_2_4(__m256 v, __m256 s1, __m256 s2, __m256 s4) {
  v = _mm256_add_ps(_mm256_permute_ps(v, 0xB1), flip(v, s1));           // h = 1: swap neighbours
  v = _mm256_add_ps(_mm256_permute_ps(v, 0x4E), flip(v, s2));           // h = 2: swap pairs
  v = _mm256_add_ps(_mm256_permute2f128_ps(v, v, 0x01), flip(v, s4));   // h = 4: swap halves
  return v;
}

// Stages h, 2h, ..., 2^(R-1) h (h >= 8, 2^R h <= n) in one pass: 2^R registers at stride h are
// loaded, put through the R stages in order, and stored.
template <int R>
void radix_pass(float* row, int64_t n, int64_t h) {
  constexpr int V = 1 << R;
  const int64_t span = h << R;
  for (int64_t i = 0; i < n; i += span)
    for (int64_t j = i; j < i + h; j += 8) {
      __m256 v[V];
      for (int m = 0; m < V; ++m) v[m] = _mm256_loadu_ps(row + j + m * h);
      for (int s = 0; s < R; ++s)
        for (int m = 0; m < V; ++m)
          if (!(m & (1 << s))) {
            const __m256 a = v[m], b = v[m | (1 << s)];
            v[m] = _mm256_add_ps(a, b);
            v[m | (1 << s)] = _mm256_sub_ps(a, b);
          }
      for (int m = 0; m < V; ++m) _mm256_storeu_ps(row + j + m * h, v[m]);
    }
}

}  // namespace

void fwht_stages_avx2(float* row, int64_t n, int64_t h0) {
  int64_t h = h0;
  if (h < 8) {  // stages inside a register: only for blocks under 8 values (rare)
    fwht_stage_range_scalar(row, n, h, n < 8 ? n : 8);
    h = 8;
  }
  while (h < n) {  // up to three whole-register stages per pass over the row
    int r = 0;
    while (r < 3 && (h << (r + 1)) <= n) ++r;
    switch (r) {
      case 1: radix_pass<1>(row, n, h); break;
      case 2: radix_pass<2>(row, n, h); break;
      default: radix_pass<3>(row, n, h); break;
    }
    h <<= r;
  }
}

void fwht_row_avx2(float* row, int64_t n, float scale) {
  if (n < 8) {
    fwht_row_scalar(row, n, scale);
    return;
  }
  const float m = -0.0f;
  const __m256 s1 = _mm256_setr_ps(0, m, 0, m, 0, m, 0, m);
  const __m256 s2 = _mm256_setr_ps(0, 0, m, m, 0, 0, m, m);
  const __m256 s4 = _mm256_setr_ps(0, 0, 0, 0, m, m, m, m);
  for (int64_t i = 0; i < n; i += 8)
    _mm256_storeu_ps(row + i, stages_1_2_4(_mm256_loadu_ps(row + i), s1, s2, s4));
  fwht_stages_avx2(row, n, 8);
  if (scale != 1.0f) {
    const __m256 s = _mm256_set1_ps(scale);
    for (int64_t j = 0; j < n; j += 8)
      _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), s));
  }
}

void fwht_rows_avx2(float* x, int64_t rows, int64_t n, float scale, int threads) {
  threads = clamp_threads(threads, rows);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) fwht_row_avx2(x + r * n, n, scale);
}

}  // namespace liteffn
