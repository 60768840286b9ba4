// Bindings for the fast feedforward tree kernel (FastFeedForward's eval path).
#include <pybind11/pybind11.h>

#include <sys/mman.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "common.h"
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
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
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

// FastFeedForward's eval call with every per-call check in C (the Python version of these
// checks costs ~2 µs, as much as the batch-1 kernel): built by the layer from its validated
// weights, called as eval(x); returns y, or None when x or the weights are not what it was
// built for (the layer then takes its checked Python path, which re-validates and rebuilds).
// Checks: x is exactly torch.Tensor, float32, on the CPU, needs no grad, 1-D or more with the
// last dimension d and contiguous; each weight is still the module's Parameter object of that
// name and its data pointer is unchanged (in-place updates keep it; .data = ... or .to() do
// not). The GIL is released while the kernel runs.
class FFFEval {
 public:
  FFFEval(py::dict params, int64_t d, int depth, int trees, py::object tensor_type,
          py::object float32, py::object empty_like, py::object grad_enabled,
          py::object num_threads)
      : params_(std::move(params)), d_(d), depth_(depth), trees_(trees),
        tensor_type_(std::move(tensor_type)), float32_(std::move(float32)),
        empty_like_(std::move(empty_like)), grad_enabled_(std::move(grad_enabled)),
        num_threads_(std::move(num_threads)) {
    if (d < 1 || depth < 0 || depth > 30 || trees < 1)
      throw std::invalid_argument("FFFEval: need d >= 1, 0 <= depth <= 30, trees >= 1");
    const char* names[4] = {"w_in", "b_in", "w_out", "b_out"};
    for (int i = 0; i < 4; ++i) {
      names_[i] = py::str(names[i]);
      PyObject* w = PyDict_GetItem(params_.ptr(), names_[i].ptr());  // borrowed
      if (!w) throw std::invalid_argument(std::string("FFFEval: no parameter ") + names[i]);
      weights_[i] = py::reinterpret_borrow<py::object>(w);
      ptrs_[i] = w == Py_None ? 0 : data_ptr(w);
      if (i != 3 && !ptrs_[i]) throw std::invalid_argument("FFFEval: null weight address");
    }
  }

  py::object operator()(py::handle xh) const {
    PyObject* x = xh.ptr();
    if (reinterpret_cast<PyObject*>(Py_TYPE(x)) != tensor_type_.ptr()) return py::none();
    const Names& s = names();
    if (!attr_is(x, s.dtype, float32_.ptr()) || !attr_is(x, s.is_cpu, Py_True)) return py::none();
    if (attr_is(x, s.requires_grad, Py_True) && returns(grad_enabled_.ptr(), Py_True))
      return py::none();
    for (int i = 0; i < 4; ++i) {
      PyObject* w = PyDict_GetItem(params_.ptr(), names_[i].ptr());  // borrowed
      if (w != weights_[i].ptr() || (w != Py_None && data_ptr(w) != ptrs_[i])) return py::none();
    }
    // x.shape: (..., d), at least 1-D; n = numel / d
    py::object shape = py::reinterpret_steal<py::object>(PyObject_GetAttr(x, s.shape));
    if (!shape) throw py::error_already_set();
    const Py_ssize_t dims = PyTuple_Size(shape.ptr());
    if (dims < 1 || PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), dims - 1)) != d_)
      return py::none();
    int64_t n = 1;
    for (Py_ssize_t i = 0; i + 1 < dims; ++i) n *= PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), i));
    if (!call_is(x, s.is_contiguous, Py_True)) return py::none();
    py::object y = py::reinterpret_steal<py::object>(PyObject_CallOneArg(empty_like_.ptr(), x));
    if (!y) throw py::error_already_set();
    py::object nt = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(num_threads_.ptr()));
    if (!nt) throw py::error_already_set();
    const int threads = static_cast<int>(PyLong_AsLong(nt.ptr()));
    const FFFArgs a{reinterpret_cast<const float*>(data_ptr(x)),
                    reinterpret_cast<const float*>(ptrs_[0]),
                    reinterpret_cast<const float*>(ptrs_[1]),
                    reinterpret_cast<const float*>(ptrs_[2]),
                    reinterpret_cast<const float*>(ptrs_[3]),
                    reinterpret_cast<float*>(data_ptr(y.ptr())),
                    nullptr,
                    nullptr,
                    n,
                    d_,
                    depth_,
                    trees_};
    if (n > 0) {
      py::gil_scoped_release release;
      advise_huge_pages(a.y, n * d_ * static_cast<int64_t>(sizeof(float)));
      run_fff(a, threads);
    }
    return y;
  }

 private:
  // attribute and method names, interned once (a C-string lookup builds a str every call)
  struct Names {
    PyObject *dtype, *is_cpu, *requires_grad, *shape, *is_contiguous, *data_ptr;
  };
  static const Names& names() {
    static const Names n{PyUnicode_InternFromString("dtype"),
                         PyUnicode_InternFromString("is_cpu"),
                         PyUnicode_InternFromString("requires_grad"),
                         PyUnicode_InternFromString("shape"),
                         PyUnicode_InternFromString("is_contiguous"),
                         PyUnicode_InternFromString("data_ptr")};
    return n;
  }
  static uintptr_t data_ptr(PyObject* t) {
    PyObject* r = PyObject_CallMethodNoArgs(t, names().data_ptr);
    if (!r) throw py::error_already_set();
    const auto p = static_cast<uintptr_t>(PyLong_AsUnsignedLongLong(r));
    Py_DECREF(r);
    return p;
  }
  static bool attr_is(PyObject* o, PyObject* name, PyObject* want) {
    PyObject* v = PyObject_GetAttr(o, name);
    if (!v) throw py::error_already_set();
    const bool same = v == want;
    Py_DECREF(v);
    return same;
  }
  static bool call_is(PyObject* o, PyObject* name, PyObject* want) {
    PyObject* v = PyObject_CallMethodNoArgs(o, name);
    if (!v) throw py::error_already_set();
    const bool same = v == want;
    Py_DECREF(v);
    return same;
  }
  static bool returns(PyObject* fn, PyObject* want) {
    PyObject* v = PyObject_CallNoArgs(fn);
    if (!v) throw py::error_already_set();
    const bool same = v == want;
    Py_DECREF(v);
    return same;
  }

  py::dict params_;
  py::object weights_[4];
  py::str names_[4];  // the parameter names, as dict keys
  uintptr_t ptrs_[4] = {};
  int64_t d_;
  int depth_, trees_;
  py::object tensor_type_, float32_, empty_like_, grad_enabled_, num_threads_;
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
  py::class_<FFFEval>(m, "FFFEval")
      .def(py::init<py::dict, int64_t, int, int, py::object, py::object, py::object, py::object,
                    py::object>(),
           py::arg("params"), py::arg("d"), py::arg("depth"), py::arg("trees"),
           py::arg("tensor_type"), py::arg("float32"), py::arg("empty_like"),
           py::arg("grad_enabled"), py::arg("num_threads"))
      .def("__call__", &FFFEval::operator(), py::arg("x"),
           "y for a plain contiguous float32 CPU tensor x (..., d), or None (see bind_fff.cpp).");
  m.def("fff_advise_weights", &advise_weights, py::arg("ptr"), py::arg("bytes"),
        py::call_guard<py::gil_scoped_release>(),
        "Back the 2 MiB-aligned interior of [ptr, ptr+bytes) with huge pages, in place.");
});

}  // namespace
}  // namespace liteffn
