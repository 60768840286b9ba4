// Placeholder until the bit-sliced AVX2 path lands: the portable kernel.
#include "kernels/lut.h"

namespace liteffn {

void lut_forward_avx2(const LutNet& net, const float* x, int64_t tokens, float* y, int threads) {
  lut_forward_scalar(net, x, tokens, y, threads);
}

}  // namespace liteffn
