// LUTFFN inference: thermometer bits -> layers of n-input LUTs -> group popcount -> affine.
//
// Network layout (every pointer row-major, contiguous):
//   thresholds: (d, T) float32; bit c*T + i of a token is [x[c] > thresholds[c*T + i]] (NaN -> 0)
//   layer k (0 <= k < num_layers) has widths[k] LUTs; its input width is d*T for k = 0, else
//     widths[k-1]; the last layer has d*g LUTs.
//   mapping[k]: (widths[k], n) int32, each entry in [0, input width): LUT j reads input bits
//     mapping[k][j*n + l] as address bit l (least significant first).
//   tables[k]:  (widths[k],) uint64; bit a of tables[k][j] is LUT j's output at address a.
//   affine:     (d, g+1) float32; y[t, c] = affine[c*(g+1) + count], count = number of set
//     outputs among LUTs c*g ... c*g + g - 1 of the last layer.
// Kernels: x (tokens, d) float32 in, y (tokens, d) float32 out.
#pragma once
#include <cstdint>
#include <type_traits>

namespace liteffn {

struct LutNet {
  int64_t d = 0, levels = 0, n = 0, g = 0;  // levels = T bits per channel
  int64_t num_layers = 0;
  const float* thresholds = nullptr;
  const float* affine = nullptr;
  const int64_t* widths = nullptr;
  const int32_t* const* mapping = nullptr;
  const uint64_t* const* tables = nullptr;
  int64_t max_width = 0;  // max(d*T, widths[...])
};

// Calls f(std::integral_constant<int, N>{}) for N = n in 1..6 (6 for anything above; callers
// check 1 <= n <= 6): the kernels are templates on the LUT input count.
template <class F>
inline void dispatch_lut_inputs(int64_t n, F&& f) {
  switch (n) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    default: return f(std::integral_constant<int, 6>{});
  }
}

// Below this many tokens a block is evaluated token by token (one address per LUT) rather
// than bit-sliced across tokens; both give identical results.
constexpr int64_t kLutSliceMinTokens = 8;

// Token-by-token evaluation of tokens [begin, end): bytes_a/bytes_b hold max_width bytes each.
void lut_tokens_scalar(const LutNet& net, const float* x, int64_t begin, int64_t end, float* y,
                       uint8_t* bytes_a, uint8_t* bytes_b);

void lut_forward_scalar(const LutNet& net, const float* x, int64_t tokens, float* y, int threads);
void lut_forward_avx2(const LutNet& net, const float* x, int64_t tokens, float* y, int threads);
void lut_forward_avx512(const LutNet& net, const float* x, int64_t tokens, float* y, int threads);

}  // namespace liteffn
