// AVX-512 LUTFFN kernel: bit-sliced over blocks of 512 tokens (one __m512i per bit holds that
// bit for 512 tokens: token t is bit t of the 512-bit word, i.e. bit t % 16 of its 16-bit chunk
// t / 16). Differences from the AVX2 kernel (lut_avx2.cpp):
// - Each 2:1 select of a LUT's multiplexer tree is one vpternlogq (imm 0xCA), and the 14
//   non-constant functions of the two lowest address bits are one vpternlogq each, stored to a
//   16-entry table so that each leaf (a 4-bit slice of the truth table) is one load.
// - Thermometer: a 16 tokens x 16 channels tile of x is transposed in registers (vpermt2ps), so
//   one vcmpps per (channel, level) gives the 16 token bits of a word chunk directly, straight
//   from the mask register; no bit transposes.
// - Group count: a carry-save adder tree of full adders (two vpternlogq each: 0x96 sum, 0xE8
//   majority) instead of a ripple-carry counter, about 2 ops per LUT output instead of
//   2 * planes.
// - Output: per 16 tokens and channel, the count bits are gathered from the planes with masked
//   ORs, the affine table is looked up in registers (vpermt2ps, or a gather for g > 31), and a
//   16x16 transpose gives row stores of y.
// Blocks of fewer than kLutSliceMinTokens tokens use the scalar per-token path. Same results as
// the scalar kernel, bit for bit: comparisons are _CMP_GT_OQ (NaN and ties give 0), and every
// output is a lookup in the same affine table.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "common.h"
#include "kernels/lut.h"

namespace liteffn {
namespace {

using V = __m512i;
constexpr int64_t kBlock = 512;
constexpr int64_t kChunks = kBlock / 16;  // 16-token chunks per word
constexpr int kMuxImm = 0xD8;             // ternlog(lo, hi, s): s ? hi : lo
constexpr int kXor3Imm = 0x96;            // a ^ b ^ c
constexpr int kMajImm = 0xE8;             // majority(a, b, c)

// The first operand is the one the instruction overwrites: lo is dead after the select, the
// selector is reused by other nodes, so this order needs no register copies.
inline V mux(V sel, V hi, V lo) { return _mm512_ternarylogic_epi64(lo, hi, sel, kMuxImm); }

// ternlog(w1, w0, w0, imm) = bit (w0 + 2*w1) of idx: the truth table of two inputs as an imm.
template <int idx>
constexpr int pair_imm() {
  int r = 0;
  for (int p = 0; p < 8; ++p) {
    const int a = (p >> 2) & 1, b = (p >> 1) & 1;  // operand 1 = w1, operand 2 = w0
    r |= ((idx >> (b + 2 * a)) & 1) << p;
  }
  return r;
}

// f[idx] for idx = 1..14 (f[0] = 0 and f[15] = ~0 are set once per scratch).
template <int... I>
inline void build_f16(V* f, V w0, V w1, std::integer_sequence<int, I...>) {
  ((f[I + 1] = _mm512_ternarylogic_epi64(w1, w0, w0, pair_imm<I + 1>())), ...);
}

inline uint64_t rotr(uint64_t x, unsigned r) { return (x >> (r & 63)) | (x << ((64 - r) & 63)); }

// Leaf k (4-bit slice k of the table) as a byte offset into the 16-entry table of 64-byte words.
inline const V* leaf(const V* f, uint64_t table, unsigned k) {
  const uint64_t off = rotr(table, (4 * k + 64 - 6) & 63) & 0x3C0u;
  return reinterpret_cast<const V*>(reinterpret_cast<const char*>(f) + off);
}

// node<L>(k): the sub-table of addresses whose bits L.. equal k (see lut_scalar.cpp); leaves at
// L = 2 are loads from the function table.
template <int L>
struct Mux {
  static inline V node(uint64_t table, const V* w, const V* f, unsigned k) {
    const V lo = Mux<L - 1>::node(table, w, f, 2 * k);
    const V hi = Mux<L - 1>::node(table, w, f, 2 * k + 1);
    return mux(w[L - 1], hi, lo);
  }
};
template <>
struct Mux<2> {
  static inline V node(uint64_t table, const V*, const V* f, unsigned k) {
    return _mm512_load_si512(leaf(f, table, k));
  }
};

template <int N>
inline V lut_vec(uint64_t table, const V* in, const int32_t* map, V* f) {
  V w[N];
  for (int l = 0; l < N; ++l) w[l] = _mm512_load_si512(in + map[l]);
  if constexpr (N == 1) {
    // One input: treat it as both address bits; addresses 0 and 3 carry table bits 0 and 1.
    build_f16(f, w[0], w[0], std::make_integer_sequence<int, 14>{});
    const uint64_t idx = (table & 1u) | ((table & 2u) << 2);
    return _mm512_load_si512(f + idx);
  } else {
    build_f16(f, w[0], w[1], std::make_integer_sequence<int, 14>{});
    return Mux<N>::node(table, w, f, 0);
  }
}

struct Scratch {
  std::vector<V> a, b;       // bit-sliced layer inputs / outputs: max_width each
  std::vector<V> carries;    // adder tree: two lists of g / 2 + 1 words
  std::vector<V> planes;     // (16 channels, planes) count bit-planes of one channel tile
  std::vector<uint8_t> bytes;  // per-token path: 2 * max_width
  std::vector<V> counts_v;  // (16 channels, kBlock) count bytes
  alignas(64) V f16[16];
  alignas(64) float aff_lo[16 * 16], aff_hi[16 * 16];  // affine rows of a channel tile
  uint8_t* counts_data() { return reinterpret_cast<uint8_t*>(counts_v.data()); }
};

// 16x16 transpose of floats: r[i][j] -> r[j][i]. Stage s swaps bit s of the row index with bit
// s of the column index (vpermt2ps on row pairs i, i + 2^s).
struct Transpose16 {
  __m512i lo[4], hi[4];
  Transpose16() {
    for (int s = 0; s < 4; ++s) {
      const int b = 1 << s;
      alignas(64) int32_t l[16], h[16];
      for (int j = 0; j < 16; ++j) {
        l[j] = (j & b) ? 16 + (j - b) : j;
        h[j] = (j & b) ? 16 + j : j + b;
      }
      lo[s] = _mm512_load_si512(l);
      hi[s] = _mm512_load_si512(h);
    }
  }
  __attribute__((always_inline)) inline void operator()(__m512* r) const {
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const int b = 1 << s;
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        if (i & b) continue;
        const __m512 a = r[i], c = r[i + b];
        r[i] = _mm512_permutex2var_ps(a, lo[s], c);
        r[i + b] = _mm512_permutex2var_ps(a, hi[s], c);
      }
    }
  }
};

inline __mmask16 first_lanes(int64_t k) {  // the first min(k, 16) lanes
  return k >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << k) - 1);
}

// 16- and 64-token chunks of a word, straight between memory and mask registers (kmov); V is a
// may_alias type, so these accesses do not break aliasing rules.
inline void store_chunk(V* word, int64_t chunk, __mmask16 m) {
  _store_mask16(reinterpret_cast<__mmask16*>(word) + chunk, m);
}
inline __mmask16 load_chunk(const V* word, int64_t chunk) {
  return _load_mask16(const_cast<__mmask16*>(reinterpret_cast<const __mmask16*>(word)) + chunk);
}
inline __mmask64 load_chunk64(const V* word, int64_t chunk) {
  return _load_mask64(const_cast<__mmask64*>(reinterpret_cast<const __mmask64*>(word)) + chunk);
}

// Thermometer bits of a block, bit-sliced: word c*T + i, bit t = [x[t, c] > thr[c, i]]. Chunks of
// tokens beyond count keep whatever they held (lanes are independent; those outputs are unused).
// Channel tiles outside, token groups inside: the tile's T*16 words stay in L1 while their
// 16-bit chunks are written. The tile loops have constant trip counts so that the 16 rows stay
// in registers.
void thermometer(const LutNet& net, const float* x, int64_t count, V* out, const Transpose16& tr) {
  const int64_t d = net.d, T = net.levels;
  for (int64_t c0 = 0; c0 < d; c0 += 16) {
    const __mmask16 cm = first_lanes(d - c0);
    const int64_t cn = std::min<int64_t>(16, d - c0);
    for (int64_t tg = 0; tg * 16 < count; ++tg) {
      const int64_t rows = std::min<int64_t>(16, count - tg * 16);
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)  // rows past count: masked out (the address stays in range)
        r[i] = _mm512_maskz_loadu_ps(i < rows ? cm : __mmask16{0},
                                     x + (tg * 16 + std::min<int64_t>(i, rows - 1)) * d + c0);
      tr(r);  // r[c - c0] = x[tg*16 .. tg*16 + 15, c]
#pragma GCC unroll 16
      for (int cc = 0; cc < 16; ++cc) {
        if (cc >= cn) break;
        const float* thr = net.thresholds + (c0 + cc) * T;
        V* w = out + (c0 + cc) * T;
        for (int64_t i = 0; i < T; ++i)
          store_chunk(w + i, tg, _mm512_cmp_ps_mask(r[cc], _mm512_set1_ps(thr[i]), _CMP_GT_OQ));
      }
    }
  }
}

// Adds the LUT outputs of one channel with a carry-save tree; plane[b] gets bit b of each count.
template <int N>
inline void count_channel(const LutNet& net, const V* in, int64_t c, int planes, V* plane,
                          V* carry_a, V* carry_b, V* f) {
  const int64_t g = net.g;
  const int32_t* map = net.mapping[net.num_layers - 1];
  const uint64_t* tab = net.tables[net.num_layers - 1];
  // Level 0, streamed: acc += pairs of LUT outputs by full adders; carries go to level 1.
  const int64_t j0 = c * g;
  V acc = lut_vec<N>(tab[j0], in, map + j0 * N, f);
  int64_t nc = 0;
  int64_t j = j0 + 1;
  for (; j + 1 < j0 + g; j += 2) {
    const V u = lut_vec<N>(tab[j], in, map + j * N, f);
    const V v = lut_vec<N>(tab[j + 1], in, map + (j + 1) * N, f);
    carry_a[nc++] = _mm512_ternarylogic_epi64(acc, u, v, kMajImm);
    acc = _mm512_ternarylogic_epi64(acc, u, v, kXor3Imm);
  }
  if (j < j0 + g) {
    const V u = lut_vec<N>(tab[j], in, map + j * N, f);
    carry_a[nc++] = _mm512_and_si512(acc, u);
    acc = _mm512_xor_si512(acc, u);
  }
  plane[0] = acc;
  // Levels 1..: the same reduction on the carry lists (level b holds at most g / 2^b words).
  V* cur = carry_a;
  V* nxt = carry_b;
  for (int b = 1; b < planes; ++b) {
    if (nc == 0) {
      plane[b] = _mm512_setzero_si512();
      continue;
    }
    V s = cur[0];
    int64_t nn = 0, i = 1;
    for (; i + 1 < nc; i += 2) {
      nxt[nn++] = _mm512_ternarylogic_epi64(s, cur[i], cur[i + 1], kMajImm);
      s = _mm512_ternarylogic_epi64(s, cur[i], cur[i + 1], kXor3Imm);
    }
    if (i < nc) {
      nxt[nn++] = _mm512_and_si512(s, cur[i]);
      s = _mm512_xor_si512(s, cur[i]);
    }
    plane[b] = s;
    std::swap(cur, nxt);
    nc = nn;
  }
}

template <int N>
void block_sliced(const LutNet& net, const float* x, int64_t begin, int64_t count, float* y,
                  Scratch& s, const Transpose16& tr) {
  const int64_t d = net.d, g = net.g, L = net.num_layers;
  thermometer(net, x + begin * d, count, s.a.data(), tr);
  V* in = s.a.data();
  V* out = s.b.data();
  for (int64_t k = 0; k + 1 < L; ++k) {
    const int32_t* map = net.mapping[k];
    const uint64_t* tab = net.tables[k];
    for (int64_t j = 0; j < net.widths[k]; ++j) out[j] = lut_vec<N>(tab[j], in, map + j * N, s.f16);
    std::swap(in, out);
  }
  int planes = 0;
  while (planes < 64 && (int64_t{1} << planes) <= g) ++planes;  // bits for counts 0..g
  V* plane = s.planes.data();
  V* ca = s.carries.data();
  V* cb = ca + (g / 2 + 1);
  uint8_t* cnt8 = s.counts_data();  // (16 channels, kBlock tokens) counts as bytes when g < 256
  for (int64_t c0 = 0; c0 < d; c0 += 16) {
    const int64_t cn = std::min<int64_t>(16, d - c0);
    for (int64_t cc = 0; cc < cn; ++cc)
      count_channel<N>(net, in, c0 + cc, planes, plane + cc * planes, ca, cb, s.f16);
    if (g + 1 <= 32)
      for (int64_t cc = 0; cc < cn; ++cc) {
        const float* aff = net.affine + (c0 + cc) * (g + 1);
        _mm512_store_ps(s.aff_lo + 16 * cc, _mm512_maskz_loadu_ps(first_lanes(g + 1), aff));
        _mm512_store_ps(s.aff_hi + 16 * cc,
                        g + 1 > 16 ? _mm512_maskz_loadu_ps(first_lanes(g + 1 - 16), aff + 16)
                                   : _mm512_setzero_ps());
      }
    if (planes <= 8) {  // counts as bytes, 64 tokens per masked add and plane
      for (int64_t cc = 0; cc < cn; ++cc)
        for (int64_t q = 0; q * 64 < count; ++q) {
          __m512i acc = _mm512_setzero_si512();
          for (int b = 0; b < planes; ++b)
            acc = _mm512_mask_add_epi8(acc, load_chunk64(plane + cc * planes + b, q), acc,
                                       _mm512_set1_epi8(static_cast<char>(1 << b)));
          _mm512_store_si512(cnt8 + cc * kBlock + 64 * q, acc);
        }
    }
    const __mmask16 cm = first_lanes(cn);
    const bool in_regs = g + 1 <= 32;  // the affine row of a channel fits in two registers
    for (int64_t tg = 0; tg * 16 < count; ++tg) {
      const int64_t rows = std::min<int64_t>(16, count - tg * 16);
      __m512 r[16];
#pragma GCC unroll 16
      for (int cc = 0; cc < 16; ++cc) {
        if (cc >= cn) {
          r[cc] = _mm512_setzero_ps();
          continue;
        }
        __m512i idx;  // counts of tokens tg*16 .. tg*16 + 15, channel c0 + cc
        if (planes <= 8) {
          idx = _mm512_cvtepu8_epi32(
              _mm_load_si128(reinterpret_cast<const __m128i*>(cnt8 + cc * kBlock + 16 * tg)));
        } else {
          idx = _mm512_setzero_si512();
          for (int b = 0; b < planes && b < 31; ++b)
            idx = _mm512_mask_or_epi32(idx, load_chunk(plane + cc * planes + b, tg), idx,
                                       _mm512_set1_epi32(int32_t{1} << b));
        }
        const float* aff = net.affine + (c0 + cc) * (g + 1);
        if (in_regs)
          r[cc] = _mm512_permutex2var_ps(_mm512_load_ps(s.aff_lo + 16 * cc), idx,
                                         _mm512_load_ps(s.aff_hi + 16 * cc));
        else  // every count is in [0, g]
          r[cc] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, idx, aff, 4);
      }
      tr(r);  // r[i] = y[tg*16 + i, c0 .. c0 + 15]
      float* y0 = y + (begin + tg * 16) * d + c0;
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)
        if (i < rows) _mm512_mask_storeu_ps(y0 + i * d, cm, r[i]);
    }
  }
}

template <int N>
void forward_n(const LutNet& net, const float* x, int64_t tokens, float* y, int threads) {
  const int64_t blocks = (tokens + kBlock - 1) / kBlock;
  threads = clamp_threads(threads, blocks);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    Scratch s;
    const Transpose16 tr;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t begin = blk * kBlock, count = std::min(kBlock, tokens - begin);
      if (count < kLutSliceMinTokens) {
        if (s.bytes.empty()) s.bytes.resize(2 * net.max_width);
        lut_tokens_scalar(net, x, begin, begin + count, y, s.bytes.data(),
                          s.bytes.data() + net.max_width);
      } else {
        if (s.a.empty()) {
          s.a.assign(net.max_width, _mm512_setzero_si512());
          s.b.assign(net.max_width, _mm512_setzero_si512());
          s.carries.assign(2 * (net.g / 2 + 1), _mm512_setzero_si512());
          int planes = 0;
          while (planes < 64 && (int64_t{1} << planes) <= net.g) ++planes;
          s.planes.assign(16 * planes, _mm512_setzero_si512());
          s.counts_v.assign(16 * kBlock / 64, _mm512_setzero_si512());
          s.f16[0] = _mm512_setzero_si512();
          s.f16[15] = _mm512_set1_epi32(-1);
        }
        block_sliced<N>(net, x, begin, count, y, s, tr);
      }
    }
  }
}

}  // namespace

void lut_forward_avx512(const LutNet& net, const float* x, int64_t tokens, float* y,
                        int threads) {
  switch (net.n) {
    case 1: return forward_n<1>(net, x, tokens, y, threads);
    case 2: return forward_n<2>(net, x, tokens, y, threads);
    case 3: return forward_n<3>(net, x, tokens, y, threads);
    case 4: return forward_n<4>(net, x, tokens, y, threads);
    case 5: return forward_n<5>(net, x, tokens, y, threads);
    default: return forward_n<6>(net, x, tokens, y, threads);
  }
}

}  // namespace liteffn
