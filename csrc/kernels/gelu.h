// GELU, exact erf form: gelu(a) = a/2 * (1 + erf(a / sqrt 2)).
// gelu_exact is the scalar definition (libm erf). The SIMD kernels evaluate erf with
// Abramowitz & Stegun 7.1.26 -- erf(z) = 1 - t (c1 + t (c2 + ... + t c5)) exp(-z^2),
// t = 1 / (1 + p z), z >= 0, absolute error <= 1.5e-7 -- and exp by range reduction to
// [-ln2/2, ln2/2] and a degree-7 Taylor polynomial (relative error < 1e-8): a SIMD gelu is
// within 3e-7 |a| of the float64 value (libm's: 1e-7 |a|), far inside the kernels' tolerance
// (liteffn.testing); NaN stays NaN.
#pragma once
#include <cmath>

namespace liteffn {

inline float gelu_exact(float a) { return 0.5f * a * (1.0f + std::erf(a * 0.70710678118654752f)); }

namespace gelu_consts {
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kP = 0.3275911f;  // A&S 7.1.26
constexpr float kC1 = 0.254829592f, kC2 = -0.284496736f, kC3 = 1.421413741f;
constexpr float kC4 = -1.453152027f, kC5 = 1.061405429f;
constexpr float kExpMin = -87.0f;  // exp argument floor: 2^n stays a normal float
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln 2 = hi + lo
// 1/k! for k = 7 .. 2 (Horner from the top, then the 1 + r + ... terms)
constexpr float kE7 = 1.0f / 5040, kE6 = 1.0f / 720, kE5 = 1.0f / 120, kE4 = 1.0f / 24;
constexpr float kE3 = 1.0f / 6, kE2 = 0.5f;
}  // namespace gelu_consts

}  // namespace liteffn
