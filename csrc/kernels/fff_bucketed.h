// The large-batch schedule of fff_impl.h (included at its end; uses its Descent and kGroup).
//
// Per block of at most kBlock tokens and per tree:
// (A) every token walks the top `split` levels token-major (kWalk tokens at a time), whose
//     rows stay cache-resident; a counting sort then groups the tokens by the subtree root they
//     reached (bucket), so each bucket's tokens are contiguous;
// (B) each bucket's tokens walk its subtree -- at big batches small enough to stay in L2 --
//     so the subtree's rows are fetched once per block instead of once per token; threads
//     take whole buckets (smaller batches split higher: see run_bucketed).
// After the last tree, a bucket's tokens are sorted by the leaf they reached: neighbours then
// share most of their rows, and gather_sum_tokens forms y for kGroup of them at once, each
// shared w_out chunk read from L2 once for the group. GELU runs in SIMD over each token's K
// recorded values (the walk records raw a).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/fff.h"

namespace liteffn {
namespace {

constexpr int kWalk = 8;  // tokens walked together (8 rows of x in flight: faster than 4, 12, 16)
constexpr int64_t kBlock = 65536;         // tokens per bucketed block (bounds the scratch memory)
constexpr size_t kKeepBytes = 16u << 20;  // scratch kept per thread between calls
constexpr int64_t kBucketTokens = 32;     // tokens per bucket on average, at least, for each
                                          // level of split (see run_bucketed)

// y for the m tokens tok[0..m) of one bucket, whose last-tree leaves lie in [leaf0, leaf0 +
// span): counting-sort them by leaf into order[0..m) (count: span + 1 scratch), GELU their
// recorded values, then gather kGroup neighbours at a time.
template <class Prim>
void finish_bucket(const Descent& s, const int64_t* tok, int64_t m, int64_t leaf0, int64_t span,
                   int64_t* order, int64_t* count, int64_t* rows, float* g) {
  const FFFArgs& a = s.a;
  const int64_t col = s.k - 1;  // the last tree's leaf
  const int64_t base = (a.trees - 1) * s.nodes + leaf0;  // global row of the first leaf
  std::fill(count, count + span + 1, 0);
  for (int64_t j = 0; j < m; ++j) ++count[rows[tok[j] * s.k + col] - base + 1];
  for (int64_t e = 0; e < span; ++e) count[e + 1] += count[e];
  for (int64_t j = 0; j < m; ++j) order[count[rows[tok[j] * s.k + col] - base]++] = tok[j];
  for (int64_t j0 = 0; j0 < m; j0 += kGroup) {
    const int mg = static_cast<int>(std::min<int64_t>(kGroup, m - j0));
    float* ys[kGroup];
    const int64_t* rs[kGroup];
    const float* gs[kGroup];
    for (int j = 0; j < mg; ++j) {
      const int64_t i = order[j0 + j];
      Prim::gelu_n(g + i * s.k, s.k);
      ys[j] = a.y + i * a.d;
      rs[j] = rows + i * s.k;
      gs[j] = g + i * s.k;
    }
    Prim::gather_sum_tokens(mg, ys, a.b_out, a.w_out, rs, gs, s.k, a.d, /*stream=*/true);
  }
  Prim::fence();
}

// One block of n tokens (s.a is the block's view). Scratch: rows/g (n, K); node, sorted, order
// (n); offsets (2^split + 1).
template <class Prim>
void run_bucketed(const Descent& s, int64_t n, int threads, int64_t* rows, float* g,
                  int64_t* node, int64_t* sorted, int64_t* order, int64_t* offsets) {
  // The deeper the split, the smaller each subtree (at levels / 2 its rows stay in L2 while
  // its bucket descends); but a bucket walks kWalk of its own tokens at a time, so buckets of
  // a few tokens leave the dependent row loads' latency exposed (batch 128 at split 6: two
  // tokens per bucket, measured 25% slower than split 2). Split no deeper than buckets of
  // kBucketTokens tokens on average.
  int64_t split = 0;
  while (split < s.levels / 2 && (int64_t{2} << split) * kBucketTokens <= n) ++split;
  const int64_t buckets = int64_t{1} << split;  // nodes at level `split`
  const int64_t first = buckets - 1;            // local index of the first of them
  const int64_t span = int64_t{1} << (s.levels - 1 - split);  // leaves below each of them
  const int64_t leaf_first = (int64_t{1} << (s.levels - 1)) - 1;
  for (int64_t i = 0; i < n; ++i) sorted[i] = i;  // stage A walks the tokens in order
  for (int t = 0; t < s.a.trees; ++t) {
    const bool last_tree = t + 1 == s.a.trees;
    // dynamic: a core slowed by other work on the machine takes fewer chunks
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t c = 0; c < (n + 63) / 64; ++c) {
      const int64_t c0 = c * 64, m = std::min<int64_t>(64, n - c0);
      std::fill(node + c0, node + c0 + m, 0);
      descend<Prim, kWalk, false>(s, sorted + c0, m, t, 0, split, node + c0, rows, g);
    }
    // counting sort by subtree root: offsets[b] .. offsets[b+1] are bucket b's tokens
    std::fill(offsets, offsets + buckets + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++offsets[node[i] - first + 1];
    for (int64_t b = 0; b < buckets; ++b) offsets[b + 1] += offsets[b];
    for (int64_t i = 0; i < n; ++i) sorted[offsets[node[i] - first]++] = i;
    for (int64_t b = buckets; b > 0; --b) offsets[b] = offsets[b - 1];
    offsets[0] = 0;
#pragma omp parallel num_threads(threads)
    {
      std::vector<int64_t> count(static_cast<size_t>(span + 1));
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < buckets; ++b) {
        const int64_t p0 = offsets[b], m = offsets[b + 1] - p0;
        if (m == 0) continue;
        std::fill(node + p0, node + p0 + m, first + b);  // by sorted position from here on
        descend<Prim, kWalk, false>(s, sorted + p0, m, t, split, s.levels, node + p0, rows, g);
        if (last_tree)
          finish_bucket<Prim>(s, sorted + p0, m, leaf_first + b * span, span, order + p0,
                              count.data(), rows, g);
      }
    }
    if (!last_tree)
      for (int64_t i = 0; i < n; ++i) sorted[i] = i;
  }
}

// The large-batch schedule over all n tokens, in blocks of at most kBlock.
template <class Prim>
void fff_run_bucketed(const FFFArgs& a, int threads) {
  const Descent s(a);
  const int64_t n = a.n;
  const int64_t block = std::min(n, kBlock);
  const int64_t buckets = int64_t{1} << (s.levels / 2);
  // Scratch is kept per calling thread and reused across calls (fresh pages cost a fault each);
  // buffers above kKeepBytes are released after the call. Every entry is written before read.
  struct Scratch {
    std::vector<int64_t> i64;
    std::vector<float> f32;
  };
  thread_local Scratch scratch;
  const size_t n_i64 = static_cast<size_t>(block * s.k + 3 * block + buckets + 1);
  if (scratch.i64.size() < n_i64) scratch.i64.resize(n_i64);
  if (scratch.f32.size() < static_cast<size_t>(block * s.k))
    scratch.f32.resize(static_cast<size_t>(block * s.k));
  int64_t* const rows = scratch.i64.data();
  int64_t* const node = rows + block * s.k;
  int64_t* const sorted = node + block;
  int64_t* const order = sorted + block;
  int64_t* const offsets = order + block;
  float* const g = scratch.f32.data();
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    FFFArgs sub = a;
    sub.n = std::min(block, n - b0);
    sub.x = a.x + b0 * a.d;
    sub.y = a.y + b0 * a.d;
    if (a.path) sub.path = a.path + b0 * s.k;
    if (a.act) sub.act = a.act + b0 * s.k;
    const Descent sb(sub);
    run_bucketed<Prim>(sb, sub.n, threads, rows, g, node, sorted, order, offsets);
  }
  if (scratch.i64.size() * sizeof(int64_t) + scratch.f32.size() * sizeof(float) > kKeepBytes)
    scratch = Scratch{};
}

}  // namespace
}  // namespace liteffn
