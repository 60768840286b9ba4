// AVX2 LUTFFN kernel: bit-sliced over blocks of 256 tokens (one __m256i per bit holds that bit
// for 256 tokens: token t is bit t % 64 of 64-bit lane t / 64). Thermometer bits come from
// compare + movemask, each LUT is a multiplexer tree of bitwise selects, each channel's group
// is counted with a bit-sliced ripple-carry counter, and counts are expanded to bytes before the
// affine-table lookup. Blocks of fewer than kLutSliceMinTokens tokens use the scalar per-token
// path. Same results as the scalar kernel, bit for bit.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "kernels/lut.h"

namespace liteffn {
namespace {

constexpr int64_t kBlock = 256;

// node<L>(k): the sub-table of addresses whose bits L.. equal k (see lut_scalar.cpp).
template <int L>
struct MuxV {
  static inline __m256i node(uint64_t table, const __m256i* w, const __m256i* pick, uint64_t k) {
    const __m256i lo = MuxV<L - 1>::node(table, w, pick, 2 * k);
    const __m256i hi = MuxV<L - 1>::node(table, w, pick, 2 * k + 1);
    return _mm256_xor_si256(lo, _mm256_and_si256(_mm256_xor_si256(lo, hi), w[L - 1]));
  }
};
template <>
struct MuxV<1> {
  static inline __m256i node(uint64_t table, const __m256i*, const __m256i* pick, uint64_t k) {
    return pick[(table >> (2 * k)) & 3u];
  }
};

template <int N>
inline __m256i lut_vec(uint64_t table, const __m256i* in, const int32_t* map) {
  __m256i w[N];
  for (int l = 0; l < N; ++l) w[l] = _mm256_load_si256(in + map[l]);
  const __m256i ones = _mm256_set1_epi32(-1);
  const __m256i pick[4] = {_mm256_setzero_si256(), _mm256_xor_si256(w[0], ones), w[0], ones};
  return MuxV<N>::node(table, w, pick, 0);
}

// 32 bits -> 32 bytes, byte k = 0xFF if bit k is set.
inline __m256i expand32(uint32_t bits) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                        2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i sel = _mm256_set1_epi64x(0x8040201008040201LL);
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
}

struct Scratch {
  std::vector<__m256i> a, b;  // bit-sliced layer inputs / outputs: max_width each
  std::vector<float> xc;      // one channel of the block: 256 floats
  std::vector<uint8_t> cnt;   // (d, 256) counts when g <= 255
  std::vector<uint8_t> bytes; // per-token path: 2 * max_width
};

void thermometer(const LutNet& net, const float* x, int64_t begin, int64_t count, __m256i* out,
                 float* xc) {
  const int64_t d = net.d, T = net.levels;
  const float nan = std::nanf("");
  for (int64_t c = 0; c < d; ++c) {
    for (int64_t t = 0; t < count; ++t) xc[t] = x[(begin + t) * d + c];
    for (int64_t t = count; t < kBlock; ++t) xc[t] = nan;  // NaN > threshold is false: bit 0
    for (int64_t i = 0; i < T; ++i) {
      const __m256 thr = _mm256_set1_ps(net.thresholds[c * T + i]);
      alignas(32) uint64_t lanes[4];
      for (int q = 0; q < 4; ++q) {
        uint64_t acc = 0;
        for (int k = 0; k < 8; ++k) {
          const __m256 v = _mm256_loadu_ps(xc + q * 64 + k * 8);
          const int m = _mm256_movemask_ps(_mm256_cmp_ps(v, thr, _CMP_GT_OQ));
          acc |= static_cast<uint64_t>(static_cast<uint32_t>(m)) << (8 * k);
        }
        lanes[q] = acc;
      }
      out[c * T + i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    }
  }
}

template <int N>
void block_sliced(const LutNet& net, const float* x, int64_t begin, int64_t count, float* y,
                  Scratch& s) {
  const int64_t d = net.d, g = net.g, L = net.num_layers;
  thermometer(net, x, begin, count, s.a.data(), s.xc.data());
  __m256i* in = s.a.data();
  __m256i* out = s.b.data();
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
  __m256i plane[64];
  alignas(32) uint64_t bits[4];
  for (int64_t c = 0; c < d; ++c) {
    for (int b = 0; b < planes; ++b) plane[b] = _mm256_setzero_si256();
    for (int64_t j = c * g; j < (c + 1) * g; ++j) {  // bit-sliced ripple-carry counter
      __m256i carry = lut_vec<N>(tab[j], in, map + j * N);
      for (int b = 0; b < planes; ++b) {
        const __m256i next = _mm256_and_si256(plane[b], carry);
        plane[b] = _mm256_xor_si256(plane[b], carry);
        carry = next;
      }
    }
    if (planes <= 8) {  // counts as bytes, 32 tokens per step
      uint8_t* cnt = s.cnt.data() + c * kBlock;
      for (int h = 0; h < 8; ++h) {
        __m256i acc = _mm256_setzero_si256();
        for (int b = 0; b < planes; ++b) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(bits), plane[b]);
          const uint32_t word = static_cast<uint32_t>(bits[h / 2] >> (32 * (h % 2)));
          acc = _mm256_or_si256(acc, _mm256_and_si256(expand32(word),
                                                       _mm256_set1_epi8(static_cast<char>(1 << b))));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(cnt + 32 * h), acc);
      }
    } else {  // wide groups: per-token bit extraction
      alignas(32) uint64_t pl[64][4];
      for (int b = 0; b < planes; ++b)
        _mm256_store_si256(reinterpret_cast<__m256i*>(pl[b]), plane[b]);
      for (int64_t t = 0; t < count; ++t) {
        int64_t cnt = 0;
        for (int b = 0; b < planes; ++b)
          cnt |= static_cast<int64_t>((pl[b][t / 64] >> (t % 64)) & 1u) << b;
        y[(begin + t) * d + c] = net.affine[c * (g + 1) + cnt];
      }
    }
  }
  if (planes <= 8) {
    const uint8_t* cnt = s.cnt.data();
    for (int64_t t = 0; t < count; ++t) {
      float* yt = y + (begin + t) * d;
      for (int64_t c = 0; c < d; ++c) yt[c] = net.affine[c * (g + 1) + cnt[c * kBlock + t]];
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
          s.xc.resize(kBlock);
          s.cnt.resize(net.d * kBlock);
        }
        block_sliced<N>(net, x, begin, count, y, s);
      }
    }
  }
}

}  // namespace

void lut_forward_avx2(const LutNet& net, const float* x, int64_t tokens, float* y, int threads) {
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
