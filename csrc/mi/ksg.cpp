#include "mi/ksg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "mi/columns.hpp"
#include "mi/ksg_search.hpp"
#include "mi/parallel.hpp"
#include "mi/radix_sort.hpp"

namespace miprun::mi {

double digamma(double x) {
  if (x == 0.0) return -std::numeric_limits<double>::infinity();  // as torch.special.digamma(0)
  double shift = 0.0;
  while (x < 10.0) {
    shift -= 1.0 / x;
    x += 1.0;
  }
  // psi(x) ~ log x - 1/(2x) - sum_n B_2n / (2n x^2n); at x >= 10 the terms kept reach 1e-16
  const double r = 1.0 / (x * x);
  const double series =
      r * (1.0 / 12 - r * (1.0 / 120 - r * (1.0 / 252 - r * (1.0 / 240 - r * (1.0 / 132 - r * (691.0 / 32760 - r / 12))))));
  return shift + std::log(x) - 0.5 / x - series;
}

namespace {

using namespace ksg_search;

struct ValueIndex {
  double v;
  std::uint32_t i;
};

struct Point {
  double y, x;
};

// Points cut into slabs of `width` consecutive points in x order, each slab sorted by y.
// A neighbour search visits the slabs near the query in x and, inside each, only the
// points near it in y, so its cost follows the local density whatever the data's scale
// or tails (slabs hold equal counts, not equal widths).
struct Slabs {
  std::size_t width = 1;
  std::vector<Point> pts;               // slab after slab, each sorted by (y, index)
  std::vector<double> x_first, x_last;  // x range of each slab
  std::vector<std::uint32_t> slot;      // position in pts of the point of x rank p
};

Slabs build_slabs(const double* px, const double* py, std::size_t m, int k) {
  Slabs s;
  // about sqrt(m k) points per slab balances slabs visited against points scanned
  s.width = std::max<std::size_t>(16, static_cast<std::size_t>(std::sqrt(static_cast<double>(m) * k)));
  const std::size_t n_slabs = (m + s.width - 1) / s.width;
  s.pts.resize(m);
  s.slot.resize(m);
  s.x_first.resize(n_slabs);
  s.x_last.resize(n_slabs);
  std::vector<ValueIndex> vi;
  for (std::size_t b = 0; b < n_slabs; ++b) {
    const std::size_t a = b * s.width, e = std::min(m, a + s.width);
    s.x_first[b] = px[a];
    s.x_last[b] = px[e - 1];
    vi.resize(e - a);
    for (std::size_t p = a; p < e; ++p) vi[p - a] = {py[p], static_cast<std::uint32_t>(p)};
    std::sort(vi.begin(), vi.end(), [](const ValueIndex& u, const ValueIndex& v) { return u.v < v.v || (u.v == v.v && u.i < v.i); });
    for (std::size_t r = 0; r < vi.size(); ++r) {
      s.pts[a + r] = {vi[r].v, px[vi[r].i]};
      s.slot[vi[r].i] = static_cast<std::uint32_t>(a + r);
    }
  }
  return s;
}

// Offer the points pts[j], j = from, from+1, ... < to (up) or j = from, from-1, ... >= to
// (down), stopping once the y gap alone reaches the current k-th distance.
inline void scan_up(const Point* pts, std::size_t from, std::size_t to, double cx, double cy, double* best, int k) {
  for (std::size_t j = from; j < to; ++j) {
    const double dy = pts[j].y - cy;
    if (dy >= best[k - 1]) break;
    const double d = std::max(dy, std::fabs(pts[j].x - cx));
    if (d < best[k - 1]) offer(best, k, d);
  }
}
inline void scan_down(const Point* pts, std::size_t from, std::size_t to, double cx, double cy, double* best, int k) {
  for (std::size_t j = from; j-- > to;) {
    const double dy = cy - pts[j].y;
    if (dy >= best[k - 1]) break;
    const double d = std::max(dy, std::fabs(pts[j].x - cx));
    if (d < best[k - 1]) offer(best, k, d);
  }
}

// k-th smallest max-norm distance from the point of x rank p to the others. Differences
// are formed as in the reference, so distances are bit-identical to it.
double kth_distance(const Slabs& s, const double* px, const double* py, std::size_t m, std::size_t p, int k,
                    double* best) {
  std::fill(best, best + k, kInf);
  const double cx = px[p], cy = py[p];
  const Point* pts = s.pts.data();
  const std::size_t n_slabs = s.x_first.size(), own = p / s.width;
  auto slab_end = [&](std::size_t b) { return std::min(m, (b + 1) * s.width); };
  const std::size_t self = s.slot[p];
  scan_up(pts, self + 1, slab_end(own), cx, cy, best, k);
  scan_down(pts, self, own * s.width, cx, cy, best, k);
  auto visit = [&](std::size_t b) {
    const std::size_t a = b * s.width, e = slab_end(b);
    const std::size_t mid = static_cast<std::size_t>(
        std::partition_point(pts + a, pts + e, [cy](const Point& q) { return q.y < cy; }) - pts);
    scan_up(pts, mid, e, cx, cy, best, k);
    scan_down(pts, mid, a, cx, cy, best, k);
  };
  for (std::size_t b = own + 1; b < n_slabs && s.x_first[b] - cx < best[k - 1]; ++b) visit(b);
  for (std::size_t b = own; b-- > 0 && cx - s.x_last[b] < best[k - 1];) visit(b);
  return best[k - 1];
}

}  // namespace

double ksg_scalar(const double* x, const double* y, std::size_t m, int k, bool parallel) {
  check_ksg(m, k);
  if (m > std::numeric_limits<std::uint32_t>::max())
    throw std::invalid_argument("KSG supports up to 2^32-1 samples, got " + std::to_string(m) + "; subsample first");
  // points in x order, and y sorted with each point's position in it
  const std::vector<std::uint32_t> ox = radix_argsort(x, m);
  std::vector<double> px(m), py(m);
  for (std::size_t r = 0; r < m; ++r) {
    px[r] = x[ox[r]];
    py[r] = y[ox[r]];
  }
  const std::vector<std::uint32_t> oy = radix_argsort(py.data(), m);
  std::vector<double> ys(m);
  std::vector<std::uint32_t> rank_y(m);
  for (std::size_t r = 0; r < m; ++r) {
    ys[r] = py[oy[r]];
    rank_y[oy[r]] = static_cast<std::uint32_t>(r);
  }
  const Slabs slabs = build_slabs(px.data(), py.data(), m, k);
  const std::size_t n_chunks = (m + kChunk - 1) / kChunk;
  std::vector<double> parts(n_chunks, 0.0);
  MIPRUN_OMP(parallel if (parallel && m >= 4096))
  {
    std::vector<double> best(static_cast<std::size_t>(k));
    MIPRUN_OMP(for schedule(dynamic, 1))
    for (long long c = 0; c < static_cast<long long>(n_chunks); ++c) {
      const std::size_t a = static_cast<std::size_t>(c) * kChunk, b = std::min(m, a + kChunk);
      double s = 0.0;
      for (std::size_t p = a; p < b; ++p) {
        const double eps = kth_distance(slabs, px.data(), py.data(), m, p, k, best.data());
        const std::size_t nx1 = count_within(px.data(), m, p, eps);  // n_x + 1 (self included)
        const std::size_t ny1 = count_within(ys.data(), m, rank_y[p], eps);
        s += digamma(static_cast<double>(nx1)) + digamma(static_cast<double>(ny1));
      }
      parts[static_cast<std::size_t>(c)] = s;
    }
  }
  return finish(sum_in_order(parts), m, k);
}

double ksg_points(const double* x, const double* y, std::size_t m, std::size_t dx, std::size_t dy, int k,
                  Metric metric) {
  check_ksg(m, k);
  if (dx == 0 || dy == 0) throw std::invalid_argument("KSG needs at least one column in x and in y");
  if (dx == 1 && dy == 1) return ksg_scalar(x, y, m, k, true);
  return ksg_joint(x, y, m, dx, dy, k, metric);
}

double ksg_per_dim(const double* x, const double* y, std::size_t m, std::size_t d, int k) {
  check_ksg(m, k);
  if (d == 0) throw std::invalid_argument("KSG per column needs at least one column");
  std::vector<double> per_column(d);
  if (d < static_cast<std::size_t>(max_threads())) {
    // few columns: each one uses all threads
    std::vector<double> xc(m), yc(m);
    for (std::size_t j = 0; j < d; ++j) {
      gather_columns(x, m, d, j, 1, xc.data());
      gather_columns(y, m, d, j, 1, yc.data());
      per_column[j] = ksg_scalar(xc.data(), yc.data(), m, k, true);
    }
  } else {
    const long long tiles = static_cast<long long>(tile_count(d, kColumnTile));
    MIPRUN_OMP(parallel)
    {
      std::vector<double> xs(kColumnTile * m), ys(kColumnTile * m);
      MIPRUN_OMP(for schedule(dynamic, 1))
      for (long long t = 0; t < tiles; ++t)
        for_each_tile_column(x, y, m, d, static_cast<std::size_t>(t), xs.data(), ys.data(),
                             [&](std::size_t j, const double* xc, const double* yc) {
                               per_column[j] = ksg_scalar(xc, yc, m, k, false);
                             });
    }
  }
  return sum_in_order(per_column) / static_cast<double>(d);
}

}  // namespace miprun::mi
