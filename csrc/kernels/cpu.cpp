// CPU feature detection and the process-wide ISA choice (env LITEFFN_ISA=scalar|avx2|avx512|auto).
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common.h"

namespace liteffn {
namespace {

Isa best_isa() {
  if (cpu_has_avx512()) return Isa::avx512;
  return cpu_has_avx2_fma() ? Isa::avx2 : Isa::scalar;
}

Isa initial_isa() {
  const char* env = std::getenv("LITEFFN_ISA");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return best_isa();
  if (std::strcmp(env, "scalar") == 0) return Isa::scalar;
  if (std::strcmp(env, "avx2") == 0 && cpu_has_avx2_fma()) return Isa::avx2;
  if (std::strcmp(env, "avx512") == 0 && cpu_has_avx512()) return Isa::avx512;
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

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  // __builtin_cpu_supports also checks that the OS saves the ZMM state (XCR0).
  static const bool has = cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
#else
  return false;
#endif
}

int64_t cpu_l2_cache_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  static const int64_t bytes = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc: from cpuid; 0 or -1 when unknown
    return v > 0 ? static_cast<int64_t>(v) : int64_t{0};
  }();
  return bytes;
#else
  return 0;
#endif
}

Isa active_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (isa == Isa::avx2 && !cpu_has_avx2_fma())
    throw std::invalid_argument("ISA 'avx2' requested but this CPU lacks AVX2+FMA");
  if (isa == Isa::avx512 && !cpu_has_avx512())
    throw std::invalid_argument("ISA 'avx512' requested but this CPU lacks AVX-512 F/BW/VL/DQ");
  isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "scalar";
  }
}

std::vector<std::pair<std::string, BindFn>>& registry() {
  static std::vector<std::pair<std::string, BindFn>> fns;
  return fns;
}

}  // namespace liteffn
