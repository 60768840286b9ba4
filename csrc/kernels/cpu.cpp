// CPU feature detection and the process-wide ISA choice (env LITEFFN_ISA=scalar|avx2|auto).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common.h"

namespace liteffn {
namespace {

Isa best_isa() { return cpu_has_avx2_fma() ? Isa::avx2 : Isa::scalar; }

Isa initial_isa() {
  const char* env = std::getenv("LITEFFN_ISA");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return best_isa();
  if (std::strcmp(env, "scalar") == 0) return Isa::scalar;
  if (std::strcmp(env, "avx2") == 0 && cpu_has_avx2_fma()) return Isa::avx2;
  return best_isa();  // unknown or unsupported request: the Python loader warns about it
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

Isa active_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (isa == Isa::avx2 && !cpu_has_avx2_fma())
    throw std::invalid_argument("ISA 'avx2' requested but this CPU lacks AVX2+FMA");
  isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) { return isa == Isa::avx2 ? "avx2" : "scalar"; }

std::vector<std::pair<std::string, BindFn>>& registry() {
  static std::vector<std::pair<std::string, BindFn>> fns;
  return fns;
}

}  // namespace liteffn
