// The LookupFFN table-major gather's shape (kernels/lookup.h): chosen once by the L2 size,
// overridable process-wide (tests run every shape on any machine).
#include <atomic>
#include <stdexcept>
#include <string>

#include "common.h"
#include "kernels/lookup.h"

namespace liteffn {
namespace {

constexpr int64_t kMaxTile = int64_t{1} << 30, kMaxAhead = 255;

// 0 = the default; else group << 40 | ahead << 32 | tile (group <= 16, ahead <= 255,
// tile <= 2^30).
std::atomic<int64_t>& override_slot() {
  static std::atomic<int64_t> slot{0};
  return slot;
}

// Measured, 2 threads x 32768 tokens, d 512, 128 tables x 256 rows, layer alone, runs
// interleaved (benchmarks/RESULTS.md, session 7):
// * 2 MiB L2 and more (Intel Xeon): groups of 8 tables, tiles of 4096 tokens -- 512 KiB of
//   tables plus 1 MiB of partial sums -- and no L1 prefetch of the rows: p25 ~131 ms against
//   ~153 ms for (4, 8192), whose four tiles were too few for each thread to own whole tiles
//   (they shared each one, with a barrier per tile); (4, 4096), (6, 4096), (8, 2048),
//   (8, 6144), (10, 4096), (12, 2048-3072) and (16, 1024-2048) were within the noise or
//   slower. Prefetching each token's 8 rows 4 tokens ahead (32 prefetches per token) stalled
//   on the line-fill buffers (perf: a third of the gather's samples on the prefetches);
//   without it 129 -> 124 ms.
// * smaller L2 (AMD Zen 4, 1 MiB): groups of 4, tiles of 8192, rows prefetched 4 tokens
//   ahead -- against (8, 2048) 227 vs 233 ms; groups of 2 and tiles of 4096 or 16384 were
//   slower.
TableMajorShape default_shape() {
  static const TableMajorShape shape = cpu_l2_cache_bytes() >= (int64_t{2} << 20)
                                           ? TableMajorShape{8, 4096, 0}
                                           : TableMajorShape{4, 8192, 4};
  return shape;
}

}  // namespace

TableMajorShape lookup_table_major_shape() {
  const int64_t v = override_slot().load(std::memory_order_relaxed);
  if (v == 0) return default_shape();
  return TableMajorShape{v >> 40, v & 0xFFFFFFFF, (v >> 32) & 0xFF};
}

bool lookup_table_major_shape_overridden() {
  return override_slot().load(std::memory_order_relaxed) != 0;
}

void set_lookup_table_major_shape(int64_t group, int64_t tile, int64_t ahead) {
  if (group == 0 && tile == 0 && ahead == 0) {
    override_slot().store(0, std::memory_order_relaxed);
    return;
  }
  if (group < 1 || group > kLookupMaxGroup || tile < 1 || tile > kMaxTile || ahead < 0 ||
      ahead > kMaxAhead)
    throw std::invalid_argument(
        "set_lookup_table_major_shape: need 1 <= group <= " + std::to_string(kLookupMaxGroup) +
        ", 1 <= tile <= 2^30 and 0 <= ahead <= " + std::to_string(kMaxAhead) +
        " (or 0, 0, 0 for the default), got (" + std::to_string(group) + ", " +
        std::to_string(tile) + ", " + std::to_string(ahead) + ")");
  override_slot().store(group << 40 | ahead << 32 | tile, std::memory_order_relaxed);
}

}  // namespace liteffn
