// Bindings for the fast Walsh-Hadamard transform (used by LookupFFN's BH4 projection).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common.h"
#include "kernels/fwht.h"

namespace py = pybind11;

namespace liteffn {
namespace {

// x: (rows, n) float32, contiguous, n a power of two; transformed in place.
void fwht_rows(uintptr_t x, int64_t rows, int64_t n, float scale, int threads) {
  if (rows < 0 || n < 1 || (n & (n - 1)) != 0)
    throw std::invalid_argument("fwht_rows: need rows >= 0 and n a power of two");
  if (rows == 0) return;
  float* p = reinterpret_cast<float*>(x);
  if (use_avx512()) fwht_rows_avx512(p, rows, n, scale, threads);
  else if (use_avx2()) fwht_rows_avx2(p, rows, n, scale, threads);
  else fwht_rows_scalar(p, rows, n, scale, threads);
}

const Registrar reg("fwht", [](py::module_& m) {
  m.def("fwht_rows", &fwht_rows, py::arg("x"), py::arg("rows"), py::arg("n"), py::arg("scale"),
        py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
        "In-place scaled Walsh-Hadamard transform of each row of a (rows, n) float32 buffer.");
});

}  // namespace
}  // namespace liteffn
