// Portable FFF kernel: plain sequential dot products and accumulations.
#include "kernels/fff.h"
#include "kernels/gelu.h"

namespace liteffn {
namespace {

struct Prim {
  static void dot_rows(int m, const float* const* xs, const float* const* ws, int64_t d,
                       float* out) {
    for (int j = 0; j < m; ++j) {
      float acc = 0.0f;
      for (int64_t c = 0; c < d; ++c) acc += xs[j][c] * ws[j][c];
      out[j] = acc;
    }
  }
  static void dot_shared(int m, const float* const* vs, const float* u, int64_t d, float* out) {
    for (int j = 0; j < m; ++j) {
      float acc = 0.0f;
      for (int64_t c = 0; c < d; ++c) acc += vs[j][c] * u[c];
      out[j] = acc;
    }
  }
  static void gather_sum(float* y, const float* b_out, const float* w_out, const int64_t* rows,
                         const float* g, int64_t k, int64_t d, bool /*stream*/ = false) {
    for (int64_t c = 0; c < d; ++c) y[c] = b_out ? b_out[c] : 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      const float* w = w_out + rows[j] * d;
      const float gj = g[j];
      for (int64_t c = 0; c < d; ++c) y[c] += gj * w[c];
    }
  }
  static void gather_sum_tokens(int m, float* const* ys, const float* b_out, const float* w_out,
                                const int64_t* const* rows, const float* const* g, int64_t k,
                                int64_t d, bool /*stream*/ = false) {
    for (int j = 0; j < m; ++j) gather_sum(ys[j], b_out, w_out, rows[j], g[j], k, d);
  }
  static void gelu_n(float* v, int64_t m) {
    for (int64_t j = 0; j < m; ++j) v[j] = gelu_exact(v[j]);
  }
  static void prefetch(const float*, int64_t) {}
  static void fence() {}
};

}  // namespace
}  // namespace liteffn

#include "kernels/fff_impl.h"

namespace liteffn {

void fff_forward_scalar(const FFFArgs& a, int threads) { fff_run<Prim>(a, threads); }

void fff_leaf_forward_scalar(const FFFLeafArgs& a, int threads) { fff_leaf_run<Prim>(a, threads); }

}  // namespace liteffn
