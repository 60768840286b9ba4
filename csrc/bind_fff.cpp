// Bindings for the fast feedforward tree kernel (FastFeedForward's eval path).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common.h"
#include "kernels/fff.h"

namespace py = pybind11;

namespace liteffn {
namespace {

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
  if (use_avx2()) fff_forward_avx2(a, threads);
  else fff_forward_scalar(a, threads);
}

const Registrar reg("fff", [](py::module_& m) {
  m.def("fff_forward", &fff_forward, py::arg("x"), py::arg("w_in"), py::arg("b_in"),
        py::arg("w_out"), py::arg("b_out"), py::arg("y"), py::arg("path"), py::arg("act"),
        py::arg("n"), py::arg("d"), py::arg("depth"), py::arg("trees"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>(),
        "Hard-descent fast feedforward tree over (n, d) float32 tokens (see kernels/fff.h).");
});

}  // namespace
}  // namespace liteffn
