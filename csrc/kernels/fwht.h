// Fast Walsh-Hadamard transform over rows, in place, natural (Sylvester) order:
//   x: (rows, n) float32 row-major, n a power of two; each row becomes scale * H_n x_row.
// Stage h (h = 1, 2, 4, ... n/2) maps each pair (a = x[j], b = x[j+h]) to (a + b, a - b),
// so every ISA path performs the same operations and results are bit-identical.
#pragma once
#include <cstdint>

namespace liteffn {

void fwht_row_scalar(float* row, int64_t n, float scale);
void fwht_row_avx2(float* row, int64_t n, float scale);
void fwht_row_avx512(float* row, int64_t n, float scale);

// Stages h = h0, 2 h0, ..., n/2 of one row only, unscaled (none when h0 >= n): what is left of
// H_n = H_{n / h0} (x) H_{h0} once each aligned block of h0 values has had its own H_{h0}
// (the LookupFFN kernel folds those into its block weights, see liteffn.ops.lookup.pack_bh4).
// The same operations, in the same order, as those stages of fwht_row_*.
void fwht_stages_scalar(float* row, int64_t n, int64_t h0);
// Stages h0 <= h < h_end (powers of two, h_end <= n), scalar: the SIMD paths' stages inside a
// register, for blocks narrower than one.
void fwht_stage_range_scalar(float* row, int64_t n, int64_t h0, int64_t h_end);
void fwht_stages_avx2(float* row, int64_t n, int64_t h0);
void fwht_stages_avx512(float* row, int64_t n, int64_t h0);

void fwht_rows_scalar(float* x, int64_t rows, int64_t n, float scale, int threads);
void fwht_rows_avx2(float* x, int64_t rows, int64_t n, float scale, int threads);
void fwht_rows_avx512(float* x, int64_t rows, int64_t n, float scale, int threads);

}  // namespace liteffn
