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

void fwht_rows_scalar(float* x, int64_t rows, int64_t n, float scale, int threads);
void fwht_rows_avx2(float* x, int64_t rows, int64_t n, float scale, int threads);
void fwht_rows_avx512(float* x, int64_t rows, int64_t n, float scale, int threads);

}  // namespace liteffn
