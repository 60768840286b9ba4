// The descent driver shared by fff_scalar.cpp, fff_avx2.cpp and fff_avx512.cpp. Each includes
// this header after defining, in its own anonymous namespace, a struct `Prim` with the ISA's
// primitives:
//   dot_rows(m, xs[m], ws[m], d, out[m])    m dot products <xs[g], ws[g]> (m <= 8)
//   dot_shared(m, vs[m], u, d, out[m])      m <= kGroup dot products <vs[g], u> (u loaded once)
//   gelu_n(v, m)                            v[0..m) = gelu(v[0..m)) in place (kernels/gelu.h)
//   gather_sum(y, b_out, w_out, rows[K], g[K], K, d, stream)   y = b_out + sum_k g[k] *
//                                           w_out[rows[k]]; stream: may bypass the cache
//   gather_sum_tokens(m, ys[m], b_out, w_out, rows[m], g[m], K, d, stream)   gather_sum for
//                                           m <= kGroup tokens at once (shared rows read once)
//   fence()                                 order streamed stores before y is shared
//   prefetch(p, bytes)                      hint that [p, p+bytes) is read soon
// The driver is in an anonymous namespace too, so each ISA gets its own copy (no ODR clash).
//
// Three schedules compute the same function:
// * token-major (small batches): a thread walks kGroup tokens down the tree together, so the
//   kGroup dependent row loads of a level overlap, and prefetches both children of every node
//   (adjacent rows 2n+1, 2n+2) while the current dot products run;
// * bucketed (large batches, see kernels/fff_bucketed.h): tokens are grouped by the node they
//   sit at after the top half of the levels, so each lower subtree's rows are fetched once for
//   all of its tokens and stay in cache while they descend;
// * forest (several shallow trees, whose rows fit in L2: see run_forest): tiles of tokens walk
//   kForestGroup trees at a time, one load of x feeding their dot products, so a tile reuses
//   each group's rows from cache; their GELUs run over the whole tile at once (gelu_n).
// All record (row, a) per token and level, run the recorded a values through GELU at once
// (gelu_n, SIMD), then form y row by row with gather_sum.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "kernels/fff.h"

namespace liteffn {
namespace {

constexpr int kGroup = 4;              // tokens per dot-product call
constexpr int64_t kBucketedMin = 64;   // tokens from which the bucketed schedule runs
constexpr int64_t kForestTreeBytes = 256 << 10;  // a tree's rows (w_in + w_out) at most this
constexpr int64_t kForestTile = 256;             // tokens per forest tile
constexpr int kForestGroup = 2;  // trees walked together (2 measured faster than 1 and 4)
// Of each child row, prefetched a level ahead. Both starts, not the first bytes of the pair:
// batch 128 (C++ harness, Zen 4) p25 221 -> 216 µs, 256 B the same, 512 B and up slower.
constexpr int64_t kChildPrefetchBytes = 128;

struct Descent {
  const FFFArgs& a;
  int64_t nodes, levels, k;

  explicit Descent(const FFFArgs& args)
      : a(args),
        nodes((int64_t{1} << (args.depth + 1)) - 1),
        levels(args.depth + 1),
        k(int64_t{args.trees} * (args.depth + 1)) {}

  // Record level l of tree t for token i into *row and *g (and path/act when asked): returns
  // the next local node. *g is a itself: the caller applies gelu_n to the recorded values.
  inline int64_t record(int64_t i, int t, int64_t l, int64_t node, float dot, int64_t* row,
                        float* g) const {
    const int64_t r = t * nodes + node;
    const float act = dot + a.b_in[r];
    const int64_t col = t * levels + l;
    *row = r;
    *g = act;
    if (a.path) a.path[i * k + col] = static_cast<int32_t>(r);
    if (a.act) a.act[i * k + col] = act;
    return 2 * node + 1 + (act > 0.0f ? 1 : 0);  // NaN compares false: left
  }

  // The forest schedule pays off when there are several trees and each is small enough that
  // its rows stay in L2 while a tile of tokens walks it.
  bool forest() const {
    return a.trees >= 2 &&
           2 * nodes * a.d * static_cast<int64_t>(sizeof(float)) <= kForestTreeBytes;
  }
};

// Token-major descent of tokens ids[0..m) (global indices) through tree t, levels [l0, l1),
// starting at local nodes node[0..m) (updated in place), G tokens at a time so that their
// dependent row loads overlap. Each level's (row, a) goes to token i's (K,) scratch row
// i - base of rows/g, at column t*levels + l (a itself: the caller then runs gelu_n). The
// start of both children 2n+1, 2n+2 of every visited node is prefetched: whichever way the
// token goes, its next row is on its way (the hardware prefetcher follows the rest); with
// kPrefetchOut the node's output row (read by gather_sum next) too.
// Prefetching whole rows, or grandchildren too, measured slower than touching their starts.
template <class Prim, int G, bool kPrefetchOut>
void descend(const Descent& s, const int64_t* ids, int64_t m, int t, int64_t l0, int64_t l1,
             int64_t* node, int64_t* rows, float* g, int64_t base = 0) {
  const FFFArgs& a = s.a;
  const int64_t d = a.d;
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(float));
  for (int64_t j0 = 0; j0 < m; j0 += G) {
    const int mg = static_cast<int>(std::min<int64_t>(G, m - j0));
    const float* xs[G];
    for (int j = 0; j < mg; ++j) xs[j] = a.x + ids[j0 + j] * d;
    for (int64_t l = l0; l < l1; ++l) {
      const float* ws[G];
      for (int j = 0; j < mg; ++j) {
        const int64_t nj = node[j0 + j], r = t * s.nodes + nj;
        ws[j] = a.w_in + r * d;
        if (kPrefetchOut) Prim::prefetch(a.w_out + r * d, row_bytes);
        if (l + 1 < s.levels) {  // each child from its own start: the one taken is on its way
          const float* left = a.w_in + (t * s.nodes + 2 * nj + 1) * d;
          Prim::prefetch(left, kChildPrefetchBytes);
          Prim::prefetch(left + d, kChildPrefetchBytes);
        }
      }
      float dot[G];
      Prim::dot_rows(mg, xs, ws, d, dot);
      for (int j = 0; j < mg; ++j) {
        const int64_t i = ids[j0 + j], at = (i - base) * s.k + t * s.levels + l;
        node[j0 + j] = s.record(i, t, l, node[j0 + j], dot[j], rows + at, g + at);
      }
    }
  }
}

// Small batches: each thread walks kGroup tokens at a time through every tree, then sums.
template <class Prim>
void run_token_major(const Descent& s, int64_t t0, int64_t t1, int64_t* rows, float* g) {
  // rows/g here are kGroup x K scratch, indexed by (token - i0)
  for (int64_t i0 = t0; i0 < t1; i0 += kGroup) {
    const int64_t m = std::min<int64_t>(kGroup, t1 - i0);
    int64_t ids[kGroup], node[kGroup];
    for (int64_t j = 0; j < m; ++j) ids[j] = i0 + j;
    for (int t = 0; t < s.a.trees; ++t) {
      for (int64_t j = 0; j < m; ++j) node[j] = 0;
      descend<Prim, kGroup, true>(s, ids, m, t, 0, s.levels, node, rows, g, /*base=*/i0);
    }
    // the routing needed only a: GELU the group's m x K values at once (SIMD; one libm erf
    // per level was ~8% of a batch-1 kernel)
    Prim::gelu_n(g, m * s.k);
    for (int64_t j = 0; j < m; ++j)
      Prim::gather_sum(s.a.y + (i0 + j) * s.a.d, s.a.b_out, s.a.w_out, rows + j * s.k,
                       g + j * s.k, s.k, s.a.d);
  }
}

// The large-batch schedule (kernels/fff_bucketed.h, included at the end of this file).
template <class Prim>
void fff_run_bucketed(const FFFArgs& a, int threads);

// Forest schedule for tokens [i0, i1) (at most kForestTile), per group of kForestGroup trees:
// (A) each token walks the group's trees together (the dot products of a level share one load
// of x) and records its kForestGroup*levels (row, a) pairs, then the tile's a values go through
// GELU at once (SIMD); (B) each token adds its rows into y. The group's rows (<= kForestGroup *
// kForestTreeBytes) stay in L2 -- their top levels in L1 -- for the whole tile, and y's rows in
// L2 between groups.
// rows/g are (kForestTile, kForestGroup * levels) scratch.
template <class Prim>
void run_forest(const Descent& s, int64_t i0, int64_t i1, int64_t* rows, float* g) {
  const FFFArgs& a = s.a;
  const int64_t d = a.d, L = s.levels;
  for (int t0 = 0; t0 < a.trees; t0 += kForestGroup) {
    const int mg = std::min(kForestGroup, a.trees - t0);
    const int64_t k = mg * L;  // scratch columns per token for this group
    for (int64_t i = i0; i < i1; ++i) {  // (A)
      const float* x = a.x + i * d;
      int64_t* r = rows + (i - i0) * k;
      float* gi = g + (i - i0) * k;
      int64_t node[kForestGroup] = {};
      for (int64_t l = 0; l < L; ++l) {
        const float* ws[kForestGroup];
        for (int j = 0; j < mg; ++j) ws[j] = a.w_in + ((t0 + j) * s.nodes + node[j]) * d;
        float dot[kForestGroup];
        Prim::dot_shared(mg, ws, x, d, dot);
        for (int j = 0; j < mg; ++j)  // column j*L + l: tree t0+j, level l
          node[j] = s.record(i, t0 + j, l, node[j], dot[j], r + j * L + l, gi + j * L + l);
      }
    }
    // the routing needs only a: GELU the whole tile's values at once (SIMD)
    Prim::gelu_n(g, (i1 - i0) * k);
    for (int64_t i = i0; i < i1; ++i) {  // (B) the first group starts y at b_out (or 0)
      float* y = a.y + i * d;
      Prim::gather_sum(y, t0 == 0 ? a.b_out : y, a.w_out, rows + (i - i0) * k, g + (i - i0) * k,
                       k, d);
    }
  }
}

template <class Prim>
void fff_run(const FFFArgs& a, int threads) {
  const Descent s(a);
  const int64_t n = a.n;
  if (n <= 0) return;
  if (s.forest()) {
    // tiles of at most kForestTile tokens, and at least one tile per thread
    const int64_t workers = clamp_threads(threads, n);
    const int64_t tile = std::min(kForestTile, (n + workers - 1) / workers);
    const int64_t tiles = (n + tile - 1) / tile;
    threads = clamp_threads(threads, tiles);
    const size_t scratch = static_cast<size_t>(tile * kForestGroup * s.levels);
    if (threads == 1) {
      std::vector<int64_t> rows(scratch);
      std::vector<float> g(scratch);
      for (int64_t i0 = 0; i0 < n; i0 += tile)
        run_forest<Prim>(s, i0, std::min(n, i0 + tile), rows.data(), g.data());
      return;
    }
#pragma omp parallel num_threads(threads)
    {
      std::vector<int64_t> rows(scratch);
      std::vector<float> g(scratch);
#pragma omp for schedule(static)
      for (int64_t c = 0; c < tiles; ++c)
        run_forest<Prim>(s, c * tile, std::min(n, (c + 1) * tile), rows.data(), g.data());
    }
    return;
  }
  threads = clamp_threads(threads, (n + kGroup - 1) / kGroup);
  if (n < kBucketedMin) {
    if (threads == 1 && s.k <= 128) {  // batch-1 fast path: no OpenMP, no heap
      int64_t rows[kGroup * 128];
      float g[kGroup * 128];
      run_token_major<Prim>(s, 0, n, rows, g);
      return;
    }
#pragma omp parallel num_threads(threads)
    {
      std::vector<int64_t> rows(static_cast<size_t>(kGroup * s.k));
      std::vector<float> g(static_cast<size_t>(kGroup * s.k));
#pragma omp for schedule(static)
      for (int64_t c = 0; c < (n + kGroup - 1) / kGroup; ++c)
        run_token_major<Prim>(s, c * kGroup, std::min(n, (c + 1) * kGroup), rows.data(),
                              g.data());
    }
    return;
  }
  fff_run_bucketed<Prim>(a, threads);
}

// Leaf form, token by token: each tree's routing descent (one dot per level), then the leaf's W
// input dots kGroup rows at a time, then y = b_out + sum of the W*trees scaled output rows
// (gather_sum) + the trees' leaf biases. rows/g are (trees*W) scratch.
template <class Prim>
void leaf_token(const FFFLeafArgs& a, int64_t i, int64_t* rows, float* g) {
  const int64_t d = a.d, w = a.width;
  const int64_t nodes = (int64_t{1} << a.depth) - 1, leaves = int64_t{1} << a.depth;
  const float* x = a.x + i * d;
  int64_t leaf[64];  // per tree (trees <= 64 is checked by the binding)
  for (int t = 0; t < a.trees; ++t) {
    int64_t node = 0;
    for (int l = 0; l < a.depth; ++l) {
      const int64_t r = t * nodes + node;
      const float* ws[1] = {a.w_in + r * d};
      float dot;
      Prim::dot_rows(1, &x, ws, d, &dot);
      node = 2 * node + 1 + (dot + a.b_in[r] > 0.0f ? 1 : 0);  // NaN compares false: left
    }
    const int64_t gl = t * leaves + (node - nodes);  // global leaf, in [t*leaves, (t+1)*leaves)
    leaf[t] = gl;
    for (int64_t j0 = 0; j0 < w; j0 += kGroup) {
      const int mg = static_cast<int>(std::min<int64_t>(kGroup, w - j0));
      const float* xs[kGroup];
      const float* ws[kGroup];
      for (int j = 0; j < mg; ++j) {
        xs[j] = x;
        ws[j] = a.w1 + (gl * w + j0 + j) * d;
      }
      float dot[kGroup];
      Prim::dot_rows(mg, xs, ws, d, dot);
      for (int j = 0; j < mg; ++j) {
        const int64_t r = gl * w + j0 + j;
        rows[t * w + j0 + j] = r;
        g[t * w + j0 + j] = dot[j] + a.b1[r];
      }
    }
  }
  Prim::gelu_n(g, int64_t{a.trees} * w);  // all the leaves' pre-activations at once (SIMD)
  float* y = a.y + i * d;
  Prim::gather_sum(y, a.b_out, a.w2, rows, g, int64_t{a.trees} * w, d);
  for (int t = 0; t < a.trees; ++t) {
    const float* b2 = a.b2 + leaf[t] * d;
    for (int64_t c = 0; c < d; ++c) y[c] += b2[c];
  }
}

template <class Prim>
void fff_leaf_run(const FFFLeafArgs& a, int threads) {
  if (a.n <= 0) return;
  const int64_t k = int64_t{a.trees} * a.width;
  threads = clamp_threads(threads, a.n);
  if (threads == 1 && k <= 256) {  // small batches: no OpenMP, no heap
    int64_t rows[256];
    float g[256];
    for (int64_t i = 0; i < a.n; ++i) leaf_token<Prim>(a, i, rows, g);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    std::vector<int64_t> rows(static_cast<size_t>(k));
    std::vector<float> g(static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < a.n; ++i) leaf_token<Prim>(a, i, rows.data(), g.data());
  }
}

}  // namespace
}  // namespace liteffn

#include "kernels/fff_bucketed.h"  // fff_run_bucketed
