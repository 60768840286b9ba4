// NativeEvalCall.__call__ (liteffn.layers.base) written against the CPython API.
//
// A batch-1 eval call spent a few µs in Python frames before its kernel started: the
// mixin's __call__ and the layer's _fast_eval, each cold after a kernel has streamed its
// weights through L2. This is the same dispatch as the Python mixin, as a method descriptor
// of the class: an eval call with one positional argument, no hooks (the module's or
// nn.Module's global ones), no compiled call and no JIT tracing goes to the layer's cached
// native eval call (its __dict__["_eval_call"], an FFFEval, LookupEval or LutEval); when that
// is missing or returns None (first call, changed weights, an unusual x), or for any other call,
// to nn.Module.__call__ (looked up at call time, so torch.fx's patching of it is honoured),
// whose forward rebuilds the eval call or takes the checked path.
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "common.h"
#include "eval_call.h"

namespace py = pybind11;

namespace liteffn {

namespace {
struct EvalCallers {
  PyObject* type[4] = {};
  EvalCaller caller[4] = {};
};
EvalCallers callers;  // filled at module init, under the GIL
}  // namespace

void register_eval_caller(PyObject* type, EvalCaller caller) {
  for (int i = 0; i < 4; ++i)
    if (!callers.type[i] || callers.type[i] == type) {
      callers.type[i] = type, callers.caller[i] = caller;
      return;
    }
  throw std::logic_error("register_eval_caller: more than 4 eval classes");
}

EvalCaller find_eval_caller(PyObject* type) {
  for (int i = 0; i < 4 && callers.type[i]; ++i)
    if (callers.type[i] == type) return callers.caller[i];
  return nullptr;
}

namespace {

struct ModuleCallRefs {
  PyObject* module_type = nullptr;    // torch.nn.Module
  PyObject* global_hooks = nullptr;   // tuple of nn.Module's global hook dicts
  PyObject* tracing_state = nullptr;  // torch._C._get_tracing_state
  // interned names
  PyObject *training, *call, *eval_call, *compiled;
  PyObject* hook_names[4];
};

ModuleCallRefs refs;  // set once by install_module_call; lives for the process

// 1 when the module (whose __dict__ is dict) may take the fast path, 0 when it must go
// through nn.Module.__call__, -1 with an exception set.
int fast_path_allowed(PyObject* self, PyObject* dict) {
  PyObject* training = PyDict_GetItemWithError(dict, refs.training);  // borrowed
  if (training != Py_False) return PyErr_Occurred() ? -1 : 0;
  for (PyObject* name : refs.hook_names) {
    PyObject* hooks = PyDict_GetItemWithError(dict, name);  // borrowed
    if (!hooks) return PyErr_Occurred() ? -1 : 0;
    const int busy = PyObject_IsTrue(hooks);
    if (busy != 0) return busy < 0 ? -1 : 0;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(refs.global_hooks);
  for (Py_ssize_t i = 0; i < n; ++i) {
    const int busy = PyObject_IsTrue(PyTuple_GET_ITEM(refs.global_hooks, i));
    if (busy != 0) return busy < 0 ? -1 : 0;
  }
  PyObject* compiled = PyObject_GetAttr(self, refs.compiled);
  if (!compiled) return -1;
  const bool plain = compiled == Py_None;
  Py_DECREF(compiled);
  if (!plain) return 0;
  PyObject* tracing = PyObject_CallNoArgs(refs.tracing_state);
  if (!tracing) return -1;
  const int traced = PyObject_IsTrue(tracing);
  Py_DECREF(tracing);
  if (traced < 0) return -1;
  return traced ? 0 : 1;
}

// y, or Py_None (a new reference) when the fast path declines, or nullptr on an error.
PyObject* try_fast(PyObject* self, PyObject* x) {
  PyObject* dict = PyObject_GenericGetDict(self, nullptr);  // new reference
  if (!dict) return nullptr;
  PyObject* result = nullptr;
  const int allowed = fast_path_allowed(self, dict);
  if (allowed < 0) goto done;
  if (allowed == 0) {
    result = Py_NewRef(Py_None);
    goto done;
  }
  {
    PyObject* eval = PyDict_GetItemWithError(dict, refs.eval_call);  // borrowed
    if (!eval && PyErr_Occurred()) goto done;
    if (!eval || eval == Py_None) {  // no cached call yet: forward builds it
      result = Py_NewRef(Py_None);
      goto done;
    }
    const EvalCaller call = find_eval_caller(reinterpret_cast<PyObject*>(Py_TYPE(eval)));
    result = call ? call(eval, x) : PyObject_CallOneArg(eval, x);  // y, None or an error
  }
done:
  Py_DECREF(dict);
  return result;
}

// __call__(self, *args, **kwargs), as a METH_FASTCALL | METH_KEYWORDS method.
PyObject* module_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs == 1 && nkw == 0) {
    PyObject* y = try_fast(self, args[0]);
    if (y != Py_None) return y;  // y, or an error
    Py_DECREF(y);
  }
  PyObject* call = PyObject_GetAttr(refs.module_type, refs.call);  // nn.Module.__call__
  if (!call) return nullptr;
  // (self, *args, *kwvalues): vectorcall's layout with self in front
  const Py_ssize_t total = 1 + nargs + nkw;
  PyObject* small[8];
  PyObject** full = total <= 8 ? small : PyMem_New(PyObject*, total);
  if (!full) {
    Py_DECREF(call);
    return PyErr_NoMemory();
  }
  full[0] = self;
  for (Py_ssize_t i = 0; i < nargs + nkw; ++i) full[1 + i] = args[i];
  PyObject* y = PyObject_Vectorcall(call, full, 1 + nargs, kwnames);
  if (full != small) PyMem_Free(full);
  Py_DECREF(call);
  return y;
}

PyMethodDef module_call_def = {
    "__call__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(module_call)),
    METH_FASTCALL | METH_KEYWORDS,
    "NativeEvalCall.__call__: an eval call goes to the layer's native eval call when no hooks, "
    "compilation or tracing apply, else to nn.Module.__call__ (bind_module_call.cpp)."};

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

// Make cls.__call__ the C dispatch above (a method descriptor: its self must be a cls; cls is
// the mixin, mixed into nn.Module subclasses). global_hooks is the tuple of nn.Module's global
// hook dicts (mutated in place by torch, never rebound).
void install_module_call(py::type cls, py::type module_type, py::tuple global_hooks,
                         py::object tracing_state) {
  for (py::handle h : global_hooks)
    if (!PyDict_Check(h.ptr()))
      throw std::invalid_argument("install_module_call: global_hooks must be dicts");
  if (!refs.module_type) {
    refs.training = intern("training"), refs.call = intern("__call__");
    refs.eval_call = intern("_eval_call");
    refs.compiled = intern("_compiled_call_impl");
    const char* hooks[4] = {"_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                            "_backward_pre_hooks"};
    for (int i = 0; i < 4; ++i) refs.hook_names[i] = intern(hooks[i]);
  }
  Py_XSETREF(refs.module_type, Py_NewRef(module_type.ptr()));
  Py_XSETREF(refs.global_hooks, Py_NewRef(global_hooks.ptr()));
  Py_XSETREF(refs.tracing_state, Py_NewRef(tracing_state.ptr()));
  PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), &module_call_def);
  if (!descr) throw py::error_already_set();
  const int rc = PyObject_SetAttr(cls.ptr(), refs.call, descr);
  Py_DECREF(descr);
  if (rc < 0) throw py::error_already_set();
}

const Registrar reg("module_call", [](py::module_& m) {
  m.def("install_module_call", &install_module_call, py::arg("cls"), py::arg("module_type"),
        py::arg("global_hooks"), py::arg("tracing_state"),
        "Make cls.__call__ the native eval dispatch (see bind_module_call.cpp).");
});

}  // namespace
}  // namespace liteffn
