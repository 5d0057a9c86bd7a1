#include "mi/sorted_scan.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "mi/ksg_search.hpp"
#include "mi/radix_sort.hpp"

namespace miprun::mi {

SortedScan::SortedScan(const double* a, std::size_t da, const double* b, std::size_t db, std::size_t m)
    : w_(da + db) {
  if (m > std::numeric_limits<std::uint32_t>::max())
    throw std::invalid_argument("KSG supports up to 2^32-1 samples, got " + std::to_string(m) + "; subsample first");
  std::vector<double> first(m);
  for (std::size_t i = 0; i < m; ++i) first[i] = a[i * da];
  index_ = radix_argsort(first.data(), m);
  position_.resize(m);
  pts_.resize(m * w_);
  for (std::size_t p = 0; p < m; ++p) {
    const std::size_t i = index_[p];
    std::copy(a + i * da, a + (i + 1) * da, pts_.data() + p * w_);
    if (db > 0) std::copy(b + i * db, b + (i + 1) * db, pts_.data() + p * w_ + da);
    position_[i] = static_cast<std::uint32_t>(p);
  }
}

double SortedScan::kth_distance(std::size_t p, int k, double* best) const {
  std::fill(best, best + k, std::numeric_limits<double>::infinity());
  const std::size_t m = size(), w = w_;
  const double* rows = pts_.data();
  const double* c = rows + p * w;
  double& kth = best[k - 1];
  std::size_t up = p + 1, down = p;  // next candidates: position up, and position down - 1
  while (true) {
    const double gap_up = up < m ? rows[up * w] - c[0] : std::numeric_limits<double>::infinity();
    const double gap_down = down > 0 ? c[0] - rows[(down - 1) * w] : std::numeric_limits<double>::infinity();
    const bool go_up = gap_up <= gap_down;
    double d = go_up ? gap_up : gap_down;
    if (!(d < kth)) break;  // the first coordinate alone puts every remaining point too far
    const double* q = rows + (go_up ? up++ : --down) * w;
    d = std::max(d, ksg_search::distance_below(c + 1, q + 1, w - 1, kth));
    if (d < kth) ksg_search::offer(best, k, d);
  }
  return kth;
}

std::size_t SortedScan::count_within(std::size_t p, double eps) const {
  if (!(eps > 0.0)) return 0;
  const std::size_t m = size(), w = w_;
  const double* rows = pts_.data();
  const double* c = rows + p * w;
  auto inside = [&](const double* q) { return ksg_search::distance_below(c + 1, q + 1, w - 1, eps) < eps; };
  std::size_t n = 1;
  for (std::size_t q = p + 1; q < m && rows[q * w] - c[0] < eps; ++q) n += inside(rows + q * w);
  for (std::size_t q = p; q-- > 0 && c[0] - rows[q * w] < eps;) n += inside(rows + q * w);
  return n;
}

}  // namespace miprun::mi
