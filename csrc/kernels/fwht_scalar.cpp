#include "kernels/fwht.h"

#include "common.h"

namespace liteffn {

void fwht_stages_scalar(float* row, int64_t n, int64_t h0) {
  fwht_stage_range_scalar(row, n, h0, n);
}

void fwht_stage_range_scalar(float* row, int64_t n, int64_t h0, int64_t h_end) {
  for (int64_t h = h0; h < h_end; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = row[j], b = row[j + h];
        row[j] = a + b;
        row[j + h] = a - b;
      }
    }
  }
}

void fwht_row_scalar(float* row, int64_t n, float scale) {
  fwht_stages_scalar(row, n, 1);
  if (scale != 1.0f)
    for (int64_t j = 0; j < n; ++j) row[j] *= scale;
}

void fwht_rows_scalar(float* x, int64_t rows, int64_t n, float scale, int threads) {
  threads = clamp_threads(threads, rows);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) fwht_row_scalar(x + r * n, n, scale);
}

}  // namespace liteffn
