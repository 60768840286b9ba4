// How much last-level cache one core of this machine actually gets: random whole-row reads
// (3 KiB rows, FastFeedForward(768)'s row size) from buffers of growing size, single thread.
// The bandwidth drops once the buffer outgrows the cache share (on the shared 2-vCPU AMD EPYC
// VMs of this project: ~12-16 MiB although lscpu reports 32 MiB of L3). Nothing here is
// liteffn code; it explains which weights a memory-bound layer can keep in cache.
//
//   gcc -O2 -march=native benchmarks/cache_share.c -o /tmp/cache_share && /tmp/cache_share
//
// Prints, per buffer size, ns per row and GB/s (best of 5 rounds of 20000 rows).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define ROW_FLOATS 768

typedef float v8 __attribute__((vector_size(32)));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// Sum one row (the loads are what is timed; the sum keeps them from being optimised away),
// in four independent chains so that the adds do not bound the loads.
static v8 read_row(const float* p, v8 acc) {
  v8 a = {0}, b = {0}, c = {0};
  for (int o = 0; o < ROW_FLOATS; o += 32) {
    acc += *(const v8*)(p + o);
    a += *(const v8*)(p + o + 8);
    b += *(const v8*)(p + o + 16);
    c += *(const v8*)(p + o + 24);
  }
  return acc + a + b + c;
}

int main(void) {
  const size_t max_bytes = (size_t)64 << 20;
  float* buf = aligned_alloc(1 << 21, max_bytes);
  if (!buf) return 1;
  madvise(buf, max_bytes, MADV_HUGEPAGE);  // no TLB misses in the way
  for (size_t i = 0; i < max_bytes / sizeof(float); ++i) buf[i] = (float)(i % 97) * 1e-3f;
  const int sizes_mib[] = {2, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64};
  v8 acc = {0};
  for (size_t s = 0; s < sizeof sizes_mib / sizeof sizes_mib[0]; ++s) {
    const size_t rows = ((size_t)sizes_mib[s] << 20) / (ROW_FLOATS * sizeof(float));
    for (size_t r = 0; r < rows; ++r) acc = read_row(buf + r * ROW_FLOATS, acc);  // warm
    uint64_t state = 12345;
    double best = 1e9;
    for (int round = 0; round < 5; ++round) {
      const int n = 20000;
      const double t0 = now();
      for (int i = 0; i < n; ++i) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;  // LCG
        acc = read_row(buf + ((state >> 33) % rows) * ROW_FLOATS, acc);
      }
      const double per_row = (now() - t0) / n;
      if (per_row < best) best = per_row;
    }
    printf("%2d MiB: %4.0f ns/row  %5.1f GB/s\n", sizes_mib[s], best * 1e9,
           ROW_FLOATS * sizeof(float) / best / 1e9);
  }
  float out = 0;
  for (int i = 0; i < 8; ++i) out += acc[i];
  return out == 12345.0f;  // never: the sum is used
}
