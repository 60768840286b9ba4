// AVX-512 LUTFFN kernel: bit-sliced over blocks of 512 tokens (one __m512i per bit holds that
// bit for 512 tokens: token t is bit t of the 512-bit word, i.e. bit t % 16 of its 16-bit chunk
// t / 16); a block of at most 256 tokens uses __m256i words and the same code (AVX-512VL
// ternlog on ymm), so batch 256 does not pay for 256 empty lanes. Differences from the AVX2
// kernel (lut_avx2.cpp):
// - Each 2:1 select of a LUT's multiplexer tree is one vpternlogq (imm 0xD8: the dead low child
//   is the overwritten operand, so no register copies), and the 14 non-constant functions of the
//   two lowest address bits are one vpternlogq each, stored to a 16-entry table so that each leaf
//   (a 4-bit slice of the truth table) is one load. Layers are software-pipelined: LUT j + 4's
//   table is built while LUT j's tree reads its own, from a ring of 8 tables.
// - Thermometer: a 16 tokens x 16 channels tile of x is transposed in registers (vpermt2ps), so
//   one vcmpps per (channel, level) gives the 16 token bits of a word chunk directly from the
//   mask register (kmovw to memory); no bit transposes.
// - Group count: a carry-save adder tree of full adders (two vpternlogq each: 0x96 sum, 0xE8
//   majority), about 2 ops per LUT output instead of the ripple counter's 2 * planes.
// - Output: counts become bytes with one masked vpaddb per (plane, 64 tokens); per 16 tokens and
//   channel a vpmovzxbd and a vpermt2ps look the affine row up in registers (a gather when
//   g > 31; masked ORs of 16-token chunks when g > 255), and a 16x16 transpose gives row stores.
// Blocks of fewer than kLutSliceMinTokens tokens use the scalar per-token path. Same results as
// the scalar kernel, bit for bit: comparisons are _CMP_GT_OQ (NaN and ties give 0), and every
// output is a lookup in the same affine table.
#include "kernels/avx512_intrin.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common.h"
#include "kernels/lut.h"

namespace liteffn {
namespace {

// Bit-sliced words are __m512i (blocks of 512 tokens) or, for blocks of at most 256 tokens,
// __m256i (AVX-512VL ternlog on ymm: half the work when half the lanes would be empty).
constexpr int64_t kBlock = 512;
constexpr int kMuxImm = 0xD8;   // ternlog(lo, hi, s): s ? hi : lo
constexpr int kXor3Imm = 0x96;  // a ^ b ^ c
constexpr int kMajImm = 0xE8;   // majority(a, b, c)

inline __m512i vload(const __m512i* p) { return _mm512_load_si512(p); }
inline __m256i vload(const __m256i* p) { return _mm256_load_si256(p); }
template <int imm>
inline __m512i tern(__m512i a, __m512i b, __m512i c) {
  return _mm512_ternarylogic_epi64(a, b, c, imm);
}
template <int imm>
inline __m256i tern(__m256i a, __m256i b, __m256i c) {
  return _mm256_ternarylogic_epi64(a, b, c, imm);
}
inline __m512i vand(__m512i a, __m512i b) { return _mm512_and_si512(a, b); }
inline __m256i vand(__m256i a, __m256i b) { return _mm256_and_si256(a, b); }
inline __m512i vxor(__m512i a, __m512i b) { return _mm512_xor_si512(a, b); }
inline __m256i vxor(__m256i a, __m256i b) { return _mm256_xor_si256(a, b); }
template <class V>
inline V vzero() {
  if constexpr (sizeof(V) == 64) return _mm512_setzero_si512();
  else return _mm256_setzero_si256();
}
template <class V>
inline V vones() {
  if constexpr (sizeof(V) == 64) return _mm512_set1_epi32(-1);
  else return _mm256_set1_epi32(-1);
}
template <class V>
constexpr int64_t block_tokens() { return 8 * static_cast<int64_t>(sizeof(V)); }

// The first operand is the one the instruction overwrites: lo is dead after the select, the
// selector is reused by other nodes, so this order needs no register copies.
template <class V>
inline V mux(V sel, V hi, V lo) { return tern<kMuxImm>(lo, hi, sel); }

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

// f[idx] for idx = 1..14 (f[0] = 0 and f[15] = ~0 are set once per block).
template <class V, int... I>
inline void build_f16(V* f, V w0, V w1, std::integer_sequence<int, I...>) {
  ((f[I + 1] = tern<pair_imm<I + 1>()>(w1, w0, w0)), ...);
}

inline uint64_t rotr(uint64_t x, unsigned r) { return (x >> (r & 63)) | (x << ((64 - r) & 63)); }

// Leaf k (4-bit slice k of the table) as a byte offset into the 16-entry table of words:
// nibble k times sizeof(V), by one rotate and one and.
template <class V>
inline const V* leaf(const V* f, uint64_t table, unsigned k) {
  constexpr unsigned sh = sizeof(V) == 64 ? 6 : 5;
  const uint64_t off = rotr(table, (4 * k + 64 - sh) & 63) & (uint64_t{15} << sh);
  return reinterpret_cast<const V*>(reinterpret_cast<const char*>(f) + off);
}

// node<L>(k): the sub-table of addresses whose bits L.. equal k (see lut_scalar.cpp); leaves at
// L = 2 are loads from the function table.
template <class V, int L>
struct Mux {
  static inline V node(uint64_t table, const V* w, const V* f, unsigned k) {
    const V lo = Mux<V, L - 1>::node(table, w, f, 2 * k);
    const V hi = Mux<V, L - 1>::node(table, w, f, 2 * k + 1);
    return mux(w[L - 1], hi, lo);
  }
};
template <class V>
struct Mux<V, 2> {
  static inline V node(uint64_t table, const V*, const V* f, unsigned k) {
    return vload(leaf(f, table, k));
  }
};

// Software-pipelined layer: LUT j + D's function table is built D iterations before LUT j's tree
// reads it (a ring of 2D tables), so the leaf loads find stores that have long completed.
constexpr int kPipe = 4;  // pipeline depth of layer_deep

template <class V, int N, int D>
void layer_deep(const V* in, const int32_t* map, const uint64_t* tab, int64_t width, V* out, V* f) {
  constexpr int R = 2 * D;
  auto build = [&](int64_t j) {
    const V w0 = vload(in + map[j * N]);
    const V w1 = N > 1 ? vload(in + map[j * N + 1]) : w0;
    build_f16(f + 16 * (j % R), w0, w1, std::make_integer_sequence<int, 14>{});
  };
  for (int64_t j = 0; j < std::min<int64_t>(D, width); ++j) build(j);
  for (int64_t j = 0; j < width; ++j) {
    if (j + D < width) build(j + D);
    const V* fj = f + 16 * (j % R);
    if constexpr (N == 1) {
      out[j] = vload(fj + ((tab[j] & 1u) | ((tab[j] & 2u) << 2)));
    } else {
      V w[N];
      for (int l = 2; l < N; ++l) w[l] = vload(in + map[j * N + l]);
      out[j] = Mux<V, N>::node(tab[j], w, fj, 0);
    }
  }
}

// Per-thread buffers, sized in 512-bit words; a 256-token block reads them as arrays of 256-bit
// words (the first half of each buffer).
struct alignas(64) Word {  // storage of one 512-bit word (accessed through V* and intrinsics)
  uint64_t q[8];
};
struct Scratch {
  std::vector<Word> a, b;      // bit-sliced layer inputs / outputs: max_width words each
  std::vector<Word> carries;   // adder tree: two lists of g / 2 + 1 words
  std::vector<Word> vals;      // (16 channels, g) last-layer outputs of one channel tile
  std::vector<Word> planes;    // (16 channels, planes) count bit-planes of one channel tile
  std::vector<Word> counts_v;  // (16 channels, kBlock) counts as bytes
  std::vector<Word> f16_v;     // ring of 2 * kPipe tables of the 16 functions of two inputs
  std::vector<uint8_t> bytes;  // per-token path: 2 * max_width
  alignas(64) float aff_lo[16 * 16], aff_hi[16 * 16];  // affine rows of a channel tile
  uint8_t* counts_data() { return reinterpret_cast<uint8_t*>(counts_v.data()); }
  template <class V>
  V* words(std::vector<Word>& v) { return reinterpret_cast<V*>(v.data()); }
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

// 16- and 64-token chunks of a word, straight between memory and mask registers (kmov). The
// scratch words are otherwise only accessed through the vector load/store intrinsics, whose
// types are may_alias, so the compiler keeps these accesses ordered with them.
template <class V>
inline void store_chunk(V* word, int64_t chunk, __mmask16 m) {
  _store_mask16(reinterpret_cast<__mmask16*>(word) + chunk, m);
}
template <class V>
inline __mmask16 load_chunk(const V* word, int64_t chunk) {
  return _load_mask16(const_cast<__mmask16*>(reinterpret_cast<const __mmask16*>(word)) + chunk);
}
template <class V>
inline __mmask64 load_chunk64(const V* word, int64_t chunk) {
  return _load_mask64(const_cast<__mmask64*>(reinterpret_cast<const __mmask64*>(word)) + chunk);
}

// Thermometer bits of a block, bit-sliced: word c*T + i, bit t = [x[t, c] > thr[c, i]]. Chunks of
// tokens beyond count keep whatever they held (lanes are independent; those outputs are unused).
// Channel tiles outside, token groups inside: the tile's T*16 words stay in L1 while their
// 16-bit chunks are written. The tile loops have constant trip counts so that the 16 rows stay
// in registers.
template <class V>
void thermometer(const LutNet& net, const float* x, int64_t count, V* out, const Transpose16& tr) {
  const int64_t d = net.d, T = net.levels;
  for (int64_t c0 = 0; c0 < d; c0 += 16) {
    const __mmask16 cm = first_lanes(d - c0);
    const int64_t cn = std::min<int64_t>(16, d - c0);
    for (int64_t tg = 0; tg * 16 < count; ++tg) {
      const int64_t rows = std::min<int64_t>(16, count - tg * 16);
      if ((tg + 2) * 16 < count) {  // the tile's lines two groups ahead (x is read by column tiles)
        const int64_t ahead = std::min<int64_t>(16, count - (tg + 2) * 16);
        for (int64_t i = 0; i < ahead; ++i)
          _mm_prefetch(reinterpret_cast<const char*>(x + ((tg + 2) * 16 + i) * d + c0),
                       _MM_HINT_T0);
      }
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
#pragma GCC unroll 8
        for (int64_t i = 0; i < T; ++i)
          store_chunk(w + i, tg, _mm512_cmp_ps_mask(r[cc], _mm512_set1_ps(thr[i]), _CMP_GT_OQ));
      }
    }
  }
}

// Adds one channel's g LUT outputs (vals) with a carry-save tree of full adders; plane[b] gets
// bit b of each count.
template <class V>
inline void count_channel(const V* vals, int64_t g, int planes, V* plane, V* carry_a,
                          V* carry_b) {
  // Level 0: acc += pairs of LUT outputs by full adders; carries go to level 1.
  V acc = vals[0];
  int64_t nc = 0;
  int64_t j = 1;
  for (; j + 1 < g; j += 2) {
    carry_a[nc++] = tern<kMajImm>(acc, vals[j], vals[j + 1]);
    acc = tern<kXor3Imm>(acc, vals[j], vals[j + 1]);
  }
  if (j < g) {
    carry_a[nc++] = vand(acc, vals[j]);
    acc = vxor(acc, vals[j]);
  }
  plane[0] = acc;
  // Levels 1..: the same reduction on the carry lists (level b holds at most g / 2^b words).
  V* cur = carry_a;
  V* nxt = carry_b;
  for (int b = 1; b < planes; ++b) {
    if (nc == 0) {
      plane[b] = vzero<V>();
      continue;
    }
    V s = cur[0];
    int64_t nn = 0, i = 1;
    for (; i + 1 < nc; i += 2) {
      nxt[nn++] = tern<kMajImm>(s, cur[i], cur[i + 1]);
      s = tern<kXor3Imm>(s, cur[i], cur[i + 1]);
    }
    if (i < nc) {
      nxt[nn++] = vand(s, cur[i]);
      s = vxor(s, cur[i]);
    }
    plane[b] = s;
    std::swap(cur, nxt);
    nc = nn;
  }
}

template <class V, int N>
void block_sliced(const LutNet& net, const float* x, int64_t begin, int64_t count, float* y,
                  Scratch& s, const Transpose16& tr) {
  const int64_t d = net.d, g = net.g, L = net.num_layers;
  V* in = s.words<V>(s.a);
  V* out = s.words<V>(s.b);
  V* f = s.words<V>(s.f16_v);
  for (int q = 0; q < 2 * kPipe; ++q) {
    f[16 * q] = vzero<V>();
    f[16 * q + 15] = vones<V>();
  }
  thermometer(net, x + begin * d, count, in, tr);
  for (int64_t k = 0; k + 1 < L; ++k) {
    const int32_t* map = net.mapping[k];
    const uint64_t* tab = net.tables[k];
    layer_deep<V, N, kPipe>(in, map, tab, net.widths[k], out, f);
    std::swap(in, out);
  }
  int planes = 0;
  while (planes < 64 && (int64_t{1} << planes) <= g) ++planes;  // bits for counts 0..g
  const int32_t* map_last = net.mapping[L - 1];
  const uint64_t* tab_last = net.tables[L - 1];
  V* vals = s.words<V>(s.vals);
  V* plane = s.words<V>(s.planes);
  V* ca = s.words<V>(s.carries);
  V* cb = ca + (g / 2 + 1);
  uint8_t* cnt8 = s.counts_data();  // (16 channels, kBlock tokens) counts as bytes when g < 256
  for (int64_t c0 = 0; c0 < d; c0 += 16) {
    const int64_t cn = std::min<int64_t>(16, d - c0);
    // The tile's cn*g last-layer LUTs, pipelined like a hidden layer, then counted.
    layer_deep<V, N, kPipe>(in, map_last + c0 * g * N, tab_last + c0 * g, cn * g, vals, f);
    for (int64_t cc = 0; cc < cn; ++cc)
      count_channel(vals + cc * g, g, planes, plane + cc * planes, ca, cb);
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
        for (int64_t q = 0; q * 64 < count; ++q) {  // q < block_tokens<V>() / 64
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
          idx = _mm512_maskz_cvtepu8_epi32(
              0xFFFF,
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
          s.a.assign(net.max_width, Word{});
          s.b.assign(net.max_width, Word{});
          s.carries.assign(2 * (net.g / 2 + 1), Word{});
          s.vals.assign(16 * net.g, Word{});
          int planes = 0;
          while (planes < 64 && (int64_t{1} << planes) <= net.g) ++planes;
          s.planes.assign(16 * planes, Word{});
          s.counts_v.assign(16 * kBlock / 64, Word{});
          s.f16_v.assign(16 * 2 * kPipe, Word{});
        }
        if (count <= block_tokens<__m256i>())
          block_sliced<__m256i, N>(net, x, begin, count, y, s, tr);
        else
          block_sliced<__m512i, N>(net, x, begin, count, y, s, tr);
      }
    }
  }
}

}  // namespace

void lut_forward_avx512(const LutNet& net, const float* x, int64_t tokens, float* y,
                        int threads) {
  dispatch_lut_inputs(net.n, [&](auto n) {
    forward_n<decltype(n)::value>(net, x, tokens, y, threads);
  });
}

}  // namespace liteffn
