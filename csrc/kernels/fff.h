// Fast feedforward tree (UltraFastBERT form), hard inference.
//
// Pointer layouts (all float32 row-major, 64-bit sizes; nodes = 2^(depth+1) - 1, K = trees *
// (depth+1), tree t owns rows t*nodes .. t*nodes + nodes - 1, heap order: children 2n+1, 2n+2):
//   x     (n, d)           input tokens
//   w_in  (trees*nodes, d) routing/input row of each neuron
//   b_in  (trees*nodes)    bias of each neuron
//   w_out (trees*nodes, d) output row of each neuron
//   b_out (d) or nullptr   output bias
//   y     (n, d)           output, fully overwritten
//   path  (n, K) int32 or nullptr: global row visited by token i, tree t, level l, at
//         [i, t*(depth+1)+l]
//   act   (n, K) or nullptr: the pre-activation a of that row
// Per token and tree: a = <x, w_in[r]> + b_in[r]; y += gelu(a) * w_out[r] (exact erf GELU);
// go right iff a > 0 (a <= 0 and NaN go left), so every row index stays in range for any input.
#pragma once
#include <cstdint>

namespace liteffn {

struct FFFArgs {
  const float* x;
  const float* w_in;
  const float* b_in;
  const float* w_out;
  const float* b_out;
  float* y;
  int32_t* path;
  float* act;
  int64_t n;
  int64_t d;
  int depth;
  int trees;
};

void fff_forward_scalar(const FFFArgs& a, int threads);
void fff_forward_avx2(const FFFArgs& a, int threads);
void fff_forward_avx512(const FFFArgs& a, int threads);

// Original FFF form (leaves), hard inference. nodes = 2^depth - 1 routing nodes and
// leaves = 2^depth leaves per tree, W = width; tree t owns routing rows t*nodes .. and leaves
// t*leaves ..; leaf L (global) owns rows L*W .. L*W + W - 1 of w1, b1 and w2:
//   x     (n, d)              input tokens
//   w_in  (trees*nodes, d)    routing hyperplanes (may be nullptr when depth == 0)
//   b_in  (trees*nodes)       their biases
//   w1    (trees*leaves*W, d) leaf input rows;  b1 (trees*leaves*W)
//   w2    (trees*leaves*W, d) leaf output rows; b2 (trees*leaves, d)
//   b_out (d) or nullptr      output bias
//   y     (n, d)              output, fully overwritten
// Per token and tree: depth levels of a = <x, w_in[r]> + b_in[r], right iff a > 0 (a <= 0 and
// NaN go left); at leaf L: h = gelu(w1[L] x + b1[L]) (exact erf GELU), y += h w2[L] + b2[L].
struct FFFLeafArgs {
  const float* x;
  const float* w_in;
  const float* b_in;
  const float* w1;
  const float* b1;
  const float* w2;
  const float* b2;
  const float* b_out;
  float* y;
  int64_t n;
  int64_t d;
  int depth;
  int trees;
  int64_t width;
};

void fff_leaf_forward_scalar(const FFFLeafArgs& a, int threads);
void fff_leaf_forward_avx2(const FFFLeafArgs& a, int threads);
void fff_leaf_forward_avx512(const FFFLeafArgs& a, int threads);

}  // namespace liteffn
