// <immintrin.h> for the AVX-512 translation units. GCC 12's AVX-512 intrinsic headers trip
// -W(maybe-)uninitialized on their own "undefined" pass-through operands wherever an intrinsic
// is inlined (GCC PR 105593); the warnings are silenced for those header lines only, so the
// project's own code keeps them.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
