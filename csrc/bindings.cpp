// The liteffn._native module: ISA control plus every family's kernels (see bind_*.cpp).
// Tensors cross as raw addresses (uintptr_t) with explicit 64-bit sizes; Python (liteffn.ops)
// checks shapes, dtypes and contiguity before any call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "common.h"
#include "eval_call.h"

namespace py = pybind11;
using liteffn::Isa;

PYBIND11_MODULE(_native, m) {
  m.doc() = "liteffn native CPU kernels (torch-free C++17 + OpenMP)";
  m.def("cpu_has_avx2_fma", &liteffn::cpu_has_avx2_fma, "True when the CPU supports AVX2 and FMA.");
  m.def("cpu_has_avx512", &liteffn::cpu_has_avx512,
        "True when the CPU (and OS) support AVX-512 F, BW, VL and DQ.");
  m.def("l2_cache_bytes", &liteffn::cpu_l2_cache_bytes,
        "One core's L2 cache in bytes as the C library reports it (0: unknown); some kernels "
        "size their tiles by it.");
  m.def("get_isa", [] { return std::string(liteffn::isa_name(liteffn::active_isa())); },
        "The instruction-set level kernels dispatch to now: 'scalar', 'avx2' or 'avx512'.");
  m.def(
      "set_isa",
      [](const std::string& name) {
        if (name == "scalar") liteffn::set_active_isa(Isa::scalar);
        else if (name == "avx2") liteffn::set_active_isa(Isa::avx2);
        else if (name == "avx512") liteffn::set_active_isa(Isa::avx512);
        else
          throw std::invalid_argument("ISA must be 'scalar', 'avx2' or 'avx512', got '" + name +
                                      "'");
      },
      py::arg("name"), "Select the kernels' instruction-set level for the whole process.");
  m.def("compiled_isas", [] { return std::vector<std::string>{"scalar", "avx2", "avx512"}; });
  py::class_<liteffn::TorchRefs>(m, "TorchRefs",
                                 "torch's objects the layers' native eval calls use.")
      .def(py::init([](py::object tensor_type, py::object float32, py::object empty_like,
                       py::object grad_enabled, py::object num_threads, py::object empty_large,
                       int64_t large_bytes) {
             return liteffn::TorchRefs{std::move(tensor_type), std::move(float32),
                                       std::move(empty_like),  std::move(grad_enabled),
                                       std::move(num_threads), std::move(empty_large),
                                       large_bytes};
           }),
           py::arg("tensor_type"), py::arg("float32"), py::arg("empty_like"),
           py::arg("grad_enabled"), py::arg("num_threads"), py::arg("empty_large"),
           py::arg("large_bytes"));
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  py::list families;
  for (auto& [name, bind] : liteffn::registry()) {
    bind(m);
    families.append(name);
  }
  m.attr("families") = families;
}
