// Bindings for LUTFFN inference: a LutModel owns a packed copy of the network (thresholds,
// int32 mappings, one uint64 word per LUT, the affine table), validated once at construction,
// so each forward call only passes the input and output addresses.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "eval_call.h"
#include "kernels/lut.h"

namespace py = pybind11;

namespace liteffn {
namespace {

class LutModel {
 public:
  // thresholds: (d, levels) f32; affine: (d, g+1) f32; mappings[k]: (widths[k], n) int64;
  // tables[k]: (widths[k], 2^n) f32 (entry a is packed as bit a = [table[a] > 0]).
  LutModel(int64_t d, int64_t levels, int64_t n, int64_t g, uintptr_t thresholds, uintptr_t affine,
           std::vector<int64_t> widths, std::vector<uintptr_t> mappings,
           std::vector<uintptr_t> tables)
      : widths_(std::move(widths)) {
    if (d < 1 || levels < 1 || g < 1 || n < 1 || n > 6)
      throw std::invalid_argument("LutModel: need d, levels, g >= 1 and 1 <= n <= 6");
    const int64_t L = static_cast<int64_t>(widths_.size());
    if (L < 1 || static_cast<int64_t>(mappings.size()) != L ||
        static_cast<int64_t>(tables.size()) != L)
      throw std::invalid_argument("LutModel: need one width, mapping and table per layer (>= 1)");
    if (widths_.back() != d * g)
      throw std::invalid_argument("LutModel: the last layer must have d*g = " +
                                  std::to_string(d * g) + " LUTs, got " +
                                  std::to_string(widths_.back()));
    const float* thr = reinterpret_cast<const float*>(thresholds);
    thresholds_.assign(thr, thr + d * levels);
    const float* aff = reinterpret_cast<const float*>(affine);
    affine_.assign(aff, aff + d * (g + 1));
    int64_t in_width = d * levels, max_width = in_width;
    const int64_t size = int64_t{1} << n;
    mapping_.resize(L);
    tables_.resize(L);
    for (int64_t k = 0; k < L; ++k) {
      const int64_t w = widths_[k];
      if (w < 1) throw std::invalid_argument("LutModel: layer widths must be >= 1");
      if (in_width > INT32_MAX) throw std::invalid_argument("LutModel: layer too wide");
      const int64_t* m = reinterpret_cast<const int64_t*>(mappings[k]);
      mapping_[k].resize(w * n);
      for (int64_t s = 0; s < w * n; ++s) {
        if (m[s] < 0 || m[s] >= in_width)
          throw std::invalid_argument("LutModel: layer " + std::to_string(k) +
                                      " mapping entry " + std::to_string(m[s]) +
                                      " outside [0, " + std::to_string(in_width) + ")");
        mapping_[k][s] = static_cast<int32_t>(m[s]);
      }
      const float* t = reinterpret_cast<const float*>(tables[k]);
      tables_[k].assign(w, 0);
      for (int64_t j = 0; j < w; ++j)
        for (int64_t a = 0; a < size; ++a)
          tables_[k][j] |= static_cast<uint64_t>(t[j * size + a] > 0.0f) << a;
      in_width = w;
      if (w > max_width) max_width = w;
    }
    for (int64_t k = 0; k < L; ++k) {
      map_ptrs_.push_back(mapping_[k].data());
      table_ptrs_.push_back(tables_[k].data());
    }
    net_.d = d;
    net_.levels = levels;
    net_.n = n;
    net_.g = g;
    net_.num_layers = L;
    net_.thresholds = thresholds_.data();
    net_.affine = affine_.data();
    net_.widths = widths_.data();
    net_.mapping = map_ptrs_.data();
    net_.tables = table_ptrs_.data();
    net_.max_width = max_width;
  }

  // x: (tokens, d) f32 contiguous; y: (tokens, d) f32 contiguous, written.
  void forward(uintptr_t x, int64_t tokens, uintptr_t y, int threads) const {
    if (tokens < 0) throw std::invalid_argument("LutModel.forward: tokens must be >= 0");
    if (tokens == 0) return;
    const float* xp = reinterpret_cast<const float*>(x);
    float* yp = reinterpret_cast<float*>(y);
    if (use_avx512()) lut_forward_avx512(net_, xp, tokens, yp, threads);
    else if (use_avx2()) lut_forward_avx2(net_, xp, tokens, yp, threads);
    else lut_forward_scalar(net_, xp, tokens, yp, threads);
  }

  // Packed table words of layer k (for tests and inspection).
  std::vector<uint64_t> table_words(int64_t k) const {
    if (k < 0 || k >= net_.num_layers) throw std::out_of_range("LutModel: no such layer");
    return tables_[k];
  }

 private:
  std::vector<int64_t> widths_;
  std::vector<float> thresholds_, affine_;
  std::vector<std::vector<int32_t>> mapping_;
  std::vector<std::vector<uint64_t>> tables_;
  std::vector<const int32_t*> map_ptrs_;
  std::vector<const uint64_t*> table_ptrs_;
  LutNet net_;
};

// LUTFFN's eval call with the per-call checks in C (eval_call.h), built by the layer with its
// packed model: eval(x) returns y, or None when x is not a plain input or a tensor the model
// was packed from changed (other object, new storage or an in-place update: the model holds
// packed copies, so version counters are watched); the layer then re-packs and rebuilds.
class LutEval {
 public:
  // watched: (dict, name) pairs -- the layer's and its LUT layers' _parameters / _buffers
  // entries the model was packed from.
  LutEval(py::object model, int64_t d, const py::list& watched, TorchRefs torch_refs)
      : model_obj_(std::move(model)), d_(d), torch_(std::move(torch_refs)) {
    model_ = &model_obj_.cast<const LutModel&>();
    for (const py::handle pair : watched) {
      const py::tuple t = py::reinterpret_borrow<py::tuple>(pair);
      params_.add(t[0].cast<py::dict>(), t[1].cast<std::string>().c_str(), true);
    }
  }

  py::object operator()(py::handle x) const {
    return eval_plain(x, torch_, d_, params_, [this](uintptr_t xp, int64_t n, uintptr_t yp,
                                                     int threads) {
      model_->forward(xp, n, yp, threads);
    });
  }

  bool current() const { return params_.unchanged(); }

 private:
  py::object model_obj_;  // keeps the model (and so model_) alive
  const LutModel* model_;
  int64_t d_;
  TorchRefs torch_;
  WatchedParams params_;
};

const Registrar reg("lut", [](py::module_& m) {
  py::class_<LutModel>(m, "LutModel",
                       "A packed LUTFFN network (see csrc/kernels/lut.h for the layout).")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, uintptr_t, uintptr_t,
                    std::vector<int64_t>, std::vector<uintptr_t>, std::vector<uintptr_t>>(),
           py::arg("d"), py::arg("levels"), py::arg("n"), py::arg("g"), py::arg("thresholds"),
           py::arg("affine"), py::arg("widths"), py::arg("mappings"), py::arg("tables"))
      .def("forward", &LutModel::forward, py::arg("x"), py::arg("tokens"), py::arg("y"),
           py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
           "y (tokens, d) = LUTFFN(x (tokens, d)); float32, contiguous.")
      .def("table_words", &LutModel::table_words, py::arg("layer"));
  auto eval_cls = py::class_<LutEval>(m, "LutEval");
  register_eval_caller(eval_cls.ptr(), &call_eval<LutEval>);
  eval_cls
      .def(py::init<py::object, int64_t, const py::list&, TorchRefs>(), py::arg("model"),
           py::arg("d"), py::arg("watched"), py::arg("torch_refs"))
      .def("__call__", &LutEval::operator(), py::arg("x"),
           "y for a plain contiguous float32 CPU tensor x (..., d), or None (bind_lut.cpp).")
      .def("current", &LutEval::current,
           "Whether the tensors are still those the model was packed from.");
});

}  // namespace
}  // namespace liteffn
