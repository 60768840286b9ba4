// Portable LookupFFN kernels (x86-64 baseline; the compiler may auto-vectorise the loops).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/fwht.h"
#include "kernels/lookup.h"
#include "kernels/lookup_impl.h"

namespace liteffn {
namespace {

struct ScalarOps {
  // C (M, N) = A (M, K) @ B (K, N); row strides lda, ldb, ldc. Sums run over k in order.
  static void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                   int64_t ldc, int64_t M, int64_t N, int64_t K) {
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      std::memset(c, 0, sizeof(float) * N);
      for (int64_t kk = 0; kk < K; ++kk) {
        const float a = A[i * lda + kk];
        const float* b = B + kk * ldb;
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      }
    }
  }
  static void fwht_stages(float* row, int64_t n, int64_t h0) { fwht_stages_scalar(row, n, h0); }
  // e (P,) = 1 + exp(-2 |z|)
  static void one_plus_exp_neg2abs(const float* z, float* e, int64_t P) {
    for (int64_t p = 0; p < P; ++p) e[p] = 1.0f + std::exp(-2.0f * std::fabs(z[p]));
  }
  template <typename T>
  static void axpy(T* y, T s, const T* x, int64_t d) {
    for (int64_t j = 0; j < d; ++j) y[j] += s * x[j];
  }
  // x (d,) bfloat16 bit patterns: the float is the 16 bits shifted to the top half.
  static void axpy_bf16(float* y, float s, const uint16_t* x, int64_t d) {
    for (int64_t j = 0; j < d; ++j) y[j] += s * bf16_value(x[j]);
  }
  static float bf16_value(uint16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  // y (kChunk,) = init + sum_g s[g] * tables[offs[g] + j], j < kChunk (one chunk of G rows;
  // init may be y).
  static void gather_chunk(const float* init, float* y, const void* tables, bool bf16,
                           const int64_t* offs, const float* s, int64_t G, bool /*stream*/) {
    if (init != y) std::memcpy(y, init, sizeof(float) * kChunk);
    for (int64_t g = 0; g < G; ++g) {
      if (bf16) axpy_bf16(y, s[g], static_cast<const uint16_t*>(tables) + offs[g], kChunk);
      else axpy(y, s[g], static_cast<const float*>(tables) + offs[g], kChunk);
    }
  }
  static void fence() {}  // plain stores only
  template <typename T>
  static T dot(const T* a, const T* b, int64_t d) {
    T s = 0;
    for (int64_t j = 0; j < d; ++j) s += a[j] * b[j];
    return s;
  }
};

}  // namespace

void lookup_pack_tables(const float* tables, int64_t h, int64_t rows, int64_t d, float* dst,
                        int threads) {
  const int64_t nc = (d + kChunk - 1) / kChunk;
  threads = clamp_threads(threads, h);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < h; ++q) {
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t len = std::min(kChunk, d - c * kChunk);
      float* out = dst + (q * nc + c) * rows * kChunk;  // (rows, kChunk) block of table q
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(out + r * kChunk, tables + (q * rows + r) * d + c * kChunk,
                    sizeof(float) * len);
        std::fill(out + r * kChunk + len, out + (r + 1) * kChunk, 0.0f);
      }
    }
  }
}

void lookup_gather_packed_scalar(const int32_t* codes, const float* scores, const void* packed,
                                 bool bf16, int64_t n, const LookupDims& dims, float* y,
                                 int threads) {
  gather_packed_impl<ScalarOps>(codes, scores, packed, bf16, n, dims, y, threads);
}

void lookup_forward_scalar(const float* x, int64_t n, const LookupDims& dims, const float* wt,
                           const float* pbias, const void* tables, bool tables_bf16,
                           const float* bias, float* y, int order, int threads) {
  forward_impl<ScalarOps>(x, n, dims, wt, pbias, tables, tables_bf16, bias, y, order, threads);
}

template <typename T>
void lookup_gather_scalar(const int32_t* codes, const T* scores, const T* tables, int64_t n,
                          int64_t h, int64_t rows, int64_t d, T* y, int threads) {
  gather_impl<ScalarOps, T>(codes, scores, tables, n, h, rows, d, y, threads);
}

template <typename T>
void lookup_gather_backward_scalar(const T* g, const int32_t* codes, const T* scores,
                                   const T* tables, int64_t n, int64_t h, int64_t rows, int64_t d,
                                   T* grad_scores, T* grad_rows, const int64_t* row_index,
                                   int threads) {
  gather_backward_impl<ScalarOps, T>(g, codes, scores, tables, n, h, rows, d, grad_scores,
                                     grad_rows, row_index, threads);
}

template void lookup_gather_scalar<float>(const int32_t*, const float*, const float*, int64_t,
                                          int64_t, int64_t, int64_t, float*, int);
template void lookup_gather_scalar<double>(const int32_t*, const double*, const double*, int64_t,
                                           int64_t, int64_t, int64_t, double*, int);
template void lookup_gather_backward_scalar<float>(const float*, const int32_t*, const float*,
                                                   const float*, int64_t, int64_t, int64_t,
                                                   int64_t, float*, float*, const int64_t*, int);
template void lookup_gather_backward_scalar<double>(const double*, const int32_t*, const double*,
                                                    const double*, int64_t, int64_t, int64_t,
                                                    int64_t, double*, double*, const int64_t*,
                                                    int);

}  // namespace liteffn
