// Finiteness check: sorting and selection are undefined on NaN, so the core checks its
// inputs itself rather than trusting every caller to have done so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "mi/parallel.hpp"

namespace miprun::mi {

// Number of NaN or infinite values in v: (n,).
template <class T>
std::size_t count_non_finite(const T* v, std::size_t n) {
  // a value is NaN or infinite exactly when its exponent bits are all ones; testing the bits
  // as integers vectorises, where std::isfinite compiles to a scalar loop
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr U exponent = sizeof(T) == 4 ? U(0x7F800000u) : U(0x7FF0000000000000ull);
  std::size_t bad = 0;
  MIPRUN_OMP(parallel for reduction(+ : bad) schedule(static) if (n >= kParallelGrain))
  for (long long i = 0; i < static_cast<long long>(n); ++i) {
    U b;
    std::memcpy(&b, v + i, sizeof b);
    bad += (b & exponent) == exponent;
  }
  return bad;
}

}  // namespace miprun::mi
