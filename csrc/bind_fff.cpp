// Bindings for the fast feedforward tree kernel (FastFeedForward's eval path).
#include <pybind11/pybind11.h>

#include <sys/mman.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "common.h"
#include "eval_call.h"
#include "kernels/fff.h"

namespace py = pybind11;

namespace liteffn {
namespace {

// A large fresh output is written once, page by page: on a VM each 4 KiB first-touch fault costs
// microseconds, more than the kernel spends on the token. Advising transparent huge pages for the
// 2 MiB-aligned interior of the buffer (advice only: contents and ownership are unchanged; PyTorch
// does the same for its own allocations under THP_MEM_ALLOC_ENABLE) cuts the faults 512-fold.
void advise_huge_pages(void* p, int64_t bytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < static_cast<int64_t>(4 * kHuge)) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e =
      (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);  // failure is harmless
#else
  (void)p;
  (void)bytes;
#endif
}

// The eval path reads the weights at random rows: with 4 KiB pages nearly every row of the 25 MB
// a depth-11 tree holds is a TLB miss (a nested page walk on a VM). Collapse the 2 MiB-aligned
// interior of a weight buffer into transparent huge pages in place (Linux >= 6.1
// MADV_COLLAPSE; contents, addresses and ownership are unchanged). Returns whether the kernel
// accepted the advice; failure (old kernel, THP disabled, no free huge pages) is harmless.
bool advise_weights(uintptr_t p, int64_t bytes) {
#if defined(MADV_HUGEPAGE) && defined(__linux__)
  constexpr int kCollapse = 25;  // MADV_COLLAPSE, not in older libc headers
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (!p || bytes < static_cast<int64_t>(kHuge)) return false;
  const uintptr_t b = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t e = (p + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (e <= b) return false;
  void* start = reinterpret_cast<void*>(b);
  if (madvise(start, e - b, MADV_HUGEPAGE) != 0) return false;
  return madvise(start, e - b, kCollapse) == 0;
#else
  (void)p;
  (void)bytes;
  return false;
#endif
}

void run_fff(const FFFArgs& a, int threads) {
  if (use_avx512()) fff_forward_avx512(a, threads);
  else if (use_avx2()) fff_forward_avx2(a, threads);
  else fff_forward_scalar(a, threads);
}

// Shapes as in kernels/fff.h; b_out, path and act may be 0 (absent).
void fff_forward(uintptr_t x, uintptr_t w_in, uintptr_t b_in, uintptr_t w_out, uintptr_t b_out,
                 uintptr_t y, uintptr_t path, uintptr_t act, int64_t n, int64_t d, int depth,
                 int trees, int threads) {
  if (n < 0 || d < 1 || depth < 0 || depth > 30 || trees < 1)
    throw std::invalid_argument("fff_forward: need n >= 0, d >= 1, 0 <= depth <= 30, trees >= 1");
  if (n == 0) return;  // empty tensors may have null addresses
  if (!x || !w_in || !b_in || !w_out || !y)
    throw std::invalid_argument("fff_forward: null tensor address");
  const int64_t rows = int64_t{trees} * ((int64_t{1} << (depth + 1)) - 1);
  if (path && rows > INT32_MAX)
    throw std::invalid_argument("fff_forward: path recording needs trees*nodes < 2^31");
  const FFFArgs a{reinterpret_cast<const float*>(x),     reinterpret_cast<const float*>(w_in),
                  reinterpret_cast<const float*>(b_in),  reinterpret_cast<const float*>(w_out),
                  reinterpret_cast<const float*>(b_out), reinterpret_cast<float*>(y),
                  reinterpret_cast<int32_t*>(path),      reinterpret_cast<float*>(act),
                  n, d, depth, trees};
  advise_huge_pages(reinterpret_cast<void*>(y), n * d * static_cast<int64_t>(sizeof(float)));
  run_fff(a, threads);
}

// FastFeedForward's eval call with the per-call checks in C (eval_call.h): built by the layer
// from its validated weights, called as eval(x); returns y, or None when x is not a plain input
// (plain_input) or a weight is no longer the Parameter object, or at the data pointer, it was
// built with (the layer then takes its checked Python path, which re-validates and rebuilds).
// In-place weight updates keep the pointer: the kernel reads the parameters themselves.
class FFFEval {
 public:
  FFFEval(py::dict params, int64_t d, int depth, int trees, TorchRefs torch_refs)
      : d_(d), depth_(depth), trees_(trees), torch_(std::move(torch_refs)) {
    if (d < 1 || depth < 0 || depth > 30 || trees < 1)
      throw std::invalid_argument("FFFEval: need d >= 1, 0 <= depth <= 30, trees >= 1");
    for (const char* name : {"w_in", "b_in", "w_out", "b_out"})
      weights_.add(params, name, /*track_version=*/false);
    if (!weights_.ptr(0) || !weights_.ptr(1) || !weights_.ptr(2))
      throw std::invalid_argument("FFFEval: null weight address");
  }

  py::object operator()(py::handle xh) const {
    PyObject* x = xh.ptr();
    int64_t n = 0;
    if (!plain_input(x, torch_, d_, &n) || !weights_.unchanged()) return py::none();
    py::object y = new_output(x, torch_, n, d_);
    const int threads = torch_threads(torch_);
    const FFFArgs a{reinterpret_cast<const float*>(evalcall::data_ptr(x)),
                    reinterpret_cast<const float*>(weights_.ptr(0)),
                    reinterpret_cast<const float*>(weights_.ptr(1)),
                    reinterpret_cast<const float*>(weights_.ptr(2)),
                    reinterpret_cast<const float*>(weights_.ptr(3)),
                    reinterpret_cast<float*>(evalcall::data_ptr(y.ptr())),
                    nullptr,
                    nullptr,
                    n,
                    d_,
                    depth_,
                    trees_};
    if (n > 0) {
      const int64_t y_bytes = n * d_ * static_cast<int64_t>(sizeof(float));
      py::gil_scoped_release release;
      if (y_bytes < torch_.large_bytes) advise_huge_pages(a.y, y_bytes);  // pooled: advised
      run_fff(a, threads);
    }
    return y;
  }

  bool current() const { return weights_.unchanged(); }

 private:
  int64_t d_;
  int depth_, trees_;
  TorchRefs torch_;
  WatchedParams weights_;
};

// Shapes as in kernels/fff.h (FFFLeafArgs); w_in, b_in may be 0 when depth == 0, b_out may be 0.
void fff_leaf_forward(uintptr_t x, uintptr_t w_in, uintptr_t b_in, uintptr_t w1, uintptr_t b1,
                      uintptr_t w2, uintptr_t b2, uintptr_t b_out, uintptr_t y, int64_t n,
                      int64_t d, int depth, int trees, int64_t width, int threads) {
  if (n < 0 || d < 1 || depth < 0 || depth > 30 || trees < 1 || trees > 64 || width < 1)
    throw std::invalid_argument(
        "fff_leaf_forward: need n >= 0, d >= 1, 0 <= depth <= 30, 1 <= trees <= 64, width >= 1");
  if (n == 0) return;
  if (!x || !w1 || !b1 || !w2 || !b2 || !y || (depth > 0 && (!w_in || !b_in)))
    throw std::invalid_argument("fff_leaf_forward: null tensor address");
  const FFFLeafArgs a{reinterpret_cast<const float*>(x),  reinterpret_cast<const float*>(w_in),
                      reinterpret_cast<const float*>(b_in), reinterpret_cast<const float*>(w1),
                      reinterpret_cast<const float*>(b1), reinterpret_cast<const float*>(w2),
                      reinterpret_cast<const float*>(b2), reinterpret_cast<const float*>(b_out),
                      reinterpret_cast<float*>(y),        n, d, depth, trees, width};
  if (use_avx512()) fff_leaf_forward_avx512(a, threads);
  else if (use_avx2()) fff_leaf_forward_avx2(a, threads);
  else fff_leaf_forward_scalar(a, threads);
}

const Registrar reg("fff", [](py::module_& m) {
  m.def("fff_forward", &fff_forward, py::arg("x"), py::arg("w_in"), py::arg("b_in"),
        py::arg("w_out"), py::arg("b_out"), py::arg("y"), py::arg("path"), py::arg("act"),
        py::arg("n"), py::arg("d"), py::arg("depth"), py::arg("trees"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>(),
        "Hard-descent fast feedforward tree over (n, d) float32 tokens (see kernels/fff.h).");
  m.def("fff_leaf_forward", &fff_leaf_forward, py::arg("x"), py::arg("w_in"), py::arg("b_in"),
        py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("b_out"),
        py::arg("y"), py::arg("n"), py::arg("d"), py::arg("depth"), py::arg("trees"),
        py::arg("width"), py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
        "Hard inference of the leaf form (original FFF) over (n, d) float32 tokens.");
  auto eval_cls = py::class_<FFFEval>(m, "FFFEval");
  register_eval_caller(eval_cls.ptr(), &call_eval<FFFEval>);
  eval_cls
      .def(py::init<py::dict, int64_t, int, int, TorchRefs>(), py::arg("params"), py::arg("d"),
           py::arg("depth"), py::arg("trees"), py::arg("torch_refs"))
      .def("__call__", &FFFEval::operator(), py::arg("x"),
           "y for a plain contiguous float32 CPU tensor x (..., d), or None (see bind_fff.cpp).")
      .def("current", &FFFEval::current,
           "Whether the weights are still those it was built for.");
  m.def("fff_advise_weights", &advise_weights, py::arg("ptr"), py::arg("bytes"),
        py::call_guard<py::gil_scoped_release>(),
        "Back the 2 MiB-aligned interior of [ptr, ptr+bytes) with huge pages, in place.");
});

}  // namespace
}  // namespace liteffn
