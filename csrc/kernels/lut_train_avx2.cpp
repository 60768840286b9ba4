#include "kernels/lut_train.h"
#include "kernels/lut_train_impl.h"

namespace liteffn {

void lut_train_forward_avx2(const float* bits, const int64_t* mapping, const float* table,
                            uint8_t* addr, float* y, int64_t N, int64_t out, int64_t n, int64_t in,
                            int threads) {
  lut_train_forward_impl(bits, mapping, table, addr, y, N, out, n, in, threads);
}

void lut_table_grad_avx2(const float* grad, const uint8_t* addr, float* grad_table, int64_t N,
                         int64_t out, int64_t n, int threads) {
  lut_table_grad_impl(grad, addr, grad_table, N, out, n, threads);
}

void lut_efd_weights_avx2(const float* table, float* weights, int64_t out, int64_t n,
                          float alpha, float beta, int threads) {
  lut_efd_weights_impl(table, weights, out, n, alpha, beta, threads);
}

}  // namespace liteffn
