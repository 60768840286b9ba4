// AVX2 + FMA LookupFFN kernels: a register-blocked GEMM (6 tokens x 16 outputs) for the
// projection, a polynomial exp, and 8-wide axpy / dot for the gathers.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/fwht.h"
#include "kernels/lookup.h"
#include "kernels/lookup_impl.h"

namespace liteffn {
namespace {

// Rows [0, MR) of C (MR, N) = A (MR, K) @ B (K, N): NV vectors of 8 columns at a time (MR * NV
// independent accumulators hide the FMA latency), then 8 columns, then single columns.
template <int MR, int NV>
void gemm_rows(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
               int64_t N, int64_t K) {
  int64_t j = 0;
  for (; j + 8 * NV <= N; j += 8 * NV) {
    __m256 acc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      __m256 bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(B + k * ldb + j + 8 * v);
      for (int r = 0; r < MR; ++r) {
        const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(a, bv[v], acc[r][v]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) _mm256_storeu_ps(C + r * ldc + j + 8 * v, acc[r][v]);
  }
  for (; j + 8 <= N; j += 8) {
    __m256 c0[MR];
    for (int r = 0; r < MR; ++r) c0[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const __m256 b0 = _mm256_loadu_ps(B + k * ldb + j);
      for (int r = 0; r < MR; ++r)
        c0[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + r * lda + k), b0, c0[r]);
    }
    for (int r = 0; r < MR; ++r) _mm256_storeu_ps(C + r * ldc + j, c0[r]);
  }
  for (; j < N; ++j) {
    for (int r = 0; r < MR; ++r) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(A[r * lda + k], B[k * ldb + j], s);
      C[r * ldc + j] = s;
    }
  }
}

// exp(x) for x <= 0 (Cephes-style: x = n ln2 + r, degree-6 polynomial in r; ~1 ulp).
inline __m256 exp_nonpos(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 8 bfloat16 bit patterns -> 8 floats (the 16 bits become the top half of each float).
inline __m256 load_bf16(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

struct Avx2Ops {
  static void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                   int64_t ldc, int64_t M, int64_t N, int64_t K) {
    int64_t i = 0;
    for (; i + 6 <= M; i += 6)
      gemm_rows<6, 2>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K);
    switch (M - i) {  // the last rows: wider column blocks keep 8-12 accumulators busy
      case 5: gemm_rows<5, 2>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 4: gemm_rows<4, 2>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 3: gemm_rows<3, 4>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 2: gemm_rows<2, 4>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 1: gemm_rows<1, 8>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      default: break;
    }
  }
  static void fwht_stages(float* row, int64_t n, int64_t h0) { fwht_stages_avx2(row, n, h0); }
  static void one_plus_exp_neg2abs(const float* z, float* e, int64_t P) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 m2 = _mm256_set1_ps(-2.0f), one = _mm256_set1_ps(1.0f);
    int64_t p = 0;
    for (; p + 8 <= P; p += 8) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(z + p), abs_mask);
      _mm256_storeu_ps(e + p, _mm256_add_ps(one, exp_nonpos(_mm256_mul_ps(m2, a))));
    }
    for (; p < P; ++p) e[p] = 1.0f + std::exp(-2.0f * std::fabs(z[p]));
  }
  static void axpy(float* y, float s, const float* x, int64_t d) {
    const __m256 sv = _mm256_set1_ps(s);
    int64_t j = 0;
    for (; j + 32 <= d; j += 32) {
      for (int u = 0; u < 32; u += 8)
        _mm256_storeu_ps(y + j + u, _mm256_fmadd_ps(sv, _mm256_loadu_ps(x + j + u),
                                                    _mm256_loadu_ps(y + j + u)));
    }
    for (; j + 8 <= d; j += 8)
      _mm256_storeu_ps(y + j, _mm256_fmadd_ps(sv, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
    for (; j < d; ++j) y[j] = std::fma(s, x[j], y[j]);
  }
  static void axpy_bf16(float* y, float s, const uint16_t* x, int64_t d) {
    const __m256 sv = _mm256_set1_ps(s);
    int64_t j = 0;
    for (; j + 8 <= d; j += 8) {
      _mm256_storeu_ps(y + j, _mm256_fmadd_ps(sv, load_bf16(x + j), _mm256_loadu_ps(y + j)));
    }
    for (; j < d; ++j) {
      const uint32_t bits = static_cast<uint32_t>(x[j]) << 16;
      float v;
      std::memcpy(&v, &bits, sizeof v);
      y[j] = std::fma(s, v, y[j]);
    }
  }
  // y (kChunk,) = init + sum_g s[g] * tables[offs[g] + j], j < kChunk (init may be y); the
  // sum stays in registers.
  static void gather_chunk(const float* init, float* y, const void* tables, bool bf16,
                           const int64_t* offs, const float* s, int64_t G, bool stream) {
    static_assert(kChunk == 64, "8 registers of 8 floats");
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_loadu_ps(init + 8 * u);
    if (bf16) {
      for (int64_t g = 0; g < G; ++g) {
        const __m256 sv = _mm256_set1_ps(s[g]);
        const uint16_t* row = static_cast<const uint16_t*>(tables) + offs[g];
        for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(sv, load_bf16(row + 8 * u), acc[u]);
      }
    } else {
      for (int64_t g = 0; g < G; ++g) {
        const __m256 sv = _mm256_set1_ps(s[g]);
        const float* row = static_cast<const float*>(tables) + offs[g];
        for (int u = 0; u < 8; ++u)
          acc[u] = _mm256_fmadd_ps(sv, _mm256_loadu_ps(row + 8 * u), acc[u]);
      }
    }
    if (stream)  // y 64-byte aligned, written once: non-temporal, no read-for-ownership
      for (int u = 0; u < 8; ++u) _mm256_stream_ps(y + 8 * u, acc[u]);
    else
      for (int u = 0; u < 8; ++u) _mm256_storeu_ps(y + 8 * u, acc[u]);
  }
  static void fence() { _mm_sfence(); }  // order the streaming stores before returning
  static float dot(const float* a, const float* b, int64_t d) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), acc1);
    }
    for (; j + 8 <= d; j += 8)
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc0);
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_movehdup_ps(v));
    float s = _mm_cvtss_f32(v);
    for (; j < d; ++j) s = std::fma(a[j], b[j], s);
    return s;
  }
};

}  // namespace

void lookup_gather_packed_avx2(const int32_t* codes, const float* scores, const void* packed,
                               bool bf16, int64_t n, const LookupDims& dims, float* y,
                               int threads) {
  gather_packed_impl<Avx2Ops>(codes, scores, packed, bf16, n, dims, y, threads);
}

void lookup_forward_avx2(const float* x, int64_t n, const LookupDims& dims, const float* wt,
                         const float* pbias, const void* tables, bool tables_bf16,
                         const float* bias, float* y, int order, int threads) {
  forward_impl<Avx2Ops>(x, n, dims, wt, pbias, tables, tables_bf16, bias, y, order, threads);
}

void lookup_gather_avx2(const int32_t* codes, const float* scores, const float* tables, int64_t n,
                        int64_t h, int64_t rows, int64_t d, float* y, int threads) {
  gather_impl<Avx2Ops, float>(codes, scores, tables, n, h, rows, d, y, threads);
}

void lookup_gather_backward_avx2(const float* g, const int32_t* codes, const float* scores,
                                 const float* tables, int64_t n, int64_t h, int64_t rows,
                                 int64_t d, float* grad_scores, float* grad_rows,
                                 const int64_t* row_index, int threads) {
  gather_backward_impl<Avx2Ops, float>(g, codes, scores, tables, n, h, rows, d, grad_scores,
                                       grad_rows, row_index, threads);
}

}  // namespace liteffn
