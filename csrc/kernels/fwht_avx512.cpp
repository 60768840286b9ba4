// AVX-512 FWHT: stages h = 1, 2, 4, 8 inside one 16-float register (swap partner, then one FMA
// with a +-1 lane pattern, which computes exactly a + b and b * -1 + a = a - b), then the
// stages h >= 16 as whole-register butterflies, up to three stages per pass over the row
// (radix-8: 8 registers at stride h are loaded, transformed by three stages and stored), with
// the scale fused into the last pass. Every element sees the same additions in the same order as
// the scalar path: results are bit-identical.
#include "kernels/avx512_intrin.h"

#include "common.h"
#include "kernels/fwht.h"

namespace liteffn {
namespace {

// Per stage, lane i holds +1 where it is the pair's first element (a + b) and -1 where it is
// the second (a - b = b * -1 + a): one FMA with the swapped partner, exact (the product by +-1
// is exact, so the FMA rounds once, as the add/sub of the scalar path does).
struct Signs {
  __m512 s1, s2, s4, s8;
  Signs() {
    const float m = -1.0f;
    s1 = _mm512_setr_ps(1, m, 1, m, 1, m, 1, m, 1, m, 1, m, 1, m, 1, m);
    s2 = _mm512_setr_ps(1, 1, m, m, 1, 1, m, m, 1, 1, m, m, 1, 1, m, m);
    s4 = _mm512_setr_ps(1, 1, 1, 1, m, m, m, m, 1, 1, 1, 1, m, m, m, m);
    s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, m, m, m, m, m, m, m, m);
  }
};

inline __m512 stages_1_to_8(__m512 v, const Signs& s) {
  v = _mm512_fmadd_ps(v, s.s1, _mm512_permute_ps(v, 0xB1));        // h = 1: neighbours
  v = _mm512_fmadd_ps(v, s.s2, _mm512_permute_ps(v, 0x4E));        // h = 2: pairs
  v = _mm512_fmadd_ps(v, s.s4, _mm512_shuffle_f32x4(v, v, 0xB1));  // h = 4: 128-bit lanes
  v = _mm512_fmadd_ps(v, s.s8, _mm512_shuffle_f32x4(v, v, 0x4E));  // h = 8: 256-bit halves
  return v;
}

// Stages h, 2h, ..., 2^(R-1) h over the row (R <= 3); First: the in-register stages 1..8 first
// (then h == 16). Scale (when given) multiplies the result before it is stored.
template <int R, bool First>
void radix_pass(float* row, int64_t n, int64_t h, const Signs& sg, bool do_scale, __m512 sv) {
  constexpr int V = 1 << R;
  const int64_t span = h << R;
  for (int64_t i = 0; i < n; i += span) {
    for (int64_t j = i; j < i + h; j += 16) {
      __m512 v[V];
      for (int m = 0; m < V; ++m) {
        v[m] = _mm512_loadu_ps(row + j + m * h);
        if (First) v[m] = stages_1_to_8(v[m], sg);
      }
      for (int s = 0; s < R; ++s)
        for (int m = 0; m < V; ++m)
          if (!(m & (1 << s))) {
            const __m512 a = v[m], b = v[m | (1 << s)];
            v[m] = _mm512_add_ps(a, b);
            v[m | (1 << s)] = _mm512_sub_ps(a, b);
          }
      for (int m = 0; m < V; ++m)
        _mm512_storeu_ps(row + j + m * h, do_scale ? _mm512_mul_ps(v[m], sv) : v[m]);
    }
  }
}

template <bool First>
void pass(int r, float* row, int64_t n, int64_t h, const Signs& sg, bool do_scale, __m512 sv) {
  switch (r) {
    case 0: radix_pass<0, First>(row, n, h, sg, do_scale, sv); break;
    case 1: radix_pass<1, First>(row, n, h, sg, do_scale, sv); break;
    case 2: radix_pass<2, First>(row, n, h, sg, do_scale, sv); break;
    default: radix_pass<3, First>(row, n, h, sg, do_scale, sv); break;
  }
}

// The whole-register stages h, 2h, ..., n/2 (h >= 16; none when h >= n), up to three per
// pass over the row; with do_scale the last pass multiplies by sv.
void passes_from(float* row, int64_t n, int64_t h, const Signs& sg, bool do_scale, __m512 sv) {
  int rem = 0;
  for (int64_t v = h; v < n; v *= 2) ++rem;
  while (rem > 0) {
    const int r = rem < 3 ? rem : 3;
    pass<false>(r, row, n, h, sg, do_scale && r == rem, sv);
    h <<= r;
    rem -= r;
  }
}

}  // namespace

void fwht_row_avx512(float* row, int64_t n, float scale) {
  if (n < 16) {
    fwht_row_avx2(row, n, scale);  // n <= 8: one AVX2 register or scalar (same operations)
    return;
  }
  static const Signs sg;
  const bool scaled = scale != 1.0f;
  const __m512 sv = _mm512_set1_ps(scale);
  int rem = 0;  // stages h >= 16
  for (int64_t v = 16; v < n; v *= 2) ++rem;
  const int r = rem < 3 ? rem : 3;
  pass<true>(r, row, n, 16, sg, scaled && r == rem, sv);
  passes_from(row, n, int64_t{16} << r, sg, scaled, sv);
}

void fwht_stages_avx512(float* row, int64_t n, int64_t h0) {
  if (n < 16 || h0 < 16) {  // blocks under 16 values (rare): the stages below 16
    fwht_stage_range_scalar(row, n, h0, n < 16 ? n : 16);
    if (n <= 16) return;
    h0 = 16;
  }
  static const Signs sg;
  passes_from(row, n, h0, sg, false, _mm512_setzero_ps());
}

void fwht_rows_avx512(float* x, int64_t rows, int64_t n, float scale, int threads) {
  threads = clamp_threads(threads, rows);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) fwht_row_avx512(x + r * n, n, scale);
}

}  // namespace liteffn
