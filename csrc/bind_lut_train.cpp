// Bindings for the LUT layer's training forward and table gradient; see kernels/lut_train.h.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common.h"
#include "kernels/lut_train.h"

namespace py = pybind11;

namespace liteffn {
namespace {

void lut_train_forward(uintptr_t bits, uintptr_t mapping, uintptr_t table, uintptr_t addr,
                       uintptr_t y, int64_t N, int64_t out, int64_t n, int64_t in, int threads) {
  if (N < 0 || out < 1 || n < 1 || n > 6 || in < 1)
    throw std::invalid_argument("lut_train_forward: need N >= 0, out >= 1, 1 <= n <= 6, in >= 1");
  const int64_t* m = reinterpret_cast<const int64_t*>(mapping);
  for (int64_t i = 0; i < out * n; ++i)
    if (m[i] < 0 || m[i] >= in)
      throw std::invalid_argument("lut_train_forward: mapping entry out of [0, in)");
  if (N == 0) return;
  auto* f = use_avx2() ? &lut_train_forward_avx2 : &lut_train_forward_scalar;
  f(reinterpret_cast<const float*>(bits), m, reinterpret_cast<const float*>(table),
    reinterpret_cast<uint8_t*>(addr), reinterpret_cast<float*>(y), N, out, n, in, threads);
}

void lut_table_grad(uintptr_t grad, uintptr_t addr, uintptr_t grad_table, int64_t N, int64_t out,
                    int64_t n, int threads) {
  if (N < 0 || out < 1 || n < 1 || n > 8)
    throw std::invalid_argument("lut_table_grad: need N >= 0, out >= 1, 1 <= n <= 8");
  auto* f = use_avx2() ? &lut_table_grad_avx2 : &lut_table_grad_scalar;
  f(reinterpret_cast<const float*>(grad), reinterpret_cast<const uint8_t*>(addr),
    reinterpret_cast<float*>(grad_table), N, out, n, threads);
}

void lut_efd_weights(uintptr_t table, uintptr_t weights, int64_t out, int64_t n, float alpha,
                     float beta, int threads) {
  if (out < 1 || n < 1 || n > 8)
    throw std::invalid_argument("lut_efd_weights: need out >= 1, 1 <= n <= 8");
  auto* f = use_avx2() ? &lut_efd_weights_avx2 : &lut_efd_weights_scalar;
  f(reinterpret_cast<const float*>(table), reinterpret_cast<float*>(weights), out, n, alpha, beta,
    threads);
}

const Registrar reg("lut_train", [](py::module_& mod) {
  mod.def("lut_train_forward", &lut_train_forward, py::arg("bits"), py::arg("mapping"),
          py::arg("table"), py::arg("addr"), py::arg("y"), py::arg("N"), py::arg("out"),
          py::arg("n"), py::arg("in_features"), py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "Hard LUT layer forward: addresses (N, out) uint8 and output bits (N, out) float32.");
  mod.def("lut_table_grad", &lut_table_grad, py::arg("grad"), py::arg("addr"),
          py::arg("grad_table"), py::arg("N"), py::arg("out"), py::arg("n"), py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "Straight-through table gradient (out, 2^n) float32 (overwritten), deterministic.");
  mod.def("lut_efd_weights", &lut_efd_weights, py::arg("table"), py::arg("weights"),
          py::arg("out"), py::arg("n"), py::arg("alpha"), py::arg("beta"), py::arg("threads"),
          py::call_guard<py::gil_scoped_release>(),
          "EFD weights (out, 2^n, n) float32 (overwritten) of (out, 2^n) float32 tables.");
});

}  // namespace
}  // namespace liteffn
