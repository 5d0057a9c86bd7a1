// What the KSG searches share: argument checks, the k-best list, counts in sorted values,
// and the final sum (in a fixed order, so results do not depend on the number of threads).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "mi/ksg.hpp"

namespace miprun::mi::ksg_search {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Points per unit of parallel work; partial sums are kept per chunk and added in order, so
// the result does not depend on the number of threads.
constexpr std::size_t kChunk = 512;

inline void check_ksg(std::size_t m, int k) {
  if (k < 1) throw std::invalid_argument("k must be a positive int, got " + std::to_string(k));
  if (m < static_cast<std::size_t>(k) + 1)
    throw std::invalid_argument("KSG with k=" + std::to_string(k) + " needs at least " + std::to_string(k + 1) +
                                " samples, got " + std::to_string(m));
}

// Keep the k smallest distances seen, ascending in best[0..k); best[k-1] is the k-th.
inline void offer(double* best, int k, double d) {
  int pos = k - 1;
  while (pos > 0 && best[pos - 1] > d) {
    best[pos] = best[pos - 1];
    --pos;
  }
  best[pos] = d;
}

// Number of j in 1..limit with gap(j) < eps, for gap non-decreasing in j. The search
// starts at `guess` and gallops from there, so a good guess costs a few probes near the
// answer; the last stretch is a branch-free binary search (a conditional move per step).
template <class Gap>
inline std::size_t count_below(Gap gap, std::size_t limit, double eps, std::size_t guess) {
  if (limit == 0) return 0;
  std::size_t in = 0, out = limit + 1;  // gap(in) < eps (in = 0: nothing yet), gap(out) >= eps
  const std::size_t g = std::clamp<std::size_t>(guess, 1, limit);
  if (gap(g) < eps) {
    in = g;
    for (std::size_t step = 1; in + step <= limit; step <<= 1) {
      if (!(gap(in + step) < eps)) {
        out = in + step;
        break;
      }
      in += step;
    }
  } else {
    out = g;
    for (std::size_t step = 1; step < out - in; step <<= 1) {
      if (gap(out - step) < eps) {
        in = out - step;
        break;
      }
      out -= step;
    }
  }
  // the first j with gap(j) >= eps lies in [in + 1, out]
  std::size_t base = in + 1, len = out - base;
  if (len == 0) return in;
  while (len > 1) {
    const std::size_t half = len / 2;
    base = gap(base + half - 1) < eps ? base + half : base;
    len -= half;
  }
  return (gap(base) < eps ? base + 1 : base) - 1;
}

// Points each side used to estimate the local density of the sorted values around p.
constexpr std::size_t kDensitySpan = 16;

// Number of q with |s[q] - s[p]| < eps in the sorted s: (m,), p included; with kSquared,
// the q with (s[q] - s[p])^2 < eps (the Euclidean key of one coordinate: eps is then a
// squared distance). The search on each side starts where the local density says the
// boundary should be. Differences are formed as s[q] - s[p], the same rounding as
// |x_i - x_j| in the reference.
template <bool kSquared = false>
inline std::size_t count_within(const double* s, std::size_t m, std::size_t p, double eps) {
  if (!(eps > 0.0)) return 0;
  const double c = s[p];
  const std::size_t a = p >= kDensitySpan ? p - kDensitySpan : 0, b = std::min(m - 1, p + kDensitySpan);
  const double span = s[b] - s[a];
  const double reach = kSquared ? std::sqrt(eps) : eps;  // only for the guess: need not be exact
  const double expected = span > 0.0 ? reach * static_cast<double>(b - a) / span : 1.0;
  const std::size_t guess = expected < static_cast<double>(m) ? static_cast<std::size_t>(expected) + 1 : m;
  auto key = [](double d) { return kSquared ? d * d : d; };  // non-decreasing in d >= 0
  const std::size_t right = count_below([s, p, c, key](std::size_t j) { return key(s[p + j] - c); }, m - 1 - p, eps, guess);
  const std::size_t left = count_below([s, p, c, key](std::size_t j) { return key(c - s[p - j]); }, p, eps, guess);
  return 1 + left + right;
}

// Max-norm distance between the points q and r of w coordinates, or some value >= bound
// once it is clear the distance reaches bound. Coordinates go four at a time without a
// branch, then one test: a test per coordinate costs more in mispredictions than it saves.
inline double distance_below(const double* q, const double* r, std::size_t w, double bound) {
  double d = 0.0;
  std::size_t t = 0;
  for (; t + 4 <= w; t += 4) {
    const double a = std::max(std::fabs(q[t] - r[t]), std::fabs(q[t + 1] - r[t + 1]));
    const double b = std::max(std::fabs(q[t + 2] - r[t + 2]), std::fabs(q[t + 3] - r[t + 3]));
    d = std::max(d, std::max(a, b));
    if (!(d < bound)) return d;
  }
  for (; t < w; ++t) d = std::max(d, std::fabs(q[t] - r[t]));
  return d;
}

inline double finish(double psi_sum, std::size_t m, int k) {
  return digamma(static_cast<double>(k)) + digamma(static_cast<double>(m)) - psi_sum / static_cast<double>(m);
}

inline double sum_in_order(const std::vector<double>& parts) {
  double s = 0.0;
  for (double v : parts) s += v;
  return s;
}

}  // namespace miprun::mi::ksg_search
