// AVX-512 FFF kernel: the AVX2 kernel's primitives at 16 floats per register, with masked loads
// for the column tail (any d), so there is no scalar tail loop.
#include "kernels/avx512_intrin.h"

#include <initializer_list>

#include "kernels/fff.h"
#include "kernels/fff_x86.h"
#include "kernels/gelu.h"

namespace liteffn {
namespace {

inline __mmask16 tail_mask(int64_t left) {  // the first min(left, 16) lanes
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

inline __m512 load_tail(const float* p, int64_t left) {
  return _mm512_maskz_loadu_ps(tail_mask(left), p);
}

// gelu of 16 lanes (kernels/gelu.h gives the method and its error). NaN stays NaN.
inline __m512 gelu16(__m512 a) {
  using namespace gelu_consts;
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_abs_ps(_mm512_mul_ps(a, _mm512_set1_ps(kInvSqrt2)));
  // exp(-z^2) = 2^n e^r, n = round(v log2 e), r = v - n ln 2 (in two parts); max keeps NaN
  const __m512 v = _mm512_max_ps(_mm512_set1_ps(kExpMin),
                                 _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), v);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 e = _mm512_set1_ps(kE7);
  for (const float c : {kE6, kE5, kE4, kE3, kE2, 1.0f, 1.0f})
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
  e = _mm512_scalef_ps(e, n);  // e * 2^n
  // erf(z) = 1 - t (c1 + t (c2 + ...)) exp(-z^2), t = 1 / (1 + p z)
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(kP), z, one));
  __m512 q = _mm512_set1_ps(kC5);
  for (const float c : {kC4, kC3, kC2, kC1}) q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(c));
  const __m512 erf_abs = _mm512_fnmadd_ps(_mm512_mul_ps(q, t), e, one);
  // 1 + erf(a / sqrt 2), erf taking a's sign
  const __mmask16 neg = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 one_plus = _mm512_mask_sub_ps(_mm512_add_ps(one, erf_abs), neg, one, erf_abs);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), a), one_plus);
}

// This level's registers for gather_tokens_chunks (fff_x86.h).
struct Vec16 {
  using Reg = __m512;
  static constexpr int64_t kLanes = 16;
  static constexpr int kChunkRegs = 4;  // per token: 4 tokens x 4 of the 32 registers (2 and
                                        // 6 measured slower at batch 128)
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float v) { return _mm512_set1_ps(v); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static void stream(float* p, Reg v) { _mm512_stream_ps(p, v); }  // p aligned to the register
};

struct Prim : X86Hints {
  static void gelu_n(float* v, int64_t m) {
    for (int64_t j = 0; j < m; j += 16) {
      const __mmask16 mk = tail_mask(m - j);
      _mm512_mask_storeu_ps(v + j, mk, gelu16(_mm512_maskz_loadu_ps(mk, v + j)));
    }
  }


  // out[j] = <xs[j], ws[j]>; the m rows are independent, so their loads overlap: 8 at once
  // (the bucketed walk: more rows of x in flight from memory), else 4 at a time.
  static void dot_rows(int m, const float* const* xs, const float* const* ws, int64_t d,
                       float* out) {
    if (m == 8) return dot_rows_m<8>(xs, ws, d, out);
    if (m >= 4) {
      dot_rows_m<4>(xs, ws, d, out);
      if (m > 4) dot_rows(m - 4, xs + 4, ws + 4, d, out + 4);
      return;
    }
    for (int j = 0; j < m; ++j) out[j] = dot1(xs[j], ws[j], d);
  }

  template <int M>
  static void dot_rows_m(const float* const* xs, const float* const* ws, int64_t d, float* out) {
    __m512 a[M], b[M];
    for (int j = 0; j < M; ++j) a[j] = b[j] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= d; c += 32)
      for (int j = 0; j < M; ++j) {
        a[j] = _mm512_fmadd_ps(_mm512_loadu_ps(xs[j] + c), _mm512_loadu_ps(ws[j] + c), a[j]);
        b[j] = _mm512_fmadd_ps(_mm512_loadu_ps(xs[j] + c + 16), _mm512_loadu_ps(ws[j] + c + 16),
                               b[j]);
      }
    for (; c < d; c += 16)
      for (int j = 0; j < M; ++j)
        a[j] = _mm512_fmadd_ps(load_tail(xs[j] + c, d - c), load_tail(ws[j] + c, d - c), a[j]);
    for (int j = 0; j < M; ++j) out[j] = _mm512_reduce_add_ps(_mm512_add_ps(a[j], b[j]));
  }

  // out[j] = <vs[j], u>: one load of u serves the m rows (e.g. one token, several trees).
  static void dot_shared(int m, const float* const* vs, const float* u, int64_t d, float* out) {
    if (m == 4) return dot_shared_m<4>(vs, u, d, out);
    if (m == 2) return dot_shared_m<2>(vs, u, d, out);
    for (int j = 0; j < m; ++j) out[j] = dot1(vs[j], u, d);
  }

  template <int M>
  static void dot_shared_m(const float* const* vs, const float* u, int64_t d, float* out) {
    __m512 a[M], b[M];
    for (int j = 0; j < M; ++j) a[j] = b[j] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= d; c += 32) {
      const __m512 u0 = _mm512_loadu_ps(u + c), u1 = _mm512_loadu_ps(u + c + 16);
      for (int j = 0; j < M; ++j) {
        a[j] = _mm512_fmadd_ps(u0, _mm512_loadu_ps(vs[j] + c), a[j]);
        b[j] = _mm512_fmadd_ps(u1, _mm512_loadu_ps(vs[j] + c + 16), b[j]);
      }
    }
    for (; c < d; c += 16) {
      const __m512 u0 = load_tail(u + c, d - c);
      for (int j = 0; j < M; ++j) a[j] = _mm512_fmadd_ps(u0, load_tail(vs[j] + c, d - c), a[j]);
    }
    for (int j = 0; j < M; ++j) out[j] = _mm512_reduce_add_ps(_mm512_add_ps(a[j], b[j]));
  }

  static float dot1(const float* x, const float* w, int64_t d) {
    __m512 a[4];
    for (auto& v : a) v = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 64 <= d; c += 64)  // 4 independent FMA chains
      for (int u = 0; u < 4; ++u)
        a[u] = _mm512_fmadd_ps(_mm512_loadu_ps(x + c + 16 * u), _mm512_loadu_ps(w + c + 16 * u),
                               a[u]);
    for (; c < d; c += 16)
      a[0] = _mm512_fmadd_ps(load_tail(x + c, d - c), load_tail(w + c, d - c), a[0]);
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  }

  // y = b_out + sum_j g[j] * w_out[rows[j]]: 128 columns at a time in 8 registers, then 16
  // (gather_sum_chunks, fff_x86.h), then a masked tail. b_out may be y itself (accumulate).
  // With stream, rows of y that start 64-byte aligned are written with non-temporal stores
  // (see the AVX2 kernel); callers issue fence() before y is shared.
  static void gather_sum(float* y, const float* b_out, const float* w_out, const int64_t* rows,
                         const float* g, int64_t k, int64_t d, bool stream = false) {
    stream = stream && (reinterpret_cast<uintptr_t>(y) & 63) == 0 && d % 16 == 0;
    const int64_t c = gather_sum_chunks<Vec16>(y, b_out, w_out, rows, g, k, d, stream);
    if (c == d) return;
    const __mmask16 mk = tail_mask(d - c);  // d % 16 columns (stream implies none)
    __m512 acc = b_out ? _mm512_maskz_loadu_ps(mk, b_out + c) : _mm512_setzero_ps();
    for (int64_t j = 0; j < k; ++j)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(g[j]),
                            _mm512_maskz_loadu_ps(mk, w_out + rows[j] * d + c), acc);
    _mm512_mask_storeu_ps(y + c, mk, acc);
  }

  // gather_sum for m <= 4 tokens at once (the large-batch schedule passes neighbours in leaf
  // order, which share most rows): 64 columns at a time, 4 registers per token. A row all m
  // tokens share is loaded once per chunk for all of them, so those FMAs need no load of their
  // own; other rows are loaded per token. Each y element is the same sum in the same order as
  // gather_sum's.
  static void gather_sum_tokens(int m, float* const* ys, const float* b_out, const float* w_out,
                                const int64_t* const* rows, const float* const* g, int64_t k,
                                int64_t d, bool stream = false) {
    gather_tokens_by_count<Prim>(m, ys, b_out, w_out, rows, g, k, d, stream);
  }

  template <int M>
  static void gather_tokens_m(float* const* ys, const float* b_out, const float* w_out,
                              const int64_t* const* rows, const float* const* g, int64_t k,
                              int64_t d, bool stream) {
    stream = can_stream<Vec16, M>(ys, d, stream);
    int64_t c = gather_tokens_chunks<Vec16, M>(ys, b_out, w_out, rows, g, k, d, stream,
                                               shared_rows<M>(rows, k));
    for (; c < d; c += 16) {
      const __mmask16 mk = tail_mask(d - c);
      __m512 acc[M];
      for (int j = 0; j < M; ++j)
        acc[j] = b_out ? _mm512_maskz_loadu_ps(mk, b_out + c) : _mm512_setzero_ps();
      for (int64_t e = 0; e < k; ++e)
        for (int j = 0; j < M; ++j)
          acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(g[j][e]),
                                   _mm512_maskz_loadu_ps(mk, w_out + rows[j][e] * d + c), acc[j]);
      for (int j = 0; j < M; ++j) {
        if (stream) _mm512_stream_ps(ys[j] + c, acc[j]);  // d % 16 == 0: full lanes only
        else _mm512_mask_storeu_ps(ys[j] + c, mk, acc[j]);
      }
    }
  }
};

}  // namespace
}  // namespace liteffn

#include "kernels/fff_impl.h"

namespace liteffn {

void fff_forward_avx512(const FFFArgs& a, int threads) { fff_run<Prim>(a, threads); }

void fff_leaf_forward_avx512(const FFFLeafArgs& a, int threads) { fff_leaf_run<Prim>(a, threads); }

}  // namespace liteffn
