// Memory floor of the FFF eval kernel's shape: the same rows read as by FastFeedForward(768,
// depth=11) (4095 nodes; w_in and w_out of 12 MiB each, on huge pages), but with every token's
// path known in advance, so no load waits for the dot product before it. Nothing here is
// liteffn code: it bounds from below what any exact float32 kernel of that shape can reach on
// this machine, for comparison with `liteffn bench fff`.
//
//   gcc -O2 -march=native benchmarks/fff_memory_floor.c -o /tmp/fff_memory_floor
//   /tmp/fff_memory_floor 128      # tokens per call (as the bench: 4096 / batch distinct calls)
//
// Per call it prints the best of 30 rounds in µs, for G = 1, 4 and 8 tokens interleaved.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define D 768
#define LEVELS 12
#define NODES 4095

typedef float v16 __attribute__((vector_size(64)));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static v16 load(const float* p) {
  v16 v;
  memcpy(&v, p, sizeof v);
  return v;
}

static float dot(const float* x, const float* w) {
  v16 a = {0}, b = {0}, c = {0}, e = {0};
  for (int i = 0; i < D; i += 64) {
    a += load(x + i) * load(w + i);
    b += load(x + i + 16) * load(w + i + 16);
    c += load(x + i + 32) * load(w + i + 32);
    e += load(x + i + 48) * load(w + i + 48);
  }
  v16 s = a + b + c + e;
  float r = 0;
  for (int i = 0; i < 16; ++i) r += s[i];
  return r;
}

static float* alloc(size_t bytes) {
  float* p = aligned_alloc(1 << 21, (bytes + (1 << 21) - 1) & ~(size_t)((1 << 21) - 1));
  if (!p) exit(1);
  madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

int main(int argc, char** argv) {
  const int batch = argc > 1 ? atoi(argv[1]) : 128;
  if (batch < 1 || batch > 4096) return fprintf(stderr, "batch in [1, 4096]\n"), 2;
  const int calls = 4096 / batch < 2 ? 2 : 4096 / batch;
  const size_t wb = (size_t)NODES * D * sizeof(float);
  float *w_in = alloc(wb), *w_out = alloc(wb);
  float* x = alloc((size_t)calls * batch * D * sizeof(float));
  float* y = alloc((size_t)calls * batch * D * sizeof(float));
  srand(1);
  for (size_t i = 0; i < (size_t)NODES * D; ++i) {
    w_in[i] = (float)rand() / RAND_MAX - 0.5f;
    w_out[i] = (float)rand() / RAND_MAX - 0.5f;
  }
  for (size_t i = 0; i < (size_t)calls * batch * D; ++i) x[i] = (float)rand() / RAND_MAX - 0.5f;
  int* path = malloc(sizeof(int) * calls * batch * LEVELS);  // random root-to-leaf paths
  float* g = malloc(sizeof(float) * batch * LEVELS);
  for (int t = 0; t < calls * batch; ++t)
    for (int l = 0, n = 0; l < LEVELS; ++l, n = 2 * n + 1 + (rand() & 1)) path[t * LEVELS + l] = n;
  const int groups[3] = {1, 4, 8};
  for (int gi = 0; gi < 3; ++gi) {
    const int G = groups[gi];
    double best = 1e9;
    for (int round = 0; round < 30; ++round) {
      const double t0 = now();
      for (int c = 0; c < calls; ++c) {
        const float* xc = x + (size_t)c * batch * D;
        float* yc = y + (size_t)c * batch * D;
        const int* pc = path + c * batch * LEVELS;
        for (int j0 = 0; j0 < batch; j0 += G)  // G tokens walk the levels together
          for (int l = 0; l < LEVELS; ++l)
            for (int j = j0; j < j0 + G && j < batch; ++j)
              g[j * LEVELS + l] = dot(xc + (size_t)j * D, w_in + (size_t)pc[j * LEVELS + l] * D);
        for (int j = 0; j < batch; ++j)  // y = sum of the scaled output rows, 128 columns a time
          for (int col = 0; col < D; col += 128) {
            v16 acc[8] = {{0}};
            for (int l = 0; l < LEVELS; ++l) {
              const float* w = w_out + (size_t)pc[j * LEVELS + l] * D + col;
              const float s = g[j * LEVELS + l];
              for (int u = 0; u < 8; ++u) acc[u] += s * load(w + 16 * u);
            }
            memcpy(yc + (size_t)j * D + col, acc, sizeof acc);
          }
      }
      const double t = (now() - t0) / calls;
      if (t < best) best = t;
    }
    printf("batch %d, %d tokens interleaved: %.1f us/call (%.3f us/token)\n", batch, G,
           best * 1e6, best * 1e6 / batch);
  }
  return y[7] == 12345.0f;
}
