// AVX2 LUTFFN kernel: bit-sliced over blocks of 256 tokens (one __m256i per bit holds that bit
// for 256 tokens: token t is bit t % 8 of byte t / 8). Thermometer bits come from compare +
// movemask and an 8x8 bit transpose, each LUT is a multiplexer tree of bitwise selects, each
// channel's group is counted with a bit-sliced ripple-carry counter, and another 8x8 transpose
// turns count bit-planes into per-token counts for the affine-table lookup. Blocks of fewer
// than kLutSliceMinTokens tokens use the scalar per-token path. Same results as the scalar
// kernel, bit for bit.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "common.h"
#include "kernels/lut.h"

namespace liteffn {
namespace {

constexpr int64_t kBlock = 256;

// node<L>(k): the sub-table of addresses whose bits L.. equal k (see lut_scalar.cpp). Leaves
// sit at L = 2: each 4-entry slice of the table is one of the 16 functions of (w0, w1), all
// precomputed per LUT, so a leaf is one load.
template <int L>
struct MuxV {
  static inline __m256i node(uint64_t table, const __m256i* w, const __m256i* f16, uint64_t k) {
    const __m256i lo = MuxV<L - 1>::node(table, w, f16, 2 * k);
    const __m256i hi = MuxV<L - 1>::node(table, w, f16, 2 * k + 1);
    return _mm256_xor_si256(lo, _mm256_and_si256(_mm256_xor_si256(lo, hi), w[L - 1]));
  }
};
template <>
struct MuxV<2> {
  static inline __m256i node(uint64_t table, const __m256i*, const __m256i* f16, uint64_t k) {
    return f16[(table >> (4 * k)) & 15u];
  }
};

template <int N>
inline __m256i lut_vec(uint64_t table, const __m256i* in, const int32_t* map) {
  __m256i w[N];
  for (int l = 0; l < N; ++l) w[l] = _mm256_load_si256(in + map[l]);
  const __m256i ones = _mm256_set1_epi32(-1);
  if constexpr (N == 1) {
    const __m256i pick[4] = {_mm256_setzero_si256(), _mm256_xor_si256(w[0], ones), w[0], ones};
    return pick[table & 3u];
  } else {
    // Minterm a of (w0, w1) is set where the two low address bits equal a (a = w0 + 2*w1).
    const __m256i m[4] = {_mm256_andnot_si256(w[0], _mm256_xor_si256(w[1], ones)),
                          _mm256_andnot_si256(w[1], w[0]), _mm256_andnot_si256(w[0], w[1]),
                          _mm256_and_si256(w[0], w[1])};
    __m256i f16[16];  // f16[idx] = OR of minterms a with bit a of idx set
    f16[0] = _mm256_setzero_si256();
    for (int idx = 1; idx < 16; ++idx) {
      const int low = __builtin_ctz(static_cast<unsigned>(idx));
      f16[idx] = _mm256_or_si256(f16[idx & (idx - 1)], m[low]);
    }
    return MuxV<N>::node(table, w, f16, 0);
  }
}

// One 256-bit register as a vector element: std::vector<__m256i> would drop the type's
// attributes from its template argument (GCC -Wignored-attributes).
struct Reg256 {
  __m256i v;
};
inline __m256i* regs(std::vector<Reg256>& r) { return &r.data()->v; }

struct Scratch {
  std::vector<Reg256> a, b;    // bit-sliced layer inputs / outputs: max_width each
  std::vector<Reg256> planes;  // (d, planes) count bit-planes of the last layer
  std::vector<uint8_t> bytes;  // per-token path: 2 * max_width
};

// Transpose an 8x8 bit matrix: bit j of byte k moves to bit k of byte j.
inline uint64_t transpose8(uint64_t x) {
  uint64_t t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAull;
  x ^= t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCull;
  x ^= t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ull;
  x ^= t ^ (t << 28);
  return x;
}

// Thermometer bits of a block, bit-sliced: word c*T + i gets bit t = [x[t, c] > thr[c, i]].
// For 8 tokens and 8 levels of a channel, one compare + movemask per token gives a byte of
// level bits; an 8x8 bit transpose turns them into one byte of token bits per level.
void thermometer(const LutNet& net, const float* x, int64_t begin, int64_t count,
                 __m256i* out) {
  const int64_t d = net.d, T = net.levels;
  std::fill(out, out + d * T, _mm256_setzero_si256());
  uint8_t* bytes = reinterpret_cast<uint8_t*>(out);  // word w, token t: byte 32*w + t/8
  alignas(32) int32_t lane_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t tg = 0; tg * 8 < count; ++tg) {
    const int64_t rows = std::min<int64_t>(8, count - tg * 8);
    const float* x0 = x + (begin + tg * 8) * d;
    for (int64_t c = 0; c < d; ++c) {
      for (int64_t i0 = 0; i0 < T; i0 += 8) {
        const int64_t levels = std::min<int64_t>(8, T - i0);
        const __m256i mask =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lane_mask + 8 - levels));
        const __m256 thr = _mm256_maskload_ps(net.thresholds + c * T + i0, mask);
        uint64_t m = 0;
        for (int64_t k = 0; k < rows; ++k) {
          const __m256 gt = _mm256_cmp_ps(_mm256_set1_ps(x0[k * d + c]), thr, _CMP_GT_OQ);
          m |= static_cast<uint64_t>(_mm256_movemask_ps(gt) & 0xFF) << (8 * k);
        }
        m = transpose8(m);  // byte i: bit k = token tg*8 + k at level i0 + i
        for (int64_t i = 0; i < levels; ++i)
          bytes[32 * (c * T + i0 + i) + tg] = static_cast<uint8_t>(m >> (8 * i));
      }
    }
  }
}

template <int N>
void block_sliced(const LutNet& net, const float* x, int64_t begin, int64_t count, float* y,
                  Scratch& s) {
  const int64_t d = net.d, g = net.g, L = net.num_layers;
  thermometer(net, x, begin, count, regs(s.a));
  __m256i* in = regs(s.a);
  __m256i* out = regs(s.b);
  for (int64_t k = 0; k + 1 < L; ++k) {
    const int32_t* map = net.mapping[k];
    const uint64_t* tab = net.tables[k];
    for (int64_t j = 0; j < net.widths[k]; ++j) out[j] = lut_vec<N>(tab[j], in, map + j * N);
    std::swap(in, out);
  }
  const int32_t* map = net.mapping[L - 1];
  const uint64_t* tab = net.tables[L - 1];
  int planes = 0;
  while ((int64_t{1} << planes) <= g) ++planes;  // bits needed for counts 0..g
  if (s.planes.size() < static_cast<size_t>(d * planes)) s.planes.resize(d * planes);
  for (int64_t c = 0; c < d; ++c) {
    __m256i* plane = regs(s.planes) + c * planes;
    for (int b = 0; b < planes; ++b) plane[b] = _mm256_setzero_si256();
    for (int64_t j = c * g; j < (c + 1) * g; ++j) {  // bit-sliced ripple-carry counter
      __m256i carry = lut_vec<N>(tab[j], in, map + j * N);
      for (int b = 0; b < planes; ++b) {
        const __m256i next = _mm256_and_si256(plane[b], carry);
        plane[b] = _mm256_xor_si256(plane[b], carry);
        carry = next;
      }
    }
  }
  const uint8_t* pb = reinterpret_cast<const uint8_t*>(regs(s.planes));  // plane p: 32 bytes
  if (planes <= 8) {
    // Byte tg of each plane holds 8 tokens' count bits; a transpose gives 8 counts as bytes.
    for (int64_t tg = 0; tg * 8 < count; ++tg) {
      const int64_t rows = std::min<int64_t>(8, count - tg * 8);
      float* y0 = y + (begin + tg * 8) * d;
      for (int64_t c = 0; c < d; ++c) {
        uint64_t m = 0;
        for (int b = 0; b < planes; ++b)
          m |= static_cast<uint64_t>(pb[32 * (c * planes + b) + tg]) << (8 * b);
        m = transpose8(m);  // byte k = count of token tg*8 + k
        const float* aff = net.affine + c * (g + 1);
        for (int64_t k = 0; k < rows; ++k) y0[k * d + c] = aff[(m >> (8 * k)) & 0xFF];
      }
    }
  } else {  // wide groups: per-token bit extraction
    for (int64_t t = 0; t < count; ++t) {
      for (int64_t c = 0; c < d; ++c) {
        int64_t cnt = 0;
        for (int b = 0; b < planes; ++b)
          cnt |= static_cast<int64_t>((pb[32 * (c * planes + b) + t / 8] >> (t % 8)) & 1u) << b;
        y[(begin + t) * d + c] = net.affine[c * (g + 1) + cnt];
      }
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
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t begin = blk * kBlock, count = std::min(kBlock, tokens - begin);
      if (count < kLutSliceMinTokens) {
        if (s.bytes.empty()) s.bytes.resize(2 * net.max_width);
        lut_tokens_scalar(net, x, begin, begin + count, y, s.bytes.data(),
                          s.bytes.data() + net.max_width);
      } else {
        if (s.a.empty()) {
          s.a.resize(net.max_width);
          s.b.resize(net.max_width);
        }
        block_sliced<N>(net, x, begin, count, y, s);
      }
    }
  }
}

}  // namespace

void lut_forward_avx2(const LutNet& net, const float* x, int64_t tokens, float* y, int threads) {
  dispatch_lut_inputs(net.n, [&](auto n) {
    forward_n<decltype(n)::value>(net, x, tokens, y, threads);
  });
}

}  // namespace liteffn
