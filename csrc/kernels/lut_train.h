// LUT layer training forward and table gradient (DWN-style LUTLayer, see layers/lut.py):
//
// lut_train_forward: the hard forward of one LUT layer on float bits.
//   bits:    (N, in) f32     input bits; an entry counts as 1 when it is != 0 (the layer only
//                            ever passes 0.0 / 1.0)
//   mapping: (out, n) i64    input bit read by slot l of LUT j (in [0, in); checked by the
//                            binding); slot l is address bit l (least significant first)
//   table:   (out, 2^n) f32  truth tables; LUT j outputs [table[j, addr] > 0] (NaN -> 0)
//   addr:    (N, out) u8     output: addr[t, j] = sum_l bit(t, mapping[j, l]) << l
//   y:       (N, out) f32    output: 1.0f or 0.0f
//   Tokens are split across threads; every output element is written by one thread.
//
// lut_table_grad: the straight-through table gradient, deterministic.
//   grad:       (N, out) f32    upstream gradient of each LUT output
//   addr:       (N, out) u8     the addresses of the forward (masked to [0, 2^n) here)
//   grad_table: (out, 2^n) f32  output, overwritten: grad_table[j, addr[t, j]] += grad[t, j],
//                               summed in increasing t (the order of a serial index_add_).
//   LUTs are split across threads in blocks; each block's entries are owned by one thread.
//
// lut_efd_weights: DWN's EFD input-gradient weights of every LUT (see LUTLayer / efd_weights):
//   table:   (out, 2^n) f32  truth tables
//   weights: (out, 2^n, n) f32 output: weights[j, a, l] = alpha * sum_b s_l(b) *
//            beta^H_l(a, b) * table[j, b], computed separably (smooth with [1, beta] along every
//            bit k != l, difference along bit l), the same steps in the same order as
//            efd_weights; LUTs are split across threads.
#pragma once
#include <cstdint>

namespace liteffn {

void lut_train_forward_scalar(const float* bits, const int64_t* mapping, const float* table,
                              uint8_t* addr, float* y, int64_t N, int64_t out, int64_t n,
                              int64_t in, int threads);
void lut_train_forward_avx2(const float* bits, const int64_t* mapping, const float* table,
                            uint8_t* addr, float* y, int64_t N, int64_t out, int64_t n,
                            int64_t in, int threads);

void lut_table_grad_scalar(const float* grad, const uint8_t* addr, float* grad_table, int64_t N,
                           int64_t out, int64_t n, int threads);
void lut_table_grad_avx2(const float* grad, const uint8_t* addr, float* grad_table, int64_t N,
                         int64_t out, int64_t n, int threads);

void lut_efd_weights_scalar(const float* table, float* weights, int64_t out, int64_t n,
                            float alpha, float beta, int threads);
void lut_efd_weights_avx2(const float* table, float* weights, int64_t out, int64_t n, float alpha,
                          float beta, int threads);

}  // namespace liteffn
