// Binding for the LUT layer's EFD input gradient (training backward); see kernels/lut_efd.h.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common.h"
#include "kernels/lut_efd.h"

namespace py = pybind11;

namespace liteffn {
namespace {

void lut_efd_input_grad(uintptr_t grad, uintptr_t addr, uintptr_t weights, uintptr_t mapping,
                        uintptr_t grad_bits, int64_t N, int64_t out, int64_t n, int64_t in,
                        int threads) {
  if (N < 0 || out < 1 || n < 1 || n > 8 || in < 1)
    throw std::invalid_argument("lut_efd_input_grad: need N >= 0, out >= 1, 1 <= n <= 8, in >= 1");
  const int64_t* m = reinterpret_cast<const int64_t*>(mapping);
  for (int64_t i = 0; i < out * n; ++i)
    if (m[i] < 0 || m[i] >= in)
      throw std::invalid_argument("lut_efd_input_grad: mapping entry out of [0, in)");
  if (N == 0) return;
  auto* f = use_avx2() ? &lut_efd_input_grad_avx2 : &lut_efd_input_grad_scalar;
  f(reinterpret_cast<const float*>(grad), reinterpret_cast<const uint8_t*>(addr),
    reinterpret_cast<const float*>(weights), m, reinterpret_cast<float*>(grad_bits), N, out, n,
    in, threads);
}

const Registrar reg("lut_efd", [](py::module_& mod) {
  mod.def("lut_efd_input_grad", &lut_efd_input_grad, py::arg("grad"), py::arg("addr"),
          py::arg("weights"), py::arg("mapping"), py::arg("grad_bits"), py::arg("N"),
          py::arg("out"), py::arg("n"), py::arg("in_features"), py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "EFD input gradient of a LUT layer into grad_bits (N, in) float32 (overwritten).");
});

}  // namespace
}  // namespace liteffn
