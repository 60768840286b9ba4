// AVX2+FMA FFF kernel: 8-wide dot products with two accumulators per token (kGroup tokens at
// once, so 8 independent FMA chains), 32-wide gather-sums, software prefetch of the next rows.
#include <immintrin.h>

#include <initializer_list>

#include "kernels/fff.h"
#include "kernels/fff_x86.h"
#include "kernels/gelu.h"

namespace liteffn {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// gelu of 8 lanes (kernels/gelu.h gives the method and its error). NaN stays NaN.
inline __m256 gelu8(__m256 a) {
  using namespace gelu_consts;
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_andnot_ps(sign, _mm256_mul_ps(a, _mm256_set1_ps(kInvSqrt2)));
  // exp(-z^2) = 2^n e^r, n = round(v log2 e), r = v - n ln 2 (in two parts); max keeps NaN
  const __m256 v = _mm256_max_ps(_mm256_set1_ps(kExpMin), _mm256_mul_ps(_mm256_xor_ps(z, sign), z));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), v);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 e = _mm256_set1_ps(kE7);
  for (const float c : {kE6, kE5, kE4, kE3, kE2, 1.0f, 1.0f})
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(c));
  // * 2^n: n in [-126, 0], so (n + 127) << 23 is a normal float's bit pattern
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  e = _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
  // erf(z) = 1 - t (c1 + t (c2 + ...)) exp(-z^2), t = 1 / (1 + p z)
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(kP), z, one));
  __m256 q = _mm256_set1_ps(kC5);
  for (const float c : {kC4, kC3, kC2, kC1}) q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(c));
  const __m256 erf_abs = _mm256_fnmadd_ps(_mm256_mul_ps(q, t), e, one);
  // 1 + erf(a / sqrt 2), erf taking a's sign
  const __m256 neg = _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 one_plus =
      _mm256_blendv_ps(_mm256_add_ps(one, erf_abs), _mm256_sub_ps(one, erf_abs), neg);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), a), one_plus);
}

// This level's registers for gather_tokens_chunks (fff_x86.h).
struct Vec8 {
  using Reg = __m256;
  static constexpr int64_t kLanes = 8;
  // per token: 4 tokens x 3 of the 16 registers leave room for the loaded row and g (with 4,
  // all 16 held sums spill: 2 threads x 16384 tokens p25 15.0 -> 12.8 ms at 3, 14.8 at 2)
  static constexpr int kChunkRegs = 3;
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float v) { return _mm256_set1_ps(v); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static void stream(float* p, Reg v) { _mm256_stream_ps(p, v); }  // p aligned to the register
};

struct Prim : X86Hints {
  static void gelu_n(float* v, int64_t m) {
    int64_t j = 0;
    for (; j + 8 <= m; j += 8) _mm256_storeu_ps(v + j, gelu8(_mm256_loadu_ps(v + j)));
    if (j < m) {  // the tail through a zero-padded copy: nothing read or written past v[m-1]
      alignas(32) float buf[8] = {};
      for (int64_t e = j; e < m; ++e) buf[e - j] = v[e];
      _mm256_store_ps(buf, gelu8(_mm256_load_ps(buf)));
      for (int64_t e = j; e < m; ++e) v[e] = buf[e - j];
    }
  }


  // out[j] = <xs[j], ws[j]>; the kGroup rows are independent, so their loads overlap.
  static void dot_rows(int m, const float* const* xs, const float* const* ws, int64_t d,
                       float* out) {
    if (m > 4) {  // 4 at a time: 8 accumulators fill half the 16 registers
      dot_rows(4, xs, ws, d, out);
      return dot_rows(m - 4, xs + 4, ws + 4, d, out + 4);
    }
    if (m != 4) {
      for (int j = 0; j < m; ++j) out[j] = dot1(xs[j], ws[j], d);
      return;
    }
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t c = 0;
    for (; c + 16 <= d; c += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[0] + c), _mm256_loadu_ps(ws[0] + c), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[1] + c), _mm256_loadu_ps(ws[1] + c), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[2] + c), _mm256_loadu_ps(ws[2] + c), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[3] + c), _mm256_loadu_ps(ws[3] + c), a3);
      b0 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[0] + c + 8), _mm256_loadu_ps(ws[0] + c + 8), b0);
      b1 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[1] + c + 8), _mm256_loadu_ps(ws[1] + c + 8), b1);
      b2 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[2] + c + 8), _mm256_loadu_ps(ws[2] + c + 8), b2);
      b3 = _mm256_fmadd_ps(_mm256_loadu_ps(xs[3] + c + 8), _mm256_loadu_ps(ws[3] + c + 8), b3);
    }
    float r[4] = {hsum(_mm256_add_ps(a0, b0)), hsum(_mm256_add_ps(a1, b1)),
                  hsum(_mm256_add_ps(a2, b2)), hsum(_mm256_add_ps(a3, b3))};
    for (int j = 0; j < 4; ++j) {
      for (int64_t e = c; e < d; ++e) r[j] += xs[j][e] * ws[j][e];
      out[j] = r[j];
    }
  }

  // out[j] = <vs[j], u>: one load of u serves the m rows (e.g. one token, several trees).
  static void dot_shared(int m, const float* const* vs, const float* u, int64_t d, float* out) {
    if (m == 4) return dot_shared_m<4>(vs, u, d, out);
    if (m == 2) return dot_shared_m<2>(vs, u, d, out);
    for (int j = 0; j < m; ++j) out[j] = dot1(vs[j], u, d);
  }

  template <int M>
  static void dot_shared_m(const float* const* vs, const float* u, int64_t d, float* out) {
    __m256 a[M], b[M];
    for (int j = 0; j < M; ++j) a[j] = b[j] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= d; c += 16) {
      const __m256 u0 = _mm256_loadu_ps(u + c), u1 = _mm256_loadu_ps(u + c + 8);
      for (int j = 0; j < M; ++j) {
        a[j] = _mm256_fmadd_ps(u0, _mm256_loadu_ps(vs[j] + c), a[j]);
        b[j] = _mm256_fmadd_ps(u1, _mm256_loadu_ps(vs[j] + c + 8), b[j]);
      }
    }
    for (int j = 0; j < M; ++j) {
      float r = hsum(_mm256_add_ps(a[j], b[j]));
      for (int64_t e = c; e < d; ++e) r += vs[j][e] * u[e];
      out[j] = r;
    }
  }

  static float dot1(const float* x, const float* w, int64_t d) {
    __m256 a[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 64 <= d; c += 64)  // 8 independent FMA chains
      for (int u = 0; u < 8; ++u)
        a[u] = _mm256_fmadd_ps(_mm256_loadu_ps(x + c + 8 * u), _mm256_loadu_ps(w + c + 8 * u),
                               a[u]);
    for (; c + 8 <= d; c += 8)
      a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(w + c), a[0]);
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7]));
    const __m256 s = _mm256_add_ps(lo, hi);
    float r = hsum(s);
    for (; c < d; ++c) r += x[c] * w[c];
    return r;
  }

  // y = b_out + sum_j g[j] * w_out[rows[j]]: 64 columns at a time in 8 registers, then 8
  // (gather_sum_chunks, fff_x86.h), then a scalar tail. With stream (large batches), rows of y
  // that start 32-byte aligned are written with non-temporal stores: y is not read back here,
  // so skipping the read-for-ownership saves a third of its memory traffic. Callers issue
  // fence() before other threads may read y.
  static void gather_sum(float* y, const float* b_out, const float* w_out, const int64_t* rows,
                         const float* g, int64_t k, int64_t d, bool stream = false) {
    stream = stream && (reinterpret_cast<uintptr_t>(y) & 31) == 0 && d % 8 == 0;
    for (int64_t c = gather_sum_chunks<Vec8>(y, b_out, w_out, rows, g, k, d, stream); c < d; ++c) {
      float acc = b_out ? b_out[c] : 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += g[j] * w_out[rows[j] * d + c];
      y[c] = acc;
    }
  }

  // gather_sum for m <= 4 tokens at once, 24 columns at a time (3 registers per token); a row
  // all m tokens share is loaded once per chunk for all of them (see the AVX-512 kernel). Each
  // y element is the same sum in the same order as gather_sum's.
  static void gather_sum_tokens(int m, float* const* ys, const float* b_out, const float* w_out,
                                const int64_t* const* rows, const float* const* g, int64_t k,
                                int64_t d, bool stream = false) {
    gather_tokens_by_count<Prim>(m, ys, b_out, w_out, rows, g, k, d, stream);
  }

  template <int M>
  static void gather_tokens_m(float* const* ys, const float* b_out, const float* w_out,
                              const int64_t* const* rows, const float* const* g, int64_t k,
                              int64_t d, bool stream) {
    stream = can_stream<Vec8, M>(ys, d, stream);
    int64_t c = gather_tokens_chunks<Vec8, M>(ys, b_out, w_out, rows, g, k, d, stream,
                                              shared_rows<M>(rows, k));
    for (; c + 8 <= d; c += 8)
      for (int j = 0; j < M; ++j) {
        __m256 acc = b_out ? _mm256_loadu_ps(b_out + c) : _mm256_setzero_ps();
        for (int64_t e = 0; e < k; ++e)
          acc = _mm256_fmadd_ps(_mm256_set1_ps(g[j][e]),
                                _mm256_loadu_ps(w_out + rows[j][e] * d + c), acc);
        if (stream) _mm256_stream_ps(ys[j] + c, acc);
        else _mm256_storeu_ps(ys[j] + c, acc);
      }
    for (; c < d; ++c)
      for (int j = 0; j < M; ++j) {
        float acc = b_out ? b_out[c] : 0.0f;
        for (int64_t e = 0; e < k; ++e) acc += g[j][e] * w_out[rows[j][e] * d + c];
        ys[j][c] = acc;
      }
  }
};

}  // namespace
}  // namespace liteffn

#include "kernels/fff_impl.h"

namespace liteffn {

void fff_forward_avx2(const FFFArgs& a, int threads) { fff_run<Prim>(a, threads); }

void fff_leaf_forward_avx2(const FFFLeafArgs& a, int threads) { fff_leaf_run<Prim>(a, threads); }

}  // namespace liteffn
