// Exact max-norm searches over points sorted by their first coordinate: the k-th nearest
// distance and counts within a radius, with KdTree's interface. A search walks outwards
// from the point in that order and stops where the gap in the first coordinate alone
// reaches the k-th distance (or the radius). Where points have many coordinates, a k-d
// tree's boxes stop pruning and this plain scan, which tries the likeliest neighbours
// first, costs less. Distances are formed as |q_t - p_t|, so answers equal a brute-force
// scan's bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace miprun::mi {

class SortedScan {
 public:
  // The rows of a: (m, da) followed, when b is given, by those of b: (m, db). m < 2^32.
  SortedScan(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m);

  std::size_t size() const { return index_.size(); }
  std::uint32_t position(std::size_t i) const { return position_[i]; }
  std::uint32_t point(std::size_t p) const { return index_[p]; }
  double kth_distance(std::size_t p, int k, double* best) const;
  std::size_t count_within(std::size_t p, double eps) const;

 private:
  std::size_t w_;
  std::vector<double> pts_;  // (m, w_) sorted by the first coordinate
  std::vector<std::uint32_t> index_, position_;
};

}  // namespace miprun::mi
