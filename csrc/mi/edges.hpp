// Bin edges for the histogram estimator.
//
// Quantile edges are the order statistics sorted(v)[floor(j N / bins)], j = 1..bins-1;
// uniform edges are min + (max - min) j / bins. Both are float64, whatever the input type
// (float32 -> float64 is exact, so the order statistics are the same values).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "mi/float_keys.hpp"

namespace miprun::mi {

enum class Binning { quantile, uniform };

// "quantile" or "uniform"; anything else throws std::invalid_argument.
Binning parse_binning(const std::string& name);

// Throws std::invalid_argument unless 2 <= bins <= 256 (codes are uint8).
void check_bins(int bins);

// Scratch space one thread reuses across columns.
template <class T>
struct EdgeScratch {
  std::vector<typename FloatKey<T>::U> keys, tmp;
};

// Edges of v: (n,) into out: (bins-1,); v is not modified. Quantile edges come from a
// radix sort of the keys of v (a radix selection above 2^18 values), not a comparison sort.
template <class T>
void edges_of(const T* v, std::size_t n, int bins, Binning binning, double* out, EdgeScratch<T>& scratch);

template <class T>
void edges_of(const T* v, std::size_t n, int bins, Binning binning, double* out) {
  EdgeScratch<T> scratch;
  edges_of(v, n, bins, binning, out, scratch);
}

// Edges of x: (n, d) row-major: over all n*d elements into out: (bins-1,), or for each
// column into out: (d, bins-1) when per_dim.
template <class T>
void compute_edges(const T* x, std::size_t n, std::size_t d, int bins, Binning binning, bool per_dim,
                   double* out);

}  // namespace miprun::mi
