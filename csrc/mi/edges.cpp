#include "mi/edges.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "mi/columns.hpp"
#include "mi/parallel.hpp"
#include "mi/radix_sort.hpp"

namespace miprun::mi {

Binning parse_binning(const std::string& name) {
  if (name == "quantile") return Binning::quantile;
  if (name == "uniform") return Binning::uniform;
  throw std::invalid_argument("binning must be 'quantile' or 'uniform', got '" + name + "'");
}

void check_bins(int bins) {
  if (bins < 2 || bins > 256)
    throw std::invalid_argument("bins must be between 2 and 256 (codes are uint8), got " + std::to_string(bins));
}

namespace {

// Ranks of the quantile edges: floor(j n / bins), j = 1..bins-1 (non-decreasing).
std::vector<std::size_t> quantile_ranks(std::size_t n, int bins) {
  std::vector<std::size_t> r(static_cast<std::size_t>(bins - 1));
  for (int j = 1; j < bins; ++j) {
    // j * n is exact in 64 bits for any n a machine can hold; integer division is the floor
    std::size_t q = static_cast<std::size_t>(j) * n / static_cast<std::size_t>(bins);
    r[static_cast<std::size_t>(j - 1)] = std::min(q, n - 1);
  }
  return r;
}

// Fill out[r0..r1) with the order statistics a[ranks[r]] of a[lo..hi), all ranks in [lo, hi).
// One nth_element per distinct rank, splitting the range as it goes: O(n log(#ranks)).
template <class T>
void select_ranks(T* a, std::size_t lo, std::size_t hi, const std::size_t* ranks, std::size_t r0, std::size_t r1,
                  double* out) {
  while (r0 < r1) {
    std::size_t mid = r0 + (r1 - r0) / 2;
    std::size_t r = ranks[mid];
    std::nth_element(a + lo, a + r, a + hi);
    double value = static_cast<double>(a[r]);
    std::size_t e0 = mid, e1 = mid + 1;
    while (e0 > r0 && ranks[e0 - 1] == r) --e0;
    while (e1 < r1 && ranks[e1] == r) ++e1;
    for (std::size_t e = e0; e < e1; ++e) out[e] = value;
    // recurse into the smaller side of the rank list, loop on the other
    if (e0 - r0 < r1 - e1) {
      select_ranks(a, lo, r, ranks, r0, e0, out);
      lo = r + 1;
      r0 = e1;
    } else {
      select_ranks(a, r + 1, hi, ranks, e1, r1, out);
      hi = r;
      r1 = e0;
    }
  }
}

constexpr std::size_t kBuckets = std::size_t(1) << kBucketBits;
// From this size on, selecting inside buckets (two passes over the data, no copy of all of
// it) beats sorting the keys of every value.
constexpr std::size_t kRadixMin = std::size_t(1) << 18;

// Below this many values a comparison sort of the keys beats eight radix passes.
constexpr std::size_t kRadixSortMin = 256;

// Order statistics v[ranks] of v: (n,) by sorting the keys of v.
template <class T>
void sort_select(const T* v, std::size_t n, const std::vector<std::size_t>& ranks, double* out, EdgeScratch<T>& s) {
  s.keys.resize(n);
  for (std::size_t i = 0; i < n; ++i) s.keys[i] = FloatKey<T>::key(v[i]);
  if (n < kRadixSortMin)
    std::sort(s.keys.begin(), s.keys.end());
  else
    radix_sort(s.keys, s.tmp);
  for (std::size_t e = 0; e < ranks.size(); ++e) out[e] = static_cast<double>(FloatKey<T>::value(s.keys[ranks[e]]));
}

// Order statistics of a large v: (n,) without sorting it. One pass histograms the values'
// buckets (float_bucket), which says in which bucket each wanted rank lies; a second pass
// copies out only those buckets, where the ranks are selected. The copy is at most n
// values and usually a fraction of them.
template <class T>
void radix_select(const T* v, std::size_t n, const std::vector<std::size_t>& ranks, double* out) {
  // chunks of fewer than 2^32 elements, so per-chunk counts fit in uint32
  std::size_t n_chunks = std::max<std::size_t>(static_cast<std::size_t>(max_threads()) * 2,
                                               (n >> 31) + 1);
  std::vector<std::uint32_t> hist(n_chunks * kBuckets, 0);
  const long long nc = static_cast<long long>(n_chunks);
  MIPRUN_OMP(parallel for schedule(static))
  for (long long c = 0; c < nc; ++c) {
    std::size_t a = n * static_cast<std::size_t>(c) / n_chunks, b = n * static_cast<std::size_t>(c + 1) / n_chunks;
    std::uint32_t* h = hist.data() + static_cast<std::size_t>(c) * kBuckets;
    for (std::size_t i = a; i < b; ++i) ++h[float_bucket(v[i])];
  }
  std::vector<std::size_t> start(kBuckets + 1, 0);
  for (std::size_t k = 0; k < kBuckets; ++k) {
    std::size_t total = 0;
    for (std::size_t c = 0; c < n_chunks; ++c) total += hist[c * kBuckets + k];
    start[k + 1] = start[k] + total;
  }
  // buckets holding a wanted rank, in increasing order (ranks are sorted)
  std::vector<std::size_t> targets;
  std::vector<std::size_t> bucket_of_rank(ranks.size());
  for (std::size_t e = 0; e < ranks.size(); ++e) {
    std::size_t k = static_cast<std::size_t>(std::upper_bound(start.begin(), start.end(), ranks[e]) - start.begin()) - 1;
    bucket_of_rank[e] = k;
    if (targets.empty() || targets.back() != k) targets.push_back(k);
  }
  std::vector<int> slot(kBuckets, -1);
  std::vector<std::size_t> base(targets.size() + 1, 0);
  for (std::size_t t = 0; t < targets.size(); ++t) {
    slot[targets[t]] = static_cast<int>(t);
    base[t + 1] = base[t] + (start[targets[t] + 1] - start[targets[t]]);
  }
  // write position of chunk c in target t: chunks before it fill the slots before it
  std::vector<std::size_t> offset(n_chunks * targets.size());
  for (std::size_t t = 0; t < targets.size(); ++t) {
    std::size_t pos = base[t];
    for (std::size_t c = 0; c < n_chunks; ++c) {
      offset[c * targets.size() + t] = pos;
      pos += hist[c * kBuckets + targets[t]];
    }
  }
  std::vector<T> picked(base.back());
  MIPRUN_OMP(parallel for schedule(static))
  for (long long c = 0; c < nc; ++c) {
    std::size_t a = n * static_cast<std::size_t>(c) / n_chunks, b = n * static_cast<std::size_t>(c + 1) / n_chunks;
    std::size_t* off = offset.data() + static_cast<std::size_t>(c) * targets.size();
    for (std::size_t i = a; i < b; ++i) {
      int s = slot[float_bucket(v[i])];
      if (s >= 0) picked[off[s]++] = v[i];
    }
  }
  // select inside each target bucket, ranks shifted to the bucket's own positions
  std::vector<std::size_t> local(ranks.size());
  std::vector<std::size_t> first_rank(targets.size() + 1, ranks.size());
  for (std::size_t e = ranks.size(); e-- > 0;) {
    std::size_t t = static_cast<std::size_t>(slot[bucket_of_rank[e]]);
    local[e] = ranks[e] - start[targets[t]] + base[t];
    first_rank[t] = e;
  }
  const long long nt = static_cast<long long>(targets.size());
  MIPRUN_OMP(parallel for schedule(dynamic, 1))
  for (long long t = 0; t < nt; ++t) {
    std::size_t r0 = first_rank[static_cast<std::size_t>(t)];
    std::size_t r1 = r0;
    while (r1 < ranks.size() && bucket_of_rank[r1] == targets[static_cast<std::size_t>(t)]) ++r1;
    select_ranks(picked.data(), base[static_cast<std::size_t>(t)], base[static_cast<std::size_t>(t) + 1],
                 local.data(), r0, r1, out);
  }
}

template <class T>
void uniform_edges(const T* v, std::size_t n, int bins, double* out) {
  T lo = v[0], hi = v[0];
  if (n >= kParallelGrain) {
    MIPRUN_OMP(parallel for reduction(min : lo) reduction(max : hi) schedule(static))
    for (long long i = 0; i < static_cast<long long>(n); ++i) {
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
  }
  const double l = static_cast<double>(lo), h = static_cast<double>(hi);
  // same operation order as the reference: lo + ((hi - lo) * j) / bins
  for (int j = 1; j < bins; ++j) out[j - 1] = l + (h - l) * static_cast<double>(j) / static_cast<double>(bins);
}

}  // namespace

template <class T>
void edges_of(const T* v, std::size_t n, int bins, Binning binning, double* out, EdgeScratch<T>& scratch) {
  if (n == 0) throw std::invalid_argument("cannot compute bin edges of an empty array");
  if (binning == Binning::uniform) {
    uniform_edges(v, n, bins, out);
  } else if (n >= kRadixMin) {
    radix_select(v, n, quantile_ranks(n, bins), out);
  } else {
    sort_select(v, n, quantile_ranks(n, bins), out, scratch);
  }
}

template <class T>
void compute_edges(const T* x, std::size_t n, std::size_t d, int bins, Binning binning, bool per_dim, double* out) {
  check_bins(bins);
  if (n == 0 || d == 0) throw std::invalid_argument("cannot compute bin edges of an empty array");
  if (!per_dim) {
    edges_of(x, n * d, bins, binning, out);
    return;
  }
  const std::size_t ne = static_cast<std::size_t>(bins - 1);
  const long long tiles = static_cast<long long>(tile_count(d, kColumnTile));
  MIPRUN_OMP(parallel if (n * d >= kParallelGrain))
  {
    std::vector<T> cols(kColumnTile * n);
    EdgeScratch<T> scratch;
    MIPRUN_OMP(for schedule(dynamic, 1))
    for (long long t = 0; t < tiles; ++t) {
      std::size_t j0 = static_cast<std::size_t>(t) * kColumnTile;
      std::size_t w = tile_width(d, kColumnTile, static_cast<std::size_t>(t));
      gather_columns(x, n, d, j0, w, cols.data());
      for (std::size_t c = 0; c < w; ++c) edges_of(cols.data() + c * n, n, bins, binning, out + (j0 + c) * ne, scratch);
    }
  }
}

#define MIPRUN_EDGES_INSTANTIATE(T)                                                                  \
  template void edges_of<T>(const T*, std::size_t, int, Binning, double*, EdgeScratch<T>&);          \
  template void compute_edges<T>(const T*, std::size_t, std::size_t, int, Binning, bool, double*);
MIPRUN_EDGES_INSTANTIATE(float)
MIPRUN_EDGES_INSTANTIATE(double)
#undef MIPRUN_EDGES_INSTANTIATE

}  // namespace miprun::mi
