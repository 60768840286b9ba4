// AVX-512 LookupFFN kernels: the AVX2 kernel's inner loops at 16 floats per register, with
// masked loads and stores for column tails (any block size, any d) instead of scalar loops.
//   gemm: 6 tokens x 64 outputs per register block (24 accumulators); one token splits K in two
//         accumulator sets, so 8 FMA chains stay in flight, and on Intel prefetches B into L1
//         (see prefetch_b_ahead).
//   codes/scores: 16 tables per register (their tau coordinates gathered at stride tau), the
//         polynomial exp in-lane; per table the same operations in the same order as the
//         generic loop, so codes are exact.
//   gather: a 64-column chunk is 4 registers; even and odd tables go to two accumulator sets;
//         finished output chunks of big batches are stored non-temporally.
#include "kernels/avx512_intrin.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/fwht.h"
#include "kernels/lookup.h"
#include "kernels/lookup_impl.h"

namespace liteffn {
namespace {

inline __mmask16 tail_mask(int64_t left) {  // the first min(left, 16) lanes
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

constexpr int64_t kGemmAhead = 16;  // B rows prefetched ahead when one token streams B (MR = 1;
                                    // past row K it reaches the next block, which comes next)

// Whether one token (MR = 1) prefetches B kGemmAhead rows ahead into L1. On the Intel host
// this was tuned on (2 MiB L2) the batch-1 projection weights sat in L2 and the prefetch was
// faster; on AMD EPYC (Zen 4, 1 MiB L2) they stream from L3 and the hardware prefetchers
// alone are faster (85 against 69 GB/s through this loop; batch-1 LookupFFN 4% faster).
inline bool prefetch_b_ahead() {
  static const bool yes = !__builtin_cpu_is("amd");
  return yes;
}

// Rows [0, MR) of C (MR, N) = A (MR, K) @ B (K, N): NV registers of 16 columns at a time, then
// one (possibly masked) register at a time. KS = 2 splits K into even and odd halves with their
// own accumulators (for MR = 1, where MR * NV chains alone cannot hide the FMA latency).
template <int MR, int NV, int KS>
void gemm_rows(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
               int64_t N, int64_t K) {
  const bool prefetch = MR == 1 && prefetch_b_ahead();
  int64_t j = 0;
  for (; j + 16 * NV <= N; j += 16 * NV) {
    __m512 acc[KS][MR][NV];
    for (int s = 0; s < KS; ++s)
      for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + KS <= K; k += KS) {
      if (prefetch)  // one token streams B once: fetch kGemmAhead rows ahead into L1
        for (int s = 0; s < KS; ++s)
          for (int v = 0; v < NV; ++v)
            _mm_prefetch(reinterpret_cast<const char*>(B + (k + s + kGemmAhead) * ldb + j + 16 * v),
                         _MM_HINT_T0);
      for (int s = 0; s < KS; ++s) {
        __m512 bv[NV];
        for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(B + (k + s) * ldb + j + 16 * v);
        for (int r = 0; r < MR; ++r) {
          const __m512 a = _mm512_set1_ps(A[r * lda + k + s]);
          for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_fmadd_ps(a, bv[v], acc[s][r][v]);
        }
      }
    }
    for (; k < K; ++k) {
      for (int v = 0; v < NV; ++v) {
        const __m512 b = _mm512_loadu_ps(B + k * ldb + j + 16 * v);
        for (int r = 0; r < MR; ++r)
          acc[0][r][v] = _mm512_fmadd_ps(_mm512_set1_ps(A[r * lda + k]), b, acc[0][r][v]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) {
        __m512 o = acc[0][r][v];
        for (int s = 1; s < KS; ++s) o = _mm512_add_ps(o, acc[s][r][v]);
        _mm512_storeu_ps(C + r * ldc + j + 16 * v, o);
      }
  }
  for (; j < N; j += 16) {
    const __mmask16 mk = tail_mask(N - j);
    __m512 c0[MR];
    for (int r = 0; r < MR; ++r) c0[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const __m512 b0 = _mm512_maskz_loadu_ps(mk, B + k * ldb + j);
      for (int r = 0; r < MR; ++r)
        c0[r] = _mm512_fmadd_ps(_mm512_set1_ps(A[r * lda + k]), b0, c0[r]);
    }
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(C + r * ldc + j, mk, c0[r]);
  }
}

// exp(x) for x <= 0: the AVX2 kernel's Cephes-style polynomial, 16 lanes.
inline __m512 exp_nonpos(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// 16 bfloat16 bit patterns -> 16 floats (the 16 bits become the top half of each float).
inline __m512 load_bf16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 16 table values as floats: float32 as stored, or bfloat16 bit patterns widened.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) { return load_bf16(p); }

struct Avx512Ops {
  static void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                   int64_t ldc, int64_t M, int64_t N, int64_t K) {
    int64_t i = 0;
    for (; i + 6 <= M; i += 6)
      gemm_rows<6, 4, 1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K);
    switch (M - i) {
      case 5: gemm_rows<5, 4, 1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 4: gemm_rows<4, 4, 1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 3: gemm_rows<3, 4, 1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 2: gemm_rows<2, 4, 1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      case 1: gemm_rows<1, 4, 2>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, N, K); break;
      default: break;
    }
  }
  static void fwht_stages(float* row, int64_t n, int64_t h0) { fwht_stages_avx512(row, n, h0); }
  static void one_plus_exp_neg2abs(const float* z, float* e, int64_t P) {
    const __m512 m2 = _mm512_set1_ps(-2.0f), one = _mm512_set1_ps(1.0f);
    for (int64_t p = 0; p < P; p += 16) {
      const __mmask16 mk = tail_mask(P - p);
      const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(mk, z + p));
      _mm512_mask_storeu_ps(e + p, mk, _mm512_add_ps(one, exp_nonpos(_mm512_mul_ps(m2, a))));
    }
  }
  // codes (h,) and scores (h,) of one token from z (P,), 16 tables per register: lane t
  // gathers z[t * tau + j] for j = 0 .. tau - 1 in order (the generic loop's order).
  static void codes_scores(const float* z, const LookupDims& k, int32_t* codes, float* scores) {
    const int64_t h = k.h, tau = k.tau;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 m2 = _mm512_set1_ps(-2.0f), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    // index of lane t's first coordinate, relative to table t0's: t * tau (< 16 * 12)
    const __m512i idx0 = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(tau)));
    for (int64_t t0 = 0; t0 < h; t0 += 16) {
      const __mmask16 mk = tail_mask(h - t0);
      const float* zt = z + t0 * tau;
      __m512 sum_abs = zero, denom = one;
      __m512i code = _mm512_setzero_si512();
      for (int64_t j = 0; j < tau; ++j) {
        const __m512i idx = _mm512_add_epi32(idx0, _mm512_set1_epi32(static_cast<int32_t>(j)));
        const __m512 v = _mm512_mask_i32gather_ps(zero, mk, idx, zt, 4);
        const __m512 a = _mm512_abs_ps(v);
        sum_abs = _mm512_add_ps(sum_abs, a);
        denom = _mm512_mul_ps(denom, _mm512_add_ps(one, exp_nonpos(_mm512_mul_ps(m2, a))));
        const __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);  // NaN: 0
        code = _mm512_mask_add_epi32(_mm512_add_epi32(code, code), pos,
                                     _mm512_add_epi32(code, code), _mm512_set1_epi32(1));
      }
      _mm512_mask_storeu_epi32(codes + t0, mk, code);
      _mm512_mask_storeu_ps(scores + t0, mk, _mm512_div_ps(sum_abs, denom));
    }
  }
  static void axpy(float* y, float s, const float* x, int64_t d) {
    const __m512 sv = _mm512_set1_ps(s);
    int64_t j = 0;
    for (; j + 64 <= d; j += 64)
      for (int u = 0; u < 64; u += 16)
        _mm512_storeu_ps(y + j + u, _mm512_fmadd_ps(sv, _mm512_loadu_ps(x + j + u),
                                                    _mm512_loadu_ps(y + j + u)));
    for (; j < d; j += 16) {
      const __mmask16 mk = tail_mask(d - j);
      _mm512_mask_storeu_ps(y + j, mk, _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(mk, x + j),
                                                       _mm512_maskz_loadu_ps(mk, y + j)));
    }
  }
  // y (kChunk,) = init + sum_g s[g] * tables[offs[g] + j], j < kChunk (init may be y); the
  // sum stays in registers (even g in one set of 4, odd g in another: 8 independent FMA
  // chains).
  static void gather_chunk(const float* init, float* y, const void* tables, bool bf16,
                           const int64_t* offs, const float* s, int64_t G, bool stream) {
    static_assert(kChunk == 64, "4 registers of 16 floats");
    __m512 a[4], b[4];
    for (int u = 0; u < 4; ++u) a[u] = _mm512_loadu_ps(init + 16 * u), b[u] = _mm512_setzero_ps();
    if (bf16) sum_rows(static_cast<const uint16_t*>(tables), offs, s, G, a, b);
    else sum_rows(static_cast<const float*>(tables), offs, s, G, a, b);
    if (stream)  // y 64-byte aligned, written once: non-temporal, no read-for-ownership
      for (int u = 0; u < 4; ++u) _mm512_stream_ps(y + 16 * u, _mm512_add_ps(a[u], b[u]));
    else
      for (int u = 0; u < 4; ++u) _mm512_storeu_ps(y + 16 * u, _mm512_add_ps(a[u], b[u]));
  }
  // a (even g) and b (odd g) += s[g] * the kChunk values at base + offs[g], g < G.
  template <typename T>
  static void sum_rows(const T* base, const int64_t* offs, const float* s, int64_t G,
                       __m512 (&a)[4], __m512 (&b)[4]) {
    int64_t g = 0;
    for (; g + 2 <= G; g += 2) {
      const __m512 s0 = _mm512_set1_ps(s[g]), s1 = _mm512_set1_ps(s[g + 1]);
      const T *r0 = base + offs[g], *r1 = base + offs[g + 1];
      for (int u = 0; u < 4; ++u) {
        a[u] = _mm512_fmadd_ps(s0, load16(r0 + 16 * u), a[u]);
        b[u] = _mm512_fmadd_ps(s1, load16(r1 + 16 * u), b[u]);
      }
    }
    if (g < G) {
      const __m512 s0 = _mm512_set1_ps(s[g]);
      for (int u = 0; u < 4; ++u) a[u] = _mm512_fmadd_ps(s0, load16(base + offs[g] + 16 * u), a[u]);
    }
  }
  static void fence() { _mm_sfence(); }  // order the streaming stores before returning
  static float dot(const float* a, const float* b, int64_t d) {
    __m512 acc[4];
    for (auto& v : acc) v = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 64 <= d; j += 64)
      for (int u = 0; u < 4; ++u)
        acc[u] = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 16 * u), _mm512_loadu_ps(b + j + 16 * u),
                                 acc[u]);
    for (; j < d; j += 16) {
      const __mmask16 mk = tail_mask(d - j);
      acc[0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + j), _mm512_maskz_loadu_ps(mk, b + j),
                               acc[0]);
    }
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
  }
};

}  // namespace

void lookup_gather_packed_avx512(const int32_t* codes, const float* scores, const void* packed,
                                 bool bf16, int64_t n, const LookupDims& dims, float* y,
                                 int threads) {
  gather_packed_impl<Avx512Ops>(codes, scores, packed, bf16, n, dims, y, threads);
}

void lookup_forward_avx512(const float* x, int64_t n, const LookupDims& dims, const float* wt,
                           const float* pbias, const void* tables, bool tables_bf16,
                           const float* bias, float* y, int order, int threads) {
  forward_impl<Avx512Ops>(x, n, dims, wt, pbias, tables, tables_bf16, bias, y, order, threads);
}

void lookup_gather_avx512(const int32_t* codes, const float* scores, const float* tables,
                          int64_t n, int64_t h, int64_t rows, int64_t d, float* y, int threads) {
  gather_impl<Avx512Ops, float>(codes, scores, tables, n, h, rows, d, y, threads);
}

void lookup_gather_backward_avx512(const float* g, const int32_t* codes, const float* scores,
                                   const float* tables, int64_t n, int64_t h, int64_t rows,
                                   int64_t d, float* grad_scores, float* grad_rows,
                                   const int64_t* row_index, int threads) {
  gather_backward_impl<Avx512Ops, float>(g, codes, scores, tables, n, h, rows, d, grad_scores,
                                         grad_rows, row_index, threads);
}

}  // namespace liteffn
