// LookupFFN kernels: the fused inference forward and the training gather-accumulate.
//
// Shapes (all row-major, contiguous):
//   h = num_tables, tau = table_bits, rows = 2^tau, P = h * tau (projection width).
//   x (n, d) float32 input; y (n, d) float32 output.
//   tables (h, nc, rows, 64) float32, or uint16 holding bfloat16 bit patterns when tables_bf16:
//     the (h, rows, d) tables chunk-major, nc = ceil(d / 64), columns >= d zero; element
//     [k, c, r, j] = tables[k, r, 64 c + j] (see liteffn.ops.lookup.pack_tables).
//   bias (d,) float32 output bias; pbias (P,) float32 projection bias.
//   Projection weights, packed by liteffn.ops.lookup (transposed to [in, out]):
//     dense: wt (d, P), wt[i * P + p] = W[p, i] of nn.Linear(d, P).
//     bh4:   wt (R, 4, D/b, b, b) [in, out]: wt[r, s, j] = blocks[r, s, j]^T H_b / sqrt(D),
//            D = padded width, H_b the b x b Sylvester Hadamard matrix: since H_D = H_{D/b}
//            (x) H_b, a stage's FWHT (orthonormal) is then its stages h >= b alone.
// Semantics (DESIGN "LookupFFN"): z = project(x) (n, P); for table k, code_k packs the signs
// [z_{k tau + j} > 0] most significant bit first, score_k = (sum_j |z|) * prod_j sigmoid(2|z|)
// (computed as (sum_j |z|) / prod_j (1 + exp(-2|z|))), and y = bias + sum_k score_k *
// tables[k, code_k, :].
#pragma once
#include <cstdint>

namespace liteffn {

struct LookupDims {
  int64_t d = 0;     // model width
  int64_t h = 0;     // tables
  int64_t tau = 0;   // bits per table (1..12)
  int64_t P = 0;     // h * tau
  bool bh4 = false;  // projection: BH4 (true) or dense (false)
  int64_t D = 0;     // bh4: padded width, a power of two >= d
  int64_t R = 0;     // bh4: repeats, ceil(P / D)
  int64_t b = 0;     // bh4: block size, a power of two dividing D
};

// The table-major gather's shape (big batches): tokens per tile, tables whose rows are summed
// in registers per pass (group, 1..kLookupMaxGroup), and how many tokens ahead each token's
// rows are prefetched from L2 into L1 (ahead; 0: not at all). A group's slice of the tables
// (group x rows x 64 values) and the tile's partial sums (tile x 64 floats) are meant to share
// L2, so the default depends on this CPU's L2 size (kernels/lookup_shape.cpp). Process-wide;
// set_lookup_table_major_shape(0, 0, 0) restores the default (for tests and tuning: set it while
// no forward runs). Results differ between shapes only by float summation order.
constexpr int64_t kLookupMaxGroup = 16;
struct TableMajorShape {
  int64_t group;
  int64_t tile;
  int64_t ahead;
};
TableMajorShape lookup_table_major_shape();
// throws std::invalid_argument on a shape out of range
void set_lookup_table_major_shape(int64_t group, int64_t tile, int64_t ahead);
bool lookup_table_major_shape_overridden();  // a set_... shape is in force (not the default)

// Loop order of the gather: 0 = choose by batch size, 1 = token-major, 2 = table-major.
// x (n, d), y (n, d) may not alias; any n >= 0.
void lookup_forward_scalar(const float* x, int64_t n, const LookupDims& dims, const float* wt,
                           const float* pbias, const void* tables, bool tables_bf16,
                           const float* bias, float* y, int order, int threads);
void lookup_forward_avx2(const float* x, int64_t n, const LookupDims& dims, const float* wt,
                         const float* pbias, const void* tables, bool tables_bf16,
                         const float* bias, float* y, int order, int threads);
void lookup_forward_avx512(const float* x, int64_t n, const LookupDims& dims, const float* wt,
                           const float* pbias, const void* tables, bool tables_bf16,
                           const float* bias, float* y, int order, int threads);

// Training forward of the gather (tables here in the plain (h, rows, d) layout):
//   y (n, d) = sum_k scores[n, k] * tables[k, codes[n, k], :].
//   codes (n, h) int32 in [0, rows), scores (n, h), tables (h, rows, d), y (n, d) overwritten.
template <typename T>
void lookup_gather_scalar(const int32_t* codes, const T* scores, const T* tables, int64_t n,
                          int64_t h, int64_t rows, int64_t d, T* y, int threads);
void lookup_gather_avx2(const int32_t* codes, const float* scores, const float* tables, int64_t n,
                        int64_t h, int64_t rows, int64_t d, float* y, int threads);
void lookup_gather_avx512(const int32_t* codes, const float* scores, const float* tables,
                          int64_t n, int64_t h, int64_t rows, int64_t d, float* y, int threads);

// The same gather from tables packed chunk-major (h, nc, rows, 64) as for lookup_forward_*
// (float32 or bfloat16 bits): table-major over tiles of tokens, for big batches.
void lookup_gather_packed_scalar(const int32_t* codes, const float* scores, const void* packed,
                                 bool bf16, int64_t n, const LookupDims& dims, float* y,
                                 int threads);
void lookup_gather_packed_avx2(const int32_t* codes, const float* scores, const void* packed,
                               bool bf16, int64_t n, const LookupDims& dims, float* y,
                               int threads);
void lookup_gather_packed_avx512(const int32_t* codes, const float* scores, const void* packed,
                                 bool bf16, int64_t n, const LookupDims& dims, float* y,
                                 int threads);

// tables (h, rows, d) float32 -> dst (h, ceil(d/64), rows, 64) float32 chunk-major, columns
// past d zero (the packed layout above); split by table across threads.
void lookup_pack_tables(const float* tables, int64_t h, int64_t rows, int64_t d, float* dst,
                        int threads);

// Training backward of the gather, given g = dL/dy (n, d):
//   grad_scores (n, h) (nullable): grad_scores[n, k] = <g[n], tables[k, codes[n, k]]>;
//   grad_rows (nullable): for every (n, k) in token order,
//     grad_rows[row(n, k)] += scores[n, k] * g[n], with row(n, k) = row_index[n * h + k] when
//     row_index is given (sparse gradients; rows of table k must be disjoint from other
//     tables' rows; grad_rows is accumulated into, not cleared) else k * rows + codes[n, k]
//     (a dense (h, rows, d) gradient, zeroed first by the kernel).
// Work is split by table, so the sums are deterministic and race-free.
template <typename T>
void lookup_gather_backward_scalar(const T* g, const int32_t* codes, const T* scores,
                                   const T* tables, int64_t n, int64_t h, int64_t rows, int64_t d,
                                   T* grad_scores, T* grad_rows, const int64_t* row_index,
                                   int threads);
void lookup_gather_backward_avx2(const float* g, const int32_t* codes, const float* scores,
                                 const float* tables, int64_t n, int64_t h, int64_t rows,
                                 int64_t d, float* grad_scores, float* grad_rows,
                                 const int64_t* row_index, int threads);
void lookup_gather_backward_avx512(const float* g, const int32_t* codes, const float* scores,
                                   const float* tables, int64_t n, int64_t h, int64_t rows,
                                   int64_t d, float* grad_scores, float* grad_rows,
                                   const int64_t* row_index, int threads);

}  // namespace liteffn
