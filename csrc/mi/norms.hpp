// How the k-d tree (mi/kd_tree.hpp) measures distance: two norms with one interface, so
// the tree is written once and instantiated for both.
//
// The tree works on keys: the distance itself for the max-norm, the square for Euclidean
// norms. The KSG counts compare keys with the k-th neighbour's key, so a Euclidean
// distance's square root is never taken and its rounding never enters a count.
//
// Pruning stays exact: a box's bounds are formed from the same rounded differences as a
// point's, and rounding, squaring and adding non-negative terms in a fixed order are all
// monotone, so no point's own key can fall on the other side of a box's bound.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

namespace miprun::mi::norms {

// The max-norm over all w coordinates (KSG's usual norm); the key is the distance.
struct MaxNorm {
  static constexpr bool kSquared = false;  // a key of one coordinate is |d|
  std::size_t w;
  MaxNorm(std::size_t /*x_width*/, std::size_t width) : w(width) {}

  // Keys from q of the n points in columns [0, n) of the coordinate-major block c (ld
  // doubles from one coordinate to the next), into out. The loops run across points, so
  // they vectorise; max is exact, so any order gives the reference's distance.
  void leaf_keys(const double* c, std::size_t ld, std::size_t n, const double* q, double* out) const {
    std::fill(out, out + n, 0.0);
    for (std::size_t t = 0; t < w; ++t) {
      const double* ct = c + t * ld;
      const double qt = q[t];
      for (std::size_t j = 0; j < n; ++j) out[j] = std::max(out[j], std::fabs(qt - ct[j]));
    }
  }
  // No point of the box [lo, hi] has a key below this; stops once it reaches bound.
  double box_key_below(const double* lo, const double* hi, const double* q, double bound) const {
    double gap = 0.0;
    for (std::size_t t = 0; t < w && gap < bound; ++t) gap = std::max(gap, std::max(lo[t] - q[t], q[t] - hi[t]));
    return gap;
  }
  // far: no point of the box has key < bound; whole: every point has. Every coordinate is
  // tested without a branch, which costs less than branching on each.
  void box_reach(const double* lo, const double* hi, const double* q, double bound, bool& far, bool& whole) const {
    far = false;
    whole = true;
    for (std::size_t t = 0; t < w; ++t) {
      const double below = q[t] - lo[t], above = hi[t] - q[t];
      far |= !(-below < bound) | !(-above < bound);
      whole &= (below < bound) & (above < bound);
    }
  }
};

// The Euclidean norm within x (the first `split` coordinates) and within y (the rest, none
// in a marginal space), the larger of the two in the joint space: Kraskov's estimator 1
// with Euclidean marginals. Key: the larger squared norm, each a sum of squares added in
// coordinate order, the order of the float64 reference (miprun.mi.ksg).
struct BlockEuclidean {
  static constexpr bool kSquared = true;  // a key of one coordinate is d * d
  std::size_t split, w;
  BlockEuclidean(std::size_t x_width, std::size_t width) : split(x_width), w(width) {}

  // As MaxNorm::leaf_keys; n <= kMaxLeaf. Each point's squares are still added in
  // coordinate order: the loops run across points, so no sum is reordered.
  static constexpr std::size_t kMaxLeaf = 256;
  void leaf_keys(const double* c, std::size_t ld, std::size_t n, const double* q, double* out) const {
    double sy[kMaxLeaf];
    std::fill(out, out + n, 0.0);
    std::fill(sy, sy + n, 0.0);
    for (std::size_t t = 0; t < w; ++t) {
      const double* ct = c + t * ld;
      const double qt = q[t];
      double* s = t < split ? out : sy;
      for (std::size_t j = 0; j < n; ++j) {
        const double d = qt - ct[j];
        s[j] += d * d;
      }
    }
    for (std::size_t j = 0; j < n; ++j) out[j] = std::max(out[j], sy[j]);
  }
  double box_key_below(const double* lo, const double* hi, const double* q, double /*bound*/) const {
    return std::max(gap_squares(lo, hi, q, 0, split), gap_squares(lo, hi, q, split, w));
  }
  void box_reach(const double* lo, const double* hi, const double* q, double bound, bool& far, bool& whole) const {
    far = !(gap_squares(lo, hi, q, 0, split) < bound) | !(gap_squares(lo, hi, q, split, w) < bound);
    whole = (reach_squares(lo, hi, q, 0, split) < bound) & (reach_squares(lo, hi, q, split, w) < bound);
  }
 private:
  // Squared gaps between q and the box over coordinates [a, b), added in order: no more
  // than any point's sum of squares there.
  static double gap_squares(const double* lo, const double* hi, const double* q, std::size_t a, std::size_t b) {
    double s = 0.0;
    for (std::size_t t = a; t < b; ++t) {
      const double g = std::max(0.0, std::max(lo[t] - q[t], q[t] - hi[t]));
      s += g * g;
    }
    return s;
  }
  // Squared farthest reaches of the box from q over [a, b), added in order: no less than
  // any point's sum of squares there.
  static double reach_squares(const double* lo, const double* hi, const double* q, std::size_t a, std::size_t b) {
    double s = 0.0;
    for (std::size_t t = a; t < b; ++t) {
      const double r = std::max(q[t] - lo[t], hi[t] - q[t]);
      s += r * r;
    }
    return s;
  }
};

}  // namespace miprun::mi::norms
