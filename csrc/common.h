// Shared helpers for liteffn's torch-free kernels: ISA dispatch and thread counts.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pybind11 { class module_; }

namespace liteffn {

// Instruction-set levels a kernel may be compiled for, lowest first.
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

bool cpu_has_avx2_fma();          // the CPU (and OS) support AVX2 + FMA
bool cpu_has_avx512();            // ... and AVX-512 F, BW, VL and DQ
int64_t cpu_l2_cache_bytes();     // one core's L2 as the C library reports it; 0: unknown
Isa active_isa();                 // the level kernels use now
void set_active_isa(Isa isa);     // throws std::invalid_argument if the CPU lacks it
// A family without an AVX-512 variant runs its AVX2 code at level avx512 (the CPU has AVX2 too).
inline bool use_avx2() { return active_isa() >= Isa::avx2; }
inline bool use_avx512() { return active_isa() == Isa::avx512; }
const char* isa_name(Isa isa);

// Clamp a requested OpenMP thread count to [1, work items] so tiny batches stay serial.
inline int clamp_threads(int requested, int64_t work_items) {
  if (requested < 1) requested = 1;
  if (work_items < requested) requested = work_items < 1 ? 1 : static_cast<int>(work_items);
  return requested;
}

// Each bind_*.cpp registers its functions through a static Registrar, so adding a layer
// family never edits bindings.cpp.
using BindFn = std::function<void(pybind11::module_&)>;
std::vector<std::pair<std::string, BindFn>>& registry();
struct Registrar {
  Registrar(const char* name, BindFn fn) { registry().emplace_back(name, std::move(fn)); }
};

}  // namespace liteffn
