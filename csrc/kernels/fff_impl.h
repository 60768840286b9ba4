// The descent driver shared by fff_scalar.cpp and fff_avx2.cpp. Each includes this header after
// defining, in its own anonymous namespace, a struct `Prim` with the ISA's primitives:
//   dot_rows(m, xs[m], ws[m], d, out[m])    m <= kGroup dot products <xs[g], ws[g]>
//   dot_shared(m, xs[m], w, d, out[m])      m <= kGroup dot products <xs[g], w>
//   gather_sum(y, b_out, w_out, rows[K], g[K], K, d)   y = b_out + sum_k g[k] * w_out[rows[k]]
//   prefetch(p, bytes)                      hint that [p, p+bytes) is read soon
// The driver is in an anonymous namespace too, so each ISA gets its own copy (no ODR clash).
//
// Two schedules compute the same function:
// * token-major (small batches): a thread walks kGroup tokens down the tree together, so the
//   kGroup dependent row loads of a level overlap, and prefetches both children of every node
//   (adjacent rows 2n+1, 2n+2) while the current dot products run;
// * grouped (large batches): per chunk of tokens and per level, tokens sitting at the same node
//   are contiguous in a permutation (a stable left/right partition per level keeps them sorted
//   by node), so each node's w_in row is read once for all its tokens.
// Both record (row, gelu(a)) per token and level, then form y row by row with gather_sum.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "kernels/fff.h"

namespace liteffn {
namespace {

constexpr int kGroup = 4;              // tokens per dot-product call
constexpr int64_t kChunk = 256;        // tokens per grouped chunk
constexpr int64_t kGroupedMin = 256;   // tokens per thread from which the grouped schedule runs

inline float gelu_exact(float a) { return 0.5f * a * (1.0f + std::erf(a * 0.70710678118654752f)); }

struct Descent {
  const FFFArgs& a;
  int64_t nodes, levels, k;

  explicit Descent(const FFFArgs& args)
      : a(args),
        nodes((int64_t{1} << (args.depth + 1)) - 1),
        levels(args.depth + 1),
        k(int64_t{args.trees} * (args.depth + 1)) {}

  // Record level l of tree t for token i: returns the next local node.
  inline int64_t step(int64_t i, int t, int64_t l, int64_t node, float dot, int64_t* rows,
                      float* g) const {
    const int64_t r = t * nodes + node;
    const float act = dot + a.b_in[r];
    const int64_t col = t * levels + l;
    rows[col] = r;
    g[col] = gelu_exact(act);
    if (a.path) a.path[i * k + col] = static_cast<int32_t>(r);
    if (a.act) a.act[i * k + col] = act;
    return 2 * node + 1 + (act > 0.0f ? 1 : 0);  // NaN compares false: left
  }
};

template <class Prim>
void run_token_major(const Descent& s, int64_t t0, int64_t t1, int64_t* rows, float* g) {
  const FFFArgs& a = s.a;
  const int64_t d = a.d;
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(float));
  for (int64_t i0 = t0; i0 < t1; i0 += kGroup) {
    const int m = static_cast<int>(std::min<int64_t>(kGroup, t1 - i0));
    const float* xs[kGroup];
    for (int j = 0; j < m; ++j) xs[j] = a.x + (i0 + j) * d;
    for (int t = 0; t < a.trees; ++t) {
      int64_t node[kGroup] = {0, 0, 0, 0};
      for (int64_t l = 0; l < s.levels; ++l) {
        const float* ws[kGroup];
        for (int j = 0; j < m; ++j) {
          const int64_t r = t * s.nodes + node[j];
          ws[j] = a.w_in + r * d;
          Prim::prefetch(a.w_out + r * d, row_bytes);
          if (l + 1 < s.levels) Prim::prefetch(a.w_in + (r + node[j] + 1) * d, 2 * row_bytes);
        }
        float dot[kGroup];
        Prim::dot_rows(m, xs, ws, d, dot);
        for (int j = 0; j < m; ++j)
          node[j] = s.step(i0 + j, t, l, node[j], dot[j], rows + j * s.k, g + j * s.k);
      }
    }
    for (int j = 0; j < m; ++j)
      Prim::gather_sum(a.y + (i0 + j) * d, a.b_out, a.w_out, rows + j * s.k, g + j * s.k, s.k, d);
  }
}

template <class Prim>
void run_grouped(const Descent& s, int64_t c0, int64_t c1, int64_t* rows, float* g,
                 int64_t* perm, int64_t* tmp, int64_t* node) {
  const FFFArgs& a = s.a;
  const int64_t d = a.d, m_all = c1 - c0;
  for (int t = 0; t < a.trees; ++t) {
    for (int64_t j = 0; j < m_all; ++j) perm[j] = j, node[j] = 0;
    for (int64_t l = 0; l < s.levels; ++l) {
      int64_t run = 0;
      while (run < m_all) {  // one run = the tokens at one node, in perm order
        const int64_t n = node[perm[run]];
        int64_t end = run + 1;
        while (end < m_all && node[perm[end]] == n) ++end;
        const float* w = a.w_in + (t * s.nodes + n) * d;
        int64_t left = run, right = 0;  // stable partition into tmp: lefts stay, rights follow
        for (int64_t j0 = run; j0 < end; j0 += kGroup) {
          const int m = static_cast<int>(std::min<int64_t>(kGroup, end - j0));
          const float* xs[kGroup];
          for (int j = 0; j < m; ++j) xs[j] = a.x + (c0 + perm[j0 + j]) * d;
          float dot[kGroup];
          Prim::dot_shared(m, xs, w, d, dot);
          for (int j = 0; j < m; ++j) {
            const int64_t p = perm[j0 + j];
            node[p] = s.step(c0 + p, t, l, n, dot[j], rows + p * s.k, g + p * s.k);
            if (node[p] == 2 * n + 1) perm[left++] = p;
            else tmp[right++] = p;
          }
        }
        std::copy(tmp, tmp + right, perm + left);
        run = end;
      }
    }
  }
  for (int64_t p = 0; p < m_all; ++p)
    Prim::gather_sum(a.y + (c0 + p) * d, a.b_out, a.w_out, rows + p * s.k, g + p * s.k, s.k, d);
}

template <class Prim>
void fff_run(const FFFArgs& a, int threads) {
  const Descent s(a);
  const int64_t n = a.n;
  if (n <= 0) return;
  threads = clamp_threads(threads, (n + kGroup - 1) / kGroup);
  const bool grouped = n / threads >= kGroupedMin;
  if (!grouped && threads == 1 && s.k <= 128) {  // batch-1 fast path: no OpenMP, no heap
    int64_t rows[kGroup * 128];
    float g[kGroup * 128];
    run_token_major<Prim>(s, 0, n, rows, g);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t per = grouped ? kChunk : kGroup;
    std::vector<int64_t> rows(static_cast<size_t>(per * s.k));
    std::vector<float> g(static_cast<size_t>(per * s.k));
    std::vector<int64_t> perm, tmp, node;
    if (grouped) perm.resize(kChunk), tmp.resize(kChunk), node.resize(kChunk);
    const int64_t chunks = (n + per - 1) / per;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t c0 = c * per, c1 = std::min(n, c0 + per);
      if (grouped)
        run_grouped<Prim>(s, c0, c1, rows.data(), g.data(), perm.data(), tmp.data(), node.data());
      else
        run_token_major<Prim>(s, c0, c1, rows.data(), g.data());
    }
  }
}

}  // namespace
}  // namespace liteffn
