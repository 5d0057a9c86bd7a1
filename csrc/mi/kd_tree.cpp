#include "mi/kd_tree.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "mi/ksg_search.hpp"

namespace miprun::mi {

namespace {

// Points per leaf: below this a scan costs less than another level of boxes.
constexpr std::uint32_t kLeafSize = 32;

}  // namespace

KdTree::KdTree(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m) : w_(da + db) {
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
}

std::uint32_t KdTree::build(std::uint32_t begin, std::uint32_t end) {
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

double KdTree::box_gap(std::uint32_t node, const double* q, double bound) const {
  const double* lo = lo_.data() + static_cast<std::size_t>(node) * w_;
  const double* hi = hi_.data() + static_cast<std::size_t>(node) * w_;
  double gap = 0.0;
  for (std::size_t t = 0; t < w_ && gap < bound; ++t) gap = std::max(gap, std::max(lo[t] - q[t], q[t] - hi[t]));
  return gap;
}

void KdTree::knn(std::uint32_t node, const double* q, std::size_t self, int k, double* best) const {
  const Node& nd = nodes_[node];
  double& kth = best[k - 1];
  if (nd.left == 0) {
    for (std::uint32_t p = nd.begin; p < nd.end; ++p) {
      if (p == self) continue;
      const double* r = pts_.data() + static_cast<std::size_t>(p) * w_;
      const double d = ksg_search::distance_below(q, r, w_, kth);
      if (d < kth) ksg_search::offer(best, k, d);
    }
    return;
  }
  // nearer child first: its points tighten the k-th distance before the other is tested
  const double gl = box_gap(nd.left, q, kth), gr = box_gap(nd.right, q, kth);
  const std::uint32_t first = gl <= gr ? nd.left : nd.right, second = gl <= gr ? nd.right : nd.left;
  if (std::min(gl, gr) < kth) knn(first, q, self, k, best);
  if (box_gap(second, q, kth) < kth) knn(second, q, self, k, best);
}

double KdTree::kth_distance(std::size_t p, int k, double* best) const {
  std::fill(best, best + k, std::numeric_limits<double>::infinity());
  knn(0, pts_.data() + p * w_, p, k, best);
  return best[k - 1];
}

std::size_t KdTree::count(std::uint32_t node, const double* q, double eps) const {
  const Node& nd = nodes_[node];
  const double* lo = lo_.data() + static_cast<std::size_t>(node) * w_;
  const double* hi = hi_.data() + static_cast<std::size_t>(node) * w_;
  // how far the box reaches each side of q: it lies eps or more away (far), or within eps (whole);
  // every coordinate is tested without a branch, which costs less than branching on each
  bool far = false, whole = true;
  for (std::size_t t = 0; t < w_; ++t) {
    const double below = q[t] - lo[t], above = hi[t] - q[t];
    far |= !(-below < eps) | !(-above < eps);
    whole &= (below < eps) & (above < eps);
  }
  if (far) return 0;
  if (whole) return nd.end - nd.begin;
  if (nd.left != 0) return count(nd.left, q, eps) + count(nd.right, q, eps);
  std::size_t n = 0;
  for (std::uint32_t p = nd.begin; p < nd.end; ++p) {
    n += ksg_search::distance_below(q, pts_.data() + static_cast<std::size_t>(p) * w_, w_, eps) < eps;
  }
  return n;
}

std::size_t KdTree::count_within(std::size_t p, double eps) const {
  if (!(eps > 0.0)) return 0;
  return count(0, pts_.data() + p * w_, eps);
}

}  // namespace miprun::mi
