// Bindings for the LookupFFN kernels (see kernels/lookup.h for layouts and semantics).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.h"
#include "eval_call.h"
#include "kernels/lookup.h"

namespace py = pybind11;

namespace liteffn {
namespace {

bool is_pow2(int64_t v) { return v >= 1 && (v & (v - 1)) == 0; }

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

void check_tables(int64_t h, int64_t tau, int64_t d, const char* who) {
  require(d >= 1 && h >= 1 && tau >= 1 && tau <= 12,
          std::string(who) + ": need d >= 1, h >= 1 and 1 <= tau <= 12");
}

// The weight arguments of the fused forward, validated once (liteffn.ops.lookup keeps the
// tensors alive): the eval fast path then passes only x, n, y, order and threads per call.
struct LookupPlan {
  LookupDims k;
  const float* wt = nullptr;
  const float* pbias = nullptr;
  const void* tables = nullptr;
  bool tables_bf16 = false;
  const float* bias = nullptr;

  LookupPlan(int64_t d, int64_t h, int64_t tau, bool bh4, int64_t D, int64_t R, int64_t b,
             uintptr_t wt_, uintptr_t pbias_, uintptr_t tables_, bool bf16, uintptr_t bias_) {
    check_tables(h, tau, d, "lookup_forward");
    k.d = d, k.h = h, k.tau = tau, k.P = h * tau, k.bh4 = bh4;
    if (bh4) {
      require(is_pow2(D) && D >= d && D < 2 * d + 1 && is_pow2(b) && D % b == 0 &&
                  R == (k.P + D - 1) / D,
              "lookup_forward: need D = next power of two >= d, b a power of two dividing D, "
              "R = ceil(h * tau / D)");
      k.D = D, k.R = R, k.b = b;
    }
    wt = reinterpret_cast<const float*>(wt_);
    pbias = reinterpret_cast<const float*>(pbias_);
    tables = reinterpret_cast<const void*>(tables_);
    tables_bf16 = bf16;
    bias = reinterpret_cast<const float*>(bias_);
  }

  // x (n, d) f32 -> y (n, d) f32.
  void run(uintptr_t x, int64_t n, uintptr_t y, int order, int threads) const {
    require(n >= 0 && order >= 0 && order <= 2, "lookup_forward: need n >= 0, order in 0..2");
    if (n == 0) return;
    const float* xp = reinterpret_cast<const float*>(x);
    float* yp = reinterpret_cast<float*>(y);
    if (use_avx512())
      lookup_forward_avx512(xp, n, k, wt, pbias, tables, tables_bf16, bias, yp, order, threads);
    else if (use_avx2())
      lookup_forward_avx2(xp, n, k, wt, pbias, tables, tables_bf16, bias, yp, order, threads);
    else lookup_forward_scalar(xp, n, k, wt, pbias, tables, tables_bf16, bias, yp, order, threads);
  }
};

// LookupFFN's eval call with the per-call checks in C (eval_call.h), built by the layer with
// its plan: eval(x) returns y, or None when x is not a plain input or a parameter the plan was
// packed from changed (other object, new storage, or an in-place update: the plan holds packed
// copies, so version counters are watched too); the layer then re-packs and rebuilds.
class LookupEval {
 public:
  // own: the layer's _parameters (tables, bias); proj: the projection's (weight, bias).
  LookupEval(py::object plan, py::dict own, py::dict proj, const std::string& proj_weight,
             TorchRefs torch_refs)
      : plan_obj_(std::move(plan)), torch_(std::move(torch_refs)) {
    plan_ = &plan_obj_.cast<const LookupPlan&>();
    params_.add(own, "tables", /*track_version=*/true);
    params_.add(own, "bias", true);
    params_.add(proj, proj_weight.c_str(), true);
    params_.add(proj, "bias", true);
  }

  py::object operator()(py::handle x) const {
    return eval_plain(x, torch_, plan_->k.d, params_, [this](uintptr_t xp, int64_t n,
                                                             uintptr_t yp, int threads) {
      plan_->run(xp, n, yp, 0, threads);
    });
  }

  bool current() const { return params_.unchanged(); }

 private:
  py::object plan_obj_;  // keeps the plan (and so plan_) alive
  const LookupPlan* plan_;
  TorchRefs torch_;
  WatchedParams params_;
};

// x (n, d) f32 -> y (n, d) f32; wt/pbias/tables/bias as in kernels/lookup.h.
void lookup_forward(uintptr_t x, int64_t n, int64_t d, int64_t h, int64_t tau, bool bh4,
                    int64_t D, int64_t R, int64_t b, uintptr_t wt, uintptr_t pbias,
                    uintptr_t tables, bool tables_bf16, uintptr_t bias, uintptr_t y, int order,
                    int threads) {
  LookupPlan(d, h, tau, bh4, D, R, b, wt, pbias, tables, tables_bf16, bias)
      .run(x, n, y, order, threads);
}

// codes (n, h) i32, scores (n, h), tables (h, 2^tau, d), y (n, d); f64 runs the scalar path.
void lookup_gather(uintptr_t codes, uintptr_t scores, uintptr_t tables, int64_t n, int64_t h,
                   int64_t tau, int64_t d, uintptr_t y, bool f64, int threads) {
  check_tables(h, tau, d, "lookup_gather");
  require(n >= 0, "lookup_gather: need n >= 0");
  if (n == 0) return;
  const int64_t rows = int64_t{1} << tau;
  const auto* c = reinterpret_cast<const int32_t*>(codes);
  if (f64) {
    lookup_gather_scalar<double>(c, reinterpret_cast<const double*>(scores),
                                 reinterpret_cast<const double*>(tables), n, h, rows, d,
                                 reinterpret_cast<double*>(y), threads);
  } else if (use_avx512()) {
    lookup_gather_avx512(c, reinterpret_cast<const float*>(scores),
                         reinterpret_cast<const float*>(tables), n, h, rows, d,
                         reinterpret_cast<float*>(y), threads);
  } else if (use_avx2()) {
    lookup_gather_avx2(c, reinterpret_cast<const float*>(scores),
                       reinterpret_cast<const float*>(tables), n, h, rows, d,
                       reinterpret_cast<float*>(y), threads);
  } else {
    lookup_gather_scalar<float>(c, reinterpret_cast<const float*>(scores),
                                reinterpret_cast<const float*>(tables), n, h, rows, d,
                                reinterpret_cast<float*>(y), threads);
  }
}

// codes (n, h) i32, scores (n, h) f32, packed tables (h, ceil(d/64), 2^tau, 64), y (n, d).
void lookup_gather_packed(uintptr_t codes, uintptr_t scores, uintptr_t packed, bool bf16,
                          int64_t n, int64_t h, int64_t tau, int64_t d, uintptr_t y, int threads) {
  check_tables(h, tau, d, "lookup_gather_packed");
  require(n >= 0, "lookup_gather_packed: need n >= 0");
  if (n == 0) return;
  LookupDims k;
  k.d = d, k.h = h, k.tau = tau, k.P = h * tau;
  const auto* c = reinterpret_cast<const int32_t*>(codes);
  const auto* s = reinterpret_cast<const float*>(scores);
  const void* p = reinterpret_cast<const void*>(packed);
  auto* yp = reinterpret_cast<float*>(y);
  if (use_avx512()) lookup_gather_packed_avx512(c, s, p, bf16, n, k, yp, threads);
  else if (use_avx2()) lookup_gather_packed_avx2(c, s, p, bf16, n, k, yp, threads);
  else lookup_gather_packed_scalar(c, s, p, bf16, n, k, yp, threads);
}

// tables (h, 2^tau, d) f32 -> dst (h, ceil(d/64), 2^tau, 64) f32.
void lookup_pack(uintptr_t tables, int64_t h, int64_t tau, int64_t d, uintptr_t dst, int threads) {
  check_tables(h, tau, d, "lookup_pack");
  lookup_pack_tables(reinterpret_cast<const float*>(tables), h, int64_t{1} << tau, d,
                     reinterpret_cast<float*>(dst), threads);
}

// g (n, d); grad_scores (n, h) or 0; grad_rows (h * 2^tau, d) or (U, d) with row_index (n, h)
// int64, or 0 (see kernels/lookup.h).
void lookup_gather_backward(uintptr_t g, uintptr_t codes, uintptr_t scores, uintptr_t tables,
                            int64_t n, int64_t h, int64_t tau, int64_t d, uintptr_t grad_scores,
                            uintptr_t grad_rows, uintptr_t row_index, bool f64, int threads) {
  check_tables(h, tau, d, "lookup_gather_backward");
  require(n >= 0, "lookup_gather_backward: need n >= 0");
  const int64_t rows = int64_t{1} << tau;
  const auto* c = reinterpret_cast<const int32_t*>(codes);
  const auto* ri = reinterpret_cast<const int64_t*>(row_index);
  if (f64) {
    lookup_gather_backward_scalar<double>(
        reinterpret_cast<const double*>(g), c, reinterpret_cast<const double*>(scores),
        reinterpret_cast<const double*>(tables), n, h, rows, d,
        reinterpret_cast<double*>(grad_scores), reinterpret_cast<double*>(grad_rows), ri, threads);
  } else if (use_avx512()) {
    lookup_gather_backward_avx512(
        reinterpret_cast<const float*>(g), c, reinterpret_cast<const float*>(scores),
        reinterpret_cast<const float*>(tables), n, h, rows, d,
        reinterpret_cast<float*>(grad_scores), reinterpret_cast<float*>(grad_rows), ri, threads);
  } else if (use_avx2()) {
    lookup_gather_backward_avx2(
        reinterpret_cast<const float*>(g), c, reinterpret_cast<const float*>(scores),
        reinterpret_cast<const float*>(tables), n, h, rows, d,
        reinterpret_cast<float*>(grad_scores), reinterpret_cast<float*>(grad_rows), ri, threads);
  } else {
    lookup_gather_backward_scalar<float>(
        reinterpret_cast<const float*>(g), c, reinterpret_cast<const float*>(scores),
        reinterpret_cast<const float*>(tables), n, h, rows, d,
        reinterpret_cast<float*>(grad_scores), reinterpret_cast<float*>(grad_rows), ri, threads);
  }
}

const Registrar reg("lookup", [](py::module_& m) {
  py::class_<LookupPlan>(m, "LookupPlan",
                         "The fused forward's checked weight arguments (see lookup_forward).")
      .def(py::init<int64_t, int64_t, int64_t, bool, int64_t, int64_t, int64_t, uintptr_t,
                    uintptr_t, uintptr_t, bool, uintptr_t>(),
           py::arg("d"), py::arg("h"), py::arg("tau"), py::arg("bh4"), py::arg("D"),
           py::arg("R"), py::arg("b"), py::arg("wt"), py::arg("pbias"), py::arg("tables"),
           py::arg("tables_bf16"), py::arg("bias"))
      .def_property_readonly("d", [](const LookupPlan& p) { return p.k.d; })
      .def("run", &LookupPlan::run, py::arg("x"), py::arg("n"), py::arg("y"), py::arg("order"),
           py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
           "y (n, d) = the fused LookupFFN forward of x (n, d).");
  auto eval_cls = py::class_<LookupEval>(m, "LookupEval");
  register_eval_caller(eval_cls.ptr(), &call_eval<LookupEval>);
  eval_cls
      .def(py::init<py::object, py::dict, py::dict, const std::string&, TorchRefs>(),
           py::arg("plan"), py::arg("own"), py::arg("proj"), py::arg("proj_weight"),
           py::arg("torch_refs"))
      .def("__call__", &LookupEval::operator(), py::arg("x"),
           "y for a plain contiguous float32 CPU tensor x (..., d), or None (bind_lookup.cpp).")
      .def("current", &LookupEval::current,
           "Whether the parameters are still those the plan was packed from.");
  m.def("lookup_forward", &lookup_forward, py::arg("x"), py::arg("n"), py::arg("d"), py::arg("h"),
        py::arg("tau"), py::arg("bh4"), py::arg("D"), py::arg("R"), py::arg("b"), py::arg("wt"),
        py::arg("pbias"), py::arg("tables"), py::arg("tables_bf16"), py::arg("bias"),
        py::arg("y"), py::arg("order"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>(),
        "Fused LookupFFN inference: projection, codes and scores, gather-accumulate.");
  m.def("lookup_gather", &lookup_gather, py::arg("codes"), py::arg("scores"), py::arg("tables"),
        py::arg("n"), py::arg("h"), py::arg("tau"), py::arg("d"), py::arg("y"), py::arg("f64"),
        py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
        "y = sum_k scores[:, k] * tables[k, codes[:, k]] (training forward of the gather).");
  m.def("lookup_gather_packed", &lookup_gather_packed, py::arg("codes"), py::arg("scores"),
        py::arg("packed"), py::arg("bf16"), py::arg("n"), py::arg("h"), py::arg("tau"),
        py::arg("d"), py::arg("y"), py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
        "The training gather from chunk-major packed tables (table-major loop, big batches).");
  m.def(
      "lookup_table_major_shape",
      [] {
        const TableMajorShape s = lookup_table_major_shape();
        return py::make_tuple(s.group, s.tile, s.ahead);
      },
      "(group, tile, ahead) of the table-major gather now in use (kernels/lookup.h).");
  m.def("lookup_table_major_shape_overridden", &lookup_table_major_shape_overridden,
        "Whether a set_lookup_table_major_shape override (not the default) is in force.");
  m.def("set_lookup_table_major_shape", &set_lookup_table_major_shape, py::arg("group"),
        py::arg("tile"), py::arg("ahead"),
        "Process-wide table-major gather shape; (0, 0, 0) restores the default (tests, tuning).");
  m.def("lookup_pack", &lookup_pack, py::arg("tables"), py::arg("h"), py::arg("tau"),
        py::arg("d"), py::arg("dst"), py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
        "Copy (h, 2^tau, d) float32 tables into the chunk-major packed layout.");
  m.def("lookup_gather_backward", &lookup_gather_backward, py::arg("g"), py::arg("codes"),
        py::arg("scores"), py::arg("tables"), py::arg("n"), py::arg("h"), py::arg("tau"),
        py::arg("d"), py::arg("grad_scores"), py::arg("grad_rows"), py::arg("row_index"),
        py::arg("f64"), py::arg("threads"), py::call_guard<py::gil_scoped_release>(),
        "Score gradients (dots) and deterministic table-row gradients (scatter-add).");
});

}  // namespace
}  // namespace liteffn
