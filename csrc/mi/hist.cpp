#include "mi/hist.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mi/columns.hpp"
#include "mi/finite.hpp"
#include "mi/float_keys.hpp"
#include "mi/parallel.hpp"

namespace miprun::mi {

namespace {

// Edges padded with +inf to 2^K - 1 entries, so a code is K branch-free comparisons:
// the binary search keeps `c` = number of edges known to be <= v.
struct PaddedEdges {
  std::size_t size = 1;  // 2^K - 1 >= n_edges
  std::size_t half = 1;  // 2^(K-1)
};

PaddedEdges padding_for(std::size_t n_edges) {
  PaddedEdges p;
  while (p.size < n_edges) {
    p.size = 2 * p.size + 1;
    p.half *= 2;
  }
  return p;
}

// rows: (n_rows, n_edges) -> out: (n_rows, pad.size)
void pad_edges(const double* edges, std::size_t n_rows, std::size_t n_edges, const PaddedEdges& pad, double* out) {
  const double inf = std::numeric_limits<double>::infinity();
  for (std::size_t r = 0; r < n_rows; ++r) {
    std::copy(edges + r * n_edges, edges + (r + 1) * n_edges, out + r * pad.size);
    std::fill(out + r * pad.size + n_edges, out + (r + 1) * pad.size, inf);
  }
}

inline unsigned count_le(const double* e, std::size_t half, double v) {
  std::size_t c = 0;
  for (std::size_t s = half; s != 0; s >>= 1) c += (e[c + s - 1] <= v) ? s : 0;
  return static_cast<unsigned>(c);
}

// Codes by table lookup: float_bucket(v) picks one of 2^16 ordered buckets of values, and
// the table holds the range of codes that bucket's values can have. Most buckets hold at
// most one edge, so the code is one table load and one comparison with the bucket's first
// possible edge, without a branch; buckets holding several edges (ties, unbounded buckets)
// take a short scan. Several times faster than the binary search, and identical to it.
template <class T>
class CodeTable {
 public:
  // edges: (n_edges,) sorted, n_edges <= 255
  CodeTable(const double* edges, std::size_t n_edges)
      : edges_(kMaxCode + 1, std::numeric_limits<double>::infinity()), range_(std::size_t(1) << kBucketBits) {
    // +inf past the last edge: a bucket above every edge compares against it and stays put,
    // and the scan of an unbounded bucket stops there for every finite value
    std::copy(edges, edges + n_edges, edges_.begin());
    using U = FloatKey<float>::U;
    constexpr int shift = 32 - kBucketBits;
    // a double rounds into a bucket only if it lies between the floats just outside it,
    // whose keys are one below and one above the bucket's (float values: no widening)
    constexpr U widen = std::is_same<T, float>::value ? 0 : 1;
    // buckets in key order hold increasing values, so two pointers sweep the edges once per
    // chunk of buckets; chunks are independent, so threads fill them (a fixed cost per call)
    constexpr long long kChunks = 16;
    const long long n_buckets = static_cast<long long>(range_.size());
    MIPRUN_OMP(parallel for schedule(static))
    for (long long chunk = 0; chunk < kChunks; ++chunk) {
      std::size_t at_lo = 0, at_hi = 0;
      const std::size_t b0 = static_cast<std::size_t>(n_buckets * chunk / kChunks);
      const std::size_t b1 = static_cast<std::size_t>(n_buckets * (chunk + 1) / kChunks);
      for (std::size_t b = b0; b < b1; ++b) {
        const U first = static_cast<U>(b) << shift, last = first | ((U(1) << shift) - 1);
        const bool edge_of_range = first < widen || last > std::numeric_limits<U>::max() - widen;
        const float lo = FloatKey<float>::value(first - (edge_of_range ? 0 : widen));
        const float hi = FloatKey<float>::value(last + (edge_of_range ? 0 : widen));
        if (edge_of_range || !std::isfinite(lo) || !std::isfinite(hi)) {
          // unbounded buckets (huge values, inf, NaN): scan all edges, even a single one
          range_[b] = {0, kMaxCode};
          continue;
        }
        while (at_lo < n_edges && edges[at_lo] <= static_cast<double>(lo)) ++at_lo;
        if (at_hi < at_lo) at_hi = at_lo;
        while (at_hi < n_edges && edges[at_hi] <= static_cast<double>(hi)) ++at_hi;
        range_[b] = {static_cast<std::uint8_t>(at_lo), static_cast<std::uint8_t>(at_hi)};
      }
    }
  }

  // Code of a finite v.
  unsigned code(T v) const {
    const Range r = range_[float_bucket(v)];
    const double dv = static_cast<double>(v);
    if (r.hi - r.lo > 1) return scan(r, dv);
    return r.lo + (edges_[r.lo] <= dv);
  }

  // Codes of x: (n,) into out, in parallel; returns the number of NaN or infinite values
  // (whose codes are unspecified). Non-finite values fall only into unbounded buckets, which
  // take the scan, so the check costs nothing on the common path.
  std::size_t code_all(const T* x, std::size_t n, std::uint8_t* out) const {
    std::size_t bad = 0;
    // local pointers: stores to out could alias the vectors' members, which would be
    // reloaded on every value
    const Range* range = range_.data();
    const double* edges = edges_.data();
    MIPRUN_OMP(parallel for reduction(+ : bad) schedule(static) if (n >= kParallelGrain))
    for (long long i = 0; i < static_cast<long long>(n); ++i) {
      const T v = x[i];
      const Range r = range[float_bucket(v)];
      const double dv = static_cast<double>(v);
      unsigned c = r.lo + (edges[r.lo] <= dv);
      if (r.hi - r.lo > 1) {
        c = scan(r, dv);
        bad += !std::isfinite(v);
      }
      out[i] = static_cast<std::uint8_t>(c);
    }
    return bad;
  }

 private:
  struct Range {
    std::uint8_t lo, hi;  // codes of the bucket's smallest and largest value
  };
  static constexpr std::uint8_t kMaxCode = 255;

  unsigned scan(Range r, double dv) const {
    unsigned c = r.lo;
    while (c < r.hi && edges_[c] <= dv) ++c;
    return c;
  }

  std::vector<double> edges_;  // the edges, then +inf up to index kMaxCode
  std::vector<Range> range_;
};

// Building a table costs about as much as coding this many values by binary search.
constexpr std::size_t kTableMin = std::size_t(1) << 16;

void check_edges(const double* edges, std::size_t n_rows, std::size_t n_edges) {
  for (std::size_t r = 0; r < n_rows; ++r) {
    const double* e = edges + r * n_edges;
    for (std::size_t j = 0; j < n_edges; ++j) {
      if (!std::isfinite(e[j]))
        throw std::invalid_argument("bin edges must be finite; row " + std::to_string(r) + " has " +
                                    std::to_string(e[j]));
      if (j > 0 && e[j] < e[j - 1])
        throw std::invalid_argument("bin edges must be sorted non-decreasing; row " + std::to_string(r) +
                                    " is not (compute them with compute_edges)");
    }
  }
}

// Joint counts over pairs i = 0..N-1 with codes code_x(i), code_y(i) < B, into out: (B, B)
// (added to). Each thread counts its own range into uint32 tables; several tables
// interleaved by i keep runs of equal cells (highly dependent data) from serialising on one
// counter. Tables are flushed to int64 before uint32 could overflow.
template <class CodeX, class CodeY>
void count_pairs(std::size_t N, std::size_t B, CodeX code_x, CodeY code_y, std::int64_t* out) {
  const std::size_t cells = B * B;
  const std::size_t copies = cells * sizeof(std::uint32_t) * 4 <= (std::size_t(1) << 18) ? 4 : 1;
  constexpr std::size_t kFlush = std::size_t(1) << 30;
  MIPRUN_OMP(parallel if (N >= kParallelGrain))
  {
    const std::size_t nt = static_cast<std::size_t>(team_size()), tid = static_cast<std::size_t>(thread_index());
    const std::size_t a = N * tid / nt, b = N * (tid + 1) / nt;
    std::vector<std::uint32_t> tab(copies * cells, 0);
    std::vector<std::int64_t> total(cells, 0);
    for (std::size_t s = a; s < b; s += kFlush) {
      const std::size_t e = std::min(b, s + kFlush);
      std::size_t i = s;
      if (copies == 4) {
        std::uint32_t *t0 = tab.data(), *t1 = t0 + cells, *t2 = t1 + cells, *t3 = t2 + cells;
        for (; i + 4 <= e; i += 4) {
          ++t0[code_x(i) * B + code_y(i)];
          ++t1[code_x(i + 1) * B + code_y(i + 1)];
          ++t2[code_x(i + 2) * B + code_y(i + 2)];
          ++t3[code_x(i + 3) * B + code_y(i + 3)];
        }
      }
      for (; i < e; ++i) ++tab[code_x(i) * B + code_y(i)];
      for (std::size_t c = 0; c < copies; ++c)
        for (std::size_t k = 0; k < cells; ++k) total[k] += tab[c * cells + k];
      std::fill(tab.begin(), tab.end(), 0u);
    }
    MIPRUN_OMP(critical(miprun_count_pairs))
    for (std::size_t k = 0; k < cells; ++k) out[k] += total[k];
  }
}

unsigned max_code(const std::uint8_t* c, std::size_t N) {
  unsigned m = 0;
  MIPRUN_OMP(parallel for reduction(max : m) schedule(static) if (N >= kParallelGrain))
  for (long long i = 0; i < static_cast<long long>(N); ++i) m = std::max(m, static_cast<unsigned>(c[i]));
  return m;
}

// MI of one column pair xc, yc: (n,); scratch, edges, padded and table are reused buffers.
template <class T>
double column_mi(const T* xc, const T* yc, std::size_t n, int bins, Binning binning, bool miller_madow,
                 EdgeScratch<T>& scratch, std::vector<double>& edges, std::vector<double>& padded,
                 std::vector<std::int64_t>& table) {
  const std::size_t B = static_cast<std::size_t>(bins), ne = B - 1;
  const PaddedEdges pad = padding_for(ne);
  padded.resize(2 * pad.size);
  edges_of(xc, n, bins, binning, edges.data(), scratch);
  pad_edges(edges.data(), 1, ne, pad, padded.data());
  edges_of(yc, n, bins, binning, edges.data(), scratch);
  pad_edges(edges.data(), 1, ne, pad, padded.data() + pad.size);
  const double* ex = padded.data();
  const double* ey = padded.data() + pad.size;
  std::fill(table.begin(), table.end(), 0);
  for (std::size_t i = 0; i < n; ++i)
    ++table[count_le(ex, pad.half, static_cast<double>(xc[i])) * B + count_le(ey, pad.half, static_cast<double>(yc[i]))];
  return mi_from_counts(table.data(), B, B, miller_madow);
}

}  // namespace

template <class T>
std::size_t codes_from_edges(const T* x, std::size_t n, std::size_t d, const double* edges, std::size_t n_edges,
                             bool per_dim, std::uint8_t* out) {
  if (n_edges < 1 || n_edges > 255)
    throw std::invalid_argument("need 1 to 255 bin edges per variable (2 to 256 bins), got " + std::to_string(n_edges));
  const std::size_t rows = per_dim ? d : 1;
  check_edges(edges, rows, n_edges);
  const std::size_t N = n * d;
  // the table codes and checks finiteness in one pass over x
  if (!per_dim && N >= kTableMin) return CodeTable<T>(edges, n_edges).code_all(x, N, out);
  if (const std::size_t bad = count_non_finite(x, N)) return bad;
  const PaddedEdges pad = padding_for(n_edges);
  std::vector<double> padded(rows * pad.size);
  pad_edges(edges, rows, n_edges, pad, padded.data());
  const double* e = padded.data();
  if (!per_dim) {
    for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<std::uint8_t>(count_le(e, pad.half, static_cast<double>(x[i])));
    return 0;
  }
  // blocks of rows times tiles of columns, so one tile's edges stay in cache
  constexpr std::size_t kRows = 512, kCols = 64;
  const std::size_t row_blocks = (n + kRows - 1) / kRows, col_tiles = tile_count(d, kCols);
  const long long jobs = static_cast<long long>(row_blocks * col_tiles);
  MIPRUN_OMP(parallel for schedule(static) if (N >= kParallelGrain))
  for (long long job = 0; job < jobs; ++job) {
    const std::size_t rb = static_cast<std::size_t>(job) / col_tiles, ct = static_cast<std::size_t>(job) % col_tiles;
    const std::size_t i0 = rb * kRows, i1 = std::min(n, i0 + kRows);
    const std::size_t j0 = ct * kCols, j1 = j0 + tile_width(d, kCols, ct);
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t j = j0; j < j1; ++j)
        out[i * d + j] = static_cast<std::uint8_t>(count_le(e + j * pad.size, pad.half, static_cast<double>(x[i * d + j])));
  }
  return 0;
}

void joint_counts(const std::uint8_t* cx, const std::uint8_t* cy, std::size_t n, std::size_t d, int bins,
                  bool per_dim, std::int64_t* out) {
  check_bins(bins);
  const std::size_t B = static_cast<std::size_t>(bins), N = n * d;
  const unsigned mx = max_code(cx, N), my = max_code(cy, N);
  if (N > 0 && (mx >= B || my >= B))
    throw std::invalid_argument("codes must be below bins=" + std::to_string(bins) + ", got a code " +
                                std::to_string(std::max(mx, my)) + " (codes and bins must come from the same binning)");
  const std::size_t cells = B * B;
  std::fill(out, out + (per_dim ? d : 1) * cells, 0);
  if (!per_dim) {
    count_pairs(N, B, [cx](std::size_t i) { return static_cast<std::size_t>(cx[i]); },
                [cy](std::size_t i) { return static_cast<std::size_t>(cy[i]); }, out);
    return;
  }
  // each thread owns a tile of up to 64 columns (a cache line of codes per row) and scans all
  // rows; the tile's uint32 tables stay in L2 and are flushed to the int64 output before
  // they could overflow
  const std::size_t tile = std::clamp<std::size_t>((std::size_t(1) << 18) / (cells * sizeof(std::uint32_t)), 1, 64);
  const std::size_t flush_rows = std::size_t(1) << 31;
  const long long tiles = static_cast<long long>(tile_count(d, tile));
  MIPRUN_OMP(parallel if (N >= kParallelGrain))
  {
    std::vector<std::uint32_t> local(tile * cells);
    MIPRUN_OMP(for schedule(dynamic, 1))
    for (long long t = 0; t < tiles; ++t) {
      const std::size_t j0 = static_cast<std::size_t>(t) * tile, w = tile_width(d, tile, static_cast<std::size_t>(t));
      std::int64_t* o = out + j0 * cells;
      for (std::size_t i0 = 0; i0 < n; i0 += flush_rows) {
        std::fill(local.begin(), local.end(), 0u);
        const std::size_t i1 = std::min(n, i0 + flush_rows);
        for (std::size_t i = i0; i < i1; ++i) {
          const std::uint8_t* rx = cx + i * d + j0;
          const std::uint8_t* ry = cy + i * d + j0;
          for (std::size_t c = 0; c < w; ++c) ++local[c * cells + rx[c] * B + ry[c]];
        }
        for (std::size_t k = 0; k < w * cells; ++k) o[k] += local[k];
      }
    }
  }
}

double mi_from_counts(const std::int64_t* c, std::size_t bx, std::size_t by, bool miller_madow) {
  std::vector<std::int64_t> row(bx, 0), col(by, 0);
  std::int64_t n = 0;
  std::size_t m_xy = 0;
  for (std::size_t a = 0; a < bx; ++a)
    for (std::size_t b = 0; b < by; ++b) {
      const std::int64_t v = c[a * by + b];
      if (v < 0) throw std::invalid_argument("joint counts must be non-negative");
      row[a] += v;
      col[b] += v;
      n += v;
      m_xy += v > 0;
    }
  if (n <= 0) throw std::invalid_argument("empty joint histogram: no samples were counted");
  const double nn = static_cast<double>(n);
  double mi = 0.0;
  // the reference's arithmetic: p log(p / (p_x p_y)) with every probability a count / N
  for (std::size_t a = 0; a < bx; ++a) {
    if (row[a] == 0) continue;
    const double px = static_cast<double>(row[a]) / nn;
    for (std::size_t b = 0; b < by; ++b) {
      const std::int64_t v = c[a * by + b];
      if (v == 0) continue;
      const double p = static_cast<double>(v) / nn;
      const double py = static_cast<double>(col[b]) / nn;
      mi += p * std::log(p / (px * py));
    }
  }
  if (miller_madow) {
    std::size_t m_x = 0, m_y = 0;
    for (auto v : row) m_x += v > 0;
    for (auto v : col) m_y += v > 0;
    mi += (static_cast<double>(m_x) + static_cast<double>(m_y) - static_cast<double>(m_xy) - 1.0) / (2.0 * nn);
  }
  return mi;
}

template <class T>
double hist_mi(const T* x, const T* y, std::size_t n, std::size_t d, int bins, Binning binning, bool per_dim,
               bool miller_madow) {
  check_bins(bins);
  if (n == 0 || d == 0) throw std::invalid_argument("histogram MI of an empty array");
  const std::size_t B = static_cast<std::size_t>(bins), ne = B - 1;
  if (!per_dim) {
    const std::size_t N = n * d;
    std::vector<double> ex(ne), ey(ne);
    edges_of(x, N, bins, binning, ex.data());
    edges_of(y, N, bins, binning, ey.data());
    std::vector<std::int64_t> counts(B * B, 0);
    if (N >= kTableMin) {
      const CodeTable<T> tx(ex.data(), ne), ty(ey.data(), ne);
      count_pairs(N, B, [&tx, x](std::size_t i) { return static_cast<std::size_t>(tx.code(x[i])); },
                  [&ty, y](std::size_t i) { return static_cast<std::size_t>(ty.code(y[i])); }, counts.data());
    } else {
      const PaddedEdges pad = padding_for(ne);
      std::vector<double> padded(2 * pad.size);
      pad_edges(ex.data(), 1, ne, pad, padded.data());
      pad_edges(ey.data(), 1, ne, pad, padded.data() + pad.size);
      const double* px = padded.data();
      const double* py = padded.data() + pad.size;
      const std::size_t half = pad.half;
      count_pairs(N, B, [=](std::size_t i) { return static_cast<std::size_t>(count_le(px, half, static_cast<double>(x[i]))); },
                  [=](std::size_t i) { return static_cast<std::size_t>(count_le(py, half, static_cast<double>(y[i]))); },
                  counts.data());
    }
    return mi_from_counts(counts.data(), B, B, miller_madow);
  }
  std::vector<double> per_column(d);
  const long long tiles = static_cast<long long>(tile_count(d, kColumnTile));
  MIPRUN_OMP(parallel if (n * d >= kParallelGrain))
  {
    std::vector<T> xs(kColumnTile * n), ys(kColumnTile * n);
    EdgeScratch<T> scratch;
    std::vector<double> edges(ne), padded;
    std::vector<std::int64_t> table(B * B);
    MIPRUN_OMP(for schedule(dynamic, 1))
    for (long long t = 0; t < tiles; ++t)
      for_each_tile_column(x, y, n, d, static_cast<std::size_t>(t), xs.data(), ys.data(),
                           [&](std::size_t j, const T* xc, const T* yc) {
                             per_column[j] = column_mi(xc, yc, n, bins, binning, miller_madow, scratch, edges, padded,
                                                       table);
                           });
  }
  double sum = 0.0;  // in column order, as the reference sums
  for (double v : per_column) sum += v;
  return sum / static_cast<double>(d);
}

#define MIPRUN_HIST_INSTANTIATE(T)                                                                               \
  template std::size_t codes_from_edges<T>(const T*, std::size_t, std::size_t, const double*, std::size_t, bool, \
                                           std::uint8_t*);                                                       \
  template double hist_mi<T>(const T*, const T*, std::size_t, std::size_t, int, Binning, bool, bool);
MIPRUN_HIST_INSTANTIATE(float)
MIPRUN_HIST_INSTANTIATE(double)
#undef MIPRUN_HIST_INSTANTIATE

}  // namespace miprun::mi
