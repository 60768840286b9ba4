// The LookupFFN kernel drivers, shared by lookup_scalar.cpp, lookup_avx2.cpp and
// lookup_avx512.cpp. Each file includes this header once and instantiates the drivers with its
// own `Ops` (the inner loops: GEMM, FWHT, exp, codes/scores, axpy, dot), so the loop structure
// is written once and every ISA computes the same operations (float sums may be split into
// several accumulators, within the tolerance policy; codes and the FWHT are exact). Everything
// here sits in an anonymous namespace: each translation unit gets its own copy, compiled with
// its own flags (no ODR mixing of ISAs).
#pragma once
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common.h"
#include "kernels/lookup.h"

namespace liteffn {
namespace {

constexpr int64_t kProjTile = 30;          // tokens projected together: 5 x 6-row GEMM tiles
constexpr int64_t kTableMajorMin = 1024;   // batch from which `order = 0` picks table-major
constexpr int64_t kOwnTilesPerThread = 4;  // table-major: tiles per thread from which each
                                           // thread takes whole tiles (else they share each)
constexpr int64_t kPrefetchAhead = 4;      // token-major: rows prefetched this many tables ahead
constexpr int64_t kChunk = 64;             // columns per gather pass (8 AVX2 / 4 AVX-512 regs)
// The table-major tile, group (tables summed in registers per pass) and L1 prefetch distance
// come from lookup_table_major_shape() (kernels/lookup_shape.cpp: chosen by the L2 size).
constexpr int64_t kQueuedGroup = 32;       // token-major with a prefetch queue: tables summed
                                           // in registers between two steps of the queue

inline void prefetch_row(const void* p, int64_t bytes) {  // into L2 (rows from DRAM)
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 1);
}
inline void prefetch_row_l1(const void* p, int64_t bytes) {  // into L1 (rows already in L2)
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 3);
}

// A big fresh output (a new tensor per call) is first touched by the gather's stores, 4 KiB page
// by page; each first-touch fault is a trap into the (virtualised) kernel. Ask the kernel to
// map a tile's output range writable in one call instead (Linux >= 5.14
// MADV_POPULATE_WRITE: contents unchanged, pages that are mapped already are left alone;
// elsewhere, or on failure, the stores fault as before).
inline void populate_for_write(void* p, int64_t bytes) {
#if defined(__linux__)
  constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, not in older libc headers
  constexpr uintptr_t kPage = 4096;
  if (bytes < (int64_t{1} << 20)) return;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(kPage - 1);
  const uintptr_t e = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes);
  madvise(reinterpret_cast<void*>(b), e - b, kPopulateWrite);  // failure is harmless
#else
  (void)p;
  (void)bytes;
#endif
}

// project_tile's hooks when nothing is overlapped with the projection.
struct NoProjectHooks {
  void block() {}                // after each block product
  void repeat_done(int64_t) {}   // columns [0, p1) of z are final for every token
};

// z (m, P) = project(x (m, d)); bh4: each stage is the block products with the packed blocks,
// which carry H_b / sqrt(D), then the FWHT stages h >= b across blocks. Scratch xp, a, c each
// hold kProjTile * D floats (bh4 only).
// hooks.block() runs after each block product and hooks.repeat_done(p1) once columns [0, p1)
// of z are final for all m tokens (bh4: after each repeat; dense: at the end).
template <class Ops, class Hooks = NoProjectHooks>
void project_tile(const float* x, int64_t m, const LookupDims& k, const float* wt,
                  const float* pbias, float* z, float* xp, float* a, float* c,
                  Hooks&& hooks = Hooks{}) {
  const int64_t d = k.d, P = k.P;
  if (!k.bh4) {
    Ops::gemm(x, d, wt, P, z, P, m, P, d);  // (m, d) @ (d, P)
    for (int64_t t = 0; t < m; ++t)
      for (int64_t p = 0; p < P; ++p) z[t * P + p] += pbias[p];
    hooks.repeat_done(P);
    return;
  }
  const int64_t D = k.D, b = k.b, nb = D / b;
  const float* x0 = x;  // (m, D) rows: x itself when d is the power of two, else xp
  if (d != D) {
    for (int64_t t = 0; t < m; ++t) {  // xp (m, D): x zero-padded to the power of two
      std::memcpy(xp + t * D, x + t * d, sizeof(float) * d);
      std::fill(xp + t * D + d, xp + (t + 1) * D, 0.0f);
    }
    x0 = xp;
  }
  for (int64_t r = 0; r < k.R; ++r) {
    const float* src = x0;
    for (int64_t s = 0; s < 4; ++s) {
      float* dst = (s % 2 == 0) ? a : c;
      const float* w = wt + (r * 4 + s) * nb * b * b;  // (nb, b_in, b_out) of this stage
      for (int64_t j = 0; j < nb; ++j) {  // block j: (m, b) @ (b, b), rows strided by D
        Ops::gemm(src + j * b, D, w + j * b * b, b, dst + j * b, D, m, b, b);
        hooks.block();
      }
      // the FWHT's stages h < b and its 1/sqrt(D) are folded into the blocks (see lookup.h)
      if (nb > 1)
        for (int64_t t = 0; t < m; ++t) Ops::fwht_stages(dst + t * D, D, b);
      src = dst;
    }
    const int64_t p0 = r * D, p1 = std::min(P, p0 + D);  // this repeat's slice of z
    for (int64_t t = 0; t < m; ++t)
      for (int64_t p = p0; p < p1; ++p)
        z[t * P + p] = (0.7f * src[t * D + p - p0] + 0.3f * x0[t * D + p - p0]) + pbias[p];
    hooks.repeat_done(p1);
  }
}

template <class Ops, class = void>
struct has_codes_scores : std::false_type {};
template <class Ops>
struct has_codes_scores<Ops, std::void_t<decltype(&Ops::codes_scores)>> : std::true_type {};

// codes (h,) and scores (h,) of one token from its projection row z (P,); e: P floats scratch.
// An Ops with its own codes_scores (vectorised across tables) computes the same per-table
// operations in the same order; the others run this loop.
template <class Ops>
void codes_scores(const float* z, const LookupDims& k, float* e, int32_t* codes, float* scores) {
  if constexpr (has_codes_scores<Ops>::value) {
    (void)e;
    Ops::codes_scores(z, k, codes, scores);
    return;
  }
  Ops::one_plus_exp_neg2abs(z, e, k.P);  // e = 1 + exp(-2|z|) = 1 / sigmoid(2|z|)
  for (int64_t t = 0; t < k.h; ++t) {
    const float* zt = z + t * k.tau;
    const float* et = e + t * k.tau;
    float sum_abs = 0.0f, denom = 1.0f;
    int32_t code = 0;
    for (int64_t j = 0; j < k.tau; ++j) {
      sum_abs += std::fabs(zt[j]);
      denom *= et[j];
      code = (code << 1) | (zt[j] > 0.0f ? 1 : 0);  // most significant bit first
    }
    codes[t] = code;
    scores[t] = sum_abs / denom;
  }
}

// Element offset of table q's row `row`, column chunk c, in the packed (h, nc, rows, kChunk)
// tables (see lookup.h).
inline int64_t packed_offset(int64_t q, int64_t row, int64_t c, int64_t nc, int64_t tau) {
  return ((q * nc + c) << tau) * kChunk + row * kChunk;
}

// Table-major: streams the next (chunk, group) slice -- gn tables' contiguous blocks of
// rows * kChunk values -- into L2 a few lines per token of the current one, in address order
// (the hardware prefetchers follow sequential lines; the tokens' own reads are random and
// would fetch the slice from DRAM one latency-bound line at a time).
struct SliceStream {
  const char* block[kLookupMaxGroup] = {};
  int64_t blocks = 0, block_bytes = 0, b = 0, off = 0, per_token = 0;
  void start(const char* base, int64_t c, int64_t g0, int64_t group, int64_t h, int64_t nc,
             int64_t chunk_bytes, int64_t m) {
    blocks = std::min(group, h - g0), block_bytes = chunk_bytes, b = 0, off = 0;
    for (int64_t g = 0; g < blocks; ++g) block[g] = base + ((g0 + g) * nc + c) * chunk_bytes;
    const int64_t lines = blocks * block_bytes / 64;
    per_token = (lines + m - 1) / m + 1;  // done a little before the current slice is
  }
  void stop() { blocks = 0; }
  void step() {
    for (int64_t i = 0; i < per_token && b < blocks; ++i) {
      __builtin_prefetch(block[b] + off, 0, 1);
      if ((off += 64) >= block_bytes) off = 0, ++b;
    }
  }
};

// Row pieces (kChunk values of one table row) to prefetch into L2 a few at a time, spread
// over other work (the projection's block products, the gather of rows already fetched), so
// that the DRAM latency of rows hides behind it instead of adding to it.
struct PieceQueue {
  std::vector<const char*>& pieces;  // the queue (the caller's buffer, cleared here)
  int64_t piece_bytes;
  size_t next = 0;
  int64_t per_step = 0;
  PieceQueue(std::vector<const char*>& buffer, int64_t bytes) : pieces(buffer), piece_bytes(bytes) {
    pieces.clear();
  }
  int64_t pending() const { return static_cast<int64_t>(pieces.size() - next); }
  void spread(int64_t steps) { per_step = (pending() + steps - 1) / std::max<int64_t>(1, steps); }
  void step() {
    for (int64_t i = 0; i < per_step && next < pieces.size(); ++i, ++next)
      prefetch_row(pieces[next], piece_bytes);
  }
};

// Token-major gather of tables [q0, q1): y (m, d) = (accumulate ? y : bias) + sum_q score *
// row. Without a queue the next column chunk of every row is prefetched (rows from DRAM);
// with one, the rows are expected in L2 already and the sum runs kQueuedGroup tables per call,
// stepping the queue (the prefetches of rows gathered next) before each call.
// Scratch: ybuf kChunk floats, offs and s >= q1 - q0.
template <class Ops>
void gather_token_major(const int32_t* codes, const float* scores, int64_t m,
                        const LookupDims& k, const void* tables, bool bf16, const float* bias,
                        float* y, float* ybuf, int64_t* offs, float* s, int64_t q0, int64_t q1,
                        bool accumulate, PieceQueue* queue) {
  const int64_t d = k.d, h = k.h, nq = q1 - q0, nc = (d + kChunk - 1) / kChunk;
  const int64_t chunk_stride = (int64_t{1} << k.tau) * kChunk;  // a row's next chunk
  const int64_t esize = bf16 ? 2 : 4;
  const int64_t group = queue ? kQueuedGroup : nq;  // tables summed in registers per call
  const char* base = static_cast<const char*>(tables);
  if (nq <= 0) return;
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t q = 0; q < nq; ++q) {  // chunk 0 of each row; chunk c is c * chunk_stride on
      offs[q] = packed_offset(q0 + q, codes[t * h + q0 + q], 0, nc, k.tau);
      s[q] = scores[t * h + q0 + q];
      if (!queue) prefetch_row(base + offs[q] * esize, kChunk * esize);
    }
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t c0 = c * kChunk, len = std::min(kChunk, d - c0);
      if (!queue && c + 1 < nc)
        for (int64_t q = 0; q < nq; ++q)
          prefetch_row(base + (offs[q] + (c + 1) * chunk_stride) * esize, kChunk * esize);
      // a full chunk sums straight into y; the short last chunk through ybuf, zero-padded
      const bool full = len == kChunk;
      float* out = full ? y + t * d + c0 : ybuf;
      if (!full) {
        std::memcpy(ybuf, accumulate ? y + t * d + c0 : bias + c0, sizeof(float) * len);
        std::fill(ybuf + len, ybuf + kChunk, 0.0f);
      }
      const float* init = full && !accumulate ? bias + c0 : out;
      for (int64_t g0 = 0; g0 < nq; g0 += group) {
        if (queue) queue->step();
        Ops::gather_chunk(g0 == 0 ? init : out, out, tables, bf16, offs + g0, s + g0,
                          std::min(group, nq - g0), false);
      }
      if (!full) std::memcpy(y + t * d + c0, ybuf, sizeof(float) * len);
      for (int64_t q = 0; q < nq; ++q) offs[q] += chunk_stride;
    }
  }
}

// Table-major gather (big batches): y (m, d) = bias + sum_k scores * tables[k, codes], tables
// packed chunk-major (h, nc, rows, kChunk) (see lookup.h): one table's column chunk is one
// contiguous block of rows * kChunk values, a row's chunk is kChunk contiguous values.
// codes/scores are grouped as (ceil(h / G), m, G) for G = shape.group tables (<=
// kLookupMaxGroup), codes pre-multiplied by kChunk; per chunk and group of G tables, every token
// of the tile adds its G rows to its partial sum in ybuf (m, kChunk), each token's rows
// prefetched into L1 shape.ahead tokens before (0: not). The group's slice (G x rows x kChunk)
// stays in L2 while the tile's tokens read it, so each table byte comes from DRAM about once
// per tile, and codes, scores and ybuf are read as sequential streams.
// Scratch: ybuf >= m * kChunk floats, offs >= G. Column chunks [c_begin, c_end) (default:
// all), so that several threads can share one tile, each with its own chunks (each table byte
// then comes from DRAM once per tile, not once per thread).
template <class Ops>
void gather_table_major(const int32_t* codes, const float* scores, int64_t m,
                        const TableMajorShape& shape,
                        const LookupDims& k, const void* tables, bool bf16, const float* bias,
                        float* y, float* ybuf, int64_t* offs, int64_t c_begin = 0,
                        int64_t c_end = INT64_MAX) {
  const int64_t d = k.d, h = k.h, rows = int64_t{1} << k.tau, nc = (d + kChunk - 1) / kChunk;
  const int64_t chunk_stride = rows * kChunk;  // elements between a row's consecutive chunks
  const int64_t esize = bf16 ? 2 : 4, group = shape.group, ahead = shape.ahead;
  const char* base = static_cast<const char*>(tables);
  int64_t chunk_base[kLookupMaxGroup];
  const int64_t chunk_bytes = chunk_stride * esize;  // one table's block of a chunk
  // output rows 64-byte aligned (y aligned, d % 16 == 0): stream the finished chunks
  const bool stream = reinterpret_cast<uintptr_t>(y) % 64 == 0 && d % 16 == 0;
  SliceStream next;
  for (int64_t c = c_begin; c < std::min(nc, c_end); ++c) {
    const int64_t c0 = c * kChunk, len = std::min(kChunk, d - c0);
    // a full chunk starts its sums from the bias and stores the last group's straight into
    // y; the short last chunk (d % kChunk columns) goes through ybuf, zero-padded
    const bool full = len == kChunk;
    if (!full)
      for (int64_t t = 0; t < m; ++t) {
        std::memcpy(ybuf + t * kChunk, bias + c0, sizeof(float) * len);
        std::fill(ybuf + t * kChunk + len, ybuf + (t + 1) * kChunk, 0.0f);
      }
    for (int64_t g0 = 0, grp = 0; g0 < h; g0 += group, ++grp) {
      const int64_t gn = std::min(group, h - g0);
      const bool first = full && g0 == 0, last = full && g0 + group >= h;
      if (g0 + group < h) next.start(base, c, g0 + group, group, h, nc, chunk_bytes, m);
      else if (c + 1 < std::min(nc, c_end))
        next.start(base, c + 1, 0, group, h, nc, chunk_bytes, m);
      else next.stop();
      for (int64_t g = 0; g < gn; ++g) chunk_base[g] = packed_offset(g0 + g, 0, c, nc, k.tau);
      const int32_t* rc = codes + grp * m * group;  // (m, group) codes * kChunk
      const float* rs = scores + grp * m * group;   // (m, group)
      for (int64_t t = 0; t < m; ++t) {
        if (ahead > 0 && t + ahead < m)  // a later token's rows (in L2): hide the L2 latency
          for (int64_t g = 0; g < gn; ++g)
            prefetch_row_l1(
                base + (chunk_base[g] + rc[(t + ahead) * group + g]) * esize,
                kChunk * esize);
        next.step();
        for (int64_t g = 0; g < gn; ++g) offs[g] = chunk_base[g] + rc[t * group + g];
        float* acc = ybuf + t * kChunk;  // this token's partial sum of the chunk
        Ops::gather_chunk(first ? bias + c0 : acc, last ? y + t * d + c0 : acc, tables, bf16,
                          offs, rs + t * group, gn, last && stream);
      }
    }
    if (!full)
      for (int64_t t = 0; t < m; ++t)
        std::memcpy(y + t * d + c0, ybuf + t * kChunk, sizeof(float) * len);
  }
  if (stream) Ops::fence();
}

// codes/scores (ceil(h / group), m, group) of tokens [s, s + ms) of a table-major tile of m
// tokens (codes pre-multiplied by kChunk), or (m, h) for token-major (group 0); z, e, cbuf,
// sbuf scratch.
template <class Ops>
void tile_codes(const float* z, int64_t ms, int64_t s, int64_t m, const LookupDims& k,
                int64_t group, float* e, int32_t* cbuf, float* sbuf, int32_t* codes,
                float* scores) {
  const int64_t h = k.h;
  for (int64_t t = 0; t < ms; ++t) {
    const int64_t tt = s + t;  // token within the tile
    if (group == 0) {  // token-major (m, h): straight into the token's row
      codes_scores<Ops>(z + t * k.P, k, e, codes + tt * h, scores + tt * h);
      continue;
    }
    codes_scores<Ops>(z + t * k.P, k, e, cbuf, sbuf);
    for (int64_t g0 = 0; g0 < h; g0 += group) {  // a group's slots are contiguous
      const int64_t at = ((g0 / group) * m + tt) * group, gn = std::min(group, h - g0);
      for (int64_t g = 0; g < gn; ++g) {
        codes[at + g] = cbuf[g0 + g] * static_cast<int32_t>(kChunk);
        scores[at + g] = sbuf[g0 + g];
      }
    }
  }
}

// One thread's scratch in forward_impl: projection buffers for `tokens` tokens at a time,
// per-table code/score buffers and the gather's row offsets and output chunk (ybuf floats).
// Every entry is written before it is read, so a scratch may be reused for other dims (fit).
struct ForwardScratch {
  std::vector<float> xp, a, c, z, e, sbuf, ybuf;
  std::vector<int32_t> cbuf;
  std::vector<int64_t> offs;
  ForwardScratch() = default;
  ForwardScratch(const LookupDims& k, int64_t tokens, int64_t ybuf_floats) {
    fit(k, tokens, ybuf_floats);
  }
  void fit(const LookupDims& k, int64_t tokens, int64_t ybuf_floats) {
    xp.resize(k.bh4 ? tokens * k.D : 0), a.resize(xp.size()), c.resize(xp.size());
    z.resize(tokens * k.P), e.resize(k.P), sbuf.resize(k.h), ybuf.resize(ybuf_floats);
    cbuf.resize(k.h), offs.resize(k.h);
  }
  size_t bytes() const {
    return sizeof(float) * (xp.capacity() + a.capacity() + c.capacity() + z.capacity() +
                            e.capacity() + sbuf.capacity() + ybuf.capacity()) +
           sizeof(int32_t) * cbuf.capacity() + sizeof(int64_t) * offs.capacity();
  }
};

// A thread's token-major scratch, kept between calls: a batch-1 call spent ~1.5 µs (5%, C++
// harness) allocating and clearing fresh buffers whose memory had gone cold. Released after a
// call that left it above kKeepScratchBytes.
constexpr size_t kKeepScratchBytes = 16u << 20;
struct TokenMajorScratch {
  ForwardScratch w;
  std::vector<float> scores;
  std::vector<int32_t> codes;
  std::vector<const char*> pieces;  // RowPipeline's prefetch queue
  size_t bytes() const {
    return w.bytes() + sizeof(float) * scores.capacity() + sizeof(int32_t) * codes.capacity() +
           sizeof(const char*) * pieces.capacity();
  }
};

// Project tokens x[0..ms) -- tokens [s, s + ms) of a tile of m -- and write their codes and
// scores into the tile's codes/scores (layout as tile_codes: group 0 for token-major).
template <class Ops>
void project_codes(const float* x, int64_t ms, int64_t s, int64_t m, const LookupDims& k,
                   const float* wt, const float* pbias, int64_t group, ForwardScratch& w,
                   int32_t* codes, float* scores) {
  project_tile<Ops>(x, ms, k, wt, pbias, w.z.data(), w.xp.data(), w.a.data(), w.c.data());
  tile_codes<Ops>(w.z.data(), ms, s, m, k, group, w.e.data(), w.cbuf.data(),
                  w.sbuf.data(), codes, scores);
}

// Batch-1 pipelining (token-major, BH4 with several repeats): the codes of the tables a
// repeat completes are known before the next repeat runs, so their rows are prefetched while
// it runs (a few pieces per block product); the last repeat's rows are prefetched while the
// rows already fetched are summed. Used while the tile's rows fit in L2 beside the streamed
// projection weights.
constexpr int64_t kPipelineBytes = 256 << 10;

template <class Ops>
struct RowPipeline {
  const LookupDims& k;
  int64_t m;
  const float* z;   // (m, P) the tile's projection, final up to the last repeat_done
  float* e;         // P floats scratch
  int32_t* codes;   // (m, h)
  float* scores;    // (m, h)
  const char* base;
  int64_t done = 0;   // tables whose codes and scores are written
  int64_t early = 0;  // tables whose rows were queued before the last repeat
  PieceQueue queue;

  RowPipeline(const LookupDims& k_, int64_t m_, const float* z_, float* e_, int32_t* codes_,
              float* scores_, const void* tables, bool bf16, std::vector<const char*>& pieces)
      : k(k_), m(m_), z(z_), e(e_), codes(codes_), scores(scores_),
        base(static_cast<const char*>(tables)), queue(pieces, kChunk * (bf16 ? 2 : 4)) {
    queue.pieces.reserve(m * k.h * ((k.d + kChunk - 1) / kChunk));
  }
  void block() { queue.step(); }
  void repeat_done(int64_t p1) {
    const int64_t upto = std::min(k.h, p1 / k.tau);  // tables with all their bits in [0, p1)
    if (upto <= done) return;
    LookupDims sub = k;  // codes_scores reads only h, tau (and P) of its dims
    sub.h = upto - done, sub.P = sub.h * k.tau;
    const int64_t nc = (k.d + kChunk - 1) / kChunk, esize = queue.piece_bytes / kChunk;
    for (int64_t t = 0; t < m; ++t) {
      codes_scores<Ops>(z + t * k.P + done * k.tau, sub, e, codes + t * k.h + done,
                        scores + t * k.h + done);
      for (int64_t q = done; q < upto; ++q)
        for (int64_t c = 0; c < nc; ++c)
          queue.pieces.push_back(base + packed_offset(q, codes[t * k.h + q], c, nc, k.tau) * esize);
    }
    if (upto < k.h) early = upto;
    done = upto;
    queue.spread(4 * (k.D / k.b));  // over the next repeat's 4 stages of D / b products
  }
};

template <class Ops>
void forward_impl(const float* x, int64_t n, const LookupDims& k, const float* wt,
                  const float* pbias, const void* tables, bool bf16, const float* bias, float* y,
                  int order, int threads) {
  if (n <= 0) return;
  if (order == 0) order = n >= kTableMajorMin ? 2 : 1;
  const int64_t h = k.h, nc = (k.d + kChunk - 1) / kChunk;
  if (order == 2) {
    // Tiles of up to shape.tile tokens, one after the other; the threads share each tile:
    // they project its tokens (split by 30-token pieces), then gather it (split by column
    // chunk), so each table byte comes from DRAM once per tile whatever the thread count.
    // Both splits are dynamic (a thread that was descheduled on a shared machine takes fewer
    // pieces), and the codes are double-buffered, so there is one barrier per tile: a thread
    // done with its chunks of tile i starts projecting tile i + 1 into the other buffer (the
    // barrier after that projection also ends every thread's gather of tile i, which read
    // the buffer tile i + 2 will overwrite).
    const TableMajorShape shape = lookup_table_major_shape();
    const int64_t group = shape.group, tile = std::min(shape.tile, n);
    const int64_t tiles = (n + tile - 1) / tile, groups = (h + group - 1) / group;
    threads = clamp_threads(threads, std::max<int64_t>(1, (tile + kProjTile - 1) / kProjTile));
    if (threads > 1 && tiles >= kOwnTilesPerThread * threads) {
      // Many tiles: each thread projects and gathers whole tiles of its own (taken
      // dynamically), with no barrier until the end. The DRAM traffic per token is the same
      // (each tile streams the tables once), and a descheduled thread (a shared machine)
      // delays nobody but itself.
#pragma omp parallel num_threads(threads)
      {
        ForwardScratch w(k, kProjTile, tile * kChunk);
        std::vector<float> ts(groups * tile * group, 0.0f);
        std::vector<int32_t> tc(groups * tile * group, 0);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t t0 = i * tile, m = std::min(tile, n - t0);
          for (int64_t s = 0; s < m; s += kProjTile)
            project_codes<Ops>(x + (t0 + s) * k.d, std::min(kProjTile, m - s), s, m, k, wt,
                               pbias, group, w, tc.data(), ts.data());
          populate_for_write(y + t0 * k.d, m * k.d * static_cast<int64_t>(sizeof(float)));
          gather_table_major<Ops>(tc.data(), ts.data(), m, shape, k, tables, bf16, bias,
                                  y + t0 * k.d, w.ybuf.data(), w.offs.data());
        }
      }
      return;
    }
    std::vector<float> scores[2];
    std::vector<int32_t> codes[2];
    for (int b = 0; b < (tiles > 1 ? 2 : 1); ++b) {
      scores[b].assign(groups * tile * group, 0.0f);
      codes[b].assign(groups * tile * group, 0);
    }
#pragma omp parallel num_threads(threads)
    {
      ForwardScratch w(k, kProjTile, tile * kChunk);
      for (int64_t i = 0; i < tiles; ++i) {
        const int64_t t0 = i * tile, m = std::min(tile, n - t0);
        int32_t* tc = codes[i % 2].data();
        float* ts = scores[i % 2].data();
#pragma omp for schedule(dynamic, 1)
        for (int64_t s = 0; s < m; s += kProjTile)
          project_codes<Ops>(x + (t0 + s) * k.d, std::min(kProjTile, m - s), s, m, k, wt, pbias,
                             group, w, tc, ts);
        // implicit barrier: the tile's codes are complete
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t cc = 0; cc < nc; ++cc)
          gather_table_major<Ops>(tc, ts, m, shape, k, tables, bf16, bias, y + t0 * k.d,
                                  w.ybuf.data(), w.offs.data(), cc, cc + 1);
      }
    }
    return;
  }
  threads = clamp_threads(threads, (n + kProjTile - 1) / kProjTile);
  const int64_t tiles = (n + kProjTile - 1) / kProjTile, pm = std::min(kProjTile, n);
#pragma omp parallel num_threads(threads) if (threads > 1)  // batch 1: no OpenMP team
  {
    thread_local TokenMajorScratch kept;
    kept.w.fit(k, pm, kChunk);  // sized for at most pm tokens (batch 1: 1)
    kept.scores.resize(pm * h), kept.codes.resize(pm * h);
    ForwardScratch& w = kept.w;
    std::vector<float>& scores = kept.scores;
    std::vector<int32_t>& codes = kept.codes;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t t0 = i * kProjTile, m = std::min(kProjTile, n - t0);
      if (k.bh4 && k.R > 1 && m * h * nc * kChunk * (bf16 ? 2 : 4) <= kPipelineBytes) {
        RowPipeline<Ops> pipe(k, m, w.z.data(), w.e.data(), codes.data(), scores.data(), tables,
                              bf16, kept.pieces);
        project_tile<Ops>(x + t0 * k.d, m, k, wt, pbias, w.z.data(), w.xp.data(), w.a.data(),
                          w.c.data(), pipe);
        // the early tables' rows (in L2 by now) while the queue fetches the others'
        pipe.queue.spread(m * nc * ((pipe.early + kQueuedGroup - 1) / kQueuedGroup));
        gather_token_major<Ops>(codes.data(), scores.data(), m, k, tables, bf16, bias,
                                y + t0 * k.d, w.ybuf.data(), w.offs.data(), w.sbuf.data(), 0,
                                pipe.early, false, &pipe.queue);
        gather_token_major<Ops>(codes.data(), scores.data(), m, k, tables, bf16, bias,
                                y + t0 * k.d, w.ybuf.data(), w.offs.data(), w.sbuf.data(),
                                pipe.early, h, pipe.early > 0, nullptr);
        continue;
      }
      project_codes<Ops>(x + t0 * k.d, m, 0, m, k, wt, pbias, /*group=*/0, w, codes.data(),
                         scores.data());
      gather_token_major<Ops>(codes.data(), scores.data(), m, k, tables, bf16, bias,
                              y + t0 * k.d, w.ybuf.data(), w.offs.data(), w.sbuf.data(), 0, h,
                              false, nullptr);
    }
    if (kept.bytes() > kKeepScratchBytes) kept = TokenMajorScratch{};
  }
}

// Training gather from packed tables (chunk-major, as the inference kernel): the table-major
// loop of gather_table_major over tiles of tokens, for big batches where reading rows straight from
// the (h, rows, d) parameter would be DRAM-bound. codes/scores (n, h), y (n, d) overwritten.
template <class Ops>
void gather_packed_impl(const int32_t* codes, const float* scores, const void* packed, bool bf16,
                        int64_t n, const LookupDims& k, float* y, int threads) {
  if (n <= 0) return;
  // tiles one after the other, each shared by the threads: split by token to regroup the
  // codes, then by column chunk to gather (as forward_impl's table-major path)
  const TableMajorShape shape = lookup_table_major_shape();
  const int64_t group = shape.group, tile = std::min(shape.tile, n), h = k.h;
  const int64_t tiles = (n + tile - 1) / tile, groups = (h + group - 1) / group;
  const int64_t nc = (k.d + kChunk - 1) / kChunk;
  std::vector<float> sc[2], zeros(k.d, 0.0f);
  std::vector<int32_t> cc[2];
  for (int b = 0; b < (tiles > 1 ? 2 : 1); ++b) {
    sc[b].assign(groups * tile * group, 0.0f);
    cc[b].assign(groups * tile * group, 0);
  }
  threads = clamp_threads(threads, nc);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> ybuf(tile * kChunk);
    std::vector<int64_t> offs(group);
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t t0 = i * tile, m = std::min(tile, n - t0);
      int32_t* tc = cc[i % 2].data();
      float* ts = sc[i % 2].data();
#pragma omp for schedule(static)
      for (int64_t t = 0; t < m; ++t)  // (m, h) -> (groups, m, group), codes * kChunk
        for (int64_t q = 0; q < h; ++q) {
          const int64_t at = ((q / group) * m + t) * group + q % group;
          tc[at] = codes[(t0 + t) * h + q] * static_cast<int32_t>(kChunk);
          ts[at] = scores[(t0 + t) * h + q];
        }  // implicit barrier (also: every thread's gather of tile i - 1 is done)
#pragma omp for schedule(dynamic, 1) nowait
      for (int64_t c = 0; c < nc; ++c)
        gather_table_major<Ops>(tc, ts, m, shape, k, packed, bf16, zeros.data(), y + t0 * k.d,
                                ybuf.data(), offs.data(), c, c + 1);
    }
  }
}

// Training gather: y (n, d) = sum_k scores[n, k] * tables[k, codes[n, k]], split by token.
template <class Ops, typename T>
void gather_impl(const int32_t* codes, const T* scores, const T* tables, int64_t n, int64_t h,
                 int64_t rows, int64_t d, T* y, int threads) {
  if (n <= 0) return;
  threads = clamp_threads(threads, n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    T* yt = y + t * d;
    std::fill(yt, yt + d, T(0));
    for (int64_t q = 0; q < h; ++q) {
      if (q + kPrefetchAhead < h)
        prefetch_row(tables + ((q + kPrefetchAhead) * rows + codes[t * h + q + kPrefetchAhead]) * d,
                     d * static_cast<int64_t>(sizeof(T)));
      Ops::axpy(yt, scores[t * h + q], tables + (q * rows + codes[t * h + q]) * d, d);
    }
  }
}

// Training backward, split by table (see lookup.h): deterministic, no two threads share a row.
// Tables outer, tokens inner: table q's rows and gradient rows stay in L2 while g streams by.
// A dense gradient (no row_index) is zeroed here by the thread that owns the rows.
template <class Ops, typename T>
void gather_backward_impl(const T* g, const int32_t* codes, const T* scores, const T* tables,
                          int64_t n, int64_t h, int64_t rows, int64_t d, T* grad_scores,
                          T* grad_rows, const int64_t* row_index, int threads) {
  threads = clamp_threads(threads, h);
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t q0 = h * id / nt, q1 = h * (id + 1) / nt;  // this thread's tables
    if (grad_rows && !row_index)
      std::fill(grad_rows + q0 * rows * d, grad_rows + q1 * rows * d, T(0));
    for (int64_t q = q0; q < q1; ++q) {
      for (int64_t t = 0; t < n; ++t) {
        const int64_t c = codes[t * h + q];
        if (grad_scores)
          grad_scores[t * h + q] = Ops::dot(g + t * d, tables + (q * rows + c) * d, d);
        if (grad_rows) {
          const int64_t r = row_index ? row_index[t * h + q] : q * rows + c;
          Ops::axpy(grad_rows + r * d, scores[t * h + q], g + t * d, d);
        }
      }
    }
  }
}

}  // namespace
}  // namespace liteffn
