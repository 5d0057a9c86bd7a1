// Gaussian mutual information -1/2 log(1 - rho^2) from the Pearson correlation.
#pragma once

#include <cstddef>

namespace miprun::mi {

// Gaussian MI in nats of x, y: (n, d) row-major, pooled over all n*d element pairs, or the
// mean over columns j of the MI of column j of x with column j of y when per_dim. A
// constant variable has correlation 0 (MI 0); rho^2 is capped at 1 - 1e-12 so identical
// inputs give a large finite value.
template <class T>
double gaussian_mi(const T* x, const T* y, std::size_t n, std::size_t d, bool per_dim);

}  // namespace miprun::mi
