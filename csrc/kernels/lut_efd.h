// EFD input gradient of a LUT layer (DWN's Extended Finite Difference backward), one lookup per
// (token, LUT, slot) into a weight table built once per backward:
//   grad:     (N, out) f32   upstream gradient of each LUT output
//   addr:     (N, out) u8    the address each LUT read (masked to [0, 2^n) here)
//   weights:  (out, 2^n, n) f32 EFD weight of slot l of LUT j at address a
//   mapping:  (out, n) i64   input bit read by slot l of LUT j (must be in [0, in); checked)
//   grad_bits:(N, in) f32    output, overwritten: grad_bits[t, mapping[j, l]] +=
//                            grad[t, j] * weights[j, addr[t, j], l] over j then l.
// Tokens are split across threads and each owns its output row: deterministic, no atomics.
#pragma once
#include <cstdint>

namespace liteffn {

void lut_efd_input_grad_scalar(const float* grad, const uint8_t* addr, const float* weights,
                               const int64_t* mapping, float* grad_bits, int64_t N, int64_t out,
                               int64_t n, int64_t in, int threads);
void lut_efd_input_grad_avx2(const float* grad, const uint8_t* addr, const float* weights,
                             const int64_t* mapping, float* grad_bits, int64_t N, int64_t out,
                             int64_t n, int64_t in, int threads);

}  // namespace liteffn
