#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "mi/kd_tree.hpp"
#include "mi/ksg.hpp"
#include "mi/ksg_search.hpp"
#include "mi/norms.hpp"
#include "mi/parallel.hpp"
#include "mi/radix_sort.hpp"
#include "mi/sorted_scan.hpp"

namespace miprun::mi {

namespace {

using namespace ksg_search;

// Above this many coordinates the sorted scan finds max-norm neighbours faster than the
// k-d tree: it stops each distance as soon as it reaches the k-th (measured on Gaussian
// points: the tree is faster up to 50 + 50 coordinates, even at 100 + 100, the scan 2x
// faster at 300 + 300). For Euclidean norms the tree was faster at every width measured,
// up to 300 + 300, so they always use it.
constexpr std::size_t kTreeMaxDims = 128;

// Exact searches in one space, in the norm, by the structure that suits its dimension.
template <class Norm>
class Space {
 public:
  Space(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m) {
    if constexpr (std::is_same_v<Norm, norms::MaxNorm>) {
      if (da + db > kTreeMaxDims) {
        scan_ = std::make_unique<SortedScan>(a, da, b, db, m);
        return;
      }
    }
    tree_ = std::make_unique<KdTree<Norm>>(a, da, b, db, m);
  }
  std::uint32_t position(std::size_t i) const { return tree_ ? tree_->position(i) : scan_->position(i); }
  std::uint32_t point(std::size_t p) const { return tree_ ? tree_->point(p) : scan_->point(p); }
  // the sorted scan is max-norm only, where a key is the distance
  double kth_key(std::size_t p, int k, double* best) const {
    return tree_ ? tree_->kth_key(p, k, best) : scan_->kth_distance(p, k, best);
  }
  std::size_t count_below(std::size_t p, double bound) const {
    return tree_ ? tree_->count_below(p, bound) : scan_->count_within(p, bound);
  }

 private:
  std::unique_ptr<KdTree<Norm>> tree_;
  std::unique_ptr<SortedScan> scan_;
};

// Counts of points whose key is below a bound in one marginal space: a galloping search in
// the sorted values for one coordinate, a Space for more.
template <class Norm>
class MarginalCounter {
 public:
  MarginalCounter(const double* v, std::size_t d, std::size_t m) : m_(m) {
    if (d > 1) {
      space_ = std::make_unique<Space<Norm>>(v, d, nullptr, 0, m);
      return;
    }
    const std::vector<std::uint32_t> order = radix_argsort(v, m);
    sorted_.resize(m);
    rank_.resize(m);
    for (std::size_t r = 0; r < m; ++r) {
      sorted_[r] = v[order[r]];
      rank_[order[r]] = static_cast<std::uint32_t>(r);
    }
  }

  // Points (i's own included) whose key from the point of original index i is below bound.
  std::size_t count(std::size_t i, double bound) const {
    return space_ ? space_->count_below(space_->position(i), bound)
                  : count_within<Norm::kSquared>(sorted_.data(), m_, rank_[i], bound);
  }

 private:
  std::size_t m_;
  std::unique_ptr<Space<Norm>> space_;
  std::vector<double> sorted_;
  std::vector<std::uint32_t> rank_;
};

template <class Norm>
double ksg_joint_in(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k) {
  const Space<Norm> joint(x, dx, y, dy, m);
  const MarginalCounter<Norm> in_x(x, dx, m), in_y(y, dy, m);
  std::vector<double> psi(m);  // psi(n_x + 1) + psi(n_y + 1) of each point, by original index
  const std::size_t n_chunks = (m + kChunk - 1) / kChunk;
  MIPRUN_OMP(parallel if (m * (dx + dy) >= kParallelGrain))
  {
    std::vector<double> best(static_cast<std::size_t>(k));
    // points in search order: neighbouring queries read the same points, which stay in cache
    MIPRUN_OMP(for schedule(dynamic, 1))
    for (long long c = 0; c < static_cast<long long>(n_chunks); ++c) {
      const std::size_t a = static_cast<std::size_t>(c) * kChunk, b = std::min(m, a + kChunk);
      for (std::size_t p = a; p < b; ++p) {
        const std::size_t i = joint.point(p);
        // the k-th neighbour's key: a marginal key below it is a distance below eps
        const double key = joint.kth_key(p, k, best.data());
        const std::size_t nx1 = in_x.count(i, key);  // n_x + 1 (self included)
        const std::size_t ny1 = in_y.count(i, key);
        psi[i] = digamma(static_cast<double>(nx1)) + digamma(static_cast<double>(ny1));
      }
    }
  }
  // summed in chunks of original indices, as the scalar path sums, whatever the thread count
  std::vector<double> parts(n_chunks, 0.0);
  for (std::size_t c = 0; c < n_chunks; ++c) {
    double s = 0.0;
    for (std::size_t i = c * kChunk; i < std::min(m, (c + 1) * kChunk); ++i) s += psi[i];
    parts[c] = s;
  }
  return finish(sum_in_order(parts), m, k);
}

}  // namespace

double ksg_joint(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k,
                 Metric metric) {
  check_ksg(m, k);
  if (dx == 0 || dy == 0) throw std::invalid_argument("KSG needs at least one column in x and in y");
  if (metric == Metric::kEuclidean) return ksg_joint_in<norms::BlockEuclidean>(x, y, m, dx, dy, k);
  return ksg_joint_in<norms::MaxNorm>(x, y, m, dx, dy, k);
}

}  // namespace miprun::mi
