// Histogram (plug-in) mutual information: bin codes, joint counts, MI from counts, and
// the whole estimator fused (codes are computed on the fly and never stored).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mi/edges.hpp"

namespace miprun::mi {

// Codes #{j : edges[j] <= v} of x: (n, d) row-major into out: (n, d) uint8. edges is
// (n_edges,) for all elements, or (d, n_edges) per column when per_dim; n_edges <= 255,
// each row of edges sorted non-decreasing. Returns the number of NaN or infinite values in
// x; when it is not 0, out is unspecified.
template <class T>
std::size_t codes_from_edges(const T* x, std::size_t n, std::size_t d, const double* edges, std::size_t n_edges,
                             bool per_dim, std::uint8_t* out);

// Joint counts of codes cx, cy: (n, d) uint8 into out: (bins, bins) over all elements, or
// (d, bins, bins) per column when per_dim. Throws std::invalid_argument if a code >= bins.
void joint_counts(const std::uint8_t* cx, const std::uint8_t* cy, std::size_t n, std::size_t d, int bins,
                  bool per_dim, std::int64_t* out);

// Plug-in MI in nats of a joint count table c: (bx, by); Miller-Madow adds
// (m_x + m_y - m_xy - 1) / (2 N) with m the occupied cells.
double mi_from_counts(const std::int64_t* c, std::size_t bx, std::size_t by, bool miller_madow);

// Histogram MI in nats of x, y: (n, d) row-major: pooled over all n*d element pairs, or the
// mean over columns of the MI of column j of x with column j of y when per_dim.
template <class T>
double hist_mi(const T* x, const T* y, std::size_t n, std::size_t d, int bins, Binning binning, bool per_dim,
               bool miller_madow);

}  // namespace miprun::mi
