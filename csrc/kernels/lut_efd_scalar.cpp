#include "kernels/lut_efd.h"
#include "kernels/lut_efd_impl.h"

namespace liteffn {

void lut_efd_input_grad_scalar(const float* grad, const uint8_t* addr, const float* weights,
                               const int64_t* mapping, float* grad_bits, int64_t N, int64_t out,
                               int64_t n, int64_t in, int threads) {
  lut_efd_input_grad_impl(grad, addr, weights, mapping, grad_bits, N, out, n, in, threads);
}

}  // namespace liteffn
