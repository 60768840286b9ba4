// Portable LUTFFN kernel: token-by-token for tiny blocks, else bit-sliced over 64 tokens
// (one uint64 word per bit holds that bit for 64 tokens; a LUT is a multiplexer tree).
#include <algorithm>
#include <vector>

#include "common.h"
#include "kernels/lut.h"

namespace liteffn {
namespace {

constexpr int64_t kBlock = 64;

// Address of one LUT from byte-per-bit inputs: sum_l in[map[l]] << l.
template <int N>
inline uint32_t address(const uint8_t* in, const int32_t* map) {
  uint32_t a = 0;
  for (int l = 0; l < N; ++l) a |= static_cast<uint32_t>(in[map[l]]) << l;
  return a;
}

template <int N>
void tokens_n(const LutNet& net, const float* x, int64_t begin, int64_t end, float* y,
              uint8_t* cur, uint8_t* nxt) {
  const int64_t d = net.d, T = net.levels, g = net.g, L = net.num_layers;
  for (int64_t t = begin; t < end; ++t) {
    const float* xt = x + t * d;
    for (int64_t c = 0; c < d; ++c)
      for (int64_t i = 0; i < T; ++i) cur[c * T + i] = xt[c] > net.thresholds[c * T + i];
    uint8_t* in = cur;
    uint8_t* out = nxt;
    for (int64_t k = 0; k + 1 < L; ++k) {
      const int32_t* map = net.mapping[k];
      const uint64_t* tab = net.tables[k];
      for (int64_t j = 0; j < net.widths[k]; ++j)
        out[j] = static_cast<uint8_t>((tab[j] >> address<N>(in, map + j * N)) & 1u);
      std::swap(in, out);
    }
    const int32_t* map = net.mapping[L - 1];
    const uint64_t* tab = net.tables[L - 1];
    for (int64_t c = 0; c < d; ++c) {
      int64_t count = 0;
      for (int64_t j = c * g; j < (c + 1) * g; ++j)
        count += static_cast<int64_t>((tab[j] >> address<N>(in, map + j * N)) & 1u);
      y[t * d + c] = net.affine[c * (g + 1) + count];
    }
  }
}

// One LUT on bit-sliced inputs: a multiplexer tree over the table bits. node<L>(k) is the
// sub-table of addresses whose bits L.. equal k; a leaf pair (L = 1) is one of
// {0, ~w0, w0, ~0} picked by two table bits.
template <int L>
struct Mux {
  static inline uint64_t node(uint64_t table, const uint64_t* w, uint64_t k) {
    const uint64_t lo = Mux<L - 1>::node(table, w, 2 * k);
    const uint64_t hi = Mux<L - 1>::node(table, w, 2 * k + 1);
    return lo ^ ((lo ^ hi) & w[L - 1]);
  }
};
template <>
struct Mux<1> {
  static inline uint64_t node(uint64_t table, const uint64_t* w, uint64_t k) {
    const uint64_t pick[4] = {0, ~w[0], w[0], ~uint64_t{0}};
    return pick[(table >> (2 * k)) & 3u];
  }
};

template <int N>
inline uint64_t lut_word(uint64_t table, const uint64_t* in, const int32_t* map) {
  uint64_t w[N];
  for (int l = 0; l < N; ++l) w[l] = in[map[l]];
  return Mux<N>::node(table, w, 0);
}

template <int N>
void block_sliced_n(const LutNet& net, const float* x, int64_t begin, int64_t count, float* y,
                    uint64_t* cur, uint64_t* nxt) {
  const int64_t d = net.d, T = net.levels, g = net.g, L = net.num_layers;
  std::fill(cur, cur + d * T, uint64_t{0});
  for (int64_t t = 0; t < count; ++t) {  // thermometer, transposed: bit t of word c*T + i
    const float* xt = x + (begin + t) * d;
    for (int64_t c = 0; c < d; ++c)
      for (int64_t i = 0; i < T; ++i)
        cur[c * T + i] |= static_cast<uint64_t>(xt[c] > net.thresholds[c * T + i]) << t;
  }
  uint64_t* in = cur;
  uint64_t* out = nxt;
  for (int64_t k = 0; k + 1 < L; ++k) {
    const int32_t* map = net.mapping[k];
    const uint64_t* tab = net.tables[k];
    for (int64_t j = 0; j < net.widths[k]; ++j) out[j] = lut_word<N>(tab[j], in, map + j * N);
    std::swap(in, out);
  }
  const int32_t* map = net.mapping[L - 1];
  const uint64_t* tab = net.tables[L - 1];
  int planes = 0;
  while ((int64_t{1} << planes) <= g) ++planes;  // bits needed for counts 0..g
  uint64_t plane[64];
  for (int64_t c = 0; c < d; ++c) {
    std::fill(plane, plane + planes, uint64_t{0});
    for (int64_t j = c * g; j < (c + 1) * g; ++j) {  // bit-sliced ripple-carry counter
      uint64_t carry = lut_word<N>(tab[j], in, map + j * N);
      for (int b = 0; b < planes && carry; ++b) {
        const uint64_t next = plane[b] & carry;
        plane[b] ^= carry;
        carry = next;
      }
    }
    for (int64_t t = 0; t < count; ++t) {
      int64_t cnt = 0;
      for (int b = 0; b < planes; ++b) cnt |= static_cast<int64_t>((plane[b] >> t) & 1u) << b;
      y[(begin + t) * d + c] = net.affine[c * (g + 1) + cnt];
    }
  }
}

template <int N>
void forward_n(const LutNet& net, const float* x, int64_t tokens, float* y, int threads) {
  const int64_t blocks = (tokens + kBlock - 1) / kBlock;
  threads = clamp_threads(threads, blocks);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<uint8_t> bytes;
    std::vector<uint64_t> words;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t begin = blk * kBlock, count = std::min(kBlock, tokens - begin);
      if (count < kLutSliceMinTokens) {
        if (bytes.empty()) bytes.resize(2 * net.max_width);
        tokens_n<N>(net, x, begin, begin + count, y, bytes.data(), bytes.data() + net.max_width);
      } else {
        if (words.empty()) words.resize(2 * net.max_width);
        block_sliced_n<N>(net, x, begin, count, y, words.data(), words.data() + net.max_width);
      }
    }
  }
}

}  // namespace

void lut_tokens_scalar(const LutNet& net, const float* x, int64_t begin, int64_t end, float* y,
                       uint8_t* bytes_a, uint8_t* bytes_b) {
  dispatch_lut_inputs(net.n, [&](auto n) {
    tokens_n<decltype(n)::value>(net, x, begin, end, y, bytes_a, bytes_b);
  });
}

void lut_forward_scalar(const LutNet& net, const float* x, int64_t tokens, float* y, int threads) {
  dispatch_lut_inputs(net.n, [&](auto n) {
    forward_n<decltype(n)::value>(net, x, tokens, y, threads);
  });
}

}  // namespace liteffn
