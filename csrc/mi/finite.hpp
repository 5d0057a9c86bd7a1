// Finiteness check: sorting and selection are undefined on NaN, so the core checks its
// inputs itself rather than trusting every caller to have done so.
#pragma once

#include <cmath>
#include <cstddef>

#include "mi/parallel.hpp"

namespace miprun::mi {

// Number of NaN or infinite values in v: (n,).
template <class T>
std::size_t count_non_finite(const T* v, std::size_t n) {
  std::size_t bad = 0;
  MIPRUN_OMP(parallel for reduction(+ : bad) schedule(static) if (n >= kParallelGrain))
  for (long long i = 0; i < static_cast<long long>(n); ++i) bad += !std::isfinite(v[i]);
  return bad;
}

}  // namespace miprun::mi
