#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "mi/kd_tree.hpp"
#include "mi/ksg.hpp"
#include "mi/ksg_search.hpp"
#include "mi/parallel.hpp"
#include "mi/radix_sort.hpp"
#include "mi/sorted_scan.hpp"

namespace miprun::mi {

namespace {

using namespace ksg_search;

// Above this many coordinates a k-d tree's boxes stop pruning (measured on 5000 Gaussian
// points: the tree is faster up to 12 + 12, the sorted scan from 16 + 16 on).
constexpr std::size_t kTreeMaxDims = 24;

// Exact max-norm searches in one space, by the structure that suits its dimension.
class Space {
 public:
  Space(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m) {
    if (da + db <= kTreeMaxDims)
      tree_ = std::make_unique<KdTree>(a, da, b, db, m);
    else
      scan_ = std::make_unique<SortedScan>(a, da, b, db, m);
  }
  std::uint32_t position(std::size_t i) const { return tree_ ? tree_->position(i) : scan_->position(i); }
  std::uint32_t point(std::size_t p) const { return tree_ ? tree_->point(p) : scan_->point(p); }
  double kth_distance(std::size_t p, int k, double* best) const {
    return tree_ ? tree_->kth_distance(p, k, best) : scan_->kth_distance(p, k, best);
  }
  std::size_t count_within(std::size_t p, double eps) const {
    return tree_ ? tree_->count_within(p, eps) : scan_->count_within(p, eps);
  }

 private:
  std::unique_ptr<KdTree> tree_;
  std::unique_ptr<SortedScan> scan_;
};

// Counts of points strictly within a max-norm radius in one marginal space: a galloping
// search in the sorted values for one coordinate, a Space for more.
class MarginalCounter {
 public:
  MarginalCounter(const double* v, std::size_t d, std::size_t m) : m_(m) {
    if (d > 1) {
      space_ = std::make_unique<Space>(v, d, nullptr, 0, m);
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

  // Points (i's own included) within eps of the point of original index i.
  std::size_t count(std::size_t i, double eps) const {
    return space_ ? space_->count_within(space_->position(i), eps) : count_within(sorted_.data(), m_, rank_[i], eps);
  }

 private:
  std::size_t m_;
  std::unique_ptr<Space> space_;
  std::vector<double> sorted_;
  std::vector<std::uint32_t> rank_;
};

}  // namespace

double ksg_joint(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k) {
  check_ksg(m, k);
  if (dx == 0 || dy == 0) throw std::invalid_argument("KSG needs at least one column in x and in y");
  const Space joint(x, dx, y, dy, m);
  const MarginalCounter in_x(x, dx, m), in_y(y, dy, m);
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
        const double eps = joint.kth_distance(p, k, best.data());
        const std::size_t nx1 = in_x.count(i, eps);  // n_x + 1 (self included)
        const std::size_t ny1 = in_y.count(i, eps);
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

}  // namespace miprun::mi
