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
//   path  (n, K) int32 or nullptr: global row visited by token i, tree t, level l at [i, t*(depth+1)+l]
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

}  // namespace liteffn
