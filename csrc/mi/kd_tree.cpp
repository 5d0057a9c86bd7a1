#include "mi/kd_tree.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "mi/ksg_search.hpp"
#include "mi/norms.hpp"

namespace miprun::mi {

namespace {

// Points per leaf: below this a scan costs less than another level of boxes. Measured on
// 5000 and 10000 Gaussian points, 2 + 1 to 13 + 11 coordinates, both norms: leaves of 78
// points (this bound at those sizes) beat leaves of 20 and 39 on every shape, by up to
// 2x; leaves of 156 gained up to 20 % for the Euclidean norm from 5 + 5 on and lost up to
// 15 % for the max-norm in few coordinates.
constexpr std::uint32_t kLeafSize = 128;
static_assert(kLeafSize <= norms::BlockEuclidean::kMaxLeaf, "a leaf's keys are formed in one pass");

}  // namespace

template <class Norm>
KdTree<Norm>::KdTree(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m)
    : norm_(da, da + db), w_(da + db) {
  if (m > std::numeric_limits<std::uint32_t>::max())
    throw std::invalid_argument("KSG supports up to 2^32-1 samples, got " + std::to_string(m) + "; subsample first");
  pts_.resize(m * w_);
  for (std::size_t i = 0; i < m; ++i) {
    std::copy(a + i * da, a + (i + 1) * da, pts_.data() + i * w_);
    if (db > 0) std::copy(b + i * db, b + (i + 1) * db, pts_.data() + i * w_ + da);
  }
  index_.resize(m);
  for (std::size_t i = 0; i < m; ++i) index_[i] = static_cast<std::uint32_t>(i);
  nodes_.reserve(2 * (m / kLeafSize + 1));
  build(0, static_cast<std::uint32_t>(m));
  // points in tree order: a leaf's points are contiguous
  std::vector<double> ordered(m * w_);
  position_.resize(m);
  for (std::size_t p = 0; p < m; ++p) {
    std::copy(pts_.data() + index_[p] * w_, pts_.data() + (index_[p] + 1) * w_, ordered.data() + p * w_);
    position_[index_[p]] = static_cast<std::uint32_t>(p);
  }
  pts_.swap(ordered);
  cols_.resize(m * w_);
  for (std::size_t p = 0; p < m; ++p)
    for (std::size_t t = 0; t < w_; ++t) cols_[t * m + p] = pts_[p * w_ + t];
}

template <class Norm>
std::uint32_t KdTree<Norm>::build(std::uint32_t begin, std::uint32_t end) {
  const std::uint32_t id = static_cast<std::uint32_t>(nodes_.size());
  nodes_.push_back({begin, end});
  lo_.resize(lo_.size() + w_, std::numeric_limits<double>::infinity());
  hi_.resize(hi_.size() + w_, -std::numeric_limits<double>::infinity());
  double* lo = lo_.data() + id * w_;
  double* hi = hi_.data() + id * w_;
  for (std::uint32_t p = begin; p < end; ++p) {
    const double* row = pts_.data() + static_cast<std::size_t>(index_[p]) * w_;
    for (std::size_t t = 0; t < w_; ++t) {
      lo[t] = std::min(lo[t], row[t]);
      hi[t] = std::max(hi[t], row[t]);
    }
  }
  if (end - begin <= kLeafSize) return id;
  std::size_t axis = 0;  // the widest side of the box
  for (std::size_t t = 1; t < w_; ++t)
    if (hi[t] - lo[t] > hi[axis] - lo[axis]) axis = t;
  if (!(hi[axis] > lo[axis])) return id;  // all points equal: nothing to split
  const std::uint32_t mid = begin + (end - begin) / 2;
  const double* pts = pts_.data();
  const std::size_t w = w_;
  std::nth_element(index_.begin() + begin, index_.begin() + mid, index_.begin() + end,
                   [pts, w, axis](std::uint32_t u, std::uint32_t v) { return pts[u * w + axis] < pts[v * w + axis]; });
  const std::uint32_t left = build(begin, mid);
  const std::uint32_t right = build(mid, end);
  nodes_[id].left = left;
  nodes_[id].right = right;
  return id;
}

template <class Norm>
double KdTree<Norm>::box_key(std::uint32_t node, const double* q, double bound) const {
  const std::size_t at = static_cast<std::size_t>(node) * w_;
  return norm_.box_key_below(lo_.data() + at, hi_.data() + at, q, bound);
}

template <class Norm>
void KdTree<Norm>::knn(std::uint32_t node, const double* q, std::size_t self, int k, double* best) const {
  const Node& nd = nodes_[node];
  double& kth = best[k - 1];
  if (nd.left == 0) {
    double keys[kLeafSize];
    // a leaf of equal points may hold more than kLeafSize: taken kLeafSize at a time
    for (std::uint32_t a = nd.begin; a < nd.end; a += kLeafSize) {
      const std::uint32_t n = std::min(kLeafSize, nd.end - a);
      norm_.leaf_keys(cols_.data() + a, size(), n, q, keys);
      for (std::uint32_t j = 0; j < n; ++j)
        if (keys[j] < kth && a + j != self) ksg_search::offer(best, k, keys[j]);
    }
    return;
  }
  // nearer child first: its points tighten the k-th key before the other is tested. A box
  // key cut short at the old k-th key is still >= the new, smaller one, so it is reused.
  const double gl = box_key(nd.left, q, kth), gr = box_key(nd.right, q, kth);
  const bool left_first = gl <= gr;
  if (std::min(gl, gr) < kth) knn(left_first ? nd.left : nd.right, q, self, k, best);
  if (std::max(gl, gr) < kth) knn(left_first ? nd.right : nd.left, q, self, k, best);
}

template <class Norm>
double KdTree<Norm>::kth_key(std::size_t p, int k, double* best) const {
  std::fill(best, best + k, std::numeric_limits<double>::infinity());
  knn(0, pts_.data() + p * w_, p, k, best);
  return best[k - 1];
}

template <class Norm>
std::size_t KdTree<Norm>::count(std::uint32_t node, const double* q, double bound) const {
  const Node& nd = nodes_[node];
  const std::size_t at = static_cast<std::size_t>(node) * w_;
  // the box lies at bound or beyond (far), or wholly below it (whole)
  bool far, whole;
  norm_.box_reach(lo_.data() + at, hi_.data() + at, q, bound, far, whole);
  if (far) return 0;
  if (whole) return nd.end - nd.begin;
  if (nd.left != 0) return count(nd.left, q, bound) + count(nd.right, q, bound);
  std::size_t n = 0;
  double keys[kLeafSize];
  for (std::uint32_t a = nd.begin; a < nd.end; a += kLeafSize) {
    const std::uint32_t c = std::min(kLeafSize, nd.end - a);
    norm_.leaf_keys(cols_.data() + a, size(), c, q, keys);
    for (std::uint32_t j = 0; j < c; ++j) n += keys[j] < bound;
  }
  return n;
}

template <class Norm>
std::size_t KdTree<Norm>::count_below(std::size_t p, double bound) const {
  if (!(bound > 0.0)) return 0;
  return count(0, pts_.data() + p * w_, bound);
}

template class KdTree<norms::MaxNorm>;
template class KdTree<norms::BlockEuclidean>;

}  // namespace miprun::mi
