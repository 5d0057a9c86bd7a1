#include "mi/gaussian.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "mi/parallel.hpp"

namespace miprun::mi {

namespace {

constexpr double kMaxRho2 = 1.0 - 1e-12;
// Elements per partial sum; partials are added in order, so results do not depend on the
// number of threads.
constexpr std::size_t kBlock = std::size_t(1) << 14;

double mi_from_sums(double sxy, double sxx, double syy) {
  const double denom = std::sqrt(sxx * syy);
  const double rho = denom > 0.0 ? sxy / denom : 0.0;
  const double r2 = std::min(rho * rho, kMaxRho2);
  return -0.5 * std::log1p(-r2);
}

template <class T>
double pooled_gaussian(const T* x, const T* y, std::size_t N) {
  const std::size_t nb = (N + kBlock - 1) / kBlock;
  const long long nbl = static_cast<long long>(nb);
  std::vector<double> part(3 * nb, 0.0);
  MIPRUN_OMP(parallel for schedule(static) if (N >= kParallelGrain))
  for (long long b = 0; b < nbl; ++b) {
    const std::size_t i0 = static_cast<std::size_t>(b) * kBlock, i1 = std::min(N, i0 + kBlock);
    double sx = 0.0, sy = 0.0;
    for (std::size_t i = i0; i < i1; ++i) {
      sx += static_cast<double>(x[i]);
      sy += static_cast<double>(y[i]);
    }
    part[2 * static_cast<std::size_t>(b)] = sx;
    part[2 * static_cast<std::size_t>(b) + 1] = sy;
  }
  double mx = 0.0, my = 0.0;
  for (std::size_t b = 0; b < nb; ++b) {
    mx += part[2 * b];
    my += part[2 * b + 1];
  }
  mx /= static_cast<double>(N);
  my /= static_cast<double>(N);
  MIPRUN_OMP(parallel for schedule(static) if (N >= kParallelGrain))
  for (long long b = 0; b < nbl; ++b) {
    const std::size_t i0 = static_cast<std::size_t>(b) * kBlock, i1 = std::min(N, i0 + kBlock);
    double sxy = 0.0, sxx = 0.0, syy = 0.0;
    for (std::size_t i = i0; i < i1; ++i) {
      const double a = static_cast<double>(x[i]) - mx, c = static_cast<double>(y[i]) - my;
      sxy += a * c;
      sxx += a * a;
      syy += c * c;
    }
    part[3 * static_cast<std::size_t>(b)] = sxy;
    part[3 * static_cast<std::size_t>(b) + 1] = sxx;
    part[3 * static_cast<std::size_t>(b) + 2] = syy;
  }
  double sxy = 0.0, sxx = 0.0, syy = 0.0;
  for (std::size_t b = 0; b < nb; ++b) {
    sxy += part[3 * b];
    sxx += part[3 * b + 1];
    syy += part[3 * b + 2];
  }
  return mi_from_sums(sxy, sxx, syy);
}

}  // namespace

template <class T>
double gaussian_mi(const T* x, const T* y, std::size_t n, std::size_t d, bool per_dim) {
  if (n == 0 || d == 0) throw std::invalid_argument("Gaussian MI of an empty array");
  if (!per_dim) return pooled_gaussian(x, y, n * d);
  // Column sums accumulate row by row (contiguous, vectorised), in blocks of rows whose
  // partial sums are added in block order.
  const std::size_t rows = std::max<std::size_t>(1, kBlock / d);
  const std::size_t nb = (n + rows - 1) / rows;
  const long long nbl = static_cast<long long>(nb);
  std::vector<double> part(3 * nb * d, 0.0);
  MIPRUN_OMP(parallel for schedule(static) if (n * d >= kParallelGrain))
  for (long long b = 0; b < nbl; ++b) {
    double* sx = part.data() + 2 * static_cast<std::size_t>(b) * d;
    double* sy = sx + d;
    const std::size_t i0 = static_cast<std::size_t>(b) * rows, i1 = std::min(n, i0 + rows);
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t j = 0; j < d; ++j) {
        sx[j] += static_cast<double>(x[i * d + j]);
        sy[j] += static_cast<double>(y[i * d + j]);
      }
  }
  std::vector<double> mx(d, 0.0), my(d, 0.0);
  for (std::size_t b = 0; b < nb; ++b)
    for (std::size_t j = 0; j < d; ++j) {
      mx[j] += part[2 * b * d + j];
      my[j] += part[(2 * b + 1) * d + j];
    }
  for (std::size_t j = 0; j < d; ++j) {
    mx[j] /= static_cast<double>(n);
    my[j] /= static_cast<double>(n);
  }
  std::fill(part.begin(), part.end(), 0.0);
  MIPRUN_OMP(parallel for schedule(static) if (n * d >= kParallelGrain))
  for (long long b = 0; b < nbl; ++b) {
    double* sxy = part.data() + 3 * static_cast<std::size_t>(b) * d;
    double* sxx = sxy + d;
    double* syy = sxx + d;
    const std::size_t i0 = static_cast<std::size_t>(b) * rows, i1 = std::min(n, i0 + rows);
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t j = 0; j < d; ++j) {
        const double a = static_cast<double>(x[i * d + j]) - mx[j], c = static_cast<double>(y[i * d + j]) - my[j];
        sxy[j] += a * c;
        sxx[j] += a * a;
        syy[j] += c * c;
      }
  }
  double sum = 0.0;
  for (std::size_t j = 0; j < d; ++j) {
    double sxy = 0.0, sxx = 0.0, syy = 0.0;
    for (std::size_t b = 0; b < nb; ++b) {
      sxy += part[3 * b * d + j];
      sxx += part[(3 * b + 1) * d + j];
      syy += part[(3 * b + 2) * d + j];
    }
    sum += mi_from_sums(sxy, sxx, syy);  // in column order, as the reference averages
  }
  return sum / static_cast<double>(d);
}

template double gaussian_mi<float>(const float*, const float*, std::size_t, std::size_t, bool);
template double gaussian_mi<double>(const double*, const double*, std::size_t, std::size_t, bool);

}  // namespace miprun::mi
