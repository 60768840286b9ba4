// The LookupFFN table-major gather's shape (kernels/lookup.h): chosen once by the L2 size,
// overridable process-wide (tests run every shape on any machine).
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "kernels/lookup.h"

namespace liteffn {
namespace {

int64_t l2_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc reads it from cpuid; 0 or -1: unknown
  return v > 0 ? v : 0;
#else
  return 0;
#endif
}

// 0 = the default; else group << 32 | tile (both < 2^31).
std::atomic<int64_t>& override_slot() {
  static std::atomic<int64_t> slot{0};
  return slot;
}

}  // namespace

// Measured, 2 threads x 32768 tokens, d 512, 128 tables x 256 rows (benchmarks/RESULTS.md):
// * 2 MiB L2 and more (Intel Xeon): groups of 8 tables, tiles of 4096 tokens -- 512 KiB of
//   tables plus 1 MiB of partial sums; p25 ~131 ms against ~153 ms for (4, 8192), whose four
//   tiles were too few for each thread to own whole tiles (they shared each one, with a
//   barrier per tile); (4, 4096) ~136, (6, 4096) ~136, (8, 2048) ~137, (8, 6144) ~126-130.
// * smaller L2 (AMD Zen 4, 1 MiB): groups of 4, tiles of 8192 -- against (8, 2048) 227 vs
//   233 ms; groups of 2 and tiles of 4096 or 16384 were slower.
TableMajorShape lookup_default_table_major_shape() {
  static const TableMajorShape shape =
      l2_bytes() >= (int64_t{2} << 20) ? TableMajorShape{8, 4096} : TableMajorShape{4, 8192};
  return shape;
}

TableMajorShape lookup_table_major_shape() {
  const int64_t v = override_slot().load(std::memory_order_relaxed);
  if (v == 0) return lookup_default_table_major_shape();
  return TableMajorShape{v >> 32, v & 0xFFFFFFFF};
}

void set_lookup_table_major_shape(int64_t group, int64_t tile) {
  if (group == 0 && tile == 0) {
    override_slot().store(0, std::memory_order_relaxed);
    return;
  }
  if (group < 1 || group > kLookupMaxGroup || tile < 1 || tile > (int64_t{1} << 30))
    throw std::invalid_argument("set_lookup_table_major_shape: need 1 <= group <= " +
                                std::to_string(kLookupMaxGroup) +
                                " and 1 <= tile <= 2^30 (or 0, 0 for the default), got (" +
                                std::to_string(group) + ", " + std::to_string(tile) + ")");
  override_slot().store(group << 32 | tile, std::memory_order_relaxed);
}

}  // namespace liteffn
