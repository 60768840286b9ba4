// The per-call checks of a layer's native eval call (FFFEval, LookupEval, LutEval), done
// through the CPython API: in Python the same checks cost a few µs per call (more after a
// kernel has flushed the caches), as much as a batch-1 kernel. No PyTorch headers: torch's
// objects (the Tensor type, float32, empty_like, ...) are handed in from Python once, and
// tensors are read through their Python attributes.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace liteffn {
namespace py = pybind11;

// torch's objects an eval call needs, passed from Python when the call object is built;
// empty_large(shape) allocates outputs of large_bytes and more (liteffn.ops._outbuf's pool).
struct TorchRefs {
  py::object tensor_type, float32, empty_like, grad_enabled, num_threads, empty_large;
  int64_t large_bytes;
};

namespace evalcall {

// attribute and method names, interned once (a C-string lookup builds a str every call)
struct Names {
  PyObject *dtype, *is_cpu, *requires_grad, *shape, *is_contiguous, *data_ptr, *version;
};

inline const Names& names() {
  static const Names n{PyUnicode_InternFromString("dtype"),
                       PyUnicode_InternFromString("is_cpu"),
                       PyUnicode_InternFromString("requires_grad"),
                       PyUnicode_InternFromString("shape"),
                       PyUnicode_InternFromString("is_contiguous"),
                       PyUnicode_InternFromString("data_ptr"),
                       PyUnicode_InternFromString("_version")};
  return n;
}

// o.<name> is want (identity); a failed lookup raises.
inline bool attr_is(PyObject* o, PyObject* name, PyObject* want) {
  PyObject* v = PyObject_GetAttr(o, name);
  if (!v) throw py::error_already_set();
  const bool same = v == want;
  Py_DECREF(v);
  return same;
}

// o.<name>() is want.
inline bool call_is(PyObject* o, PyObject* name, PyObject* want) {
  PyObject* v = PyObject_CallMethodNoArgs(o, name);
  if (!v) throw py::error_already_set();
  const bool same = v == want;
  Py_DECREF(v);
  return same;
}

inline uintptr_t data_ptr(PyObject* t) {
  PyObject* r = PyObject_CallMethodNoArgs(t, names().data_ptr);
  if (!r) throw py::error_already_set();
  const auto p = static_cast<uintptr_t>(PyLong_AsUnsignedLongLong(r));
  Py_DECREF(r);
  return p;
}

// t._version, or -1 for a tensor without a version counter (an inference-mode tensor).
inline long long version(PyObject* t) {
  PyObject* r = PyObject_GetAttr(t, names().version);
  if (!r) {
    PyErr_Clear();
    return -1;
  }
  const long long v = PyLong_AsLongLong(r);
  Py_DECREF(r);
  return v;
}

}  // namespace evalcall

// x is a plain input for a (..., d) -> (..., d) kernel: exactly torch.Tensor, float32, on the
// CPU, needing no grad, at least 1-D with last dimension d, contiguous. Sets *n = numel / d.
inline bool plain_input(PyObject* x, const TorchRefs& t, int64_t d, int64_t* n) {
  using namespace evalcall;
  const Names& s = names();
  if (reinterpret_cast<PyObject*>(Py_TYPE(x)) != t.tensor_type.ptr()) return false;
  if (!attr_is(x, s.dtype, t.float32.ptr()) || !attr_is(x, s.is_cpu, Py_True)) return false;
  if (attr_is(x, s.requires_grad, Py_True)) {
    PyObject* g = PyObject_CallNoArgs(t.grad_enabled.ptr());
    if (!g) throw py::error_already_set();
    const bool enabled = g == Py_True;
    Py_DECREF(g);
    if (enabled) return false;
  }
  py::object shape = py::reinterpret_steal<py::object>(PyObject_GetAttr(x, s.shape));  // (.., d)
  if (!shape) throw py::error_already_set();
  const Py_ssize_t dims = PyTuple_Size(shape.ptr());
  if (dims < 1 || PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), dims - 1)) != d) return false;
  int64_t count = 1;
  for (Py_ssize_t i = 0; i + 1 < dims; ++i)
    count *= PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), i));
  if (!call_is(x, s.is_contiguous, Py_True)) return false;
  *n = count;
  return true;
}

// A new float32 tensor of x's shape, for n * d outputs: torch.empty_like(x), or from the
// output pool when large (a fresh multi-MiB output costs more in page faults than a kernel).
inline py::object new_output(PyObject* x, const TorchRefs& t, int64_t n, int64_t d) {
  PyObject* y;
  if (n * d * static_cast<int64_t>(sizeof(float)) >= t.large_bytes) {
    py::object shape =
        py::reinterpret_steal<py::object>(PyObject_GetAttr(x, evalcall::names().shape));
    if (!shape) throw py::error_already_set();
    y = PyObject_CallOneArg(t.empty_large.ptr(), shape.ptr());
  } else {
    y = PyObject_CallOneArg(t.empty_like.ptr(), x);
  }
  if (!y) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(y);
}

inline int torch_threads(const TorchRefs& t) {
  py::object nt = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(t.num_threads.ptr()));
  if (!nt) throw py::error_already_set();
  return static_cast<int>(PyLong_AsLong(nt.ptr()));
}

// The parameters a native call was built from: each must still be the same object under its
// name in its module's _parameters dict, with the same data pointer (new storage: .to(),
// .data = ...) and, when tracked, the same version counter (in-place updates: an optimizer
// step, load_state_dict), else the caller re-validates and rebuilds.
class WatchedParams {
 public:
  // Watch params[name]; with track_version also its _version. A None entry (an absent
  // optional parameter) must stay None.
  void add(const py::dict& params, const char* name, bool track_version) {
    Entry e{params, py::str(name), py::none(), 0, -1, track_version};
    PyObject* p = PyDict_GetItem(params.ptr(), e.name.ptr());  // borrowed
    if (!p) throw std::invalid_argument(std::string("no parameter ") + name);
    e.param = py::reinterpret_borrow<py::object>(p);
    if (p != Py_None) {
      e.ptr = evalcall::data_ptr(p);
      if (track_version) e.version = evalcall::version(p);
    }
    entries_.push_back(std::move(e));
  }

  uintptr_t ptr(size_t i) const { return entries_[i].ptr; }

  bool unchanged() const {
    for (const Entry& e : entries_) {
      PyObject* p = PyDict_GetItem(e.dict.ptr(), e.name.ptr());  // borrowed
      if (p != e.param.ptr()) return false;
      if (p == Py_None) continue;
      if (evalcall::data_ptr(p) != e.ptr) return false;
      if (e.track_version && evalcall::version(p) != e.version) return false;
    }
    return true;
  }

 private:
  struct Entry {
    py::dict dict;
    py::str name;
    py::object param;
    uintptr_t ptr;
    long long version;
    bool track_version;
  };
  std::vector<Entry> entries_;
};

// The body of every eval call: for a plain x (plain_input) while the watched parameters are
// unchanged, a new output y and run(x address, n, y address, threads) with the GIL released
// (not called for n == 0); else None, and the layer takes its checked path.
template <class Run>
py::object eval_plain(py::handle xh, const TorchRefs& t, int64_t d, const WatchedParams& params,
                      Run&& run) {
  PyObject* x = xh.ptr();
  int64_t n = 0;
  if (!plain_input(x, t, d, &n) || !params.unchanged()) return py::none();
  py::object y = new_output(x, t, n, d);
  const int threads = torch_threads(t);
  const uintptr_t xp = evalcall::data_ptr(x), yp = evalcall::data_ptr(y.ptr());
  if (n > 0) {
    py::gil_scoped_release release;
    run(xp, n, yp, threads);
  }
  return y;
}

// The C __call__ (bind_module_call.cpp) calls a layer's native eval call without pybind11's
// dispatch when the eval call's class registered a caller for its Python type here (each
// bind_*.cpp does, for its eval class). A caller returns a new reference, or nullptr with a
// Python error set.
using EvalCaller = PyObject* (*)(PyObject* self, PyObject* x);
void register_eval_caller(PyObject* type, EvalCaller caller);
EvalCaller find_eval_caller(PyObject* type);  // nullptr when none is registered

// E::operator()(py::handle) called on the E behind self, with C++ exceptions turned into
// Python ones as pybind11 would (std::invalid_argument: ValueError).
template <class E>
PyObject* call_eval(PyObject* self, PyObject* x) {
  try {
    const E& e = py::handle(self).cast<const E&>();
    return e(py::handle(x)).release().ptr();
  } catch (py::error_already_set& err) {
    err.restore();
  } catch (const std::invalid_argument& err) {
    PyErr_SetString(PyExc_ValueError, err.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& err) {
    PyErr_SetString(PyExc_RuntimeError, err.what());
  }
  return nullptr;
}

}  // namespace liteffn
